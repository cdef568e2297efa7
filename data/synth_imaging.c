/*
 * data/synth_imaging.c — from log attenuation to a "for presentation" image (doc B3):
 * I = exp(-L) -> detector blur -> Poisson-like quantum noise (Gaussian with variance I/N0, N0 set
 * for a relative noise sigma/I in the breast) -> P = -ln I -> thickness equalisation (adds back
 * the fat attenuation missing where the compressed breast thins out near the skin) -> unsharp
 * mask -> VOI curve anchored to the expected fat and dense log attenuation of this breast, so
 * brightness encodes composition (fatty breasts dark, dense bright) -> 12-16 bit MONOCHROME2.
 * The equalisation gain, unsharp strength, noise level, blur and VOI gain/offset vary per image
 * (as between vendors and sites); SynthConfig.acq_spread widens the VOI variation.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "data/synth_internal.h"

/* display curve: x = 0 fat, x = 1 fully dense; soft shoulder keeps calcifications in range */
static float voi(float x) {
    float y = x + 0.25f;
    return y <= 0.0f ? 0.0f : tanhf(1.1f * y);
}

/* the displayed level of x as a fraction of the full scale: a floor for air-free tissue, then
 * the curve, bent by the display gamma (1: untouched, which keeps the default images exact) */
static float display_level(float x, float gamma) {
    const float base = 0.06f;
    float y = voi(x);
    return base + (1.0f - base) * (gamma == 1.0f ? y : powf(y, gamma));
}

int synth_acquire(Canvas *c, const SynthConfig *cfg, SynthImage *img, Rng *r) {
    int W = c->W, H = c->H;
    size_t N = (size_t)W * H;
    float *I = c->tmp, *scr = c->tmp2;
    for (size_t i = 0; i < N; i++) I[i] = c->mask[i] ? expf(-c->L[i]) : 1.0f;
    if (synth_blur(I, scr, W, H, cfg->blur_px * synth_uniform(r, 0.8f, 1.2f))) return 1;

    /* quantum noise: sigma/I = rel at the mean breast signal; cfg->noise is the level of a
     * 0.1 mm detector pixel, and an output pixel averages (mmpx / 0.1)^2 of them */
    float rel = cfg->noise * synth_uniform(r, 0.6f, 1.4f) * fminf(1.0f, 0.1f / c->mmpx);
    double sI = 0;
    size_t cnt = 0;
    for (size_t i = 0; i < N; i++)
        if (c->mask[i]) {
            sI += I[i];
            cnt++;
        }
    float meanI = cnt ? (float)(sI / (double)cnt) : 1.0f;
    float inv_n0 = rel * rel * meanI;   /* 1 / N0 */
    for (size_t i = 0; i + 1 < N; i += 2) {
        float z0, z1;   /* drawn for air pixels too: the stream does not depend on the mask */
        synth_normal2(r, &z0, &z1);
        if (c->mask[i]) I[i] += sqrtf(fmaxf(I[i], 0.0f) * inv_n0) * z0;
        if (c->mask[i + 1]) I[i + 1] += sqrtf(fmaxf(I[i + 1], 0.0f) * inv_n0) * z1;
    }

    /* log, thickness equalisation */
    float lam = synth_uniform(r, 0.85f, 1.0f);
    float *D = c->L;
    for (size_t i = 0; i < N; i++) {
        if (!c->mask[i]) {
            D[i] = 0.0f;
            continue;
        }
        float P = -logf(fmaxf(I[i], 1e-6f));
        D[i] = P + lam * MU_FAT * (c->T - c->t[i]);
    }

    /* unsharp mask inside the breast (normalised convolution, so air does not darken the rim) */
    float k_us = synth_uniform(r, 0.3f, 0.9f), s_us = synth_uniform(r, 1.0f, 2.5f) / c->mmpx;
    float *num = I, *den = c->dskin;   /* dskin is no longer needed */
    for (size_t i = 0; i < N; i++) {
        num[i] = c->mask[i] ? D[i] : 0.0f;
        den[i] = c->mask[i] ? 1.0f : 0.0f;
    }
    if (synth_blur(num, scr, W, H, s_us) || synth_blur(den, scr, W, H, s_us)) return 1;
    for (size_t i = 0; i < N; i++)
        if (c->mask[i] && den[i] > 1e-3f) D[i] += k_us * (D[i] - num[i] / den[i]);

    /* VOI anchored to this breast's fat-only and fully-dense log attenuation */
    float ref_fat = MU_FAT * c->T, ref_dense = (MU_FAT + (MU_GLAND - MU_FAT) * c->g_max) * c->T;
    float sp = cfg->acq_spread;
    float gain = synth_uniform(r, fmaxf(0.2f, 1.0f - 0.1f * sp), 1.0f + 0.1f * sp);
    float off = synth_uniform(r, -0.06f * sp, 0.06f * sp);
    /* drawn only for a wider spread, so the default keeps its random stream (and its images) */
    float gamma = sp > 1.0f ? expf(0.15f * (sp - 1.0f) * synth_uniform(r, -1.0f, 1.0f)) : 1.0f;
    float maxv = (float)((1u << img->bits) - 1u);
    float inv = 1.0f / (ref_dense - ref_fat);
    for (size_t i = 0; i < N; i++) {
        if (!c->mask[i]) {
            img->pixels[i] = 0;
            continue;
        }
        float x = (D[i] - ref_fat) * inv * gain + off;
        float v = maxv * display_level(x, gamma);
        v = v < 1.0f ? 1.0f : (v > maxv ? maxv : v);
        img->pixels[i] = (uint16_t)lrintf(v);
    }
    img->level_fat = (uint16_t)lrintf(maxv * display_level(off, gamma));
    img->level_dense = (uint16_t)lrintf(maxv * display_level(gain + off, gamma));
    return 0;
}
