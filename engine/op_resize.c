/*
 * op_resize.c — bilinear, bicubic and nearest resampling of NCHW maps, forward and backward,
 * matching PyTorch's F.interpolate (align_corners=False, no antialias) in float arithmetic:
 *
 *   scale   = in / out                (or 1 / scale_factor when one is given, as PyTorch does)
 *   src     = scale * (dst + 0.5) - 0.5
 *   linear  : src clamped at 0; taps floor(src) and floor(src)+1 (the last index repeated at the
 *             border), weights 1 - t, t
 *   cubic   : taps floor(src) - 1 .. floor(src) + 2 clamped into [0, in-1], Keys weights A=-0.75
 *   nearest : floor(dst * scale), clamped to in-1
 *
 * Resampling is separable: each output index along H and along W gets up to four (index,
 * weight) taps, computed once per call.  Forward gathers, backward scatters the transposed
 * weights; both run one OpenMP thread per (n, c) plane, so there are no shared writes.
 */
#include "engine.h"
#include <math.h>
#include <stdint.h>
/* below this much inner-loop work a parallel region costs more than it saves */
#define PAR_MIN_WORK ((size_t)1 << 15)

enum { RESIZE_NEAREST = 1, RESIZE_LINEAR = 2, RESIZE_CUBIC = 4 };  /* value = taps per dim */

typedef struct Taps {
    int32_t idx[4];
    float w[4];
} Taps;

typedef struct ResizeSaved {
    int ntaps;
    Taps *th, *tw;   /* (OH), (OW) */
} ResizeSaved;

/* PyTorch's compute_scales_value: a given scale factor wins over the size ratio */
static float resize_scale(size_t in, size_t out, double scale_factor) {
    return scale_factor > 0 ? (float)(1.0 / scale_factor) : (float)in / (float)out;
}

/* Keys cubic convolution, PyTorch's get_cubic_upsample_coefficients */
static void cubic_coeffs(float t, float w[4]) {
    const float A = -0.75f;
    float x1 = t + 1.0f, x2 = 1.0f - t, x3 = x2 + 1.0f;
    w[0] = ((A * x1 - 5.0f * A) * x1 + 8.0f * A) * x1 - 4.0f * A;
    w[1] = ((A + 2.0f) * t - (A + 3.0f)) * t * t + 1.0f;
    w[2] = ((A + 2.0f) * x2 - (A + 3.0f)) * x2 * x2 + 1.0f;
    w[3] = ((A * x3 - 5.0f * A) * x3 + 8.0f * A) * x3 - 4.0f * A;
}

static long clampl(long v, long lo, long hi) {
    return v < lo ? lo : v > hi ? hi : v;
}

/* taps (out) along one dimension of size in */
static void make_taps(Taps *t, int mode, size_t in, size_t out, double scale_factor) {
    float scale = resize_scale(in, out, scale_factor);
    long last = (long)in - 1;
    for (size_t o = 0; o < out; o++) {
        Taps *tp = &t[o];
        if (mode == RESIZE_NEAREST) {
            long i = out == in ? (long)o : out == 2 * in ? (long)(o >> 1) : (long)floorf((float)o * scale);
            tp->idx[0] = (int32_t)(i < last ? i : last);
            tp->w[0] = 1.0f;
            continue;
        }
        float src = scale * ((float)o + 0.5f) - 0.5f;
        if (mode == RESIZE_LINEAR && src < 0.0f) src = 0.0f;
        long i0 = (long)floorf(src);
        if (i0 > last) i0 = last;
        float lam = src - (float)i0;
        lam = lam < 0.0f ? 0.0f : lam > 1.0f ? 1.0f : lam;
        if (mode == RESIZE_LINEAR) {
            tp->idx[0] = (int32_t)i0;
            tp->idx[1] = (int32_t)(i0 < last ? i0 + 1 : i0);
            tp->w[0] = 1.0f - lam;
            tp->w[1] = lam;
        } else {
            cubic_coeffs(lam, tp->w);
            for (int k = 0; k < 4; k++) tp->idx[k] = (int32_t)clampl(i0 - 1 + k, 0, last);
        }
    }
}

static void resize_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *y = n->out;
    const ResizeSaved *s = n->saved;
    size_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    size_t OH = y->shape[2], OW = y->shape[3];
    int nt = s->ntaps;
    float *dx = tensor_grad(c, x);   /* (N, C, H, W) */
    const float *dy = y->grad;       /* (N, C, OH, OW) */
#pragma omp parallel for schedule(static) if (planes * OH * OW * (size_t)(nt * nt) >= PAR_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        float *dxp = dx + p * H * W;
        const float *dyp = dy + p * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            const Taps *th = &s->th[oh];
            for (size_t ow = 0; ow < OW; ow++) {
                const Taps *tw = &s->tw[ow];
                float d = dyp[oh * OW + ow];
                for (int i = 0; i < nt; i++) {
                    float *dr = dxp + (size_t)th->idx[i] * W;
                    float dh = d * th->w[i];
                    for (int j = 0; j < nt; j++) dr[tw->idx[j]] += dh * tw->w[j];
                }
            }
        }
    }
}

static Tensor *resize(Ctx *c, const char *opname, Tensor *x, int mode, long out_h, long out_w, double sf_h,
                      double sf_w) {
    char b[64];
    if (x->ndim != 4 || x->shape[2] == 0 || x->shape[3] == 0)
        ctx_fail(c, "%s: input %s must be 4-D (N,C,H,W) with H, W > 0", opname, tensor_shape_str(x, b, sizeof b));
    if (out_h < 1 || out_w < 1)
        ctx_fail(c, "%s: output size %ldx%ld for input %s must be positive", opname, out_h, out_w,
                 tensor_shape_str(x, b, sizeof b));
    x = op_contiguous(c, x);
    size_t planes = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
    size_t OH = (size_t)out_h, OW = (size_t)out_w;
    ResizeSaved *s = arena_alloc(&c->step, sizeof(ResizeSaved));
    s->ntaps = mode;
    s->th = arena_alloc(&c->step, OH * sizeof(Taps));
    s->tw = arena_alloc(&c->step, OW * sizeof(Taps));
    make_taps(s->th, mode, H, OH, sf_h);
    make_taps(s->tw, mode, W, OW, sf_w);
    Tensor *y = tensor_new_(c, x->shape[0], x->shape[1], OH, OW);
    int nt = mode;
#pragma omp parallel for schedule(static) if (planes * OH * OW * (size_t)(nt * nt) >= PAR_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x->data + p * H * W;
        float *yp = y->data + p * OH * OW;
        for (size_t oh = 0; oh < OH; oh++) {
            const Taps *th = &s->th[oh];
            for (size_t ow = 0; ow < OW; ow++) {
                const Taps *tw = &s->tw[ow];
                /* rows outer, columns inner, as PyTorch's separable kernel sums */
                float acc = 0.0f;
                for (int i = 0; i < nt; i++) {
                    const float *xr = xp + (size_t)th->idx[i] * W;
                    float t = 0.0f;
                    for (int j = 0; j < nt; j++) t += xr[tw->idx[j]] * tw->w[j];
                    acc += t * th->w[i];
                }
                yp[oh * OW + ow] = acc;
            }
        }
    }
    Node *n = op_record(c, opname + 3, resize_backward, y, &x, 1);
    if (n) n->saved = s;
    return y;
}

Tensor *op_resize_bilinear(Ctx *c, Tensor *x, int out_h, int out_w) {
    return resize(c, "op_resize_bilinear", x, RESIZE_LINEAR, out_h, out_w, 0, 0);
}

Tensor *op_resize_bicubic(Ctx *c, Tensor *x, int out_h, int out_w) {
    return resize(c, "op_resize_bicubic", x, RESIZE_CUBIC, out_h, out_w, 0, 0);
}

Tensor *op_resize_nearest(Ctx *c, Tensor *x, int out_h, int out_w) {
    return resize(c, "op_resize_nearest", x, RESIZE_NEAREST, out_h, out_w, 0, 0);
}

/* F.interpolate(scale_factor=(scale_h, scale_w), mode="bicubic") with the output size the
 * caller computed (floor(in * scale) in PyTorch): the source coordinates use 1/scale rather than
 * in/out, which is what DINOv2's interpolate_offset relies on */
Tensor *op_resize_bicubic_scale(Ctx *c, Tensor *x, int out_h, int out_w, double scale_h, double scale_w) {
    if (!(scale_h > 0) || !(scale_w > 0))
        ctx_fail(c, "op_resize_bicubic_scale: scale factors must be positive (got %g, %g)", scale_h, scale_w);
    return resize(c, "op_resize_bicubic_scale", x, RESIZE_CUBIC, out_h, out_w, scale_h, scale_w);
}
