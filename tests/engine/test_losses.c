/* test_losses.c — engine/loss.c: finite-difference gradient checks of every loss (contiguous and
 * transposed inputs; cross entropy with ignored rows and label smoothing), PyTorch references
 * (tests/ref/losses.py -> tests/ref/data/losses.h5), stability with huge logits, the all-ignored
 * batch, shape errors and thread-count determinism. */
#include "tests/common/testutil.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* reference-file helpers */

/* check_ref: the shared ref_check with the case group and key as its label */
static void check_ref(const char *grp, const char *key, const float *got, const RefArr *ref, double atol_frac,
                      double rtol) {
    char what[64];
    snprintf(what, sizeof what, "%s %s", grp, key);
    ref_check(what, got, ref, atol_frac, rtol);
}

/* losses: 1e-5 relative; gradients: 1e-5 of the gradient scale + 1e-4 relative */
#define LOSS_RTOL 1e-5
#define GRAD_ATOL 1e-5
#define GRAD_RTOL 1e-4

/* ---------------------------------------------------------------------------------------- */
/* PyTorch references */

static void ref_cross_entropy(RefFile *r, const char *grp) {
    Ctx c;
    ctx_init(&c, 1);
    RefArr x = ref_arr(r, grp, "logits"), t = ref_arr(r, grp, "target"), ls = ref_arr(r, grp, "label_smoothing");
    RefArr loss = ref_arr(r, grp, "loss"), dx = ref_arr(r, grp, "dlogits");
    int32_t target[64];
    for (size_t i = 0; i < t.n; i++) target[i] = (int32_t)t.v[i];  /* -100 = ignore */
    Tensor *xt = ref_arr_tensor(&c, &x, 1);
    Tensor *l = loss_cross_entropy(&c, xt, target, ls.v[0]);
    check_ref(grp, "loss", l->data, &loss, 0, LOSS_RTOL);
    backward(&c, l);
    check_ref(grp, "dlogits", xt->grad, &dx, GRAD_ATOL, GRAD_RTOL);
    free(x.v), free(t.v), free(ls.v), free(loss.v), free(dx.v);
    ctx_free(&c);
}

/* the pair losses: inputs a, b with gradients da, db */
typedef Tensor *(*PairLoss)(Ctx *c, Tensor *a, Tensor *b, RefFile *r, const char *grp);

static void ref_pair(RefFile *r, const char *grp, PairLoss fn) {
    Ctx c;
    ctx_init(&c, 1);
    RefArr a = ref_arr(r, grp, "a"), b = ref_arr(r, grp, "b"), loss = ref_arr(r, grp, "loss");
    RefArr da = ref_arr(r, grp, "da"), db = ref_arr(r, grp, "db");
    Tensor *at = ref_arr_tensor(&c, &a, 1), *bt = ref_arr_tensor(&c, &b, 1);
    Tensor *l = fn(&c, at, bt, r, grp);
    check_ref(grp, "loss", l->data, &loss, 0, LOSS_RTOL);
    backward(&c, l);
    check_ref(grp, "da", at->grad, &da, GRAD_ATOL, GRAD_RTOL);
    check_ref(grp, "db", bt->grad, &db, GRAD_ATOL, GRAD_RTOL);
    free(a.v), free(b.v), free(loss.v), free(da.v), free(db.v);
    ctx_free(&c);
}

static float ref_scalar(RefFile *r, const char *grp, const char *key) {
    RefArr s = ref_arr(r, grp, key);
    float v = s.v[0];
    free(s.v);
    return v;
}

static Tensor *pl_ce_soft(Ctx *c, Tensor *a, Tensor *b, RefFile *r, const char *g) {
    (void)r, (void)g;
    return loss_cross_entropy_soft(c, a, b);
}
static Tensor *pl_bce(Ctx *c, Tensor *a, Tensor *b, RefFile *r, const char *g) {
    char key[64];
    snprintf(key, sizeof key, "%s/weight", g);
    if (!ref_has(r, key)) return loss_bce_logits(c, a, b, NULL);
    RefArr w = ref_arr(r, g, "weight");
    Tensor *l = loss_bce_logits(c, a, b, w.v);
    free(w.v);  /* the loss keeps its own copy for backward */
    return l;
}
static Tensor *pl_mse(Ctx *c, Tensor *a, Tensor *b, RefFile *r, const char *g) {
    (void)r, (void)g;
    return loss_mse(c, a, b);
}
static Tensor *pl_smooth_l1(Ctx *c, Tensor *a, Tensor *b, RefFile *r, const char *g) {
    return loss_smooth_l1(c, a, b, ref_scalar(r, g, "beta"));
}
static Tensor *pl_kl(Ctx *c, Tensor *a, Tensor *b, RefFile *r, const char *g) {
    (void)r, (void)g;
    return loss_kl_div(c, a, b);
}
static Tensor *pl_dice(Ctx *c, Tensor *a, Tensor *b, RefFile *r, const char *g) {
    return loss_soft_dice(c, a, b, ref_scalar(r, g, "smooth"));
}

static void test_cross_entropy_ref(void **st) {
    (void)st;
    RefFile *r = ref_open("losses");
    ref_cross_entropy(r, "ce");         /* two of seven rows ignored */
    ref_cross_entropy(r, "ce_smooth");  /* same, label smoothing 0.1 */
    ref_cross_entropy(r, "ce_large");   /* logits +-1000, smoothing 0.2 */
    ref_pair(r, "ce_soft", pl_ce_soft);
    ref_close(r);
}

static void test_elementwise_losses_ref(void **st) {
    (void)st;
    RefFile *r = ref_open("losses");
    ref_pair(r, "bce", pl_bce);          /* includes logits +-50 */
    ref_pair(r, "bce_weight", pl_bce);
    ref_pair(r, "mse", pl_mse);
    ref_pair(r, "smooth_l1", pl_smooth_l1);
    ref_pair(r, "smooth_l1_beta0", pl_smooth_l1);
    ref_pair(r, "kl_div", pl_kl);
    ref_pair(r, "soft_dice", pl_dice);
    ref_close(r);
}

/* ---------------------------------------------------------------------------------------- */
/* finite-difference gradient checks */

typedef struct CeArgs {
    const int32_t *target;
    float ls;
} CeArgs;

static Tensor *gc_ce(Ctx *c, Tensor **in, void *ud) {
    CeArgs *a = ud;
    return loss_cross_entropy(c, in[0], a->target, a->ls);
}
static Tensor *gc_ce_soft(Ctx *c, Tensor **in, void *ud) { (void)ud; return loss_cross_entropy_soft(c, in[0], in[1]); }
static Tensor *gc_bce(Ctx *c, Tensor **in, void *ud) { return loss_bce_logits(c, in[0], in[1], ud); }
static Tensor *gc_mse(Ctx *c, Tensor **in, void *ud) { (void)ud; return loss_mse(c, in[0], in[1]); }
static Tensor *gc_smooth_l1(Ctx *c, Tensor **in, void *ud) { return loss_smooth_l1(c, in[0], in[1], *(float *)ud); }
static Tensor *gc_kl(Ctx *c, Tensor **in, void *ud) { (void)ud; return loss_kl_div(c, in[0], in[1]); }
static Tensor *gc_dice(Ctx *c, Tensor **in, void *ud) { return loss_soft_dice(c, in[0], in[1], *(float *)ud); }

static GcInput transposed(GcInput in) {
    in.transposed = 1;
    return in;
}

/* gradcheck, printing the worst |analytic - numeric| / tolerance (it fails the test above 1) */
static void gc(const char *what, GcFn f, const GcInput *in, int n_in, void *ud, GcOpts o) {
    double worst = gradcheck(what, f, in, n_in, ud, o);
    printf("    gradcheck %-46s worst err/tol = %.3f\n", what, worst);
}

static void test_gradcheck_cross_entropy(void **st) {
    (void)st;
    GcOpts o = {0};
    int32_t target[6] = {2, -1, 0, 3, LOSS_IGNORE_INDEX, 1};
    GcInput x = GC_IN(2, 6, 4);
    x.lo = -3, x.hi = 3;
    CeArgs plain = {target, 0.0f}, smooth = {target, 0.1f};
    gc("cross_entropy (ignored rows)", gc_ce, &x, 1, &plain, o);
    gc("cross_entropy (label smoothing 0.1)", gc_ce, &x, 1, &smooth, o);
    GcInput xt = transposed(x);
    gc("cross_entropy (transposed view)", gc_ce, &xt, 1, &smooth, o);
    /* (B, T, K) logits: every leading dim is a row */
    GcInput x3 = GC_IN(3, 2, 3, 4);
    gc("cross_entropy (B, T, K)", gc_ce, &x3, 1, &smooth, o);

    GcInput in[2] = {GC_IN(2, 3, 5), GC_IN(2, 3, 5)};
    in[1].lo = 0.0f, in[1].hi = 1.0f;
    gc("cross_entropy_soft", gc_ce_soft, in, 2, NULL, o);
    GcInput tin[2] = {transposed(in[0]), transposed(in[1])};
    gc("cross_entropy_soft (transposed views)", gc_ce_soft, tin, 2, NULL, o);
}

static void test_gradcheck_elementwise(void **st) {
    (void)st;
    GcOpts o = {0};
    GcInput in[2] = {GC_IN(2, 3, 4), GC_IN(2, 3, 4)};
    GcInput tin[2] = {transposed(in[0]), transposed(in[1])};

    GcInput bin[2] = {GC_IN(2, 3, 4), GC_IN(2, 3, 4)};
    bin[0].lo = -4, bin[0].hi = 4;
    bin[1].lo = 0, bin[1].hi = 1;
    float w[12] = {0.5f, 1, 2, 0.1f, 1, 1, 3, 0.2f, 1, 0.7f, 1.5f, 1};
    gc("bce_logits", gc_bce, bin, 2, NULL, o);
    gc("bce_logits (weight)", gc_bce, bin, 2, w, o);
    GcInput btin[2] = {transposed(bin[0]), transposed(bin[1])};
    gc("bce_logits (transposed views)", gc_bce, btin, 2, w, o);

    gc("mse", gc_mse, in, 2, NULL, o);
    gc("mse (transposed views)", gc_mse, tin, 2, NULL, o);

    /* the kink at |a - b| = beta: a small step keeps the difference quotient on one side */
    GcOpts fine = {.h = 1e-3};
    float beta = 0.5f, beta0 = 0.0f;
    gc("smooth_l1", gc_smooth_l1, in, 2, &beta, fine);
    gc("smooth_l1 (transposed views)", gc_smooth_l1, tin, 2, &beta, fine);
    gc("smooth_l1 (beta 0 = L1)", gc_smooth_l1, in, 2, &beta0, fine);

    gc("kl_div", gc_kl, in, 2, NULL, o);
    gc("kl_div (transposed views)", gc_kl, tin, 2, NULL, o);

    float smooth = 1.0f;
    GcInput din[2] = {GC_IN(3, 2, 3, 4), GC_IN(3, 2, 3, 4)};
    din[0].lo = din[1].lo = 0.05f;
    din[0].hi = din[1].hi = 0.95f;
    gc("soft_dice", gc_dice, din, 2, &smooth, o);
    GcInput dtin[2] = {transposed(din[0]), transposed(din[1])};
    gc("soft_dice (transposed views)", gc_dice, dtin, 2, &smooth, o);
}

/* ---------------------------------------------------------------------------------------- */
/* edge cases, errors, determinism */

static void test_cross_entropy_all_ignored(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    float x[6] = {1, 2, 3, 4, 5, 6};
    int32_t target[2] = {LOSS_IGNORE_INDEX, -1};
    Tensor *xt = tensor_from(&c, 2, TSHAPE(2, 3), x);
    xt->requires_grad = 1;
    Tensor *l = loss_cross_entropy(&c, xt, target, 0.1f);
    assert_float_equal(l->data[0], 0.0f, 0);  /* PyTorch would give NaN */
    backward(&c, l);
    for (int i = 0; i < 6; i++) assert_float_equal(xt->grad[i], 0.0f, 0);
    ctx_free(&c);
}

static void test_cross_entropy_hand_values(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    /* uniform logits: loss = log K for any target and smoothing; gradient (1/K - q) / N */
    float x[8] = {0.3f, 0.3f, 0.3f, 0.3f, -2, -2, -2, -2};
    int32_t target[2] = {1, 3};
    Tensor *xt = tensor_from(&c, 2, TSHAPE(2, 4), x);
    xt->requires_grad = 1;
    Tensor *l = loss_cross_entropy(&c, xt, target, 0.2f);
    assert_true(isfinite(l->data[0]));
    assert_float_equal(l->data[0], logf(4.0f), 1e-6);
    backward(&c, l);
    /* q = 0.8 one-hot + 0.05 */
    assert_float_equal(xt->grad[1], (0.25f - 0.85f) / 2, 1e-7);
    assert_float_equal(xt->grad[0], (0.25f - 0.05f) / 2, 1e-7);
    /* huge logits stay finite: the target class at 1e4 above the rest costs ~0 */
    float big[4] = {1e4f, -1e4f, 0, 3e4f};
    int32_t tb[1] = {3};
    Tensor *bt = tensor_from(&c, 2, TSHAPE(1, 4), big);
    bt->requires_grad = 1;
    Tensor *lb = loss_cross_entropy(&c, bt, tb, 0.0f);
    assert_true(isfinite(lb->data[0]));
    assert_float_equal(lb->data[0], 0.0f, 1e-6);
    backward(&c, lb);
    for (int i = 0; i < 4; i++) assert_true(isfinite(bt->grad[i]));
    Tensor *lw = loss_cross_entropy(&c, bt, (int32_t[]){1}, 0.0f);   /* the worst class: 4e4 */
    assert_float_equal(lw->data[0], 4e4f, 1e-1);
    ctx_free(&c);
}

static void test_kl_zero_probability(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    /* q = 0 in one class (log q = -inf): contributes 0, as the limit q log q -> 0 */
    float lp[3] = {logf(0.2f), logf(0.3f), logf(0.5f)}, lq[3] = {-INFINITY, logf(0.5f), logf(0.5f)};
    Tensor *p = tensor_from(&c, 2, TSHAPE(1, 3), lp), *q = tensor_from(&c, 2, TSHAPE(1, 3), lq);
    p->requires_grad = q->requires_grad = 1;
    Tensor *l = loss_kl_div(&c, p, q);
    assert_true(isfinite(l->data[0]));  /* assert_float_equal lets NaN through */
    assert_float_equal(l->data[0], 0.5 * log(0.5 / 0.3) + 0.5 * log(1.0), 1e-6);
    backward(&c, l);
    for (int i = 0; i < 3; i++) assert_true(isfinite(p->grad[i]) && isfinite(q->grad[i]));
    assert_float_equal(p->grad[0], 0.0f, 0);
    assert_float_equal(q->grad[0], 0.0f, 0);
    assert_float_equal(p->grad[1], -0.5f, 1e-6);
    ctx_free(&c);
}

static void expect_fail(Ctx *c, const char *needle1, const char *needle2) {
    if (!strstr(c->fail_msg, needle1) || (needle2 && !strstr(c->fail_msg, needle2)))
        fail_msg("error message '%s' should name '%s' and '%s'", c->fail_msg, needle1, needle2 ? needle2 : "");
}

static void test_errors(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    jmp_buf jb;
    c.fail_jmp = &jb;
    Tensor *a = tensor_zeros_(&c, 2, 3), *b = tensor_zeros_(&c, 3, 2);
    if (setjmp(jb) == 0) {
        loss_mse(&c, a, b);
        fail_msg("mse of (2,3) and (3,2) did not fail");
    }
    expect_fail(&c, "loss_mse", "(3,2)");
    if (setjmp(jb) == 0) {
        loss_cross_entropy(&c, a, (int32_t[]){0, 3}, 0.0f);
        fail_msg("cross entropy with target 3 of 3 classes did not fail");
    }
    expect_fail(&c, "loss_cross_entropy", "target[1] = 3");
    if (setjmp(jb) == 0) {
        loss_soft_dice(&c, a, b, 1.0f);
        fail_msg("dice of (2,3) and (3,2) did not fail");
    }
    expect_fail(&c, "loss_soft_dice", "(2,3)");
    ctx_free(&c);
}

/* large enough for the parallel paths; the losses and gradients must not depend on threads */
static void run_losses(int threads, float *out, size_t n_out) {
    omp_set_num_threads(threads);
    Ctx c;
    ctx_init(&c, 5);
    size_t N = 512, K = 100;
    Tensor *x = tensor_new_(&c, N, K), *q = tensor_new_(&c, N, K);
    rng_fill_normal(&c.rng, x->data, N * K, 0, 3);
    rng_fill_uniform(&c.rng, q->data, N * K, 0, 1);
    x->requires_grad = q->requires_grad = 1;
    int32_t *t = malloc(N * sizeof(int32_t));
    for (size_t i = 0; i < N; i++) t[i] = (i % 7 == 0) ? -100 : (int32_t)rng_below(&c.rng, (uint32_t)K);
    Tensor *ls[6] = {loss_cross_entropy(&c, x, t, 0.1f), loss_cross_entropy_soft(&c, x, q),
                     loss_bce_logits(&c, x, q, NULL),    loss_mse(&c, x, q),
                     loss_smooth_l1(&c, x, q, 1.0f),     loss_soft_dice(&c, q, x, 1.0f)};
    size_t k = 0;
    for (int i = 0; i < 6; i++) {
        backward(&c, ls[i]);
        out[k++] = ls[i]->data[0];
    }
    memcpy(out + k, x->grad, N * K * sizeof(float));
    memcpy(out + k + N * K, q->grad, N * K * sizeof(float));
    assert_int_equal(k + 2 * N * K, n_out);
    free(t);
    ctx_free(&c);
}

static void test_thread_count_determinism(void **st) {
    (void)st;
    size_t n = 6 + 2 * 512 * 100;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    int saved = omp_get_max_threads();
    run_losses(1, a, n);
    run_losses(2, b, n);
    omp_set_num_threads(saved);
    assert_memory_equal(a, b, n * sizeof(float));
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cross_entropy_ref),
        cmocka_unit_test(test_elementwise_losses_ref),
        cmocka_unit_test(test_gradcheck_cross_entropy),
        cmocka_unit_test(test_gradcheck_elementwise),
        cmocka_unit_test(test_cross_entropy_all_ignored),
        cmocka_unit_test(test_cross_entropy_hand_values),
        cmocka_unit_test(test_kl_zero_probability),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_thread_count_determinism),
    };
    return RUN_GROUP(tests);
}
