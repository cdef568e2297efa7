/* test_metrics.c — the benchmark's metrics against scikit-learn / numpy values on fixed inputs
 * (tests/ref/bench_metrics.py -> tests/ref/data/bench_metrics.h5), hand-checked AUC cases, the
 * k-NN probe against DINO's eval_knn rule, and the bootstrap CI on a case with a known answer. */
#include "tests/common/testutil.h"
#include "bench/bench.h"
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

static float *get(RefFile *r, const char *key, size_t *n) {
    size_t shape[VT_MAX_DIMS];
    int nd;
    return ref_get(r, key, n, &nd, shape);
}

static double get1(RefFile *r, const char *key) {
    size_t n;
    float *v = get(r, key, &n);
    double x = v[0];
    free(v);
    return x;
}

/* ref_get returns floats; integer arrays are exact in float up to 2^24 */
static int32_t *get_i32(RefFile *r, const char *key, size_t *n) {
    float *v = get(r, key, n);
    int32_t *o = malloc(*n * sizeof(int32_t));
    for (size_t i = 0; i < *n; i++) o[i] = (int32_t)v[i];
    free(v);
    return o;
}

static uint8_t *get_u8(RefFile *r, const char *key, size_t *n) {
    float *v = get(r, key, n);
    uint8_t *o = malloc(*n);
    for (size_t i = 0; i < *n; i++) o[i] = (uint8_t)v[i];
    free(v);
    return o;
}

static uint32_t *get_u32(RefFile *r, const char *key, size_t *n) {
    float *v = get(r, key, n);
    uint32_t *o = malloc(*n * sizeof(uint32_t));
    for (size_t i = 0; i < *n; i++) o[i] = (uint32_t)v[i];
    free(v);
    return o;
}

#define CHECK(what, got, want, tol)                                                                     \
    do {                                                                                                \
        double g_ = (got), w_ = (want);                                                                 \
        print_message("  %-28s %.10f (reference %.10f, |diff| %.1e)\n", what, g_, w_, fabs(g_ - w_));     \
        if (!(fabs(g_ - w_) <= (tol))) fail_msg("%s = %.10f, reference %.10f", what, g_, w_);            \
    } while (0)

/* float32 reference values carry ~1e-7 relative rounding */
#define TOL 2e-7

static void test_auc_hand_cases(void **st) {
    (void)st;
    /* scikit-learn's roc_auc_score docstring example */
    float s[4] = {0.1f, 0.4f, 0.35f, 0.8f};
    uint8_t p[4] = {0, 0, 1, 1};
    CHECK("auc example", metric_auc(s, p, NULL, 4), 0.75, 1e-12);
    /* every score tied: 0.5 */
    float t[4] = {0.3f, 0.3f, 0.3f, 0.3f};
    CHECK("auc all tied", metric_auc(t, p, NULL, 4), 0.5, 1e-12);
    /* a positive tied with a negative counts half: pairs (1 beats 0) + (tie 0.5) = 1.5 of 4 */
    float u[4] = {0.2f, 0.5f, 0.5f, 0.1f};
    uint8_t q[4] = {0, 1, 0, 1};
    CHECK("auc half ties", metric_auc(u, q, NULL, 4), 1.5 / 4, 1e-12);
    /* multiplicities = repeated rows */
    uint32_t w[4] = {2, 1, 0, 3};
    float ur[6] = {0.2f, 0.2f, 0.5f, 0.1f, 0.1f, 0.1f};
    uint8_t qr[6] = {0, 0, 1, 1, 1, 1};
    CHECK("auc weighted == repeated", metric_auc(u, q, w, 4), metric_auc(ur, qr, NULL, 6), 1e-12);
    uint8_t none[4] = {0, 0, 0, 0};
    assert_true(isnan(metric_auc(s, none, NULL, 4)));
}

static void test_binary_vs_sklearn(void **st) {
    (void)st;
    RefFile *r = ref_open("bench_metrics");
    size_t n;
    float *s = get(r, "binary/score", &n);
    uint8_t *p = get_u8(r, "binary/pos", &n);
    uint32_t *w = get_u32(r, "binary/w", &n);
    CHECK("binary auc (ties)", metric_auc(s, p, NULL, n), get1(r, "binary/auc"), TOL);
    CHECK("binary auc weighted", metric_auc(s, p, w, n), get1(r, "binary/auc_w"), TOL);
    free(s);
    free(p);
    free(w);
    ref_close(r);
}

static void test_multiclass_vs_sklearn(void **st) {
    (void)st;
    RefFile *r = ref_open("bench_metrics");
    size_t n, np_;
    float *prob = get(r, "multiclass/prob", &np_);
    int32_t *y = get_i32(r, "multiclass/y", &n);
    uint32_t *w = get_u32(r, "multiclass/w", &n);
    const int C = (int)(np_ / n);
    assert_int_equal(C, 4);
    int32_t *pred = malloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {
        int b = 0;
        for (int c = 1; c < C; c++)
            if (prob[i * C + c] > prob[i * C + b]) b = c;
        pred[i] = b;
    }
    CHECK("ovr auc (class 3 absent)", metric_auc_ovr(prob, C, y, NULL, n), get1(r, "multiclass/auc"), TOL);
    CHECK("balanced accuracy", metric_balanced_accuracy(y, pred, C, NULL, n), get1(r, "multiclass/bacc"), TOL);
    CHECK("accuracy", metric_accuracy(y, pred, NULL, n), get1(r, "multiclass/acc"), TOL);
    CHECK("macro f1", metric_f1_macro(y, pred, C, NULL, n), get1(r, "multiclass/f1"), TOL);
    CHECK("ovr auc weighted", metric_auc_ovr(prob, C, y, w, n), get1(r, "multiclass/auc_w"), TOL);
    CHECK("balanced accuracy weighted", metric_balanced_accuracy(y, pred, C, w, n), get1(r, "multiclass/bacc_w"), TOL);
    CHECK("accuracy weighted", metric_accuracy(y, pred, w, n), get1(r, "multiclass/acc_w"), TOL);
    CHECK("macro f1 weighted", metric_f1_macro(y, pred, C, w, n), get1(r, "multiclass/f1_w"), TOL);
    /* the same through the evaluator (point values; CIs tested below) */
    BenchSettings s = {.boot_n = 50, .boot_level = 0.95};
    BenchMetrics m = {0};
    Err e = {0};
    assert_int_equal(bench_eval_classification(y, prob, n, C, &s, 1, "knn_", &m, &e), 0);
    assert_int_equal(m.n, 4);
    assert_string_equal(m.m[0].name, "knn_auc");
    CHECK("evaluator auc", m.m[0].ci.value, get1(r, "multiclass/auc"), TOL);
    CHECK("evaluator f1", m.m[3].ci.value, get1(r, "multiclass/f1"), TOL);
    bench_metrics_free(&m);
    free(prob);
    free(y);
    free(w);
    free(pred);
    ref_close(r);
}

static void test_multilabel_vs_sklearn(void **st) {
    (void)st;
    RefFile *r = ref_open("bench_metrics");
    size_t ns, n;
    float *sc = get(r, "multilabel/score", &ns);
    uint32_t *w = get_u32(r, "multilabel/w", &n);
    uint8_t *Y = get_u8(r, "multilabel/Y", &ns);
    const int C = (int)(ns / n);
    CHECK("multi-label auc", metric_auc_multilabel(sc, Y, C, NULL, n), get1(r, "multilabel/auc"), TOL);
    CHECK("multi-label f1", metric_f1_multilabel(sc, Y, C, 0.5f, NULL, n), get1(r, "multilabel/f1"), TOL);
    CHECK("subset accuracy", metric_subset_accuracy(sc, Y, C, 0.5f, NULL, n), get1(r, "multilabel/acc"), TOL);
    CHECK("multi-label auc weighted", metric_auc_multilabel(sc, Y, C, w, n), get1(r, "multilabel/auc_w"), TOL);
    CHECK("multi-label f1 weighted", metric_f1_multilabel(sc, Y, C, 0.5f, w, n), get1(r, "multilabel/f1_w"), TOL);
    CHECK("subset accuracy weighted", metric_subset_accuracy(sc, Y, C, 0.5f, w, n), get1(r, "multilabel/acc_w"), TOL);
    free(sc);
    free(w);
    free(Y);
    ref_close(r);
}

static void test_retrieval_vs_numpy(void **st) {
    (void)st;
    RefFile *r = ref_open("bench_metrics");
    size_t nq, ndb, nqd, ndbd, nh, na, nt;
    int32_t *qy = get_i32(r, "retrieval/qy", &nq), *dby = get_i32(r, "retrieval/dby", &ndb);
    float *q = get(r, "retrieval/q", &nqd), *db = get(r, "retrieval/db", &ndbd);
    uint8_t *hits_ref = get_u8(r, "retrieval/hits", &nh);
    float *ap_ref = get(r, "retrieval/ap", &na), *top_ref = get(r, "retrieval/top", &nt);
    const size_t d = nqd / nq;
    int k[3] = {1, 2, 3};
    uint8_t *hits = malloc(nq * 3);
    float *ap = malloc(nq * sizeof(float));
    retrieval_per_query(q, qy, nq, db, dby, ndb, d, k, 3, hits, ap);
    assert_memory_equal(hits, hits_ref, nq * 3);
    double worst = 0;
    for (size_t i = 0; i < nq; i++) {
        if (isnan(ap_ref[i])) {
            assert_true(isnan(ap[i]));   /* the query whose label is not in the database */
            continue;
        }
        worst = fmax(worst, fabs(ap[i] - ap_ref[i]));
    }
    print_message("  AP@R per query: max |diff| %.2e over %zu queries; hits identical\n", worst, nq);
    assert_true(worst < 1e-6);
    /* the evaluator's means, with CIs, on the same data as a database/query split */
    size_t n = nq + ndb;
    float *x = malloc(n * d * sizeof(float));
    int32_t *y = malloc(n * sizeof(int32_t));
    uint8_t *split = malloc(n);
    memcpy(x, db, ndb * d * sizeof(float));
    memcpy(x + ndb * d, q, nq * d * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        y[i] = i < ndb ? dby[i] : qy[i - ndb];
        split[i] = i < ndb ? (i % 5 ? PREP_SPLIT_TRAIN : PREP_SPLIT_VAL) : PREP_SPLIT_TEST;
    }
    BenchData bd = {.n = n, .d = d, .x = x, .split = split, .C = 4, .y = y};
    BenchSettings s = {.n_topk = 3, .topk = {1, 2, 3}, .boot_n = 200, .boot_level = 0.95};
    BenchMetrics m = {0};
    Err e = {0};
    assert_int_equal(bench_eval_retrieval(&bd, &s, 3, &m, &e), 0);
    assert_int_equal(m.n, 4);
    for (int j = 0; j < 3; j++) CHECK(m.m[j].name, m.m[j].ci.value, top_ref[j], 1e-6);
    assert_string_equal(m.m[3].name, "mapr");
    CHECK("mapr", m.m[3].ci.value, get1(r, "retrieval/mapr"), 1e-6);
    for (int j = 0; j < 4; j++) assert_true(m.m[j].ci.lo <= m.m[j].ci.value && m.m[j].ci.value <= m.m[j].ci.hi);
    bench_metrics_free(&m);
    free(qy);
    free(dby);
    free(q);
    free(db);
    free(hits_ref);
    free(ap_ref);
    free(top_ref);
    free(hits);
    free(ap);
    free(x);
    free(y);
    free(split);
    ref_close(r);
}

static void test_knn_vs_dino_rule(void **st) {
    (void)st;
    RefFile *r = ref_open("bench_metrics");
    size_t ntr, nte, ntrd, nted, ns;
    int32_t *ytr = get_i32(r, "knn/ytr", &ntr);
    float *xtr = get(r, "knn/xtr", &ntrd), *xte = get(r, "knn/xte", &nted), *ref = get(r, "knn/score", &ns);
    const size_t d = ntrd / ntr;
    nte = nted / d;
    const int C = (int)get1(r, "knn/C"), k = (int)get1(r, "knn/k");
    const float T = (float)get1(r, "knn/T");
    size_t n = ntr + nte;
    float *x = malloc(n * d * sizeof(float));
    int32_t *y = calloc(n, sizeof(int32_t));
    uint8_t *split = malloc(n);
    memcpy(x, xtr, ntr * d * sizeof(float));
    memcpy(x + ntr * d, xte, nte * d * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        split[i] = i < ntr ? PREP_SPLIT_TRAIN : PREP_SPLIT_TEST;
        y[i] = i < ntr ? ytr[i] : 0;
    }
    BenchData bd = {.n = n, .d = d, .x = x, .split = split, .C = C, .y = y};
    float *score = malloc(nte * C * sizeof(float));
    Err e = {0};
    assert_int_equal(bench_knn(&bd, k, T, score, &e), 0);
    print_message("  k-NN (k=%d, T=%.2f) votes vs numpy: max rel err %.2e\n", k, T, max_rel_err(score, ref, nte * C));
    assert_close("knn scores", score, ref, nte * C, 2e-5, 2e-4);
    free(ytr);
    free(xtr);
    free(xte);
    free(ref);
    free(x);
    free(y);
    free(split);
    free(score);
    ref_close(r);
}

static void test_percentile_vs_numpy(void **st) {
    (void)st;
    RefFile *r = ref_open("bench_metrics");
    size_t n, nq, np_;
    float *xf = get(r, "percentile/x", &n), *q = get(r, "percentile/q", &nq), *p = get(r, "percentile/p", &np_);
    double *x = malloc(n * sizeof(double));
    for (size_t j = 0; j < nq; j++) {
        for (size_t i = 0; i < n; i++) x[i] = xf[i];   /* NaNs included: they are skipped */
        char nm[32];
        snprintf(nm, sizeof nm, "percentile %.3f", q[j]);
        CHECK(nm, bench_percentile(x, n, q[j]), p[j], 1e-6);
    }
    free(x);
    free(xf);
    free(q);
    free(p);
    ref_close(r);
}

/* accuracy of a fixed prediction vector: the bootstrap distribution is Binomial(n, acc)/n, so the
 * 95% interval is close to acc +- 1.96 sqrt(acc (1 - acc) / n) */
typedef struct AccUd {
    const int32_t *y, *pred;
} AccUd;

static void acc_stat(const void *ud, const uint32_t *w, size_t n, double *out) {
    const AccUd *a = ud;
    out[0] = metric_accuracy(a->y, a->pred, w, n);
}

static void test_bootstrap_known_case(void **st) {
    (void)st;
    const size_t n = 400;
    int32_t *y = malloc(n * sizeof(int32_t)), *pred = malloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {
        y[i] = (int32_t)(i % 3);
        pred[i] = i % 10 < 7 ? y[i] : (y[i] + 1) % 3;   /* exactly 70% correct */
    }
    AccUd ud = {y, pred};
    BenchCI a, b, c, d1;
    assert_int_equal(bench_bootstrap(acc_stat, &ud, n, 1, 1000, 42, 0.95, &a, NULL), 0);
    double half = 1.96 * sqrt(0.7 * 0.3 / n);
    print_message("  accuracy 0.70 on n=%zu: CI [%.4f, %.4f], width %.4f (normal approximation %.4f)\n", n, a.lo, a.hi,
                  a.hi - a.lo, 2 * half);
    CHECK("point estimate", a.value, 0.7, 1e-12);
    assert_int_equal(a.n_valid, 1000);
    assert_true(a.lo < a.value && a.value < a.hi);
    CHECK("CI width", a.hi - a.lo, 2 * half, 0.012);
    CHECK("CI centre", (a.lo + a.hi) / 2, 0.7, 0.008);
    /* same seed -> the same interval, on any thread count; another seed -> another one */
    int nt = omp_get_max_threads();
    omp_set_num_threads(1);
    assert_int_equal(bench_bootstrap(acc_stat, &ud, n, 1, 1000, 42, 0.95, &b, NULL), 0);
    omp_set_num_threads(nt);
    assert_true(a.lo == b.lo && a.hi == b.hi);
    assert_int_equal(bench_bootstrap(acc_stat, &ud, n, 1, 1000, 43, 0.95, &c, NULL), 0);
    assert_true(c.lo != a.lo || c.hi != a.hi);
    /* a wider level gives a wider interval */
    assert_int_equal(bench_bootstrap(acc_stat, &ud, n, 1, 1000, 42, 0.99, &d1, NULL), 0);
    assert_true(d1.lo <= a.lo && d1.hi >= a.hi && d1.hi - d1.lo > a.hi - a.lo);
    free(y);
    free(pred);
}

/* Paired differences: B is right wherever A is, and on 5% more rows (i % 20 == 7).  On every
 * resample B - A is the fraction of drawn rows of that 5%: Binomial(n, 0.05) / n, so the paired
 * 95% interval is about 0.05 +- 1.96 sqrt(0.05 * 0.95 / n) and excludes 0, while the two marginal
 * intervals overlap (the comparison the paired one replaces). */
static void eval_predictions(const int32_t *y, const int32_t *pred, size_t n, BenchMetrics *m) {
    float *prob = calloc(n * 3, sizeof(float));
    for (size_t i = 0; i < n; i++) prob[i * 3 + (size_t)pred[i]] = 1.0f;
    BenchSettings s = {.boot_n = 1000, .boot_level = 0.95};
    Err e = {0};
    assert_int_equal(bench_eval_classification(y, prob, n, 3, &s, 42, "", m, &e), 0);
    free(prob);
}

static void test_paired_difference(void **st) {
    (void)st;
    const size_t n = 400;
    int32_t *y = malloc(n * sizeof(int32_t)), *pa = malloc(n * sizeof(int32_t)), *pb = malloc(n * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) {
        y[i] = (int32_t)(i % 3);
        pa[i] = i % 10 < 7 ? y[i] : (y[i] + 1) % 3;   /* 70% correct */
        pb[i] = i % 10 < 7 || i % 20 == 7 ? y[i] : (y[i] + 1) % 3;   /* 75% */
    }
    BenchMetrics ma = {0}, mb = {0};
    eval_predictions(y, pa, n, &ma);
    eval_predictions(y, pb, n, &mb);
    const BenchMetric *a = &ma.m[2], *b = &mb.m[2];
    assert_string_equal(a->name, "acc");
    assert_int_equal(a->n_boot, 1000);
    BenchCI d;
    double p;
    assert_int_equal(bench_paired_diff(b, a, 0.95, &d, &p), 0);
    double half = 1.96 * sqrt(0.05 * 0.95 / n);
    print_message("  acc 0.75 vs 0.70: marginal [%.3f, %.3f] vs [%.3f, %.3f]; paired +%.3f [%.4f, %.4f] (normal %.4f), "
                  "P(diff <= 0) %.3f\n", b->ci.lo, b->ci.hi, a->ci.lo, a->ci.hi, d.value, d.lo, d.hi, half, p);
    CHECK("paired value", d.value, 0.05, 1e-12);
    assert_int_equal(d.n_valid, 1000);
    CHECK("paired CI width", d.hi - d.lo, 2 * half, 0.008);
    assert_true(d.lo > 0 && d.lo < d.value && d.value < d.hi);
    assert_true(p == 0.0);
    assert_true(b->ci.lo < a->ci.hi);   /* the marginal intervals overlap */
    /* against itself: exactly zero on every resample */
    assert_int_equal(bench_paired_diff(a, a, 0.95, &d, &p), 0);
    assert_true(d.value == 0 && d.lo == 0 && d.hi == 0 && p == 1.0);
    /* resamples of different lengths cannot be paired */
    BenchMetric short_b = *b;
    short_b.n_boot = 999;
    assert_int_equal(bench_paired_diff(&short_b, a, 0.95, &d, &p), 1);
    assert_true(isnan(d.lo) && isnan(p));
    bench_metrics_free(&ma);
    bench_metrics_free(&mb);
    free(y);
    free(pa);
    free(pb);
}

/* a perfect classifier: every resample has AUC 1 and accuracy 1 */
static void test_eval_perfect(void **st) {
    (void)st;
    const size_t n = 30;
    const int C = 3;
    int32_t y[30];
    float prob[30 * 3];
    for (size_t i = 0; i < n; i++) {
        y[i] = (int32_t)(i % C);
        for (int c = 0; c < C; c++) prob[i * C + c] = c == y[i] ? 0.8f : 0.1f;
    }
    BenchSettings s = {.boot_n = 100, .boot_level = 0.95};
    BenchMetrics m = {0};
    Err e = {0};
    assert_int_equal(bench_eval_classification(y, prob, n, C, &s, 5, "", &m, &e), 0);
    for (int k = 0; k < m.n; k++) {
        assert_true(m.m[k].ci.value == 1.0 && m.m[k].ci.lo == 1.0 && m.m[k].ci.hi == 1.0);
    }
    bench_metrics_free(&m);
}

/* Dice / IoU and the detection metrics (bench/protocol_seg.c, protocol_det.c) on cases worked out
 * by hand. */
static void test_dice_iou_hand_cases(void **st) {
    (void)st;
    const uint8_t pred[4] = {1, 1, 0, 0}, gt[4] = {1, 0, 1, 0}, none[4] = {0, 0, 0, 0};
    double d, j;
    bench_dice_iou(pred, gt, 4, &d, &j);   /* |P n G| 1, |P| 2, |G| 2: Dice 2/4, IoU 1/3 */
    assert_true(fabs(d - 0.5) < 1e-12 && fabs(j - 1.0 / 3.0) < 1e-12);
    bench_dice_iou(none, none, 4, &d, &j);  /* both empty: a perfect (empty) prediction */
    assert_true(d == 1.0 && j == 1.0);
    bench_dice_iou(pred, none, 4, &d, &j);
    assert_true(d == 0.0 && j == 0.0);
}

static void test_detection_metrics_hand_case(void **st) {
    (void)st;
    /* image A: one GT; a perfect box (0.9, TP), a far box (0.8, FP), a half box (0.6, IoU 0.5 with
     * the GT already taken: FP).  image B: two GT; an exact hit on the second (0.7, TP) and a half
     * box on the first (0.4, IoU 0.5: TP).  Ranked: TP FP TP FP TP over 3 GT boxes and 2 images:
     *   precision 1, 1/2, 2/3, 1/2, 3/5; recall 1/3, 1/3, 2/3, 2/3, 1; FP/image 0, .5, .5, 1, 1
     *   AP (precision made monotone from the right: 1, 2/3, 2/3, 3/5, 3/5) = 1/3 + 2/9 + 1/5 = 34/45
     *   FROC: sensitivity 2/3 at 0.5 FP/image, 1 at 1 and 2
     *   paper: A keeps its three boxes (score >= 0.5; the half box has IoU 0.5, not > 0.5, with the
     *   perfect one) -> best IoU 1; B keeps only the 0.7 box -> (0 + 1) / 2; mean (1 + 0.5) / 2 */
    const float ga[4] = {0, 0, 10, 10}, da[12] = {0, 0, 10, 10, 20, 20, 30, 30, 0, 0, 10, 5}, sa[3] = {0.9f, 0.8f, 0.6f};
    const float gb[8] = {0, 0, 10, 10, 50, 50, 60, 60}, db[8] = {50, 50, 60, 60, 0, 0, 5, 10}, sb[2] = {0.7f, 0.4f};
    const BenchDetImage im[2] = {{.n_det = 3, .n_gt = 1, .boxes = da, .scores = sa, .gt = ga},
                                 {.n_det = 2, .n_gt = 2, .boxes = db, .scores = sb, .gt = gb}};
    double out[5];
    bench_det_metrics(im, 2, NULL, out);
    print_message("  detection: mean IoU %.4f, AP@0.5 %.4f, FROC %.4f %.4f %.4f\n", out[0], out[1], out[2], out[3], out[4]);
    assert_true(fabs(out[0] - 0.75) < 1e-9);
    assert_true(fabs(out[1] - 34.0 / 45.0) < 1e-9);
    assert_true(fabs(out[2] - 2.0 / 3.0) < 1e-9);
    assert_true(fabs(out[3] - 1.0) < 1e-9 && fabs(out[4] - 1.0) < 1e-9);
    /* a bootstrap resample as multiplicities: image A twice, B not drawn -> 2 GT, both found by the
     * top-scored detection of each copy: AP 1; FPs 2 x 2 over 2 images */
    const uint32_t w[2] = {2, 0};
    bench_det_metrics(im, 2, w, out);
    assert_true(fabs(out[0] - 1.0) < 1e-9);
    assert_true(fabs(out[1] - 1.0) < 1e-9);
    assert_true(fabs(out[2] - 1.0) < 1e-9);
    /* no GT at all: undefined, not 0 */
    const BenchDetImage empty = {.n_det = 1, .n_gt = 0, .boxes = da, .scores = sa, .gt = NULL};
    bench_det_metrics(&empty, 1, NULL, out);
    assert_true(isnan(out[0]) && isnan(out[1]) && isnan(out[2]));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_auc_hand_cases),
        cmocka_unit_test(test_binary_vs_sklearn),
        cmocka_unit_test(test_multiclass_vs_sklearn),
        cmocka_unit_test(test_multilabel_vs_sklearn),
        cmocka_unit_test(test_retrieval_vs_numpy),
        cmocka_unit_test(test_knn_vs_dino_rule),
        cmocka_unit_test(test_percentile_vs_numpy),
        cmocka_unit_test(test_bootstrap_known_case),
        cmocka_unit_test(test_paired_difference),
        cmocka_unit_test(test_eval_perfect),
        cmocka_unit_test(test_dice_iou_hand_cases),
        cmocka_unit_test(test_detection_metrics_hand_case),
    };
    return RUN_GROUP(tests);
}
