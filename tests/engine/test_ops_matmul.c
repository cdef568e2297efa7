/* test_ops_matmul.c — op_matmul and op_linear: finite-difference gradients (plain, batched,
 * broadcast, transposed and non-BLAS views, bias NULL), PyTorch references (float64 truth from
 * tests/ref/ops_matmul.py), shape errors, and bitwise reproducibility across thread counts. */
#include "tests/common/testutil.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---------------------------------------------------------------------------------------- */
/* finite-difference checks */

static Tensor *f_matmul(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_matmul(c, in[0], in[1]);
}
static Tensor *f_linear(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_linear(c, in[0], in[1], in[2]);
}
static Tensor *f_linear_nobias(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_linear(c, in[0], in[1], NULL);
}
/* a (2,3,4) permuted to (4,2,3): strides (1,12,4), no unit stride in the last two dims, so
 * BLAS cannot read it and op_matmul must copy (with gradient) */
static Tensor *f_matmul_permuted(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_matmul(c, op_permute(c, in[0], (int[]){2, 0, 1}), in[1]);
}
/* a batch view whose batches do not stack into rows: dim 1 sliced from 6 to 3 */
static Tensor *f_matmul_sliced_batch(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_matmul(c, op_slice(c, in[0], 1, 1, 4), in[1]);
}
/* x a column slice (row stride 9 > 5 columns), as the q part of a qkv buffer */
static Tensor *f_linear_sliced(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_linear(c, op_slice(c, in[0], 2, 2, 7), in[1], in[2]);
}

/* gradients must add (beta = 1) when a tensor feeds several products */
static Tensor *f_matmul_self(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_matmul(c, in[0], in[0]);   /* a @ a: a is both operands */
}
static Tensor *f_matmul_twice(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_matmul(c, op_matmul(c, in[0], in[1]), in[1]);   /* (a b) b with a broadcast b */
}
static Tensor *f_linear_twice(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_linear(c, op_linear(c, in[0], in[1], in[2]), in[1], in[2]);
}

static GcInput gc_in(int ndim, const size_t *shape, int transposed, int no_grad) {
    GcInput g = {.ndim = ndim, .lo = -1.0f, .hi = 1.0f, .transposed = transposed, .no_grad = no_grad};
    for (int d = 0; d < ndim; d++) g.shape[d] = shape[d];
    return g;
}
#define GCI(tr, ...) gc_in(TNDIM(__VA_ARGS__), TSHAPE(__VA_ARGS__), (tr), 0)

static void test_matmul_gradcheck(void **st) {
    (void)st;
    GcOpts o = {0};
    gradcheck("matmul 2d", f_matmul, (GcInput[]){GCI(0, 4, 5), GCI(0, 5, 3)}, 2, NULL, o);
    gradcheck("matmul batched", f_matmul, (GcInput[]){GCI(0, 2, 3, 4, 5), GCI(0, 2, 3, 5, 3)}, 2, NULL, o);
    gradcheck("matmul broadcast 2-d b", f_matmul, (GcInput[]){GCI(0, 2, 3, 4, 5), GCI(0, 5, 3)}, 2, NULL, o);
    gradcheck("matmul broadcast partial", f_matmul, (GcInput[]){GCI(0, 2, 3, 4, 5), GCI(0, 1, 3, 5, 3)}, 2, NULL, o);
    gradcheck("matmul transposed a", f_matmul, (GcInput[]){GCI(1, 3, 4, 5), GCI(0, 3, 5, 2)}, 2, NULL, o);
    gradcheck("matmul transposed b", f_matmul, (GcInput[]){GCI(0, 3, 4, 5), GCI(1, 3, 5, 2)}, 2, NULL, o);
    gradcheck("matmul transposed both, broadcast", f_matmul, (GcInput[]){GCI(1, 2, 4, 5), GCI(1, 5, 3)}, 2, NULL, o);
    gradcheck("matmul transposed a, broadcast", f_matmul, (GcInput[]){GCI(1, 2, 4, 5), GCI(0, 5, 3)}, 2, NULL, o);
    gradcheck("matmul non-BLAS view", f_matmul_permuted, (GcInput[]){GCI(0, 2, 3, 4), GCI(0, 3, 2)}, 2, NULL, o);
    gradcheck("matmul sliced batch", f_matmul_sliced_batch, (GcInput[]){GCI(0, 2, 6, 3, 4), GCI(0, 4, 2)}, 2, NULL, o);
    gradcheck("matmul a @ a", f_matmul_self, (GcInput[]){GCI(0, 2, 4, 4)}, 1, NULL, o);
    gradcheck("matmul b used twice", f_matmul_twice, (GcInput[]){GCI(0, 2, 3, 4), GCI(0, 4, 4)}, 2, NULL, o);
    gradcheck("matmul b used twice, batched", f_matmul_twice, (GcInput[]){GCI(0, 2, 3, 4), GCI(1, 2, 4, 4)}, 2, NULL,
              o);
    /* constant b: only a's gradient */
    GcInput cb[2] = {GCI(0, 3, 4), gc_in(2, TSHAPE(4, 2), 0, 1)};
    gradcheck("matmul constant b", f_matmul, cb, 2, NULL, o);
}

static void test_linear_gradcheck(void **st) {
    (void)st;
    GcOpts o = {0};
    gradcheck("linear bias", f_linear, (GcInput[]){GCI(0, 2, 3, 5), GCI(0, 4, 5), GCI(0, 4)}, 3, NULL, o);
    gradcheck("linear bias NULL", f_linear_nobias, (GcInput[]){GCI(0, 6, 5), GCI(0, 4, 5)}, 2, NULL, o);
    gradcheck("linear 1-d x", f_linear, (GcInput[]){GCI(0, 5), GCI(0, 3, 5), GCI(0, 3)}, 3, NULL, o);
    gradcheck("linear transposed 2-d x", f_linear, (GcInput[]){GCI(1, 6, 5), GCI(0, 4, 5), GCI(0, 4)}, 3, NULL, o);
    gradcheck("linear transposed 3-d x", f_linear, (GcInput[]){GCI(1, 2, 3, 5), GCI(0, 4, 5), GCI(0, 4)}, 3, NULL, o);
    gradcheck("linear transposed w", f_linear, (GcInput[]){GCI(0, 2, 3, 5), GCI(1, 4, 5), GCI(0, 4)}, 3, NULL, o);
    gradcheck("linear sliced x", f_linear_sliced, (GcInput[]){GCI(0, 2, 3, 9), GCI(0, 4, 5), GCI(0, 4)}, 3, NULL, o);
    gradcheck("linear weight used twice", f_linear_twice, (GcInput[]){GCI(0, 2, 3, 5), GCI(0, 5, 5), GCI(0, 5)}, 3,
              NULL, o);
    gradcheck("linear weight used twice, transposed x", f_linear_twice,
              (GcInput[]){GCI(1, 2, 3, 5), GCI(1, 5, 5), GCI(0, 5)}, 3, NULL, o);
    /* frozen weight (no grad) with a trainable bias */
    GcInput fw[3] = {GCI(0, 3, 5), gc_in(2, TSHAPE(4, 5), 0, 1), GCI(0, 4)};
    gradcheck("linear frozen weight", f_linear, fw, 3, NULL, o);
}

/* ---------------------------------------------------------------------------------------- */
/* PyTorch references */

typedef struct RefCase {
    const char *name;
    int is_linear;
    const char *inputs[3];   /* dataset names of the bases, NULL-terminated */
    int transposed[3];       /* the op sees this base transposed (last two dims) */
} RefCase;

static const RefCase REF_CASES[] = {
    {"matmul_2d", 0, {"a", "b"}, {0, 0}},
    {"matmul_batched", 0, {"a", "b"}, {0, 0}},
    {"matmul_bcast", 0, {"a", "b"}, {0, 0}},
    {"matmul_bcast_partial", 0, {"a", "b"}, {0, 0}},
    {"matmul_trans", 0, {"a", "b"}, {1, 1}},
    {"matmul_trans_bcast", 0, {"a", "b"}, {1, 1}},
    {"linear_bias", 1, {"x", "w", "b"}, {0, 0, 0}},
    {"linear_nobias", 1, {"x", "w"}, {0, 0}},
    {"linear_vec", 1, {"x", "w", "b"}, {0, 0, 0}},
    {"linear_trans", 1, {"x", "w", "b"}, {1, 1, 0}},
};

static float *ref_load(RefFile *r, const char *group, const char *key, size_t *n, int *ndim, size_t *shape) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", group, key);
    return ref_get(r, path, n, ndim, shape);
}

static void test_matmul_reference(void **st) {
    (void)st;
    RefFile *r = ref_open("ops_matmul");
    double worst_out = 0, worst_grad = 0;
    for (size_t k = 0; k < sizeof REF_CASES / sizeof REF_CASES[0]; k++) {
        const RefCase *rc = &REF_CASES[k];
        Ctx c;
        ctx_init(&c, 1);
        Tensor *base[3] = {0}, *in[3] = {0};
        float *data[3] = {0};
        int n_in = 0;
        for (; n_in < 3 && rc->inputs[n_in]; n_in++) {
            size_t n, shape[VT_MAX_DIMS];
            int nd;
            data[n_in] = ref_load(r, rc->name, rc->inputs[n_in], &n, &nd, shape);
            base[n_in] = tensor_from(&c, nd, shape, data[n_in]);
            base[n_in]->requires_grad = 1;
            in[n_in] = rc->transposed[n_in] ? op_transpose(&c, base[n_in], nd - 2, nd - 1) : base[n_in];
        }
        Tensor *out = rc->is_linear ? op_linear(&c, in[0], in[1], in[2]) : op_matmul(&c, in[0], in[1]);
        size_t n_out, n_dout, out_shape[VT_MAX_DIMS];
        int out_nd;
        float *ref_out = ref_load(r, rc->name, "out", &n_out, &out_nd, out_shape);
        float *dout = ref_load(r, rc->name, "dout", &n_dout, NULL, NULL);
        assert_int_equal(out->ndim, out_nd);
        for (int d = 0; d < out_nd; d++) assert_int_equal(out->shape[d], out_shape[d]);
        assert_int_equal(out->numel, n_out);
        char what[128];
        snprintf(what, sizeof what, "%s out", rc->name);
        /* float32 products of <= 7 terms of size ~1: error ~1e-6 */
        assert_close(what, out->data, ref_out, n_out, 2e-6, 2e-6);
        worst_out = fmax(worst_out, max_rel_err(out->data, ref_out, n_out));
        backward_from(&c, out, dout);
        for (int i = 0; i < n_in; i++) {
            char key[16];
            snprintf(key, sizeof key, "d%s", rc->inputs[i]);
            size_t n;
            float *ref_g = ref_load(r, rc->name, key, &n, NULL, NULL);
            assert_int_equal(n, base[i]->numel);
            assert_non_null(base[i]->grad);
            snprintf(what, sizeof what, "%s %s", rc->name, key);
            assert_close(what, base[i]->grad, ref_g, n, 4e-6, 4e-6);
            worst_grad = fmax(worst_grad, max_rel_err(base[i]->grad, ref_g, n));
            free(ref_g);
        }
        for (int i = 0; i < n_in; i++) free(data[i]);
        free(ref_out);
        free(dout);
        ctx_free(&c);
    }
    print_message("matmul/linear vs PyTorch (float64): max rel err out %.2e, grads %.2e\n", worst_out, worst_grad);
    assert_true(worst_out < 1e-6 && worst_grad < 1e-6);
    ref_close(r);
}

/* ---------------------------------------------------------------------------------------- */
/* errors and determinism */

static void test_shape_errors(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    jmp_buf jb;
    c.fail_jmp = &jb;
    Tensor *a = tensor_zeros_(&c, 2, 3), *b = tensor_zeros_(&c, 4, 5);
    if (setjmp(jb) == 0) {
        op_matmul(&c, a, b);
        fail_msg("(2,3) @ (4,5) did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "op_matmul"));
    assert_non_null(strstr(c.fail_msg, "(2,3)"));
    assert_non_null(strstr(c.fail_msg, "(4,5)"));
    Tensor *a3 = tensor_zeros_(&c, 2, 2, 3), *b3 = tensor_zeros_(&c, 3, 3, 4);
    if (setjmp(jb) == 0) {
        op_matmul(&c, a3, b3);
        fail_msg("batch 2 vs 3 did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "broadcast"));
    Tensor *x = tensor_zeros_(&c, 4, 6), *w = tensor_zeros_(&c, 5, 7);
    if (setjmp(jb) == 0) {
        op_linear(&c, x, w, NULL);
        fail_msg("linear (4,6) with weight (5,7) did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "op_linear"));
    assert_non_null(strstr(c.fail_msg, "(5,7)"));
    Tensor *w2 = tensor_zeros_(&c, 5, 6), *bias = tensor_zeros_(&c, 4);
    if (setjmp(jb) == 0) {
        op_linear(&c, x, w2, bias);
        fail_msg("bias (4) for weight (5,6) did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "bias (4)"));
    ctx_free(&c);
}

/* forward + backward of a linear (one big sgemm, threaded by OpenBLAS) and a batched matmul
 * (OpenMP over batches); returns a malloc'd concatenation of outputs and gradients, split at
 * *n_linear: [y, dx, dw, db | s, dqa, dkb] */
static float *run_products(int threads, size_t *n_res, size_t *n_linear) {
    omp_set_num_threads(threads);
    Ctx c;
    ctx_init(&c, 7);
    Rng r;
    rng_init(&r, 99);
    Tensor *x = tensor_new_(&c, 4, 96, 192), *w = tensor_new_(&c, 320, 192), *b = tensor_new_(&c, 320);
    Tensor *qa = tensor_new_(&c, 12, 96, 64), *kb = tensor_new_(&c, 12, 96, 64);
    Tensor *ts[5] = {x, w, b, qa, kb};
    for (int i = 0; i < 5; i++) {
        rng_fill_normal(&r, ts[i]->data, ts[i]->numel, 0, 1);
        ts[i]->requires_grad = 1;
    }
    Tensor *y = op_linear(&c, x, w, b);                          // (4, 96, 320)
    Tensor *s = op_matmul(&c, qa, op_transpose(&c, kb, 1, 2));   // (12, 96, 96)
    float *gy = malloc(y->numel * sizeof(float)), *gs = malloc(s->numel * sizeof(float));
    rng_fill_normal(&r, gy, y->numel, 0, 1);
    rng_fill_normal(&r, gs, s->numel, 0, 1);
    backward_from(&c, y, gy);
    backward_from(&c, s, gs);
    const float *parts[7] = {y->data, x->grad, w->grad, b->grad, s->data, qa->grad, kb->grad};
    size_t sizes[7] = {y->numel, x->numel, w->numel, b->numel, s->numel, qa->numel, kb->numel};
    size_t n = 0;
    for (int i = 0; i < 7; i++) n += sizes[i];
    float *all = malloc(n * sizeof(float)), *p = all;
    for (int i = 0; i < 7; i++) {
        memcpy(p, parts[i], sizes[i] * sizeof(float));
        p += sizes[i];
    }
    *n_res = n;
    *n_linear = sizes[0] + sizes[1] + sizes[2] + sizes[3];
    free(gy);
    free(gs);
    ctx_free(&c);
    return all;
}

static size_t count_bitwise_diff(const float *a, const float *b, size_t n) {
    size_t diff = 0;
    for (size_t i = 0; i < n; i++) diff += memcmp(&a[i], &b[i], sizeof(float)) != 0;
    return diff;
}

/* Same thread count: bitwise identical.  1 vs 2 threads: the OpenMP-over-batches matmul is
 * bitwise identical; the OpenBLAS-threaded linear only to rounding (OpenBLAS splits M/N by the
 * thread count), bounded here at 1e-6 of the largest magnitude. */
static void test_threads_determinism(void **st) {
    (void)st;
    int prev = omp_get_max_threads();
    size_t n1, n2, n3, l1, l2, l3;
    float *r1 = run_products(1, &n1, &l1);
    float *r2 = run_products(2, &n2, &l2);
    float *r3 = run_products(2, &n3, &l3);
    omp_set_num_threads(prev);
    assert_int_equal(n1, n2);
    assert_int_equal(n2, n3);
    size_t d23 = count_bitwise_diff(r2, r3, n2);
    if (d23) fail_msg("2 threads twice: %zu of %zu values differ", d23, n2);
    size_t d_batched = count_bitwise_diff(r1 + l1, r2 + l2, n1 - l1);
    if (d_batched) fail_msg("batched matmul 1 vs 2 threads: %zu of %zu values differ", d_batched, n1 - l1);
    double rel = max_rel_err(r2, r1, l1);
    print_message("linear 1 vs 2 threads: %zu of %zu values differ in the last bits, max rel err %.2e\n",
                  count_bitwise_diff(r1, r2, l1), l1, rel);
    assert_true(rel < 1e-6);
    free(r1);
    free(r2);
    free(r3);
}

/* the kernel advice: a generic core on an AVX2/AVX-512 CPU names the right OPENBLAS_CORETYPE,
 * a matching core or an old CPU gets none; an explicit OPENBLAS_CORETYPE silences the note */
static void test_blas_better_core(void **st) {
    (void)st;
    assert_string_equal(engine_blas_better_core("Prescott", 1, 1, 0), "SkylakeX");
    assert_string_equal(engine_blas_better_core("Haswell", 1, 1, 0), "SkylakeX");
    assert_string_equal(engine_blas_better_core("Prescott", 1, 0, 0), "Haswell");
    assert_string_equal(engine_blas_better_core("Sandybridge", 1, 0, 1), "Zen");
    assert_string_equal(engine_blas_better_core(NULL, 1, 1, 1), "SkylakeX");
    assert_null(engine_blas_better_core("SkylakeX", 1, 1, 0));
    assert_null(engine_blas_better_core("skylakex", 1, 1, 0));
    assert_null(engine_blas_better_core("CooperLake", 1, 1, 0));
    assert_null(engine_blas_better_core("Haswell", 1, 0, 0));
    assert_null(engine_blas_better_core("Zen", 1, 0, 1));
    assert_null(engine_blas_better_core("Prescott", 0, 0, 0));
    const char *env = getenv("OPENBLAS_CORETYPE");
    char *saved = env ? strdup(env) : NULL;
    setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    assert_null(engine_blas_advice());
    unsetenv("OPENBLAS_CORETYPE");
    const char *advice = engine_blas_advice();
    print_message("engine_blas_advice: %s\n", advice ? advice : "(none: OpenBLAS runs the CPU's best kernels)");
    if (advice) assert_non_null(strstr(advice, "OPENBLAS_CORETYPE="));
    if (saved) setenv("OPENBLAS_CORETYPE", saved, 1);
    free(saved);
}

/* VERSA_THREADS beats OMP_NUM_THREADS; both set OpenMP, which the OpenMP OpenBLAS follows */
static void test_threads_init(void **st) {
    (void)st;
    int prev = omp_get_max_threads();
    const char *omp_env = getenv("OMP_NUM_THREADS"), *versa_env = getenv("VERSA_THREADS");
    char *omp_saved = omp_env ? strdup(omp_env) : NULL, *versa_saved = versa_env ? strdup(versa_env) : NULL;
    setenv("VERSA_THREADS", "1", 1);
    setenv("OMP_NUM_THREADS", "2", 1);
    assert_int_equal(engine_threads_init(), 1);
    assert_int_equal(omp_get_max_threads(), 1);
    assert_non_null(strstr(engine_blas_info(), ", 1 thread"));
    unsetenv("VERSA_THREADS");
    setenv("OMP_NUM_THREADS", "2,1", 1);   /* a nested list: the first level counts */
    assert_int_equal(engine_threads_init(), 2);
    assert_int_equal(omp_get_max_threads(), 2);
    const char *info = engine_blas_info();
    print_message("engine_blas_info: %s\n", info);
    assert_true(strncmp(info, "OpenBLAS 0.", 11) == 0);
    assert_non_null(strstr(info, "OpenMP build"));
    assert_non_null(strstr(info, ", 2 threads"));
    setenv("OMP_NUM_THREADS", "zero", 1);   /* unusable: falls back to the core count */
    assert_int_equal(engine_threads_init(), (int)sysconf(_SC_NPROCESSORS_ONLN));
    if (omp_saved) setenv("OMP_NUM_THREADS", omp_saved, 1);
    else unsetenv("OMP_NUM_THREADS");
    if (versa_saved) setenv("VERSA_THREADS", versa_saved, 1);
    free(omp_saved);
    free(versa_saved);
    omp_set_num_threads(prev);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matmul_gradcheck), cmocka_unit_test(test_linear_gradcheck),
        cmocka_unit_test(test_matmul_reference), cmocka_unit_test(test_shape_errors),
        cmocka_unit_test(test_threads_determinism), cmocka_unit_test(test_threads_init), cmocka_unit_test(test_blas_better_core),
    };
    return RUN_GROUP(tests);
}
