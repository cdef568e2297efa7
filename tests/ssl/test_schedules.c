/* test_schedules.c — stage-1 schedules at chosen iterations against DINOv2's CosineScheduler
 * (np.linspace warm-up, then final + 0.5 (base - final)(1 + cos(pi i / len)), final past the end)
 * and the learning-rate scaling rules. */
#include "tests/common/testutil.h"
#include "ssl/ssl.h"
#include <math.h>
#include <string.h>

/* DINOv2 utils.CosineScheduler, written out */
static double cosine_ref(long it, long total, double base, double final, long warmup, double start) {
    if (it >= total) return final;
    if (it < warmup) return warmup == 1 ? base : start + (base - start) * (double)it / (double)(warmup - 1);
    long n = total - warmup;
    return final + 0.5 * (base - final) * (1.0 + cos(M_PI * (double)(it - warmup) / (double)n));
}

static SslConfig base_config(void) {
    Config cfg;
    cfg_init(&cfg);
    Err e = {0};
    cfg_declare(&cfg, PRETRAIN_KEYS, PRETRAIN_N_KEYS, &e);
    cfg_load_string(&cfg,
                    "train: {batch_size_per_gpu: 16, OFFICIAL_EPOCH_LENGTH: 100}\n"
                    "optim: {epochs: 10, base_lr: 0.004, warmup_epochs: 2, min_lr: 1e-6, weight_decay: 0.04,\n"
                    "        weight_decay_end: 0.4, freeze_last_layer_epochs: 1}\n"
                    "teacher: {momentum_teacher: 0.992, final_momentum_teacher: 1.0, warmup_teacher_temp: 0.04,\n"
                    "          teacher_temp: 0.07, warmup_teacher_temp_epochs: 3}\n",
                    "test", &e);
    SslConfig s;
    if (ssl_config_from(&cfg, &s, &e)) fail_msg("%s", e.msg);
    cfg_free(&cfg);
    return s;
}

static void test_schedules_match_dinov2(void **st) {
    (void)st;
    SslConfig s = base_config();
    const long T = 1000, W = 200, TW = 300, FREEZE = 100;
    const int world = 4;   /* global batch 64: peak = 0.004 * sqrt(64 / 1024) = 0.001 */
    const double peak = 0.004 * sqrt(64.0 / 1024.0);
    const long its[] = {0, 1, 57, 99, 100, 150, 199, 200, 201, 299, 300, 450, 777, 998, 999, 1000, 1500};
    for (size_t k = 0; k < sizeof its / sizeof its[0]; k++) {
        long it = its[k];
        SslSchedules v = ssl_schedules(&s, it, world);
        double lr = cosine_ref(it, T, peak, 1e-6, W, 0.0);
        double wd = cosine_ref(it, T, 0.04, 0.4, 0, 0.0);
        double mom = cosine_ref(it, T, 0.992, 1.0, 0, 0.0);
        double tt = it < TW ? cosine_ref(it, TW, 0.07, 0.07, TW, 0.04) : 0.07;
        double llr = it < FREEZE ? 0.0 : lr;
        if (fabs(v.lr - lr) > 1e-12 || fabs(v.wd - wd) > 1e-12 || fabs(v.momentum - mom) > 1e-12 ||
            fabs(v.teacher_temp - tt) > 1e-12 || fabs(v.last_layer_lr - llr) > 1e-12)
            fail_msg("iteration %ld: lr %.10g/%.10g wd %.10g/%.10g momentum %.10g/%.10g temp %.10g/%.10g last %.10g/%.10g",
                     it, v.lr, lr, v.wd, wd, v.momentum, mom, v.teacher_temp, tt, v.last_layer_lr, llr);
    }
    /* landmarks stated in the recipe */
    assert_true(fabs(ssl_schedules(&s, W, world).lr - peak) < 1e-12);     /* peak right after warm-up */
    assert_true(fabs(ssl_schedules(&s, 0, world).teacher_temp - 0.04) < 1e-12);
    assert_true(fabs(ssl_schedules(&s, TW - 1, world).teacher_temp - 0.07) < 1e-12);
    assert_true(ssl_schedules(&s, FREEZE - 1, world).last_layer_lr == 0.0);
    assert_true(ssl_schedules(&s, FREEZE, world).last_layer_lr > 0.0);
}

static void test_lr_scaling_rules(void **st) {
    (void)st;
    SslConfig s = base_config();
    s.warmup_epochs = 0;
    s.lr_rule = 2;   /* linear_wrt_256: 0.004 * 64 / 256 */
    assert_true(fabs(ssl_schedules(&s, 0, 4).lr - 0.004 * 64.0 / 256.0) < 1e-12);
    s.lr_rule = 0;
    assert_true(fabs(ssl_schedules(&s, 0, 4).lr - 0.004) < 1e-12);
    s.lr_override = 1e-4;   /* optim.lr wins over any rule */
    assert_true(fabs(ssl_schedules(&s, 0, 4).lr - 1e-4) < 1e-12);
}

static void test_bad_config_names_key(void **st) {
    (void)st;
    Config cfg;
    cfg_init(&cfg);
    Err e = {0};
    cfg_declare(&cfg, PRETRAIN_KEYS, PRETRAIN_N_KEYS, &e);
    cfg_load_string(&cfg, "train: {centering: sinkhorn}\n", "x.yaml", &e);
    SslConfig s;
    assert_int_equal(ssl_config_from(&cfg, &s, &e), 1);
    assert_non_null(strstr(e.msg, "train.centering"));
    cfg_free(&cfg);
    cfg_init(&cfg);
    cfg_declare(&cfg, PRETRAIN_KEYS, PRETRAIN_N_KEYS, &e);
    e.msg[0] = 0;
    assert_int_equal(cfg_override(&cfg, "optim.lrr=1", 0, &e), 1);   /* unknown key */
    assert_non_null(strstr(e.msg, "optim.lrr"));
    cfg_free(&cfg);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_schedules_match_dinov2),
        cmocka_unit_test(test_lr_scaling_rules),
        cmocka_unit_test(test_bad_config_names_key),
    };
    return RUN_GROUP(tests);
}
