/* loss.c — losses as fused forward/backward kernels.  Each returns a (1) tensor recorded on the
 * tape; its backward scales the analytic gradient by the upstream d(loss).
 *
 * Class-wise losses treat the last dim as classes and every leading dim as rows, so (N, K) and
 * (B, T, K) both work.  Strided inputs are made contiguous first (op_contiguous records its own
 * node).  Sums are accumulated in double in a fixed order (per row, or per fixed-size chunk),
 * so a loss is bit-identical for any thread count. */
#include "engine.h"
#include <math.h>
#include <string.h>

#define LOSS_OMP_MIN 16384
#define LOSS_CHUNK 4096  /* elements per partial sum of the elementwise losses */

static const char *shp(const Tensor *t, char *buf) {
    return tensor_shape_str(t, buf, 64);
}

static void check_same_shape(Ctx *c, const char *op, const Tensor *a, const Tensor *b) {
    int same = a->ndim == b->ndim;
    for (int d = 0; same && d < a->ndim; d++) same = a->shape[d] == b->shape[d];
    if (!same) {
        char ba[64], bb[64];
        ctx_fail(c, "%s: shapes %s and %s differ", op, shp(a, ba), shp(b, bb));
    }
}

static Tensor *loss_scalar(Ctx *c, double value) {
    Tensor *out = tensor_new_(c, 1);
    out->data[0] = (float)value;
    return out;
}

/* sum of per-row (or per-chunk) partials in index order */
static double sum_ordered(const double *part, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += part[i];
    return s;
}

/* Deterministic parallel sum over [0, n): fixed chunks (independent of the thread count), each
 * summed by `fn` in double, the partials added in order. */
typedef double (*ChunkSumFn)(const void *args, size_t lo, size_t hi);
static double chunked_sum(Ctx *c, size_t n, ChunkSumFn fn, const void *args) {
    size_t nchunk = (n + LOSS_CHUNK - 1) / LOSS_CHUNK;
    if (nchunk == 0) return 0.0;
    double *part = arena_alloc(&c->step, nchunk * sizeof(double));  // (nchunk)
#pragma omp parallel for schedule(static) if (n >= LOSS_OMP_MIN)
    for (size_t k = 0; k < nchunk; k++) {
        size_t lo = k * LOSS_CHUNK, hi = lo + LOSS_CHUNK < n ? lo + LOSS_CHUNK : n;
        part[k] = fn(args, lo, hi);
    }
    return sum_ordered(part, nchunk);
}

static Tensor *class_rows(Ctx *c, Tensor *x, const char *op, size_t *N, size_t *K) {
    char b[64];
    if (x->ndim < 2) ctx_fail(c, "%s: logits %s must be (N, K) or (..., K)", op, shp(x, b));
    x = op_contiguous(c, x);
    *K = x->shape[x->ndim - 1];
    if (*K == 0) ctx_fail(c, "%s: logits %s have no classes", op, shp(x, b));
    *N = x->numel / *K;
    return x;
}

/* ---------------------------------------------------------------------------------------- */
/* cross entropy with hard targets and label smoothing (torch F.cross_entropy):
 *   loss_i = lse_i - (1-ls) x_{i,t_i} - ls * mean_k x_{i,k}     (lse = log sum exp x_i)
 *   mean over rows with t_i >= 0;  d loss / d x_ik = (p_ik - (1-ls)[k == t_i] - ls/K) / n_kept */

typedef struct CrossEntropySaved {
    float *probs;       // (N, K) softmax, only when a gradient is needed
    int32_t *target;    // (N) copied: the caller may reuse its buffer before backward
    size_t n_kept;
} CrossEntropySaved;

static void cross_entropy_backward_node(Ctx *c, Node *n) {
    Tensor *x = n->in[0];
    if (!x->requires_grad) return;
    CrossEntropySaved *sv = n->saved;
    float *dx = tensor_grad(c, x);  // (N, K)
    if (sv->n_kept == 0) return;  // every row ignored: the gradient stays zero
    size_t N = (size_t)n->i[0], K = (size_t)n->i[1];
    float ls = n->f[0];
    float scale = n->out->grad[0] / (float)sv->n_kept;
    float off = ls / (float)K, on = 1.0f - ls;
#pragma omp parallel for schedule(static) if (N * K >= LOSS_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        int32_t t = sv->target[i];
        if (t < 0) continue;
        const float *p = sv->probs + i * K;
        float *d = dx + i * K;
        for (size_t k = 0; k < K; k++) d[k] += scale * (p[k] - off);
        d[t] -= scale * on;
    }
}

Tensor *loss_cross_entropy(Ctx *c, Tensor *logits, const int32_t *target, float label_smoothing) {
    size_t N, K;
    Tensor *x = class_rows(c, logits, "loss_cross_entropy", &N, &K);
    char b[64];
    for (size_t i = 0; i < N; i++)
        if (target[i] >= (int32_t)K)
            ctx_fail(c, "loss_cross_entropy: target[%zu] = %d out of range for logits %s", i, (int)target[i],
                     shp(x, b));
    int need_grad = op_needs_grad(c, &x, 1);
    CrossEntropySaved *sv = arena_alloc(&c->step, sizeof(CrossEntropySaved));
    sv->probs = need_grad ? arena_alloc(&c->step, N * K * sizeof(float)) : NULL;
    sv->target = arena_alloc(&c->step, N * sizeof(int32_t));
    memcpy(sv->target, target, N * sizeof(int32_t));
    double *row_loss = arena_alloc(&c->step, N * sizeof(double));  // (N), 0 for ignored rows
    float ls = label_smoothing;
#pragma omp parallel for schedule(static) if (N * K >= LOSS_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        row_loss[i] = 0.0;
        int32_t t = target[i];
        if (t < 0) continue;
        const float *xi = x->data + i * K;
        float maxv = -INFINITY;
        for (size_t k = 0; k < K; k++) maxv = fmaxf(maxv, xi[k]);
        double sum = 0.0, sum_x = 0.0;
        float *p = sv->probs ? sv->probs + i * K : NULL;
        for (size_t k = 0; k < K; k++) {
            float e = expf(xi[k] - maxv);
            if (p) p[k] = e;
            sum += e;
            sum_x += xi[k];
        }
        if (p) {
            float inv = (float)(1.0 / sum);
            for (size_t k = 0; k < K; k++) p[k] *= inv;
        }
        double lse = maxv + log(sum);
        row_loss[i] = lse - (1.0 - ls) * xi[t] - ls * sum_x / (double)K;
    }
    size_t n_kept = 0;
    for (size_t i = 0; i < N; i++) n_kept += target[i] >= 0;
    sv->n_kept = n_kept;
    /* PyTorch gives NaN when every row is ignored; a batch without labels should not poison the
     * step, so it is 0 with a zero gradient */
    Tensor *out = loss_scalar(c, n_kept ? sum_ordered(row_loss, N) / (double)n_kept : 0.0);
    Node *n = op_record(c, "cross_entropy", cross_entropy_backward_node, out, &x, 1);
    if (n) {
        n->saved = sv;
        n->i[0] = (long)N;
        n->i[1] = (long)K;
        n->f[0] = ls;
    }
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* cross entropy with soft targets: mean over rows of sum_k -q_k log_softmax(x)_k
 *   d/dx = (softmax(x) * sum_k q_k - q) / N,   d/dq = -log_softmax(x) / N */

typedef struct SoftCrossEntropySaved {
    float *logp;     // (N, K) log_softmax(x)
    double *q_sum;   // (N) sum_k q_k (1 for a distribution; not assumed)
} SoftCrossEntropySaved;

static void cross_entropy_soft_backward_node(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *q = n->in[1];
    SoftCrossEntropySaved *sv = n->saved;
    size_t N = (size_t)n->i[0], K = (size_t)n->i[1];
    float scale = n->out->grad[0] / (float)N;
    float *dx = x->requires_grad ? tensor_grad(c, x) : NULL;  // (N, K)
    float *dq = q->requires_grad ? tensor_grad(c, q) : NULL;  // (N, K)
#pragma omp parallel for schedule(static) if (N * K >= LOSS_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *lp = sv->logp + i * K, *qi = q->data + i * K;
        if (dx) {
            float qs = (float)sv->q_sum[i];
            float *d = dx + i * K;
            for (size_t k = 0; k < K; k++) d[k] += scale * (expf(lp[k]) * qs - qi[k]);
        }
        if (dq) {
            float *d = dq + i * K;
            for (size_t k = 0; k < K; k++) d[k] -= scale * lp[k];
        }
    }
}

Tensor *loss_cross_entropy_soft(Ctx *c, Tensor *logits, Tensor *target_probs) {
    size_t N, K;
    Tensor *x = class_rows(c, logits, "loss_cross_entropy_soft", &N, &K);
    check_same_shape(c, "loss_cross_entropy_soft", x, target_probs);
    Tensor *q = op_contiguous(c, target_probs);
    SoftCrossEntropySaved *sv = arena_alloc(&c->step, sizeof(SoftCrossEntropySaved));
    sv->logp = arena_alloc(&c->step, N * K * sizeof(float));
    sv->q_sum = arena_alloc(&c->step, N * sizeof(double));
    double *row_loss = arena_alloc(&c->step, N * sizeof(double));  // (N)
#pragma omp parallel for schedule(static) if (N * K >= LOSS_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *xi = x->data + i * K, *qi = q->data + i * K;
        float *lp = sv->logp + i * K;
        float maxv = -INFINITY;
        for (size_t k = 0; k < K; k++) maxv = fmaxf(maxv, xi[k]);
        double sum = 0.0;
        for (size_t k = 0; k < K; k++) sum += expf(xi[k] - maxv);
        float shift = maxv + (float)log(sum);
        double l = 0.0, qs = 0.0;
        for (size_t k = 0; k < K; k++) {
            lp[k] = xi[k] - shift;
            l -= (double)qi[k] * lp[k];
            qs += qi[k];
        }
        row_loss[i] = l;
        sv->q_sum[i] = qs;
    }
    Tensor *out = loss_scalar(c, sum_ordered(row_loss, N) / (double)N);
    Tensor *in[2] = {x, q};
    Node *n = op_record(c, "cross_entropy_soft", cross_entropy_soft_backward_node, out, in, 2);
    if (n) {
        n->saved = sv;
        n->i[0] = (long)N;
        n->i[1] = (long)K;
    }
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* binary cross entropy with logits, stable form (torch binary_cross_entropy_with_logits):
 *   l = w * (max(x, 0) - x t + log(1 + exp(-|x|))),  mean over elements
 *   d/dx = w (sigmoid(x) - t) / n,   d/dt = -w x / n */

typedef struct BceArgs {
    const float *x, *t, *w;  // (n) each; w may be NULL
} BceArgs;

static double bce_chunk(const void *args, size_t lo, size_t hi) {
    const BceArgs *a = args;
    double s = 0.0;
    for (size_t i = lo; i < hi; i++) {
        float x = a->x[i];
        float l = fmaxf(x, 0.0f) - x * a->t[i] + log1pf(expf(-fabsf(x)));
        s += a->w ? (double)a->w[i] * l : (double)l;
    }
    return s;
}

static void bce_backward_node(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *t = n->in[1];
    const float *w = n->saved;  // (numel) or NULL
    size_t N = x->numel;
    float scale = n->out->grad[0] / (float)N;
    float *dx = x->requires_grad ? tensor_grad(c, x) : NULL;
    float *dt = t->requires_grad ? tensor_grad(c, t) : NULL;
#pragma omp parallel for schedule(static) if (N >= LOSS_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        float xi = x->data[i];
        float s = scale * (w ? w[i] : 1.0f);
        /* sigmoid written so exp never overflows */
        float e = expf(-fabsf(xi));
        float sig = xi >= 0 ? 1.0f / (1.0f + e) : e / (1.0f + e);
        if (dx) dx[i] += s * (sig - t->data[i]);
        if (dt) dt[i] -= s * xi;
    }
}

Tensor *loss_bce_logits(Ctx *c, Tensor *logits, Tensor *target, const float *weight) {
    check_same_shape(c, "loss_bce_logits", logits, target);
    Tensor *x = op_contiguous(c, logits), *t = op_contiguous(c, target);
    size_t N = x->numel;
    float *w = NULL;
    if (weight) {
        /* copied: the caller may reuse its buffer before backward */
        w = arena_alloc(&c->step, (N ? N : 1) * sizeof(float));
        memcpy(w, weight, N * sizeof(float));
    }
    BceArgs a = {x->data, t->data, w};
    Tensor *out = loss_scalar(c, N ? chunked_sum(c, N, bce_chunk, &a) / (double)N : 0.0);
    Tensor *in[2] = {x, t};
    Node *n = op_record(c, "bce_logits", bce_backward_node, out, in, 2);
    if (n) n->saved = w;
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* mean squared error: mean (a - b)^2;  d/da = 2 (a - b) / n = -d/db */

typedef struct PairArgs {
    const float *a, *b;  // (n) each
    float beta;
} PairArgs;

static double mse_chunk(const void *args, size_t lo, size_t hi) {
    const PairArgs *p = args;
    double s = 0.0;
    for (size_t i = lo; i < hi; i++) {
        double d = (double)p->a[i] - p->b[i];
        s += d * d;
    }
    return s;
}

static void mse_backward_node(Ctx *c, Node *n) {
    Tensor *a = n->in[0], *b = n->in[1];
    size_t N = a->numel;
    float scale = 2.0f * n->out->grad[0] / (float)N;
    float *da = a->requires_grad ? tensor_grad(c, a) : NULL;
    float *db = b->requires_grad ? tensor_grad(c, b) : NULL;
#pragma omp parallel for schedule(static) if (N >= LOSS_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        float g = scale * (a->data[i] - b->data[i]);
        if (da) da[i] += g;
        if (db) db[i] -= g;
    }
}

Tensor *loss_mse(Ctx *c, Tensor *a, Tensor *b) {
    check_same_shape(c, "loss_mse", a, b);
    a = op_contiguous(c, a);
    b = op_contiguous(c, b);
    size_t N = a->numel;
    PairArgs p = {a->data, b->data, 0.0f};
    Tensor *out = loss_scalar(c, N ? chunked_sum(c, N, mse_chunk, &p) / (double)N : 0.0);
    Tensor *in[2] = {a, b};
    op_record(c, "mse", mse_backward_node, out, in, 2);
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* smooth L1 (torch F.smooth_l1_loss): d = a - b;  0.5 d^2 / beta if |d| < beta, else
 * |d| - 0.5 beta; beta = 0 is plain L1.  Mean over elements. */

static double smooth_l1_chunk(const void *args, size_t lo, size_t hi) {
    const PairArgs *p = args;
    double s = 0.0;
    for (size_t i = lo; i < hi; i++) {
        float d = p->a[i] - p->b[i], ad = fabsf(d);
        s += ad < p->beta ? 0.5f * d * d / p->beta : ad - 0.5f * p->beta;
    }
    return s;
}

static void smooth_l1_backward_node(Ctx *c, Node *n) {
    Tensor *a = n->in[0], *b = n->in[1];
    size_t N = a->numel;
    float beta = n->f[0];
    float scale = n->out->grad[0] / (float)N;
    float *da = a->requires_grad ? tensor_grad(c, a) : NULL;
    float *db = b->requires_grad ? tensor_grad(c, b) : NULL;
#pragma omp parallel for schedule(static) if (N >= LOSS_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        float d = a->data[i] - b->data[i];
        float g = fabsf(d) < beta ? d / beta : (float)((d > 0) - (d < 0));
        g *= scale;
        if (da) da[i] += g;
        if (db) db[i] -= g;
    }
}

Tensor *loss_smooth_l1(Ctx *c, Tensor *a, Tensor *b, float beta) {
    check_same_shape(c, "loss_smooth_l1", a, b);
    if (beta < 0) ctx_fail(c, "loss_smooth_l1: beta %g must be >= 0", (double)beta);
    a = op_contiguous(c, a);
    b = op_contiguous(c, b);
    size_t N = a->numel;
    PairArgs p = {a->data, b->data, beta};
    Tensor *out = loss_scalar(c, N ? chunked_sum(c, N, smooth_l1_chunk, &p) / (double)N : 0.0);
    Tensor *in[2] = {a, b};
    Node *n = op_record(c, "smooth_l1", smooth_l1_backward_node, out, in, 2);
    if (n) n->f[0] = beta;
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* KL divergence from log-probabilities (torch kl_div(log_p, log_q, 'batchmean', log_target=True)):
 *   L = sum q (log q - log p) / N,  N = shape[0]
 *   d/dlog_p = -q / N,   d/dlog_q = q (log q - log p + 1) / N
 * Terms with q = 0 (log q = -inf) contribute 0, the limit, where PyTorch would give NaN. */

static double kl_chunk(const void *args, size_t lo, size_t hi) {
    const PairArgs *p = args;  // a = log_p, b = log_q
    double s = 0.0;
    for (size_t i = lo; i < hi; i++) {
        float q = expf(p->b[i]);
        if (q > 0.0f) s += (double)q * ((double)p->b[i] - p->a[i]);
    }
    return s;
}

static void kl_div_backward_node(Ctx *c, Node *n) {
    Tensor *lp = n->in[0], *lq = n->in[1];
    size_t numel = lp->numel;
    float scale = n->out->grad[0] / (float)n->i[0];
    float *dp = lp->requires_grad ? tensor_grad(c, lp) : NULL;
    float *dq = lq->requires_grad ? tensor_grad(c, lq) : NULL;
#pragma omp parallel for schedule(static) if (numel >= LOSS_OMP_MIN)
    for (size_t i = 0; i < numel; i++) {
        float q = expf(lq->data[i]);
        if (!(q > 0.0f)) continue;
        if (dp) dp[i] -= scale * q;
        if (dq) dq[i] += scale * q * (lq->data[i] - lp->data[i] + 1.0f);
    }
}

Tensor *loss_kl_div(Ctx *c, Tensor *log_p, Tensor *log_q) {
    check_same_shape(c, "loss_kl_div", log_p, log_q);
    char b[64];
    if (log_p->ndim < 1 || log_p->shape[0] == 0)
        ctx_fail(c, "loss_kl_div: input %s has no rows", shp(log_p, b));
    Tensor *lp = op_contiguous(c, log_p), *lq = op_contiguous(c, log_q);
    size_t N = lp->shape[0];
    PairArgs p = {lp->data, lq->data, 0.0f};
    Tensor *out = loss_scalar(c, chunked_sum(c, lp->numel, kl_chunk, &p) / (double)N);
    Tensor *in[2] = {lp, lq};
    Node *n = op_record(c, "kl_div", kl_div_backward_node, out, in, 2);
    if (n) n->i[0] = (long)N;
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* soft Dice over samples: probs and target (N, ...), per sample with I = sum p t, U = sum p + sum t
 *   dice = (2 I + s) / (U + s),  L = 1 - mean_n dice
 *   d/dp_j = -(2 t_j (U + s) - (2 I + s)) / ((U + s)^2 N), and symmetrically for t */

typedef struct DiceSaved {
    double *inter;  // (N) sum p t
    double *total;  // (N) sum p + sum t
} DiceSaved;

static void soft_dice_backward_node(Ctx *c, Node *n) {
    Tensor *p = n->in[0], *t = n->in[1];
    DiceSaved *sv = n->saved;
    size_t N = (size_t)n->i[0], S = (size_t)n->i[1];
    float smooth = n->f[0];
    float *dp = p->requires_grad ? tensor_grad(c, p) : NULL;
    float *dt = t->requires_grad ? tensor_grad(c, t) : NULL;
    double g = -(double)n->out->grad[0] / (double)N;
#pragma omp parallel for schedule(static) if (N * S >= LOSS_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        double den = sv->total[i] + smooth, num = 2.0 * sv->inter[i] + smooth;
        float a = (float)(g * 2.0 / den), b = (float)(g * num / (den * den));
        const float *pi = p->data + i * S, *ti = t->data + i * S;
        if (dp) {
            float *d = dp + i * S;
            for (size_t k = 0; k < S; k++) d[k] += a * ti[k] - b;
        }
        if (dt) {
            float *d = dt + i * S;
            for (size_t k = 0; k < S; k++) d[k] += a * pi[k] - b;
        }
    }
}

Tensor *loss_soft_dice(Ctx *c, Tensor *probs, Tensor *target, float smooth) {
    check_same_shape(c, "loss_soft_dice", probs, target);
    char b[64];
    if (probs->ndim < 1 || probs->shape[0] == 0)
        ctx_fail(c, "loss_soft_dice: input %s has no samples", shp(probs, b));
    Tensor *p = op_contiguous(c, probs), *t = op_contiguous(c, target);
    size_t N = p->shape[0], S = p->numel / N;
    DiceSaved *sv = arena_alloc(&c->step, sizeof(DiceSaved));
    sv->inter = arena_alloc(&c->step, N * sizeof(double));
    sv->total = arena_alloc(&c->step, N * sizeof(double));
    double *dice = arena_alloc(&c->step, N * sizeof(double));  // (N)
#pragma omp parallel for schedule(static) if (N * S >= LOSS_OMP_MIN)
    for (size_t i = 0; i < N; i++) {
        const float *pi = p->data + i * S, *ti = t->data + i * S;
        double inter = 0.0, total = 0.0;
        for (size_t k = 0; k < S; k++) {
            inter += (double)pi[k] * ti[k];
            total += (double)pi[k] + ti[k];
        }
        sv->inter[i] = inter;
        sv->total[i] = total;
        dice[i] = (2.0 * inter + smooth) / (total + smooth);
    }
    Tensor *out = loss_scalar(c, 1.0 - sum_ordered(dice, N) / (double)N);
    Tensor *in[2] = {p, t};
    Node *n = op_record(c, "soft_dice", soft_dice_backward_node, out, in, 2);
    if (n) {
        n->saved = sv;
        n->i[0] = (long)N;
        n->i[1] = (long)S;
        n->f[0] = smooth;
    }
    return out;
}
