/* test_ops_activation.c — gelu, silu, sigmoid, relu, tanh, exp, log, sqrt, dropout, drop-path:
 * finite-difference gradients (contiguous and strided), PyTorch references, and for the
 * stochastic ops statistics (kept fraction, scaling), determinism and the eval identity. */
#include "tests/common/testutil.h"
#include "tests/engine/ops_ref.h"
#include <math.h>
#include <omp.h>
#include <string.h>

typedef Tensor *(*UnaryFn)(Ctx *, Tensor *);
typedef struct Unary {
    const char *name;
    UnaryFn fn;
    float lo, hi;  /* input range for the gradient check */
} Unary;

static const Unary UNARY[] = {
    {"gelu", op_gelu, -3, 3},  {"silu", op_silu, -3, 3}, {"sigmoid", op_sigmoid, -3, 3},
    {"tanh", op_tanh, -2, 2},  {"exp", op_exp, -2, 2},   {"log", op_log, 0.2f, 3},
    {"sqrt", op_sqrt, 0.2f, 3},
};

static Tensor *f_unary(Ctx *c, Tensor **in, void *ud) { return ((const Unary *)ud)->fn(c, in[0]); }

/* relu(x - P) with x in [0.1, 0.9] and P alternating 0/1: both signs, never within 0.1 of the
 * kink, so the finite difference (h = 0.01) never straddles it */
static Tensor *f_relu_shifted(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    Tensor *p = tensor_new(c, in[0]->ndim, in[0]->shape);
    for (size_t i = 0; i < p->numel; i++) p->data[i] = (float)(i % 2);
    return op_relu(c, op_sub(c, in[0], p));
}

static Tensor *f_relu_shifted_twice(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    Tensor *p = tensor_new(c, in[0]->ndim, in[0]->shape);
    for (size_t i = 0; i < p->numel; i++) p->data[i] = (float)(i % 2);
    Tensor *y = op_sub(c, in[0], p);
    return op_add(c, op_relu(c, y), op_relu(c, y));
}

static void test_unary_gradcheck(void **st) {
    (void)st;
    GcOpts o = {0};
    char what[64];
    for (size_t k = 0; k < sizeof UNARY / sizeof UNARY[0]; k++) {
        GcInput in = GC_IN(3, 2, 3, 4);
        in.lo = UNARY[k].lo;
        in.hi = UNARY[k].hi;
        snprintf(what, sizeof what, "%s", UNARY[k].name);
        gradcheck(what, f_unary, &in, 1, (void *)&UNARY[k], o);
        in.transposed = 1;
        snprintf(what, sizeof what, "%s strided", UNARY[k].name);
        gradcheck(what, f_unary, &in, 1, (void *)&UNARY[k], o);
        in.transposed = 0;  /* contiguous: both applications add into x's own gradient */
        Twice tw = {f_unary, (void *)&UNARY[k]};
        snprintf(what, sizeof what, "%s twice", UNARY[k].name);
        gradcheck(what, f_twice, &in, 1, &tw, o);
    }
    GcInput r = GC_IN(3, 2, 3, 4);
    r.lo = 0.1f;
    r.hi = 0.9f;
    gradcheck("relu", f_relu_shifted, &r, 1, NULL, o);
    r.transposed = 1;
    gradcheck("relu strided", f_relu_shifted, &r, 1, NULL, o);
    gradcheck("relu twice", f_relu_shifted_twice, &r, 1, NULL, o);
}

static Tensor *f_dropout(Ctx *c, Tensor **in, void *ud) { return op_dropout(c, in[0], *(const float *)ud); }
static Tensor *f_drop_path(Ctx *c, Tensor **in, void *ud) { return op_drop_path(c, in[0], *(const float *)ud); }

/* gradcheck reseeds c->rng before every evaluation, so each one draws the same mask */
static void test_stochastic_gradcheck(void **st) {
    (void)st;
    GcOpts o = {.training = 1};
    float p = 0.3f;
    GcInput in = GC_IN(3, 4, 5, 6);
    double w = gradcheck("dropout", f_dropout, &in, 1, &p, o);
    assert_true(w < 1);
    in.transposed = 1;
    gradcheck("dropout strided", f_dropout, &in, 1, &p, o);
    p = 0.5f;
    GcInput dp = GC_IN(3, 8, 3, 4);
    gradcheck("drop_path", f_drop_path, &dp, 1, &p, o);
    dp.transposed = 1;
    gradcheck("drop_path strided", f_drop_path, &dp, 1, &p, o);
    Twice td = {f_dropout, &p}, tp = {f_drop_path, &p};
    in.transposed = dp.transposed = 0;
    gradcheck("dropout twice", f_twice, &in, 1, &td, o);
    gradcheck("drop_path twice", f_twice, &dp, 1, &tp, o);
    /* eval mode: identity, gradient 1 */
    GcOpts ev = {.training = 0};
    GcInput id = GC_IN(2, 3, 4);
    gradcheck("dropout eval", f_dropout, &id, 1, &p, ev);
}

/* ------------------------------------------------------------------------------------------ */
/* PyTorch references */

#define REF_UNARY(NAME)                                                                            \
    static int ref_##NAME(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {    \
        (void)nx, (void)r, (void)g;                                                                \
        o[0] = op_##NAME(c, x[0]);                                                                 \
        return 1;                                                                                  \
    }
REF_UNARY(gelu)
REF_UNARY(silu)
REF_UNARY(sigmoid)
REF_UNARY(relu)
REF_UNARY(tanh)
REF_UNARY(exp)
REF_UNARY(log)
REF_UNARY(sqrt)

static void test_reference(void **st) {
    (void)st;
    RefTol t = REF_TOL_DEFAULT;
    run_ref_op("gelu", ref_gelu, t);
    run_ref_op("silu", ref_silu, t);
    run_ref_op("sigmoid", ref_sigmoid, t);
    run_ref_op("relu", ref_relu, t);
    run_ref_op("tanh", ref_tanh, t);
    run_ref_op("exp", ref_exp, t);
    run_ref_op("log", ref_log, t);
    run_ref_op("sqrt", ref_sqrt, t);
}

/* ------------------------------------------------------------------------------------------ */
/* Accuracy over a wide range against double-precision libm, on a tensor large enough for the
 * vectorised (libmvec) and parallel paths; the same bits for 1 and 2 threads. */

static double ref_fwd(int k, double x) {
    switch (k) {
    case 0: return 0.5 * x * erfc(-x / sqrt(2.0));
    case 1: return x / (1 + exp(-x));
    case 2: return 1 / (1 + exp(-x));
    case 3: return tanh(x);
    case 4: return exp(x);
    case 5: return log(x);
    default: return sqrt(x);
    }
}
static double ref_grad(int k, double x) {
    double s = 1 / (1 + exp(-x));
    switch (k) {
    case 0: return 0.5 * erfc(-x / sqrt(2.0)) + x * exp(-0.5 * x * x) / sqrt(2 * M_PI);
    case 1: return s * (1 + x * (1 - s));
    case 2: return s * (1 - s);
    case 3: return 1 - tanh(x) * tanh(x);
    case 4: return exp(x);
    case 5: return 1 / x;
    default: return 0.5 / sqrt(x);
    }
}

static void run_unary_large(int k, int threads, float *y_out, float *g_out, size_t n, float lo, float hi) {
    int prev = omp_get_max_threads();
    omp_set_num_threads(threads);
    Ctx c;
    ctx_init(&c, 1);
    Tensor *x = tensor_new_(&c, n);
    for (size_t i = 0; i < n; i++) x->data[i] = lo + (hi - lo) * (float)i / (float)(n - 1);
    x->requires_grad = 1;
    Tensor *y = UNARY[k].fn(&c, x);
    float *ones = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) ones[i] = 1.0f;
    backward_from(&c, y, ones);
    memcpy(y_out, y->data, n * sizeof(float));
    memcpy(g_out, x->grad, n * sizeof(float));
    free(ones);
    ctx_free(&c);
    omp_set_num_threads(prev);
}

static void test_unary_accuracy(void **st) {
    (void)st;
    const size_t n = 100003;  /* odd: vector body and scalar tail both run */
    float *y1 = malloc(n * sizeof(float)), *g1 = malloc(n * sizeof(float));
    float *y2 = malloc(n * sizeof(float)), *g2 = malloc(n * sizeof(float));
    float *wy = malloc(n * sizeof(float)), *wg = malloc(n * sizeof(float));
    /* Outputs: relative 1e-5, no absolute slack, so gelu's negative tail (values down to 1e-22)
     * is checked too; what remains there is the rounding of the argument x / sqrt 2, amplified
     * by erfc's condition number ~x^2 (5e-6 at x = -10).  Gradients: 1e-6 absolute + 1e-5
     * relative; gelu' has a zero near x = -0.75 where its two O(0.2) terms cancel, and
     * sigmoid'/tanh' = y(1-y) / 1-y^2 cancel as y -> 1, as in PyTorch. */
    const float lo[7] = {-10, -20, -20, -10, -20, 1e-3f, 0};
    const float hi[7] = {10, 20, 20, 10, 20, 100, 100};
    char what[64];
    for (int k = 0; k < 7; k++) {
        run_unary_large(k, 2, y2, g2, n, lo[k], hi[k]);
        run_unary_large(k, 1, y1, g1, n, lo[k], hi[k]);
        assert_memory_equal(y1, y2, n * sizeof(float));
        assert_memory_equal(g1, g2, n * sizeof(float));
        for (size_t i = 0; i < n; i++) {
            double x = lo[k] + (hi[k] - lo[k]) * (float)i / (float)(n - 1);
            x = (float)x;
            wy[i] = (float)ref_fwd(k, x);
            wg[i] = (float)(k == 6 && x == 0 ? INFINITY : ref_grad(k, x));
        }
        double ey = 0, eg = 0;
        for (size_t i = 0; i < n; i++) {
            ey = fmax(ey, fabs((double)y1[i] - wy[i]) / fmax(fabs((double)wy[i]), 1e-30));
            if (!(k == 6 && i == 0)) eg = fmax(eg, fabs((double)g1[i] - wg[i]) / (1.0 + fabs((double)wg[i])));
        }
        printf("[ accuracy ] %-8s out max rel err %.2e, grad max err %.2e (relative to 1 + |grad|)\n",
               UNARY[k].name, ey, eg);
        snprintf(what, sizeof what, "%s over [%g, %g]", UNARY[k].name, lo[k], hi[k]);
        assert_close(what, y1, wy, n, 1e-30, 1e-5);
        snprintf(what, sizeof what, "%s' over [%g, %g]", UNARY[k].name, lo[k], hi[k]);
        assert_close(what, g1 + (k == 6), wg + (k == 6), n - (k == 6), 1e-6, 1e-5);
    }
    free(y1), free(g1), free(y2), free(g2), free(wy), free(wg);
}

/* ------------------------------------------------------------------------------------------ */
/* dropout */

/* x all ones (times a ramp so no element is 0), returns y = dropout(x) in c */
static Tensor *make_input(Ctx *c, size_t n) {
    Tensor *x = tensor_new_(c, n);
    for (size_t i = 0; i < n; i++) x->data[i] = 1.0f + (float)(i % 7);
    return x;
}

static void test_dropout_statistics(void **st) {
    (void)st;
    const size_t n = 200000;
    const float p = 0.3f;
    Ctx c;
    ctx_init(&c, 42);
    c.training = 1;
    Tensor *x = make_input(&c, n);
    x->requires_grad = 1;
    Tensor *y = op_dropout(&c, x, p);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        if (y->data[i] != 0.0f) {
            kept++;
            assert_float_equal(y->data[i], x->data[i] / (1.0f - p), 1e-5 * y->data[i]);
        }
    }
    /* binomial: std of the kept fraction is sqrt(p(1-p)/n) = 0.001; allow 5 std */
    double frac = (double)kept / n;
    if (fabs(frac - (1 - p)) > 0.005) fail_msg("dropout kept %.4f, expected %.2f", frac, 1 - p);
    /* the mask is saved: draws made after forward must not change what backward uses */
    for (int i = 0; i < 1000; i++) rng_u32(&c.rng);
    Tensor *other = op_dropout(&c, make_input(&c, 100), 0.5f);
    (void)other;
    float *ones = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++) ones[i] = 1.0f;
    backward_from(&c, y, ones);
    for (size_t i = 0; i < n; i++) {
        float want = y->data[i] != 0.0f ? 1.0f / (1.0f - p) : 0.0f;
        if (x->grad[i] != want) fail_msg("dropout grad %zu: %g, expected %g", i, x->grad[i], want);
    }
    free(ones);
    ctx_free(&c);
}

static void dropout_mask(uint64_t seed, size_t n, float p, int threads, uint8_t *mask) {
    int prev = omp_get_max_threads();
    omp_set_num_threads(threads);
    Ctx c;
    ctx_init(&c, seed);
    c.training = 1;
    Tensor *y = op_dropout(&c, make_input(&c, n), p);
    for (size_t i = 0; i < n; i++) mask[i] = y->data[i] != 0.0f;
    ctx_free(&c);
    omp_set_num_threads(prev);
}

static void test_dropout_determinism(void **st) {
    (void)st;
    const size_t n = 100000;
    uint8_t *a = malloc(n), *b = malloc(n), *d = malloc(n);
    dropout_mask(7, n, 0.4f, 2, a);
    dropout_mask(7, n, 0.4f, 2, b);
    assert_memory_equal(a, b, n);          /* same seed: same mask */
    dropout_mask(7, n, 0.4f, 1, b);
    assert_memory_equal(a, b, n);          /* and for any thread count */
    dropout_mask(8, n, 0.4f, 2, d);
    assert_memory_not_equal(a, d, n);      /* another seed: another mask */
    /* consecutive calls on one context draw different masks */
    Ctx c;
    ctx_init(&c, 7);
    c.training = 1;
    Tensor *x = make_input(&c, 1000);
    Tensor *y1 = op_dropout(&c, x, 0.5f), *y2 = op_dropout(&c, x, 0.5f);
    assert_memory_not_equal(y1->data, y2->data, 1000 * sizeof(float));
    ctx_free(&c);
    free(a), free(b), free(d);
}

static void test_dropout_identity_cases(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    Tensor *x = make_input(&c, 50);
    c.training = 0;
    assert_ptr_equal(op_dropout(&c, x, 0.5f), x);   /* eval */
    assert_ptr_equal(op_drop_path(&c, x, 0.5f), x);
    c.training = 1;
    uint64_t before = c.rng.counter;
    assert_ptr_equal(op_dropout(&c, x, 0.0f), x);   /* p = 0 */
    assert_ptr_equal(op_drop_path(&c, x, 0.0f), x);
    assert_true(c.rng.counter == before);           /* and no draw was made */
    Tensor *z = op_dropout(&c, x, 1.0f);             /* p = 1: everything dropped */
    for (size_t i = 0; i < z->numel; i++) assert_float_equal(z->data[i], 0.0f, 0);
    jmp_buf jb;
    c.fail_jmp = &jb;
    if (setjmp(jb) == 0) {
        op_dropout(&c, x, 1.5f);
        fail_msg("p = 1.5 accepted");
    }
    assert_non_null(strstr(c.fail_msg, "op_dropout"));
    ctx_free(&c);
}

/* ------------------------------------------------------------------------------------------ */
/* drop-path */

static void test_drop_path_statistics(void **st) {
    (void)st;
    const size_t N = 4000, D = 6;
    const float p = 0.3f;
    Ctx c;
    ctx_init(&c, 11);
    c.training = 1;
    Tensor *x = tensor_new_(&c, N, 2, 3);
    for (size_t i = 0; i < x->numel; i++) x->data[i] = 1.0f + (float)(i % 5);
    x->requires_grad = 1;
    Tensor *y = op_drop_path(&c, x, p);
    size_t kept = 0;
    for (size_t s = 0; s < N; s++) {
        int k = y->data[s * D] != 0.0f;
        kept += (size_t)k;
        for (size_t i = 0; i < D; i++) {  /* the whole sample is kept (scaled) or dropped */
            float want = k ? x->data[s * D + i] / (1.0f - p) : 0.0f;
            assert_float_equal(y->data[s * D + i], want, 1e-5 * fabsf(want));
        }
    }
    /* std of the kept fraction sqrt(p(1-p)/N) = 0.0072; allow 5 std */
    double frac = (double)kept / N;
    if (fabs(frac - (1 - p)) > 0.036) fail_msg("drop_path kept %.4f, expected %.2f", frac, 1 - p);
    /* same seed, same samples */
    Ctx c2;
    ctx_init(&c2, 11);
    c2.training = 1;
    Tensor *x2 = tensor_from(&c2, 3, x->shape, x->data);
    Tensor *y2 = op_drop_path(&c2, x2, p);
    assert_memory_equal(y->data, y2->data, x->numel * sizeof(float));
    /* backward: per-sample factor */
    float *ones = malloc(x->numel * sizeof(float));
    for (size_t i = 0; i < x->numel; i++) ones[i] = 1.0f;
    backward_from(&c, y, ones);
    for (size_t s = 0; s < N; s++) {
        float want = y->data[s * D] != 0.0f ? 1.0f / (1.0f - p) : 0.0f;
        for (size_t i = 0; i < D; i++) assert_float_equal(x->grad[s * D + i], want, 0);
    }
    free(ones);
    ctx_free(&c2);
    ctx_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_unary_gradcheck),      cmocka_unit_test(test_stochastic_gradcheck),
        cmocka_unit_test(test_reference),            cmocka_unit_test(test_dropout_statistics),
        cmocka_unit_test(test_dropout_determinism),  cmocka_unit_test(test_dropout_identity_cases),
        cmocka_unit_test(test_drop_path_statistics), cmocka_unit_test(test_unary_accuracy),
    };
    return RUN_GROUP(tests);
}
