/* test_learning.c — learning works end to end: a tiny MLP on two interleaved spirals and a tiny
 * CNN on 12x12 images of bars (horizontal / vertical / diagonal / cross) train to a stated
 * accuracy with the engine's ops, losses, AdamW and ParamStore. */
#include "tests/common/testutil.h"
#include <math.h>
#include <stdlib.h>

/* two spirals, 2 classes: hard for a linear model, easy for an MLP */
static void spirals(Rng *r, size_t n, float *x, int32_t *y) {
    for (size_t i = 0; i < n; i++) {
        int c = (int)(i % 2);
        float t = 0.25f + 3.0f * rng_uniform(r);                 /* angle / pi */
        float rad = t / 3.25f;
        float a = t * 3.14159265f + (float)c * 3.14159265f;
        x[2 * i] = rad * cosf(a) + 0.02f * rng_normal(r);
        x[2 * i + 1] = rad * sinf(a) + 0.02f * rng_normal(r);
        y[i] = c;
    }
}

static double accuracy(const Tensor *logits, const int32_t *y) {
    size_t n = logits->shape[0], k = logits->shape[1], ok = 0;
    for (size_t i = 0; i < n; i++) {
        size_t best = 0;
        for (size_t j = 1; j < k; j++)
            if (logits->data[i * k + j] > logits->data[i * k + best]) best = j;
        ok += (int32_t)best == y[i];
    }
    return (double)ok / (double)n;
}

static void test_mlp_learns_spirals(void **st) {
    (void)st;
    enum { N = 512, H = 64 };
    ParamStore ps;
    params_init(&ps);
    Tensor *w1 = param_(&ps, "fc1.weight", H, 2), *b1 = param_(&ps, "fc1.bias", H);
    Tensor *w2 = param_(&ps, "fc2.weight", H, H), *b2 = param_(&ps, "fc2.bias", H);
    Tensor *w3 = param_(&ps, "fc3.weight", 2, H), *b3 = param_(&ps, "fc3.bias", 2);
    params_alloc(&ps);
    Rng r;
    rng_init(&r, 11);
    rng_fill_uniform(&r, w1->data, w1->numel, -0.7f, 0.7f);
    rng_fill_uniform(&r, w2->data, w2->numel, -0.125f, 0.125f);
    rng_fill_uniform(&r, w3->data, w3->numel, -0.125f, 0.125f);
    float x[2 * N], xt[2 * N];
    int32_t y[N], yt[N];
    spirals(&r, N, x, y);
    spirals(&r, N, xt, yt);   /* held-out test set */
    OptimConfig oc = optim_adamw_default();
    oc.weight_decay = 0;
    Ctx c;
    ctx_init(&c, 3);
    double first_loss = 0, last_loss = 0;
    for (long step = 1; step <= 400; step++) {
        ctx_step_begin(&c);
        params_zero_grad(&ps);
        Tensor *in = tensor_wrap(&c, x, 2, TSHAPE(N, 2));
        Tensor *h = op_relu(&c, op_linear(&c, in, w1, b1));
        h = op_relu(&c, op_linear(&c, h, w2, b2));
        Tensor *loss = loss_cross_entropy(&c, op_linear(&c, h, w3, b3), y, 0.0f);
        if (step == 1) first_loss = loss->data[0];
        last_loss = loss->data[0];
        backward(&c, loss);
        optim_step(&ps, &oc, step, sched_cosine(step - 1, 400, 0.02, 1e-4, 40, 0.0), 0.0);
    }
    ctx_step_begin(&c);
    ctx_set_grad(&c, 0);
    Tensor *in = tensor_wrap(&c, xt, 2, TSHAPE(N, 2));
    Tensor *h = op_relu(&c, op_linear(&c, op_relu(&c, op_linear(&c, in, w1, b1)), w2, b2));
    double acc = accuracy(op_linear(&c, h, w3, b3), yt);
    print_message("MLP on spirals: loss %.3f -> %.3f, held-out accuracy %.3f\n", first_loss, last_loss, acc);
    assert_true(acc >= 0.95);
    ctx_free(&c);
    params_free(&ps);
}

/* 12x12 images: class 0 horizontal bar, 1 vertical bar, 2 diagonal, 3 cross; random position,
 * contrast and noise */
static void bars(Rng *r, size_t n, float *x, int32_t *y) {
    const int S = 12;
    for (size_t i = 0; i < n; i++) {
        float *im = x + i * S * S;
        int c = (int)rng_below(r, 4);
        int p = 2 + (int)rng_below(r, 8);
        float a = 0.6f + 0.4f * rng_uniform(r);
        for (int k = 0; k < S * S; k++) im[k] = 0.15f * rng_normal(r);
        for (int k = 0; k < S; k++) {
            if (c == 0 || c == 3) im[p * S + k] += a;
            if (c == 1 || c == 3) im[k * S + p] += a;
            if (c == 2) im[k * S + (k + p) % S] += a;
        }
        y[i] = c;
    }
}

static void test_cnn_learns_bars(void **st) {
    (void)st;
    enum { N = 128, C1 = 8, C2 = 16 };
    ParamStore ps;
    params_init(&ps);
    Tensor *k1 = param_(&ps, "conv1.weight", C1, 1, 3, 3), *c1b = param_(&ps, "conv1.bias", C1);
    Tensor *k2 = param_(&ps, "conv2.weight", C2, C1, 3, 3);
    Tensor *bnw = param_(&ps, "bn.weight", C2), *bnb = param_(&ps, "bn.bias", C2);
    Tensor *rm = buffer_(&ps, "bn.running_mean", C2), *rv = buffer_(&ps, "bn.running_var", C2);
    Tensor *fw = param_(&ps, "fc.weight", 4, C2), *fb = param_(&ps, "fc.bias", 4);
    params_alloc(&ps);
    Rng r;
    rng_init(&r, 5);
    rng_fill_normal(&r, k1->data, k1->numel, 0, sqrtf(2.0f / 9));
    rng_fill_normal(&r, k2->data, k2->numel, 0, sqrtf(2.0f / (9 * C1)));
    rng_fill_uniform(&r, fw->data, fw->numel, -0.25f, 0.25f);
    for (int i = 0; i < C2; i++) {
        bnw->data[i] = 1;
        rv->data[i] = 1;
    }
    float *x = malloc(N * 144 * sizeof(float)), *xt = malloc(N * 144 * sizeof(float));
    int32_t y[N], yt[N];
    bars(&r, N, x, y);
    bars(&r, N, xt, yt);
    OptimConfig oc = optim_adamw_default();
    Ctx c;
    ctx_init(&c, 9);
    Conv2dArgs a1 = conv2d_args(1, 1, 1, 1), a2 = conv2d_args(2, 1, 1, 1);
    double first = 0, last = 0;
    for (long step = 1; step <= 60; step++) {
        ctx_step_begin(&c);
        c.training = 1;
        params_zero_grad(&ps);
        Tensor *in = tensor_wrap(&c, x, 4, TSHAPE(N, 1, 12, 12));
        Tensor *h = op_relu(&c, op_conv2d(&c, in, k1, c1b, a1));                        /* (N, 8, 12, 12) */
        h = op_max_pool2d(&c, h, 2, 2, 0);                                               /* (N, 8, 6, 6) */
        h = op_silu(&c, op_batchnorm(&c, op_conv2d(&c, h, k2, NULL, a2), bnw, bnb, rm->data, rv->data, 0.1f, 1e-5f));
        Tensor *logits = op_linear(&c, op_global_avg_pool(&c, h), fw, fb);             /* (N, 4) */
        Tensor *loss = loss_cross_entropy(&c, logits, y, 0.0f);
        if (step == 1) first = loss->data[0];
        last = loss->data[0];
        backward(&c, loss);
        optim_step(&ps, &oc, step, 0.01, 0.01);
    }
    ctx_step_begin(&c);
    c.training = 0;   /* BN running statistics */
    ctx_set_grad(&c, 0);
    Tensor *in = tensor_wrap(&c, xt, 4, TSHAPE(N, 1, 12, 12));
    Tensor *h = op_max_pool2d(&c, op_relu(&c, op_conv2d(&c, in, k1, c1b, a1)), 2, 2, 0);
    h = op_silu(&c, op_batchnorm(&c, op_conv2d(&c, h, k2, NULL, a2), bnw, bnb, rm->data, rv->data, 0.1f, 1e-5f));
    double acc = accuracy(op_linear(&c, op_global_avg_pool(&c, h), fw, fb), yt);
    print_message("CNN on bars: loss %.3f -> %.3f, held-out accuracy %.3f (chance 0.25)\n", first, last, acc);
    assert_true(acc >= 0.9);
    free(x);
    free(xt);
    ctx_free(&c);
    params_free(&ps);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mlp_learns_spirals),
        cmocka_unit_test(test_cnn_learns_bars),
    };
    return RUN_GROUP(tests);
}
