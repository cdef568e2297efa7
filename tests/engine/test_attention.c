/* test_attention.c — op_attention: finite-difference gradients, the timm/DINOv2 Attention math in
 * PyTorch (float64 truth from tests/ref/ops_matmul.py), no-grad == grad-mode output, bitwise
 * equality across thread counts, the no-grad memory bound at 1370 tokens, shape errors. */
#include "tests/common/testutil.h"
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static Tensor *f_attention(Ctx *c, Tensor **in, void *ud) {
    return op_attention(c, in[0], *(int *)ud);
}

static void test_attention_gradcheck(void **st) {
    (void)st;
    GcOpts o = {0};
    int h2 = 2, h3 = 3;
    gradcheck("attention (2,5,24) 2 heads", f_attention, (GcInput[]){GC_IN(3, 2, 5, 24)}, 1, &h2, o);
    /* T = 11: one 8-wide vector block plus a scalar tail in the softmax rows */
    gradcheck("attention (1,11,36) 3 heads", f_attention, (GcInput[]){GC_IN(3, 1, 11, 36)}, 1, &h3, o);
    /* a transposed (strided) qkv view: copied by the op, gradient through the copy */
    GcInput tin = GC_IN(3, 2, 6, 12);
    tin.transposed = 1;
    gradcheck("attention transposed qkv", f_attention, &tin, 1, &h2, o);
    /* larger logits: softmax far from uniform */
    GcInput sharp = GC_IN(3, 1, 9, 24);
    sharp.lo = -3.0f;
    sharp.hi = 3.0f;
    o.h = 2e-3;
    gradcheck("attention sharp", f_attention, &sharp, 1, &h2, o);
}

static void test_attention_reference(void **st) {
    (void)st;
    static const struct { const char *name; int heads; } cases[] = {
        {"attention_small", 2}, {"attention_t19", 3}, {"attention_sharp", 2}};
    RefFile *r = ref_open("ops_matmul");
    double worst_out = 0, worst_grad = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char key[128], what[128];
        size_t n, shape[VT_MAX_DIMS], n_out, n_g;
        int nd;
        Ctx c;
        ctx_init(&c, 1);
        snprintf(key, sizeof key, "%s/qkv", cases[k].name);
        float *qkv_data = ref_get(r, key, &n, &nd, shape);
        Tensor *qkv = tensor_from(&c, nd, shape, qkv_data);
        qkv->requires_grad = 1;
        Tensor *out = op_attention(&c, qkv, cases[k].heads);
        snprintf(key, sizeof key, "%s/out", cases[k].name);
        float *ref_out = ref_get(r, key, &n_out, NULL, NULL);
        snprintf(key, sizeof key, "%s/dout", cases[k].name);
        float *dout = ref_get(r, key, NULL, NULL, NULL);
        snprintf(key, sizeof key, "%s/dqkv", cases[k].name);
        float *ref_g = ref_get(r, key, &n_g, NULL, NULL);
        assert_int_equal(out->numel, n_out);
        assert_int_equal(out->shape[2], shape[2] / 3);
        snprintf(what, sizeof what, "%s out", cases[k].name);
        /* float32 scores, vector exp (~1 ulp) and products over T <= 19 */
        assert_close(what, out->data, ref_out, n_out, 1e-5, 1e-5);
        worst_out = fmax(worst_out, max_rel_err(out->data, ref_out, n_out));
        backward_from(&c, out, dout);
        assert_int_equal(n_g, qkv->numel);
        snprintf(what, sizeof what, "%s dqkv", cases[k].name);
        assert_close(what, qkv->grad, ref_g, n_g, 2e-5, 1e-4);
        worst_grad = fmax(worst_grad, max_rel_err(qkv->grad, ref_g, n_g));
        free(qkv_data);
        free(ref_out);
        free(dout);
        free(ref_g);
        ctx_free(&c);
    }
    print_message("attention vs PyTorch (float64): max rel err out %.2e, dqkv %.2e\n", worst_out, worst_grad);
    assert_true(worst_out < 5e-6 && worst_grad < 2e-5);
    ref_close(r);
}

/* forward (+ backward when grad) of a (2, 40, 48) qkv with 4 heads; returns out then dqkv */
static float *run_attention(int threads, int grad, size_t *n_res) {
    omp_set_num_threads(threads);
    Ctx c;
    ctx_init(&c, 3);
    ctx_set_grad(&c, grad);
    Rng r;
    rng_init(&r, 5);
    Tensor *qkv = tensor_new_(&c, 2, 40, 3 * 48);
    rng_fill_normal(&r, qkv->data, qkv->numel, 0, 1.5f);
    qkv->requires_grad = 1;
    Tensor *out = op_attention(&c, qkv, 4);
    size_t n = out->numel + (grad ? qkv->numel : 0);
    float *res = malloc(n * sizeof(float));
    memcpy(res, out->data, out->numel * sizeof(float));
    if (grad) {
        float *g = malloc(out->numel * sizeof(float));
        rng_fill_normal(&r, g, out->numel, 0, 1);
        backward_from(&c, out, g);
        memcpy(res + out->numel, qkv->grad, qkv->numel * sizeof(float));
        free(g);
    }
    *n_res = n;
    ctx_free(&c);
    return res;
}

static void test_attention_modes_and_threads(void **st) {
    (void)st;
    int prev = omp_get_max_threads();
    size_t n_grad1, n_grad2, n_nograd;
    float *g1 = run_attention(1, 1, &n_grad1);
    float *g2 = run_attention(2, 1, &n_grad2);
    float *ng = run_attention(2, 0, &n_nograd);
    omp_set_num_threads(prev);
    assert_int_equal(n_grad1, n_grad2);
    /* each (batch, head) runs whole on one thread: the thread count cannot change a bit */
    assert_memory_equal(g1, g2, n_grad1 * sizeof(float));
    /* the no-grad path uses a per-thread buffer instead of the kept probabilities: same numbers */
    assert_memory_equal(ng, g2, n_nograd * sizeof(float));
    free(g1);
    free(g2);
    free(ng);
}

/* A 518 px ViT-S/14 has 1 + 37*37 = 1370 tokens: without gradients the op may hold one (T, T)
 * buffer per thread, never the (B, H, T, T) probabilities. */
static void test_attention_nograd_memory(void **st) {
    (void)st;
    const size_t B = 1, T = 1370, C = 48, H = 6;
    Ctx c;
    ctx_init(&c, 1);
    Tensor *qkv = tensor_new_(&c, B, T, 3 * C);
    Rng r;
    rng_init(&r, 1);
    rng_fill_normal(&r, qkv->data, qkv->numel, 0, 1);
    qkv->requires_grad = 1;   /* grad would be recorded if the mode allowed it */
    ctx_set_grad(&c, 0);
    size_t before = c.step.used;
    Tensor *out = op_attention(&c, qkv, (int)H);
    size_t grown = c.step.used - before;
    size_t nt = (size_t)omp_get_max_threads();
    size_t bound = (nt * T * T + B * T * C) * sizeof(float) + 4096;
    print_message("no-grad attention at T=%zu: %.1f MB of step arena (%zu threads; kept probabilities would be %.1f MB)\n",
                  T, grown / 1e6, nt, (double)(B * H * T * T * sizeof(float)) / 1e6);
    assert_true(grown <= bound);
    assert_true(grown < B * H * T * T * sizeof(float));
    assert_false(out->requires_grad);
    /* rows of softmax weights sum to one: out is a convex combination of v rows, so it is
     * bounded by v's extremes per column */
    for (size_t j = 0; j < C; j++) {
        float lo = INFINITY, hi = -INFINITY;
        for (size_t t = 0; t < T; t++) {
            float v = qkv->data[t * 3 * C + 2 * C + j];
            lo = v < lo ? v : lo;
            hi = v > hi ? v : hi;
        }
        for (size_t t = 0; t < T; t++) {
            float o = out->data[t * C + j];
            assert_true(o >= lo - 1e-5f && o <= hi + 1e-5f);
        }
    }
    ctx_free(&c);
}

static void test_attention_shape_errors(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    jmp_buf jb;
    c.fail_jmp = &jb;
    Tensor *bad = tensor_zeros_(&c, 2, 5, 25);
    if (setjmp(jb) == 0) {
        op_attention(&c, bad, 1);
        fail_msg("qkv (2,5,25) did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "op_attention"));
    assert_non_null(strstr(c.fail_msg, "(2,5,25)"));
    Tensor *qkv = tensor_zeros_(&c, 2, 5, 24);
    if (setjmp(jb) == 0) {
        op_attention(&c, qkv, 3);   /* C = 8 is not divisible by 3 heads */
        fail_msg("8 channels over 3 heads did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "3 heads"));
    ctx_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_gradcheck),         cmocka_unit_test(test_attention_reference),
        cmocka_unit_test(test_attention_modes_and_threads), cmocka_unit_test(test_attention_nograd_memory),
        cmocka_unit_test(test_attention_shape_errors),
    };
    return RUN_GROUP(tests);
}
