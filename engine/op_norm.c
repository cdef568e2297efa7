/* op_norm.c — normalisation ops: softmax, log-softmax, layer norm and L2 normalisation over the
 * last dim, batch norm over dim 1.  Each op is a forward kernel plus a hand-written backward
 * kernel that adds into the gradients of the inputs that need one.
 *
 * Row ops view the input as (N, D) with D = shape[ndim-1]; strided views are made contiguous
 * first (op_contiguous records its own node, so gradients reach the view).  Row statistics are
 * accumulated in double: it costs little next to expf/sqrtf and keeps long rows (e.g. 65536 DINO
 * prototypes) within ~1e-6 of PyTorch.  Every reduction runs in a fixed order inside one row or
 * one channel, so results do not depend on the thread count.  The row kernels (exp, max, double
 * sums four lanes at a time) are simd.h's. */
#include "engine.h"
#include "simd.h"
#include <math.h>
#include <string.h>

/* the fused batchnorm+SiLU vectorises its sigmoid through libmvec's expf, declared as in
 * op_activation.c (glibc declares the SIMD variants only under -ffast-math) */
#if defined(__x86_64__) && defined(__GLIBC__) && !defined(__FAST_MATH__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
__attribute__((simd("notinbranch"), const)) float expf(float);
#endif

/* below this many elements a parallel region costs more than the work */
#define NORM_OMP_MIN 16384

static Tensor *as_rows(Ctx *c, Tensor *x, const char *op, size_t *N, size_t *D) {
    if (x->ndim < 1) ctx_fail(c, "%s: input must have at least one dim, got a 0-d tensor", op);
    x = op_contiguous(c, x);
    *D = x->shape[x->ndim - 1];
    *N = *D ? x->numel / *D : 0;
    return x;
}

static void check_affine(Ctx *c, const char *op, const Tensor *x, const Tensor *p, size_t C, const char *what) {
    if (!p) return;
    if (p->numel != C || (p->ndim != 1 && p->numel > 1)) {
        char bx[64], bp[64];
        ctx_fail(c, "%s: %s of shape %s does not match %zu channels of input %s", op, what,
                 tensor_shape_str(p, bp, sizeof bp), C, tensor_shape_str(x, bx, sizeof bx));
    }
}

/* ---------------------------------------------------------------------------------------- */
/* softmax */

static void softmax_forward(float *out, const float *inp, size_t N, size_t D) {
    // out, inp: (N, D)
#pragma omp parallel for schedule(static) if (N * D >= NORM_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *x = inp + i * D;
        float *y = out + i * D;
        /* max-subtracted: every exponent is <= 0, so large logits cannot overflow */
        float maxv = simd_max(x, D);
        double sum = simd_exp_sum(y, x, D, 1.0f, maxv);
        float inv = (float)(1.0 / sum);
        for (size_t j = 0; j < D; j++) y[j] *= inv;
    }
}

static void softmax_backward(float *dinp, const float *out, const float *dout, size_t N, size_t D) {
    // dinp, out, dout: (N, D);  dx = y * (dy - <dy, y>)
#pragma omp parallel for schedule(static) if (N * D >= NORM_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *y = out + i * D, *dy = dout + i * D;
        float *dx = dinp + i * D;
        float fdot = (float)simd_dot_f64(dy, y, D);
        for (size_t j = 0; j < D; j++) dx[j] += y[j] * (dy[j] - fdot);
    }
}

static void softmax_node_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *y = n->out;
    if (!x->requires_grad) return;
    softmax_backward(tensor_grad(c, x), y->data, y->grad, (size_t)n->i[0], (size_t)n->i[1]);
}

Tensor *op_softmax(Ctx *c, Tensor *x) {
    size_t N, D;
    x = as_rows(c, x, "op_softmax", &N, &D);
    Tensor *y = tensor_new(c, x->ndim, x->shape);
    softmax_forward(y->data, x->data, N, D);
    Node *n = op_record(c, "softmax", softmax_node_backward, y, &x, 1);
    if (n) {
        n->i[0] = (long)N;
        n->i[1] = (long)D;
    }
    return y;
}

/* ---------------------------------------------------------------------------------------- */
/* log-softmax */

static void log_softmax_forward(float *out, const float *inp, size_t N, size_t D) {
    // out, inp: (N, D);  y = x - max - log(sum exp(x - max))
#pragma omp parallel for schedule(static) if (N * D >= NORM_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *x = inp + i * D;
        float *y = out + i * D;
        float maxv = simd_max(x, D);
        double sum = simd_exp_sum(NULL, x, D, 1.0f, maxv);
        float shift = maxv + (float)log(sum);
        for (size_t j = 0; j < D; j++) y[j] = x[j] - shift;
    }
}

static void log_softmax_backward(float *dinp, const float *out, const float *dout, size_t N, size_t D) {
    // dinp, out, dout: (N, D);  dx = dy - softmax * sum(dy)
#pragma omp parallel for schedule(static) if (N * D >= NORM_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *y = out + i * D, *dy = dout + i * D;
        float *dx = dinp + i * D;
        float fsum = (float)simd_sum_f64(dy, D);
        /* softmax = exp(log-softmax), a row of values <= 0: the vector exp, a block at a time */
        float p[256];
        for (size_t j0 = 0; j0 < D; j0 += 256) {
            size_t len = D - j0 < 256 ? D - j0 : 256;
            simd_exp_row(p, y + j0, len);
            for (size_t j = 0; j < len; j++) dx[j0 + j] += dy[j0 + j] - p[j] * fsum;
        }
    }
}

static void log_softmax_node_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *y = n->out;
    if (!x->requires_grad) return;
    log_softmax_backward(tensor_grad(c, x), y->data, y->grad, (size_t)n->i[0], (size_t)n->i[1]);
}

Tensor *op_log_softmax(Ctx *c, Tensor *x) {
    size_t N, D;
    x = as_rows(c, x, "op_log_softmax", &N, &D);
    Tensor *y = tensor_new(c, x->ndim, x->shape);
    log_softmax_forward(y->data, x->data, N, D);
    Node *n = op_record(c, "log_softmax", log_softmax_node_backward, y, &x, 1);
    if (n) {
        n->i[0] = (long)N;
        n->i[1] = (long)D;
    }
    return y;
}

/* ---------------------------------------------------------------------------------------- */
/* layer norm (llm.c's layernorm_forward/backward, with optional affine) */

typedef struct LayerNormSaved {
    float *mean;  // (N)
    float *rstd;  // (N)
} LayerNormSaved;

static void layernorm_forward(float *out, float *mean, float *rstd, const float *inp, const float *weight,
                              const float *bias, size_t N, size_t C, float eps) {
    // out, inp: (N, C); mean, rstd: (N); weight, bias: (C) or NULL
#pragma omp parallel for schedule(static) if (N * C >= NORM_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *x = inp + i * C;
        float *y = out + i * C;
        double m = simd_sum_f64(x, C) / (double)C;
        /* two-pass variance: no cancellation when |mean| >> std */
        double v = simd_sumsq_dev_f64(x, C, m) / (double)C;  // biased, as PyTorch
        float fm = (float)m, fs = (float)(1.0 / sqrt(v + eps));
        for (size_t j = 0; j < C; j++) {
            float nrm = (x[j] - fm) * fs;
            y[j] = nrm * (weight ? weight[j] : 1.0f) + (bias ? bias[j] : 0.0f);
        }
        mean[i] = fm;
        rstd[i] = fs;
    }
}

static void layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                               const float *weight, const float *mean, const float *rstd, size_t N, size_t C) {
    // dinp, dout, inp: (N, C); dweight, dbias, weight: (C) or NULL; mean, rstd: (N)
    if (dinp) {
#pragma omp parallel for schedule(static) if (N * C >= NORM_OMP_MIN)
        for (size_t i = 0; i < N; i++) {
            const float *x = inp + i * C, *dy = dout + i * C;
            float *dx = dinp + i * C;
            float m = mean[i], s = rstd[i];
            /* dnorm = w * dy; a = mean(dnorm), b = mean(dnorm * xhat), xhat = (x - mean) * rstd */
            double dnorm_mean = weight ? simd_dot_f64(weight, dy, C) : simd_sum_f64(dy, C);
            double dnorm_norm_mean = simd_dot3_dev_f64(weight, dy, x, C, m) * s;
            float a = (float)(dnorm_mean / (double)C), b = (float)(dnorm_norm_mean / (double)C);
            if (weight) {
                for (size_t j = 0; j < C; j++) dx[j] += s * (weight[j] * dy[j] - a - (x[j] - m) * s * b);
            } else {
                for (size_t j = 0; j < C; j++) dx[j] += s * (dy[j] - a - (x[j] - m) * s * b);
            }
        }
    }
    if (dweight || dbias) {
        /* sums over rows, parallel over blocks of columns: each column is summed by one thread in
         * row order, so dw/db are identical for any thread count and no float atomics are needed */
        const size_t CB = 16;
        size_t nblk = (C + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (N * C >= NORM_OMP_MIN)
        for (size_t blk = 0; blk < nblk; blk++) {
            size_t j0 = blk * CB, j1 = j0 + CB < C ? j0 + CB : C;
            double dw[16] = {0}, db[16] = {0};
            for (size_t i = 0; i < N; i++) {
                const float *x = inp + i * C, *dy = dout + i * C;
                float m = mean[i], s = rstd[i];
                for (size_t j = j0; j < j1; j++) {
                    dw[j - j0] += (double)dy[j] * ((x[j] - m) * s);
                    db[j - j0] += dy[j];
                }
            }
            for (size_t j = j0; j < j1; j++) {
                if (dweight) dweight[j] += (float)dw[j - j0];
                if (dbias) dbias[j] += (float)db[j - j0];
            }
        }
    }
}

static void layernorm_node_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *y = n->out;
    LayerNormSaved *sv = n->saved;
    float *dx = x->requires_grad ? tensor_grad(c, x) : NULL;
    float *dw = (w && w->requires_grad) ? tensor_grad(c, w) : NULL;
    float *db = (b && b->requires_grad) ? tensor_grad(c, b) : NULL;
    layernorm_backward(dx, dw, db, y->grad, x->data, w ? w->data : NULL, sv->mean, sv->rstd, (size_t)n->i[0],
                       (size_t)n->i[1]);
}

Tensor *op_layernorm(Ctx *c, Tensor *x, Tensor *w, Tensor *b, float eps) {
    size_t N, C;
    x = as_rows(c, x, "op_layernorm", &N, &C);
    check_affine(c, "op_layernorm", x, w, C, "weight");
    check_affine(c, "op_layernorm", x, b, C, "bias");
    if (w) w = op_contiguous(c, w);
    if (b) b = op_contiguous(c, b);
    Tensor *y = tensor_new(c, x->ndim, x->shape);
    LayerNormSaved *sv = arena_alloc(&c->step, sizeof(LayerNormSaved));
    sv->mean = arena_alloc(&c->step, (N ? N : 1) * sizeof(float));
    sv->rstd = arena_alloc(&c->step, (N ? N : 1) * sizeof(float));
    layernorm_forward(y->data, sv->mean, sv->rstd, x->data, w ? w->data : NULL, b ? b->data : NULL, N, C, eps);
    Tensor *in[3] = {x, w, b};
    Node *n = op_record(c, "layernorm", layernorm_node_backward, y, in, 3);
    if (n) {
        n->saved = sv;
        n->i[0] = (long)N;
        n->i[1] = (long)C;
    }
    return y;
}

/* ---------------------------------------------------------------------------------------- */
/* L2 normalisation: y = x / max(||x||, eps), PyTorch F.normalize(p=2, dim=-1) */

static void l2_normalize_forward(float *out, float *norm, const float *inp, size_t N, size_t D, float eps) {
    // out, inp: (N, D); norm: (N) unclamped ||x||
#pragma omp parallel for schedule(static) if (N * D >= NORM_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *x = inp + i * D;
        float *y = out + i * D;
        double ss = 0.0;
        for (size_t j = 0; j < D; j++) ss += (double)x[j] * x[j];
        double nr = sqrt(ss);
        float inv = (float)(1.0 / fmax(nr, (double)eps));
        for (size_t j = 0; j < D; j++) y[j] = x[j] * inv;
        norm[i] = (float)nr;
    }
}

static void l2_normalize_backward(float *dinp, const float *inp, const float *norm, const float *dout, size_t N,
                                  size_t D, float eps) {
    // dinp, inp, dout: (N, D); norm: (N)
#pragma omp parallel for schedule(static) if (N * D >= NORM_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *x = inp + i * D, *dy = dout + i * D;
        float *dx = dinp + i * D;
        float nr = norm[i];
        if (!(nr > eps)) {
            /* the clamp is active: the denominator is the constant eps */
            float inv = 1.0f / eps;
            for (size_t j = 0; j < D; j++) dx[j] += dy[j] * inv;
            continue;
        }
        /* dx = (dy - y <y, dy>) / ||x|| with y = x / ||x|| */
        double dot = 0.0;
        for (size_t j = 0; j < D; j++) dot += (double)x[j] * dy[j];
        float inv = 1.0f / nr;
        float k = (float)(dot / ((double)nr * nr * nr));
        for (size_t j = 0; j < D; j++) dx[j] += dy[j] * inv - x[j] * k;
    }
}

static void l2_normalize_node_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0];
    if (!x->requires_grad) return;
    l2_normalize_backward(tensor_grad(c, x), x->data, (const float *)n->saved, n->out->grad, (size_t)n->i[0],
                          (size_t)n->i[1], n->f[0]);
}

Tensor *op_l2_normalize(Ctx *c, Tensor *x, float eps) {
    size_t N, D;
    x = as_rows(c, x, "op_l2_normalize", &N, &D);
    Tensor *y = tensor_new(c, x->ndim, x->shape);
    float *norm = arena_alloc(&c->step, (N ? N : 1) * sizeof(float));  // (N)
    l2_normalize_forward(y->data, norm, x->data, N, D, eps);
    Node *n = op_record(c, "l2_normalize", l2_normalize_node_backward, y, &x, 1);
    if (n) {
        n->saved = norm;
        n->i[0] = (long)N;
        n->i[1] = (long)D;
        n->f[0] = eps;
    }
    return y;
}

/* ---------------------------------------------------------------------------------------- */
/* batch norm over dim 1 of (N, C, ...): the input is N*C planes of S contiguous values. */

typedef struct BatchNormSaved {
    float *mean;  // (C) batch mean (training) or running mean (eval)
    float *rstd;  // (C) 1/sqrt(var + eps) of the same statistics
} BatchNormSaved;

/* per-channel batch mean and biased variance; channels in parallel, each summed in (n, s) order */
static void batchnorm_stats(float *mean, float *var, const float *inp, size_t N, size_t C, size_t S) {
    // mean, var: (C); inp: (N, C, S)
#pragma omp parallel for schedule(static) if (N * C * S >= NORM_OMP_MIN)
    for (size_t ch = 0; ch < C; ch++) {
        /* two passes over each plane while it is in cache (its mean, then the squared deviations
         * from it), planes merged in order with Chan's formula: one sweep over memory, and no
         * cancellation when |mean| >> std */
        double m = 0.0, m2 = 0.0, cnt = 0.0;
        for (size_t n = 0; n < N; n++) {
            const float *x = inp + (n * C + ch) * S;
            double pm = simd_sum_f64(x, S) / (double)S;
            double pm2 = simd_sumsq_dev_f64(x, S, pm);
            double tot = cnt + (double)S, d = pm - m;
            m += d * ((double)S / tot);
            m2 += pm2 + d * d * (cnt * (double)S / tot);
            cnt = tot;
        }
        mean[ch] = (float)m;
        var[ch] = (float)(m2 / (double)(N * S));
    }
}

/* one normalised value; the fused batchnorm+SiLU backward recomputes it with this same expression,
 * so it matches the forward bit for bit */
static inline float bn_affine(float x, float scale, float shift) { return x * scale + shift; }

/* the same sigmoid and SiLU derivative as op_activation.c's op_silu, so the fused op equals the
 * composition op_silu(op_batchnorm(x)) up to the last-ulp differences of vector vs scalar expf
 * (which elements take the vector body depends on the plane size only, not the thread count) */
static inline float bn_sigmoidf(float v) { return 1.0f / (1.0f + expf(-v)); }

/* silu: then SiLU in place on each plane while it is in cache */
static void batchnorm_apply(float *out, const float *inp, const float *mean, const float *rstd, const float *weight,
                            const float *bias, size_t N, size_t C, size_t S, int silu) {
    // out, inp: (N, C, S); mean, rstd, weight, bias: (C)
#pragma omp parallel for schedule(static) if (N * C * S >= NORM_OMP_MIN)
    for (size_t p = 0; p < N * C; p++) {
        size_t ch = p % C;
        const float *x = inp + p * S;
        float *y = out + p * S;
        /* fold the affine into one multiply-add per element */
        float scale = rstd[ch] * (weight ? weight[ch] : 1.0f);
        float shift = (bias ? bias[ch] : 0.0f) - mean[ch] * scale;
        for (size_t k = 0; k < S; k++) y[k] = bn_affine(x[k], scale, shift);
        if (silu)
            for (size_t k = 0; k < S; k++) y[k] = y[k] * bn_sigmoidf(y[k]);
    }
}

/* The fused batchnorm+SiLU backward: the gradient at the BN output, dz = g * silu'(z) with z
 * recomputed from x, is written plane by plane just before the plane is summed (while it is in
 * cache) into dz, which then serves as dout. */
typedef struct SiluGrad {
    const float *g;      // (N, C, S) gradient at the SiLU output
    const float *bias;   // (C) or NULL
    float *dz;           // (N, C, S) out
} SiluGrad;

static void silu_plane_grad(float *dz, const float *g, const float *x, float scale, float shift, size_t S) {
    for (size_t k = 0; k < S; k++) {
        float z = bn_affine(x[k], scale, shift), sg = bn_sigmoidf(z);
        dz[k] = g[k] * (sg * (1.0f + z * (1.0f - sg)));
    }
}

static void batchnorm_backward(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                               const float *weight, const float *mean, const float *rstd, float *sum_dy,
                               float *sum_dy_xhat, size_t N, size_t C, size_t S, int batch_stats,
                               const SiluGrad *silu) {
    // dinp, dout, inp: (N, C, S); dweight, dbias, weight, mean, rstd: (C);
    // sum_dy, sum_dy_xhat: (C) scratch; silu: NULL for a plain batch norm (then dout is used)
    if (silu) dout = silu->dz;
#pragma omp parallel for schedule(static) if (N * C * S >= NORM_OMP_MIN)
    for (size_t ch = 0; ch < C; ch++) {
        double sdy = 0.0, sdyx = 0.0;
        float m = mean[ch], s = rstd[ch];
        float scale = s * (weight ? weight[ch] : 1.0f);
        float shift = (silu && silu->bias ? silu->bias[ch] : 0.0f) - m * scale;
        for (size_t n = 0; n < N; n++) {
            const size_t off = (n * C + ch) * S;
            const float *x = inp + off, *dy = dout + off;
            if (silu) silu_plane_grad(silu->dz + off, silu->g + off, x, scale, shift, S);
            sdy += simd_sum_f64(dy, S);
            sdyx += simd_dot_dev_f64(dy, x, S, m);
        }
        sdyx *= s;   /* sum dy * xhat, xhat = (x - mean) * rstd */
        sum_dy[ch] = (float)sdy;
        sum_dy_xhat[ch] = (float)sdyx;
        if (dweight) dweight[ch] += (float)sdyx;
        if (dbias) dbias[ch] += (float)sdy;
    }
    if (!dinp) return;
    float inv_M = 1.0f / (float)(N * S);
#pragma omp parallel for schedule(static) if (N * C * S >= NORM_OMP_MIN)
    for (size_t p = 0; p < N * C; p++) {
        size_t ch = p % C;
        const float *x = inp + p * S, *dy = dout + p * S;
        float *dx = dinp + p * S;
        float m = mean[ch], s = rstd[ch];
        float ws = s * (weight ? weight[ch] : 1.0f);
        if (batch_stats) {
            /* mean and variance depend on x: dx = w*rstd*(dy - mean(dy) - xhat*mean(dy*xhat)) */
            float a = sum_dy[ch] * inv_M, b = sum_dy_xhat[ch] * inv_M;
            for (size_t k = 0; k < S; k++) dx[k] += ws * (dy[k] - a - (x[k] - m) * s * b);
        } else {
            /* eval: a fixed affine map per channel */
            for (size_t k = 0; k < S; k++) dx[k] += ws * dy[k];
        }
    }
}

static void batchnorm_node_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *y = n->out;
    BatchNormSaved *sv = n->saved;
    size_t N = (size_t)n->i[0], C = (size_t)n->i[1], S = (size_t)n->i[2];
    float *dx = x->requires_grad ? tensor_grad(c, x) : NULL;
    float *dw = (w && w->requires_grad) ? tensor_grad(c, w) : NULL;
    float *db = (b && b->requires_grad) ? tensor_grad(c, b) : NULL;
    float *scratch = arena_alloc(&c->step, 2 * C * sizeof(float));  // (2, C)
    batchnorm_backward(dx, dw, db, y->grad, x->data, w ? w->data : NULL, sv->mean, sv->rstd, scratch, scratch + C,
                       N, C, S, (int)n->i[3], NULL);
}

static void batchnorm_silu_node_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1], *b = n->in[2], *y = n->out;
    BatchNormSaved *sv = n->saved;
    size_t N = (size_t)n->i[0], C = (size_t)n->i[1], S = (size_t)n->i[2];
    float *dx = x->requires_grad ? tensor_grad(c, x) : NULL;
    float *dw = (w && w->requires_grad) ? tensor_grad(c, w) : NULL;
    float *db = (b && b->requires_grad) ? tensor_grad(c, b) : NULL;
    float *scratch = arena_alloc(&c->step, 2 * C * sizeof(float));  // (2, C)
    SiluGrad sg = {y->grad, b ? b->data : NULL, ctx_scratch(c, x->numel)};   // dz: (N, C, S)
    batchnorm_backward(dx, dw, db, NULL, x->data, w ? w->data : NULL, sv->mean, sv->rstd, scratch, scratch + C, N, C,
                       S, (int)n->i[3], &sg);
    ctx_scratch_release(c, sg.dz, x->numel);
}

static Tensor *batchnorm_impl(Ctx *c, const char *op, Tensor *x, Tensor *w, Tensor *b, float *running_mean,
                              float *running_var, float momentum, float eps, int silu) {
    char bx[64];
    if (x->ndim < 2)
        ctx_fail(c, "%s: input %s must be (N, C, ...) with at least 2 dims", op, tensor_shape_str(x, bx, sizeof bx));
    x = op_contiguous(c, x);
    size_t N = x->shape[0], C = x->shape[1];
    size_t S = (N > 0 && C > 0) ? x->numel / (N * C) : 0;
    size_t M = N * S;  // values per channel
    check_affine(c, op, x, w, C, "weight");
    check_affine(c, op, x, b, C, "bias");
    if ((running_mean == NULL) != (running_var == NULL))
        ctx_fail(c, "%s: running_mean and running_var must both be given or both be NULL", op);
    if (w) w = op_contiguous(c, w);
    if (b) b = op_contiguous(c, b);

    BatchNormSaved *sv = arena_alloc(&c->step, sizeof(BatchNormSaved));
    sv->mean = arena_alloc(&c->step, (C ? C : 1) * sizeof(float));
    sv->rstd = arena_alloc(&c->step, (C ? C : 1) * sizeof(float));
    int batch_stats = c->training;
    if (batch_stats) {
        if (M < 2)
            ctx_fail(c, "%s: training needs more than 1 value per channel, input %s", op,
                     tensor_shape_str(x, bx, sizeof bx));
        float *var = arena_alloc(&c->step, C * sizeof(float));  // (C) biased batch variance
        batchnorm_stats(sv->mean, var, x->data, N, C, S);
        /* PyTorch: normalise with the biased variance, track the unbiased one */
        float unbias = (float)M / (float)(M - 1);
        for (size_t ch = 0; ch < C; ch++) {
            sv->rstd[ch] = 1.0f / sqrtf(var[ch] + eps);
            if (running_mean) {
                running_mean[ch] = (1.0f - momentum) * running_mean[ch] + momentum * sv->mean[ch];
                running_var[ch] = (1.0f - momentum) * running_var[ch] + momentum * var[ch] * unbias;
            }
        }
    } else {
        if (!running_mean)
            ctx_fail(c, "%s: eval mode on input %s needs running_mean and running_var (got NULL)", op,
                     tensor_shape_str(x, bx, sizeof bx));
        /* copied: the buffers may be updated by a later training-mode call before backward */
        for (size_t ch = 0; ch < C; ch++) {
            sv->mean[ch] = running_mean[ch];
            sv->rstd[ch] = 1.0f / sqrtf(running_var[ch] + eps);
        }
    }
    Tensor *y = tensor_new(c, x->ndim, x->shape);
    batchnorm_apply(y->data, x->data, sv->mean, sv->rstd, w ? w->data : NULL, b ? b->data : NULL, N, C, S, silu);

    Tensor *in[3] = {x, w, b};
    Node *n = silu ? op_record(c, "batchnorm_silu", batchnorm_silu_node_backward, y, in, 3)
                   : op_record(c, "batchnorm", batchnorm_node_backward, y, in, 3);
    if (n) {
        n->saved = sv;
        n->i[0] = (long)N;
        n->i[1] = (long)C;
        n->i[2] = (long)S;
        n->i[3] = batch_stats;
    }
    return y;
}

Tensor *op_batchnorm(Ctx *c, Tensor *x, Tensor *w, Tensor *b, float *running_mean, float *running_var,
                     float momentum, float eps) {
    if (c->sync_bn && c->training && c->world > 1)
        return op_batchnorm_sync(c, x, w, b, running_mean, running_var, momentum, eps);
    return batchnorm_impl(c, "op_batchnorm", x, w, b, running_mean, running_var, momentum, eps, 0);
}

/* silu(batchnorm(x)) in one node: the BN output is never stored (backward recomputes it from x,
 * which BN keeps anyway), one full activation less per conv -> BN -> SiLU of a CNN, and one
 * pass less over memory in the forward.  The numbers of op_silu(op_batchnorm(...)) to an ulp. */
Tensor *op_batchnorm_silu(Ctx *c, Tensor *x, Tensor *w, Tensor *b, float *running_mean, float *running_var,
                          float momentum, float eps) {
    if (c->sync_bn && c->training && c->world > 1)
        return op_silu(c, op_batchnorm_sync(c, x, w, b, running_mean, running_var, momentum, eps));
    return batchnorm_impl(c, "op_batchnorm_silu", x, w, b, running_mean, running_var, momentum, eps, 1);
}
