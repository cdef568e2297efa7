/*
 * data/augment.h — image augmentation for pretraining and the benchmark protocols:
 * DINO/DINOv2 multi-crop (RandomResizedCrop + bicubic, flips, brightness/contrast jitter,
 * Gaussian blur, solarize, normalisation), CLAHE, and iBOT block masks (DINOv2's
 * MaskingGenerator + collate_data_and_cast).
 *
 * Images are float (h, w) row-major buffers with values in [0, 1] (prepared uint8/uint16 pixels
 * divided by their max value).  Every random decision is drawn from an Rng the caller passes in,
 * so an augmentation is a pure function of (image, config, rng state): the loader forks one Rng
 * per sample from (seed, epoch, position) and gets the same crops whatever the thread count.
 *
 * Conventions follow torchvision/PIL, which is what DINOv2 runs on:
 *   - RandomResizedCrop.get_params: 10 attempts of (area ~ U(scale) * H*W, log-aspect ~ U(log
 *     ratio)), w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)); fallback = centre
 *     crop clamped to the ratio range.
 *   - Bicubic resize = PIL's Image.resize(BICUBIC) (separable, a = -0.5, antialiased: the filter
 *     support is stretched by the scale when shrinking, weights normalised over in-bounds taps).
 *     Checked against PIL float ("F" mode) resizing in tests/data/test_augment.c.
 *   - Gaussian blur = torchvision.transforms.GaussianBlur(kernel 9, sigma ~ U(0.1, 2.0)),
 *     reflect padding.
 *   - ColorJitter(brightness b, contrast c): factors U(1-b, 1+b), U(1-c, 1+c), applied in a random
 *     order; contrast blends with the image mean; results clamped to [0, 1].  Saturation and hue
 *     are no-ops on gray images and are not drawn.
 *   - Gamma (not in DINOv2; off by default): inside the same jitter, after brightness/contrast,
 *     x -> x^g with ln g ~ U(-gamma, gamma), for corpora whose vendors differ in display curve as
 *     well as in gain and offset (on the synthetic data of docs/evidence-stage1.md it made no
 *     measurable difference next to brightness/contrast 0.6).
 *   - Solarize(threshold): x >= threshold -> 1 - x.
 *
 * Blur probabilities: `blur_p` are the probabilities with which the blur is *applied*.  Upstream
 * DINOv2 passes 1 - p to torchvision's RandomApply, so its GaussianBlur(p=1.0/0.1/0.5) is really
 * applied with probability 0/0.9/0.5 (recipe.md quirk Q9); set `blur_dinov2_quirk` to reproduce
 * that exactly.  The defaults are the intended DINO values 1.0 / 0.1 / 0.5.
 */
#ifndef VERSA_DATA_AUGMENT_H
#define VERSA_DATA_AUGMENT_H

#include <stddef.h>
#include <stdint.h>
#include "engine/engine.h"

/* ------------------------------------------------------------------------------------------ */
/* Scratch memory: grows on demand, reused across calls, so steady-state augmentation never
 * mallocs.  One per worker thread. */
typedef struct AugWork {
    float *buf[4];
    size_t cap[4];     /* floats */
} AugWork;

void augwork_free(AugWork *w);

/* ------------------------------------------------------------------------------------------ */
/* Building blocks (exposed for tests and the supervised pipelines) */

typedef struct CropBox {
    int x, y, w, h;    /* region [x, x+w) x [y, y+h) of the source image */
} CropBox;

/* torchvision RandomResizedCrop.get_params for an image of size (img_w, img_h). */
CropBox rrc_params(Rng *r, int img_w, int img_h, const float scale[2], const float ratio[2]);

/* PIL bicubic (antialiased) resize of the region c of src (src_h, src_w) to dst (out_h, out_w). */
void resize_crop_bicubic(const float *src, int src_w, int src_h, CropBox c, float *dst, int out_w,
                         int out_h, AugWork *ws);

void hflip_f32(float *img, int w, int h);                 /* in place */
void vflip_f32(float *img, int w, int h);                 /* in place */

/* Separable Gaussian blur in place: kernel `ksize` (odd), reflect padding (torchvision). */
void gaussian_blur_f32(float *img, int w, int h, int ksize, float sigma, AugWork *ws);

/* x = clamp(x * factor, 0, 1) */
void adjust_brightness_f32(float *x, size_t n, float factor);
/* x = clamp(factor * x + (1 - factor) * mean(x), 0, 1) */
void adjust_contrast_f32(float *x, size_t n, float factor);
void adjust_gamma_f32(float *x, size_t n, float gamma);   /* x in [0, 1] -> x^gamma */
/* x >= threshold -> 1 - x */
void solarize_f32(float *x, size_t n, float threshold);

/* ---- CLAHE (contrast limited adaptive histogram equalisation), as OpenCV's createCLAHE ----
 * The image is split into tiles_x * tiles_y tiles (padded bottom/right by reflect-101 when not
 * divisible); each tile gets a histogram of `nbins` bins (input quantised as round(x*(nbins-1))),
 * clipped at max(1, int(clip_limit * tile_pixels / nbins)) with the excess redistributed evenly
 * (remainder spread with a stride), and a LUT round(cdf * (nbins-1) / tile_pixels).  Each output
 * pixel bilinearly interpolates the LUTs of the four nearest tile centres.  Output is in [0, 1]:
 * lut / (nbins - 1); with nbins = 256, round(out * 255) equals OpenCV's 8-bit result. */
typedef struct ClaheConfig {
    float clip_limit;   /* 2.0 (the benchmark's multi-label/detection protocol) */
    int tiles_x, tiles_y;   /* 8 x 8 */
    int nbins;          /* 256 */
} ClaheConfig;

ClaheConfig clahe_default(void);
/* in and out (h, w) may not alias.  Returns nonzero (Err) for a bad config. */
int clahe_f32(const float *in, int w, int h, float *out, const ClaheConfig *cfg, AugWork *ws, Err *e);

/* ------------------------------------------------------------------------------------------ */
/* DINO/DINOv2 multi-crop (config keys as DINOv2's `crops.*`) */

#define AUG_MAX_LOCAL 16
#define AUG_MAX_GAMMA 2.0f   /* crops.gamma: ln g ~ U(-gamma, gamma), gamma in [0, AUG_MAX_GAMMA] */

typedef struct MultiCropConfig {
    int global_size;            /* crops.global_crops_size: 224 */
    float global_scale[2];      /* crops.global_crops_scale: (0.32, 1.0) */
    int n_local;                /* crops.local_crops_number: 8 (0..AUG_MAX_LOCAL) */
    int local_size;             /* crops.local_crops_size: 96 */
    float local_scale[2];       /* crops.local_crops_scale: (0.05, 0.32) */
    float ratio[2];             /* (3/4, 4/3) */
    float flip_p;               /* 0.5 */
    float jitter_p;             /* 0.8 */
    float brightness, contrast; /* 0.4, 0.4 */
    float gamma;                /* 0 (off): with the jitter, x -> x^g, ln g ~ U(-gamma, gamma) */
    float blur_p[3];            /* applied with prob: global 1, global 2, locals = 1.0, 0.1, 0.5 */
    int blur_dinov2_quirk;      /* 1: apply with 1 - blur_p (upstream DINOv2 behaviour) */
    int blur_kernel;            /* 9 */
    float blur_sigma[2];        /* (0.1, 2.0) */
    float solarize_p;           /* 0.2, second global crop only */
    float solarize_threshold;   /* 128/255 */
    int channels;               /* 1, or 3 (gray replicated) */
    float mean[3], std[3];      /* normalisation per channel: ImageNet by default */
} MultiCropConfig;

MultiCropConfig multicrop_default(void);   /* DINOv2 defaults above */
/* Checks sizes, ranges and probabilities; Err names the bad key ("crops.local_crops_number: 20
 * exceeds 16"). */
int multicrop_validate(const MultiCropConfig *c, Err *e);

/* What was drawn for one crop (for tests and debugging). */
typedef struct CropInfo {
    CropBox box;
    int flipped;
    int jittered;
    float brightness, contrast;  /* factors (1 when not jittered) */
    float gamma;                 /* exponent (1 when not jittered or gamma is off) */
    int contrast_first;
    float blur_sigma;            /* 0 when not blurred */
    int solarized;
} CropInfo;

/* img (h, w) in [0, 1] -> global[k] (channels, G, G) for k < 2 and local[k] (channels, L, L) for
 * k < n_local, normalised.  info (2 + n_local entries) may be NULL.  Crop k draws from
 * rng_fork(r, k), so crops do not depend on each other's rejection loops; r itself is not
 * advanced. */
void multicrop(const float *img, int w, int h, const MultiCropConfig *cfg, const Rng *r,
               float *const *global, float *const *local, CropInfo *info, AugWork *ws);

/* ------------------------------------------------------------------------------------------ */
/* iBOT block masks (DINOv2 data/masking.py + data/collate.py) */

typedef struct MaskConfig {
    int grid_h, grid_w;         /* patches per side of a global crop: 224 / 14 = 16 */
    float ratio_min, ratio_max; /* ibot.mask_ratio_min_max: (0.1, 0.5) */
    float sample_prob;          /* ibot.mask_sample_probability: 0.5 */
    int min_num_patches;        /* 4 */
    float min_aspect;           /* 0.3 (max aspect 1 / 0.3) */
    float max_num_frac;         /* max patches per block = 0.5 * grid_h * grid_w */
} MaskConfig;

MaskConfig mask_default(int grid_h, int grid_w);

/* Optional record of the blocks a generator call placed (tests). */
typedef struct MaskStats {
    int n_blocks;
    int block_h[64], block_w[64];   /* the first 64 blocks */
    int block_new[64];              /* patches newly masked by each block */
    float block_area[64];           /* the drawn target area */
    int block_max[64];              /* max_mask_patches when it was drawn */
} MaskStats;

/* MaskingGenerator(num_masking_patches): mask (grid_h * grid_w) set to 0/1; returns the count.
 * Rectangles of area U(min_num_patches, max) and log-aspect U(log a, -log a) are added until the
 * target is reached or 10 tries in a row add nothing; the count never exceeds the target. */
int mask_generate(Rng *r, const MaskConfig *c, int num_masking_patches, uint8_t *mask, MaskStats *st);

/* collate_data_and_cast's masks for n_crops global crops (crop-major, 2*B for a batch of B):
 * n_masked = int(n_crops * sample_prob) crops get targets int(N * U(p_i, p_{i+1})) with
 * p = linspace(ratio_min, ratio_max, n_masked + 1), the rest none; then the list is shuffled.
 * masks (n_crops, N) of 0/1.  Returns `upperbound` = sum int(N * p_{i+1}) (size of the padded
 * masked-token buffer). */
int mask_collate(Rng *r, const MaskConfig *c, int n_crops, uint8_t *masks);

#endif
