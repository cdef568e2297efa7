/* test_ops_pool.c — max / average / global-average pooling: PyTorch references (outputs and
 * gradients), finite-difference checks incl. strided inputs, hand-computed corner cases
 * (-inf padding, count_include_pad, first-maximum routing) and shape errors. */
#include "tests/common/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* PyTorch references (tests/ref/ops_conv.py, group pool/) */

static void test_pool_vs_pytorch(void **st) {
    (void)st;
    static const char *cases[] = {"max_k3_s2_p1", "max_k2_s2", "avg_k3_s1_p1", "avg_k2_s2", "avg_k3_s2_p1",
                                  "global_avg"};
    RefFile *r = ref_open("ops_conv");
    double wy = 0, wg = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char grp[128], key[160];
        snprintf(grp, sizeof grp, "pool/%s", cases[i]);
        snprintf(key, sizeof key, "%s/args", grp);
        float *a = ref_get(r, key, NULL, NULL, NULL);   /* kind, k, stride, pad */
        Ctx c;
        ctx_init(&c, 1);
        Tensor *x = ref_tensor_at(&c, r, grp, "x", 1);
        int kind = (int)a[0], k = (int)a[1], s = (int)a[2], p = (int)a[3];
        Tensor *y = kind == 0 ? op_max_pool2d(&c, x, k, s, p)
                  : kind == 1 ? op_avg_pool2d(&c, x, k, s, p)
                              : op_global_avg_pool(&c, x);
        double ey = ref_compare(r, grp, "y", y, y->data, y->numel, 1e-6);
        Tensor *R = ref_tensor_at(&c, r, grp, "R", 0);
        backward_from(&c, y, R->data);
        double eg = ref_compare(r, grp, "gx", x, x->grad, x->numel, 1e-6);
        printf("    %-14s out %.2e  grad %.2e (max |err| / max |ref|)\n", cases[i], ey, eg);
        wy = fmax(wy, ey), wg = fmax(wg, eg);
        free(a);
        ctx_free(&c);
    }
    printf("    pool vs PyTorch: worst output %.2e, worst gradient %.2e\n", wy, wg);
    ref_close(r);
}

/* ------------------------------------------------------------------------------------------ */
/* hand-computed cases */

static void test_pool_corner_cases(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    /* all-negative 2x2 map, k3 s1 p1: padding is -inf, so every output is a real input value */
    float xv[4] = {-4, -3, -2, -1};
    Tensor *x = tensor_from(&c, 4, TSHAPE(1, 1, 2, 2), xv);
    x->requires_grad = 1;
    Tensor *y = op_max_pool2d(&c, x, 3, 1, 1);
    for (int i = 0; i < 4; i++) assert_float_equal(y->data[i], -1.0f, 0);
    /* avg with count_include_pad: the corner window sees 4 real values out of 9 */
    Tensor *ya = op_avg_pool2d(&c, x, 3, 1, 1);
    assert_float_equal(ya->data[0], -10.0f / 9.0f, 1e-6);
    /* ties: the gradient goes to the first maximum in scan order, once per window */
    float tv[4] = {2, 2, 2, 2};
    Tensor *t = tensor_from(&c, 4, TSHAPE(1, 1, 2, 2), tv);
    t->requires_grad = 1;
    Tensor *yt = op_max_pool2d(&c, t, 2, 2, 0);
    float one = 1.0f;
    backward_from(&c, yt, &one);
    assert_float_equal(t->grad[0], 1.0f, 0);
    assert_float_equal(t->grad[1] + t->grad[2] + t->grad[3], 0.0f, 0);
    /* global average of 1..12 over each 2x3 plane */
    float gv[12];
    for (int i = 0; i < 12; i++) gv[i] = (float)(i + 1);
    Tensor *g = op_global_avg_pool(&c, tensor_from(&c, 4, TSHAPE(1, 2, 2, 3), gv));
    assert_int_equal(g->ndim, 2);
    assert_float_equal(g->data[0], 3.5f, 1e-6);
    assert_float_equal(g->data[1], 9.5f, 1e-6);
    ctx_free(&c);
}

/* ------------------------------------------------------------------------------------------ */
/* finite-difference checks */

typedef struct PoolCase {
    int kind, k, s, p;
} PoolCase;

static Tensor *f_pool(Ctx *c, Tensor **in, void *ud) {
    const PoolCase *pc = ud;
    if (pc->kind == 0) return op_max_pool2d(c, in[0], pc->k, pc->s, pc->p);
    if (pc->kind == 1) return op_avg_pool2d(c, in[0], pc->k, pc->s, pc->p);
    return op_global_avg_pool(c, in[0]);
}

static void gc_pool(const char *what, PoolCase pc, size_t N, size_t C, size_t H, size_t W, int transposed) {
    GcInput in = GC_IN(4, N, C, H, W);
    in.transposed = transposed;
    GcOpts o = {0};
    /* max pooling is piecewise linear: a small step keeps the argmax away from ties between
     * random inputs, and its output copies inputs exactly, so the difference stays exact */
    if (pc.kind == 0) o.h = 1e-4;
    gradcheck(what, f_pool, &in, 1, &pc, o);
}

static void test_pool_gradcheck(void **st) {
    (void)st;
    gc_pool("max k3 s2 p1", (PoolCase){0, 3, 2, 1}, 2, 3, 7, 6, 0);
    gc_pool("max k2 s2 transposed", (PoolCase){0, 2, 2, 0}, 2, 2, 6, 5, 1);
    gc_pool("max k3 s1 p1 (overlapping windows)", (PoolCase){0, 3, 1, 1}, 1, 2, 5, 6, 0);
    gc_pool("avg k3 s1 p1", (PoolCase){1, 3, 1, 1}, 2, 3, 5, 6, 0);
    gc_pool("avg k2 s2", (PoolCase){1, 2, 2, 0}, 2, 2, 6, 7, 0);
    gc_pool("avg k3 s2 p1 transposed", (PoolCase){1, 3, 2, 1}, 2, 2, 7, 5, 1);
    gc_pool("global avg", (PoolCase){2, 0, 0, 0}, 2, 3, 4, 5, 0);
    gc_pool("global avg transposed", (PoolCase){2, 0, 0, 0}, 2, 3, 4, 5, 1);
}

static void test_pool_shape_errors(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    jmp_buf jb;
    c.fail_jmp = &jb;
    Tensor *x3 = tensor_zeros_(&c, 3, 8, 8);
    if (setjmp(jb) == 0) {
        op_max_pool2d(&c, x3, 2, 2, 0);
        fail_msg("a 3-D input did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "op_max_pool2d"));
    assert_non_null(strstr(c.fail_msg, "(3,8,8)"));
    Tensor *x = tensor_zeros_(&c, 1, 1, 4, 4);
    if (setjmp(jb) == 0) {
        op_avg_pool2d(&c, x, 3, 1, 2);
        fail_msg("padding larger than half the kernel did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "op_avg_pool2d"));
    if (setjmp(jb) == 0) {
        op_max_pool2d(&c, x, 5, 1, 0);
        fail_msg("a 5x5 window on a 4x4 map did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "(1,1,4,4)"));
    ctx_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pool_vs_pytorch),
        cmocka_unit_test(test_pool_corner_cases),
        cmocka_unit_test(test_pool_gradcheck),
        cmocka_unit_test(test_pool_shape_errors),
    };
    return RUN_GROUP(tests);
}
