/* op_batchnorm_sync.c — synchronised batch norm over MPI ranks (PyTorch's SyncBatchNorm): in
 * training mode every rank normalises with the statistics of the GLOBAL batch (all ranks' rows),
 * so R ranks with B/R images each compute what one rank computes with B images.
 *
 * Forward: per channel, each rank's (count, mean, M2) in double; all-gathered and merged with
 * Chan's formula in rank order (a fixed order, so the result does not depend on MPI's reduction
 * algorithm).  Backward: the two per-channel reductions of the batch-norm gradient,
 * sum(dy) and sum(dy * xhat), all-gathered and summed in rank order, then divided by the global
 * count, as SyncBatchNorm's backward.  The affine gradients stay local (sums over this rank's
 * rows): dist_allreduce_grads combines them with every other parameter gradient.
 *
 * Reached through op_batchnorm when c->sync_bn is set, the context is training and world > 1;
 * on one rank op_batchnorm's own kernel runs. */
#include "engine/engine.h"
#include "engine/simd.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define SYNCBN_OMP_MIN 16384

typedef struct SyncBnSaved {
    float *mean;    // (C) global batch mean
    float *rstd;    // (C) 1 / sqrt(global biased var + eps)
    double count;   // values per channel over all ranks
} SyncBnSaved;

/* this rank's per-channel (mean, M2) of x (N, C, S), each channel in (n, s) order */
static void local_moments(double *mean, double *m2, const float *x, size_t N, size_t C, size_t S) {
    // mean, m2: (C); x: (N, C, S)
#pragma omp parallel for schedule(static) if (N * C * S >= SYNCBN_OMP_MIN)
    for (size_t ch = 0; ch < C; ch++) {
        double m = 0.0, q = 0.0, cnt = 0.0;
        for (size_t n = 0; n < N; n++) {
            const float *p = x + (n * C + ch) * S;
            double pm = simd_sum_f64(p, S) / (double)S, pq = simd_sumsq_dev_f64(p, S, pm);
            double tot = cnt + (double)S, d = pm - m;
            m += d * ((double)S / tot);
            q += pq + d * d * (cnt * (double)S / tot);
            cnt = tot;
        }
        mean[ch] = m;
        m2[ch] = q;
    }
}

static void syncbn_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *y = n->out;
    const SyncBnSaved *sv = n->saved;
    const size_t N = (size_t)n->i[0], C = (size_t)n->i[1], S = (size_t)n->i[2], R = (size_t)c->world;
    const float *dy = y->grad, *xd = x->data;
    /* local reductions: sums[0..C) = sum dy, sums[C..2C) = sum dy * xhat */
    double *sums = arena_alloc(&c->step, 2 * C * sizeof(double));        // (2, C) this rank
    double *all = arena_alloc(&c->step, 2 * C * R * sizeof(double));     // (R, 2, C) every rank
#pragma omp parallel for schedule(static) if (N * C * S >= SYNCBN_OMP_MIN)
    for (size_t ch = 0; ch < C; ch++) {
        double sdy = 0.0, sdyx = 0.0;
        for (size_t k = 0; k < N; k++) {
            const float *xp = xd + (k * C + ch) * S, *g = dy + (k * C + ch) * S;
            sdy += simd_sum_f64(g, S);
            sdyx += simd_dot_dev_f64(g, xp, S, sv->mean[ch]);
        }
        sums[ch] = sdy;
        sums[C + ch] = sdyx * sv->rstd[ch];
    }
    if (w && w->requires_grad) {
        float *dw = tensor_grad(c, w);
        for (size_t ch = 0; ch < C; ch++) dw[ch] += (float)sums[C + ch];
    }
    if (b && b->requires_grad) {
        float *db = tensor_grad(c, b);
        for (size_t ch = 0; ch < C; ch++) db[ch] += (float)sums[ch];
    }
    if (!x->requires_grad) return;
    dist_allgather(c, sums, 2 * C * sizeof(double), all);
    float *mdy = arena_alloc(&c->step, 2 * C * sizeof(float));   // (2, C) global means of dy, dy*xhat
    for (size_t ch = 0; ch < 2 * C; ch++) {
        double s = 0.0;
        for (size_t r = 0; r < R; r++) s += all[r * 2 * C + ch];
        mdy[ch] = (float)(s / sv->count);
    }
    float *dx = tensor_grad(c, x);
    const float *wd = w ? w->data : NULL;
#pragma omp parallel for schedule(static) if (N * C * S >= SYNCBN_OMP_MIN)
    for (size_t p = 0; p < N * C; p++) {
        const size_t ch = p % C;
        const float *xp = xd + p * S, *g = dy + p * S;
        float *o = dx + p * S;
        const float m = sv->mean[ch], s = sv->rstd[ch], ws = s * (wd ? wd[ch] : 1.0f);
        const float a = mdy[ch], bb = mdy[C + ch];
        /* dx = w*rstd*(dy - mean(dy) - xhat*mean(dy*xhat)), the means over the global batch */
        for (size_t k = 0; k < S; k++) o[k] += ws * (g[k] - a - (xp[k] - m) * s * bb);
    }
}

Tensor *op_batchnorm_sync(Ctx *c, Tensor *x, Tensor *w, Tensor *b, float *running_mean, float *running_var,
                          float momentum, float eps) {
    char bx[64];
    if (x->ndim < 2)
        ctx_fail(c, "op_batchnorm_sync: input %s must be (N, C, ...) with at least 2 dims", tensor_shape_str(x, bx, sizeof bx));
    x = op_contiguous(c, x);
    const size_t N = x->shape[0], C = x->shape[1];
    const size_t S = (N > 0 && C > 0) ? x->numel / (N * C) : 0, R = (size_t)c->world;
    if ((w && w->numel != C) || (b && b->numel != C))
        ctx_fail(c, "op_batchnorm_sync: weight/bias do not match %zu channels of input %s", C, tensor_shape_str(x, bx, sizeof bx));
    if ((running_mean == NULL) != (running_var == NULL))
        ctx_fail(c, "op_batchnorm_sync: running_mean and running_var must both be given or both be NULL");
    if (w) w = op_contiguous(c, w);
    if (b) b = op_contiguous(c, b);
    /* (count, mean, M2) of every rank, merged in rank order */
    double *loc = arena_alloc(&c->step, 3 * (C ? C : 1) * sizeof(double));        // (3, C) count, mean, M2
    double *all = arena_alloc(&c->step, 3 * (C ? C : 1) * R * sizeof(double));    // (R, 3, C)
    for (size_t ch = 0; ch < C; ch++) loc[ch] = (double)(N * S);
    local_moments(loc + C, loc + 2 * C, x->data, N, C, S);
    dist_allgather(c, loc, 3 * C * sizeof(double), all);
    SyncBnSaved *sv = arena_alloc(&c->step, sizeof(SyncBnSaved));
    sv->mean = arena_alloc(&c->step, (C ? C : 1) * sizeof(float));
    sv->rstd = arena_alloc(&c->step, (C ? C : 1) * sizeof(float));
    double total = 0.0;
    for (size_t r = 0; r < R; r++) total += all[r * 3 * C];   /* channel 0's count: same for all */
    if (C > 0 && total < 2)
        ctx_fail(c, "op_batchnorm_sync: training needs more than 1 value per channel over all ranks, input %s",
                 tensor_shape_str(x, bx, sizeof bx));
    sv->count = total;
    for (size_t ch = 0; ch < C; ch++) {
        double m = 0.0, q = 0.0, cnt = 0.0;
        for (size_t r = 0; r < R; r++) {
            const double *a = all + r * 3 * C;
            double n = a[ch], pm = a[C + ch], pq = a[2 * C + ch];
            if (n == 0) continue;
            double tot = cnt + n, d = pm - m;
            m += d * (n / tot);
            q += pq + d * d * (cnt * n / tot);
            cnt = tot;
        }
        double var = q / cnt;   /* biased: normalisation; the running buffer tracks the unbiased */
        sv->mean[ch] = (float)m;
        sv->rstd[ch] = (float)(1.0 / sqrt(var + (double)eps));
        if (running_mean) {
            running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * (float)m;
            running_var[ch] = (1.0f - momentum) * running_var[ch] + momentum * (float)(q / (cnt - 1.0));
        }
    }
    Tensor *y = tensor_new(c, x->ndim, x->shape);
    const float *wd = w ? w->data : NULL, *bd = b ? b->data : NULL;
#pragma omp parallel for schedule(static) if (N * C * S >= SYNCBN_OMP_MIN)
    for (size_t p = 0; p < N * C; p++) {
        const size_t ch = p % C;
        const float scale = sv->rstd[ch] * (wd ? wd[ch] : 1.0f), shift = (bd ? bd[ch] : 0.0f) - sv->mean[ch] * scale;
        const float *xp = x->data + p * S;
        float *o = y->data + p * S;
        for (size_t k = 0; k < S; k++) o[k] = xp[k] * scale + shift;
    }
    Tensor *in[3] = {x, w, b};
    Node *n = op_record(c, "batchnorm_sync", syncbn_backward, y, in, 3);
    if (n) {
        n->saved = sv;
        n->i[0] = (long)N;
        n->i[1] = (long)C;
        n->i[2] = (long)S;
    }
    return y;
}
