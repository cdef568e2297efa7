/* metrics.c — test metrics of the benchmark and their bootstrap confidence intervals.
 *
 * Every metric accepts multiplicities w (row i counts w[i] times), so a bootstrap resample is a
 * vector of counts and nothing is copied per resample.  Definitions follow scikit-learn (see
 * bench.h); tests/bench/test_metrics.c checks them against tests/ref/bench_metrics.py. */
#include "bench/bench.h"
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static inline double wt(const uint32_t *w, size_t i) { return w ? (double)w[i] : 1.0; }

/* ------------------------------------------------------------------------------------------ */
/* single-label */

double metric_accuracy(const int32_t *y, const int32_t *pred, const uint32_t *w, size_t n) {
    double hit = 0, tot = 0;
    for (size_t i = 0; i < n; i++) {
        tot += wt(w, i);
        if (y[i] == pred[i]) hit += wt(w, i);
    }
    return tot > 0 ? hit / tot : NAN;
}

/* weighted counts per class: true (T), predicted (P), true positives (TP) */
static void class_counts(const int32_t *y, const int32_t *pred, int C, const uint32_t *w, size_t n, double *T, double *P,
                         double *TP) {
    for (int c = 0; c < C; c++) T[c] = P[c] = TP[c] = 0;
    for (size_t i = 0; i < n; i++) {
        double wi = wt(w, i);
        if (y[i] >= 0 && y[i] < C) T[y[i]] += wi;
        if (pred[i] >= 0 && pred[i] < C) P[pred[i]] += wi;
        if (y[i] == pred[i] && y[i] >= 0 && y[i] < C) TP[y[i]] += wi;
    }
}

double metric_balanced_accuracy(const int32_t *y, const int32_t *pred, int C, const uint32_t *w, size_t n) {
    double T[BENCH_MAX_CLASSES], P[BENCH_MAX_CLASSES], TP[BENCH_MAX_CLASSES];
    if (C > BENCH_MAX_CLASSES) return NAN;
    class_counts(y, pred, C, w, n, T, P, TP);
    double sum = 0;
    int k = 0;
    for (int c = 0; c < C; c++)
        if (T[c] > 0) {
            sum += TP[c] / T[c];
            k++;
        }
    return k ? sum / k : NAN;
}

double metric_f1_macro(const int32_t *y, const int32_t *pred, int C, const uint32_t *w, size_t n) {
    double T[BENCH_MAX_CLASSES], P[BENCH_MAX_CLASSES], TP[BENCH_MAX_CLASSES];
    if (C > BENCH_MAX_CLASSES) return NAN;
    class_counts(y, pred, C, w, n, T, P, TP);
    double sum = 0;
    int k = 0;
    for (int c = 0; c < C; c++)
        if (T[c] + P[c] > 0) {   /* 2TP / (2TP + FP + FN), FP + TP = P, FN + TP = T */
            sum += 2 * TP[c] / (T[c] + P[c]);
            k++;
        }
    return k ? sum / k : NAN;
}

/* ------------------------------------------------------------------------------------------ */
/* AUC */

typedef struct ScoreRow {
    float s;
    uint32_t i;
} ScoreRow;

static int cmp_score_row(const void *a, const void *b) {
    const ScoreRow *x = a, *y = b;
    if (x->s < y->s) return -1;
    if (x->s > y->s) return 1;
    return (x->i > y->i) - (x->i < y->i);
}

/* order (n): rows by ascending s[i * stride]; 1 when a score is NaN */
static int score_order(const float *s, size_t stride, size_t n, uint32_t *order) {
    ScoreRow *r = malloc((n ? n : 1) * sizeof *r);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        r[i] = (ScoreRow){s[i * stride], (uint32_t)i};
        bad |= isnan(r[i].s);
    }
    qsort(r, n, sizeof *r, cmp_score_row);
    for (size_t i = 0; i < n; i++) order[i] = r[i].i;
    free(r);
    return bad;
}

/* Mann-Whitney U / (P N) with mid-ranks: a group of g tied rows starting after `cum` weight
 * takes the ranks cum + 1 .. cum + g, mean cum + (g + 1) / 2.  pos(i) = (lab[i * lstride] == want)
 * (lab uint8 or int32 via is32). */
static double auc_ordered(const float *s, size_t stride, const void *lab, int is32, size_t lstride, int32_t want,
                          const uint32_t *w, const uint32_t *order, size_t n) {
    double P = 0, N = 0, rank_pos = 0, cum = 0;
    size_t a = 0;
    while (a < n) {
        float v = s[(size_t)order[a] * stride];
        double g = 0, gp = 0;
        size_t b = a;
        for (; b < n && s[(size_t)order[b] * stride] == v; b++) {
            size_t i = order[b];
            double wi = wt(w, i);
            int32_t l = is32 ? ((const int32_t *)lab)[i * lstride] : ((const uint8_t *)lab)[i * lstride];
            g += wi;
            if (l == want) gp += wi;
        }
        rank_pos += gp * (cum + (g + 1) / 2);
        cum += g;
        P += gp;
        N += g - gp;
        a = b;
    }
    if (P == 0 || N == 0) return NAN;
    return (rank_pos - P * (P + 1) / 2) / (P * N);
}

double metric_auc(const float *score, const uint8_t *pos, const uint32_t *w, size_t n) {
    uint32_t *order = malloc((n ? n : 1) * sizeof *order);
    double a = score_order(score, 1, n, order) ? NAN : auc_ordered(score, 1, pos, 0, 1, 1, w, order, n);
    free(order);
    return a;
}

/* mean OvR AUC given per-class orders (C, n) */
static double auc_ovr_ordered(const float *prob, int C, const int32_t *y, const uint32_t *w, const uint32_t *orders,
                              size_t n) {
    double sum = 0;
    int k = 0;
    for (int c = 0; c < C; c++) {
        double a = auc_ordered(prob + c, (size_t)C, y, 1, 1, c, w, orders + (size_t)c * n, n);
        if (!isnan(a)) {
            sum += a;
            k++;
        }
    }
    return k ? sum / k : NAN;
}

static uint32_t *class_orders(const float *prob, int C, size_t n, int *bad) {
    uint32_t *orders = malloc(((size_t)C * n + 1) * sizeof *orders);
    *bad = 0;
    for (int c = 0; c < C; c++) *bad |= score_order(prob + c, (size_t)C, n, orders + (size_t)c * n);
    return orders;
}

double metric_auc_ovr(const float *prob, int C, const int32_t *y, const uint32_t *w, size_t n) {
    int bad;
    uint32_t *orders = class_orders(prob, C, n, &bad);
    double a = bad ? NAN : auc_ovr_ordered(prob, C, y, w, orders, n);
    free(orders);
    return a;
}

static double auc_multilabel_ordered(const float *score, const uint8_t *Y, int C, const uint32_t *w,
                                     const uint32_t *orders, size_t n) {
    double sum = 0;
    int k = 0;
    for (int c = 0; c < C; c++) {
        double a = auc_ordered(score + c, (size_t)C, Y + c, 0, (size_t)C, 1, w, orders + (size_t)c * n, n);
        if (!isnan(a)) {
            sum += a;
            k++;
        }
    }
    return k ? sum / k : NAN;
}

double metric_auc_multilabel(const float *score, const uint8_t *Y, int C, const uint32_t *w, size_t n) {
    int bad;
    uint32_t *orders = class_orders(score, C, n, &bad);
    double a = bad ? NAN : auc_multilabel_ordered(score, Y, C, w, orders, n);
    free(orders);
    return a;
}

double metric_f1_multilabel(const float *score, const uint8_t *Y, int C, float threshold, const uint32_t *w, size_t n) {
    double sum = 0;
    int k = 0;
    for (int c = 0; c < C; c++) {
        double tp = 0, fp = 0, fn = 0;
        for (size_t i = 0; i < n; i++) {
            int p = score[i * (size_t)C + c] > threshold, t = Y[i * (size_t)C + c] != 0;
            double wi = wt(w, i);
            tp += wi * (p && t);
            fp += wi * (p && !t);
            fn += wi * (!p && t);
        }
        if (tp + fn > 0) {   /* classes with a positive */
            sum += 2 * tp / (2 * tp + fp + fn);
            k++;
        }
    }
    return k ? sum / k : NAN;
}

double metric_subset_accuracy(const float *score, const uint8_t *Y, int C, float threshold, const uint32_t *w, size_t n) {
    double hit = 0, tot = 0;
    for (size_t i = 0; i < n; i++) {
        int ok = 1;
        for (int c = 0; c < C && ok; c++) ok = (score[i * (size_t)C + c] > threshold) == (Y[i * (size_t)C + c] != 0);
        tot += wt(w, i);
        hit += ok * wt(w, i);
    }
    return tot > 0 ? hit / tot : NAN;
}

/* ------------------------------------------------------------------------------------------ */
/* retrieval */

typedef struct SimRow {
    float s;
    uint32_t i;
} SimRow;

static int cmp_sim_desc(const void *a, const void *b) {
    const SimRow *x = a, *y = b;
    if (x->s > y->s) return -1;
    if (x->s < y->s) return 1;
    return (x->i > y->i) - (x->i < y->i);
}

void retrieval_per_query(const float *q, const int32_t *qy, size_t nq, const float *db, const int32_t *dby, size_t ndb,
                         size_t d, const int *k, int nk, uint8_t *hits, float *ap) {
    const size_t QB = 128;   /* queries per similarity block: QB * ndb floats */
    float *sim = malloc((QB * ndb + 1) * sizeof(float));   // (QB, ndb)
    for (size_t q0 = 0; q0 < nq; q0 += QB) {
        size_t nb = nq - q0 < QB ? nq - q0 : QB;
        if (ndb)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nb, (int)ndb, (int)d, 1.0f, q + q0 * d, (int)d, db,
                        (int)d, 0.0f, sim, (int)ndb);
#pragma omp parallel
        {
            SimRow *rows = malloc((ndb + 1) * sizeof *rows);
#pragma omp for schedule(static)
            for (size_t j = 0; j < nb; j++) {
                size_t qi = q0 + j;
                size_t R = 0;
                for (size_t i = 0; i < ndb; i++) {
                    rows[i] = (SimRow){sim[j * ndb + i], (uint32_t)i};
                    R += dby[i] == qy[qi];
                }
                qsort(rows, ndb, sizeof *rows, cmp_sim_desc);
                for (int t = 0; t < nk; t++) {
                    size_t kk = (size_t)k[t] < ndb ? (size_t)k[t] : ndb;
                    uint8_t hit = 0;
                    for (size_t i = 0; i < kk && !hit; i++) hit = dby[rows[i].i] == qy[qi];
                    hits[qi * (size_t)nk + t] = hit;
                }
                if (R == 0) {
                    ap[qi] = NAN;
                } else {
                    double sum = 0;
                    size_t rel = 0;
                    for (size_t i = 0; i < R; i++)
                        if (dby[rows[i].i] == qy[qi]) sum += (double)++rel / (double)(i + 1);
                    ap[qi] = (float)(sum / (double)R);
                }
            }
            free(rows);
        }
    }
    free(sim);
}

/* ------------------------------------------------------------------------------------------ */
/* bootstrap */

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

double bench_percentile(double *x, size_t n, double q) {
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (isfinite(x[i])) x[m++] = x[i];
    if (m == 0) return NAN;
    qsort(x, m, sizeof *x, cmp_double);
    double pos = q * (double)(m - 1);
    size_t lo = (size_t)floor(pos);
    if (lo >= m - 1) return x[m - 1];
    double f = pos - (double)lo;
    return x[lo] + f * (x[lo + 1] - x[lo]);
}

int bench_bootstrap(BenchStatFn stat, const void *ud, size_t n, int n_stats, int n_resamples, uint64_t seed,
                    double level, BenchCI *out, double **resamples) {
    if (resamples) *resamples = NULL;
    if (n == 0 || n_stats < 1 || n > UINT32_MAX) return 1;
    double *point = malloc((size_t)n_stats * sizeof(double));
    stat(ud, NULL, n, point);
    double *vals = malloc(((size_t)n_resamples * n_stats + 1) * sizeof(double));   // (R, n_stats)
    Rng root;
    rng_init(&root, seed);
#pragma omp parallel
    {
        uint32_t *w = malloc(n * sizeof(uint32_t));
#pragma omp for schedule(static)
        for (int r = 0; r < n_resamples; r++) {
            Rng g = rng_fork(&root, (uint64_t)r);
            memset(w, 0, n * sizeof(uint32_t));
            for (size_t i = 0; i < n; i++) w[rng_below(&g, (uint32_t)n)]++;
            stat(ud, w, n, vals + (size_t)r * n_stats);
        }
        free(w);
    }
    double *col = malloc(((size_t)n_resamples + 1) * sizeof(double));
    for (int s = 0; s < n_stats; s++) {
        int valid = 0;
        for (int r = 0; r < n_resamples; r++) {
            col[r] = vals[(size_t)r * n_stats + s];
            valid += isfinite(col[r]) != 0;
        }
        out[s].value = point[s];
        out[s].n_valid = valid;
        out[s].lo = bench_percentile(col, (size_t)n_resamples, (1 - level) / 2);
        for (int r = 0; r < n_resamples; r++) col[r] = vals[(size_t)r * n_stats + s];
        out[s].hi = bench_percentile(col, (size_t)n_resamples, (1 + level) / 2);
    }
    free(col);
    if (resamples) *resamples = vals;
    else free(vals);
    free(point);
    return 0;
}

int bench_paired_diff(const BenchMetric *a, const BenchMetric *b, double level, BenchCI *out, double *p_le0) {
    *out = (BenchCI){a->ci.value - b->ci.value, NAN, NAN, 0};
    *p_le0 = NAN;
    if (!a->boot || !b->boot || a->n_boot != b->n_boot || a->n_boot < 1) return 1;
    double *d = malloc((size_t)a->n_boot * sizeof(double));
    size_t m = 0, le0 = 0;
    for (int r = 0; r < a->n_boot; r++) {
        double x = (double)a->boot[r] - (double)b->boot[r];
        if (!isfinite(x)) continue;
        d[m++] = x;
        le0 += x <= 0;
    }
    out->n_valid = (int)m;
    if (m > 0) {
        *p_le0 = (double)le0 / (double)m;
        out->lo = bench_percentile(d, m, (1 - level) / 2);
        out->hi = bench_percentile(d, m, (1 + level) / 2);   // d is sorted and still holds the m values
    }
    free(d);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* test metrics with their CIs and resamples */

void bench_metrics_add(BenchMetrics *out, const char *prefix, const char *const *names, int n_stats, const BenchCI *ci,
                       const double *resamples, int n_resamples) {
    for (int s = 0; s < n_stats && out->n < BENCH_MAX_METRICS; s++) {
        BenchMetric *m = &out->m[out->n++];
        snprintf(m->name, sizeof m->name, "%s%s", prefix ? prefix : "", names[s]);
        m->ci = ci[s];
        m->boot = NULL;
        m->n_boot = 0;
        if (!resamples || n_resamples < 1) continue;
        m->boot = malloc((size_t)n_resamples * sizeof(float));
        m->n_boot = n_resamples;
        for (int r = 0; r < n_resamples; r++) m->boot[r] = (float)resamples[(size_t)r * n_stats + s];
    }
}

void bench_metrics_free(BenchMetrics *m) {
    for (int k = 0; k < m->n; k++) free(m->m[k].boot);
    m->n = 0;
}

/* ------------------------------------------------------------------------------------------ */
/* evaluation of a protocol's test predictions */

typedef struct ClsStat {
    const int32_t *y, *pred;
    const float *prob;
    int C;
    const uint32_t *orders;   /* (C, n) */
} ClsStat;

static void cls_stat(const void *ud, const uint32_t *w, size_t n, double *out) {
    const ClsStat *s = ud;
    out[0] = auc_ovr_ordered(s->prob, s->C, s->y, w, s->orders, n);
    out[1] = metric_balanced_accuracy(s->y, s->pred, s->C, w, n);
    out[2] = metric_accuracy(s->y, s->pred, w, n);
    out[3] = metric_f1_macro(s->y, s->pred, s->C, w, n);
}

int bench_eval_classification(const int32_t *y, const float *prob, size_t n, int C, const BenchSettings *st,
                              uint64_t seed, const char *prefix, BenchMetrics *out, Err *e) {
    if (n == 0) return err_set(e, "no test items");
    int32_t *pred = malloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {   /* argmax, ties to the lower class */
        int best = 0;
        for (int c = 1; c < C; c++)
            if (prob[i * (size_t)C + c] > prob[i * (size_t)C + best]) best = c;
        pred[i] = best;
    }
    int bad;
    uint32_t *orders = class_orders(prob, C, n, &bad);
    if (bad) {
        free(pred);
        free(orders);
        return err_set(e, "a test score is NaN (the head diverged)");
    }
    ClsStat s = {y, pred, prob, C, orders};
    BenchCI ci[4];
    double *boot;
    bench_bootstrap(cls_stat, &s, n, 4, st->boot_n, seed, st->boot_level, ci, &boot);
    static const char *const names[4] = {"auc", "bacc", "acc", "f1"};
    bench_metrics_add(out, prefix, names, 4, ci, boot, st->boot_n);
    free(boot);
    free(orders);
    free(pred);
    return 0;
}

typedef struct MlStat {
    const uint8_t *Y;
    const float *score;
    int C;
    float thr;
    const uint32_t *orders;
} MlStat;

static void ml_stat(const void *ud, const uint32_t *w, size_t n, double *out) {
    const MlStat *s = ud;
    out[0] = auc_multilabel_ordered(s->score, s->Y, s->C, w, s->orders, n);
    out[1] = metric_f1_multilabel(s->score, s->Y, s->C, s->thr, w, n);
    out[2] = metric_subset_accuracy(s->score, s->Y, s->C, s->thr, w, n);
}

int bench_eval_multilabel(const uint8_t *Y, const float *score, size_t n, int C, const BenchSettings *st, uint64_t seed,
                          const char *prefix, BenchMetrics *out, Err *e) {
    if (n == 0) return err_set(e, "no test items");
    int bad;
    uint32_t *orders = class_orders(score, C, n, &bad);
    if (bad) {
        free(orders);
        return err_set(e, "a test score is NaN (the head diverged)");
    }
    MlStat s = {Y, score, C, st->threshold, orders};
    BenchCI ci[3];
    double *boot;
    bench_bootstrap(ml_stat, &s, n, 3, st->boot_n, seed, st->boot_level, ci, &boot);
    static const char *const names[3] = {"auc", "f1", "acc"};
    bench_metrics_add(out, prefix, names, 3, ci, boot, st->boot_n);
    free(boot);
    free(orders);
    return 0;
}

typedef struct RetStat {
    const uint8_t *hits;   /* (nq, nk) */
    const float *ap;       /* (nq) */
    int nk;
} RetStat;

static void ret_stat(const void *ud, const uint32_t *w, size_t n, double *out) {
    const RetStat *s = ud;
    for (int k = 0; k <= s->nk; k++) {
        double num = 0, den = 0;
        for (size_t i = 0; i < n; i++) {
            double wi = wt(w, i);
            if (k < s->nk) {
                num += wi * s->hits[i * (size_t)s->nk + k];
                den += wi;
            } else if (!isnan(s->ap[i])) {
                num += wi * s->ap[i];
                den += wi;
            }
        }
        out[k] = den > 0 ? num / den : NAN;
    }
}

int bench_eval_retrieval(const BenchData *d, const BenchSettings *st, uint64_t seed, BenchMetrics *out, Err *e) {
    size_t nq = 0, ndb = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (d->y[i] < 0) continue;
        if (d->split[i] == PREP_SPLIT_TEST) nq++;
        else ndb++;
    }
    if (nq == 0) return err_set(e, "no test items (queries)");
    if (ndb == 0) return err_set(e, "no train/val items (the retrieval database)");
    float *q = malloc(nq * d->d * sizeof(float)), *db = malloc(ndb * d->d * sizeof(float));   // (nq, d), (ndb, d)
    int32_t *qy = malloc(nq * sizeof(int32_t)), *dby = malloc(ndb * sizeof(int32_t));
    size_t a = 0, b = 0;
    for (size_t i = 0; i < d->n; i++) {
        if (d->y[i] < 0) continue;
        if (d->split[i] == PREP_SPLIT_TEST) {
            memcpy(q + a * d->d, d->x + i * d->d, d->d * sizeof(float));
            qy[a++] = d->y[i];
        } else {
            memcpy(db + b * d->d, d->x + i * d->d, d->d * sizeof(float));
            dby[b++] = d->y[i];
        }
    }
    bench_l2_normalize(q, nq, d->d);
    bench_l2_normalize(db, ndb, d->d);
    uint8_t *hits = malloc(nq * (size_t)st->n_topk);
    float *ap = malloc(nq * sizeof(float));
    retrieval_per_query(q, qy, nq, db, dby, ndb, d->d, st->topk, st->n_topk, hits, ap);
    RetStat s = {hits, ap, st->n_topk};
    BenchCI ci[BENCH_MAX_TOPK + 1];
    double *boot;
    bench_bootstrap(ret_stat, &s, nq, st->n_topk + 1, st->boot_n, seed, st->boot_level, ci, &boot);
    char nm[BENCH_MAX_TOPK + 1][16];
    const char *names[BENCH_MAX_TOPK + 1];
    for (int k = 0; k <= st->n_topk; k++) {
        if (k < st->n_topk) snprintf(nm[k], sizeof nm[k], "top%d", st->topk[k]);
        else snprintf(nm[k], sizeof nm[k], "mapr");
        names[k] = nm[k];
    }
    bench_metrics_add(out, NULL, names, st->n_topk + 1, ci, boot, st->boot_n);
    free(boot);
    free(q);
    free(db);
    free(qy);
    free(dby);
    free(hits);
    free(ap);
    return 0;
}
