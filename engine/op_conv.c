/*
 * op_conv.c — 2-D convolution, NCHW, forward and hand-written backward.
 *
 * Three kernels behind one op:
 *   - dense / grouped conv: im2col + cblas_sgemm per image and group.  im2col works on tiles of
 *     whole output rows so the column buffer stays bounded (COL_TILE_FLOATS per thread) however
 *     large the layer; a 1x1 stride-1 unpadded conv is a plain GEMM on the input, no im2col.
 *   - depthwise conv (groups == C == OC, EfficientNet's MBConv): direct SIMD loops over a
 *     zero-padded copy of each plane; im2col would turn it into M=1 GEMMs.
 *   - backward: dW = dY @ col^T and dcol = W^T @ dY followed by col2im; depthwise again direct.
 *
 * Threads: images are split statically over OpenMP threads (each calls a single-threaded sgemm)
 * when there are at least as many images as threads, otherwise images run one after the other
 * and OpenBLAS threads each GEMM.  Weight gradients are summed over the batch in a fixed order
 * (per-thread partials added in thread order, or one thread per channel for depthwise), so the
 * same thread count gives bit-identical results.  Scratch buffers come from the step arena.
 */
#include "engine.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* largest im2col tile per thread, in floats (16 MB) */
#define COL_TILE_FLOATS ((size_t)4 << 20)
/* largest depthwise kernel (taps) of the direct kernel; larger ones go through grouped GEMM */
#define DW_MAX_TAPS 64
/* below this much inner-loop work a parallel region costs more than it saves */
#define PAR_MIN_WORK ((size_t)1 << 15)

Conv2dArgs conv2d_args(int stride, int pad, int dilation, int groups) {
    Conv2dArgs a = {
        .stride_h = stride, .stride_w = stride,
        .pad_top = pad, .pad_bottom = pad, .pad_left = pad, .pad_right = pad,
        .dil_h = dilation, .dil_w = dilation,
        .groups = groups,
    };
    return a;
}

/* TF "SAME" as lukemelas' Conv2dStaticSamePadding: out = ceil(in / stride); the padding that
 * makes the last window fit is split with the odd pixel at the bottom/right. */
static void same_pad(int in, int k, int stride, int dilation, int *lo, int *hi) {
    int out = (in + stride - 1) / stride;
    int total = (out - 1) * stride + (k - 1) * dilation + 1 - in;
    if (total < 0) total = 0;
    *lo = total / 2;
    *hi = total - *lo;
}

Conv2dArgs conv2d_args_same(int in_h, int in_w, int kh, int kw, int stride, int dilation, int groups) {
    Conv2dArgs a = conv2d_args(stride, 0, dilation, groups);
    same_pad(in_h, kh, stride, dilation, &a.pad_top, &a.pad_bottom);
    same_pad(in_w, kw, stride, dilation, &a.pad_left, &a.pad_right);
    return a;
}

/* ------------------------------------------------------------------------------------------ */
/* geometry */

typedef struct ConvGeom {
    size_t N, C, H, W;       /* input (N, C, H, W) */
    size_t OC, KH, KW;       /* weight (OC, C/G, KH, KW) */
    size_t OH, OW;           /* output (N, OC, OH, OW) */
    size_t G, Cg, OCg, K;    /* groups; channels per group; K = Cg*KH*KW (GEMM inner dim) */
    long sh, sw, pt, pl, dh, dw;
    int pointwise;           /* 1x1, stride 1, no padding: the input is already the col matrix */
    int depthwise;           /* G == C == OC > 1 and at most DW_MAX_TAPS taps: direct kernel */
} ConvGeom;

static ConvGeom conv_geom(const Tensor *x, const Tensor *w, const Conv2dArgs *a) {
    ConvGeom g;
    g.N = x->shape[0], g.C = x->shape[1], g.H = x->shape[2], g.W = x->shape[3];
    g.OC = w->shape[0], g.KH = w->shape[2], g.KW = w->shape[3];
    g.sh = a->stride_h, g.sw = a->stride_w, g.pt = a->pad_top, g.pl = a->pad_left;
    g.dh = a->dil_h, g.dw = a->dil_w;
    g.G = (size_t)a->groups;
    g.Cg = g.C / g.G, g.OCg = g.OC / g.G;
    g.K = g.Cg * g.KH * g.KW;
    long eh = (long)g.H + a->pad_top + a->pad_bottom - g.dh * ((long)g.KH - 1) - 1;
    long ew = (long)g.W + a->pad_left + a->pad_right - g.dw * ((long)g.KW - 1) - 1;
    g.OH = eh < 0 ? 0 : (size_t)(eh / g.sh + 1);
    g.OW = ew < 0 ? 0 : (size_t)(ew / g.sw + 1);
    g.pointwise = g.KH == 1 && g.KW == 1 && g.sh == 1 && g.sw == 1 && a->pad_top == 0 && a->pad_bottom == 0 &&
                  a->pad_left == 0 && a->pad_right == 0;
    g.depthwise = g.G > 1 && g.G == g.C && g.OC == g.C && g.KH * g.KW <= DW_MAX_TAPS;
    return g;
}

/* output columns [lo, hi) whose input column ow*s + off lies inside [0, n) */
static void valid_range(long off, long s, long n, long count, long *lo, long *hi) {
    long l = off >= 0 ? 0 : (-off + s - 1) / s;
    long h = n - off > 0 ? (n - off + s - 1) / s : 0;
    if (h > count) h = count;
    if (l > h) l = h;
    *lo = l, *hi = h;
}

/* output rows per im2col tile: whole rows, at most COL_TILE_FLOATS floats */
static size_t tile_rows(const ConvGeom *g) {
    size_t per_row = g->K * g->OW;
    size_t r = per_row ? COL_TILE_FLOATS / per_row : g->OH;
    if (r < 1) r = 1;
    return r < g->OH ? r : g->OH;
}

/* ------------------------------------------------------------------------------------------ */
/* im2col / col2im on a tile of output rows [oh0, oh1) */

/* col (K, (oh1-oh0)*OW) from x (Cg, H, W): row (c, kh, kw) holds the input pixel each output
 * pixel sees through tap (kh, kw), zero where the window hangs over the padding.  `par`: split
 * channels over threads (when images are not already split) */
static void im2col_tile(const ConvGeom *g, const float *x, size_t oh0, size_t oh1, float *col, int par) {
    size_t ncol = (oh1 - oh0) * g->OW;
#pragma omp parallel for schedule(static) if (par && g->K * ncol >= PAR_MIN_WORK)
    for (size_t c = 0; c < g->Cg; c++) {
        for (size_t kh = 0; kh < g->KH; kh++) {
            for (size_t kw = 0; kw < g->KW; kw++) {
                float *dst = col + ((c * g->KH + kh) * g->KW + kw) * ncol;
                long off = (long)kw * g->dw - g->pl;
                long lo, hi;
                valid_range(off, g->sw, (long)g->W, (long)g->OW, &lo, &hi);
                for (size_t oh = oh0; oh < oh1; oh++) {
                    float *d = dst + (oh - oh0) * g->OW;
                    long ih = (long)oh * g->sh - g->pt + (long)kh * g->dh;
                    if (ih < 0 || ih >= (long)g->H) {
                        memset(d, 0, g->OW * sizeof(float));
                        continue;
                    }
                    const float *xr = x + (c * g->H + (size_t)ih) * g->W;   /* input row ih */
                    for (long ow = 0; ow < lo; ow++) d[ow] = 0.0f;
                    if (g->sw == 1) memcpy(d + lo, xr + lo + off, (size_t)(hi - lo) * sizeof(float));
                    else if (g->sw == 2)   /* a literal stride lets the compiler vectorise the gather */
                        for (long ow = lo; ow < hi; ow++) d[ow] = xr[2 * ow + off];
                    else
                        for (long ow = lo; ow < hi; ow++) d[ow] = xr[ow * g->sw + off];
                    for (long ow = hi; ow < (long)g->OW; ow++) d[ow] = 0.0f;
                }
            }
        }
    }
}

/* dx (Cg, H, W) += the transpose of im2col_tile applied to col; channels write disjoint planes */
static void col2im_tile(const ConvGeom *g, const float *col, size_t oh0, size_t oh1, float *dx, int par) {
    size_t ncol = (oh1 - oh0) * g->OW;
#pragma omp parallel for schedule(static) if (par && g->K * ncol >= PAR_MIN_WORK)
    for (size_t c = 0; c < g->Cg; c++) {
        for (size_t kh = 0; kh < g->KH; kh++) {
            for (size_t kw = 0; kw < g->KW; kw++) {
                const float *src = col + ((c * g->KH + kh) * g->KW + kw) * ncol;
                long off = (long)kw * g->dw - g->pl;
                long lo, hi;
                valid_range(off, g->sw, (long)g->W, (long)g->OW, &lo, &hi);
                for (size_t oh = oh0; oh < oh1; oh++) {
                    long ih = (long)oh * g->sh - g->pt + (long)kh * g->dh;
                    if (ih < 0 || ih >= (long)g->H) continue;
                    const float *s = src + (oh - oh0) * g->OW;
                    float *dr = dx + (c * g->H + (size_t)ih) * g->W;   /* input row ih */
                    if (g->sw == 1)
                        for (long ow = lo; ow < hi; ow++) dr[ow + off] += s[ow];
                    else if (g->sw == 2)
                        for (long ow = lo; ow < hi; ow++) dr[2 * ow + off] += s[ow];
                    else
                        for (long ow = lo; ow < hi; ow++) dr[ow * g->sw + off] += s[ow];
                }
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* dense / grouped conv via GEMM */

/* y[n] (OC, OH*OW) = conv(x[n]) for one image; col: this thread's tile buffer; par: im2col may
 * use threads (the caller is not splitting images) */
static void gemm_conv_image(const ConvGeom *g, const float *x, const float *w, float *y, float *col, int par) {
    size_t HW = g->H * g->W, OHW = g->OH * g->OW, tr = tile_rows(g);
    for (size_t gi = 0; gi < g->G; gi++) {
        const float *xg = x + gi * g->Cg * HW;    /* (Cg, H, W) */
        const float *wg = w + gi * g->OCg * g->K; /* (OCg, K) */
        float *yg = y + gi * g->OCg * OHW;        /* (OCg, OH*OW) */
        if (g->pointwise) {
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g->OCg, (int)HW, (int)g->Cg, 1.0f, wg,
                        (int)g->K, xg, (int)HW, 0.0f, yg, (int)OHW);
            continue;
        }
        for (size_t oh0 = 0; oh0 < g->OH; oh0 += tr) {
            size_t oh1 = oh0 + tr < g->OH ? oh0 + tr : g->OH;
            size_t ncol = (oh1 - oh0) * g->OW;
            im2col_tile(g, xg, oh0, oh1, col, par);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)g->OCg, (int)ncol, (int)g->K, 1.0f, wg,
                        (int)g->K, col, (int)ncol, 0.0f, yg + oh0 * g->OW, (int)OHW);
        }
    }
}

/* one image's backward: dw (OC, K) += dY col^T, dx (C, H, W) += col2im(W^T dY); either may be NULL */
static void gemm_conv_image_backward(const ConvGeom *g, const float *x, const float *w, const float *dy,
                                     float *dx, float *dw, float *col, int par) {
    size_t HW = g->H * g->W, OHW = g->OH * g->OW, tr = tile_rows(g);
    for (size_t gi = 0; gi < g->G; gi++) {
        const float *xg = x + gi * g->Cg * HW;      /* (Cg, H, W) */
        const float *wg = w + gi * g->OCg * g->K;   /* (OCg, K) */
        const float *dyg = dy + gi * g->OCg * OHW;  /* (OCg, OH*OW) */
        float *dxg = dx ? dx + gi * g->Cg * HW : NULL;
        float *dwg = dw ? dw + gi * g->OCg * g->K : NULL;
        if (g->pointwise) {
            if (dwg)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g->OCg, (int)g->Cg, (int)HW, 1.0f, dyg,
                            (int)OHW, xg, (int)HW, 1.0f, dwg, (int)g->K);
            if (dxg)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g->Cg, (int)HW, (int)g->OCg, 1.0f, wg,
                            (int)g->K, dyg, (int)OHW, 1.0f, dxg, (int)HW);
            continue;
        }
        for (size_t oh0 = 0; oh0 < g->OH; oh0 += tr) {
            size_t oh1 = oh0 + tr < g->OH ? oh0 + tr : g->OH;
            size_t ncol = (oh1 - oh0) * g->OW;
            const float *dyt = dyg + oh0 * g->OW;   /* (OCg, ncol) with row stride OH*OW */
            if (dwg) {
                im2col_tile(g, xg, oh0, oh1, col, par);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)g->OCg, (int)g->K, (int)ncol, 1.0f, dyt,
                            (int)OHW, col, (int)ncol, 1.0f, dwg, (int)g->K);
            }
            if (dxg) {
                /* col now holds d(col) (K, ncol) */
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)g->K, (int)ncol, (int)g->OCg, 1.0f, wg,
                            (int)g->K, dyt, (int)OHW, 0.0f, col, (int)ncol);
                col2im_tile(g, col, oh0, oh1, dxg, par);
            }
        }
    }
}

static size_t col_floats(const ConvGeom *g) {
    return g->pointwise ? 1 : g->K * tile_rows(g) * g->OW;
}

/* images split over threads only when every thread gets one; otherwise OpenBLAS threads GEMMs */
static int images_in_parallel(const ConvGeom *g) {
    int nt = omp_get_max_threads();
    return nt > 1 && g->N >= (size_t)nt && !omp_in_parallel() &&
           g->N * g->OC * g->OH * g->OW * g->K >= PAR_MIN_WORK;
}

static void gemm_conv_forward(Ctx *c, const ConvGeom *g, const float *x, const float *w, float *y) {
    size_t xs = g->C * g->H * g->W, ys = g->OC * g->OH * g->OW, cf = col_floats(g);
    if (images_in_parallel(g)) {
        int nt = omp_get_max_threads();
        float *cols = arena_alloc(&c->step, (size_t)nt * cf * sizeof(float)); /* (nt, cf) */
#pragma omp parallel for schedule(static)
        for (size_t n = 0; n < g->N; n++)
            gemm_conv_image(g, x + n * xs, w, y + n * ys, cols + (size_t)omp_get_thread_num() * cf, 0);
    } else {
        float *col = arena_alloc(&c->step, cf * sizeof(float));
        int par = !omp_in_parallel();
        for (size_t n = 0; n < g->N; n++) gemm_conv_image(g, x + n * xs, w, y + n * ys, col, par);
    }
}

static void gemm_conv_backward(Ctx *c, const ConvGeom *g, const float *x, const float *w, const float *dy,
                               float *dx, float *dw) {
    size_t xs = g->C * g->H * g->W, ys = g->OC * g->OH * g->OW, cf = col_floats(g);
    size_t nw = g->OC * g->K;
    if (images_in_parallel(g)) {
        int nt = omp_get_max_threads();
        float *cols = ctx_scratch(c, (size_t)nt * cf);          /* (nt, cf) */
        float *dwp = dw ? ctx_scratch(c, (size_t)nt * nw) : NULL;  /* (nt, OC, K) */
        if (dwp) memset(dwp, 0, (size_t)nt * nw * sizeof(float));
#pragma omp parallel
        {
            int t = omp_get_thread_num();
#pragma omp for schedule(static)
            for (size_t n = 0; n < g->N; n++)
                gemm_conv_image_backward(g, x + n * xs, w, dy + n * ys, dx ? dx + n * xs : NULL,
                                         dwp ? dwp + (size_t)t * nw : NULL, cols + (size_t)t * cf, 0);
        }
        if (dw) /* per-thread partial sums, added in thread order */
            for (int t = 0; t < nt; t++)
                for (size_t i = 0; i < nw; i++) dw[i] += dwp[(size_t)t * nw + i];
        if (dwp) ctx_scratch_release(c, dwp, (size_t)nt * nw);
        ctx_scratch_release(c, cols, (size_t)nt * cf);
    } else {
        float *col = ctx_scratch(c, cf);
        int par = !omp_in_parallel();
        for (size_t n = 0; n < g->N; n++)
            gemm_conv_image_backward(g, x + n * xs, w, dy + n * ys, dx ? dx + n * xs : NULL, dw, col, par);
        ctx_scratch_release(c, col, cf);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* depthwise conv: direct kernels over a padded plane.
 *
 * Each input plane is copied into a zero-padded buffer whose columns are split by stride phase:
 * padded column q*s + p is stored at [p][q].  The input column an output column ow reads through
 * tap kw, ow*s + kw*d, is then phase (kw*d) % s at index ow + (kw*d) / s, so every inner loop
 * over ow walks memory contiguously for stride 2 as well as stride 1.
 * Buffer layout: (Hp rows, s phases, Wq) with Hp = H + pads, Wq = ceil((W + pads) / s). */

typedef struct DwPad {
    size_t Hp, Wq, s;
    size_t row;                  /* floats per padded row: s * Wq */
    size_t ntap;                 /* KH * KW */
    size_t tap[DW_MAX_TAPS];     /* offset, from output (oh, ow)'s base oh*sh*row + ow, of the
                                    value tap (kh, kw) reads */
} DwPad;

static DwPad dw_pad_geom(const ConvGeom *g, const Conv2dArgs *a) {
    DwPad p;
    size_t Wp = g->W + (size_t)a->pad_left + (size_t)a->pad_right;
    p.Hp = g->H + (size_t)a->pad_top + (size_t)a->pad_bottom;
    p.s = (size_t)g->sw;
    p.Wq = (Wp + p.s - 1) / p.s;
    p.row = p.s * p.Wq;
    p.ntap = g->KH * g->KW;
    for (size_t kh = 0; kh < g->KH; kh++)
        for (size_t kw = 0; kw < g->KW; kw++) {
            size_t off = kw * (size_t)g->dw;
            p.tap[kh * g->KW + kw] = kh * (size_t)g->dh * p.row + (off % p.s) * p.Wq + off / p.s;
        }
    return p;
}

/* buf (Hp, s, Wq) = zero-padded, phase-split copy of plane x (H, W).  Only the interior is
 * written: a thread zeroes its buffer once and the padding stays zero from plane to plane. */
static void dw_pad_plane(const ConvGeom *g, const DwPad *p, const float *x, float *buf) {
    for (size_t ih = 0; ih < g->H; ih++) {
        float *br = buf + (ih + (size_t)g->pt) * p->row;
        const float *xr = x + ih * g->W;
        if (p->s == 1) {
            memcpy(br + g->pl, xr, g->W * sizeof(float));
            continue;
        }
        if (p->s == 2) {
            /* even input columns land in phase pl % 2, odd ones in the other: one pass that the
             * compiler vectorises as a stride-2 group load */
            size_t pl = (size_t)g->pl, half = g->W / 2;
            float *restrict da = br + (pl & 1) * p->Wq + pl / 2;       /* x[2j] */
            float *restrict db = br + (1 - (pl & 1)) * p->Wq + (pl + 1) / 2; /* x[2j+1] */
            for (size_t j = 0; j < half; j++) {
                da[j] = xr[2 * j];
                db[j] = xr[2 * j + 1];
            }
            if (g->W & 1) da[half] = xr[g->W - 1];
            continue;
        }
        for (size_t ph = 0; ph < p->s; ph++) {
            /* first input column landing in phase ph */
            size_t iw0 = (ph + p->s - (size_t)g->pl % p->s) % p->s;
            float *d = br + ph * p->Wq + (iw0 + (size_t)g->pl) / p->s;
            for (size_t iw = iw0, j = 0; iw < g->W; iw += p->s, j++) d[j] = xr[iw];
        }
    }
}

/* dx (H, W) += the interior of a padded, phase-split buffer */
static void dw_unpad_add(const ConvGeom *g, const DwPad *p, const float *buf, float *dx) {
    for (size_t ih = 0; ih < g->H; ih++) {
        const float *br = buf + (ih + (size_t)g->pt) * p->row;
        float *dr = dx + ih * g->W;
        if (p->s == 1) {
            const float *sp = br + g->pl;
            for (size_t iw = 0; iw < g->W; iw++) dr[iw] += sp[iw];
            continue;
        }
        if (p->s == 2) {   /* the inverse of dw_pad_plane's stride-2 pass */
            size_t pl = (size_t)g->pl, half = g->W / 2;
            const float *sa = br + (pl & 1) * p->Wq + pl / 2;
            const float *sb = br + (1 - (pl & 1)) * p->Wq + (pl + 1) / 2;
            for (size_t j = 0; j < half; j++) {
                dr[2 * j] += sa[j];
                dr[2 * j + 1] += sb[j];
            }
            if (g->W & 1) dr[g->W - 1] += sa[half];
            continue;
        }
        for (size_t ph = 0; ph < p->s; ph++) {
            size_t iw0 = (ph + p->s - (size_t)g->pl % p->s) % p->s;
            const float *s = br + ph * p->Wq + (iw0 + (size_t)g->pl) / p->s;
            for (size_t iw = iw0, j = 0; iw < g->W; iw += p->s, j++) dr[iw] += s[j];
        }
    }
}

/* 8 floats in one AVX register (GCC/Clang vector extension: the auto-vectoriser does not keep
 * accumulators in registers across the tap loop reliably; without AVX this becomes 2 SSE ops) */
typedef float v8f __attribute__((vector_size(32)));
static inline v8f v8_load(const float *p) {
    v8f v;
    memcpy(&v, p, sizeof v);
    return v;
}
/* a * b + c in one rounding: -std=c11 turns off GCC's contraction of a * b + c into an FMA, and
 * a separate multiply and add cost twice the instructions and a longer dependency chain */
#if defined(__FMA__)
#include <immintrin.h>
static inline v8f v8_fma(v8f a, v8f b, v8f c) {
    return (v8f)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
}
#else
static inline v8f v8_fma(v8f a, v8f b, v8f c) {
    return a * b + c;
}
#endif
static inline v8f v8_splat(float x) {
    return (v8f){x, x, x, x, x, x, x, x};
}

/* The one inner kernel of the depthwise conv, forward and dX alike:
 *   out[q] = init + sum_i wts[i] * src[off[i] + q]        for q in [0, width)
 * Blocks of 32, 16 or 8 outputs accumulate in registers over all taps, one FMA chain per 8
 * outputs (4 chains in flight hide the FMA latency).  Every output is init + the taps in order,
 * one fused multiply-add each, whichever block computes it, so the last block may overlap the
 * one before it and the scalar path for rows under 8 gives the same values. */
static inline void taps_block32(const float *src, const size_t *off, const float *wts, size_t n, float init,
                                size_t q, float *out) {
    v8f a0 = v8_splat(init), a1 = a0, a2 = a0, a3 = a0;
    for (size_t i = 0; i < n; i++) {
        const float *sp = src + off[i] + q;
        v8f wv = v8_splat(wts[i]);
        a0 = v8_fma(wv, v8_load(sp), a0);
        a1 = v8_fma(wv, v8_load(sp + 8), a1);
        a2 = v8_fma(wv, v8_load(sp + 16), a2);
        a3 = v8_fma(wv, v8_load(sp + 24), a3);
    }
    memcpy(out + q, &a0, sizeof a0);
    memcpy(out + q + 8, &a1, sizeof a1);
    memcpy(out + q + 16, &a2, sizeof a2);
    memcpy(out + q + 24, &a3, sizeof a3);
}

static inline void taps_block16(const float *src, const size_t *off, const float *wts, size_t n, float init,
                                size_t q, float *out) {
    v8f a0 = v8_splat(init), a1 = a0;
    for (size_t i = 0; i < n; i++) {
        const float *sp = src + off[i] + q;
        v8f wv = v8_splat(wts[i]);
        a0 = v8_fma(wv, v8_load(sp), a0);
        a1 = v8_fma(wv, v8_load(sp + 8), a1);
    }
    memcpy(out + q, &a0, sizeof a0);
    memcpy(out + q + 8, &a1, sizeof a1);
}

static inline void taps_block8(const float *src, const size_t *off, const float *wts, size_t n, float init,
                               size_t q, float *out) {
    v8f a0 = v8_splat(init);
    for (size_t i = 0; i < n; i++) a0 = v8_fma(v8_splat(wts[i]), v8_load(src + off[i] + q), a0);
    memcpy(out + q, &a0, sizeof a0);
}

#if defined(__AVX2__) && defined(__FMA__)
static void taps_tail_acc(const float *src, const size_t *off, const float *wts, size_t n, size_t q0, size_t r,
                          float *out);
#endif

static void taps_row(const float *src, const size_t *off, const float *wts, size_t n, float init, size_t width,
                     float *out) {
    if (width >= 8) {
        size_t q = 0;
        for (; q + 32 <= width; q += 32) taps_block32(src, off, wts, n, init, q, out);
        if (q + 16 <= width) {
            taps_block16(src, off, wts, n, init, q, out);
            q += 16;
        }
        if (q + 8 <= width) {
            taps_block8(src, off, wts, n, init, q, out);
            q += 8;
        }
        if (q < width) taps_block8(src, off, wts, n, init, width - 8, out);   /* overlapping tail */
    } else {
#if defined(__AVX2__) && defined(__FMA__)
        for (size_t q = 0; q < width; q++) out[q] = init;   /* one masked chain from init */
        taps_tail_acc(src, off, wts, n, 0, width, out);
#else
        for (size_t q = 0; q < width; q++) {
            float a = init;
            for (size_t i = 0; i < n; i++) a = wts[i] * src[off[i] + q] + a;
            out[q] = a;
        }
#endif
    }
}

#if defined(__AVX2__) && defined(__FMA__)
/* out[q0 + j] += sum_i wts[i] * src[off[i] + q0 + j] for j < r (1..31) with masked loads and
 * stores: as many 8-lane chains as the r outputs need (masked-off lanes are never touched) */
static inline __m256i lane_mask(int r) {   /* lanes j < r */
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(r), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

static void taps_tail_acc(const float *src, const size_t *off, const float *wts, size_t n, size_t q0, size_t r,
                          float *out) {
    float *o = out + q0;
    if (r <= 8) {
        const __m256i m0 = lane_mask((int)r);
        __m256 a0 = _mm256_maskload_ps(o, m0);
        for (size_t i = 0; i < n; i++)
            a0 = _mm256_fmadd_ps(_mm256_set1_ps(wts[i]), _mm256_maskload_ps(src + off[i] + q0, m0), a0);
        _mm256_maskstore_ps(o, m0, a0);
    } else if (r <= 16) {
        const __m256i m1 = lane_mask((int)r - 8);
        __m256 a0 = _mm256_loadu_ps(o), a1 = _mm256_maskload_ps(o + 8, m1);
        for (size_t i = 0; i < n; i++) {
            const float *sp = src + off[i] + q0;
            const __m256 wv = _mm256_set1_ps(wts[i]);
            a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(sp), a0);
            a1 = _mm256_fmadd_ps(wv, _mm256_maskload_ps(sp + 8, m1), a1);
        }
        _mm256_storeu_ps(o, a0);
        _mm256_maskstore_ps(o + 8, m1, a1);
    } else {
        const __m256i m2 = lane_mask((int)r - 16), m3 = lane_mask((int)r - 24);
        __m256 a0 = _mm256_loadu_ps(o), a1 = _mm256_loadu_ps(o + 8);
        __m256 a2 = _mm256_maskload_ps(o + 16, m2), a3 = _mm256_maskload_ps(o + 24, m3);
        for (size_t i = 0; i < n; i++) {
            const float *sp = src + off[i] + q0;
            const __m256 wv = _mm256_set1_ps(wts[i]);
            a0 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(sp), a0);
            a1 = _mm256_fmadd_ps(wv, _mm256_loadu_ps(sp + 8), a1);
            a2 = _mm256_fmadd_ps(wv, _mm256_maskload_ps(sp + 16, m2), a2);
            a3 = _mm256_fmadd_ps(wv, _mm256_maskload_ps(sp + 24, m3), a3);
        }
        _mm256_storeu_ps(o, a0);
        _mm256_storeu_ps(o + 8, a1);
        _mm256_maskstore_ps(o + 16, m2, a2);
        _mm256_maskstore_ps(o + 24, m3, a3);
    }
}
#endif

/* out[q] += sum_i wts[i] * src[off[i] + q] for q in [0, width): taps_row accumulating into what
 * out holds (blocks cannot overlap here, so the last few outputs take the scalar path) */
static void taps_row_acc(const float *src, const size_t *off, const float *wts, size_t n, size_t width,
                         float *out) {
    size_t q = 0;
    for (; q + 32 <= width; q += 32) {
        v8f a0 = v8_load(out + q), a1 = v8_load(out + q + 8), a2 = v8_load(out + q + 16), a3 = v8_load(out + q + 24);
        for (size_t i = 0; i < n; i++) {
            const float *sp = src + off[i] + q;
            v8f wv = v8_splat(wts[i]);
            a0 = v8_fma(wv, v8_load(sp), a0);
            a1 = v8_fma(wv, v8_load(sp + 8), a1);
            a2 = v8_fma(wv, v8_load(sp + 16), a2);
            a3 = v8_fma(wv, v8_load(sp + 24), a3);
        }
        memcpy(out + q, &a0, sizeof a0);
        memcpy(out + q + 8, &a1, sizeof a1);
        memcpy(out + q + 16, &a2, sizeof a2);
        memcpy(out + q + 24, &a3, sizeof a3);
    }
#if defined(__AVX2__) && defined(__FMA__)
    if (q < width) {
        /* the last 1..31 outputs: masked loads and stores, the same FMAs per lane */
        taps_tail_acc(src, off, wts, n, q, width - q, out);
        return;
    }
#endif
    for (; q < width; q++) {
        float a = out[q];
#if defined(__FMA__)
        for (size_t i = 0; i < n; i++) a = fmaf(wts[i], src[off[i] + q], a);
#else
        for (size_t i = 0; i < n; i++) a = wts[i] * src[off[i] + q] + a;
#endif
        out[q] = a;
    }
}

/* y (OH, OW) = bias + depthwise conv of one padded plane with kernel k (KH, KW) */
static void dw_plane_forward(const ConvGeom *g, const DwPad *p, const float *buf, const float *k, float bias,
                             float *y) {
    for (size_t oh = 0; oh < g->OH; oh++)
        taps_row(buf + oh * (size_t)g->sh * p->row, p->tap, k, p->ntap, bias, g->OW, y + oh * g->OW);
}

static void dw_forward(Ctx *c, const ConvGeom *g, const DwPad *p, const float *x, const float *w, const float *b,
                       float *y) {
    int nt = omp_get_max_threads();
    size_t pf = p->Hp * p->row, HW = g->H * g->W, OHW = g->OH * g->OW, KK = g->KH * g->KW;
    float *bufs = arena_calloc(&c->step, (size_t)nt * pf * sizeof(float)); /* (nt, Hp, s, Wq) */
    size_t planes = g->N * g->C;
#pragma omp parallel for schedule(static) if (planes * OHW * p->ntap >= PAR_MIN_WORK)
    for (size_t nc = 0; nc < planes; nc++) {
        size_t ch = nc % g->C;
        float *buf = bufs + (size_t)omp_get_thread_num() * pf;
        dw_pad_plane(g, p, x + nc * HW, buf);
        dw_plane_forward(g, p, buf, w + ch * KK, b ? b[ch] : 0.0f, y + nc * OHW);
    }
}

/* Depthwise backward.  Each dy plane is first widened into rows of dys floats: LP zeros, the OW
 * values, zeros up to dys.
 *   dW correlates the widened rows (from LP, over OW8 = OW rounded up to 8, so there is no scalar
 *      tail) with the padded x plane; the extra lanes multiply zeros by values inside the padded
 *      buffer, which has DW_SLACK floats of room at its end.
 *   dX gathers: padded dx position (row r, phase ph, q) sums w[kh][kw] * dy[oh][ow] over the taps
 *      with r = oh*sh + kh*dh, (kw*dw) % s == ph and ow = q - (kw*dw) / s; the LP leading zeros
 *      stand for ow < 0 and the trailing ones for ow >= OW.  That is taps_row again, and it writes
 *      each dx value once, where scattering dy tap by tap would stall on overlapping stores. */
#define DW_SLACK 8

typedef struct DwBack {
    size_t LP, OW8, dys;     /* leading zeros, dW row length, widened row stride */
    /* dX gather tables, the same for every plane of the layer: padded row pt + ih, phase ph
     * (entry e = ih * s + ph) sums n_taps[e] taps; tap j is kernel element tap_k[e * ntap + j]
     * read at widened-dy offset tap_off[e * ntap + j] */
    size_t *tap_off;         /* (H * s, ntap) */
    uint8_t *tap_k;          /* (H * s, ntap) */
    uint8_t *n_taps;         /* (H * s) */
} DwBack;

static DwBack dw_back_geom(Ctx *c, const ConvGeom *g, const DwPad *p) {
    DwBack b;
    b.LP = ((g->KW - 1) * (size_t)g->dw) / p->s;
    b.OW8 = (g->OW + 7) & ~(size_t)7;
    b.dys = b.LP + (p->Wq > b.OW8 ? p->Wq : b.OW8);
    /* built once per layer: the divisions below cost more than a small plane's FMAs */
    size_t ne = g->H * p->s;
    b.tap_off = arena_alloc(&c->step, ne * p->ntap * sizeof(size_t));
    b.tap_k = arena_alloc(&c->step, ne * p->ntap);
    b.n_taps = arena_alloc(&c->step, ne);
    for (size_t ih = 0; ih < g->H; ih++) {
        size_t r = ih + (size_t)g->pt;
        for (size_t ph = 0; ph < p->s; ph++) {
            size_t e = ih * p->s + ph, n = 0;
            for (size_t kh = 0; kh < g->KH; kh++) {
                long rr = (long)r - (long)kh * g->dh;
                if (rr < 0 || rr % g->sh || (size_t)(rr / g->sh) >= g->OH) continue;
                size_t oh = (size_t)(rr / g->sh);
                for (size_t kw = 0; kw < g->KW; kw++) {
                    size_t o = kw * (size_t)g->dw;
                    if (o % p->s != ph) continue;
                    b.tap_off[e * p->ntap + n] = oh * b.dys + b.LP - o / p->s;
                    b.tap_k[e * p->ntap + n] = (uint8_t)(kh * g->KW + kw);
                    n++;
                }
            }
            b.n_taps[e] = (uint8_t)n;
        }
    }
    return b;
}

/* dyp (OH, dys) = widened copy of dy (OH, OW); the zeros around the values are written once
 * per thread (a zeroed buffer) and never overwritten */
static void dw_widen_dy(const ConvGeom *g, const DwBack *b, const float *dy, float *dyp) {
    for (size_t oh = 0; oh < g->OH; oh++) memcpy(dyp + oh * b->dys + b->LP, dy + oh * g->OW, g->OW * sizeof(float));
}

/* dk[t0 .. t0+G) += correlation of dy with the padded plane through G taps at once: every tap
 * multiplies the same dy row, so one load of dy feeds G FMAs (and 2G independent chains hide the
 * FMA latency).  Each tap keeps 2 x 8 lane sums over the whole plane, reduced across lanes once
 * at the end: a fixed order.  G is a literal at every call, so the loops over it unroll and the
 * sums stay in registers. */
static inline __attribute__((always_inline)) void dw_dweight_taps(const ConvGeom *g, const DwPad *p,
                                                                  const DwBack *b, const float *buf,
                                                                  const float *dyp, size_t t0, const size_t G,
                                                                  float *dk) {
    v8f a[4][2];
    for (size_t k = 0; k < G; k++) a[k][0] = a[k][1] = v8_splat(0.0f);
    const size_t OW8 = b->OW8;
    for (size_t oh = 0; oh < g->OH; oh++) {
        const float *rows = buf + oh * (size_t)g->sh * p->row;
        const float *dyr = dyp + oh * b->dys + b->LP;
        size_t ow = 0;
        for (; ow + 16 <= OW8; ow += 16) {
            v8f d0 = v8_load(dyr + ow), d1 = v8_load(dyr + ow + 8);
            for (size_t k = 0; k < G; k++) {
                const float *xr = rows + p->tap[t0 + k] + ow;
                a[k][0] = v8_fma(d0, v8_load(xr), a[k][0]);
                a[k][1] = v8_fma(d1, v8_load(xr + 8), a[k][1]);
            }
        }
        if (ow < OW8) {
            v8f d0 = v8_load(dyr + ow);
            for (size_t k = 0; k < G; k++) a[k][0] = v8_fma(d0, v8_load(rows + p->tap[t0 + k] + ow), a[k][0]);
        }
    }
    for (size_t k = 0; k < G; k++) {
        v8f v = a[k][0] + a[k][1];
        float s = 0.0f;
        for (int l = 0; l < 8; l++) s += v[l];
        dk[t0 + k] += s;
    }
}

/* dk (KH, KW) += correlation of dy with the padded plane, taps in groups of 4 */
static void dw_plane_dweight(const ConvGeom *g, const DwPad *p, const DwBack *b, const float *buf,
                             const float *dyp, float *dk) {
    size_t t0 = 0;
    for (; t0 + 4 <= p->ntap; t0 += 4) dw_dweight_taps(g, p, b, buf, dyp, t0, 4, dk);
    switch (p->ntap - t0) {
    case 3: dw_dweight_taps(g, p, b, buf, dyp, t0, 3, dk); break;
    case 2: dw_dweight_taps(g, p, b, buf, dyp, t0, 2, dk); break;
    case 1: dw_dweight_taps(g, p, b, buf, dyp, t0, 1, dk); break;
    default: break;
    }
}

/* dx (H, W) += the transposed conv of the widened dy with kernel k.  Stride 1: straight into dx,
 * the padded column of input column iw being pl + iw.  Larger strides: rows pt .. pt+H-1 of the
 * padded, phase-split buffer `buf` (every phase, all Wq) first, then its interior is added to dx. */
static void dw_plane_dinput(const ConvGeom *g, const DwPad *p, const DwBack *b, const float *dyp, const float *k,
                            float *buf, float *dx) {
    float wts[DW_MAX_TAPS];
    for (size_t ih = 0; ih < g->H; ih++) {
        for (size_t ph = 0; ph < p->s; ph++) {
            size_t e = ih * p->s + ph, n = b->n_taps[e];
            const size_t *off = b->tap_off + e * p->ntap;
            const uint8_t *tk = b->tap_k + e * p->ntap;
            for (size_t j = 0; j < n; j++) wts[j] = k[tk[j]];
            if (p->s == 1) taps_row_acc(dyp + g->pl, off, wts, n, g->W, dx + ih * g->W);
            else taps_row(dyp, off, wts, n, 0.0f, p->Wq, buf + (ih + (size_t)g->pt) * p->row + ph * p->Wq);
        }
    }
    if (p->s != 1) dw_unpad_add(g, p, buf, dx);
}

/* one thread per channel, images in order: the weight gradient needs no cross-thread sum */
static void dw_backward(Ctx *c, const ConvGeom *g, const DwPad *p, const float *x, const float *w,
                        const float *dy, float *dx, float *dw) {
    int nt = omp_get_max_threads();
    DwBack b = dw_back_geom(c, g, p);
    size_t pf = p->Hp * p->row + DW_SLACK, HW = g->H * g->W, OHW = g->OH * g->OW, KK = g->KH * g->KW;
    size_t df = g->OH * b.dys;
    float *bufs = ctx_scratch(c, (size_t)nt * pf);   /* (nt, Hp*s*Wq + slack): x */
    float *dbufs = ctx_scratch(c, (size_t)nt * pf);  /* (nt, Hp*s*Wq + slack): dx */
    float *dyps = ctx_scratch(c, (size_t)nt * df);   /* (nt, OH, dys) */
    /* the padding of x and the zeros around each widened dy row are written once, here */
    memset(bufs, 0, (size_t)nt * pf * sizeof(float));
    memset(dyps, 0, (size_t)nt * df * sizeof(float));
#pragma omp parallel for schedule(static) if (g->N * g->C * OHW * p->ntap >= PAR_MIN_WORK)
    for (size_t ch = 0; ch < g->C; ch++) {
        int t = omp_get_thread_num();
        float *buf = bufs + (size_t)t * pf, *dbuf = dbufs + (size_t)t * pf, *dyp = dyps + (size_t)t * df;
        double dk_sum[DW_MAX_TAPS];   /* (KH*KW) batch sum of the per-plane float sums */
        float dk[DW_MAX_TAPS];
        for (size_t i = 0; i < KK; i++) dk_sum[i] = 0.0;
        for (size_t n = 0; n < g->N; n++) {
            size_t nc = n * g->C + ch;
            dw_widen_dy(g, &b, dy + nc * OHW, dyp);
            if (dw) {
                for (size_t i = 0; i < KK; i++) dk[i] = 0.0f;
                dw_pad_plane(g, p, x + nc * HW, buf);
                dw_plane_dweight(g, p, &b, buf, dyp, dk);
                for (size_t i = 0; i < KK; i++) dk_sum[i] += dk[i];
            }
            if (dx) {
                dw_plane_dinput(g, p, &b, dyp, w + ch * KK, dbuf, dx + nc * HW);
            }
        }
        if (dw)
            for (size_t i = 0; i < KK; i++) dw[ch * KK + i] += (float)dk_sum[i];
    }
    ctx_scratch_release(c, dyps, (size_t)nt * df);
    ctx_scratch_release(c, dbufs, (size_t)nt * pf);
    ctx_scratch_release(c, bufs, (size_t)nt * pf);
}

/* ------------------------------------------------------------------------------------------ */
/* the op */

static void conv2d_backward(Ctx *c, Node *nd) {
    Tensor *x = nd->in[0], *w = nd->in[1], *b = nd->in[2], *y = nd->out;
    const Conv2dArgs *a = nd->saved;
    ConvGeom g = conv_geom(x, w, a);
    const float *dy = y->grad;  /* (N, OC, OH, OW) */
    float *dx = x->requires_grad ? tensor_grad(c, x) : NULL;  /* (N, C, H, W) */
    float *dw = w->requires_grad ? tensor_grad(c, w) : NULL;  /* (OC, Cg, KH, KW) */
    float *db = b && b->requires_grad ? tensor_grad(c, b) : NULL; /* (OC) */
    if (dx || dw) {
        if (g.depthwise) {
            DwPad p = dw_pad_geom(&g, a);
            dw_backward(c, &g, &p, x->data, w->data, dy, dx, dw);
        } else {
            gemm_conv_backward(c, &g, x->data, w->data, dy, dx, dw);
        }
    }
    if (db) {
        size_t OHW = g.OH * g.OW;
#pragma omp parallel for schedule(static) if (g.N * g.OC * OHW >= PAR_MIN_WORK)
        for (size_t oc = 0; oc < g.OC; oc++) {
            double s = 0.0;
            for (size_t n = 0; n < g.N; n++) {
                const float *d = dy + (n * g.OC + oc) * OHW;
                float ps = 0.0f;
#pragma omp simd reduction(+ : ps)
                for (size_t i = 0; i < OHW; i++) ps += d[i];
                s += ps;
            }
            db[oc] += (float)s;
        }
    }
}

Tensor *op_conv2d(Ctx *c, Tensor *x, Tensor *w, Tensor *b, Conv2dArgs a) {
    char bx[64], bw[64], bb[64];
    if (x->ndim != 4 || w->ndim != 4)
        ctx_fail(c, "op_conv2d: input %s and weight %s must both be 4-D (N,C,H,W) and (OC,C/groups,KH,KW)",
                 tensor_shape_str(x, bx, sizeof bx), tensor_shape_str(w, bw, sizeof bw));
    if (a.stride_h < 1 || a.stride_w < 1 || a.dil_h < 1 || a.dil_w < 1 || a.groups < 1 || a.pad_top < 0 ||
        a.pad_bottom < 0 || a.pad_left < 0 || a.pad_right < 0)
        ctx_fail(c, "op_conv2d: invalid args stride (%d,%d) dilation (%d,%d) groups %d padding (%d,%d,%d,%d)",
                 a.stride_h, a.stride_w, a.dil_h, a.dil_w, a.groups, a.pad_top, a.pad_bottom, a.pad_left,
                 a.pad_right);
    size_t G = (size_t)a.groups;
    if (x->shape[1] % G || w->shape[0] % G || w->shape[1] * G != x->shape[1])
        ctx_fail(c, "op_conv2d: input %s, weight %s and groups %d do not match (need C = groups * weight dim 1)",
                 tensor_shape_str(x, bx, sizeof bx), tensor_shape_str(w, bw, sizeof bw), a.groups);
    if (b && (b->ndim != 1 || b->shape[0] != w->shape[0]))
        ctx_fail(c, "op_conv2d: bias %s does not match weight %s", tensor_shape_str(b, bb, sizeof bb),
                 tensor_shape_str(w, bw, sizeof bw));
    ConvGeom g = conv_geom(x, w, &a);
    if (g.OH == 0 || g.OW == 0 || w->shape[2] == 0 || w->shape[3] == 0)
        ctx_fail(c, "op_conv2d: input %s is smaller than the dilated kernel %s with the given padding",
                 tensor_shape_str(x, bx, sizeof bx), tensor_shape_str(w, bw, sizeof bw));

    x = op_contiguous(c, x);
    w = op_contiguous(c, w);
    if (b) b = op_contiguous(c, b);
    Tensor *y = tensor_new_(c, g.N, g.OC, g.OH, g.OW);
    if (g.N > 0 && g.OC > 0) {
        if (g.depthwise) {
            DwPad p = dw_pad_geom(&g, &a);
            dw_forward(c, &g, &p, x->data, w->data, b ? b->data : NULL, y->data);
        } else {
            gemm_conv_forward(c, &g, x->data, w->data, y->data);
            if (b) {
                size_t OHW = g.OH * g.OW, planes = g.N * g.OC;
#pragma omp parallel for schedule(static) if (planes * OHW >= PAR_MIN_WORK)
                for (size_t nc = 0; nc < planes; nc++) {
                    float bv = b->data[nc % g.OC], *yp = y->data + nc * OHW;
                    for (size_t i = 0; i < OHW; i++) yp[i] += bv;
                }
            }
        }
    }
    Tensor *in[3] = {x, w, b};
    Node *nd = op_record(c, "conv2d", conv2d_backward, y, in, 3);
    if (nd) {
        Conv2dArgs *sa = arena_alloc(&c->step, sizeof(Conv2dArgs));
        *sa = a;
        nd->saved = sa;
    }
    return y;
}
