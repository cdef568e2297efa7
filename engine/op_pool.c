/*
 * op_pool.c — max / average / global-average pooling over NCHW, forward and backward.
 *
 * PyTorch semantics with ceil_mode=False: out = (in + 2*pad - k) / stride + 1.  Max pooling pads
 * with -inf (padding never wins) and sends the gradient to the first maximum in scan order;
 * average pooling counts the padding (count_include_pad=True), so every window divides by k*k.
 * Every kernel works plane by plane, one OpenMP thread per (n, c) plane: no shared writes, so
 * results do not depend on the schedule.
 */
#include "engine.h"
#include <math.h>
#include <stdint.h>
#include <string.h>
/* below this much inner-loop work a parallel region costs more than it saves */
#define PAR_MIN_WORK ((size_t)1 << 15)

typedef struct PoolGeom {
    size_t planes, H, W, OH, OW;  /* planes = N*C */
    long k, s, pad;
} PoolGeom;

static PoolGeom pool_geom(Ctx *c, const char *op, const Tensor *x, int k, int stride, int pad) {
    char b[64];
    if (x->ndim != 4) ctx_fail(c, "%s: input %s must be 4-D (N,C,H,W)", op, tensor_shape_str(x, b, sizeof b));
    if (k < 1 || stride < 1 || pad < 0 || pad > k / 2)
        ctx_fail(c, "%s: invalid kernel %d stride %d pad %d (pad must be <= kernel/2)", op, k, stride, pad);
    PoolGeom g = {.planes = x->shape[0] * x->shape[1], .H = x->shape[2], .W = x->shape[3], .k = k, .s = stride,
                  .pad = pad};
    long eh = (long)g.H + 2L * pad - k, ew = (long)g.W + 2L * pad - k;
    if (eh < 0 || ew < 0)
        ctx_fail(c, "%s: input %s smaller than kernel %d with padding %d", op, tensor_shape_str(x, b, sizeof b), k,
                 pad);
    g.OH = (size_t)(eh / stride + 1);
    g.OW = (size_t)(ew / stride + 1);
    return g;
}

/* ------------------------------------------------------------------------------------------ */
/* max pool */

static void max_pool2d_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *y = n->out;
    const int32_t *arg = n->saved;   /* (N, C, OH, OW) flat index into the input plane */
    size_t planes = (size_t)n->i[0], HW = (size_t)n->i[1], OHW = (size_t)n->i[2];
    float *dx = tensor_grad(c, x);   /* (N, C, H, W) */
    const float *dy = y->grad;       /* (N, C, OH, OW) */
#pragma omp parallel for schedule(static) if (planes * OHW >= PAR_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        float *dxp = dx + p * HW;
        const float *dyp = dy + p * OHW;
        const int32_t *ap = arg + p * OHW;
        for (size_t o = 0; o < OHW; o++) dxp[ap[o]] += dyp[o];
    }
}

Tensor *op_max_pool2d(Ctx *c, Tensor *x, int k, int stride, int pad) {
    PoolGeom g = pool_geom(c, "op_max_pool2d", x, k, stride, pad);
    x = op_contiguous(c, x);
    Tensor *y = tensor_new_(c, x->shape[0], x->shape[1], g.OH, g.OW);
    int need = op_needs_grad(c, &x, 1);
    size_t HW = g.H * g.W, OHW = g.OH * g.OW;
    int32_t *arg = need ? arena_alloc(&c->step, g.planes * OHW * sizeof(int32_t)) : NULL; /* (N,C,OH,OW) */
#pragma omp parallel for schedule(static) if (g.planes * OHW * (size_t)(g.k * g.k) >= PAR_MIN_WORK)
    for (size_t p = 0; p < g.planes; p++) {
        const float *xp = x->data + p * HW;
        float *yp = y->data + p * OHW;
        for (size_t oh = 0; oh < g.OH; oh++) {
            long h0 = (long)oh * g.s - g.pad, h1 = h0 + g.k;
            if (h0 < 0) h0 = 0;
            if (h1 > (long)g.H) h1 = (long)g.H;
            for (size_t ow = 0; ow < g.OW; ow++) {
                long w0 = (long)ow * g.s - g.pad, w1 = w0 + g.k;
                if (w0 < 0) w0 = 0;
                if (w1 > (long)g.W) w1 = (long)g.W;
                float m = -INFINITY;
                long mi = h0 * (long)g.W + w0;
                for (long ih = h0; ih < h1; ih++)
                    for (long iw = w0; iw < w1; iw++) {
                        float v = xp[ih * (long)g.W + iw];
                        /* strict > keeps the first maximum; a NaN wins, as in PyTorch */
                        if (v > m || isnan(v)) {
                            m = v;
                            mi = ih * (long)g.W + iw;
                        }
                    }
                yp[oh * g.OW + ow] = m;
                if (arg) arg[p * OHW + oh * g.OW + ow] = (int32_t)mi;
            }
        }
    }
    Node *n = op_record(c, "max_pool2d", max_pool2d_backward, y, &x, 1);
    if (n) {
        n->saved = arg;
        n->i[0] = (long)g.planes, n->i[1] = (long)HW, n->i[2] = (long)OHW;
    }
    return y;
}

/* ------------------------------------------------------------------------------------------ */
/* average pool */

static void avg_pool2d_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *y = n->out;
    PoolGeom g;
    g.planes = x->shape[0] * x->shape[1], g.H = x->shape[2], g.W = x->shape[3];
    g.OH = y->shape[2], g.OW = y->shape[3];
    g.k = n->i[0], g.s = n->i[1], g.pad = n->i[2];
    float *dx = tensor_grad(c, x);   /* (N, C, H, W) */
    const float *dy = y->grad;       /* (N, C, OH, OW) */
    float inv = 1.0f / (float)(g.k * g.k);
    size_t HW = g.H * g.W, OHW = g.OH * g.OW;
#pragma omp parallel for schedule(static) if (g.planes * OHW * (size_t)(g.k * g.k) >= PAR_MIN_WORK)
    for (size_t p = 0; p < g.planes; p++) {
        float *dxp = dx + p * HW;
        const float *dyp = dy + p * OHW;
        for (size_t oh = 0; oh < g.OH; oh++) {
            long h0 = (long)oh * g.s - g.pad, h1 = h0 + g.k;
            if (h0 < 0) h0 = 0;
            if (h1 > (long)g.H) h1 = (long)g.H;
            for (size_t ow = 0; ow < g.OW; ow++) {
                long w0 = (long)ow * g.s - g.pad, w1 = w0 + g.k;
                if (w0 < 0) w0 = 0;
                if (w1 > (long)g.W) w1 = (long)g.W;
                float d = dyp[oh * g.OW + ow] * inv;
                for (long ih = h0; ih < h1; ih++)
                    for (long iw = w0; iw < w1; iw++) dxp[ih * (long)g.W + iw] += d;
            }
        }
    }
}

Tensor *op_avg_pool2d(Ctx *c, Tensor *x, int k, int stride, int pad) {
    PoolGeom g = pool_geom(c, "op_avg_pool2d", x, k, stride, pad);
    x = op_contiguous(c, x);
    Tensor *y = tensor_new_(c, x->shape[0], x->shape[1], g.OH, g.OW);
    /* count_include_pad with ceil_mode=False: each window spans k*k positions, padding included */
    float inv = 1.0f / (float)(g.k * g.k);
    size_t HW = g.H * g.W, OHW = g.OH * g.OW;
#pragma omp parallel for schedule(static) if (g.planes * OHW * (size_t)(g.k * g.k) >= PAR_MIN_WORK)
    for (size_t p = 0; p < g.planes; p++) {
        const float *xp = x->data + p * HW;
        float *yp = y->data + p * OHW;
        for (size_t oh = 0; oh < g.OH; oh++) {
            long h0 = (long)oh * g.s - g.pad, h1 = h0 + g.k;
            if (h0 < 0) h0 = 0;
            if (h1 > (long)g.H) h1 = (long)g.H;
            for (size_t ow = 0; ow < g.OW; ow++) {
                long w0 = (long)ow * g.s - g.pad, w1 = w0 + g.k;
                if (w0 < 0) w0 = 0;
                if (w1 > (long)g.W) w1 = (long)g.W;
                float s = 0.0f;
                for (long ih = h0; ih < h1; ih++)
                    for (long iw = w0; iw < w1; iw++) s += xp[ih * (long)g.W + iw];
                yp[oh * g.OW + ow] = s * inv;
            }
        }
    }
    Node *n = op_record(c, "avg_pool2d", avg_pool2d_backward, y, &x, 1);
    if (n) n->i[0] = g.k, n->i[1] = g.s, n->i[2] = g.pad;
    return y;
}

/* ------------------------------------------------------------------------------------------ */
/* global average pool: (N, C, H, W) -> (N, C) */

static void global_avg_pool_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *y = n->out;
    size_t planes = y->numel, HW = x->shape[2] * x->shape[3];
    float *dx = tensor_grad(c, x);   /* (N, C, H, W) */
    const float *dy = y->grad;       /* (N, C) */
    float inv = 1.0f / (float)HW;
#pragma omp parallel for schedule(static) if (planes * HW >= PAR_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        float d = dy[p] * inv, *dxp = dx + p * HW;
        for (size_t i = 0; i < HW; i++) dxp[i] += d;
    }
}

Tensor *op_global_avg_pool(Ctx *c, Tensor *x) {
    char b[64];
    if (x->ndim != 4 || x->shape[2] * x->shape[3] == 0)
        ctx_fail(c, "op_global_avg_pool: input %s must be 4-D (N,C,H,W) with H*W > 0",
                 tensor_shape_str(x, b, sizeof b));
    x = op_contiguous(c, x);
    size_t planes = x->shape[0] * x->shape[1], HW = x->shape[2] * x->shape[3];
    Tensor *y = tensor_new_(c, x->shape[0], x->shape[1]);
#pragma omp parallel for schedule(static) if (planes * HW >= PAR_MIN_WORK)
    for (size_t p = 0; p < planes; p++) {
        const float *xp = x->data + p * HW;
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (size_t i = 0; i < HW; i++) s += xp[i];
        y->data[p] = s / (float)HW;
    }
    op_record(c, "global_avg_pool", global_avg_pool_backward, y, &x, 1);
    return y;
}
