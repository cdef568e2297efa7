/*
 * data/synth_internal.h — what the synth_*.c files share (not part of the public API).
 *
 * A view is rendered on a Canvas in the canonical orientation of a left breast: chest wall on
 * x = 0, nipple pointing to +x, y down.  Right breasts are mirrored at the very end.
 * Physical units: millimetres and 1/mm for attenuation; L is the dimensionless log attenuation
 * -ln(I/I0) summed over the path.
 */
#ifndef VERSA_SYNTH_INTERNAL_H
#define VERSA_SYNTH_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include "data/synth.h"

/* Linear attenuation at ~20 keV in 1/mm (doc B3, Johns & Yaffe): fat, fibroglandular, mass,
 * muscle, skin, calcification (hydroxyapatite-like). */
#define MU_FAT 0.046f
#define MU_GLAND 0.080f
#define MU_MASS 0.090f
#define MU_MUSCLE 0.085f
#define MU_SKIN 0.085f
#define MU_CALC 1.6f

#define SYNTH_IMAGE_STREAM (1ull << 40)   /* rng_fork(seed, SYNTH_IMAGE_STREAM + image index) */

typedef struct Canvas {
    int W, H;
    float mmpx;                 /* mm per pixel */
    float T;                    /* compressed thickness, mm */
    float g_max;
    int view;
    /* outline: the skin line is x = edge[y] (no tissue in rows where edge <= 0) */
    float *edge;                /* (H) */
    float nip_x, nip_y;         /* nipple, px */
    float a_px;                 /* chest wall to nipple, px */
    float b_px[2];              /* half extents along the chest wall: [0] up, [1] down */
    float n_exp[2];             /* superellipse exponents up / down */
    /* pectoral muscle: x < pect_w * (1 - y/pect_h)^pect_gamma for y < pect_h (0 = none) */
    float pect_w, pect_h, pect_gamma;
    /* CC: optional sliver of muscle, x < cc_pw (1 - ((y - nip_y)/cc_ph)^2) */
    float cc_pw, cc_ph;
    /* per-pixel maps, all (H, W) */
    uint8_t *mask;              /* 0 air, 1 breast, 2 pectoral */
    float *dskin;               /* distance to the skin line, mm (0 in air) */
    float *t;                   /* compressed thickness through the pixel, mm */
    float *gland;               /* glandular share of the thickness, 0..g_max */
    float *L;                   /* log attenuation */
    float *tmp;                 /* scratch (H, W) */
    float *tmp2;                /* scratch (H, W) */
} Canvas;

int canvas_alloc(Canvas *c, int W, int H);

/* x of the pectoral edge in row y (0 below the muscle or without one) */
static inline float pect_edge(const Canvas *c, float y) {
    if (c->pect_w <= 0 || y >= c->pect_h) return 0.0f;
    return c->pect_w * powf(1.0f - y / c->pect_h, c->pect_gamma);
}
void canvas_free(Canvas *c);

/* ---- synth_anatomy.c ---- */
/* In-place radix-2 complex FFT of n (power of 2) points, re/im interleaved, forward sign
 * (exp(-2 pi i jk/n)); tw holds n/2 twiddles from synth_fft_twiddles. */
void synth_fft_twiddles(float *tw, int n);
void synth_fft(float *z, int n, const float *tw);
/* Two independent power-law fields (spectrum ~ 1/f^beta above f_min cycles/mm) on an n x n grid
 * of pixel size `mmpx`: out1, out2 each n*n floats, zero mean, unit variance.  Frequencies below
 * f_shared are drawn from `shared` (the breast's texture stream), the rest from `own`. */
int synth_powerlaw(float *out1, float *out2, int n, float mmpx, float beta, float f_min,
                   float f_shared, Rng *shared, Rng *own);
/* Functions returning int return nonzero only when out of memory. */
/* Outline, pectoral, masks, skin distance and thickness of one view. */
void synth_anatomy(Canvas *c, const SynthExam *ex, int side, int view, Rng *r);
/* Glandular map + fat compartments (needs the anatomy). */
int synth_parenchyma(Canvas *c, const SynthBreast *b, int view, Rng *shared, Rng *r, float contrast);
/* Base log attenuation from t, gland, skin, nipple and muscle. */
void synth_base_attenuation(Canvas *c, Rng *r);

/* ---- synth_lesions.c ---- */
/* Image position (px, canonical frame) of a finding's 3-D location in this view. */
void synth_lesion_position(const Canvas *c, const SynthFinding *f, float *x, float *y);
/* Tissue-like findings (focal asymmetry, tissue obscuring a mass) added to the gland field
 * before thresholding; called by synth_parenchyma. */
void synth_lesions_field(Canvas *c, const SynthBreast *b, float *fld, float contrast);
/* Architectural distortion warps the gland map: before the base attenuation. */
void synth_lesions_tissue(Canvas *c, const SynthBreast *b, float contrast);
/* Adds every finding of the breast to c->L and fills img->lesions (canonical frame). */
int synth_lesions_render(Canvas *c, const SynthBreast *b, SynthImage *img, float contrast, float calc_scale);

/* ---- synth_imaging.c ---- */
/* Projection to intensity, detector blur, quantum noise, presentation processing and the VOI
 * curve into img->pixels (canonical frame). */
int synth_acquire(Canvas *c, const SynthConfig *cfg, SynthImage *img, Rng *r);

/* Two N(0, 1) draws from one Box-Muller pair (rng_normal keeps only one). */
static inline void synth_normal2(Rng *r, float *z0, float *z1) {
    float u1 = ((float)(rng_u32(r) >> 8) + 0.5f) * (1.0f / 16777216.0f);
    float u2 = (float)(rng_u32(r) >> 8) * (1.0f / 16777216.0f);
    float rad = sqrtf(-2.0f * logf(u1)), a = 6.2831853071795864f * u2;
    *z0 = rad * cosf(a);
    *z1 = rad * sinf(a);
}

/* ---- small helpers (synth.c) ---- */
int synth_draw(Rng *r, const float *p, int n);      /* index from a distribution */
float synth_uniform(Rng *r, float lo, float hi);
float synth_clampf(float x, float lo, float hi);
/* Separable Gaussian blur of an (H, W) float image in place (tmp: H*W scratch); sigma in px.
 * Large sigmas use three box passes. */
int synth_blur(float *x, float *tmp, int W, int H, float sigma);

#endif
