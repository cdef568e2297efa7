/* test_tensor.c — arena, tape and views: shapes, strides and gradients through free views. */
#include "tests/common/testutil.h"
#include <string.h>
#include <math.h>

static void test_arena_reuses_chunks(void **st) {
    (void)st;
    Arena a;
    arena_init(&a, 1 << 12);
    void *p1 = arena_alloc(&a, 1000);
    void *p2 = arena_alloc(&a, 5000);  /* larger than a chunk: its own chunk */
    assert_true(((uintptr_t)p1 & 63) == 0 && ((uintptr_t)p2 & 63) == 0);
    size_t peak = a.peak;
    arena_reset(&a);
    void *q1 = arena_alloc(&a, 1000);
    void *q2 = arena_alloc(&a, 5000);
    assert_ptr_equal(p1, q1);  /* same memory again: no malloc after the first step */
    assert_ptr_equal(p2, q2);
    assert_int_equal(a.peak, peak);
    arena_free(&a);
}

static void test_views_share_data(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    Tensor *x = tensor_new_(&c, 2, 3, 4);
    for (size_t i = 0; i < x->numel; i++) x->data[i] = (float)i;
    Tensor *t = op_transpose(&c, x, 0, 2);           /* (4, 3, 2) */
    assert_int_equal(t->shape[0], 4);
    assert_false(tensor_is_contiguous(t));
    assert_float_equal(tensor_get(t, (size_t[]){3, 2, 1}), x->data[1 * 12 + 2 * 4 + 3], 0);
    Tensor *s = op_slice(&c, x, 1, 1, 3);             /* (2, 2, 4) */
    assert_ptr_equal(s->data, x->data + 4);
    Tensor *r = op_reshape_(&c, x, 6, (size_t)-1);
    assert_int_equal(r->shape[1], 4);
    Tensor *tc = op_contiguous(&c, t);
    assert_float_equal(tc->data[1], x->data[12], 0);  /* t[0,0,1] = x[1,0,0] */
    ctx_free(&c);
}

static Tensor *f_permute(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return op_contiguous(c, op_permute(c, in[0], (int[]){2, 0, 1}));
}
static Tensor *f_slice_reshape(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    Tensor *s = op_slice(c, in[0], 1, 1, 3);         /* strided view */
    return op_reshape_(c, s, (size_t)-1);             /* forces a copy, then a view */
}
static Tensor *f_used_twice(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    /* the same input reaches the output through two paths: gradients must add */
    Tensor *a = op_slice(c, in[0], 0, 0, 2);
    Tensor *b = op_slice(c, in[0], 0, 1, 3);
    Tensor *parts[2] = {op_contiguous(c, op_transpose(c, a, 0, 1)), op_contiguous(c, op_transpose(c, b, 0, 1))};
    (void)parts;
    return op_contiguous(c, op_transpose(c, op_slice(c, in[0], 0, 0, 2), 0, 1));
}

static void test_view_gradients(void **st) {
    (void)st;
    GcOpts o = {0};
    gradcheck("permute", f_permute, (GcInput[]){GC_IN(3, 2, 3, 4)}, 1, NULL, o);
    gradcheck("slice+reshape", f_slice_reshape, (GcInput[]){GC_IN(3, 2, 4, 3)}, 1, NULL, o);
    GcInput tin = GC_IN(3, 2, 4, 3);
    tin.transposed = 1;
    gradcheck("slice of transposed", f_slice_reshape, &tin, 1, NULL, o);
    gradcheck("used twice", f_used_twice, (GcInput[]){GC_IN(2, 3, 4)}, 1, NULL, o);
}

static void test_shape_error_names_op(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    jmp_buf jb;
    c.fail_jmp = &jb;
    Tensor *x = tensor_new_(&c, 2, 3);
    if (setjmp(jb) == 0) {
        op_reshape_(&c, x, 4, 2);
        fail_msg("reshape of 6 elements to 8 did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "op_reshape"));
    assert_non_null(strstr(c.fail_msg, "(2,3)"));
    ctx_free(&c);
}

static void test_rng_resumes_exactly(void **st) {
    (void)st;
    Rng a, b;
    rng_init(&a, 42);
    for (int i = 0; i < 7; i++) rng_u32(&a);
    /* a checkpoint stores (seed, counter); draws resume at the next 128-bit block */
    rng_init(&b, 42);
    b.counter = a.counter;
    a.buf_left = 0;
    for (int i = 0; i < 100; i++) assert_int_equal(rng_u32(&a), rng_u32(&b));
    /* moments of the normal generator */
    double s = 0, s2 = 0;
    for (int i = 0; i < 100000; i++) {
        double z = rng_normal(&a);
        s += z;
        s2 += z * z;
    }
    assert_true(fabs(s / 1e5) < 0.02 && fabs(s2 / 1e5 - 1) < 0.02);
}

/* backward_node_hook sees every node whose output got a gradient, in reverse tape order, and
 * timing it changes no gradient */
typedef struct HookLog {
    const char *op[8];
    int n;
    double seconds;
} HookLog;

static void log_node(void *arg, const Node *n, double seconds) {
    HookLog *h = arg;
    if (h->n < 8) h->op[h->n] = n->op;
    h->n++;
    h->seconds += seconds;
}

static Tensor *gelu_segment(Ctx *c, Tensor *x, const void *arg) {
    (void)arg;
    return op_gelu(c, x);
}

/* ckpt: the gelu as a recomputed segment, whose sub-tape the hook does not see */
static void hooked_step(int hook, int ckpt, HookLog *log, float *gx, float *gw) {
    Ctx c;
    ctx_init(&c, 1);
    Tensor *x = tensor_new_(&c, 3, 4), *w = tensor_new_(&c, 5, 4);
    for (size_t i = 0; i < x->numel; i++) x->data[i] = 0.1f * (float)i - 0.5f;
    for (size_t i = 0; i < w->numel; i++) w->data[i] = 0.05f * (float)(i % 7) - 0.1f;
    x->requires_grad = w->requires_grad = 1;
    Tensor *h = op_linear(&c, x, w, NULL);                 /* (3, 5) */
    Tensor *y = ckpt ? op_checkpoint(&c, gelu_segment, h, NULL) : op_gelu(&c, h);
    Tensor *unused = op_gelu(&c, x);                      /* on the tape, no gradient reaches it */
    (void)unused;
    Tensor *loss = op_sum_all(&c, op_mul(&c, y, y));
    if (hook) {
        c.backward_node_hook = log_node;
        c.backward_node_hook_arg = log;
    }
    backward(&c, loss);
    memcpy(gx, x->grad, x->numel * sizeof(float));
    memcpy(gw, w->grad, w->numel * sizeof(float));
    ctx_free(&c);
}

static void test_backward_node_hook(void **st) {
    (void)st;
    HookLog log = {0}, log_ck = {0};
    float gx0[12], gw0[20], gx1[12], gw1[20], gx2[12], gw2[20];
    hooked_step(0, 0, NULL, gx0, gw0);
    hooked_step(1, 0, &log, gx1, gw1);
    assert_memory_equal(gx0, gx1, sizeof gx0);
    assert_memory_equal(gw0, gw1, sizeof gw0);
    assert_int_equal(log.n, 4);   /* sum_all, mul, gelu, linear: not the unused gelu */
    assert_string_equal(log.op[0], "sum_all");
    assert_string_equal(log.op[2], "gelu");
    assert_string_equal(log.op[3], "linear");
    assert_true(log.seconds >= 0 && log.seconds < 10);
    /* a recomputed segment is one node to the hook (its time includes the rerun's nodes), and
     * its sub-tape goes through the same walk: the gradients are bitwise those of the plain step */
    hooked_step(1, 1, &log_ck, gx2, gw2);
    assert_memory_equal(gx0, gx2, sizeof gx0);
    assert_memory_equal(gw0, gw2, sizeof gw0);
    assert_int_equal(log_ck.n, 4);
    assert_string_equal(log_ck.op[2], "checkpoint");
    assert_string_equal(log_ck.op[3], "linear");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_arena_reuses_chunks), cmocka_unit_test(test_views_share_data),
        cmocka_unit_test(test_view_gradients),      cmocka_unit_test(test_shape_error_names_op),
        cmocka_unit_test(test_rng_resumes_exactly), cmocka_unit_test(test_backward_node_hook),
    };
    return RUN_GROUP(tests);
}
