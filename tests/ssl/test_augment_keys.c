/* test_augment_keys.c — the augmentation strengths of a pretraining config (crops.color_jitter_p,
 * brightness, contrast, blur_p, solarize_p) reach the multi-crop loader: defaults are DINOv2's,
 * overrides change what multicrop() draws, and bad values are refused with the key named. */
#include "tests/common/testutil.h"
#include "ssl/ssl.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int config_with(const char *const *kv, int n, SslConfig *s, Err *e) {
    Config cfg;
    cfg_init(&cfg);
    int rc = cfg_declare(&cfg, PRETRAIN_KEYS, PRETRAIN_N_KEYS, e);
    const char *small[] = {"student.patch_size=8", "crops.global_crops_size=32", "crops.local_crops_size=16",
                           "crops.local_crops_number=2"};
    for (int i = 0; i < 4 && !rc; i++) rc = cfg_override(&cfg, small[i], 0, e);
    for (int i = 0; i < n && !rc; i++) rc = cfg_override(&cfg, kv[i], 0, e);
    if (!rc) rc = ssl_config_from(&cfg, s, e);
    cfg_free(&cfg);
    return rc;
}

/* how many of `draws` multi-crop calls jittered / blurred / solarized any crop */
static void count_draws(const LoaderConfig *lc, int draws, int *jit, int *blur, int *sol) {
    enum { W = 48, H = 48 };
    float img[W * H];
    for (int i = 0; i < W * H; i++) img[i] = (float)(i % 17) / 17.0f;
    const MultiCropConfig *mc = &lc->crops;
    size_t G = (size_t)mc->channels * mc->global_size * mc->global_size, L = (size_t)mc->channels * mc->local_size * mc->local_size;
    float *g[2] = {malloc(G * sizeof(float)), malloc(G * sizeof(float))};
    float *l[2] = {malloc(L * sizeof(float)), malloc(L * sizeof(float))};
    AugWork ws = {0};
    *jit = *blur = *sol = 0;
    for (int d = 0; d < draws; d++) {
        Rng r;
        rng_init(&r, (uint64_t)d);
        CropInfo info[4];
        multicrop(img, W, H, mc, &r, g, l, info, &ws);
        for (int k = 0; k < 4; k++) {
            *jit += info[k].jittered != 0;
            *blur += info[k].blur_sigma > 0.0f;
            *sol += info[k].solarized != 0;
        }
    }
    augwork_free(&ws);
    for (int k = 0; k < 2; k++) {
        free(g[k]);
        free(l[k]);
    }
}

static void test_defaults_are_dinov2(void **st) {
    (void)st;
    SslConfig s;
    Err e = {0};
    if (config_with(NULL, 0, &s, &e)) fail_msg("%s", e.msg);
    LoaderConfig lc = ssl_loader_config(&s);
    MultiCropConfig d = multicrop_default();
    assert_float_equal(lc.crops.jitter_p, d.jitter_p, 0);
    assert_float_equal(lc.crops.brightness, d.brightness, 0);
    assert_float_equal(lc.crops.contrast, d.contrast, 0);
    assert_float_equal(lc.crops.solarize_p, d.solarize_p, 0);
    assert_float_equal(lc.crops.gamma, 0.0f, 0);   /* not DINOv2's: off unless asked for */
    for (int i = 0; i < 3; i++) assert_float_equal(lc.crops.blur_p[i], d.blur_p[i], 0);
    assert_int_equal(lc.crops.global_size, 32);
    assert_int_equal(lc.crops.n_local, 2);
    int jit, blur, sol;
    count_draws(&lc, 100, &jit, &blur, &sol);   /* 400 crops: jitter p 0.8, blur 1/0.1/0.5/0.5, solarize 0.2 of 100 */
    print_message("  defaults: %d jittered, %d blurred, %d solarized of 400 crops\n", jit, blur, sol);
    assert_in_range(jit, 280, 360);
    assert_in_range(blur, 170, 250);
    assert_in_range(sol, 8, 35);
}

static void test_overrides_reach_the_crops(void **st) {
    (void)st;
    SslConfig s;
    Err e = {0};
    const char *off[] = {"crops.color_jitter_p=0", "crops.solarize_p=0", "crops.blur_p=[0, 0, 0]"};
    if (config_with(off, 3, &s, &e)) fail_msg("%s", e.msg);
    LoaderConfig lc = ssl_loader_config(&s);
    int jit, blur, sol;
    count_draws(&lc, 100, &jit, &blur, &sol);
    assert_int_equal(jit + blur + sol, 0);
    const char *strong[] = {"crops.color_jitter_p=1", "crops.brightness=0.1", "crops.contrast=0.2", "crops.solarize_p=1",
                            "crops.blur_p=[0, 0, 1]"};
    if (config_with(strong, 5, &s, &e)) fail_msg("%s", e.msg);
    lc = ssl_loader_config(&s);
    assert_float_equal(lc.crops.brightness, 0.1f, 0);
    assert_float_equal(lc.crops.contrast, 0.2f, 0);
    assert_float_equal(lc.crops.gamma, 0.0f, 0);
    count_draws(&lc, 50, &jit, &blur, &sol);
    assert_int_equal(jit, 200);   /* every crop */
    assert_int_equal(sol, 50);    /* the second global crop of every draw */
    assert_int_equal(blur, 100);  /* the two local crops only */
    const char *gamma[] = {"crops.gamma=0.6"};
    if (config_with(gamma, 1, &s, &e)) fail_msg("%s", e.msg);
    lc = ssl_loader_config(&s);
    assert_float_equal(lc.crops.gamma, 0.6f, 0);
    assert_int_equal(multicrop_validate(&lc.crops, &e), 0);
}

static void test_bad_values_name_the_key(void **st) {
    (void)st;
    const char *bad[][2] = {{"crops.color_jitter_p=1.5", "crops.color_jitter_p"},
                            {"crops.solarize_p=-0.1", "solarize_p"},
                            {"crops.blur_p=[1, 0.1]", "crops.blur_p"},
                            {"crops.blur_p=[1, 0.1, 2]", "blur_p"},
                            {"crops.brightness=1.5", "crops.brightness"},
                            {"crops.contrast=nan", "contrast"},
                            {"crops.gamma=2.5", "crops.gamma"},
                            {"crops.gamma=-0.1", "crops.gamma"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        SslConfig s;
        Err e = {0};
        assert_int_equal(config_with(&bad[i][0], 1, &s, &e), 1);
        print_message("  %s: %s\n", bad[i][0], e.msg);
        if (!strstr(e.msg, bad[i][1])) fail_msg("'%s' does not name %s", e.msg, bad[i][1]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults_are_dinov2),
        cmocka_unit_test(test_overrides_reach_the_crops),
        cmocka_unit_test(test_bad_values_name_the_key),
    };
    return RUN_GROUP(tests);
}
