/* op_activation.c — pointwise activations and functions (gelu, silu, sigmoid, relu, tanh, exp,
 * log, sqrt) and the stochastic ones (dropout, drop-path).
 *
 * A strided input is made contiguous first (op_contiguous records the copy, so its gradient
 * flows back); after that every kernel is a flat loop over `numel` floats.  Backward kernels
 * use whichever of x and out gives the cheaper derivative (sigmoid/tanh/exp/sqrt from out).
 */
#include "engine.h"
#include <math.h>

/* glibc >= 2.35 ships SIMD versions of these in libmvec (linked through libm.so), but declares
 * them only under -ffast-math.  Declaring them `simd` here lets gcc vectorise the loops below
 * (8 lanes with AVX2).  `const` tells gcc that errno is of no interest here (expf and logf
 * may set it, which would otherwise block vectorisation); the vector variants never set it and
 * are accurate to a few ulp. */
#if defined(__x86_64__) && defined(__GLIBC__) && !defined(__FAST_MATH__) && \
    (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 35))
__attribute__((simd("notinbranch"), const)) float erfcf(float);
__attribute__((simd("notinbranch"), const)) float expf(float);
__attribute__((simd("notinbranch"), const)) float logf(float);
__attribute__((simd("notinbranch"), const)) float tanhf(float);
#endif

#define PAR_MIN ((size_t)32768)
/* elementwise loops run over fixed blocks, so which elements take a vector body and which a
 * scalar tail does not depend on the thread count (vector and scalar libm may differ by an ulp) */
#define UNARY_BLOCK ((size_t)4096)
/* dropout draws its mask in chunks of this many elements, each from its own Philox stream, so
 * the mask is the same for any thread count */
#define DROPOUT_CHUNK ((size_t)4096)

static Tensor *unary_out(Ctx *c, Tensor **x) {
    *x = op_contiguous(c, *x);
    return tensor_new(c, (*x)->ndim, (*x)->shape);
}

/* Defines op_NAME (y = FWD(x)) and NAME_backward (gx += g * DERIV), where FWD sees `v` = x[i]
 * and DERIV sees v = x[i], y = out[i]. */
#define UNARY_OP(NAME, FWD, DERIV)                                                                 \
    static void NAME##_backward(Ctx *c, Node *n) {                                                 \
        Tensor *x = n->in[0];                                                                      \
        if (!x->requires_grad) return;                                                             \
        float *gx = tensor_grad(c, x);                                                             \
        const float *xs = x->data, *ys = n->out->data, *g = n->out->grad;                          \
        size_t len = x->numel, nblk = (len + UNARY_BLOCK - 1) / UNARY_BLOCK;                       \
        _Pragma("omp parallel for schedule(static) if (len >= PAR_MIN)")                           \
        for (size_t b = 0; b < nblk; b++) {                                                        \
            size_t end = (b + 1) * UNARY_BLOCK < len ? (b + 1) * UNARY_BLOCK : len;                \
            for (size_t i = b * UNARY_BLOCK; i < end; i++) {                                       \
                const float v = xs[i], y = ys[i];                                                  \
                (void)v;                                                                           \
                (void)y;                                                                           \
                gx[i] += g[i] * (DERIV);                                                           \
            }                                                                                      \
        }                                                                                          \
    }                                                                                              \
    Tensor *op_##NAME(Ctx *c, Tensor *x) {                                                         \
        Tensor *out = unary_out(c, &x);                                                            \
        const float *xs = x->data;                                                                 \
        float *ys = out->data;                                                                     \
        size_t len = x->numel, nblk = (len + UNARY_BLOCK - 1) / UNARY_BLOCK;                       \
        _Pragma("omp parallel for schedule(static) if (len >= PAR_MIN)")                           \
        for (size_t b = 0; b < nblk; b++) {                                                        \
            size_t end = (b + 1) * UNARY_BLOCK < len ? (b + 1) * UNARY_BLOCK : len;                \
            for (size_t i = b * UNARY_BLOCK; i < end; i++) {                                       \
                const float v = xs[i];                                                             \
                ys[i] = (FWD);                                                                     \
            }                                                                                      \
        }                                                                                          \
        op_record(c, #NAME, NAME##_backward, out, &x, 1);                                          \
        return out;                                                                                \
    }

static inline float sigmoidf(float v) { return 1.0f / (1.0f + expf(-v)); }

/* gelu(x) = x Phi(x), Phi(x) = 0.5 (1 + erf(x / sqrt 2)) = 0.5 erfc(-x / sqrt 2);
 * gelu'(x) = Phi(x) + x phi(x).  The erfc form keeps full relative accuracy in the negative tail,
 * where 1 + erf(x) cancels (at x = -5 the erf form is off by ~10%). */
static inline float gelu_fwd(float v) { return 0.5f * v * erfcf(v * -0.70710678118654752f); }
static inline float gelu_grad(float v) {
    return 0.5f * erfcf(v * -0.70710678118654752f) + v * 0.39894228040143268f * expf(-0.5f * v * v);
}

/* silu(x) = x sigmoid(x);  silu'(x) = s (1 + x (1 - s)) */
static inline float silu_grad(float v) {
    float s = sigmoidf(v);
    return s * (1.0f + v * (1.0f - s));
}

UNARY_OP(gelu, gelu_fwd(v), gelu_grad(v))
UNARY_OP(silu, v * sigmoidf(v), silu_grad(v))
UNARY_OP(sigmoid, sigmoidf(v), y * (1.0f - y))
/* `v < 0 ? 0 : v` keeps NaN (a NaN guard must see it); the gradient at 0 is 0, as in PyTorch */
UNARY_OP(relu, v < 0.0f ? 0.0f : v, y > 0.0f ? 1.0f : 0.0f)
UNARY_OP(tanh, tanhf(v), 1.0f - y * y)
UNARY_OP(exp, expf(v), y)
UNARY_OP(log, logf(v), 1.0f / v)
UNARY_OP(sqrt, sqrtf(v), 0.5f / y)

/* ------------------------------------------------------------------------------------------ */
/* dropout: the mask is drawn once in forward and kept for backward, never re-drawn */

static void dropout_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0];
    if (!x->requires_grad) return;
    float *gx = tensor_grad(c, x);
    const float *g = n->out->grad;
    const uint8_t *mask = n->saved;  // (numel) 1 = kept
    float scale = n->f[0];
    size_t len = x->numel;
#pragma omp parallel for schedule(static) if (len >= PAR_MIN)
    for (size_t i = 0; i < len; i++) gx[i] += mask[i] ? g[i] * scale : 0.0f;
}

Tensor *op_dropout(Ctx *c, Tensor *x, float p) {
    if (!(p >= 0.0f && p <= 1.0f)) ctx_fail(c, "op_dropout: p = %g is not in [0, 1]", p);
    if (!c->training || p == 0.0f) return x;
    Tensor *out = unary_out(c, &x);
    size_t len = x->numel;
    uint8_t *mask = arena_alloc(&c->step, len ? len : 1);  // (numel) 1 = kept
    const float keep = 1.0f - p;
    const float scale = p < 1.0f ? 1.0f / keep : 0.0f;  /* p = 1 drops everything, as PyTorch */
    /* Two words from the context stream seed this call; chunk k of the mask comes from the k-th
     * fork of that seed.  c->rng advances by the same amount whatever the tensor size. */
    uint64_t hi = rng_u32(&c->rng);
    uint64_t lo = rng_u32(&c->rng);
    Rng base;
    rng_init(&base, hi << 32 | lo);
    size_t nchunk = (len + DROPOUT_CHUNK - 1) / DROPOUT_CHUNK;
    const float *xs = x->data;
    float *ys = out->data;
#pragma omp parallel for schedule(static) if (len >= PAR_MIN)
    for (size_t k = 0; k < nchunk; k++) {
        Rng r = rng_fork(&base, k);
        size_t end = (k + 1) * DROPOUT_CHUNK < len ? (k + 1) * DROPOUT_CHUNK : len;
        for (size_t i = k * DROPOUT_CHUNK; i < end; i++) {
            mask[i] = rng_uniform(&r) < keep;
            ys[i] = mask[i] ? xs[i] * scale : 0.0f;
        }
    }
    Node *n = op_record(c, "dropout", dropout_backward, out, &x, 1);
    if (n) {
        n->saved = mask;
        n->f[0] = scale;
    }
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* drop-path (stochastic depth): one keep/drop draw per sample along dim 0 */

static void drop_path_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0];
    if (!x->requires_grad) return;
    float *gx = tensor_grad(c, x);
    const float *g = n->out->grad;
    const float *factor = n->saved;  // (N) 0 or 1/(1-p)
    size_t N = x->shape[0], per = N ? x->numel / N : 0;
#pragma omp parallel for schedule(static) if (x->numel >= PAR_MIN)
    for (size_t s = 0; s < N; s++)
        for (size_t i = 0; i < per; i++) gx[s * per + i] += g[s * per + i] * factor[s];
}

Tensor *op_drop_path(Ctx *c, Tensor *x, float p) {
    if (!(p >= 0.0f && p <= 1.0f)) ctx_fail(c, "op_drop_path: p = %g is not in [0, 1]", p);
    if (x->ndim < 1) ctx_fail(c, "op_drop_path: input has no sample dim");
    if (!c->training || p == 0.0f) return x;
    Tensor *out = unary_out(c, &x);
    size_t N = x->shape[0], per = N ? x->numel / N : 0;
    const float keep = 1.0f - p;
    float *factor = arena_alloc(&c->step, (N ? N : 1) * sizeof(float));  // (N)
    for (size_t s = 0; s < N; s++) factor[s] = rng_uniform(&c->rng) < keep ? 1.0f / keep : 0.0f;
    const float *xs = x->data;
    float *ys = out->data;
#pragma omp parallel for schedule(static) if (x->numel >= PAR_MIN)
    for (size_t s = 0; s < N; s++)
        for (size_t i = 0; i < per; i++) ys[s * per + i] = xs[s * per + i] * factor[s];
    Node *n = op_record(c, "drop_path", drop_path_backward, out, &x, 1);
    if (n) n->saved = factor;
    return out;
}
