/* test_ops_reduce.c — sum, mean, max over a dim (keepdim), sum_all, mean_all: finite-difference
 * gradients (every dim, strided inputs), PyTorch references, max's first-argmax rule and NaN,
 * large tensors against a double loop, and identical bits for 1 and 2 threads. */
#include "tests/common/testutil.h"
#include "tests/engine/ops_ref.h"
#include <math.h>
#include <omp.h>
#include <string.h>

typedef Tensor *(*ReduceFn)(Ctx *, Tensor *, int, int);
typedef struct Red {
    ReduceFn fn;
    int dim, keepdim;
    int twice;  /* f_max_separated: max applied twice to the same tensor, results added */
} Red;

static Tensor *f_reduce(Ctx *c, Tensor **in, void *ud) {
    const Red *r = ud;
    return r->fn(c, in[0], r->dim, r->keepdim);
}

/* max over dim of (x + P), x in [0, 0.1]: P gives each reduced row distinct levels 0.25 apart,
 * so the argmax never changes under the finite-difference step */
static Tensor *f_max_separated(Ctx *c, Tensor **in, void *ud) {
    const Red *r = ud;
    Tensor *x = in[0];
    int dim = r->dim < 0 ? r->dim + x->ndim : r->dim;
    size_t inner = 1, len = x->shape[dim];
    for (int d = dim + 1; d < x->ndim; d++) inner *= x->shape[d];
    Tensor *p = tensor_new(c, x->ndim, x->shape);
    for (size_t f = 0; f < p->numel; f++) {
        size_t i = f % inner, k = (f / inner) % len, o = f / (inner * len);
        p->data[f] = (float)((k * 7 + o * 3 + i * 5) % len) * 0.25f;  /* a permutation of k: gcd(7, len) = 1 */
    }
    Tensor *y = op_add(c, x, p);
    if (r->twice) return op_add(c, op_max(c, y, r->dim, r->keepdim), op_max(c, y, r->dim, r->keepdim));
    return op_max(c, y, r->dim, r->keepdim);
}

static Tensor *f_sum_all(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_sum_all(c, in[0]);
}
static Tensor *f_mean_all(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_mean_all(c, in[0]);
}

static void test_gradcheck(void **st) {
    (void)st;
    GcOpts o = {0};
    char what[64];
    const ReduceFn fns[2] = {op_sum, op_mean};
    const char *names[2] = {"sum", "mean"};
    for (int f = 0; f < 2; f++) {
        for (int dim = -1; dim < 3; dim++) {
            for (int keep = 0; keep < 2; keep++) {
                Red r = {fns[f], dim, keep, 0};
                snprintf(what, sizeof what, "%s dim %d keepdim %d", names[f], dim, keep);
                gradcheck(what, f_reduce, (GcInput[]){GC_IN(3, 3, 4, 5)}, 1, &r, o);
                GcInput t = GC_IN(3, 3, 4, 5);
                t.transposed = 1;
                snprintf(what, sizeof what, "%s strided dim %d keepdim %d", names[f], dim, keep);
                gradcheck(what, f_reduce, &t, 1, &r, o);
                GcInput m = GC_IN(3, 3, 4, 5);
                m.lo = 0.0f;
                m.hi = 0.1f;
                Red rm = {op_max, dim, keep, 0};
                snprintf(what, sizeof what, "max dim %d keepdim %d", dim, keep);
                if (f == 0) gradcheck(what, f_max_separated, &m, 1, &rm, o);
                m.transposed = 1;
                snprintf(what, sizeof what, "max strided dim %d keepdim %d", dim, keep);
                if (f == 0) gradcheck(what, f_max_separated, &m, 1, &rm, o);
            }
        }
    }
    Red r1 = {op_sum, 0, 0, 0};
    gradcheck("sum 1-D", f_reduce, (GcInput[]){GC_IN(1, 7)}, 1, &r1, o);
    gradcheck("sum_all", f_sum_all, (GcInput[]){GC_IN(3, 3, 4, 5)}, 1, NULL, o);
    GcInput t = GC_IN(2, 4, 6);
    t.transposed = 1;
    gradcheck("sum_all strided", f_sum_all, &t, 1, NULL, o);
    gradcheck("mean_all", f_mean_all, (GcInput[]){GC_IN(3, 3, 4, 5)}, 1, NULL, o);
    gradcheck("mean_all strided", f_mean_all, &t, 1, NULL, o);

    /* gradients add into buffers that already hold a contribution */
    Red rs = {op_sum, 1, 0, 0}, rn = {op_mean, -1, 1, 0}, rx = {op_max, 1, 0, 1};
    Twice ts = {f_reduce, &rs}, tn = {f_reduce, &rn}, ta = {f_sum_all, NULL}, tm = {f_mean_all, NULL};
    GcInput small = GC_IN(3, 3, 4, 5);
    small.lo = 0.0f;
    small.hi = 0.1f;
    gradcheck("sum twice", f_twice, &small, 1, &ts, o);
    gradcheck("mean twice", f_twice, &small, 1, &tn, o);
    gradcheck("max twice", f_max_separated, &small, 1, &rx, o);
    gradcheck("sum_all twice", f_twice, &small, 1, &ta, o);
    gradcheck("mean_all twice", f_twice, &small, 1, &tm, o);
}

/* ------------------------------------------------------------------------------------------ */
/* PyTorch references */

static int ref_dim_op(Ctx *c, Tensor **x, RefFile *r, const char *g, Tensor **o, ReduceFn fn) {
    o[0] = fn(c, x[0], (int)ref_case_scalar(r, g, "dim"), (int)ref_case_scalar(r, g, "keepdim"));
    return 1;
}
static int ref_sum(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx;
    return ref_dim_op(c, x, r, g, o, op_sum);
}
static int ref_mean(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx;
    return ref_dim_op(c, x, r, g, o, op_mean);
}
static int ref_max(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx;
    return ref_dim_op(c, x, r, g, o, op_max);
}
static int ref_sum_all(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx, (void)r, (void)g;
    o[0] = op_sum_all(c, x[0]);
    return 1;
}
static int ref_mean_all(Ctx *c, Tensor **x, int nx, RefFile *r, const char *g, Tensor **o) {
    (void)nx, (void)r, (void)g;
    o[0] = op_mean_all(c, x[0]);
    return 1;
}

static void test_reference(void **st) {
    (void)st;
    run_ref_op("sum", ref_sum, REF_TOL_DEFAULT);
    run_ref_op("mean", ref_mean, REF_TOL_DEFAULT);
    run_ref_op("max", ref_max, REF_TOL_DEFAULT);
    run_ref_op("sum_all", ref_sum_all, REF_TOL_DEFAULT);
    run_ref_op("mean_all", ref_mean_all, REF_TOL_DEFAULT);
}

/* ------------------------------------------------------------------------------------------ */

static void test_shapes_and_max_rules(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    Tensor *x = tensor_zeros_(&c, 2, 3, 4);
    Tensor *s = op_sum(&c, x, 1, 0);
    assert_int_equal(s->ndim, 2);
    assert_int_equal(s->shape[0], 2);
    assert_int_equal(s->shape[1], 4);
    s = op_mean(&c, x, -1, 1);
    assert_int_equal(s->ndim, 3);
    assert_int_equal(s->shape[2], 1);
    s = op_sum(&c, tensor_zeros_(&c, 7), 0, 0);  /* 1-D without keepdim: (1), not 0-dim */
    assert_int_equal(s->ndim, 1);
    assert_int_equal(s->shape[0], 1);
    assert_int_equal(op_sum_all(&c, x)->shape[0], 1);

    /* ties: the gradient goes to the first argmax only */
    Tensor *t = tensor_from(&c, 2, TSHAPE(2, 4), (const float[]){1, 3, 3, 2, 5, 5, 5, 5});
    t->requires_grad = 1;
    Tensor *m = op_max(&c, t, 1, 0);
    assert_float_equal(m->data[0], 3, 0);
    assert_float_equal(m->data[1], 5, 0);
    backward_from(&c, m, (const float[]){1, 1});
    const float want[8] = {0, 1, 0, 0, 1, 0, 0, 0};
    assert_memory_equal(t->grad, want, sizeof want);

    /* NaN wins, as in PyTorch */
    Tensor *n = tensor_from(&c, 1, TSHAPE(4), (const float[]){1, NAN, 7, 2});
    assert_true(isnan(op_max(&c, n, 0, 0)->data[0]));

    jmp_buf jb;
    c.fail_jmp = &jb;
    if (setjmp(jb) == 0) {
        op_sum(&c, x, 3, 0);
        fail_msg("dim 3 of (2,3,4) accepted");
    }
    assert_string_equal(c.fail_msg, "op_sum: dim 3 is out of range for (2,3,4)");
    ctx_free(&c);
}

/* Large inputs (parallel paths, blocked reductions, strided views) against a double loop. */
static void test_large_against_loop(void **st) {
    (void)st;
    const size_t A = 24, B = 50, C = 70;  /* 84000 elements */
    Ctx c;
    ctx_init(&c, 1);
    Rng r;
    rng_init(&r, 3);
    Tensor *base = tensor_new_(&c, A, C, B);  /* seen through a transpose as (A, B, C) */
    rng_fill_uniform(&r, base->data, base->numel, -1, 1);
    for (int tr = 0; tr < 2; tr++) {
        Tensor *x = tr ? op_transpose(&c, base, 1, 2) : op_contiguous(&c, op_transpose(&c, base, 1, 2));
        float *xc = malloc(x->numel * sizeof(float));  // (A, B, C)
        tensor_copy_to(x, xc);
        for (int dim = 0; dim < 3; dim++) {
            Tensor *s = op_sum(&c, x, dim, 0), *mx = op_max(&c, x, dim, 0);
            size_t len = x->shape[dim];
            size_t inner = 1;
            for (int d = dim + 1; d < 3; d++) inner *= x->shape[d];
            size_t outer = x->numel / (len * inner);
            float *ws = malloc(outer * inner * sizeof(float)), *wm = malloc(outer * inner * sizeof(float));
            for (size_t o = 0; o < outer; o++)
                for (size_t i = 0; i < inner; i++) {
                    double acc = 0;
                    float best = -INFINITY;
                    for (size_t k = 0; k < len; k++) {
                        float v = xc[(o * len + k) * inner + i];
                        acc += v;
                        best = v > best ? v : best;
                    }
                    ws[o * inner + i] = (float)acc;
                    wm[o * inner + i] = best;
                }
            assert_close("large sum", s->data, ws, s->numel, 1e-6, 1e-6);
            assert_memory_equal(mx->data, wm, mx->numel * sizeof(float));
            free(ws), free(wm);
        }
        double acc = 0;
        for (size_t i = 0; i < x->numel; i++) acc += xc[i];
        assert_float_equal(op_sum_all(&c, x)->data[0], (float)acc, 1e-6 * fabs(acc) + 1e-6);
        free(xc);
    }
    ctx_free(&c);
}

static void reduce_run(int threads, float *out) {
    int prev = omp_get_max_threads();
    omp_set_num_threads(threads);
    Ctx c;
    ctx_init(&c, 1);
    Rng r;
    rng_init(&r, 5);
    Tensor *x = tensor_new_(&c, 64, 40, 50);
    rng_fill_uniform(&r, x->data, x->numel, -1, 1);
    Tensor *xt = op_transpose(&c, x, 0, 2);
    size_t k = 0;
    for (int dim = 0; dim < 3; dim++) {
        Tensor *s = op_mean(&c, xt, dim, 1);
        memcpy(out + k, s->data, s->numel * sizeof(float));
        k += s->numel;
    }
    out[k++] = op_sum_all(&c, x)->data[0];
    ctx_free(&c);
    omp_set_num_threads(prev);
}

static void test_thread_count_independent(void **st) {
    (void)st;
    size_t n = 64 * 40 + 64 * 50 + 40 * 50 + 1;
    float *a = malloc(n * sizeof(float)), *b = malloc(n * sizeof(float));
    reduce_run(1, a);
    reduce_run(2, b);
    assert_memory_equal(a, b, n * sizeof(float));
    free(a), free(b);
}

/* reduce_sum_strided directly (the kernel behind sums and broadcast gradients): permuted source
 * strides, every subset of reduced dims, a scale, against a double loop over the index space. */
static void test_reduce_kernel(void **st) {
    (void)st;
    const size_t shape[4] = {3, 4, 5, 6};
    const size_t n = 3 * 4 * 5 * 6;
    const int perms[3][4] = {{0, 1, 2, 3}, {3, 1, 0, 2}, {2, 3, 1, 0}};
    float *src = malloc(n * sizeof(float)), *dst = malloc(n * sizeof(float));
    double *want = malloc(n * sizeof(double));
    float *wantf = malloc(n * sizeof(float));
    Rng r;
    rng_init(&r, 8);
    rng_fill_uniform(&r, src, n, -1, 1);
    char what[64];
    for (int p = 0; p < 3; p++) {
        /* src laid out in the order perms[p] (outermost first): strides of a permuted buffer */
        ptrdiff_t ss[4], s = 1;
        for (int q = 3; q >= 0; q--) {
            ss[perms[p][q]] = s;
            s *= (ptrdiff_t)shape[perms[p][q]];
        }
        for (int red = 0; red < 16; red++) {  /* bit d set: dim d reduced */
            ptrdiff_t ds[4], t = 1;
            size_t nd = 1;
            for (int d = 3; d >= 0; d--) {
                ds[d] = (red >> d & 1) ? 0 : t;
                if (!(red >> d & 1)) t *= (ptrdiff_t)shape[d];
            }
            nd = (size_t)t;
            for (size_t i = 0; i < nd; i++) {
                dst[i] = 0.25f;  /* the kernel adds into dst */
                want[i] = 0.25;
            }
            for (size_t f = 0; f < n; f++) {
                size_t rem = f, so = 0, doff = 0;
                for (int d = 3; d >= 0; d--) {
                    size_t i = rem % shape[d];
                    rem /= shape[d];
                    so += i * (size_t)ss[d];
                    doff += i * (size_t)ds[d];
                }
                want[doff] += 0.5 * src[so];
            }
            for (size_t i = 0; i < nd; i++) wantf[i] = (float)want[i];
            reduce_sum_strided(4, shape, src, ss, dst, ds, 0.5f);
            snprintf(what, sizeof what, "reduce kernel perm %d reduced-dims mask %d", p, red);
            assert_close(what, dst, wantf, nd, 1e-6, 1e-6);
        }
    }
    free(src), free(dst), free(want), free(wantf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gradcheck),           cmocka_unit_test(test_reference),
        cmocka_unit_test(test_shapes_and_max_rules), cmocka_unit_test(test_large_against_loop),
        cmocka_unit_test(test_thread_count_independent), cmocka_unit_test(test_reduce_kernel),
    };
    return RUN_GROUP(tests);
}
