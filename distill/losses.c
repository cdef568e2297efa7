/* losses.c — stage-2 losses with fused backward kernels: the relational KL distillation term, the
 * relation "contrastive" cross-entropy (released two-pass and label-aware targets) and direct
 * feature alignment.  Formulas follow pretraining/stage2/scr/loss.py of the official code (see
 * distill.h); every B x B matrix is small (B = the batch), so the work is two GEMMs per loss.
 * Sums are accumulated in double in a fixed order, so a loss does not depend on the thread count. */
#include "distill/distill.h"
#include <cblas.h>
#include <math.h>
#include <string.h>

#define NORM_EPS 1e-12f   /* F.normalize */

static void check_rows(Ctx *c, const char *op, const char *what, Tensor *x) {
    char b[64];
    if (x->ndim != 2 || x->shape[0] == 0 || x->shape[1] == 0)
        ctx_fail(c, "%s: %s must be (B, D) with B, D > 0, got %s", op, what, tensor_shape_str(x, b, sizeof b));
}

void l2_normalize_rows(float *x, size_t n, size_t d) {
    for (size_t i = 0; i < n; i++) {
        float *r = x + i * d;
        double s = 0;
        for (size_t k = 0; k < d; k++) s += (double)r[k] * r[k];
        float inv = 1.0f / fmaxf((float)sqrt(s), NORM_EPS);
        for (size_t k = 0; k < d; k++) r[k] *= inv;
    }
}

/* xn = x / max(||x||, eps) row-wise; norm[i] = max(||x_i||, eps) (the divisor) */
static void normalize_rows(const float *x, size_t n, size_t d, float *xn, float *norm) {
    for (size_t i = 0; i < n; i++) {
        const float *r = x + i * d;
        double s = 0;
        for (size_t k = 0; k < d; k++) s += (double)r[k] * r[k];
        float nn = fmaxf((float)sqrt(s), NORM_EPS);
        norm[i] = nn;
        for (size_t k = 0; k < d; k++) xn[i * d + k] = r[k] / nn;
    }
}

/* G = alpha * X X^T for X (n, d) row-major; G (n, n) full (both triangles) */
static void gram(const float *x, size_t n, size_t d, float alpha, float *G) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, (int)d, alpha, x, (int)d, x, (int)d, 0.0f, G,
                (int)n);
}

/* row-wise log_softmax of G (n, n) into lsm; softmax into p when p != NULL */
static void log_softmax_rows(const float *G, size_t n, float *lsm, float *p) {
    for (size_t i = 0; i < n; i++) {
        const float *g = G + i * n;
        float mx = -INFINITY;
        for (size_t j = 0; j < n; j++) mx = fmaxf(mx, g[j]);
        double s = 0;
        for (size_t j = 0; j < n; j++) s += exp((double)(g[j] - mx));
        float lse = mx + (float)log(s);
        for (size_t j = 0; j < n; j++) {
            lsm[i * n + j] = g[j] - lse;
            if (p) p[i * n + j] = expf(lsm[i * n + j]);
        }
    }
}

/* dX += alpha * (dG + dG^T) X: the gradient of G = X X^T (scaled by alpha) w.r.t. X.
 * sym (n, n) is scratch. */
static void gram_backward(const float *dG, const float *x, size_t n, size_t d, float alpha, float *sym, float *dx) {
    for (size_t i = 0; i < n; i++)
        for (size_t j = 0; j < n; j++) sym[i * n + j] = dG[i * n + j] + dG[j * n + i];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)n, alpha, sym, (int)n, x, (int)d, 1.0f,
                dx, (int)d);
}

/* dx += (dxn - xn (xn . dxn)) / norm: backward of x / max(||x||, eps).  When the clamp is active
 * (||x|| < eps) the divisor is a constant and the projection term vanishes. */
static void normalize_backward(const float *xn, const float *norm, const float *dxn, size_t n, size_t d, const float *x,
                               float *dx) {
    for (size_t i = 0; i < n; i++) {
        const float *u = xn + i * d, *g = dxn + i * d;
        float *o = dx + i * d;
        double dot = 0, s = 0;
        for (size_t k = 0; k < d; k++) {
            dot += (double)u[k] * g[k];
            s += (double)x[i * d + k] * x[i * d + k];
        }
        float proj = sqrt(s) >= NORM_EPS ? (float)dot : 0.0f;
        for (size_t k = 0; k < d; k++) o[k] += (g[k] - u[k] * proj) / norm[i];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* relational KD: (1/B) sum_i KL(softmax(G_s)_i || softmax(G_t)_i)
 *   q = softmax(G_s), d_ij = log q_ij - log p_ij, KL_i = sum_j q_ij d_ij
 *   dL/dG_s_ij = q_ij (d_ij - KL_i) / B     (the +1 of d(q log q) is removed by the softmax) */

typedef struct RkdSaved {
    float *fn, *norm;   // (B, D) normalised student features, (B) their divisors
    float *q;           // (B, B) softmax(G_s)
    float *d;           // (B, B) log q - log p
    double *kl;         // (B) per-row KL
} RkdSaved;

static void rkd_kl_backward(Ctx *c, Node *n) {
    Tensor *f = n->in[0];
    if (!f->requires_grad) return;
    RkdSaved *sv = n->saved;
    const size_t B = f->shape[0], D = f->shape[1];
    const float scale = n->out->grad[0] / (float)B;
    float *dG = arena_alloc(&c->step, B * B * sizeof(float));    // (B, B)
    float *sym = arena_alloc(&c->step, B * B * sizeof(float));   // (B, B)
    float *dfn = arena_calloc(&c->step, B * D * sizeof(float));  // (B, D)
    for (size_t i = 0; i < B; i++)
        for (size_t j = 0; j < B; j++)
            dG[i * B + j] = scale * sv->q[i * B + j] * (sv->d[i * B + j] - (float)sv->kl[i]);
    gram_backward(dG, sv->fn, B, D, 1.0f, sym, dfn);
    normalize_backward(sv->fn, sv->norm, dfn, B, D, f->data, tensor_grad(c, f));
}

Tensor *rkd_kl_loss(Ctx *c, Tensor *f, const float *t, size_t Dt) {
    check_rows(c, "rkd_kl_loss", "student features", f);
    if (Dt == 0) ctx_fail(c, "rkd_kl_loss: teacher feature dimension is 0");
    f = op_contiguous(c, f);
    const size_t B = f->shape[0], D = f->shape[1];
    RkdSaved *sv = arena_alloc(&c->step, sizeof(RkdSaved));
    sv->fn = arena_alloc(&c->step, B * D * sizeof(float));
    sv->norm = arena_alloc(&c->step, B * sizeof(float));
    sv->q = arena_alloc(&c->step, B * B * sizeof(float));
    sv->d = arena_alloc(&c->step, B * B * sizeof(float));
    sv->kl = arena_alloc(&c->step, B * sizeof(double));
    float *tn = arena_alloc(&c->step, B * Dt * sizeof(float));   // (B, Dt)
    float *tnorm = arena_alloc(&c->step, B * sizeof(float));
    float *Gs = arena_alloc(&c->step, B * B * sizeof(float));    // (B, B)
    float *Gt = arena_alloc(&c->step, B * B * sizeof(float));
    float *lq = arena_alloc(&c->step, B * B * sizeof(float));    // log softmax(G_s)
    float *lp = arena_alloc(&c->step, B * B * sizeof(float));    // log softmax(G_t)
    normalize_rows(f->data, B, D, sv->fn, sv->norm);
    normalize_rows(t, B, Dt, tn, tnorm);
    gram(sv->fn, B, D, 1.0f, Gs);
    gram(tn, B, Dt, 1.0f, Gt);
    log_softmax_rows(Gs, B, lq, sv->q);
    log_softmax_rows(Gt, B, lp, NULL);
    double total = 0;
    for (size_t i = 0; i < B; i++) {
        double kl = 0;
        for (size_t j = 0; j < B; j++) {
            float d = lq[i * B + j] - lp[i * B + j];
            sv->d[i * B + j] = d;
            kl += (double)sv->q[i * B + j] * d;
        }
        sv->kl[i] = kl;
        total += kl;
    }
    Tensor *out = tensor_new_(c, 1);
    out->data[0] = (float)(total / (double)B);
    Node *n = op_record(c, "rkd_kl_loss", rkd_kl_backward, out, &f, 1);
    if (n) n->saved = sv;
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* relation cross-entropy: L = -(1/B) sum_ij T_ij P_ij, P = log_softmax(S), S = f f^T / tau
 *   dL/dS_ij = -(T_ij - p_ij r_i) / B,  r_i = sum_j T_ij
 * released target T = softmax(A), A = f_low f_low^T / tau, with gradient:
 *   dL/dT_ij = -P_ij / B,  dL/dA_ij = T_ij (dT_ij - sum_k T_ik dT_ik) */

typedef struct RelSaved {
    float *P;       // (B, B) log_softmax(S)
    float *p;       // (B, B) softmax(S)
    float *T;       // (B, B) target
    int has_low;
} RelSaved;

static void relation_ce_backward(Ctx *c, Node *n) {
    RelSaved *sv = n->saved;
    Tensor *f = n->in[0], *fl = sv->has_low ? n->in[1] : NULL;
    const size_t B = f->shape[0], D = f->shape[1];
    const float g = n->out->grad[0], inv_tau = n->f[0];
    float *dM = arena_alloc(&c->step, B * B * sizeof(float));    // (B, B) dS or dA
    float *sym = arena_alloc(&c->step, B * B * sizeof(float));
    if (f->requires_grad) {
        for (size_t i = 0; i < B; i++) {
            double r = 0;
            for (size_t j = 0; j < B; j++) r += sv->T[i * B + j];
            for (size_t j = 0; j < B; j++)
                dM[i * B + j] = -g * (sv->T[i * B + j] - sv->p[i * B + j] * (float)r) / (float)B;
        }
        gram_backward(dM, f->data, B, D, inv_tau, sym, tensor_grad(c, f));
    }
    if (fl && fl->requires_grad) {
        for (size_t i = 0; i < B; i++) {
            double s = 0;   // sum_k T_ik dT_ik with dT = -g P / B
            for (size_t k = 0; k < B; k++) s += (double)sv->T[i * B + k] * sv->P[i * B + k];
            for (size_t j = 0; j < B; j++)
                dM[i * B + j] = -g / (float)B * sv->T[i * B + j] * (sv->P[i * B + j] - (float)s);
        }
        gram_backward(dM, fl->data, B, fl->shape[1], inv_tau, sym, tensor_grad(c, fl));
    }
}

Tensor *relation_ce_loss(Ctx *c, Tensor *f, Tensor *f_low, const float *target, float temp) {
    char b1[64], b2[64];
    check_rows(c, "relation_ce_loss", "features", f);
    if (!f_low && !target) ctx_fail(c, "relation_ce_loss: neither f_low nor a target given");
    if (!(temp > 0)) ctx_fail(c, "relation_ce_loss: temperature %g must be > 0", (double)temp);
    f = op_contiguous(c, f);
    const size_t B = f->shape[0], D = f->shape[1];
    if (f_low) {
        check_rows(c, "relation_ce_loss", "f_low", f_low);
        if (f_low->shape[0] != B)
            ctx_fail(c, "relation_ce_loss: f %s and f_low %s have different batch sizes", tensor_shape_str(f, b1, 64),
                     tensor_shape_str(f_low, b2, 64));
        f_low = op_contiguous(c, f_low);
    }
    const float inv_tau = 1.0f / temp;
    RelSaved *sv = arena_alloc(&c->step, sizeof(RelSaved));
    sv->P = arena_alloc(&c->step, B * B * sizeof(float));
    sv->p = arena_alloc(&c->step, B * B * sizeof(float));
    sv->T = arena_alloc(&c->step, B * B * sizeof(float));
    sv->has_low = f_low != NULL;
    float *S = arena_alloc(&c->step, B * B * sizeof(float));   // (B, B) logits
    gram(f->data, B, D, inv_tau, S);
    log_softmax_rows(S, B, sv->P, sv->p);
    if (f_low) {
        gram(f_low->data, B, f_low->shape[1], inv_tau, S);
        log_softmax_rows(S, B, S, sv->T);   // S (log T) is not needed afterwards
    } else {
        memcpy(sv->T, target, B * B * sizeof(float));
    }
    double total = 0;
    for (size_t i = 0; i < B; i++) {
        double row = 0;
        for (size_t j = 0; j < B; j++) row += (double)sv->T[i * B + j] * sv->P[i * B + j];
        total += row;
    }
    Tensor *out = tensor_new_(c, 1);
    out->data[0] = (float)(-total / (double)B);
    Tensor *in[2] = {f, f_low};
    Node *n = op_record(c, "relation_ce_loss", relation_ce_backward, out, in, f_low ? 2 : 1);
    if (n) {
        n->saved = sv;
        n->f[0] = inv_tau;
    }
    return out;
}

void relation_label_targets(const float *g, size_t B, size_t Dg, const int32_t *labels, int n_sets, float temp,
                            float mix, float *T) {
    /* teacher part: softmax(g g^T / tau) */
    gram(g, B, Dg, 1.0f / temp, T);
    for (size_t i = 0; i < B; i++) {
        float *r = T + i * B, mx = -INFINITY;
        for (size_t j = 0; j < B; j++) mx = fmaxf(mx, r[j]);
        double s = 0;
        for (size_t j = 0; j < B; j++) s += exp((double)(r[j] - mx));
        for (size_t j = 0; j < B; j++) r[j] = (float)(exp((double)(r[j] - mx)) / s);
    }
    /* label part: mean over the known label sets of the row-normalised same-label matrices */
    for (size_t i = 0; i < B; i++) {
        int known = 0;
        for (int s = 0; s < n_sets; s++) known += labels[i * (size_t)n_sets + (size_t)s] >= 0;
        if (known == 0) continue;
        float *r = T + i * B;
        for (size_t j = 0; j < B; j++) r[j] *= mix;
        for (int s = 0; s < n_sets; s++) {
            int32_t yi = labels[i * (size_t)n_sets + (size_t)s];
            if (yi < 0) continue;
            size_t same = 0;
            for (size_t j = 0; j < B; j++) same += labels[j * (size_t)n_sets + (size_t)s] == yi;
            float w = (1.0f - mix) / ((float)known * (float)same);
            for (size_t j = 0; j < B; j++)
                if (labels[j * (size_t)n_sets + (size_t)s] == yi) r[j] += w;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* feature alignment: cosine  L = mean_i (1 - p^_i . t^_i),
 *   dL/dp^_i = -t^_i / B, through the normalisation;  mse  L = mean (p - t)^2 */

typedef struct AlignSaved {
    float *pn, *norm, *tn;   // cosine: (B, D) normalised p, (B) divisors, (B, D) normalised t
    const float *t;          // mse: the teacher rows (copied)
} AlignSaved;

static void feature_align_backward(Ctx *c, Node *n) {
    Tensor *p = n->in[0];
    if (!p->requires_grad) return;
    AlignSaved *sv = n->saved;
    const size_t B = p->shape[0], D = p->shape[1];
    const float g = n->out->grad[0];
    float *dp = tensor_grad(c, p);
    if (n->i[0] == ALIGN_COSINE) {
        float *dpn = arena_alloc(&c->step, B * D * sizeof(float));
        for (size_t k = 0; k < B * D; k++) dpn[k] = -g * sv->tn[k] / (float)B;
        normalize_backward(sv->pn, sv->norm, dpn, B, D, p->data, dp);
    } else {
        const float s = 2.0f * g / (float)(B * D);
        for (size_t k = 0; k < B * D; k++) dp[k] += s * (p->data[k] - sv->t[k]);
    }
}

Tensor *feature_align_loss(Ctx *c, Tensor *p, const float *t, int mode) {
    check_rows(c, "feature_align_loss", "projected features", p);
    if (mode != ALIGN_COSINE && mode != ALIGN_MSE) ctx_fail(c, "feature_align_loss: unknown mode %d", mode);
    p = op_contiguous(c, p);
    const size_t B = p->shape[0], D = p->shape[1];
    AlignSaved *sv = arena_calloc(&c->step, sizeof(AlignSaved));
    double total = 0;
    if (mode == ALIGN_COSINE) {
        sv->pn = arena_alloc(&c->step, B * D * sizeof(float));
        sv->norm = arena_alloc(&c->step, B * sizeof(float));
        sv->tn = arena_alloc(&c->step, B * D * sizeof(float));
        float *tnorm = arena_alloc(&c->step, B * sizeof(float));
        normalize_rows(p->data, B, D, sv->pn, sv->norm);
        normalize_rows(t, B, D, sv->tn, tnorm);
        for (size_t i = 0; i < B; i++) {
            double dot = 0;
            for (size_t k = 0; k < D; k++) dot += (double)sv->pn[i * D + k] * sv->tn[i * D + k];
            total += 1.0 - dot;
        }
        total /= (double)B;
    } else {
        float *tc = arena_alloc(&c->step, B * D * sizeof(float));
        memcpy(tc, t, B * D * sizeof(float));
        sv->t = tc;
        for (size_t i = 0; i < B; i++) {
            double row = 0;
            for (size_t k = 0; k < D; k++) {
                double d = (double)p->data[i * D + k] - tc[i * D + k];
                row += d * d;
            }
            total += row;
        }
        total /= (double)(B * D);
    }
    Tensor *out = tensor_new_(c, 1);
    out->data[0] = (float)total;
    Node *n = op_record(c, "feature_align_loss", feature_align_backward, out, &p, 1);
    if (n) {
        n->saved = sv;
        n->i[0] = mode;
    }
    return out;
}
