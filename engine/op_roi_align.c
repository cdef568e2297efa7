/*
 * op_roi_align.c — RoIAlign (Mask R-CNN), forward and backward, as torchvision.ops.roi_align
 * (torchvision 0.14, CPU kernel), which Faster R-CNN's MultiScaleRoIAlign calls per FPN level.
 *
 * For box k = (batch b, x0, y0, x1, y1) in image pixels and output bin (ph, pw):
 *   offset      = aligned ? 0.5 : 0
 *   start       = (x0, y0) * spatial_scale - offset;  size = (x1 - x0, y1 - y0) * spatial_scale
 *   size        = max(size, 1) unless aligned
 *   bin         = size / (out_h, out_w)
 *   grid        = sampling_ratio > 0 ? sampling_ratio : ceil(size / out)   (per axis)
 *   y(iy)       = start_y + ph * bin_h + (iy + 0.5) * bin_h / grid_h       (x the same)
 *   out         = (1 / max(grid_h * grid_w, 1)) * sum over (iy, ix) of bilinear(x[b, c], y, x)
 * bilinear(): 0 outside [-1, H] x [-1, W]; coordinates clamped at 0; at the last row/column
 * both taps are that row/column.
 *
 * The bilinear weights factor into a row part and a column part (a sample outside the map on
 * either axis contributes 0, i.e. its row or column weights are 0), so each box stores
 * (out_h * grid_h) row taps and (out_w * grid_w) column taps — computed once, shared by every
 * channel and by backward.  Forward runs one OpenMP work item per (box, channel); backward
 * scatters into the input gradient one channel per work item, boxes in order, so two boxes on
 * the same pixels never race and the sums do not depend on the thread count.
 */
#include "engine.h"
#include <math.h>

#define PAR_MIN_WORK ((size_t)1 << 14)

typedef struct RoiTap {
    int32_t lo, hi;     /* row (or column) indices of the two bilinear taps */
    float wlo, whi;     /* their weights; both 0 for a sample outside the map */
} RoiTap;

typedef struct RoiSaved {
    int32_t *batch;     /* (K) image of each box */
    RoiTap *ty, *tx;    /* (K, out_h * gh_max), (K, out_w * gw_max) */
    int32_t *gh, *gw;   /* (K) samples per bin along y / x */
    float *count;       /* (K) max(gh * gw, 1): the average's divisor */
    size_t gh_max, gw_max;
} RoiSaved;

/* torchvision's bilinear_interpolate split into one axis: position v on an axis of length n */
static RoiTap roi_tap(float v, int n) {
    RoiTap t = {0, 0, 0.0f, 0.0f};
    if (v < -1.0f || v > (float)n) return t;   /* outside: contributes 0 */
    if (v <= 0.0f) v = 0.0f;
    int lo = (int)v, hi;
    if (lo >= n - 1) {
        hi = lo = n - 1;
        v = (float)lo;
    } else {
        hi = lo + 1;
    }
    float l = v - (float)lo;
    t.lo = lo;
    t.hi = hi;
    t.wlo = 1.0f - l;
    t.whi = l;
    return t;
}

static void roi_align_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *y = n->out;
    const RoiSaved *s = n->saved;
    const size_t K = y->shape[0], C = x->shape[1], H = x->shape[2], W = x->shape[3];
    const size_t OH = y->shape[2], OW = y->shape[3];
    float *dx = tensor_grad(c, x);   /* (N, C, H, W) */
    const float *dy = y->grad;       /* (K, C, OH, OW) */
#pragma omp parallel for schedule(static) if (K * C * OH * OW >= PAR_MIN_WORK)
    for (size_t ch = 0; ch < C; ch++) {
        for (size_t k = 0; k < K; k++) {
            float *dxp = dx + ((size_t)s->batch[k] * C + ch) * H * W;
            const float *dyp = dy + (k * C + ch) * OH * OW;
            const RoiTap *ty = s->ty + k * OH * s->gh_max, *tx = s->tx + k * OW * s->gw_max;
            const int gh = s->gh[k], gw = s->gw[k];
            const float cnt = s->count[k];
            for (size_t ph = 0; ph < OH; ph++) {
                for (size_t pw = 0; pw < OW; pw++) {
                    float g = dyp[ph * OW + pw] / cnt;
                    for (int iy = 0; iy < gh; iy++) {
                        const RoiTap *a = &ty[ph * (size_t)gh + (size_t)iy];
                        float *rlo = dxp + (size_t)a->lo * W, *rhi = dxp + (size_t)a->hi * W;
                        for (int ix = 0; ix < gw; ix++) {
                            const RoiTap *b = &tx[pw * (size_t)gw + (size_t)ix];
                            rlo[b->lo] += g * a->wlo * b->wlo;
                            rlo[b->hi] += g * a->wlo * b->whi;
                            rhi[b->lo] += g * a->whi * b->wlo;
                            rhi[b->hi] += g * a->whi * b->whi;
                        }
                    }
                }
            }
        }
    }
}

Tensor *op_roi_align(Ctx *c, Tensor *x, const float *rois, size_t K, int out_h, int out_w, float spatial_scale,
                     int sampling_ratio, int aligned) {
    char b[64];
    if (x->ndim != 4 || x->shape[2] == 0 || x->shape[3] == 0)
        ctx_fail(c, "op_roi_align: input %s must be 4-D (N,C,H,W) with H, W > 0", tensor_shape_str(x, b, sizeof b));
    if (out_h < 1 || out_w < 1)
        ctx_fail(c, "op_roi_align: output size %dx%d for input %s must be positive", out_h, out_w,
                 tensor_shape_str(x, b, sizeof b));
    x = op_contiguous(c, x);
    const size_t N = x->shape[0], C = x->shape[1];
    const int H = (int)x->shape[2], W = (int)x->shape[3];
    const size_t OH = (size_t)out_h, OW = (size_t)out_w;
    const float offset = aligned ? 0.5f : 0.0f;

    /* per box: batch index, grid sizes, then the row and column taps */
    RoiSaved *s = arena_alloc(&c->step, sizeof(RoiSaved));
    s->batch = arena_alloc(&c->step, (K ? K : 1) * sizeof(int32_t));
    s->gh = arena_alloc(&c->step, (K ? K : 1) * sizeof(int32_t));
    s->gw = arena_alloc(&c->step, (K ? K : 1) * sizeof(int32_t));
    s->count = arena_alloc(&c->step, (K ? K : 1) * sizeof(float));
    float *geo = arena_alloc(&c->step, (K ? K : 1) * 4 * sizeof(float));   /* (K, 4) start_y, start_x, bin_h, bin_w */
    size_t gh_max = 1, gw_max = 1;
    for (size_t k = 0; k < K; k++) {
        const float *r = rois + 5 * k;
        long bi = (long)r[0];
        if (bi < 0 || (size_t)bi >= N || (float)bi != r[0])
            ctx_fail(c, "op_roi_align: box %zu has batch index %g for input %s", k, (double)r[0],
                     tensor_shape_str(x, b, sizeof b));
        float sx = r[1] * spatial_scale - offset, sy = r[2] * spatial_scale - offset;
        float ex = r[3] * spatial_scale - offset, ey = r[4] * spatial_scale - offset;
        float rw = ex - sx, rh = ey - sy;
        if (!aligned) {
            rw = fmaxf(rw, 1.0f);
            rh = fmaxf(rh, 1.0f);
        }
        float bh = rh / (float)out_h, bw = rw / (float)out_w;
        int gh = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(rh / (float)out_h);
        int gw = sampling_ratio > 0 ? sampling_ratio : (int)ceilf(rw / (float)out_w);
        if (gh < 0) gh = 0;   /* aligned boxes of negative size: no samples, output 0 */
        if (gw < 0) gw = 0;
        s->batch[k] = (int32_t)bi;
        s->gh[k] = gh;
        s->gw[k] = gw;
        int cnt = gh * gw;
        s->count[k] = (float)(cnt > 1 ? cnt : 1);
        geo[4 * k + 0] = sy;
        geo[4 * k + 1] = sx;
        geo[4 * k + 2] = bh;
        geo[4 * k + 3] = bw;
        if ((size_t)gh > gh_max) gh_max = (size_t)gh;
        if ((size_t)gw > gw_max) gw_max = (size_t)gw;
    }
    s->gh_max = gh_max;
    s->gw_max = gw_max;
    s->ty = arena_alloc(&c->step, (K ? K : 1) * OH * gh_max * sizeof(RoiTap));
    s->tx = arena_alloc(&c->step, (K ? K : 1) * OW * gw_max * sizeof(RoiTap));
    for (size_t k = 0; k < K; k++) {
        const int gh = s->gh[k], gw = s->gw[k];
        const float sy = geo[4 * k], sx = geo[4 * k + 1], bh = geo[4 * k + 2], bw = geo[4 * k + 3];
        RoiTap *ty = s->ty + k * OH * gh_max, *tx = s->tx + k * OW * gw_max;
        /* the sample positions exactly as torchvision writes them (float arithmetic) */
        for (size_t ph = 0; ph < OH; ph++)
            for (int iy = 0; iy < gh; iy++) {
                float yy = sy + (float)ph * bh + ((float)iy + 0.5f) * bh / (float)gh;
                ty[ph * (size_t)gh + (size_t)iy] = roi_tap(yy, H);
            }
        for (size_t pw = 0; pw < OW; pw++)
            for (int ix = 0; ix < gw; ix++) {
                float xx = sx + (float)pw * bw + ((float)ix + 0.5f) * bw / (float)gw;
                tx[pw * (size_t)gw + (size_t)ix] = roi_tap(xx, W);
            }
    }

    Tensor *y = tensor_new_(c, K, C, OH, OW);   /* (K, C, OH, OW) */
#pragma omp parallel for schedule(static) if (K * C * OH * OW >= PAR_MIN_WORK)
    for (size_t kc = 0; kc < K * C; kc++) {
        const size_t k = kc / C, ch = kc % C;
        const float *xp = x->data + ((size_t)s->batch[k] * C + ch) * (size_t)H * (size_t)W;
        float *yp = y->data + kc * OH * OW;
        const RoiTap *ty = s->ty + k * OH * gh_max, *tx = s->tx + k * OW * gw_max;
        const int gh = s->gh[k], gw = s->gw[k];
        const float cnt = s->count[k];
        for (size_t ph = 0; ph < OH; ph++) {
            for (size_t pw = 0; pw < OW; pw++) {
                float acc = 0.0f;
                for (int iy = 0; iy < gh; iy++) {
                    const RoiTap *a = &ty[ph * (size_t)gh + (size_t)iy];
                    const float *rlo = xp + (size_t)a->lo * (size_t)W, *rhi = xp + (size_t)a->hi * (size_t)W;
                    for (int ix = 0; ix < gw; ix++) {
                        const RoiTap *bb = &tx[pw * (size_t)gw + (size_t)ix];
                        /* w1..w4 and the sum order of torchvision's kernel */
                        float w1 = a->wlo * bb->wlo, w2 = a->wlo * bb->whi, w3 = a->whi * bb->wlo,
                              w4 = a->whi * bb->whi;
                        acc += w1 * rlo[bb->lo] + w2 * rlo[bb->hi] + w3 * rhi[bb->lo] + w4 * rhi[bb->hi];
                    }
                }
                yp[ph * OW + pw] = acc / cnt;
            }
        }
    }
    Node *n = op_record(c, "roi_align", roi_align_backward, y, &x, 1);
    if (n) n->saved = s;
    return y;
}
