/* test_grad_checkpointing.c — activation recomputation (op_checkpoint, student.grad_checkpointing):
 * the gradients of a ViT with drop-path, with every block recomputed in backward, equal those of
 * the plain tape (parameters and input); the step arena's high-water mark drops; a gradient check
 * of a checkpointed segment; and the whole stage-1 step (ssl_forward_backward) gives the same
 * gradient block either way. */
#include "tests/common/testutil.h"
#include "nn/nn.h"
#include "ssl/ssl.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* max |a - b| over n floats, and the largest |a| (for a relative statement) */
static double max_diff(const float *a, const float *b, size_t n, double *amax) {
    double d = 0, m = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (e > d) d = e;
        if (fabs((double)a[i]) > m) m = fabs((double)a[i]);
    }
    if (amax) *amax = m;
    return d;
}

typedef struct VitRun {
    float *grad;        /* copy of the flat gradient block */
    float *dx;          /* gradient of the input images */
    size_t n;           /* trainable parameters */
    float loss;
    size_t arena_peak;  /* bytes */
} VitRun;

/* ViT-Ti-shaped (C 48, 4 blocks, 3 heads) on 2 x 3 x 32 x 32 with drop-path 0.3 and iBOT-style
 * masks, loss = sum(cls * R1) + sum(patch * R2); same seeds for both runs. */
static VitRun vit_run(int checkpointing) {
    ViTConfig cfg;
    assert_int_equal(vit_config("vit_tiny", 8, 32, &cfg), 0);
    cfg.embed_dim = 48;
    cfg.depth = 4;
    cfg.heads = 3;
    cfg.drop_path = 0.3f;
    cfg.layerscale = 0.5f;
    cfg.grad_checkpointing = checkpointing;
    ParamStore ps;
    params_init(&ps);
    ViT m;
    vit_declare(&m, &cfg, &ps, "backbone");
    params_alloc(&ps);
    Rng r;
    rng_init(&r, 7);
    vit_init(&m, &r);
    Ctx c;
    ctx_init(&c, 11);
    c.training = 1;
    VitRun out = {0};
    const size_t B = 2, N = 16;
    for (int step = 0; step < 2; step++) {   /* the second step runs on a recycled arena */
        ctx_step_begin(&c);
        params_zero_grad(&ps);
        Tensor *x = tensor_new_(&c, B, 3, 32, 32);
        Rng rx;
        rng_init(&rx, 3);
        rng_fill_normal(&rx, x->data, x->numel, 0.0f, 1.0f);
        x->requires_grad = 1;
        uint8_t masks[2 * 16];
        for (size_t i = 0; i < B * N; i++) masks[i] = (i % 5) == 1;
        ViTOut o = vit_forward(&c, &m, x, masks);
        Tensor *r1 = tensor_new_(&c, B, (size_t)cfg.embed_dim);
        Tensor *r2 = tensor_new_(&c, B, N, (size_t)cfg.embed_dim);
        rng_fill_normal(&rx, r1->data, r1->numel, 0.0f, 1.0f);
        rng_fill_normal(&rx, r2->data, r2->numel, 0.0f, 1.0f);
        Tensor *loss = op_add(&c, op_sum_all(&c, op_mul(&c, o.cls, r1)), op_sum_all(&c, op_mul(&c, o.patch, r2)));
        backward(&c, loss);
        if (step == 1) {
            out.loss = loss->data[0];
            out.grad = malloc(ps.n_train * sizeof(float));
            memcpy(out.grad, ps.grad, ps.n_train * sizeof(float));
            out.dx = malloc(x->numel * sizeof(float));
            memcpy(out.dx, x->grad, x->numel * sizeof(float));
            out.arena_peak = c.step.peak;
            out.n = ps.n_train;
        }
    }
    vit_free(&m);
    params_free(&ps);
    ctx_free(&c);
    return out;
}

static void test_vit_recompute_same_gradients(void **st) {
    (void)st;
    VitRun a = vit_run(0), b = vit_run(1);
    assert_true(a.loss == b.loss);
    assert_int_equal(a.n, b.n);
    size_t n = a.n;
    double amax, amax_x;
    double d = max_diff(a.grad, b.grad, n, &amax), dx = max_diff(a.dx, b.dx, 2 * 3 * 32 * 32, &amax_x);
    print_message("recompute: max |dparam| diff %.3g (max |dparam| %.3g), max |dx| diff %.3g; arena peak %zu -> %zu bytes\n",
                  d, amax, dx, a.arena_peak, b.arena_peak);
    assert_true(amax > 1e-3 && amax_x > 1e-6);   /* the gradients are not trivially zero */
    assert_true(d <= 1e-6 * amax);
    assert_true(dx <= 1e-6 * amax_x);
    /* the point of it: fewer bytes held at the peak */
    assert_true(b.arena_peak < a.arena_peak);
    free(a.grad), free(a.dx), free(b.grad), free(b.dx);
}

/* finite differences through a checkpointed segment (x -> tanh(x W) * x, with W a constant) */
typedef struct SegArg {
    Tensor *w;
} SegArg;
static Tensor *seg(Ctx *c, Tensor *x, const void *arg) {
    const SegArg *a = arg;
    return op_mul(c, op_tanh(c, op_matmul(c, x, a->w)), x);
}
static Tensor *gc_checkpointed(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    SegArg *a = arena_alloc(&c->step, sizeof *a);
    a->w = in[1];
    return op_checkpoint(c, seg, op_checkpoint(c, seg, in[0], a), a);
}

static void test_checkpoint_gradcheck(void **st) {
    (void)st;
    GcInput in[2] = {GC_IN(2, 5, 6), GC_IN(2, 6, 6)};
    GcOpts o = {0};
    gradcheck("op_checkpoint(x, W)", gc_checkpointed, in, 2, NULL, o);
    in[0].transposed = 1;   /* a strided input view */
    gradcheck("op_checkpoint(x^T, W)", gc_checkpointed, in, 2, NULL, o);
}

static void test_checkpoint_shape_error(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 0);
    jmp_buf jb;
    c.fail_jmp = &jb;
    Tensor *x = tensor_new_(&c, 5, 6);
    x->requires_grad = 1;
    memset(x->data, 0, x->numel * sizeof(float));
    Tensor *w = tensor_zeros_(&c, 6, 4);
    SegArg a = {w};
    if (setjmp(jb) == 0) {
        op_checkpoint(&c, seg, x, &a);   /* (5,6) x (6,4) -> (5,4) * (5,6): fails in op_mul or here */
        fail_msg("op_checkpoint accepted a segment that changes the shape");
    }
    assert_non_null(strstr(c.fail_msg, "op_"));
    ctx_free(&c);
}

/* The stage-1 step with and without recomputation: identical gradient blocks. */
static void ssl_grads(int checkpointing, float **grad, size_t *n, size_t *peak) {
    Config cfg;
    cfg_init(&cfg);
    Err e = {0};
    assert_int_equal(cfg_declare(&cfg, PRETRAIN_KEYS, PRETRAIN_N_KEYS, &e), 0);
    const char *kv[] = {"student.arch=vit_tiny", "student.patch_size=16", "crops.global_crops_size=32",
                        "crops.local_crops_size=16", "crops.local_crops_number=2", "student.drop_path_rate=0.2",
                        "dino.head_n_prototypes=64", "ibot.head_n_prototypes=64", "dino.head_hidden_dim=32",
                        "ibot.head_hidden_dim=32", "dino.head_bottleneck_dim=16", "ibot.head_bottleneck_dim=16"};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++) assert_int_equal(cfg_override(&cfg, kv[i], 0, &e), 0);
    assert_int_equal(cfg_override(&cfg, checkpointing ? "student.grad_checkpointing=true" : "student.grad_checkpointing=false", 0, &e), 0);
    SslConfig s;
    assert_int_equal(ssl_config_from(&cfg, &s, &e), 0);
    assert_int_equal(s.vit.grad_checkpointing, checkpointing);
    ParamStore sps, tps;
    params_init(&sps);
    params_init(&tps);
    tps.values_only = 1;
    SslModel student, teacher;
    ssl_model_declare(&student, &s, &sps);
    ssl_model_declare(&teacher, &s, &tps);
    params_alloc(&sps);
    params_alloc(&tps);
    Rng r;
    rng_init(&r, 5);
    ssl_model_init(&student, &r);
    params_copy(&tps, &sps);
    Ctx c;
    ctx_init(&c, 9);
    c.training = 1;
    const int B = 3;
    const size_t G = 32, L = 16, N = 4;
    float *glob = malloc(2 * B * 3 * G * G * sizeof(float)), *loc = malloc(2 * B * 3 * L * L * sizeof(float));
    rng_fill_normal(&r, glob, 2 * B * 3 * G * G, 0.0f, 1.0f);
    rng_fill_normal(&r, loc, 2 * B * 3 * L * L, 0.0f, 1.0f);
    uint8_t masks[2 * 3 * 4] = {0};
    masks[1] = masks[6] = masks[7] = masks[13] = 1;
    SslState sst = {calloc(64, sizeof(float)), calloc(64, sizeof(float))};
    SslBatch b = {.B = B, .global = glob, .local = loc, .masks = masks};
    (void)N;
    ctx_step_begin(&c);
    params_zero_grad(&sps);
    SslLosses lo;
    ssl_forward_backward(&c, &s, &student, &teacher, &sst, &b, 0.04, &lo);
    assert_true(isfinite(lo.total) && lo.ibot > 0 && lo.koleo != 0);
    *n = sps.n_train;
    *grad = malloc(*n * sizeof(float));
    memcpy(*grad, sps.grad, *n * sizeof(float));
    *peak = c.step.peak;
    free(glob), free(loc), free(sst.dino_center), free(sst.ibot_center);
    ssl_model_free(&student), ssl_model_free(&teacher);
    params_free(&sps), params_free(&tps);
    ctx_free(&c);
    cfg_free(&cfg);
}

static void test_ssl_step_recompute_same_gradients(void **st) {
    (void)st;
    float *ga, *gb;
    size_t na, nb, pa, pb;
    ssl_grads(0, &ga, &na, &pa);
    ssl_grads(1, &gb, &nb, &pb);
    assert_int_equal(na, nb);
    double amax, d = max_diff(ga, gb, na, &amax);
    print_message("stage-1 step: max |grad| diff %.3g of max |grad| %.3g; arena peak %zu -> %zu bytes\n", d, amax, pa, pb);
    assert_true(amax > 1e-4);
    assert_true(d <= 1e-6 * amax);
    free(ga), free(gb);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vit_recompute_same_gradients),
        cmocka_unit_test(test_checkpoint_gradcheck),
        cmocka_unit_test(test_checkpoint_shape_error),
        cmocka_unit_test(test_ssl_step_recompute_same_gradients),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
