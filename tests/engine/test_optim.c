/* test_optim.c — optimizers, clipping and schedules against torch.optim / DINO (tests/ref/optim.py).
 *
 * Trajectories: four tensors with per-tensor lr/wd multipliers (torch param groups), 20 fixed
 * gradients, a per-step lr and wd; parameters after every step must match PyTorch to 1e-6
 * absolute.  A fifth, frozen tensor receives gradients too and must not move. */
#include "tests/common/testutil.h"
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define STEPS 20
static const char *NAMES[4] = {"w1", "b1", "w2", "w3"};

typedef struct Case {
    const char *name;
    int kind;
    double beta1, beta2, eps, momentum;
    int nesterov;
    double clip;        /* clip_grad_norm_ before each step when > 0 */
    double lr_scale;
} Case;

/* the same hyper-parameters as CASES in tests/ref/optim.py (checked against the file's "hp") */
static const Case CASES[] = {
    {"adamw", OPTIM_ADAMW, 0.9, 0.999, 1e-8, 0, 0, 0, 1.0},
    {"adam", OPTIM_ADAM, 0.8, 0.99, 1e-6, 0, 0, 0, 1.0},
    {"sgd_momentum", OPTIM_SGD, 0, 0, 0, 0.9, 0, 0, 5.0},
    {"sgd_nesterov", OPTIM_SGD, 0, 0, 0, 0.8, 1, 0, 5.0},
    {"sgd", OPTIM_SGD, 0, 0, 0, 0, 0, 0, 5.0},
    {"adamw_clip", OPTIM_ADAMW, 0.9, 0.95, 1e-8, 0, 0, 3.0, 1.0},
};

typedef struct Fixture {
    ParamStore ps;
    Tensor *t[5];          /* w1, b1, w2, w3, frozen */
    float *grads[4];       /* (STEPS, numel) */
} Fixture;

static void fixture_init(Fixture *fx, RefFile *r) {
    char key[64];
    params_init(&fx->ps);
    for (int k = 0; k < 4; k++) {
        int nd;
        size_t shape[VT_MAX_DIMS], n;
        snprintf(key, sizeof key, "init/%s", NAMES[k]);
        float *init = ref_get(r, key, &n, &nd, shape);
        fx->t[k] = param_declare(&fx->ps, NAMES[k], PARAM_TRAINABLE, nd, shape);
        free(init);
    }
    fx->t[4] = param_(&fx->ps, "frozen", 5);
    params_alloc(&fx->ps);
    for (int k = 0; k < 4; k++) {
        size_t n;
        snprintf(key, sizeof key, "init/%s", NAMES[k]);
        float *init = ref_get(r, key, &n, NULL, NULL);
        assert_int_equal(n, fx->t[k]->numel);
        memcpy(fx->t[k]->data, init, n * sizeof(float));
        free(init);
        snprintf(key, sizeof key, "mult/%s", NAMES[k]);
        float *mult = ref_get(r, key, &n, NULL, NULL);
        Param *p = params_find(&fx->ps, NAMES[k]);
        p->lr_mult = mult[0];
        p->wd_mult = mult[1];
        free(mult);
        snprintf(key, sizeof key, "grads/%s", NAMES[k]);
        fx->grads[k] = ref_get(r, key, &n, NULL, NULL);
        assert_int_equal(n, STEPS * fx->t[k]->numel);
    }
    for (int i = 0; i < 5; i++) fx->t[4]->data[i] = 0.5f + (float)i;
    assert_int_equal(params_set_frozen(&fx->ps, "frozen", 1), 1);
}

static void fixture_free(Fixture *fx) {
    for (int k = 0; k < 4; k++) free(fx->grads[k]);
    params_free(&fx->ps);
}

static void test_trajectories_match_torch(void **st) {
    (void)st;
    RefFile *r = ref_open("optim");
    size_t n;
    float *lr_seq = ref_get(r, "lr", &n, NULL, NULL);
    float *wd_seq = ref_get(r, "wd", &n, NULL, NULL);
    double worst_all = 0;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        const Case *cs = &CASES[c];
        char key[96];
        snprintf(key, sizeof key, "%s/hp", cs->name);
        float *hp = ref_get(r, key, &n, NULL, NULL);
        /* the C table and the Python script must describe the same run */
        assert_float_equal(hp[0], (float)cs->beta1, 0);
        assert_float_equal(hp[1], (float)cs->beta2, 0);
        assert_float_equal(hp[2], (float)cs->eps, 0);
        assert_float_equal(hp[3], (float)cs->momentum, 0);
        assert_float_equal(hp[4], (float)cs->nesterov, 0);
        assert_float_equal(hp[5], (float)cs->clip, 0);
        free(hp);

        Fixture fx;
        fixture_init(&fx, r);
        OptimConfig cfg = optim_adamw_default();
        cfg.kind = cs->kind;
        cfg.beta1 = cs->beta1;
        cfg.beta2 = cs->beta2;
        cfg.eps = cs->eps;
        cfg.momentum = cs->momentum;
        cfg.nesterov = cs->nesterov;
        float *after[4], *norms = NULL;
        for (int k = 0; k < 4; k++) {
            snprintf(key, sizeof key, "%s/after/%s", cs->name, NAMES[k]);
            after[k] = ref_get(r, key, &n, NULL, NULL);
        }
        if (cs->clip > 0) {
            snprintf(key, sizeof key, "%s/norms", cs->name);
            norms = ref_get(r, key, &n, NULL, NULL);
        }
        double worst = 0;
        for (int t = 0; t < STEPS; t++) {
            for (int k = 0; k < 4; k++) {
                size_t ne = fx.t[k]->numel;
                memcpy(fx.t[k]->grad, fx.grads[k] + (size_t)t * ne, ne * sizeof(float));
            }
            /* a frozen tensor can still hold a gradient written by hand; the step must skip it
             * (zero in the clip case: backward never writes one, and torch's norm has 4 tensors) */
            for (int i = 0; i < 5; i++) fx.t[4]->grad[i] = cs->clip > 0 ? 0.0f : 1.0f;
            if (cs->clip > 0) {
                double norm = clip_grad_norm(&fx.ps, cs->clip);
                assert_true(fabs(norm - norms[t]) <= 1e-6 * fabs(norms[t]));
            }
            optim_step(&fx.ps, &cfg, t + 1, (double)lr_seq[t] * cs->lr_scale, (double)wd_seq[t]);
            for (int k = 0; k < 4; k++) {
                size_t ne = fx.t[k]->numel;
                const float *ref = after[k] + (size_t)t * ne;
                char what[96];
                snprintf(what, sizeof what, "%s step %d %s", cs->name, t + 1, NAMES[k]);
                assert_close(what, fx.t[k]->data, ref, ne, 1e-6, 0);
                for (size_t i = 0; i < ne; i++) worst = fmax(worst, fabs((double)fx.t[k]->data[i] - ref[i]));
            }
        }
        for (int i = 0; i < 5; i++) {
            assert_float_equal(fx.t[4]->data[i], 0.5f + (float)i, 0);   /* no step, no decay */
            assert_float_equal(fx.ps.m[params_find(&fx.ps, "frozen")->offset + (size_t)i], 0, 0);
        }
        print_message("%-13s max |C - torch| over 20 steps: %.3g\n", cs->name, worst);
        worst_all = fmax(worst_all, worst);
        for (int k = 0; k < 4; k++) free(after[k]);
        free(norms);
        fixture_free(&fx);
    }
    print_message("all optimizers: max |C - torch| = %.3g (tolerance 1e-6)\n", worst_all);
    free(lr_seq);
    free(wd_seq);
    ref_close(r);
}

/* Step 1 of Adam has m_hat = g and v_hat = g^2, so the update is lr * g / (|g| + eps): the
 * multipliers can be checked against a closed form, independently of PyTorch. */
static void test_multipliers_closed_form(void **st) {
    (void)st;
    ParamStore ps;
    params_init(&ps);
    Tensor *a = param_(&ps, "a", 4), *b = param_(&ps, "b.bias", 4);
    params_alloc(&ps);
    Param *pb = params_find(&ps, "b.bias");
    pb->lr_mult = 0.1f;
    pb->wd_mult = 0.0f;
    const float g[4] = {0.5f, -2.0f, 1e-3f, 3.0f};
    for (int i = 0; i < 4; i++) {
        a->data[i] = b->data[i] = 1.0f + (float)i;
        a->grad[i] = b->grad[i] = g[i];
    }
    OptimConfig cfg = optim_adamw_default();
    const double lr = 0.01, wd = 0.5;
    optim_step(&ps, &cfg, 1, lr, wd);
    for (int i = 0; i < 4; i++) {
        double p0 = 1.0 + i, s = g[i] / (fabs(g[i]) + cfg.eps);
        assert_true(fabs(a->data[i] - (p0 * (1 - lr * wd) - lr * s)) < 1e-6);
        assert_true(fabs(b->data[i] - (p0 - 0.1 * lr * s)) < 1e-6);   /* no decay, lr x 0.1 */
    }
    /* SGD: p -= lr * lr_mult * (g + wd * wd_mult * p) */
    cfg.kind = OPTIM_SGD;
    cfg.momentum = 0;
    pb->wd_mult = 2.0f;
    float pa[4], pbv[4];
    memcpy(pa, a->data, sizeof pa);
    memcpy(pbv, b->data, sizeof pbv);
    optim_step(&ps, &cfg, 1, lr, wd);
    for (int i = 0; i < 4; i++) {
        assert_true(fabs(a->data[i] - (pa[i] - lr * (g[i] + wd * pa[i]))) < 1e-6);
        assert_true(fabs(b->data[i] - (pbv[i] - 0.1 * lr * (g[i] + 2.0 * wd * pbv[i]))) < 1e-6);
    }
    params_free(&ps);
}

static void test_frozen_by_prefix(void **st) {
    (void)st;
    ParamStore ps;
    params_init(&ps);
    Tensor *h1 = param_(&ps, "head.last_layer.weight", 3, 2);
    Tensor *h2 = param_(&ps, "head.mlp.0.weight", 2);
    Tensor *bb = param_(&ps, "backbone.w", 2);
    Tensor *rm = buffer_(&ps, "head.bn.running_mean", 2);
    params_alloc(&ps);
    assert_true(h1->requires_grad && h1->is_param && !rm->requires_grad);
    assert_true(((uintptr_t)h2->data & 63) == 0 && ((uintptr_t)bb->grad & 63) == 0);   /* 64-byte aligned */
    for (size_t i = 0; i < ps.n_train; i++) ps.grad[i] = 1.0f;
    assert_int_equal(params_set_frozen(&ps, "head.last_layer", 1), 1);
    assert_int_equal(params_set_frozen(&ps, "nothing.", 1), 0);          /* a typo is visible */
    assert_false(h1->requires_grad);
    assert_true(h2->requires_grad && bb->requires_grad);
    for (size_t i = 0; i < h1->numel; i++) assert_float_equal(h1->grad[i], 0, 0);  /* stale grad gone */
    float before[6];
    memcpy(before, h1->data, sizeof before);
    OptimConfig cfg = optim_adamw_default();
    optim_step(&ps, &cfg, 1, 0.1, 0.1);
    assert_memory_equal(before, h1->data, sizeof before);
    assert_true(fabsf(bb->data[0] - (-0.1f)) < 1e-6f);                  /* 0 -> -lr * sign(g) */
    assert_int_equal(params_set_frozen(&ps, "head.", 0), 2);
    assert_true(h1->requires_grad);
    params_zero_grad(&ps);
    for (size_t i = 0; i < ps.n_train; i++) assert_float_equal(ps.grad[i], 0, 0);
    params_free(&ps);
}

static void test_clip_matches_torch(void **st) {
    (void)st;
    RefFile *r = ref_open("optim");
    Fixture fx;
    fixture_init(&fx, r);
    params_set_frozen(&fx.ps, "frozen", 0);
    char key[64];
    size_t n;
    const char *labels[3] = {"clipped", "unclipped", "per_param"};
    for (int l = 0; l < 3; l++) {
        for (int k = 0; k < 4; k++) {
            snprintf(key, sizeof key, "clip/input/%s", NAMES[k]);
            float *in = ref_get(r, key, &n, NULL, NULL);
            memcpy(fx.t[k]->grad, in, n * sizeof(float));
            free(in);
        }
        memset(fx.t[4]->grad, 0, 5 * sizeof(float));
        snprintf(key, sizeof key, "clip/%s/max_norm", labels[l]);
        float *mx = ref_get(r, key, &n, NULL, NULL);
        if (l < 2) {
            snprintf(key, sizeof key, "clip/%s/norm", labels[l]);
            float *want = ref_get(r, key, &n, NULL, NULL);
            double norm = clip_grad_norm(&fx.ps, mx[0]);
            print_message("clip_grad_norm_ %s: norm %.7g (torch %.7g)\n", labels[l], norm, want[0]);
            assert_true(fabs(norm - want[0]) <= 1e-6 * want[0]);
            free(want);
        } else {
            clip_grad_per_param(&fx.ps, mx[0]);
        }
        free(mx);
        for (int k = 0; k < 4; k++) {
            snprintf(key, sizeof key, "clip/%s/%s", labels[l], NAMES[k]);
            float *want = ref_get(r, key, &n, NULL, NULL);
            assert_close(key, fx.t[k]->grad, want, n, 1e-7, 1e-6);
            free(want);
        }
    }
    fixture_free(&fx);
    ref_close(r);

    /* the +1e-6 in the coefficient only shows at tiny norms: |g| = 2e-6, max 1e-6 -> g/3 */
    ParamStore ps;
    params_init(&ps);
    Tensor *g = param_(&ps, "g", 1);
    params_alloc(&ps);
    g->grad[0] = 2e-6f;
    assert_true(fabs(clip_grad_norm(&ps, 1e-6) - 2e-6) < 1e-12);
    assert_true(fabsf(g->grad[0] - 2e-6f / 3.0f) < 1e-12f);
    g->grad[0] = -2e-6f;
    clip_grad_per_param(&ps, 1e-6);
    assert_true(fabsf(g->grad[0] + 2e-6f / 3.0f) < 1e-12f);
    params_free(&ps);
}

/* The norm is summed in double over a fixed chunking: same bits for 1 and 2 threads, and close
 * to a long-double sum. */
static void test_norm_deterministic(void **st) {
    (void)st;
    ParamStore ps;
    params_init(&ps);
    param_(&ps, "big", 1000, 1001);
    param_(&ps, "small", 7);
    params_alloc(&ps);
    Rng r;
    rng_init(&r, 7);
    rng_fill_normal(&r, ps.grad, ps.n_train, 0.0f, 1.0f);
    /* the padding between tensors must stay zero for the flat-block norm to be right */
    memset(ps.grad + params_find(&ps, "big")->offset + 1000 * 1001, 0,
           (params_find(&ps, "small")->offset - 1000 * 1001) * sizeof(float));
    memset(ps.grad + params_find(&ps, "small")->offset + 7, 0,
           (ps.n_train - params_find(&ps, "small")->offset - 7) * sizeof(float));
    long double ref = 0;
    for (size_t i = 0; i < ps.n_train; i++) ref += (long double)ps.grad[i] * ps.grad[i];
    int saved = omp_get_max_threads();
    omp_set_num_threads(1);
    double n1 = grad_global_norm(&ps);
    omp_set_num_threads(2);
    double n2 = grad_global_norm(&ps);
    omp_set_num_threads(saved);
    assert_memory_equal(&n1, &n2, sizeof n1);
    assert_true(fabs(n1 - (double)sqrtl(ref)) <= 1e-12 * n1);
    params_free(&ps);
}

static void test_schedules(void **st) {
    (void)st;
    /* closed forms: base 1, final 0, 10 warm-up steps from 0, 110 steps in all */
    assert_true(sched_cosine(0, 110, 1.0, 0.0, 10, 0.0) == 0.0);
    assert_true(fabs(sched_cosine(5, 110, 1.0, 0.0, 10, 0.0) - 5.0 / 9.0) < 1e-15);   /* linspace */
    assert_true(sched_cosine(9, 110, 1.0, 0.0, 10, 0.0) == 1.0);   /* warm-up ends exactly at base */
    assert_true(sched_cosine(10, 110, 1.0, 0.0, 10, 0.0) == 1.0);
    assert_true(fabs(sched_cosine(60, 110, 1.0, 0.0, 10, 0.0) - 0.5) < 1e-15);
    assert_true(fabs(sched_cosine(109, 110, 1.0, 0.0, 10, 0.0) - 0.5 * (1 + cos(M_PI * 99 / 100))) < 1e-15);
    assert_true(sched_cosine(110, 110, 1.0, 0.0, 10, 0.0) == 0.0);    /* final past the end */
    assert_true(sched_cosine(5000, 110, 1.0, 0.25, 10, 0.0) == 0.25);
    assert_true(sched_linear(0, 5, 2.0, 4.0) == 2.0 && sched_linear(2, 5, 2.0, 4.0) == 3.0);
    assert_true(sched_linear(4, 5, 2.0, 4.0) == 4.0 && sched_linear(99, 5, 2.0, 4.0) == 4.0);
    assert_true(sched_constant(123, 0.7) == 0.7);

    /* DINO's numpy cosine_scheduler / linspace arrays, every step */
    RefFile *r = ref_open("optim");
    size_t n;
    float *lr = ref_get(r, "sched/lr", &n, NULL, NULL);
    assert_int_equal(n, 70);
    for (long i = 0; i < 70; i++) {
        float got = (float)sched_cosine(i, 70, 5e-4, 1e-6, 14, 1e-6);
        assert_true(fabsf(got - lr[i]) <= 1e-6f * lr[i]);
    }
    float *mom = ref_get(r, "sched/momentum", &n, NULL, NULL);
    for (long i = 0; i < 70; i++) assert_true(fabsf((float)sched_cosine(i, 70, 0.996, 1.0, 0, 0) - mom[i]) <= 1e-7f);
    float *temp = ref_get(r, "sched/teacher_temp", &n, NULL, NULL);
    for (long i = 0; i < 70; i++) assert_true(fabsf((float)sched_linear(i, 30, 0.04, 0.07) - temp[i]) <= 1e-8f);
    free(lr);
    free(mom);
    free(temp);
    ref_close(r);
}

static void test_ema_and_copy(void **st) {
    (void)st;
    ParamStore s, t;
    params_init(&s);
    params_init(&t);
    t.values_only = 1;   /* an EMA teacher: no gradient or moment blocks */
    Tensor *ws = param_(&s, "w", 3), *bs = buffer_(&s, "bn.running_mean", 2);
    Tensor *wt = param_(&t, "w", 3), *bt = buffer_(&t, "bn.running_mean", 2);
    params_alloc(&s);
    params_alloc(&t);
    assert_null(t.grad);
    assert_null(t.m);
    assert_false(wt->requires_grad);
    for (int i = 0; i < 3; i++) ws->data[i] = (float)(i + 1);
    bs->data[0] = 5;
    bs->data[1] = 6;
    params_copy(&t, &s);
    assert_memory_equal(wt->data, ws->data, 3 * sizeof(float));
    assert_float_equal(bt->data[1], 6, 0);
    for (int i = 0; i < 3; i++) ws->data[i] = 0;
    params_ema(&t, &s, 0.75f);
    for (int i = 0; i < 3; i++) assert_float_equal(wt->data[i], 0.75f * (float)(i + 1), 1e-7);
    params_free(&s);
    params_free(&t);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_trajectories_match_torch), cmocka_unit_test(test_multipliers_closed_form),
        cmocka_unit_test(test_frozen_by_prefix),         cmocka_unit_test(test_clip_matches_torch),
        cmocka_unit_test(test_norm_deterministic),       cmocka_unit_test(test_schedules),
        cmocka_unit_test(test_ema_and_copy),
    };
    return RUN_GROUP(tests);
}
