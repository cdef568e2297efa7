/*
 * augment.c — multi-crop, photometric jitter, blur, solarize, CLAHE and iBOT block masks.
 * See data/augment.h for the conventions (torchvision/PIL semantics) each function follows.
 */
#include "data/augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* scratch */

static float *ws_get(AugWork *ws, int slot, size_t n) {
    if (ws->cap[slot] < n) {
        free(ws->buf[slot]);
        size_t cap = n + n / 4 + 64;
        ws->buf[slot] = malloc(cap * sizeof(float));
        if (!ws->buf[slot]) {
            fprintf(stderr, "augment: out of memory (%zu floats)\n", cap);
            abort();
        }
        ws->cap[slot] = cap;
    }
    return ws->buf[slot];
}

void augwork_free(AugWork *w) {
    for (int i = 0; i < 4; i++) free(w->buf[i]);
    memset(w, 0, sizeof *w);
}

static inline float clamp01(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x); }
static inline float uniform_in(Rng *r, float lo, float hi) { return lo + (hi - lo) * rng_uniform(r); }

/* ------------------------------------------------------------------------------------------ */
/* RandomResizedCrop.get_params (torchvision/transforms/transforms.py) */

CropBox rrc_params(Rng *r, int img_w, int img_h, const float scale[2], const float ratio[2]) {
    double area = (double)img_w * img_h;
    double log_r0 = log(ratio[0]), log_r1 = log(ratio[1]);
    for (int attempt = 0; attempt < 10; attempt++) {
        double target_area = area * uniform_in(r, scale[0], scale[1]);
        double aspect = exp(log_r0 + (log_r1 - log_r0) * rng_uniform(r));
        int w = (int)lround(sqrt(target_area * aspect));
        int h = (int)lround(sqrt(target_area / aspect));
        if (w > 0 && w <= img_w && h > 0 && h <= img_h) {
            int y = (int)rng_below(r, (uint32_t)(img_h - h + 1));
            int x = (int)rng_below(r, (uint32_t)(img_w - w + 1));
            return (CropBox){x, y, w, h};
        }
    }
    /* fallback: whole image, clamped to the ratio range, centred */
    double in_ratio = (double)img_w / img_h;
    int w, h;
    if (in_ratio < ratio[0]) {
        w = img_w;
        h = (int)lround(w / ratio[0]);
    } else if (in_ratio > ratio[1]) {
        h = img_h;
        w = (int)lround(h * ratio[1]);
    } else {
        w = img_w;
        h = img_h;
    }
    return (CropBox){(img_w - w) / 2, (img_h - h) / 2, w, h};
}

/* ------------------------------------------------------------------------------------------ */
/* PIL bicubic resampling (libImaging/Resample.c: bicubic_filter with a = -0.5, precompute_coeffs) */

static inline double bicubic_filter(double x) {
    const double a = -0.5;
    if (x < 0.0) x = -x;
    if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0;
    if (x < 2.0) return (((x - 5.0) * x + 8.0) * x - 4.0) * a;
    return 0.0;
}

/* Coefficients for resampling in_size -> out_size: per output i, taps [bounds[2i], +bounds[2i+1])
 * with weights kk[i*ksize + t].  Returns ksize.  The buffers come from the scratch slots. */
static int precompute_coeffs(int in_size, int out_size, int *bounds, float *kk, int ksize) {
    double scale = (double)in_size / out_size;
    double filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 2.0 * filterscale;
    double ss = 1.0 / filterscale;
    for (int i = 0; i < out_size; i++) {
        double center = (i + 0.5) * scale;
        int xmin = (int)(center - support + 0.5);
        if (xmin < 0) xmin = 0;
        int xmax = (int)(center + support + 0.5);
        if (xmax > in_size) xmax = in_size;
        xmax -= xmin;
        if (xmax > ksize) xmax = ksize;
        double w[256], ww = 0.0;
        for (int t = 0; t < xmax; t++) {
            w[t] = bicubic_filter((t + xmin - center + 0.5) * ss);
            ww += w[t];
        }
        float *k = kk + (size_t)i * ksize;
        for (int t = 0; t < ksize; t++) k[t] = (t < xmax && ww != 0.0) ? (float)(w[t] / ww) : 0.0f;
        bounds[2 * i] = xmin;
        bounds[2 * i + 1] = xmax;
    }
    return ksize;
}

static int coeff_ksize(int in_size, int out_size) {
    double scale = (double)in_size / out_size;
    double support = 2.0 * (scale < 1.0 ? 1.0 : scale);
    int k = (int)ceil(support) * 2 + 1;
    return k > 256 ? 256 : k;   /* > 64x shrinking is not a use case; the cap keeps w[] bounded */
}

void resize_crop_bicubic(const float *src, int src_w, int src_h, CropBox c, float *dst, int out_w,
                         int out_h, AugWork *ws) {
    (void)src_h;
    int kx = coeff_ksize(c.w, out_w), ky = coeff_ksize(c.h, out_h);
    /* slot 0: coefficient tables (ints stored in float-sized cells); slot 1: the horizontal pass */
    size_t nx = (size_t)out_w * kx, ny = (size_t)out_h * ky;
    float *coef = ws_get(ws, 0, nx + ny + 2 * (size_t)(out_w + out_h));
    float *kkx = coef, *kky = coef + nx;
    int *bx = (int *)(kky + ny), *by = bx + 2 * out_w;
    precompute_coeffs(c.w, out_w, bx, kkx, kx);
    precompute_coeffs(c.h, out_h, by, kky, ky);

    /* vertical pass first (PIL goes horizontal first; the order only changes float rounding):
     * its inner loop runs along contiguous rows and vectorises, and the short-row horizontal
     * pass then works on out_h rows instead of the crop's h rows */
    float *tmp = ws_get(ws, 1, (size_t)out_h * c.w);   // (out_h, c.w)
    for (int i = 0; i < out_h; i++) {
        float *t = tmp + (size_t)i * c.w;
        const float *k = kky + (size_t)i * ky;
        int y0 = by[2 * i], n = by[2 * i + 1];
        for (int x = 0; x < c.w; x++) t[x] = 0.0f;
        for (int j = 0; j < n; j++) {
            const float *s = src + (size_t)(c.y + y0 + j) * src_w + c.x;
            float kj = k[j];
            for (int x = 0; x < c.w; x++) t[x] += kj * s[x];
        }
    }
    for (int i = 0; i < out_h; i++) {
        const float *t = tmp + (size_t)i * c.w;
        float *d = dst + (size_t)i * out_w;
        for (int x = 0; x < out_w; x++) {
            const float *k = kkx + (size_t)x * kx;
            const float *tp = t + bx[2 * x];
            int n = bx[2 * x + 1];
            float acc = 0.0f;
            for (int j = 0; j < n; j++) acc += tp[j] * k[j];
            d[x] = acc;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* flips, photometric ops */

void hflip_f32(float *img, int w, int h) {
    for (int y = 0; y < h; y++) {
        float *row = img + (size_t)y * w;
        for (int a = 0, b = w - 1; a < b; a++, b--) {
            float t = row[a];
            row[a] = row[b];
            row[b] = t;
        }
    }
}

void vflip_f32(float *img, int w, int h) {
    for (int a = 0, b = h - 1; a < b; a++, b--) {
        float *ra = img + (size_t)a * w, *rb = img + (size_t)b * w;
        for (int x = 0; x < w; x++) {
            float t = ra[x];
            ra[x] = rb[x];
            rb[x] = t;
        }
    }
}

/* torch 'reflect' padding index (edge not repeated), folded until inside [0, n) */
static inline int reflect_index(int i, int n) {
    if (n == 1) return 0;
    while (i < 0 || i >= n) {
        if (i < 0) i = -i;
        if (i >= n) i = 2 * (n - 1) - i;
    }
    return i;
}

void gaussian_blur_f32(float *img, int w, int h, int ksize, float sigma, AugWork *ws) {
    if (ksize < 1) return;
    int half = ksize / 2;
    float k[65];
    if (ksize > 65) ksize = 65, half = 32;
    /* torchvision _get_gaussian_kernel1d: x = linspace(-half, half, ksize), exp(-x^2 / 2s^2) */
    double sum = 0.0, kd[65];
    for (int i = 0; i < ksize; i++) {
        double x = i - half;
        kd[i] = exp(-0.5 * (x / sigma) * (x / sigma));
        sum += kd[i];
    }
    for (int i = 0; i < ksize; i++) k[i] = (float)(kd[i] / sum);

    float *pad = ws_get(ws, 2, (size_t)(w > h ? w : h) + 2 * (size_t)half);
    float *tmp = ws_get(ws, 3, (size_t)w * h);   // (h, w) after the horizontal pass
    for (int y = 0; y < h; y++) {
        const float *row = img + (size_t)y * w;
        for (int i = -half; i < w + half; i++) pad[i + half] = row[reflect_index(i, w)];
        /* taps outer, pixels inner: vectorises, and each t[x] still sums taps 0..k-1 in order */
        float *t = tmp + (size_t)y * w;
        for (int x = 0; x < w; x++) t[x] = 0.0f;
        for (int j = 0; j < ksize; j++) {
            float kj = k[j];
            const float *pj = pad + j;
            for (int x = 0; x < w; x++) t[x] += kj * pj[x];
        }
    }
    /* vertical pass row-wise: img row y = sum_j k[j] * tmp row reflect(y + j - half) */
    for (int y = 0; y < h; y++) {
        float *d = img + (size_t)y * w;
        for (int x = 0; x < w; x++) d[x] = 0.0f;
        for (int j = 0; j < ksize; j++) {
            const float *t = tmp + (size_t)reflect_index(y + j - half, h) * w;
            float kj = k[j];
            for (int x = 0; x < w; x++) d[x] += kj * t[x];
        }
    }
}

void adjust_brightness_f32(float *x, size_t n, float factor) {
    for (size_t i = 0; i < n; i++) x[i] = clamp01(x[i] * factor);
}

void adjust_contrast_f32(float *x, size_t n, float factor) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += x[i];
    float mean = n ? (float)(s / (double)n) : 0.0f;
    float b = (1.0f - factor) * mean;
    for (size_t i = 0; i < n; i++) x[i] = clamp01(factor * x[i] + b);
}

void adjust_gamma_f32(float *x, size_t n, float gamma) {
    for (size_t i = 0; i < n; i++) x[i] = x[i] > 0.0f ? powf(x[i], gamma) : 0.0f;
}

void solarize_f32(float *x, size_t n, float threshold) {
    for (size_t i = 0; i < n; i++)
        if (x[i] >= threshold) x[i] = 1.0f - x[i];
}

/* ------------------------------------------------------------------------------------------ */
/* CLAHE (OpenCV imgproc/src/clahe.cpp, CLAHE_CalcLut_Body + CLAHE_Interpolation_Body) */

ClaheConfig clahe_default(void) { return (ClaheConfig){.clip_limit = 2.0f, .tiles_x = 8, .tiles_y = 8, .nbins = 256}; }

static inline int reflect101(int i, int n) { return reflect_index(i, n); }

int clahe_f32(const float *in, int w, int h, float *out, const ClaheConfig *cfg, AugWork *ws, Err *e) {
    int tx = cfg->tiles_x, ty = cfg->tiles_y, nb = cfg->nbins;
    if (tx < 1 || ty < 1 || nb < 2 || nb > 65536 || cfg->clip_limit < 0)
        return err_set(e, "clahe: bad config (tiles %dx%d, nbins %d, clip %g)", tx, ty, nb, (double)cfg->clip_limit);
    /* OpenCV pads bottom/right by reflect-101 to (dim + tiles - dim % tiles) when either
     * dimension is not divisible -- even the divisible one grows by a full tile count */
    int ew = w, eh = h;
    if (w % tx != 0 || h % ty != 0) {
        ew = w + tx - w % tx;
        eh = h + ty - h % ty;
    }
    int tw = ew / tx, th = eh / ty;
    if (tw < 1 || th < 1 || (ew > w && w < 2) || (eh > h && h < 2))
        return err_set(e, "clahe: image %dx%d too small for %dx%d tiles", w, h, tx, ty);
    long tile_px = (long)tw * th;
    int clip = 0;
    if (cfg->clip_limit > 0) {
        clip = (int)(cfg->clip_limit * tile_px / nb);
        if (clip < 1) clip = 1;
    }
    float lut_scale = (float)(nb - 1) / (float)tile_px;

    /* quantised input, then per-tile LUTs: (ty, tx, nb) */
    float *q = ws_get(ws, 0, (size_t)w * h);    // (h, w) bin index as float
    for (size_t i = 0; i < (size_t)w * h; i++) q[i] = (float)lrintf(clamp01(in[i]) * (float)(nb - 1));
    float *lut = ws_get(ws, 1, (size_t)tx * ty * nb);
    float *histf = ws_get(ws, 2, (size_t)nb);
    int *hist = (int *)histf;
    for (int by = 0; by < ty; by++) {
        for (int bx = 0; bx < tx; bx++) {
            memset(hist, 0, (size_t)nb * sizeof(int));
            for (int y = by * th; y < (by + 1) * th; y++) {
                const float *row = q + (size_t)reflect101(y, h) * w;
                for (int x = bx * tw; x < (bx + 1) * tw; x++) hist[(int)row[reflect101(x, w)]]++;
            }
            if (clip > 0) {
                long clipped = 0;
                for (int i = 0; i < nb; i++)
                    if (hist[i] > clip) {
                        clipped += hist[i] - clip;
                        hist[i] = clip;
                    }
                long batch = clipped / nb, residual = clipped - batch * nb;
                for (int i = 0; i < nb; i++) hist[i] += (int)batch;
                if (residual != 0) {
                    long step = nb / residual;
                    if (step < 1) step = 1;
                    for (long i = 0; i < nb && residual > 0; i += step, residual--) hist[i]++;
                }
            }
            float *l = lut + ((size_t)by * tx + bx) * nb;
            long sum = 0;
            for (int i = 0; i < nb; i++) {
                sum += hist[i];
                float v = rintf((float)sum * lut_scale);   /* saturate_cast rounds to nearest even */
                l[i] = v > (float)(nb - 1) ? (float)(nb - 1) : v;
            }
        }
    }

    /* bilinear blend of the four nearest tile LUTs; the column terms are the same for every row */
    float inv_tw = 1.0f / (float)tw, inv_th = 1.0f / (float)th, inv_max = 1.0f / (float)(nb - 1);
    float *colw = ws_get(ws, 3, 3 * (size_t)w);   // (w) xa, then (2, w) tile column offsets
    int *colo = (int *)(colw + w);
    for (int x = 0; x < w; x++) {
        float txf = (float)x * inv_tw - 0.5f;
        int tx1 = (int)floorf(txf), tx2 = tx1 + 1;
        colw[x] = txf - (float)tx1;
        if (tx1 < 0) tx1 = 0;
        if (tx2 > tx - 1) tx2 = tx - 1;
        colo[x] = tx1 * nb;
        colo[w + x] = tx2 * nb;
    }
    for (int y = 0; y < h; y++) {
        float tyf = (float)y * inv_th - 0.5f;
        int ty1 = (int)floorf(tyf), ty2 = ty1 + 1;
        float ya = tyf - (float)ty1, ya1 = 1.0f - ya;
        if (ty1 < 0) ty1 = 0;
        if (ty2 > ty - 1) ty2 = ty - 1;
        const float *lr1 = lut + (size_t)ty1 * tx * nb, *lr2 = lut + (size_t)ty2 * tx * nb;
        const float *qrow = q + (size_t)y * w;
        float *orow = out + (size_t)y * w;
        for (int x = 0; x < w; x++) {
            int v = (int)qrow[x];
            float xa = colw[x], xa1 = 1.0f - xa;
            int o1 = colo[x] + v, o2 = colo[w + x] + v;
            float res = (lr1[o1] * xa1 + lr1[o2] * xa) * ya1 + (lr2[o1] * xa1 + lr2[o2] * xa) * ya;
            orow[x] = clamp01(res * inv_max);
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* multi-crop */

MultiCropConfig multicrop_default(void) {
    return (MultiCropConfig){
        .global_size = 224, .global_scale = {0.32f, 1.0f},
        .n_local = 8, .local_size = 96, .local_scale = {0.05f, 0.32f},
        .ratio = {3.0f / 4.0f, 4.0f / 3.0f},
        .flip_p = 0.5f, .jitter_p = 0.8f, .brightness = 0.4f, .contrast = 0.4f,
        .blur_p = {1.0f, 0.1f, 0.5f}, .blur_dinov2_quirk = 0, .blur_kernel = 9,
        .blur_sigma = {0.1f, 2.0f},
        .solarize_p = 0.2f, .solarize_threshold = 128.0f / 255.0f,
        .channels = 3,
        .mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f},
    };
}

static int bad_prob(float p) { return !(p >= 0.0f && p <= 1.0f); }

int multicrop_validate(const MultiCropConfig *c, Err *e) {
    if (c->global_size < 1 || c->global_size > 4096)
        return err_set(e, "crops.global_crops_size: %d out of range [1, 4096]", c->global_size);
    if (c->n_local < 0 || c->n_local > AUG_MAX_LOCAL)
        return err_set(e, "crops.local_crops_number: %d out of range [0, %d]", c->n_local, AUG_MAX_LOCAL);
    if (c->n_local > 0 && (c->local_size < 1 || c->local_size > 4096))
        return err_set(e, "crops.local_crops_size: %d out of range [1, 4096]", c->local_size);
    const float *sc[2] = {c->global_scale, c->local_scale};
    const char *scn[2] = {"crops.global_crops_scale", "crops.local_crops_scale"};
    for (int i = 0; i < 2; i++)
        if (!(sc[i][0] > 0.0f && sc[i][0] <= sc[i][1] && sc[i][1] <= 1.0f))
            return err_set(e, "%s: (%g, %g) must satisfy 0 < min <= max <= 1", scn[i], (double)sc[i][0], (double)sc[i][1]);
    if (!(c->ratio[0] > 0.0f && c->ratio[0] <= c->ratio[1]))
        return err_set(e, "crops.ratio: (%g, %g) must satisfy 0 < min <= max", (double)c->ratio[0], (double)c->ratio[1]);
    if (bad_prob(c->flip_p) || bad_prob(c->jitter_p) || bad_prob(c->solarize_p) || bad_prob(c->blur_p[0]) ||
        bad_prob(c->blur_p[1]) || bad_prob(c->blur_p[2]))
        return err_set(e, "crops: probabilities (flip, jitter, blur, solarize) must be in [0, 1]");
    if (!(c->gamma >= 0.0f && c->gamma <= AUG_MAX_GAMMA))
        return err_set(e, "crops.gamma: %g must be in [0, %g]", (double)c->gamma, (double)AUG_MAX_GAMMA);
    if (c->blur_kernel < 1 || c->blur_kernel > 65 || c->blur_kernel % 2 == 0)
        return err_set(e, "crops.blur_kernel: %d must be odd and in [1, 65]", c->blur_kernel);
    if (!(c->blur_sigma[0] > 0.0f && c->blur_sigma[0] <= c->blur_sigma[1]))
        return err_set(e, "crops.blur_sigma: (%g, %g) must satisfy 0 < min <= max", (double)c->blur_sigma[0], (double)c->blur_sigma[1]);
    if (c->channels != 1 && c->channels != 3) return err_set(e, "crops.channels: %d must be 1 or 3", c->channels);
    for (int k = 0; k < c->channels; k++)
        if (!(c->std[k] > 0.0f)) return err_set(e, "crops.std[%d]: %g must be > 0", k, (double)c->std[k]);
    return 0;
}

/* One crop: RRC -> resize -> flip -> jitter -> blur -> (solarize) -> normalise into out (C, S, S).
 * Draw order follows torchvision's transform order. */
static void one_crop(const float *img, int w, int h, const MultiCropConfig *cfg, Rng *r, int size,
                     const float scale[2], float blur_p, int solarize, float *out, CropInfo *ci,
                     AugWork *ws) {
    CropInfo info = {.brightness = 1.0f, .contrast = 1.0f, .gamma = 1.0f};
    info.box = rrc_params(r, w, h, scale, cfg->ratio);
    size_t n = (size_t)size * size;
    float *x = out;   /* work in channel 0 of the output, replicate at the end */
    resize_crop_bicubic(img, w, h, info.box, x, size, size, ws);
    for (size_t i = 0; i < n; i++) x[i] = clamp01(x[i]);   /* PIL clips to the 8-bit range */
    if (rng_uniform(r) < cfg->flip_p) {
        hflip_f32(x, size, size);
        info.flipped = 1;
    }
    if (rng_uniform(r) < cfg->jitter_p) {
        info.jittered = 1;
        info.contrast_first = (int)rng_below(r, 2);
        info.brightness = uniform_in(r, fmaxf(0.0f, 1.0f - cfg->brightness), 1.0f + cfg->brightness);
        info.contrast = uniform_in(r, fmaxf(0.0f, 1.0f - cfg->contrast), 1.0f + cfg->contrast);
        if (info.contrast_first) {
            adjust_contrast_f32(x, n, info.contrast);
            adjust_brightness_f32(x, n, info.brightness);
        } else {
            adjust_brightness_f32(x, n, info.brightness);
            adjust_contrast_f32(x, n, info.contrast);
        }
        /* drawn only when enabled, so the DINOv2 default keeps its random stream */
        if (cfg->gamma > 0.0f) {
            info.gamma = expf(uniform_in(r, -cfg->gamma, cfg->gamma));
            adjust_gamma_f32(x, n, info.gamma);
        }
    }
    float pb = cfg->blur_dinov2_quirk ? 1.0f - blur_p : blur_p;
    if (rng_uniform(r) < pb) {
        info.blur_sigma = uniform_in(r, cfg->blur_sigma[0], cfg->blur_sigma[1]);
        gaussian_blur_f32(x, size, size, cfg->blur_kernel, info.blur_sigma, ws);
    }
    if (solarize && rng_uniform(r) < cfg->solarize_p) {
        solarize_f32(x, n, cfg->solarize_threshold);
        info.solarized = 1;
    }
    for (int c = cfg->channels - 1; c >= 0; c--) {   /* channel 0 last: it is the source */
        float m = cfg->mean[c], inv = 1.0f / cfg->std[c];
        float *o = out + (size_t)c * n;
        for (size_t i = 0; i < n; i++) o[i] = (x[i] - m) * inv;
    }
    if (ci) *ci = info;
}

void multicrop(const float *img, int w, int h, const MultiCropConfig *cfg, const Rng *r,
               float *const *global, float *const *local, CropInfo *info, AugWork *ws) {
    for (int k = 0; k < 2 + cfg->n_local; k++) {
        Rng cr = rng_fork(r, (uint64_t)k);
        CropInfo *ci = info ? &info[k] : NULL;
        if (k < 2)
            one_crop(img, w, h, cfg, &cr, cfg->global_size, cfg->global_scale, cfg->blur_p[k], k == 1,
                     global[k], ci, ws);
        else
            one_crop(img, w, h, cfg, &cr, cfg->local_size, cfg->local_scale, cfg->blur_p[2], 0,
                     local[k - 2], ci, ws);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* iBOT masks (dinov2/data/masking.py MaskingGenerator, dinov2/data/collate.py) */

MaskConfig mask_default(int grid_h, int grid_w) {
    return (MaskConfig){.grid_h = grid_h, .grid_w = grid_w, .ratio_min = 0.1f, .ratio_max = 0.5f,
                        .sample_prob = 0.5f, .min_num_patches = 4, .min_aspect = 0.3f, .max_num_frac = 0.5f};
}

/* MaskingGenerator._mask: up to 10 tries to add one rectangle; returns the patches it added */
static int mask_block(Rng *r, const MaskConfig *c, uint8_t *mask, int max_mask_patches, MaskStats *st) {
    int H = c->grid_h, W = c->grid_w;
    double la0 = log(c->min_aspect), la1 = -la0;
    int delta = 0;
    for (int attempt = 0; attempt < 10; attempt++) {
        /* random.uniform(a, b) = a + (b - a) * random(), also when b < a */
        double target_area = c->min_num_patches + ((double)max_mask_patches - c->min_num_patches) * rng_uniform(r);
        double aspect = exp(la0 + (la1 - la0) * rng_uniform(r));
        int h = (int)lround(sqrt(target_area * aspect));
        int w = (int)lround(sqrt(target_area / aspect));
        if (w < W && h < H) {
            int top = (int)rng_below(r, (uint32_t)(H - h + 1));    /* randint is inclusive */
            int left = (int)rng_below(r, (uint32_t)(W - w + 1));
            int num_masked = 0;
            for (int i = top; i < top + h; i++)
                for (int j = left; j < left + w; j++) num_masked += mask[i * W + j];
            if (0 < h * w - num_masked && h * w - num_masked <= max_mask_patches) {
                for (int i = top; i < top + h; i++)
                    for (int j = left; j < left + w; j++)
                        if (!mask[i * W + j]) {
                            mask[i * W + j] = 1;
                            delta++;
                        }
            }
            if (delta > 0) {
                if (st && st->n_blocks < 64) {
                    int b = st->n_blocks;
                    st->block_h[b] = h;
                    st->block_w[b] = w;
                    st->block_new[b] = delta;
                    st->block_area[b] = (float)target_area;
                    st->block_max[b] = max_mask_patches;
                }
                if (st) st->n_blocks++;
                break;
            }
        }
    }
    return delta;
}

int mask_generate(Rng *r, const MaskConfig *c, int num_masking_patches, uint8_t *mask, MaskStats *st) {
    int N = c->grid_h * c->grid_w;
    int max_num = (int)(c->max_num_frac * (float)N);
    memset(mask, 0, (size_t)N);
    if (st) st->n_blocks = 0;
    int count = 0;
    while (count < num_masking_patches) {
        int max_mask = num_masking_patches - count;
        if (max_mask > max_num) max_mask = max_num;
        int delta = mask_block(r, c, mask, max_mask, st);
        if (delta == 0) break;
        count += delta;
    }
    return count;
}

int mask_collate(Rng *r, const MaskConfig *c, int n_crops, uint8_t *masks) {
    int N = c->grid_h * c->grid_w;
    int n_masked = (int)((float)n_crops * c->sample_prob);
    int upperbound = 0;
    /* random.shuffle(masks_list) after generation is the same distribution as drawing the
     * permutation first and writing the i-th generated mask to row perm[i] */
    uint32_t *perm = malloc((size_t)(n_crops > 0 ? n_crops : 1) * sizeof *perm);
    if (!perm) {
        fprintf(stderr, "mask_collate: out of memory\n");
        abort();
    }
    for (int i = 0; i < n_crops; i++) perm[i] = (uint32_t)i;
    rng_shuffle(r, perm, (size_t)n_crops);
    for (int i = 0; i < n_crops; i++) {
        uint8_t *m = masks + (size_t)perm[i] * N;
        if (i < n_masked) {
            /* torch.linspace(ratio_min, ratio_max, n_masked + 1) */
            float p0 = c->ratio_min + (c->ratio_max - c->ratio_min) * (float)i / (float)n_masked;
            float p1 = c->ratio_min + (c->ratio_max - c->ratio_min) * (float)(i + 1) / (float)n_masked;
            int target = (int)((float)N * uniform_in(r, p0, p1));
            mask_generate(r, c, target, m, NULL);
            upperbound += (int)((float)N * p1);
        } else {
            memset(m, 0, (size_t)N);
        }
    }
    free(perm);
    return upperbound;
}
