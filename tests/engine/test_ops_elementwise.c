/* test_ops_elementwise.c — add/sub/mul/div with broadcasting, scale, add_scalar, bias_add:
 * finite-difference gradients (broadcast and strided inputs), PyTorch references, the parallel
 * fast paths on large tensors against a naive loop, thread-count independence, shape errors. */
#include "tests/common/testutil.h"
#include "tests/engine/ops_ref.h"
#include <math.h>
#include <omp.h>
#include <string.h>

typedef Tensor *(*BinFn)(Ctx *, Tensor *, Tensor *);
typedef struct BinOp {
    const char *name;
    BinFn fn;
} BinOp;

static const BinOp BIN_OPS[] = {{"add", op_add}, {"sub", op_sub}, {"mul", op_mul}, {"div", op_div}};

static GcInput transposed(GcInput g) {
    g.transposed = 1;
    return g;
}
static GcInput ranged(GcInput g, float lo, float hi) {
    g.lo = lo;
    g.hi = hi;
    return g;
}

static Tensor *f_binary(Ctx *c, Tensor **in, void *ud) { return ((const BinOp *)ud)->fn(c, in[0], in[1]); }

/* ------------------------------------------------------------------------------------------ */
/* finite differences */

static void test_binary_gradcheck(void **st) {
    (void)st;
    const struct {
        GcInput a, b;
    } cases[] = {
        {GC_IN(3, 2, 3, 4), GC_IN(2, 3, 1)},                       /* (2,3,4) + (3,1) */
        {GC_IN(1, 4), GC_IN(3, 2, 3, 4)},                          /* (4) + (2,3,4) */
        {GC_IN(1, 1), GC_IN(2, 5, 6)},                             /* (1) * (5,6) */
        {GC_IN(3, 2, 1, 4), GC_IN(2, 3, 1)},                       /* both broadcast -> (2,3,4) */
        {GC_IN(2, 5, 6), GC_IN(2, 5, 6)},                          /* same shape */
        {transposed(GC_IN(2, 5, 6)), GC_IN(2, 5, 6)},              /* strided a */
        {transposed(GC_IN(3, 2, 3, 4)), GC_IN(1, 4)},              /* strided a, row vector b */
        {GC_IN(3, 3, 4, 5), transposed(GC_IN(2, 4, 5))},           /* strided b broadcast over dim 0 */
        {transposed(GC_IN(2, 1, 4)), transposed(GC_IN(3, 2, 3, 4))}, /* both transposed views */
        {GC_IN(4, 2, 3, 4, 5), GC_IN(4, 2, 3, 1, 1)},              /* per-channel gate (N, C, 1, 1) */
    };
    GcOpts o = {0};
    char what[96];
    for (size_t op = 0; op < 4; op++) {
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            GcInput in[2] = {cases[k].a, cases[k].b};
            if (op == 3) in[1] = ranged(in[1], 0.5f, 1.5f);  /* divisor away from 0 */
            snprintf(what, sizeof what, "%s case %zu", BIN_OPS[op].name, k);
            gradcheck(what, f_binary, in, 2, (void *)&BIN_OPS[op], o);
        }
    }
    /* negative divisors too */
    gradcheck("div negative b", f_binary, (GcInput[]){GC_IN(2, 3, 4), ranged(GC_IN(1, 4), -1.5f, -0.5f)}, 2,
              (void *)&BIN_OPS[3], o);
    /* only one side needs a gradient */
    GcInput nb[2] = {GC_IN(2, 3, 4), GC_IN(1, 4)};
    nb[1].no_grad = 1;
    gradcheck("mul b const", f_binary, nb, 2, (void *)&BIN_OPS[2], o);
}

static Tensor *f_square(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_mul(c, in[0], in[0]);  /* the same tensor on both sides: gradients add */
}
static Tensor *f_scale(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_scale(c, in[0], -1.7f);
}
static Tensor *f_add_scalar(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_add_scalar(c, in[0], 2.5f);
}
static Tensor *f_bias_add(Ctx *c, Tensor **in, void *ud) {
    return op_bias_add(c, in[0], in[1], *(const int *)ud);
}

static void test_scalar_bias_gradcheck(void **st) {
    (void)st;
    GcOpts o = {0};
    gradcheck("x*x", f_square, (GcInput[]){GC_IN(2, 3, 4)}, 1, NULL, o);
    gradcheck("scale", f_scale, (GcInput[]){GC_IN(2, 3, 4)}, 1, NULL, o);
    gradcheck("scale strided", f_scale, (GcInput[]){transposed(GC_IN(2, 3, 4))}, 1, NULL, o);
    gradcheck("add_scalar", f_add_scalar, (GcInput[]){GC_IN(2, 3, 4)}, 1, NULL, o);
    gradcheck("add_scalar strided", f_add_scalar, (GcInput[]){transposed(GC_IN(3, 2, 3, 4))}, 1, NULL, o);
    int d1 = 1, dlast = -1, d0 = 0;
    gradcheck("bias_add NCHW", f_bias_add, (GcInput[]){GC_IN(4, 2, 3, 4, 5), GC_IN(1, 3)}, 2, &d1, o);
    gradcheck("bias_add last", f_bias_add, (GcInput[]){GC_IN(2, 6, 8), GC_IN(1, 8)}, 2, &dlast, o);
    gradcheck("bias_add dim0", f_bias_add, (GcInput[]){GC_IN(2, 6, 8), GC_IN(1, 6)}, 2, &d0, o);
    gradcheck("bias_add strided", f_bias_add, (GcInput[]){transposed(GC_IN(3, 3, 4, 5)), GC_IN(1, 4)}, 2, &d1, o);

    /* gradients add into buffers that already hold a contribution */
    Twice t_scale = {f_scale, NULL}, t_adds = {f_add_scalar, NULL}, t_bias = {f_bias_add, &d1};
    gradcheck("scale twice", f_twice, (GcInput[]){GC_IN(2, 3, 4)}, 1, &t_scale, o);
    gradcheck("add_scalar twice", f_twice, (GcInput[]){GC_IN(2, 3, 4)}, 1, &t_adds, o);
    gradcheck("bias_add twice", f_twice, (GcInput[]){GC_IN(3, 2, 3, 4), GC_IN(1, 3)}, 2, &t_bias, o);
    Twice t_bias_last = {f_bias_add, &dlast};
    gradcheck("bias_add last twice", f_twice, (GcInput[]){GC_IN(3, 2, 3, 4), GC_IN(1, 4)}, 2, &t_bias_last, o);
    for (size_t op = 0; op < 4; op++) {
        Twice tb = {f_binary, (void *)&BIN_OPS[op]};
        char what[64];
        snprintf(what, sizeof what, "%s twice", BIN_OPS[op].name);
        gradcheck(what, f_twice, (GcInput[]){GC_IN(3, 2, 3, 4), ranged(GC_IN(2, 3, 1), 0.5f, 1.5f)}, 2, &tb, o);
        gradcheck(what, f_twice, (GcInput[]){GC_IN(3, 2, 3, 4), ranged(GC_IN(3, 2, 3, 4), 0.5f, 1.5f)}, 2, &tb, o);
        gradcheck(what, f_twice, (GcInput[]){GC_IN(3, 2, 3, 4), ranged(GC_IN(1, 4), 0.5f, 1.5f)}, 2, &tb, o);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* PyTorch references */

static int ref_binary(Ctx *c, Tensor **x, int nx, RefFile *r, const char *grp, Tensor **out, int op) {
    (void)nx, (void)r, (void)grp;
    out[0] = BIN_OPS[op].fn(c, x[0], x[1]);
    return 1;
}
static int ref_add(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) { return ref_binary(c, x, nx, r, g, o, 0); }
static int ref_sub(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) { return ref_binary(c, x, nx, r, g, o, 1); }
static int ref_mul(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) { return ref_binary(c, x, nx, r, g, o, 2); }
static int ref_div(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) { return ref_binary(c, x, nx, r, g, o, 3); }
static int ref_scale(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx;
    o[0] = op_scale(c, x[0], (float)ref_case_scalar(r, g, "s"));
    return 1;
}
static int ref_add_scalar(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx;
    o[0] = op_add_scalar(c, x[0], (float)ref_case_scalar(r, g, "s"));
    return 1;
}
static int ref_bias_add(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx;
    o[0] = op_bias_add(c, x[0], x[1], (int)ref_case_scalar(r, g, "dim"));
    return 1;
}

static void test_reference(void **st) {
    (void)st;
    run_ref_op("add", ref_add, REF_TOL_DEFAULT);
    run_ref_op("sub", ref_sub, REF_TOL_DEFAULT);
    run_ref_op("mul", ref_mul, REF_TOL_DEFAULT);
    run_ref_op("div", ref_div, REF_TOL_DEFAULT);
    run_ref_op("scale", ref_scale, REF_TOL_DEFAULT);
    run_ref_op("add_scalar", ref_add_scalar, REF_TOL_DEFAULT);
    run_ref_op("bias_add", ref_bias_add, REF_TOL_DEFAULT);
}

/* ------------------------------------------------------------------------------------------ */
/* Large tensors: the parallel, chunked and coalesced paths against a naive broadcast loop */

/* offset in x (contiguous, ndim nx, right-aligned against out) of out's flat index o */
static size_t naive_offset(size_t o, int nd, const size_t *oshape, int nx, const size_t *xshape) {
    size_t off = 0, mul = 1;
    for (int d = nd - 1; d >= 0; d--) {
        size_t i = o % oshape[d];
        o /= oshape[d];
        int k = d - (nd - nx);
        if (k < 0) continue;
        if (xshape[k] != 1) off += i * mul;
        mul *= xshape[k];
    }
    return off;
}

static void check_large(int op, int na, const size_t *sa, int nb, const size_t *sb, int transpose_a) {
    Ctx c;
    ctx_init(&c, 3);
    Rng r;
    rng_init(&r, 77);
    size_t shape_a[VT_MAX_DIMS];
    memcpy(shape_a, sa, (size_t)na * sizeof(size_t));
    if (transpose_a) {  /* a is stored swapped and seen through a transpose */
        shape_a[na - 1] = sa[na - 2];
        shape_a[na - 2] = sa[na - 1];
    }
    Tensor *abase = tensor_new(&c, na, shape_a), *b = tensor_new(&c, nb, sb);
    rng_fill_uniform(&r, abase->data, abase->numel, -1, 1);
    rng_fill_uniform(&r, b->data, b->numel, 0.5f, 1.5f);
    abase->requires_grad = b->requires_grad = 1;
    Tensor *a = transpose_a ? op_transpose(&c, abase, na - 2, na - 1) : abase;
    float *ac = malloc(a->numel * sizeof(float));  // a in its logical (contiguous) order
    tensor_copy_to(a, ac);
    Tensor *y = BIN_OPS[op].fn(&c, a, b);
    assert_true(y->numel >= 32768);  /* large enough for the parallel paths */
    float *R = malloc(y->numel * sizeof(float));
    rng_fill_uniform(&r, R, y->numel, -1, 1);
    backward_from(&c, y, R);

    double *ga = calloc(a->numel, sizeof(double)), *gb = calloc(b->numel, sizeof(double));
    for (size_t o = 0; o < y->numel; o++) {
        size_t ia = naive_offset(o, y->ndim, y->shape, na, sa), ib = naive_offset(o, y->ndim, y->shape, nb, sb);
        float x = ac[ia], z = b->data[ib], want;
        switch (op) {
        case 0: want = x + z; ga[ia] += R[o]; gb[ib] += R[o]; break;
        case 1: want = x - z; ga[ia] += R[o]; gb[ib] -= R[o]; break;
        case 2: want = x * z; ga[ia] += (double)R[o] * z; gb[ib] += (double)R[o] * x; break;
        default: want = x / z; ga[ia] += (double)R[o] / z; gb[ib] -= (double)R[o] * x / ((double)z * z); break;
        }
        if (y->data[o] != want) fail_msg("%s large: element %zu: %g vs %g", BIN_OPS[op].name, o, y->data[o], want);
    }
    /* a's gradient is contiguous in a's (logical) shape, whether or not a is a view */
    Tensor *gview = tensor_wrap(&c, abase->grad, na, shape_a);
    Tensor *gat = transpose_a ? op_transpose(&c, gview, na - 2, na - 1) : gview;
    float *gac = malloc(a->numel * sizeof(float));
    tensor_copy_to(gat, gac);
    float *want_a = malloc(a->numel * sizeof(float)), *want_b = malloc(b->numel * sizeof(float));
    for (size_t i = 0; i < a->numel; i++) want_a[i] = (float)ga[i];
    for (size_t i = 0; i < b->numel; i++) want_b[i] = (float)gb[i];
    char what[64];
    snprintf(what, sizeof what, "%s large grad a", BIN_OPS[op].name);
    assert_close(what, gac, want_a, a->numel, 1e-5, 1e-5);
    snprintf(what, sizeof what, "%s large grad b", BIN_OPS[op].name);
    assert_close(what, b->grad, want_b, b->numel, 1e-4, 1e-5);
    free(ac), free(R), free(ga), free(gb), free(gac), free(want_a), free(want_b);
    ctx_free(&c);
}

static void test_large_paths(void **st) {
    (void)st;
    for (int op = 0; op < 4; op++) {
        check_large(op, 3, TSHAPE(16, 33, 80), 1, TSHAPE(80), 0);          /* row vector over rows */
        check_large(op, 2, TSHAPE(300, 200), 2, TSHAPE(300, 200), 0);      /* same shape, flat */
        check_large(op, 2, TSHAPE(300, 200), 2, TSHAPE(300, 200), 1);      /* same shape, a strided */
        check_large(op, 3, TSHAPE(16, 33, 80), 2, TSHAPE(33, 1), 0);       /* middle broadcast */
        check_large(op, 1, TSHAPE(40000), 1, TSHAPE(1), 0);                /* one long run, scalar b */
        check_large(op, 4, TSHAPE(8, 40, 12, 12), 4, TSHAPE(8, 40, 1, 1), 0); /* per-channel gate */
    }
}

/* Reductions of broadcast gradients sum in a fixed order: one thread and two give the same bits. */
static void test_thread_count_independent(void **st) {
    (void)st;
    float *res[2][3];
    int prev = omp_get_max_threads();
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        Ctx c;
        ctx_init(&c, 5);
        Rng r;
        rng_init(&r, 9);
        Tensor *x = tensor_new_(&c, 8, 64, 300), *bias = tensor_new_(&c, 64), *row = tensor_new_(&c, 300);
        rng_fill_uniform(&r, x->data, x->numel, -1, 1);
        rng_fill_uniform(&r, bias->data, bias->numel, -1, 1);
        rng_fill_uniform(&r, row->data, row->numel, -1, 1);
        x->requires_grad = bias->requires_grad = row->requires_grad = 1;
        Tensor *y = op_mul(&c, op_bias_add(&c, x, bias, 1), row);
        float *R = malloc(y->numel * sizeof(float));
        rng_fill_uniform(&r, R, y->numel, -1, 1);
        backward_from(&c, y, R);
        const Tensor *ts[3] = {x, bias, row};
        for (int k = 0; k < 3; k++) {
            res[t][k] = malloc(ts[k]->numel * sizeof(float));
            memcpy(res[t][k], ts[k]->grad, ts[k]->numel * sizeof(float));
        }
        if (t == 1) {
            for (int k = 0; k < 3; k++) assert_memory_equal(res[0][k], res[1][k], ts[k]->numel * sizeof(float));
        }
        free(R);
        ctx_free(&c);
    }
    omp_set_num_threads(prev);
    for (int t = 0; t < 2; t++)
        for (int k = 0; k < 3; k++) free(res[t][k]);
}

static void test_shape_errors(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    jmp_buf jb;
    c.fail_jmp = &jb;
    Tensor *a = tensor_zeros_(&c, 2, 3), *b = tensor_zeros_(&c, 4, 3), *bias = tensor_zeros_(&c, 5);
    if (setjmp(jb) == 0) {
        op_add(&c, a, b);
        fail_msg("(2,3) + (4,3) did not fail");
    }
    assert_string_equal(c.fail_msg, "op_add: shapes (2,3) and (4,3) do not broadcast");
    if (setjmp(jb) == 0) {
        op_div(&c, a, tensor_zeros_(&c, 2));
        fail_msg("(2,3) / (2) did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "op_div"));
    if (setjmp(jb) == 0) {
        op_bias_add(&c, a, bias, 1);
        fail_msg("bias (5) on dim 1 of (2,3) did not fail");
    }
    assert_string_equal(c.fail_msg, "op_bias_add: bias (5) does not match dim 1 of (2,3)");
    ctx_free(&c);
}

/* grad mode off: nothing is recorded */
static void test_no_grad_records_nothing(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    Tensor *a = tensor_zeros_(&c, 2, 3), *b = tensor_zeros_(&c, 3);
    a->requires_grad = 1;
    ctx_set_grad(&c, 0);
    Tensor *y = op_add(&c, a, b);
    assert_int_equal(c.tape_len, 0);
    assert_false(y->requires_grad);
    ctx_set_grad(&c, 1);
    y = op_add(&c, a, b);
    assert_int_equal(c.tape_len, 1);
    assert_true(y->requires_grad);
    ctx_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_binary_gradcheck),      cmocka_unit_test(test_scalar_bias_gradcheck),
        cmocka_unit_test(test_reference),             cmocka_unit_test(test_large_paths),
        cmocka_unit_test(test_thread_count_independent), cmocka_unit_test(test_shape_errors),
        cmocka_unit_test(test_no_grad_records_nothing),
    };
    return RUN_GROUP(tests);
}
