/* losses.c — DINO, iBOT and KoLeo losses with fused backward kernels, and the teacher targets
 * (softmax centering, Sinkhorn-Knopp).  Formulas and normalisations follow DINOv2's
 * dino_clstoken_loss.py, ibot_patch_loss.py and koleo_loss.py. */
#include "ssl/ssl.h"
#include "engine/simd.h"
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* teacher targets */

/* row-wise softmax of (x - shift) * scale, in place on out; returns nothing */
static void softmax_row(const float *x, const float *shift, size_t K, float scale, float *out) {
    if (shift) for (size_t k = 0; k < K; k++) out[k] = (x[k] - shift[k]) * scale;
    else for (size_t k = 0; k < K; k++) out[k] = x[k] * scale;
    float mx = simd_max(out, K);
    double sum = simd_exp_sum(out, out, K, 1.0f, mx);
    float inv = (float)(1.0 / sum);
    for (size_t k = 0; k < K; k++) out[k] *= inv;
}

void dino_softmax_center(const float *t, const float *center, size_t N, size_t K, float temp, float *out) {
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) softmax_row(t + n * K, center, K, 1.0f / temp, out + n * K);
}

void dino_batch_sum(const float *t, size_t N, size_t K, double *sum) {
    /* columns split across threads; each column summed over rows in order: deterministic */
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < K; k++) {
        double s = 0;
        for (size_t n = 0; n < N; n++) s += t[n * K + k];
        sum[k] = s;
    }
}

void dino_center_apply(float *center, const double *sum, size_t K, double n_total, float momentum) {
    for (size_t k = 0; k < K; k++)
        center[k] = (float)(center[k] * (double)momentum + sum[k] / n_total * (1.0 - (double)momentum));
}

/* Sinkhorn-Knopp in double: exp(t / 0.04) overflows float32 once logits exceed ~3.5, and a
 * max-shift would have to be agreed across ranks; double has the range and keeps it simple. */
void sinkhorn_knopp(Ctx *c, const float *t, size_t N, size_t K, float temp, int iters, double n_total, float *out) {
    double *Q = malloc(N * K * sizeof(double));
    double *col = malloc(K * sizeof(double));    /* per-prototype sums */
    float *colf = malloc((K + 1) * sizeof(float));
    if (!Q || !col || !colf) ctx_fail(c, "sinkhorn_knopp: out of memory for %zu x %zu", N, K);
    double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
    for (size_t i = 0; i < N * K; i++) {
        Q[i] = exp((double)t[i] / temp);
        total += Q[i];
    }
    /* reductions over ranks go through float buffers (the collective API is float) */
    if (c->world > 1) {
        colf[0] = (float)total;
        dist_allreduce_sum(c, colf, 1);
        total = colf[0];
    }
    for (size_t i = 0; i < N * K; i++) Q[i] /= total;
    for (int it = 0; it < iters; it++) {
        for (size_t k = 0; k < K; k++) col[k] = 0;
        for (size_t n = 0; n < N; n++)
            for (size_t k = 0; k < K; k++) col[k] += Q[n * K + k];
        if (c->world > 1) {
            for (size_t k = 0; k < K; k++) colf[k] = (float)col[k];
            dist_allreduce_sum(c, colf, K);
            for (size_t k = 0; k < K; k++) col[k] = colf[k];
        }
#pragma omp parallel for schedule(static)
        for (size_t n = 0; n < N; n++) {
            double *q = Q + n * K, row = 0;
            for (size_t k = 0; k < K; k++) {
                q[k] = q[k] / col[k] / (double)K;
                row += q[k];
            }
            for (size_t k = 0; k < K; k++) q[k] = q[k] / row / n_total;
        }
    }
    for (size_t i = 0; i < N * K; i++) out[i] = (float)(Q[i] * n_total);
    free(Q);
    free(col);
    free(colf);
}

/* ------------------------------------------------------------------------------------------ */
/* collapse monitors */

void prob_entropy(Ctx *c, const float *p, size_t N, size_t K, double *row, double *marginal) {
    double *mean = arena_alloc(&c->step, (K ? K : 1) * sizeof(double));   /* (K) */
    double *hrow = arena_alloc(&c->step, (N ? N : 1) * sizeof(double));   /* (N) */
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        double h = 0;
        for (size_t k = 0; k < K; k++) {
            double q = p[n * K + k];
            if (q > 0) h -= q * log(q);
        }
        hrow[n] = h;
    }
    double hsum = 0;
    for (size_t n = 0; n < N; n++) hsum += hrow[n];
    *row = N ? hsum / (double)N : 0.0;
#pragma omp parallel for schedule(static)
    for (size_t k = 0; k < K; k++) {
        double m = 0;
        for (size_t n = 0; n < N; n++) m += p[n * K + k];
        mean[k] = N ? m / (double)N : 0.0;
    }
    double hm = 0;
    for (size_t k = 0; k < K; k++)
        if (mean[k] > 0) hm -= mean[k] * log(mean[k]);
    *marginal = hm;
}

double softmax_entropy(Ctx *c, const float *s, size_t N, size_t K, float temp) {
    double *hrow = arena_alloc(&c->step, (N ? N : 1) * sizeof(double));   /* (N) */
    const double inv = 1.0 / temp;
#pragma omp parallel for schedule(static)
    for (size_t n = 0; n < N; n++) {
        /* H = lse(z) - sum_k p_k z_k with z = s / temp, in double */
        const float *x = s + n * K;
        double mx = -INFINITY;
        for (size_t k = 0; k < K; k++) mx = fmax(mx, x[k] * inv);
        double z = 0, ez = 0;
        for (size_t k = 0; k < K; k++) {
            double zk = x[k] * inv - mx, e = exp(zk);
            z += e;
            ez += e * zk;
        }
        hrow[n] = log(z) - ez / z;
    }
    double h = 0;
    for (size_t n = 0; n < N; n++) h += hrow[n];
    return N ? h / (double)N : 0.0;
}

/* ------------------------------------------------------------------------------------------ */
/* cross-entropy against soft targets, shared by DINO and iBOT */

typedef struct SoftCE {
    float *p;      /* (R, K) softmax(s / temp) of each student row */
    const float *t;/* teacher probabilities (caller's buffer, copied) */
    float temp;
} SoftCE;

/* log_softmax(s_row / temp) into lsm; returns nothing */
static void log_softmax_row(const float *s, size_t K, float inv_temp, float *lsm) {
    for (size_t k = 0; k < K; k++) lsm[k] = s[k] * inv_temp;
    float mx = simd_max(lsm, K);
    double sum = simd_exp_sum(NULL, lsm, K, 1.0f, mx);
    float lse = mx + (float)log(sum);
    for (size_t k = 0; k < K; k++) lsm[k] -= lse;
}

static void check_2d(Ctx *c, const char *op, Tensor *s) {
    char b[64];
    if (s->ndim != 2) ctx_fail(c, "%s: student logits must be (rows, K), got %s", op, tensor_shape_str(s, b, sizeof b));
}

/* ---- DINO ---- */

static void dino_loss_backward(Ctx *c, Node *n) {
    Tensor *s = n->in[0];
    if (!s->requires_grad) return;
    const SoftCE *sv = n->saved;
    const int S = (int)n->i[0], T = (int)n->i[1];
    const size_t K = s->shape[1], B = s->shape[0] / (size_t)S;
    const double n_terms = (double)n->i[2];
    const float g = n->out->grad[0];
    float *gs = tensor_grad(c, s);
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < (size_t)S * B; r++) {
        const int v = (int)(r / B);
        const size_t b = r % B;
        const float *p = sv->p + r * K;
        float *gr = gs + r * K;
        /* d/ds of -sum_g sum_k t_gk log p_k = (1/temp) (sum_g (sum_k t_gk) p - sum_g t_g) */
        const float scale = (float)(g / (sv->temp * (double)B * n_terms));
        for (int tg = 0; tg < T; tg++) {
            if (tg == v) continue;
            const float *t = sv->t + ((size_t)tg * B + b) * K;
            const float ts = (float)simd_sum_f64(t, K);
            for (size_t k = 0; k < K; k++) gr[k] += scale * (ts * p[k] - t[k]);
        }
    }
}

Tensor *dino_loss(Ctx *c, Tensor *s, const float *t, int n_student_crops, int n_teacher_crops, float student_temp) {
    check_2d(c, "dino_loss", s);
    if (!tensor_is_contiguous(s)) s = op_contiguous(c, s);
    const int S = n_student_crops, T = n_teacher_crops;
    if (S < 1 || T < 1 || T > S || s->shape[0] % (size_t)S)
        ctx_fail(c, "dino_loss: %zu student rows do not split into %d crops with %d teacher crops", s->shape[0], S, T);
    const size_t K = s->shape[1], B = s->shape[0] / (size_t)S, R = (size_t)S * B;
    SoftCE *sv = arena_alloc(&c->step, sizeof(SoftCE));
    sv->temp = student_temp;
    sv->p = arena_alloc(&c->step, R * K * sizeof(float));
    float *tcopy = arena_alloc(&c->step, (size_t)T * B * K * sizeof(float));
    memcpy(tcopy, t, (size_t)T * B * K * sizeof(float));
    sv->t = tcopy;
    double *row_loss = arena_alloc(&c->step, R * sizeof(double));
    long n_terms = 0;
    for (int v = 0; v < S; v++)
        for (int g = 0; g < T; g++) n_terms += v != g;
    if (n_terms == 0) ctx_fail(c, "dino_loss: no (student, teacher) pair of different crops");
    const float inv_temp = 1.0f / student_temp;
#pragma omp parallel for schedule(static)
    for (size_t r = 0; r < R; r++) {
        const int v = (int)(r / B);
        const size_t b = r % B;
        float *lsm = sv->p + r * K;
        log_softmax_row(s->data + r * K, K, inv_temp, lsm);
        double acc = 0;
        for (int g = 0; g < T; g++) {
            if (g == v) continue;
            const float *tg = tcopy + ((size_t)g * B + b) * K;
            acc -= simd_dot_f64(tg, lsm, K);
        }
        row_loss[r] = acc;
        simd_exp_row(lsm, lsm, K);  /* keep softmax for backward */
    }
    double total = 0;
    for (size_t r = 0; r < R; r++) total += row_loss[r];
    Tensor *out = tensor_new_(c, 1);
    out->data[0] = (float)(total / (double)B / (double)n_terms);
    Node *nd = op_record(c, "dino_loss", dino_loss_backward, out, &s, 1);
    if (nd) {
        nd->saved = sv;
        nd->i[0] = S;
        nd->i[1] = T;
        nd->i[2] = n_terms;
    }
    return out;
}

/* ---- iBOT ---- */

typedef struct IbotSaved {
    SoftCE ce;
    const float *w;
    double n_images;
} IbotSaved;

static void ibot_loss_backward(Ctx *c, Node *n) {
    Tensor *s = n->in[0];
    if (!s->requires_grad) return;
    const IbotSaved *sv = n->saved;
    const size_t M = s->shape[0], K = s->shape[1];
    const float g = n->out->grad[0];
    float *gs = tensor_grad(c, s);
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < M; i++) {
        const float *p = sv->ce.p + i * K, *t = sv->ce.t + i * K;
        const float scale = (float)(g * sv->w[i] / (sv->ce.temp * sv->n_images));
        const float ts = (float)simd_sum_f64(t, K);
        float *gr = gs + i * K;
        for (size_t k = 0; k < K; k++) gr[k] += scale * (ts * p[k] - t[k]);
    }
}

Tensor *ibot_loss(Ctx *c, Tensor *s, const float *t, const float *w, size_t n_images, float student_temp) {
    check_2d(c, "ibot_loss", s);
    if (!tensor_is_contiguous(s)) s = op_contiguous(c, s);
    const size_t M = s->shape[0], K = s->shape[1];
    IbotSaved *sv = arena_alloc(&c->step, sizeof(IbotSaved));
    sv->ce.temp = student_temp;
    sv->ce.p = arena_alloc(&c->step, (M ? M : 1) * K * sizeof(float));
    float *tcopy = arena_alloc(&c->step, (M ? M : 1) * K * sizeof(float));
    float *wcopy = arena_alloc(&c->step, (M ? M : 1) * sizeof(float));
    memcpy(tcopy, t, M * K * sizeof(float));
    memcpy(wcopy, w, M * sizeof(float));
    sv->ce.t = tcopy;
    sv->w = wcopy;
    sv->n_images = (double)(n_images ? n_images : 1);
    double *row_loss = arena_alloc(&c->step, (M ? M : 1) * sizeof(double));
    const float inv_temp = 1.0f / student_temp;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < M; i++) {
        float *lsm = sv->ce.p + i * K;
        log_softmax_row(s->data + i * K, K, inv_temp, lsm);
        const float *ti = tcopy + i * K;
        row_loss[i] = -simd_dot_f64(ti, lsm, K) * wcopy[i];
        simd_exp_row(lsm, lsm, K);
    }
    double total = 0;
    for (size_t i = 0; i < M; i++) total += row_loss[i];
    Tensor *out = tensor_new_(c, 1);
    out->data[0] = (float)(total / sv->n_images);
    Node *nd = op_record(c, "ibot_loss", ibot_loss_backward, out, &s, 1);
    if (nd) nd->saved = sv;
    return out;
}

/* ---- KoLeo ---- */

#define KOLEO_EPS 1e-8f

typedef struct KoleoSaved {
    int32_t *nn;     /* (B) nearest neighbour of each row */
    float *diff;     /* (B, D) x^_i - x^_nn(i) + eps */
    float *dist;     /* (B) ||diff_i|| */
} KoleoSaved;

static void koleo_core_backward(Ctx *c, Node *n) {
    Tensor *xn = n->in[0];
    if (!xn->requires_grad) return;
    const KoleoSaved *sv = n->saved;
    const size_t B = xn->shape[0], D = xn->shape[1];
    const float g = n->out->grad[0];
    float *gx = tensor_grad(c, xn);
    /* rows are scattered into both i and nn(i): a serial loop keeps the sum order fixed */
    for (size_t i = 0; i < B; i++) {
        const float r = sv->dist[i];
        if (r <= 0) continue;   /* torch.norm's subgradient at 0 is 0 */
        const float coef = -g / ((float)B * (r + KOLEO_EPS) * r);
        const float *d = sv->diff + i * D;
        float *gi = gx + i * D, *gj = gx + (size_t)sv->nn[i] * D;
        for (size_t k = 0; k < D; k++) {
            gi[k] += coef * d[k];
            gj[k] -= coef * d[k];
        }
    }
}

Tensor *koleo_loss(Ctx *c, Tensor *x) {
    char b[64];
    if (x->ndim != 2 || x->shape[0] < 2)
        ctx_fail(c, "koleo_loss: needs (B >= 2, D) features, got %s", tensor_shape_str(x, b, sizeof b));
    Tensor *xn = op_l2_normalize(c, x, KOLEO_EPS);   /* (B, D) */
    if (!tensor_is_contiguous(xn)) xn = op_contiguous(c, xn);
    const size_t B = xn->shape[0], D = xn->shape[1];
    KoleoSaved *sv = arena_alloc(&c->step, sizeof(KoleoSaved));
    sv->nn = arena_alloc(&c->step, B * sizeof(int32_t));
    sv->diff = arena_alloc(&c->step, B * D * sizeof(float));
    sv->dist = arena_alloc(&c->step, B * sizeof(float));
    float *dots = arena_alloc(&c->step, B * B * sizeof(float));   /* (B, B) */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)B, (int)B, (int)D, 1.0f, xn->data, (int)D, xn->data,
                (int)D, 0.0f, dots, (int)B);
    double total = 0;
    for (size_t i = 0; i < B; i++) {
        dots[i * B + i] = -1.0f;
        size_t best = 0;
        for (size_t j = 1; j < B; j++)
            if (dots[i * B + j] > dots[i * B + best]) best = j;
        sv->nn[i] = (int32_t)best;
        double r2 = 0;
        for (size_t k = 0; k < D; k++) {
            float d = xn->data[i * D + k] - xn->data[best * D + k] + KOLEO_EPS;
            sv->diff[i * D + k] = d;
            r2 += (double)d * d;
        }
        sv->dist[i] = (float)sqrt(r2);
        total += log((double)sv->dist[i] + KOLEO_EPS);
    }
    Tensor *out = tensor_new_(c, 1);
    out->data[0] = (float)(-total / (double)B);
    Node *nd = op_record(c, "koleo_loss", koleo_core_backward, out, &xn, 1);
    if (nd) nd->saved = sv;
    return out;
}
