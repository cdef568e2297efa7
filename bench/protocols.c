/* protocols.c — heads on frozen, cached features: the linear probe (CE or BCE, AdamW, validation
 * every N iterations with early stopping, as the published downstream scripts) and the k-NN probe
 * of DINO's eval_knn.  The retrieval protocol needs no training: see bench_eval_retrieval. */
#include "bench/bench.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

size_t bench_rows(const BenchData *d, int split, uint32_t *idx) {
    size_t k = 0;
    for (size_t i = 0; i < d->n; i++)
        if (d->split[i] == split) {
            if (idx) idx[k] = (uint32_t)i;
            k++;
        }
    return k;
}

void bench_l2_normalize(float *x, size_t n, size_t d) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float *r = x + i * d;
        double s = 0;
        for (size_t k = 0; k < d; k++) s += (double)r[k] * r[k];
        float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
        for (size_t k = 0; k < d; k++) r[k] *= inv;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* linear probe */

/* head outputs for rows (n): softmax or sigmoid into out (n, C) */
static void head_predict(Ctx *c, const Linear *h, const BenchData *d, const uint32_t *rows, size_t n, float *out) {
    const size_t C = (size_t)d->C, CH = 1024;
    int prev = ctx_set_grad(c, 0);
    for (size_t r0 = 0; r0 < n; r0 += CH) {
        size_t nb = n - r0 < CH ? n - r0 : CH;
        ctx_step_begin(c);
        Tensor *x = tensor_new_(c, nb, d->d);   // (nb, D)
        for (size_t j = 0; j < nb; j++) memcpy(x->data + j * d->d, d->x + (size_t)rows[r0 + j] * d->d, d->d * sizeof(float));
        Tensor *z = linear_forward(c, h, x);    // (nb, C)
        Tensor *p = d->Y ? op_sigmoid(c, z) : op_softmax(c, z);
        tensor_copy_to(p, out + r0 * C);
    }
    ctx_set_grad(c, prev);
}

/* the selection score on rows (higher is better) */
static double val_score(const BenchData *d, const uint32_t *rows, size_t n, const float *p, int select) {
    const int C = d->C;
    int32_t *y = NULL, *pred = NULL;
    uint8_t *Y = NULL;
    double s = NAN;
    if (d->Y) {
        Y = malloc(n * (size_t)C);
        for (size_t j = 0; j < n; j++) memcpy(Y + j * C, d->Y + (size_t)rows[j] * C, (size_t)C);
        if (select == BENCH_SELECT_AUC) s = metric_auc_multilabel(p, Y, C, NULL, n);
        else if (select == BENCH_SELECT_ACC) s = metric_subset_accuracy(p, Y, C, 0.5f, NULL, n);
    } else {
        y = malloc(n * sizeof(int32_t));
        pred = malloc(n * sizeof(int32_t));
        for (size_t j = 0; j < n; j++) {
            y[j] = d->y[rows[j]];
            int best = 0;
            for (int k = 1; k < C; k++)
                if (p[j * C + k] > p[j * C + best]) best = k;
            pred[j] = best;
        }
        if (select == BENCH_SELECT_AUC) s = metric_auc_ovr(p, C, y, NULL, n);
        else if (select == BENCH_SELECT_ACC) s = metric_accuracy(y, pred, NULL, n);
    }
    if (isnan(s)) {   /* loss: also the fallback when the AUC is undefined on these rows */
        double loss = 0;
        for (size_t j = 0; j < n; j++) {
            if (d->Y)
                for (int k = 0; k < C; k++) {
                    double q = fmin(fmax(p[j * C + k], 1e-7), 1 - 1e-7);
                    loss -= Y[j * C + k] ? log(q) : log(1 - q);
                }
            else
                loss -= log(fmax(p[j * C + y[j]], 1e-12));
        }
        s = -loss / (double)(n ? n : 1);
    }
    free(y);
    free(pred);
    free(Y);
    return s;
}

/* (n, D) copy of the features z-scored with the mean and variance of the rows tr (ntr) */
static float *standardized(const BenchData *d, const uint32_t *tr, size_t ntr) {
    const size_t D = d->d;
    double *mu = calloc(D, sizeof(double)), *var = calloc(D, sizeof(double));
    for (size_t i = 0; i < ntr; i++)
        for (size_t k = 0; k < D; k++) mu[k] += d->x[(size_t)tr[i] * D + k];
    for (size_t k = 0; k < D; k++) mu[k] /= (double)ntr;
    for (size_t i = 0; i < ntr; i++)
        for (size_t k = 0; k < D; k++) {
            double v = d->x[(size_t)tr[i] * D + k] - mu[k];
            var[k] += v * v;
        }
    double mean_var = 0;
    for (size_t k = 0; k < D; k++) mean_var += (var[k] /= (double)ntr) / (double)D;
    /* eps relative to the features' own scale, so a constant dimension maps to 0, not to noise */
    float *x = malloc(d->n * D * sizeof(float) + 1);
    float *scale = malloc(D * sizeof(float));
    for (size_t k = 0; k < D; k++) scale[k] = (float)(1.0 / sqrt(var[k] + 1e-6 * mean_var + 1e-300));
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < d->n; i++)
        for (size_t k = 0; k < D; k++) x[i * D + k] = (float)((d->x[i * D + k] - mu[k]) * scale[k]);
    free(mu);
    free(var);
    free(scale);
    return x;
}

int bench_linear_probe(Ctx *c, const BenchData *d, const BenchHeadOpts *o, uint64_t seed, float *score,
                       BenchProbeLog *log, Err *e) {
    memset(log, 0, sizeof *log);
    const size_t D = d->d, C = (size_t)d->C;
    size_t ntr = bench_rows(d, PREP_SPLIT_TRAIN, NULL), nva = bench_rows(d, PREP_SPLIT_VAL, NULL),
           nte = bench_rows(d, PREP_SPLIT_TEST, NULL);
    if (ntr == 0) return err_set(e, "no train items");
    if (nte == 0) return err_set(e, "no test items");
    uint32_t *tr = malloc(ntr * sizeof(uint32_t)), *te = malloc(nte * sizeof(uint32_t));
    uint32_t *va = malloc((nva ? nva : ntr) * sizeof(uint32_t));
    bench_rows(d, PREP_SPLIT_TRAIN, tr);
    bench_rows(d, PREP_SPLIT_TEST, te);
    if (nva) bench_rows(d, PREP_SPLIT_VAL, va);
    else {   /* no val split: select on the train rows (reported) */
        memcpy(va, tr, ntr * sizeof(uint32_t));
        nva = ntr;
        log->val_is_train = 1;
    }
    BenchData sd = *d;   /* the rows the head sees: standardized copy or the features */
    float *xs = NULL;
    if (o->standardize) {
        xs = standardized(d, tr, ntr);
        sd.x = xs;
        d = &sd;
    }
    ParamStore ps;
    params_init(&ps);
    Linear head;
    linear_declare(&head, &ps, "", "head", (int)D, (int)C, 1);
    params_alloc(&ps);
    Rng rng;
    rng_init(&rng, seed);
    init_torch_default_linear(&head, &rng);
    Rng shuffle = rng_fork(&rng, 1);
    OptimConfig oc = optim_adamw_default();
    oc.lr = o->lr;
    oc.weight_decay = o->weight_decay;
    float *best = malloc(ps.n_train * sizeof(float));
    memcpy(best, ps.data, ps.n_train * sizeof(float));
    float *pv = malloc(nva * C * sizeof(float));   // (nva, C)
    const size_t B = (size_t)o->batch < ntr ? (size_t)o->batch : ntr;
    int32_t *yb = malloc(B * sizeof(int32_t));
    int prev_grad = ctx_set_grad(c, 1), prev_train = c->training;
    c->training = 1;
    /* a (B, D) x (D, C) step is microseconds of work: forking threads for it costs more than it
     * saves (and the engine's results do not depend on the thread count) */
    const int prev_threads = omp_get_max_threads();
    omp_set_num_threads(1);
    double best_v = -INFINITY;
    long bad = 0;
    size_t pos = ntr;   /* forces a shuffle before the first batch */
    for (long it = 1; it <= o->max_iters; it++) {
        if (pos + B > ntr) {   /* new epoch; the tail shorter than a batch is dropped */
            rng_shuffle(&shuffle, tr, ntr);
            pos = 0;
        }
        ctx_step_begin(c);
        Tensor *x = tensor_new_(c, B, D);   // (B, D)
        for (size_t j = 0; j < B; j++) memcpy(x->data + j * D, d->x + (size_t)tr[pos + j] * D, D * sizeof(float));
        Tensor *z = linear_forward(c, &head, x);   // (B, C)
        Tensor *loss;
        if (d->Y) {
            Tensor *t = tensor_new_(c, B, C);   // (B, C) 0/1 targets
            for (size_t j = 0; j < B; j++)
                for (size_t k = 0; k < C; k++) t->data[j * C + k] = d->Y[(size_t)tr[pos + j] * C + k] ? 1.0f : 0.0f;
            loss = loss_bce_logits(c, z, t, NULL);
        } else {
            for (size_t j = 0; j < B; j++) yb[j] = d->y[tr[pos + j]];
            loss = loss_cross_entropy(c, z, yb, 0.0f);
        }
        pos += B;
        if (!isfinite(loss->data[0])) {
            err_set(e, "linear head: loss is not finite at iteration %ld (features too large? try input.std)", it);
            goto fail;
        }
        params_zero_grad(&ps);
        backward(c, loss);
        optim_step(&ps, &oc, it, o->lr, o->weight_decay);
        log->iters = it;
        if (it % o->val_every == 0 || it == o->max_iters) {
            head_predict(c, &head, d, va, nva, pv);
            double v = val_score(d, va, nva, pv, o->select);
            if (v > best_v) {
                best_v = v;
                log->best_iter = it;
                memcpy(best, ps.data, ps.n_train * sizeof(float));
                bad = 0;
            } else if (++bad >= o->patience) {
                break;
            }
        }
    }
    memcpy(ps.data, best, ps.n_train * sizeof(float));
    log->best_val = best_v;
    head_predict(c, &head, d, te, nte, score);
    omp_set_num_threads(prev_threads);
    ctx_set_grad(c, prev_grad);
    c->training = prev_train;
    free(tr);
    free(te);
    free(va);
    free(best);
    free(pv);
    free(yb);
    free(xs);
    params_free(&ps);
    return 0;
fail:
    omp_set_num_threads(prev_threads);
    ctx_set_grad(c, prev_grad);
    c->training = prev_train;
    free(tr);
    free(te);
    free(va);
    free(best);
    free(pv);
    free(yb);
    free(xs);
    params_free(&ps);
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* k-NN */

int bench_knn(const BenchData *d, int k, float temperature, float *score, Err *e) {
    const size_t D = d->d, C = (size_t)d->C;
    if (C > BENCH_MAX_CLASSES) return err_set(e, "k-NN: %zu classes (at most %d)", C, BENCH_MAX_CLASSES);
    size_t ntr = bench_rows(d, PREP_SPLIT_TRAIN, NULL), nte = bench_rows(d, PREP_SPLIT_TEST, NULL);
    if (ntr == 0) return err_set(e, "no train items (the k-NN database)");
    if (nte == 0) return err_set(e, "no test items");
    uint32_t *tr = malloc(ntr * sizeof(uint32_t)), *te = malloc(nte * sizeof(uint32_t));
    bench_rows(d, PREP_SPLIT_TRAIN, tr);
    bench_rows(d, PREP_SPLIT_TEST, te);
    float *db = malloc(ntr * D * sizeof(float)), *q = malloc(nte * D * sizeof(float));   // (ntr, D), (nte, D)
    for (size_t i = 0; i < ntr; i++) memcpy(db + i * D, d->x + (size_t)tr[i] * D, D * sizeof(float));
    for (size_t i = 0; i < nte; i++) memcpy(q + i * D, d->x + (size_t)te[i] * D, D * sizeof(float));
    bench_l2_normalize(db, ntr, D);
    bench_l2_normalize(q, nte, D);
    const size_t K = (size_t)k < ntr ? (size_t)k : ntr, QB = 256;
    float *sim = malloc(QB * ntr * sizeof(float));   // (QB, ntr)
    for (size_t q0 = 0; q0 < nte; q0 += QB) {
        size_t nb = nte - q0 < QB ? nte - q0 : QB;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)ntr, (int)D, 1.0f, q + q0 * D, (int)D, db,
                    (int)D, 0.0f, sim, (int)ntr);
#pragma omp parallel
        {
            float *ts = malloc(K * sizeof(float));       // top-k similarities, descending
            uint32_t *ti = malloc(K * sizeof(uint32_t)); // their database rows
#pragma omp for schedule(static)
            for (size_t j = 0; j < nb; j++) {
                const float *s = sim + j * ntr;
                size_t m = 0;
                for (size_t i = 0; i < ntr; i++) {   /* insertion into the top K; ties keep the lower row */
                    if (m == K && !(s[i] > ts[K - 1])) continue;
                    size_t p = m < K ? m++ : K - 1;
                    while (p > 0 && s[i] > ts[p - 1]) {
                        ts[p] = ts[p - 1];
                        ti[p] = ti[p - 1];
                        p--;
                    }
                    ts[p] = s[i];
                    ti[p] = (uint32_t)i;
                }
                double votes[BENCH_MAX_CLASSES] = {0}, tot = 0;
                for (size_t t = 0; t < m; t++) {
                    double v = exp((double)ts[t] / temperature);
                    votes[d->y[tr[ti[t]]]] += v;
                    tot += v;
                }
                float *out = score + (q0 + j) * C;
                for (size_t c = 0; c < C; c++) out[c] = tot > 0 ? (float)(votes[c] / tot) : 1.0f / (float)C;
            }
            free(ts);
            free(ti);
        }
    }
    free(sim);
    free(db);
    free(q);
    free(tr);
    free(te);
    return 0;
}
