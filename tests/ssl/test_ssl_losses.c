/* test_ssl_losses.c — DINO, iBOT, KoLeo losses and the teacher targets against DINOv2's code
 * (tests/ref/ssl_losses.py), plus finite-difference checks of each loss's backward. */
#include "tests/common/testutil.h"
#include "ssl/ssl.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static float *get(RefFile *r, const char *k, size_t *n) {
    return ref_get(r, k, n, NULL, NULL);
}

static void test_dino_targets_and_loss(void **st) {
    (void)st;
    RefFile *r = ref_open("ssl_losses");
    size_t ns, nt, nc, n;
    float *s = get(r, "dino/s", &ns), *t_raw = get(r, "dino/t_raw", &nt), *center = get(r, "dino/center", &nc);
    float *t_ref = get(r, "dino/t", &n), *loss_ref = get(r, "dino/loss", &n), *g_ref = get(r, "dino/s_grad", &n);
    float *c_next = get(r, "dino/center_next", &n);
    const size_t K = nc, B = 4;
    const int S = (int)(ns / (B * K)), T = 2;
    /* softmax centering */
    float *t = malloc(nt * sizeof(float));
    dino_softmax_center(t_raw, center, nt / K, K, 0.04f, t);
    assert_close("teacher targets", t, t_ref, nt, 1e-6, 1e-5);
    /* loss and gradient */
    Ctx c;
    ctx_init(&c, 1);
    Tensor *st_ = tensor_from(&c, 2, TSHAPE(ns / K, K), s);
    st_->requires_grad = 1;
    Tensor *loss = dino_loss(&c, st_, t, S, T, 0.1f);
    assert_close("dino loss", loss->data, loss_ref, 1, 1e-6, 1e-5);
    backward(&c, loss);
    assert_close("dino grad", st_->grad, g_ref, ns, 1e-7, 1e-4);
    /* delayed center update */
    double *sum = malloc(K * sizeof(double));
    dino_batch_sum(t_raw, nt / K, K, sum);
    dino_center_apply(center, sum, K, (double)(nt / K), 0.9f);
    assert_close("center update", center, c_next, K, 1e-7, 1e-5);
    free(sum);
    free(s); free(t_raw); free(center); free(t_ref); free(loss_ref); free(g_ref); free(c_next); free(t);
    ctx_free(&c);
    ref_close(r);
}

static void test_ibot_loss(void **st) {
    (void)st;
    RefFile *r = ref_open("ssl_losses");
    size_t ns, n, nw;
    float *s = get(r, "ibot/s", &ns), *t = get(r, "ibot/t", &n), *w = get(r, "ibot/w", &nw);
    float *loss_ref = get(r, "ibot/loss", &n), *g_ref = get(r, "ibot/s_grad", &n);
    const size_t M = nw, K = ns / M;
    Ctx c;
    ctx_init(&c, 1);
    Tensor *s_ = tensor_from(&c, 2, TSHAPE(M, K), s);
    s_->requires_grad = 1;
    Tensor *loss = ibot_loss(&c, s_, t, w, 6, 0.1f);
    assert_close("ibot loss", loss->data, loss_ref, 1, 1e-6, 1e-5);
    backward(&c, loss);
    assert_close("ibot grad", s_->grad, g_ref, ns, 1e-7, 1e-4);
    free(s); free(t); free(w); free(loss_ref); free(g_ref);
    ctx_free(&c);
    ref_close(r);
}

static void test_koleo_loss(void **st) {
    (void)st;
    RefFile *r = ref_open("ssl_losses");
    size_t nx, n;
    float *x = get(r, "koleo/x", &nx), *loss_ref = get(r, "koleo/loss", &n), *g_ref = get(r, "koleo/x_grad", &n);
    Ctx c;
    ctx_init(&c, 1);
    Tensor *x_ = tensor_from(&c, 2, TSHAPE(7, 10), x);
    x_->requires_grad = 1;
    Tensor *loss = koleo_loss(&c, x_);
    assert_close("koleo loss", loss->data, loss_ref, 1, 1e-6, 1e-5);
    backward(&c, loss);
    assert_close("koleo grad", x_->grad, g_ref, nx, 1e-6, 1e-4);
    free(x); free(loss_ref); free(g_ref);
    ctx_free(&c);
    ref_close(r);
}

static void test_sinkhorn_knopp(void **st) {
    (void)st;
    RefFile *r = ref_open("ssl_losses");
    size_t nt, n;
    float *t = get(r, "sinkhorn/t", &nt), *q_ref = get(r, "sinkhorn/q", &n);
    Ctx c;
    ctx_init(&c, 1);
    float *q = malloc(nt * sizeof(float));
    sinkhorn_knopp(&c, t, 6, 10, 0.07f, 3, 6.0, q);
    assert_close("sinkhorn", q, q_ref, nt, 1e-6, 1e-4);
    for (int i = 0; i < 6; i++) {   /* each row is an assignment */
        double rs = 0;
        for (int k = 0; k < 10; k++) rs += q[i * 10 + k];
        assert_true(fabs(rs - 1.0) < 1e-5);
    }
    free(t); free(q_ref); free(q);
    ctx_free(&c);
    ref_close(r);
}

/* ---- finite-difference checks ---- */

typedef struct { float *t, *w; } LossArgs;

static Tensor *f_dino(Ctx *c, Tensor **in, void *ud) {
    return dino_loss(c, in[0], ((LossArgs *)ud)->t, 4, 2, 0.1f);
}
static Tensor *f_ibot(Ctx *c, Tensor **in, void *ud) {
    return ibot_loss(c, in[0], ((LossArgs *)ud)->t, ((LossArgs *)ud)->w, 3, 0.1f);
}
static Tensor *f_koleo(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    return koleo_loss(c, in[0]);
}

static void test_gradchecks(void **st) {
    (void)st;
    Rng rng;
    rng_init(&rng, 7);
    const size_t B = 3, K = 7;
    float t[2 * 3 * 7], raw[2 * 3 * 7], w[5] = {0.5f, 0.5f, 1.0f, 0.25f, 0.25f};
    rng_fill_normal(&rng, raw, 2 * B * K, 0, 1);
    float zero_center[7] = {0};
    dino_softmax_center(raw, zero_center, 2 * B, K, 0.3f, t);
    LossArgs a = {t, w};
    GcOpts o = {.h = 1e-2, .atol = 1e-3, .rtol = 1e-2};
    GcInput s = GC_IN(2, 4 * B, K);
    s.lo = -2, s.hi = 2;
    gradcheck("dino_loss", f_dino, &s, 1, &a, o);
    GcInput sm = GC_IN(2, 5, K);
    gradcheck("ibot_loss", f_ibot, &sm, 1, &a, o);
    GcInput x = GC_IN(2, 6, 5);
    gradcheck("koleo_loss", f_koleo, &x, 1, NULL, (GcOpts){.h = 1e-3, .atol = 2e-3, .rtol = 2e-2});
}

/* The collapse monitors logged by `versa pretrain` (t_entropy, t_marginal, s_entropy) against
 * closed forms: uniform row ln K, one-hot row 0, the marginal of the two, and a 2-way softmax. */
static void test_entropy_monitors(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    ctx_step_begin(&c);
    enum { K = 8 };
    float p[2 * K];   /* (2, K): uniform row, one-hot row at k = 3 */
    for (int k = 0; k < K; k++) {
        p[k] = 1.0f / K;
        p[K + k] = k == 3 ? 1.0f : 0.0f;
    }
    double row, marg;
    prob_entropy(&c, p, 2, K, &row, &marg);
    double marg_ref = -(9.0 / 16 * log(9.0 / 16) + 7.0 / 16 * log(1.0 / 16));
    assert_true(fabs(row - 0.5 * log((double)K)) < 1e-6);
    assert_true(fabs(marg - marg_ref) < 1e-6);
    /* rows: equal logits (ln 2); softmax (1/4, 3/4) at temp 0.1; a 1000-sigma logit (0, no NaN) */
    float s[6] = {0.5f, 0.5f, 0.0f, 0.1f * logf(3.0f), 100.0f, 0.0f};   /* (3, 2) */
    double h = softmax_entropy(&c, s, 3, 2, 0.1f);
    double h_ref = (log(2.0) + -(0.25 * log(0.25) + 0.75 * log(0.75)) + 0.0) / 3.0;
    assert_true(isfinite(h));
    assert_true(fabs(h - h_ref) < 1e-6);
    ctx_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dino_targets_and_loss), cmocka_unit_test(test_ibot_loss),
        cmocka_unit_test(test_koleo_loss),            cmocka_unit_test(test_sinkhorn_knopp),
        cmocka_unit_test(test_gradchecks),            cmocka_unit_test(test_entropy_monitors),
    };
    return RUN_GROUP(tests);
}
