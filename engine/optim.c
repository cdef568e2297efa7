/* optim.c — optimizers over the flat parameter block, gradient clipping, schedules.
 *
 * Each update is written to reproduce torch.optim (1.13, single-tensor path) operation for
 * operation: the scalars (bias corrections, step size) are computed in double like Python does,
 * then used as float32 in the elementwise update, so trajectories agree with PyTorch to float32
 * rounding.  Updates are elementwise, hence identical for any thread count; norms are summed in
 * double over a fixed chunking, hence identical for any thread count too. */
#include "engine.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

OptimConfig optim_adamw_default(void) {
    OptimConfig c;
    memset(&c, 0, sizeof c);
    c.kind = OPTIM_ADAMW;
    c.lr = 1e-3;
    c.weight_decay = 0.01;   /* torch.optim.AdamW's default */
    c.beta1 = 0.9;
    c.beta2 = 0.999;
    c.eps = 1e-8;
    return c;
}

/* ---------------------------------------------------------------------------------------- */
/* the three update rules, each over one tensor's slice of the blocks */

/* The per-tensor scalars of an Adam step.  PyTorch computes them from Python floats (double) and
 * the elementwise kernels see them as float32; so does this. */
typedef struct AdamScalars {
    float beta1, beta2;
    float one_minus_beta1, one_minus_beta2;
    float step_size;     /* lr / (1 - beta1^t) */
    float bc2_sqrt;      /* sqrt(1 - beta2^t) */
    float eps;
    float decay;         /* AdamW: 1 - lr*wd; Adam: the L2 coefficient wd */
} AdamScalars;

/* torch.optim.AdamW: decoupled decay p *= 1 - lr*wd, then the bias-corrected Adam step. */
static void adamw_update(float *p, const float *g, float *m, float *v, size_t n, AdamScalars a) {
    #pragma omp for simd schedule(static) nowait
    for (size_t i = 0; i < n; i++) {
        float pi = p[i] * a.decay;
        m[i] = m[i] * a.beta1 + a.one_minus_beta1 * g[i];
        v[i] = v[i] * a.beta2 + a.one_minus_beta2 * (g[i] * g[i]);
        float denom = sqrtf(v[i]) / a.bc2_sqrt + a.eps;
        p[i] = pi + (-a.step_size) * (m[i] / denom);
    }
}

/* torch.optim.Adam: L2 decay is added to the gradient before the moments see it. */
static void adam_update(float *p, const float *g, float *m, float *v, size_t n, AdamScalars a) {
    #pragma omp for simd schedule(static) nowait
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] + a.decay * p[i];
        m[i] = m[i] * a.beta1 + a.one_minus_beta1 * gi;
        v[i] = v[i] * a.beta2 + a.one_minus_beta2 * (gi * gi);
        float denom = sqrtf(v[i]) / a.bc2_sqrt + a.eps;
        p[i] = p[i] + (-a.step_size) * (m[i] / denom);
    }
}

/* torch.optim.SGD with dampening 0.  PyTorch initialises the momentum buffer to the first d_p;
 * with dampening 0 that equals momentum*0 + d_p, so the zeroed moment block needs no special
 * first step (and a tensor unfrozen later starts its buffer exactly as PyTorch would). */
static void sgd_update(float *p, const float *g, float *buf, size_t n, float lr, float wd, float momentum,
                       int nesterov) {
    #pragma omp for simd schedule(static) nowait
    for (size_t i = 0; i < n; i++) {
        float d = g[i] + wd * p[i];
        if (momentum != 0.0f) {
            buf[i] = buf[i] * momentum + d;
            d = nesterov ? d + momentum * buf[i] : buf[i];
        }
        p[i] = p[i] + (-lr) * d;
    }
}

void optim_step(ParamStore *ps, const OptimConfig *cfg, long step, double lr, double wd) {
    if (!ps->allocated || !ps->grad) {
        fprintf(stderr, "versa: optim_step: the parameter store has no gradient block\n");
        exit(1);
    }
    if (step < 1) {
        fprintf(stderr, "versa: optim_step: step is 1-based, got %ld\n", step);
        exit(1);
    }
    const int kind = cfg->kind;
    if (kind != OPTIM_ADAMW && kind != OPTIM_ADAM && kind != OPTIM_SGD) {
        fprintf(stderr, "versa: optim_step: unknown optimizer kind %d\n", kind);
        exit(1);
    }
    const double bc1 = 1.0 - pow(cfg->beta1, (double)step);
    const double bc2 = 1.0 - pow(cfg->beta2, (double)step);
    #pragma omp parallel
    for (size_t k = 0; k < ps->n; k++) {
        const Param *pr = &ps->p[k];
        /* every thread takes the same branch, so all of them meet the same worksharing loops */
        if (pr->kind != PARAM_TRAINABLE || pr->frozen) continue;
        size_t n = pr->t->numel;
        float *p = ps->data + pr->offset;  // (n)
        float *g = ps->grad + pr->offset;  // (n)
        float *m = ps->m + pr->offset;     // (n) first moment / SGD momentum buffer
        float *v = ps->v + pr->offset;     // (n) second moment
        double plr = (double)lr * pr->lr_mult;   /* the param group's lr and weight decay */
        double pwd = (double)wd * pr->wd_mult;
        if (kind == OPTIM_SGD) {
            sgd_update(p, g, m, n, (float)plr, (float)pwd, (float)cfg->momentum, cfg->nesterov);
            continue;
        }
        AdamScalars a = {
            .beta1 = (float)cfg->beta1, .beta2 = (float)cfg->beta2,
            .one_minus_beta1 = (float)(1.0 - cfg->beta1), .one_minus_beta2 = (float)(1.0 - cfg->beta2),
            .step_size = (float)(plr / bc1), .bc2_sqrt = (float)sqrt(bc2), .eps = (float)cfg->eps,
            .decay = kind == OPTIM_ADAMW ? (float)(1.0 - plr * pwd) : (float)pwd,
        };
        if (kind == OPTIM_ADAMW) adamw_update(p, g, m, v, n, a);
        else if (kind == OPTIM_ADAM) adam_update(p, g, m, v, n, a);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* gradient norms and clipping */

/* Sum of squares in double over a fixed number of chunks: each chunk is summed in order by one
 * thread, chunks are combined in order, so the result is the same for any thread count. */
#define NORM_CHUNKS 64
static double sumsq(const float *x, size_t n) {
    double part[NORM_CHUNKS];
    size_t chunk = (n + NORM_CHUNKS - 1) / NORM_CHUNKS;
    #pragma omp parallel for schedule(static) if (n >= ((size_t)1 << 16))
    for (int c = 0; c < NORM_CHUNKS; c++) {
        size_t lo = (size_t)c * chunk, hi = lo + chunk < n ? lo + chunk : n;
        /* four running sums break the add latency chain; their order is fixed */
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        size_t i = lo;
        for (; i + 4 <= hi; i += 4) {
            s0 += (double)x[i] * x[i];
            s1 += (double)x[i + 1] * x[i + 1];
            s2 += (double)x[i + 2] * x[i + 2];
            s3 += (double)x[i + 3] * x[i + 3];
        }
        for (; i < hi; i++) s0 += (double)x[i] * x[i];
        part[c] = lo < hi ? (s0 + s1) + (s2 + s3) : 0.0;
    }
    double total = 0;
    for (int c = 0; c < NORM_CHUNKS; c++) total += part[c];
    return total;
}

static void scale(float *x, size_t n, float s) {
    #pragma omp parallel for schedule(static) if (n >= ((size_t)1 << 16))
    for (size_t i = 0; i < n; i++) x[i] *= s;
}

/* Frozen tensors and the alignment gaps hold zero gradients, so the whole block can be summed. */
double grad_global_norm(const ParamStore *ps) {
    if (!ps->grad) return 0.0;
    return sqrt(sumsq(ps->grad, ps->n_train));
}

/* torch.nn.utils.clip_grad_norm_: coef = max_norm / (norm + 1e-6), applied when below 1.  A NaN
 * or Inf norm is returned without touching the gradients; the caller's NaN guard decides. */
double clip_grad_norm(ParamStore *ps, double max_norm) {
    double norm = grad_global_norm(ps);
    double coef = max_norm / (norm + 1e-6);
    if (isfinite(norm) && coef < 1.0) scale(ps->grad, ps->n_train, (float)coef);
    return norm;
}

/* DINO's utils.clip_gradients: the same rule applied to each tensor's own norm. */
void clip_grad_per_param(ParamStore *ps, double max_norm) {
    if (!ps->grad) return;
    for (size_t k = 0; k < ps->n; k++) {
        const Param *pr = &ps->p[k];
        if (pr->kind != PARAM_TRAINABLE || pr->frozen) continue;
        float *g = ps->grad + pr->offset;  // (numel)
        double norm = sqrt(sumsq(g, pr->t->numel));
        double coef = max_norm / (norm + 1e-6);
        if (isfinite(norm) && coef < 1.0) scale(g, pr->t->numel, (float)coef);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* schedules: plain functions of the (0-based) step */

/* DINO's cosine_scheduler, per step: np.linspace(warmup_start, base, warmup) for the first
 * `warmup` steps (so the last warm-up step is exactly `base`), then
 * final + 0.5 (base - final)(1 + cos(pi i / (total - warmup))) for i = step - warmup, and
 * `final` from `total` on (DINOv2's CosineScheduler past the end). */
double sched_cosine(long step, long total, double base, double final, long warmup, double warmup_start) {
    if (step < 0) step = 0;
    if (step >= total) return final;
    if (step < warmup) {
        /* np.linspace: i * ((stop - start) / (num - 1)) + start, with the last element = stop */
        if (warmup == 1) return warmup_start;
        if (step == warmup - 1) return base;
        return (double)step * ((base - warmup_start) / (double)(warmup - 1)) + warmup_start;
    }
    double i = (double)(step - warmup), len = (double)(total - warmup);
    return final + 0.5 * (base - final) * (1.0 + cos(M_PI * i / len));
}

/* np.linspace(start, end, total)[step], then `end` from `total` on: DINO's teacher-temperature
 * warm-up has this shape. */
double sched_linear(long step, long total, double start, double end) {
    if (step < 0) step = 0;
    if (step >= total - 1) return step == 0 && total == 1 ? start : end;
    return (double)step * ((end - start) / (double)(total - 1)) + start;
}

double sched_constant(long step, double value) {
    (void)step;
    return value;
}
