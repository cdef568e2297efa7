/* op_attention.c — fused multi-head self-attention core, the math of timm/DINOv2 `Attention`
 * between the qkv and proj linears:
 *
 *   q, k, v = qkv.reshape(B, T, 3, H, D).permute(2, 0, 3, 1, 4)
 *   out     = (softmax(q @ kᵀ * D^-0.5) @ v).transpose(1, 2).reshape(B, T, C)
 *
 * Heads are never permuted into their own buffers: head h of q is the column slice
 * [h*D, (h+1)*D) of the first C columns of qkv, a (T, D) matrix with leading dim 3C, which sgemm
 * reads in place; its output is the same slice of the (B, T, C) result with leading dim C.
 *
 * Work is split over the B*H (batch, head) pairs with a static OpenMP loop; each pair runs start to
 * finish on one thread with single-threaded sgemm, so results do not depend on the thread count.
 * With gradients the (B, H, T, T) probabilities are kept for backward; without, each thread
 * reuses one (T, T) buffer, which keeps a 1370-token (518 px) forward at a few MB per thread.
 */
#include "engine.h"
#include "simd.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* row kernels.  The exponential is the bulk of the non-GEMM work (B*H*T*T per layer): simd.h's
 * vector exp, 8 lanes at a time.  Sums keep 8 lane partials combined in a fixed order, so every
 * result is reproducible. */

#ifdef VERSA_SIMD_AVX2

/* x = softmax(x) in place, max-subtracted */
static void softmax_row(float *x, size_t n) {
    size_t j = 0;
    float mx = -INFINITY;
    if (n >= 8) {
        __m256 m = _mm256_loadu_ps(x);
        for (j = 8; j + 8 <= n; j += 8) m = _mm256_max_ps(m, _mm256_loadu_ps(x + j));
        float t[8];
        _mm256_storeu_ps(t, m);
        for (int l = 0; l < 8; l++) mx = t[l] > mx ? t[l] : mx;
    }
    for (; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    __m256 vmx = _mm256_set1_ps(mx), acc = _mm256_setzero_ps();
    for (j = 0; j + 8 <= n; j += 8) {
        __m256 e = simd_exp_nonpos8(_mm256_sub_ps(_mm256_loadu_ps(x + j), vmx));
        _mm256_storeu_ps(x + j, e);
        acc = _mm256_add_ps(acc, e);
    }
    float sum = simd_hsum8(acc);
    for (; j < n; j++) {
        x[j] = expf(x[j] - mx);
        sum += x[j];
    }
    float inv = 1.0f / sum;
    for (j = 0; j < n; j++) x[j] *= inv;
}

/* softmax backward in place: dx = p * (dx - sum(p * dx)) */
static void softmax_backward_row(const float *p, float *dx, size_t n) {
    size_t j = 0;
    __m256 acc = _mm256_setzero_ps();
    for (; j + 8 <= n; j += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(p + j), _mm256_loadu_ps(dx + j), acc);
    float dot = simd_hsum8(acc);
    for (; j < n; j++) dot += p[j] * dx[j];
    for (j = 0; j < n; j++) dx[j] = p[j] * (dx[j] - dot);
}

#else  /* portable fallback */

static void softmax_row(float *x, size_t n) {
    float mx = -INFINITY, sum = 0.0f;
    for (size_t j = 0; j < n; j++) mx = x[j] > mx ? x[j] : mx;
    for (size_t j = 0; j < n; j++) {
        x[j] = expf(x[j] - mx);
        sum += x[j];
    }
    float inv = 1.0f / sum;
    for (size_t j = 0; j < n; j++) x[j] *= inv;
}

static void softmax_backward_row(const float *p, float *dx, size_t n) {
    float dot = 0.0f;
    for (size_t j = 0; j < n; j++) dot += p[j] * dx[j];
    for (size_t j = 0; j < n; j++) dx[j] = p[j] * (dx[j] - dot);
}

#endif

/* ---------------------------------------------------------------------------------------- */

/* P (T, T) = softmax(q kᵀ * scale); out (T, D, ld C) = P v, for one (batch, head) */
static void attention_head_forward(const float *q, const float *k, const float *v, float *P, float *out, size_t T,
                                   size_t D, size_t C, float scale) {
    int ld = (int)(3 * C);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)T, (int)T, (int)D, scale, q, ld, k, ld, 0.0f, P, (int)T);
    for (size_t t = 0; t < T; t++) softmax_row(P + t * T, T);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)T, (int)D, (int)T, 1.0f, P, (int)T, v, ld, 0.0f, out,
                (int)C);
}

static void attention_backward(Ctx *c, Node *n) {
    Tensor *qkv = n->in[0];
    size_t B = qkv->shape[0], T = qkv->shape[1], C = qkv->shape[2] / 3;
    size_t H = (size_t)n->i[0], D = C / H;
    float scale = n->f[0];
    const float *att = n->saved;       // (B, H, T, T) softmax probabilities
    const float *dout = n->out->grad;  // (B, T, C)
    const float *x = qkv->data;        // (B, T, 3C)
    float *dx = tensor_grad(c, qkv);   // (B, T, 3C)
    int nt = omp_get_max_threads();
    float *scratch = ctx_scratch(c, (size_t)nt * T * T);  // (nt, T, T) dP per thread
    int ld = (int)(3 * C), iT = (int)T, iD = (int)D;
#pragma omp parallel for schedule(static) num_threads(nt)
    for (size_t bh = 0; bh < B * H; bh++) {
        size_t b = bh / H, h = bh % H;
        const float *P = att + bh * T * T;                  // (T, T)
        const float *dO = dout + b * T * C + h * D;         // (T, D), ld C
        const float *q = x + b * T * 3 * C + h * D;         // (T, D), ld 3C
        const float *k = q + C, *v = q + 2 * C;
        float *dq = dx + b * T * 3 * C + h * D;
        float *dk = dq + C, *dv = dq + 2 * C;
        float *dP = scratch + (size_t)omp_get_thread_num() * T * T;  // (T, T)
        /* dV += Pᵀ dO */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, iT, iD, iT, 1.0f, P, iT, dO, (int)C, 1.0f, dv, ld);
        /* dP = dO Vᵀ, then dS = softmax backward (in place) */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, iT, iT, iD, 1.0f, dO, (int)C, v, ld, 0.0f, dP, iT);
        for (size_t t = 0; t < T; t++) softmax_backward_row(P + t * T, dP + t * T, T);
        /* S = scale * Q Kᵀ:  dQ += scale * dS K,  dK += scale * dSᵀ Q */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, iT, iD, iT, scale, dP, iT, k, ld, 1.0f, dq, ld);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, iT, iD, iT, scale, dP, iT, q, ld, 1.0f, dk, ld);
    }
    ctx_scratch_release(c, scratch, (size_t)nt * T * T);
}

Tensor *op_attention(Ctx *c, Tensor *qkv, int n_heads) {
    char s[64];
    if (qkv->ndim != 3 || qkv->shape[2] % 3 != 0 || n_heads <= 0 || (qkv->shape[2] / 3) % (size_t)n_heads != 0)
        ctx_fail(c, "op_attention: qkv %s with %d heads: need (B, T, 3*C) with C divisible by the heads",
                 tensor_shape_str(qkv, s, sizeof s), n_heads);
    qkv = op_contiguous(c, qkv);
    size_t B = qkv->shape[0], T = qkv->shape[1], C = qkv->shape[2] / 3;
    size_t H = (size_t)n_heads, D = C / H;
    float scale = 1.0f / sqrtf((float)D);
    Tensor *out = tensor_new_(c, B, T, C);   // (B, T, C)
    if (B * T == 0 || C == 0) {
        memset(out->data, 0, out->numel * sizeof(float));
        return out;
    }
    int keep = op_needs_grad(c, &qkv, 1);
    int nt = omp_get_max_threads();
    /* grad: (B, H, T, T) probabilities for backward; no grad: (nt, T, T) scratch */
    float *P = arena_alloc(&c->step, (keep ? B * H : (size_t)nt) * T * T * sizeof(float));
    const float *x = qkv->data;   // (B, T, 3C)
#pragma omp parallel for schedule(static) num_threads(nt)
    for (size_t bh = 0; bh < B * H; bh++) {
        size_t b = bh / H, h = bh % H;
        const float *q = x + b * T * 3 * C + h * D;   // (T, D), ld 3C
        float *Pbh = P + (keep ? bh : (size_t)omp_get_thread_num()) * T * T;
        attention_head_forward(q, q + C, q + 2 * C, Pbh, out->data + b * T * C + h * D, T, D, C, scale);
    }
    Node *n = op_record(c, "attention", attention_backward, out, &qkv, 1);
    if (n) {
        n->saved = P;
        n->i[0] = n_heads;
        n->f[0] = scale;
    }
    return out;
}
