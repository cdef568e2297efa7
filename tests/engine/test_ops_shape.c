/* test_ops_shape.c — concat, split, index_select, embedding, where, masked_fill: finite-difference
 * gradients (strided inputs, repeated indices, broadcast masks, more inputs than a tape node
 * holds), PyTorch references, large gathers against a loop, and the error messages. */
#include "tests/common/testutil.h"
#include "tests/engine/ops_ref.h"
#include <math.h>
#include <omp.h>
#include <string.h>

static GcInput transposed(GcInput g) {
    g.transposed = 1;
    return g;
}

/* ------------------------------------------------------------------------------------------ */
/* concat / split */

typedef struct CatArgs {
    int n, dim;
} CatArgs;

static Tensor *f_concat(Ctx *c, Tensor **in, void *ud) {
    const CatArgs *a = ud;
    return op_concat(c, in, a->n, a->dim);
}

/* the same tensor twice in the list: both copies' gradients add */
static Tensor *f_concat_twice(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    Tensor *xs[3] = {in[0], in[1], in[0]};
    return op_concat(c, xs, 3, 1);
}

typedef struct SplitArgs {
    int dim, n, mode;  /* mode 0: concat the pieces in reverse; mode 1: only piece 1 is used */
    size_t sizes[4];
} SplitArgs;

static Tensor *f_split(Ctx *c, Tensor **in, void *ud) {
    const SplitArgs *a = ud;
    Tensor *p[4], *rev[4];
    op_split(c, in[0], a->dim, a->sizes, a->n, p);
    if (a->mode == 1) return p[1];
    for (int k = 0; k < a->n; k++) rev[k] = op_scale(c, p[a->n - 1 - k], (float)(k + 1));
    return op_concat(c, rev, a->n, a->dim);
}

static void test_concat_split_gradcheck(void **st) {
    (void)st;
    GcOpts o = {0};
    CatArgs c1 = {3, 1};
    gradcheck("concat dim 1", f_concat, (GcInput[]){GC_IN(2, 2, 3), GC_IN(2, 2, 5), GC_IN(2, 2, 1)}, 3, &c1, o);
    CatArgs c0 = {2, 0};
    gradcheck("concat dim 0", f_concat, (GcInput[]){GC_IN(3, 2, 3, 4), GC_IN(3, 1, 3, 4)}, 2, &c0, o);
    CatArgs cl = {2, -1};
    gradcheck("concat strided", f_concat, (GcInput[]){transposed(GC_IN(3, 2, 3, 4)), GC_IN(3, 2, 3, 2)}, 2, &cl, o);
    Twice tc = {f_concat, &c1};
    gradcheck("concat twice", f_twice, (GcInput[]){GC_IN(2, 2, 3), GC_IN(2, 2, 5), GC_IN(2, 2, 1)}, 3, &tc, o);
    CatArgs c6 = {6, 0};
    GcInput six[6];
    for (int k = 0; k < 6; k++) six[k] = GC_IN(2, 1, 4);
    six[0].no_grad = six[3].no_grad = 1;  /* constants mixed in */
    gradcheck("concat 6 inputs", f_concat, six, 6, &c6, o);
    gradcheck("concat same tensor twice", f_concat_twice, (GcInput[]){GC_IN(2, 2, 3), GC_IN(2, 2, 2)}, 2, NULL, o);

    SplitArgs s1 = {.dim = 1, .n = 3, .sizes = {2, 4, 1}};
    gradcheck("split dim 1", f_split, (GcInput[]){GC_IN(2, 4, 7)}, 1, &s1, o);
    SplitArgs s0 = {.dim = 0, .n = 2, .sizes = {1, 5}};
    gradcheck("split dim 0", f_split, (GcInput[]){GC_IN(3, 6, 2, 3)}, 1, &s0, o);
    SplitArgs sl = {.dim = -1, .n = 2, .sizes = {3, 2}};
    gradcheck("split strided", f_split, (GcInput[]){transposed(GC_IN(3, 3, 4, 5))}, 1, &sl, o);
    SplitArgs su = {.dim = 1, .n = 3, .mode = 1, .sizes = {2, 4, 1}};
    gradcheck("split one piece used", f_split, (GcInput[]){GC_IN(2, 4, 7)}, 1, &su, o);
    Twice ts = {f_split, &s1};
    gradcheck("split twice", f_twice, (GcInput[]){GC_IN(2, 4, 7)}, 1, &ts, o);
}

/* ------------------------------------------------------------------------------------------ */
/* index_select / embedding */

typedef struct IdxArgs {
    int dim;
    size_t n;
    int32_t idx[8];
} IdxArgs;

static Tensor *f_index_select(Ctx *c, Tensor **in, void *ud) {
    const IdxArgs *a = ud;
    return op_index_select(c, in[0], a->dim, a->idx, a->n);
}
static Tensor *f_embedding(Ctx *c, Tensor **in, void *ud) {
    const IdxArgs *a = ud;
    return op_embedding(c, in[0], a->idx, a->n);
}

static void test_gather_gradcheck(void **st) {
    (void)st;
    GcOpts o = {0};
    IdxArgs a0 = {0, 5, {4, 0, 4, 2, 4}};  /* repeated indices accumulate */
    gradcheck("index_select dim 0", f_index_select, (GcInput[]){GC_IN(2, 5, 4)}, 1, &a0, o);
    IdxArgs a1 = {1, 3, {1, 1, 3}};
    gradcheck("index_select dim 1", f_index_select, (GcInput[]){GC_IN(3, 2, 5, 3)}, 1, &a1, o);
    IdxArgs al = {-1, 4, {5, 0, 2, 2}};
    gradcheck("index_select strided", f_index_select, (GcInput[]){transposed(GC_IN(2, 3, 6))}, 1, &al, o);
    IdxArgs e = {0, 6, {3, 3, 7, 0, 9, 3}};
    gradcheck("embedding", f_embedding, (GcInput[]){GC_IN(2, 10, 4)}, 1, &e, o);
    Twice ti = {f_index_select, &a1};
    gradcheck("index_select twice", f_twice, (GcInput[]){GC_IN(3, 2, 5, 3)}, 1, &ti, o);
}

/* ------------------------------------------------------------------------------------------ */
/* where / masked_fill */

typedef struct MaskArgs {
    int ndim;
    size_t shape[VT_MAX_DIMS];
    uint8_t mask[64];
    float value;
} MaskArgs;

static MaskArgs mask_args(int ndim, const size_t *shape, uint64_t seed) {
    MaskArgs m = {.ndim = ndim, .value = 0.5f};
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= (m.shape[d] = shape[d]);
    Rng r;
    rng_init(&r, seed);
    for (size_t i = 0; i < n; i++) m.mask[i] = rng_uniform(&r) < 0.5f;
    return m;
}

static Tensor *f_where(Ctx *c, Tensor **in, void *ud) {
    const MaskArgs *m = ud;
    return op_where(c, m->mask, m->ndim, m->shape, in[0], in[1]);
}
static Tensor *f_masked_fill(Ctx *c, Tensor **in, void *ud) {
    const MaskArgs *m = ud;
    return op_masked_fill(c, in[0], m->mask, m->value);
}

static void test_where_gradcheck(void **st) {
    (void)st;
    GcOpts o = {0};
    MaskArgs full = mask_args(3, TSHAPE(2, 3, 4), 1);
    gradcheck("where", f_where, (GcInput[]){GC_IN(3, 2, 3, 4), GC_IN(3, 2, 3, 4)}, 2, &full, o);
    MaskArgs mb = mask_args(3, TSHAPE(2, 1, 4), 2);
    gradcheck("where mask broadcast", f_where, (GcInput[]){GC_IN(3, 2, 3, 4), GC_IN(3, 2, 3, 4)}, 2, &mb, o);
    MaskArgs tok = mask_args(3, TSHAPE(2, 3, 1), 3);  /* where(mask, token (1, D), x (B, N, D)) */
    gradcheck("where token", f_where, (GcInput[]){GC_IN(2, 1, 4), GC_IN(3, 2, 3, 4)}, 2, &tok, o);
    MaskArgs m2 = mask_args(2, TSHAPE(4, 5), 4);
    gradcheck("where strided", f_where, (GcInput[]){transposed(GC_IN(2, 4, 5)), GC_IN(1, 5)}, 2, &m2, o);
    MaskArgs mf = mask_args(3, TSHAPE(2, 3, 4), 5);
    gradcheck("masked_fill", f_masked_fill, (GcInput[]){GC_IN(3, 2, 3, 4)}, 1, &mf, o);
    gradcheck("masked_fill strided", f_masked_fill, (GcInput[]){transposed(GC_IN(3, 2, 3, 4))}, 1, &mf, o);
    Twice tw = {f_where, &tok}, tf = {f_masked_fill, &mf};
    gradcheck("where twice", f_twice, (GcInput[]){GC_IN(2, 1, 4), GC_IN(3, 2, 3, 4)}, 2, &tw, o);
    gradcheck("masked_fill twice", f_twice, (GcInput[]){GC_IN(3, 2, 3, 4)}, 1, &tf, o);
}

/* ------------------------------------------------------------------------------------------ */
/* PyTorch references */

static int ref_concat(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    o[0] = op_concat(c, x, nx, (int)ref_case_scalar(r, g, "dim"));
    return 1;
}
static int ref_split(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx;
    size_t n;
    int32_t *s = ref_case_ints(r, g, "sizes", &n);
    size_t sizes[REF_MAX_OUT];
    for (size_t k = 0; k < n; k++) sizes[k] = (size_t)s[k];
    free(s);
    op_split(c, x[0], (int)ref_case_scalar(r, g, "dim"), sizes, (int)n, o);
    return (int)n;
}
static int ref_index_select(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx;
    size_t n;
    int32_t *idx = ref_case_ints(r, g, "idx", &n);
    o[0] = op_index_select(c, x[0], (int)ref_case_scalar(r, g, "dim"), idx, n);
    free(idx);  /* the op keeps its own copy for backward */
    return 1;
}
static int ref_embedding(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx;
    size_t n;
    int32_t *idx = ref_case_ints(r, g, "idx", &n);
    o[0] = op_embedding(c, x[0], idx, n);
    free(idx);
    return 1;
}
static int ref_where(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx;
    size_t n, shape[VT_MAX_DIMS];
    int nd;
    uint8_t *m = ref_case_mask(r, g, "mask", &n, &nd, shape);
    o[0] = op_where(c, m, nd, shape, x[0], x[1]);
    free(m);
    return 1;
}
static int ref_masked_fill(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx;
    size_t n, shape[VT_MAX_DIMS];
    int nd;
    uint8_t *m = ref_case_mask(r, g, "mask", &n, &nd, shape);
    o[0] = op_masked_fill(c, x[0], m, (float)ref_case_scalar(r, g, "s"));
    free(m);
    return 1;
}

static void test_reference(void **st) {
    (void)st;
    run_ref_op("concat", ref_concat, REF_TOL_DEFAULT);
    run_ref_op("split", ref_split, REF_TOL_DEFAULT);
    run_ref_op("index_select", ref_index_select, REF_TOL_DEFAULT);
    run_ref_op("embedding", ref_embedding, REF_TOL_DEFAULT);
    run_ref_op("where", ref_where, REF_TOL_DEFAULT);
    run_ref_op("masked_fill", ref_masked_fill, REF_TOL_DEFAULT);
}

/* ------------------------------------------------------------------------------------------ */

/* An embedding large enough for the parallel paths, many repeated ids: forward and backward
 * against a loop, and the same bits with 1 and 2 threads. */
static void embedding_run(int threads, float *gout) {
    const size_t V = 300, D = 500, N = 400;
    int prev = omp_get_max_threads();
    omp_set_num_threads(threads);
    Ctx c;
    ctx_init(&c, 1);
    Rng r;
    rng_init(&r, 21);
    Tensor *table = tensor_new_(&c, V, D);
    rng_fill_uniform(&r, table->data, table->numel, -1, 1);
    table->requires_grad = 1;
    int32_t *ids = malloc(N * sizeof(int32_t));
    for (size_t j = 0; j < N; j++) ids[j] = (int32_t)rng_below(&r, 50);  /* ~8 repeats per id */
    Tensor *y = op_embedding(&c, table, ids, N);
    for (size_t j = 0; j < N; j++)
        assert_memory_equal(y->data + j * D, table->data + (size_t)ids[j] * D, D * sizeof(float));
    float *R = malloc(N * D * sizeof(float));
    rng_fill_uniform(&r, R, N * D, -1, 1);
    backward_from(&c, y, R);
    double *want = calloc(V * D, sizeof(double));
    for (size_t j = 0; j < N; j++)
        for (size_t i = 0; i < D; i++) want[(size_t)ids[j] * D + i] += R[j * D + i];
    float *wf = malloc(V * D * sizeof(float));
    for (size_t i = 0; i < V * D; i++) wf[i] = (float)want[i];
    assert_close("embedding large grad", table->grad, wf, V * D, 1e-5, 1e-5);
    memcpy(gout, table->grad, V * D * sizeof(float));
    free(ids), free(R), free(want), free(wf);
    ctx_free(&c);
    omp_set_num_threads(prev);
}

static void test_large_embedding(void **st) {
    (void)st;
    float *a = malloc(300 * 500 * sizeof(float)), *b = malloc(300 * 500 * sizeof(float));
    embedding_run(1, a);
    embedding_run(2, b);
    assert_memory_equal(a, b, 300 * 500 * sizeof(float));
    free(a), free(b);
}

static void test_errors(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    jmp_buf jb;
    c.fail_jmp = &jb;
    Tensor *x = tensor_zeros_(&c, 2, 3), *y = tensor_zeros_(&c, 4, 5);
    if (setjmp(jb) == 0) {
        op_concat(&c, (Tensor *[]){x, y}, 2, 1);
        fail_msg("concat of (2,3) and (4,5) on dim 1 accepted");
    }
    assert_string_equal(c.fail_msg, "op_concat: input 1 has shape (4,5) but input 0 has (2,3) (all dims but 1 must match)");
    if (setjmp(jb) == 0) {
        Tensor *out[2];
        op_split(&c, x, 1, TSHAPE(1, 1), 2, out);
        fail_msg("split of 3 into 1+1 accepted");
    }
    assert_non_null(strstr(c.fail_msg, "op_split"));
    if (setjmp(jb) == 0) {
        op_index_select(&c, x, 1, (const int32_t[]){0, 3}, 2);
        fail_msg("index 3 of dim 1 (size 3) accepted");
    }
    assert_string_equal(c.fail_msg, "op_index_select: index 3 (position 1) is out of range for dim 1 of (2,3)");
    if (setjmp(jb) == 0) {
        op_embedding(&c, tensor_zeros_(&c, 4), (const int32_t[]){0}, 1);
        fail_msg("1-D embedding table accepted");
    }
    assert_non_null(strstr(c.fail_msg, "op_embedding"));
    if (setjmp(jb) == 0) {
        op_where(&c, (const uint8_t[]){1, 0, 1, 0}, 1, TSHAPE(4), x, x);
        fail_msg("mask (4) with (2,3) accepted");
    }
    assert_string_equal(c.fail_msg, "op_where: mask (4), a (2,3) and b (2,3) do not broadcast");
    ctx_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_concat_split_gradcheck), cmocka_unit_test(test_gather_gradcheck),
        cmocka_unit_test(test_where_gradcheck),        cmocka_unit_test(test_reference),
        cmocka_unit_test(test_large_embedding),        cmocka_unit_test(test_errors),
    };
    return RUN_GROUP(tests);
}
