/* test_ops_norm.c — softmax, log-softmax, layer norm, L2 normalisation and batch norm:
 * finite-difference gradient checks (contiguous and transposed inputs, batch norm in training
 * and eval mode), PyTorch references (tests/ref/ops_norm.py -> tests/ref/data/ops_norm.h5),
 * numerical stability with +-1000 logits, shape errors and thread-count determinism. */
#include "tests/common/testutil.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* reference-file helpers */

/* outputs: 1e-5 relative; input gradients: 1e-5 of the gradient scale + 1e-4 relative */
#define OUT_ATOL 1e-6
#define OUT_RTOL 1e-5
#define GRAD_ATOL 1e-5
#define GRAD_RTOL 1e-4

/* ---------------------------------------------------------------------------------------- */
/* PyTorch references */

typedef Tensor *(*RowOp)(Ctx *c, Tensor *x, float eps);
static Tensor *row_softmax(Ctx *c, Tensor *x, float eps) { (void)eps; return op_softmax(c, x); }
static Tensor *row_log_softmax(Ctx *c, Tensor *x, float eps) { (void)eps; return op_log_softmax(c, x); }
static Tensor *row_l2_normalize(Ctx *c, Tensor *x, float eps) { return op_l2_normalize(c, x, eps); }

static void ref_row_op(RefFile *r, const char *grp, RowOp op, float eps) {
    Ctx c;
    ctx_init(&c, 1);
    RefArr x = ref_arr(r, grp, "x"), dy = ref_arr(r, grp, "dy"), y = ref_arr(r, grp, "y"), dx = ref_arr(r, grp, "dx");
    Tensor *xt = ref_arr_tensor(&c, &x, 1);
    Tensor *yt = op(&c, xt, eps);
    char what[64];
    snprintf(what, sizeof what, "%s y", grp);
    ref_check(what, yt->data, &y, OUT_ATOL, OUT_RTOL);
    backward_from(&c, yt, dy.v);
    snprintf(what, sizeof what, "%s dx", grp);
    ref_check(what, xt->grad, &dx, GRAD_ATOL, GRAD_RTOL);
    free(x.v), free(dy.v), free(y.v), free(dx.v);
    ctx_free(&c);
}

static void test_softmax_ref(void **st) {
    (void)st;
    RefFile *r = ref_open("ops_norm");
    ref_row_op(r, "softmax", row_softmax, 0);
    ref_row_op(r, "log_softmax", row_log_softmax, 0);
    ref_row_op(r, "softmax_large", row_softmax, 0);
    ref_row_op(r, "log_softmax_large", row_log_softmax, 0);
    ref_close(r);
}

static void test_l2_normalize_ref(void **st) {
    (void)st;
    RefFile *r = ref_open("ops_norm");
    RefArr eps = ref_arr(r, "l2_normalize", "eps");
    /* row 2 has ||x|| < eps: there the gradient is dy / eps, ~1000x the others */
    ref_row_op(r, "l2_normalize", row_l2_normalize, eps.v[0]);
    free(eps.v);
    ref_close(r);
}

static void ref_layernorm(RefFile *r, const char *grp, int affine) {
    Ctx c;
    ctx_init(&c, 1);
    RefArr x = ref_arr(r, grp, "x"), dy = ref_arr(r, grp, "dy"), y = ref_arr(r, grp, "y"), dx = ref_arr(r, grp, "dx");
    RefArr eps = ref_arr(r, grp, "eps");
    RefArr w = {0}, b = {0}, dw = {0}, db = {0};
    Tensor *wt = NULL, *bt = NULL;
    if (affine) {
        w = ref_arr(r, grp, "w"), b = ref_arr(r, grp, "b"), dw = ref_arr(r, grp, "dw"), db = ref_arr(r, grp, "db");
        wt = ref_arr_tensor(&c, &w, 1);
        bt = ref_arr_tensor(&c, &b, 1);
    }
    Tensor *xt = ref_arr_tensor(&c, &x, 1);
    Tensor *yt = op_layernorm(&c, xt, wt, bt, eps.v[0]);
    char what[64];
    snprintf(what, sizeof what, "%s y", grp);
    ref_check(what, yt->data, &y, OUT_ATOL, OUT_RTOL);
    backward_from(&c, yt, dy.v);
    snprintf(what, sizeof what, "%s dx", grp);
    ref_check(what, xt->grad, &dx, GRAD_ATOL, GRAD_RTOL);
    if (affine) {
        snprintf(what, sizeof what, "%s dw", grp);
        ref_check(what, wt->grad, &dw, GRAD_ATOL, GRAD_RTOL);
        snprintf(what, sizeof what, "%s db", grp);
        ref_check(what, bt->grad, &db, GRAD_ATOL, GRAD_RTOL);
    }
    free(x.v), free(dy.v), free(y.v), free(dx.v), free(eps.v);
    free(w.v), free(b.v), free(dw.v), free(db.v);
    ctx_free(&c);
}

static void test_layernorm_ref(void **st) {
    (void)st;
    RefFile *r = ref_open("ops_norm");
    ref_layernorm(r, "layernorm", 1);
    ref_layernorm(r, "layernorm_noaffine", 0);
    ref_close(r);
}

static void ref_batchnorm(RefFile *r, const char *grp, int training) {
    Ctx c;
    ctx_init(&c, 1);
    c.training = training;
    RefArr x = ref_arr(r, grp, "x"), dy = ref_arr(r, grp, "dy"), w = ref_arr(r, grp, "w"), b = ref_arr(r, grp, "b");
    RefArr rm0 = ref_arr(r, grp, "running_mean0"), rv0 = ref_arr(r, grp, "running_var0");
    RefArr rm1 = ref_arr(r, grp, "running_mean1"), rv1 = ref_arr(r, grp, "running_var1");
    RefArr y = ref_arr(r, grp, "y"), dx = ref_arr(r, grp, "dx"), dw = ref_arr(r, grp, "dw"), db = ref_arr(r, grp, "db");
    RefArr mom = ref_arr(r, grp, "momentum"), eps = ref_arr(r, grp, "eps");
    Tensor *xt = ref_arr_tensor(&c, &x, 1), *wt = ref_arr_tensor(&c, &w, 1), *bt = ref_arr_tensor(&c, &b, 1);
    /* the op updates the buffers in place (training) */
    float *rm = rm0.v, *rv = rv0.v;
    Tensor *yt = op_batchnorm(&c, xt, wt, bt, rm, rv, mom.v[0], eps.v[0]);
    char what[64];
    snprintf(what, sizeof what, "%s y", grp);
    ref_check(what, yt->data, &y, OUT_ATOL, OUT_RTOL);
    snprintf(what, sizeof what, "%s running_mean", grp);
    ref_check(what, rm, &rm1, OUT_ATOL, OUT_RTOL);
    snprintf(what, sizeof what, "%s running_var", grp);
    ref_check(what, rv, &rv1, OUT_ATOL, OUT_RTOL);
    backward_from(&c, yt, dy.v);
    snprintf(what, sizeof what, "%s dx", grp);
    ref_check(what, xt->grad, &dx, GRAD_ATOL, GRAD_RTOL);
    snprintf(what, sizeof what, "%s dw", grp);
    ref_check(what, wt->grad, &dw, GRAD_ATOL, GRAD_RTOL);
    snprintf(what, sizeof what, "%s db", grp);
    ref_check(what, bt->grad, &db, GRAD_ATOL, GRAD_RTOL);
    RefArr *all[] = {&x, &dy, &w, &b, &rm0, &rv0, &rm1, &rv1, &y, &dx, &dw, &db, &mom, &eps};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) free(all[i]->v);
    ctx_free(&c);
}

static void test_batchnorm_ref(void **st) {
    (void)st;
    RefFile *r = ref_open("ops_norm");
    ref_batchnorm(r, "batchnorm_train", 1);
    ref_batchnorm(r, "batchnorm_eval", 0);  /* running stats must come back unchanged */
    ref_batchnorm(r, "batchnorm_train_2d", 1);
    ref_close(r);
}

/* ---------------------------------------------------------------------------------------- */
/* finite-difference gradient checks */

static Tensor *gc_softmax(Ctx *c, Tensor **in, void *ud) { (void)ud; return op_softmax(c, in[0]); }
static Tensor *gc_log_softmax(Ctx *c, Tensor **in, void *ud) { (void)ud; return op_log_softmax(c, in[0]); }
static Tensor *gc_l2_normalize(Ctx *c, Tensor **in, void *ud) { return op_l2_normalize(c, in[0], *(float *)ud); }
static Tensor *gc_layernorm(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_layernorm(c, in[0], in[1], in[2], 1e-5f);
}
static Tensor *gc_layernorm_noaffine(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_layernorm(c, in[0], NULL, NULL, 1e-5f);
}

typedef struct BnArgs {
    float running_mean[8], running_var[8];
    int with_running, affine;
} BnArgs;

static Tensor *gc_batchnorm(Ctx *c, Tensor **in, void *ud) {
    BnArgs *a = ud;
    return op_batchnorm(c, in[0], a->affine ? in[1] : NULL, a->affine ? in[2] : NULL,
                        a->with_running ? a->running_mean : NULL, a->with_running ? a->running_var : NULL, 0.1f,
                        1e-5f);
}

static Tensor *gc_batchnorm_silu(Ctx *c, Tensor **in, void *ud) {
    BnArgs *a = ud;
    return op_batchnorm_silu(c, in[0], a->affine ? in[1] : NULL, a->affine ? in[2] : NULL,
                             a->with_running ? a->running_mean : NULL, a->with_running ? a->running_var : NULL, 0.1f,
                             1e-5f);
}

static GcInput transposed(GcInput in) {
    in.transposed = 1;
    return in;
}

/* gradcheck, printing the worst |analytic - numeric| / tolerance (it fails the test above 1) */
static void gc(const char *what, GcFn f, const GcInput *in, int n_in, void *ud, GcOpts o) {
    double worst = gradcheck(what, f, in, n_in, ud, o);
    printf("    gradcheck %-46s worst err/tol = %.3f\n", what, worst);
}

static void test_gradcheck_softmax(void **st) {
    (void)st;
    GcOpts o = {0};
    GcInput x = GC_IN(3, 2, 3, 5);
    x.lo = -3, x.hi = 3;
    gc("softmax", gc_softmax, &x, 1, NULL, o);
    gc("log_softmax", gc_log_softmax, &x, 1, NULL, o);
    GcInput xt = transposed(x);
    gc("softmax (transposed view)", gc_softmax, &xt, 1, NULL, o);
    gc("log_softmax (transposed view)", gc_log_softmax, &xt, 1, NULL, o);
}

static void test_gradcheck_layernorm(void **st) {
    (void)st;
    GcOpts o = {0};
    GcInput in[3] = {GC_IN(3, 2, 3, 6), GC_IN(1, 6), GC_IN(1, 6)};
    in[1].lo = 0.5f, in[1].hi = 1.5f;
    gc("layernorm", gc_layernorm, in, 3, NULL, o);
    in[0] = transposed(in[0]);   /* (2, 6, 3) base viewed as (2, 3, 6) */
    gc("layernorm (transposed view)", gc_layernorm, in, 3, NULL, o);
    gc("layernorm no affine", gc_layernorm_noaffine, in, 1, NULL, o);
    /* constant weight: only x and b need gradients */
    in[0].transposed = 0;
    in[1].no_grad = 1;
    gc("layernorm (w constant)", gc_layernorm, in, 3, NULL, o);
}

static void test_gradcheck_l2_normalize(void **st) {
    (void)st;
    GcOpts o = {0};
    float eps = 1e-12f;
    GcInput x = GC_IN(2, 4, 5);
    gc("l2_normalize", gc_l2_normalize, &x, 1, &eps, o);
    GcInput xt = transposed(x);
    gc("l2_normalize (transposed view)", gc_l2_normalize, &xt, 1, &eps, o);
    /* every row below eps: y = x / eps, a linear map */
    float big_eps = 10.0f;
    GcOpts ob = {.atol = 1e-2};
    gc("l2_normalize (clamped)", gc_l2_normalize, &x, 1, &big_eps, ob);
}

static void test_gradcheck_batchnorm(void **st) {
    (void)st;
    GcOpts train = {.training = 1}, eval = {.training = 0};
    GcInput in[3] = {GC_IN(4, 3, 4, 2, 3), GC_IN(1, 4), GC_IN(1, 4)};
    in[1].lo = 0.5f, in[1].hi = 1.5f;
    BnArgs a = {.with_running = 1, .affine = 1};
    for (int ch = 0; ch < 4; ch++) a.running_mean[ch] = 0.1f * (float)ch, a.running_var[ch] = 0.5f + 0.2f * (float)ch;
    gc("batchnorm train", gc_batchnorm, in, 3, &a, train);
    /* the buffers moved towards the batch statistics */
    assert_true(a.running_var[0] != 0.5f && a.running_mean[1] != 0.1f);
    gc("batchnorm eval", gc_batchnorm, in, 3, &a, eval);
    GcInput tin[3] = {transposed(in[0]), in[1], in[2]};
    gc("batchnorm train (transposed view)", gc_batchnorm, tin, 3, &a, train);
    gc("batchnorm eval (transposed view)", gc_batchnorm, tin, 3, &a, eval);
    BnArgs plain = {.with_running = 0, .affine = 0};
    gc("batchnorm train, no affine, no running stats", gc_batchnorm, in, 1, &plain, train);
    GcInput in2[3] = {GC_IN(2, 6, 4), GC_IN(1, 4), GC_IN(1, 4)};
    gc("batchnorm1d (N, C) train", gc_batchnorm, in2, 3, &a, train);
}

/* ---------------------------------------------------------------------------------------- */
/* numerical stability, modes, errors, determinism */

static int all_finite(const float *v, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return 0;
    return 1;
}

static void test_softmax_large_logits(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    /* naive exp(1000) is inf; -INFINITY is how attention masks arrive */
    float x[12] = {1000, 1000, -1000, 999, 0, 1e4f, -1e4f, 1e4f, -INFINITY, 2000, 1999, -INFINITY};
    float dy[12] = {1, -2, 3, 0.5f, -1, 2, 1, -1, 4, 0.25f, 1, 2};
    Tensor *xt = tensor_from(&c, 2, TSHAPE(3, 4), x);
    xt->requires_grad = 1;
    Tensor *p = op_softmax(&c, xt);
    assert_true(all_finite(p->data, 12));
    double e1 = exp(-1.0);
    double z = 2 + e1;  /* row 0: two at 1000, one at 999, one at -1000 */
    assert_float_equal(p->data[0], 1 / z, 1e-6);
    assert_float_equal(p->data[3], e1 / z, 1e-6);
    assert_float_equal(p->data[2], 0.0f, 1e-30);
    assert_float_equal(p->data[8], 0.0f, 0);   /* masked */
    assert_float_equal(p->data[9], 1 / (1 + e1), 1e-6);
    for (int r = 0; r < 3; r++) assert_float_equal(p->data[4 * r] + p->data[4 * r + 1] + p->data[4 * r + 2] + p->data[4 * r + 3], 1.0f, 1e-6);
    backward_from(&c, p, dy);
    assert_true(all_finite(xt->grad, 12));

    Tensor *xl = tensor_from(&c, 2, TSHAPE(3, 4), x);
    xl->requires_grad = 1;
    Tensor *lp = op_log_softmax(&c, xl);
    assert_float_equal(lp->data[0], -log(z), 1e-5);
    assert_float_equal(lp->data[2], -2000 - log(z), 1e-3);
    assert_true(isinf(lp->data[8]) && lp->data[8] < 0);   /* log 0, as PyTorch */
    assert_true(isfinite(lp->data[9]) && isfinite(lp->data[5]));
    backward_from(&c, lp, dy);
    assert_true(all_finite(xl->grad, 12));
    ctx_free(&c);
}

static void test_gradcheck_batchnorm_silu(void **st) {
    (void)st;
    GcOpts train = {.training = 1}, eval = {.training = 0};
    GcInput in[3] = {GC_IN(4, 3, 4, 2, 3), GC_IN(1, 4), GC_IN(1, 4)};
    in[1].lo = 0.5f, in[1].hi = 1.5f;
    BnArgs a = {.with_running = 1, .affine = 1};
    for (int ch = 0; ch < 4; ch++) a.running_mean[ch] = 0.1f * (float)ch, a.running_var[ch] = 0.5f + 0.2f * (float)ch;
    gc("batchnorm_silu train", gc_batchnorm_silu, in, 3, &a, train);
    gc("batchnorm_silu eval", gc_batchnorm_silu, in, 3, &a, eval);
    GcInput tin[3] = {transposed(in[0]), in[1], in[2]};
    gc("batchnorm_silu train (transposed view)", gc_batchnorm_silu, tin, 3, &a, train);
    BnArgs plain = {.with_running = 0, .affine = 0};
    gc("batchnorm_silu train, no affine", gc_batchnorm_silu, in, 1, &plain, train);
}

/* op_batchnorm_silu is op_silu(op_batchnorm(...)) (both checked against PyTorch above / in
 * test_ops_activation) without the stored BN output: the same running statistics bit for bit and
 * outputs and gradients to float rounding (vector vs scalar expf may differ in the last ulp), on the
 * PyTorch reference input and on a (4, 8, 24, 24) input large enough for the threaded paths, in
 * training and eval mode */
static void fused_vs_composed(const char *what, size_t N, size_t C, size_t S, const float *x0, int training) {
    const size_t n = N * C * S;
    float *out[2][4];   /* [fused, composed][y, dx, dw, db] */
    float rm[2][64], rv[2][64];
    assert_true(C <= 64);
    for (int fused = 0; fused < 2; fused++) {
        Ctx c;
        ctx_init(&c, 1);
        c.training = training;
        Tensor *x = tensor_from(&c, 4, TSHAPE(N, C, S, 1), x0);
        Tensor *w = tensor_new_(&c, C), *b = tensor_new_(&c, C);
        for (size_t ch = 0; ch < C; ch++) {
            w->data[ch] = 0.6f + 0.1f * (float)ch;
            b->data[ch] = -0.3f + 0.07f * (float)ch;
            rm[fused][ch] = 0.05f * (float)ch;
            rv[fused][ch] = 0.8f + 0.1f * (float)ch;
        }
        x->requires_grad = w->requires_grad = b->requires_grad = 1;
        Tensor *y = fused ? op_batchnorm_silu(&c, x, w, b, rm[fused], rv[fused], 0.1f, 1e-3f)
                          : op_silu(&c, op_batchnorm(&c, x, w, b, rm[fused], rv[fused], 0.1f, 1e-3f));
        float *dy = malloc(n * sizeof(float));
        for (size_t i = 0; i < n; i++) dy[i] = 0.01f * (float)((i * 7919) % 201) - 1.0f;
        backward_from(&c, y, dy);
        const Tensor *src[4] = {y, x, w, b};
        for (int k = 0; k < 4; k++) {
            size_t m = k ? (k == 1 ? n : C) : n;
            out[fused][k] = malloc(m * sizeof(float));
            memcpy(out[fused][k], k ? src[k]->grad : src[k]->data, m * sizeof(float));
        }
        free(dy);
        ctx_free(&c);
    }
    const char *names[4] = {"y", "dx", "dw", "db"};
    char msg[96];
    for (int k = 0; k < 4; k++) {
        snprintf(msg, sizeof msg, "%s %s", what, names[k]);
        assert_close(msg, out[1][k], out[0][k], k < 2 ? n : C, 1e-6, 1e-5);
        free(out[0][k]);
        free(out[1][k]);
    }
    assert_memory_equal(rm[0], rm[1], C * sizeof(float));
    assert_memory_equal(rv[0], rv[1], C * sizeof(float));
}

static void test_batchnorm_silu_fused(void **st) {
    (void)st;
    RefFile *r = ref_open("ops_norm");
    RefArr x = ref_arr(r, "batchnorm_train", "x");
    size_t C = x.shape[1], S = x.n / (x.shape[0] * C);
    fused_vs_composed("bn_silu ref train", x.shape[0], C, S, x.v, 1);
    fused_vs_composed("bn_silu ref eval", x.shape[0], C, S, x.v, 0);
    free(x.v);
    ref_close(r);
    const size_t N = 4, C2 = 8, S2 = 24 * 24, n = N * C2 * S2;
    float *xb = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) xb[i] = 0.5f * sinf(0.001f * (float)(i * 37 % 9973)) + 0.1f * (float)(i % C2);
    fused_vs_composed("bn_silu (4,8,24,24) train", N, C2, S2, xb, 1);
    fused_vs_composed("bn_silu (4,8,24,24) eval", N, C2, S2, xb, 0);
    free(xb);
}

static void test_batchnorm_modes(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 3);
    size_t n = 2 * 3 * 4;
    float x[24], rm[3] = {0, 0, 0}, rv[3] = {1, 1, 1};
    for (size_t i = 0; i < n; i++) x[i] = (float)((i * 7) % 11) - 5.0f;
    Tensor *xt = tensor_from(&c, 3, TSHAPE(2, 3, 4), x);
    /* no-grad training (e.g. an EMA teacher kept in train mode) still updates the buffers */
    c.training = 1;
    int prev = ctx_set_grad(&c, 0);
    Tensor *y = op_batchnorm(&c, xt, NULL, NULL, rm, rv, 0.5f, 1e-5f);
    ctx_set_grad(&c, prev);
    assert_true(all_finite(y->data, n) && all_finite(rm, 3) && all_finite(rv, 3));
    assert_false(y->requires_grad);
    assert_int_equal(c.tape_len, 0);
    /* channel 0 holds x[0..3] and x[12..15]: check mean, unbiased var, and the output */
    double m = 0, v = 0;
    int idx[8] = {0, 1, 2, 3, 12, 13, 14, 15};
    for (int i = 0; i < 8; i++) m += x[idx[i]] / 8.0;
    for (int i = 0; i < 8; i++) v += (x[idx[i]] - m) * (x[idx[i]] - m);
    assert_float_equal(rm[0], 0.5 * m, 1e-6);
    assert_float_equal(rv[0], 0.5 + 0.5 * v / 7.0, 1e-5);
    assert_float_equal(y->data[1], (x[1] - m) / sqrt(v / 8.0 + 1e-5), 1e-5);
    /* eval with those buffers: y = (x - rm) / sqrt(rv + eps) */
    c.training = 0;
    Tensor *ye = op_batchnorm(&c, xt, NULL, NULL, rm, rv, 0.5f, 1e-5f);
    assert_float_equal(ye->data[13], (x[13] - rm[0]) / sqrtf(rv[0] + 1e-5f), 1e-5);
    assert_float_equal(rm[0], 0.5 * m, 1e-6);   /* eval leaves the buffers alone */
    ctx_free(&c);
}

static void expect_fail(Ctx *c, const char *needle1, const char *needle2) {
    if (!strstr(c->fail_msg, needle1) || (needle2 && !strstr(c->fail_msg, needle2)))
        fail_msg("error message '%s' should name '%s'%s%s", c->fail_msg, needle1, needle2 ? " and " : "",
                 needle2 ? needle2 : "");
}

static void test_shape_errors(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    jmp_buf jb;
    c.fail_jmp = &jb;
    Tensor *x = tensor_zeros_(&c, 2, 3, 4);
    Tensor *w5 = tensor_zeros_(&c, 5);
    if (setjmp(jb) == 0) {
        op_layernorm(&c, x, w5, NULL, 1e-5f);
        fail_msg("layernorm with a (5) weight on (2,3,4) did not fail");
    }
    expect_fail(&c, "op_layernorm", "(2,3,4)");
    if (setjmp(jb) == 0) {
        op_batchnorm(&c, x, NULL, w5, NULL, NULL, 0.1f, 1e-5f);
        fail_msg("batchnorm with a (5) bias on 3 channels did not fail");
    }
    expect_fail(&c, "op_batchnorm", "(5)");
    c.training = 0;
    if (setjmp(jb) == 0) {
        op_batchnorm(&c, x, NULL, NULL, NULL, NULL, 0.1f, 1e-5f);
        fail_msg("batchnorm in eval mode without running stats did not fail");
    }
    expect_fail(&c, "op_batchnorm", "running_mean");
    c.training = 1;
    Tensor *one = tensor_zeros_(&c, 1, 3);
    if (setjmp(jb) == 0) {
        op_batchnorm(&c, one, NULL, NULL, NULL, NULL, 0.1f, 1e-5f);
        fail_msg("training batchnorm with one value per channel did not fail");
    }
    expect_fail(&c, "op_batchnorm", "(1,3)");
    ctx_free(&c);
}

/* Large enough to take the parallel paths: results must not depend on the thread count. */
static void run_norms(int threads, float *out, size_t n_out) {
    omp_set_num_threads(threads);
    Ctx c;
    ctx_init(&c, 7);
    size_t B = 64, C = 96, S = 16;  /* (64, 96, 16) = 98304 elements */
    Tensor *x = tensor_new_(&c, B, C, S);
    rng_fill_normal(&c.rng, x->data, x->numel, 0.5f, 2.0f);
    x->requires_grad = 1;
    Tensor *w = tensor_new_(&c, C), *b = tensor_new_(&c, C), *wl = tensor_new_(&c, S);
    rng_fill_uniform(&c.rng, w->data, C, 0.5f, 1.5f);
    rng_fill_uniform(&c.rng, b->data, C, -0.5f, 0.5f);
    rng_fill_uniform(&c.rng, wl->data, S, 0.5f, 1.5f);
    w->requires_grad = b->requires_grad = wl->requires_grad = 1;
    float rm[96] = {0}, rv[96];
    for (size_t i = 0; i < C; i++) rv[i] = 1;
    Tensor *y1 = op_batchnorm(&c, x, w, b, rm, rv, 0.1f, 1e-5f);
    Tensor *y2 = op_layernorm(&c, y1, wl, NULL, 1e-5f);
    Tensor *y3 = op_softmax(&c, y2);
    float *dy = malloc(x->numel * sizeof(float));
    Rng r;
    rng_init(&r, 99);
    rng_fill_normal(&r, dy, x->numel, 0, 1);
    backward_from(&c, y3, dy);
    free(dy);
    size_t k = 0;
    const float *parts[] = {y3->data, x->grad, w->grad, b->grad, wl->grad, rm, rv};
    size_t sizes[] = {x->numel, x->numel, C, C, S, C, C};
    for (int p = 0; p < 7; p++)
        for (size_t i = 0; i < sizes[p] && k < n_out; i++) out[k++] = parts[p][i];
    assert_int_equal(k, n_out);
    ctx_free(&c);
}

static void test_thread_count_determinism(void **st) {
    (void)st;
    size_t n = 2 * 98304 + 4 * 96 + 16;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    int saved = omp_get_max_threads();
    run_norms(1, a, n);
    run_norms(2, b, n);
    omp_set_num_threads(saved);
    assert_memory_equal(a, b, n * sizeof(float));
    free(a);
    free(b);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_softmax_ref),
        cmocka_unit_test(test_l2_normalize_ref),
        cmocka_unit_test(test_layernorm_ref),
        cmocka_unit_test(test_batchnorm_ref),
        cmocka_unit_test(test_gradcheck_softmax),
        cmocka_unit_test(test_gradcheck_layernorm),
        cmocka_unit_test(test_gradcheck_l2_normalize),
        cmocka_unit_test(test_gradcheck_batchnorm),
        cmocka_unit_test(test_gradcheck_batchnorm_silu),
        cmocka_unit_test(test_batchnorm_silu_fused),
        cmocka_unit_test(test_softmax_large_logits),
        cmocka_unit_test(test_batchnorm_modes),
        cmocka_unit_test(test_shape_errors),
        cmocka_unit_test(test_thread_count_determinism),
    };
    return RUN_GROUP(tests);
}
