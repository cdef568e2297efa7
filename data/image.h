/*
 * data/image.h — gray images (8- to 16-bit), PNG/JPEG/PGM load and PNG/PGM save, and the
 * mammogram preprocessing of the recipe: breast-region crop, flip to a common side, resize
 * (bilinear / area for images, nearest for masks, boxes scaled) and intensity normalisation.
 *
 * One honest pixel representation: an Image always stores uint16_t samples, and `bits` says how
 * many of them are significant, so a value is in [0, 2^bits - 1]:
 *   bits = 8   8-bit PNG/JPEG/PGM (and 8-bit DICOM)
 *   bits = 16  16-bit PNG/PGM (kept at 16 bits, never squeezed to 8)
 *   bits = 12  e.g. a 12-bit DICOM's stored values, or what the synthetic generator writes
 * Float images are plain (h, w) float buffers in [0, 1] (or normalised), see FImage.
 *
 * Errors on user input return nonzero and fill Err with one line naming the file, e.g.
 *   "scans/a.png: truncated or corrupt PNG (bad zlib header)"
 *   "scans/b.png: no such file"
 * The CLI prints them as "versa: <msg>".  All functions are thread-safe (no global state), so
 * the loader may call them from several threads on different images.
 */
#ifndef VERSA_DATA_IMAGE_H
#define VERSA_DATA_IMAGE_H

#include <stddef.h>
#include <stdint.h>
#include "engine/engine.h"

/* ------------------------------------------------------------------------------------------ */
/* Images */

typedef struct Image {
    uint16_t *px;   /* (h, w) row-major, values in [0, 2^bits - 1]; malloc'd, NULL when empty */
    int w, h;
    int bits;       /* significant bits, 1..16 */
} Image;

static inline uint32_t image_maxval(const Image *im) { return (1u << im->bits) - 1u; }
static inline uint16_t *image_row(const Image *im, int y) { return im->px + (size_t)y * (size_t)im->w; }

/* Float image: (h, w) row-major floats. */
typedef struct FImage {
    float *px;
    int w, h;
} FImage;

/* Allocate w x h zeroed pixels; 0 on success, nonzero (Err filled) for bad sizes / out of memory.
 * Limits: 1 <= w, h <= 65535, 1 <= bits <= 16. */
int image_alloc(Image *im, int w, int h, int bits, Err *e);
void image_free(Image *im);                                /* frees px, zeroes the struct */
int image_copy(const Image *src, Image *dst, Err *e);      /* deep copy */
int fimage_alloc(FImage *f, int w, int h, Err *e);
void fimage_free(FImage *f);

/* Load PNG (8/16-bit, gray, gray+alpha, RGB, RGBA, palette), JPEG (8-bit baseline/progressive),
 * PGM (P2/P5, any maxval <= 65535: maxval 4095 gives bits = 12, i.e. bits = bit length of
 * maxval), PPM (P6), BMP, TGA.  Colour is converted to gray with Rec.601 luma (0.299 R + 0.587 G +
 * 0.114 B, rounded); alpha is dropped.  16-bit PNGs give bits = 16, other stb formats bits = 8.
 * Files that start like a DICOM (preamble + "DICM", or named *.dcm / *.dicom) are read with
 * the DICOM reader and rendered with dicom_render's defaults (see data/dicom.h), giving a
 * 16-bit image.  Errors name the file: missing, unreadable, empty, corrupt/truncated,
 * unsupported format, absurd dimensions. */
int image_load(const char *path, Image *im, Err *e);
/* Same from memory (no DICOM detection); `name` is used in error messages. */
int image_load_mem(const uint8_t *buf, size_t n, const char *name, Image *im, Err *e);
/* The JPEG part of image_load_mem (data/jpeg.c, libjpeg-turbo): 8-bit gray (luma of colour
 * files); corrupt data, truncation, CMYK, 12-bit, sides above max_dim or more than max_pixels
 * pixels are errors naming the file. */
int jpeg_load_mem(const uint8_t *buf, size_t n, const char *name, int max_dim, size_t max_pixels, Image *im, Err *e);

/* Save as PNG: bits <= 8 -> 8-bit gray PNG; bits > 8 -> 16-bit gray PNG with the values stored
 * as they are (a 12-bit image keeps values <= 4095 and loads back with bits = 16).  The 16-bit
 * writer is our own (zlib); the output is read by stb_image, libpng, PIL. */
int image_save_png(const char *path, const Image *im, Err *e);
/* Encode a PNG into a malloc'd buffer (*out, *n); same rules as image_save_png. */
int image_encode_png(const Image *im, uint8_t **out, size_t *n, Err *e);
/* Save as binary PGM (P5), maxval 2^bits - 1 (bits > 8 -> 2-byte big-endian samples). */
int image_save_pgm(const char *path, const Image *im, Err *e);

/* ---- conversions ---- */
void image_minmax(const Image *im, uint16_t *mn, uint16_t *mx);
/* out[i] = px[i] / (2^bits - 1), in [0, 1].  out holds w*h floats. */
void image_to_float(const Image *im, float *out);
/* Window: out = clamp((px - lo) / (hi - lo), 0, 1); hi > lo. */
void image_to_float_window(const Image *im, float lo, float hi, float *out);
/* Quantise x (w*h floats, clamped to [0, 1]) to `bits` bits with rounding into *out (allocated). */
int image_from_float(const float *x, int w, int h, int bits, Image *out, Err *e);
/* Min-max stretch to `bits` bits (the recipe's "uint8 min-max" is bits = 8); a constant image
 * becomes all zeros.  in and out may be the same Image. */
int image_rescale_minmax(const Image *in, int bits, Image *out, Err *e);
/* In place: x = (x - mean) / std over n floats. */
void float_normalize(float *x, size_t n, float mean, float std);
/* Mean and standard deviation (population) of n floats, accumulated in double. */
void float_mean_std(const float *x, size_t n, double *mean, double *std);

/* ------------------------------------------------------------------------------------------ */
/* Geometry */

typedef struct Rect {
    int x0, y0, x1, y1;      /* pixels [x0, x1) x [y0, y1) */
} Rect;

typedef struct BoxF {
    float x0, y0, x1, y1;    /* continuous pixel coordinates: pixel (i, j) covers [i, i+1) x [j, j+1) */
} BoxF;

typedef enum ResizeMode {
    RESIZE_BILINEAR = 0,     /* cv2 INTER_LINEAR / PyTorch align_corners=False: half-pixel centres */
    RESIZE_NEAREST,          /* masks and label maps; cv2 INTER_NEAREST: src = floor(dst * in / out) */
    RESIZE_AREA,             /* box filter average when shrinking (keeps microcalcifications), bilinear
                                when enlarging; cv2 INTER_AREA-like */
} ResizeMode;

/* Copy the pixels of r (clipped to the image) into *out (allocated). */
int image_crop(const Image *in, Rect r, Image *out, Err *e);
void image_flip_h(Image *im);                               /* mirror left <-> right, in place */
/* Resize to (w, h) into *out (allocated, same bits). */
int image_resize(const Image *in, int w, int h, ResizeMode mode, Image *out, Err *e);
/* Crop r (clipped to the image), mirror it when flip, and resize it to (w, h) in one streaming
 * pass without intermediate images (what preprocessing and crop augmentations need). */
int image_crop_resize(const Image *in, Rect r, int flip, int w, int h, ResizeMode mode, Image *out, Err *e);
/* Float resize, in (ih, iw) -> out (oh, ow), caller-allocated; same conventions. */
void resize_f32(const float *in, int iw, int ih, float *out, int ow, int oh, ResizeMode mode);

/* Boxes follow the image: crop subtracts the origin, flip mirrors in an image of width w, scale
 * multiplies.  All clip to the resulting image. */
BoxF box_crop(BoxF b, Rect r);
BoxF box_flip_h(BoxF b, int w);
BoxF box_scale(BoxF b, float sx, float sy);

/* ------------------------------------------------------------------------------------------ */
/* Mammogram preprocessing (data/preprocess.c) */

typedef struct CropOpts {
    int border;         /* pixels ignored at every edge (scanner frames, labels) before
                           thresholding; default 5 */
    float threshold;    /* bright-pixel threshold as a fraction of the max value;
                           < 0 => automatic air/tissue threshold (default -1) */
    int margin;         /* pixels added around the component's bounding box; default 0 */
    float min_area;     /* if the largest component covers less than this fraction of the
                           image, the crop is the whole (border-trimmed) image; default 0.01 */
} CropOpts;

CropOpts crop_opts_default(void);

/* Otsu threshold (a pixel value) of the image's histogram (256 bins over [min, max]).  Pixels in
 * `skip_border` pixels of any edge are ignored. */
uint16_t image_otsu(const Image *im, int skip_border);

/* Bounding rectangle of the breast: threshold (air/tissue: near the background level measured
 * on the darkest edge strip, capped by Otsu; or fixed), then the largest 8-connected
 * bright component (so burned-in markers and labels are dropped), inside the border trim. */
Rect image_breast_bbox(const Image *im, const CropOpts *o);

/* 1 if the breast sits on the right half (more tissue intensity above the air/tissue threshold
 * in the right half than in the left half), else 0. */
int image_breast_on_right(const Image *im);

typedef enum FlipMode {
    FLIP_NONE = 0,
    FLIP_AUTO,        /* laterality 'R' => flip, 'L' => keep; unknown => by tissue side */
    FLIP_TISSUE,      /* always by tissue side (robust to non-standard orientation) */
} FlipMode;

typedef struct PrepOpts {
    int crop;                 /* 1: breast-region crop */
    CropOpts crop_opts;
    FlipMode flip;            /* common side: breast on the left (chest wall left, nipple right) */
    int out_w, out_h;         /* 0 => keep the (cropped) size */
    int keep_aspect;          /* 1: scale to fit and pad right/bottom with 0; 0: stretch */
    ResizeMode mode;          /* for images; masks always use nearest */
} PrepOpts;

PrepOpts prep_opts_default(void); /* crop on, FLIP_AUTO, keep size, stretch, RESIZE_AREA */

/* The geometric transform chosen for one image, applied identically to the image, its masks
 * and its boxes: crop -> flip -> scale (-> pad). */
typedef struct PrepTransform {
    int src_w, src_h;     /* original image size */
    Rect crop;            /* in source pixels */
    int flip;             /* mirrored after the crop */
    int out_w, out_h;     /* final size (incl. padding) */
    int fit_w, fit_h;     /* size of the resized crop inside the output (== out when stretching) */
    float sx, sy;         /* fit / crop size */
    ResizeMode mode;
} PrepTransform;

/* Decide crop, flip and scale from the image and its laterality ('L', 'R' or 0 = unknown). */
void prep_plan(const Image *im, char laterality, const PrepOpts *o, PrepTransform *t);
/* Apply to the image (o->mode) / a mask of the same size (nearest) / boxes in place. */
int prep_apply_image(const PrepTransform *t, const Image *in, Image *out, Err *e);
int prep_apply_mask(const PrepTransform *t, const Image *mask, Image *out, Err *e);
void prep_apply_boxes(const PrepTransform *t, BoxF *boxes, size_t n);

/* Intensity normalisation into floats: x = (px / (2^bits - 1) - mean) / std; out w*h floats.
 * mean 0, std 1 gives [0, 1]. */
void prep_normalize(const Image *im, float mean, float std, float *out);

#endif
