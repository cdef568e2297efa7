/* test_augment.c — augmentation: PIL/torchvision references for the resampler, blur and jitter;
 * RandomResizedCrop statistics; multi-crop sizes, probabilities and determinism; CLAHE by hand
 * and by its properties; iBOT masks against DINOv2's MaskingGenerator statistics. */
#include "tests/common/testutil.h"
#include "data/augment.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- references (tests/ref/augment_ops.py) ---- */

static void test_resize_matches_pil(void **state) {
    (void)state;
    RefFile *r = ref_open("augment_ops");
    size_t n, shape[4];
    int nd;
    float *img = ref_get(r, "image", &n, &nd, shape);
    int H = (int)shape[0], W = (int)shape[1];
    float *crops = ref_get(r, "crops", &n, &nd, shape);
    AugWork ws = {0};
    double worst = 0;
    for (size_t k = 0; k < shape[0]; k++) {
        const float *c = crops + 6 * k;
        CropBox cb = {(int)c[0], (int)c[1], (int)c[2], (int)c[3]};
        int ow = (int)c[4], oh = (int)c[5];
        char key[32];
        snprintf(key, sizeof key, "crop%zu", k);
        size_t m, sh[4];
        float *want = ref_get(r, key, &m, &nd, sh);
        assert_int_equal(m, (size_t)ow * oh);
        float *got = malloc(m * sizeof(float));
        resize_crop_bicubic(img, W, H, cb, got, ow, oh, &ws);
        assert_close(key, got, want, m, 2e-5, 1e-5);
        for (size_t i = 0; i < m; i++) worst = fmax(worst, fabs(got[i] - want[i]));
        free(got);
        free(want);
    }
    print_message("bicubic crop+resize vs PIL: max |err| %.2e over %zu crops\n", worst, shape[0]);
    augwork_free(&ws);
    free(crops);
    free(img);
    ref_close(r);
}

static void test_blur_jitter_match_torchvision(void **state) {
    (void)state;
    RefFile *r = ref_open("augment_ops");
    size_t n, shape[4];
    int nd;
    float *img = ref_get(r, "image", &n, &nd, shape);
    int H = (int)shape[0], W = (int)shape[1];
    float *sig = ref_get(r, "blur_sigma", &n, &nd, shape);
    float *x = malloc((size_t)W * H * sizeof(float));
    AugWork ws = {0};
    for (int k = 0; k < 3; k++) {
        char key[16];
        snprintf(key, sizeof key, "blur%d", k);
        size_t m;
        float *want = ref_get(r, key, &m, &nd, shape);
        memcpy(x, img, m * sizeof(float));
        gaussian_blur_f32(x, W, H, 9, sig[k], &ws);
        assert_close(key, x, want, m, 1e-5, 1e-5);
        free(want);
    }
    struct { const char *key; int op; float f; } cases[] = {
        {"brightness_1.3", 0, 1.3f}, {"contrast_0.7", 1, 0.7f}, {"contrast_1.4", 1, 1.4f}, {"solarize_0.5", 2, 0.5f}};
    for (int k = 0; k < 4; k++) {
        size_t m;
        float *want = ref_get(r, cases[k].key, &m, &nd, shape);
        memcpy(x, img, m * sizeof(float));
        if (cases[k].op == 0) adjust_brightness_f32(x, m, cases[k].f);
        else if (cases[k].op == 1) adjust_contrast_f32(x, m, cases[k].f);
        else solarize_f32(x, m, cases[k].f);
        assert_close(cases[k].key, x, want, m, 1e-6, 1e-5);
        free(want);
    }
    augwork_free(&ws);
    free(x);
    free(sig);
    free(img);
    ref_close(r);
}

/* ---- RandomResizedCrop ---- */

static void check_rrc(int W, int H, const float scale[2], const float ratio[2], int draws) {
    Rng r;
    rng_init(&r, 7);
    double A = (double)W * H, sum_frac = 0, sum_logr = 0;
    double lo = 1e9, hi = -1e9;
    for (int k = 0; k < draws; k++) {
        CropBox c = rrc_params(&r, W, H, scale, ratio);
        assert_true(c.x >= 0 && c.y >= 0 && c.w >= 1 && c.h >= 1 && c.x + c.w <= W && c.y + c.h <= H);
        double frac = c.w * (double)c.h / A;
        /* w, h are rounded from the continuous draw: allow half a pixel on each side */
        double slack = (0.5 * (c.w + c.h) + 0.25) / A;
        assert_true(frac >= scale[0] - slack && frac <= scale[1] + slack);
        double ar = (double)c.w / c.h;
        assert_true(ar >= ratio[0] * (c.w - 0.5) / (c.w + 0.0) * c.h / (c.h + 0.5) - 1e-9);
        assert_true(ar <= ratio[1] * (c.w + 0.5) / c.w * c.h / (c.h - 0.5) + 1e-9);
        sum_frac += frac;
        sum_logr += log(ar);
        lo = fmin(lo, frac);
        hi = fmax(hi, frac);
    }
    /* area ~ U(scale): the mean is the midpoint (std of the mean ~ 0.003 here) */
    double mean = sum_frac / draws, want = 0.5 * (scale[0] + scale[1]);
    print_message("rrc %dx%d scale (%.2f, %.2f): area fraction in [%.4f, %.4f], mean %.4f (uniform mean %.4f), "
                  "mean log-aspect %.4f\n", W, H, (double)scale[0], (double)scale[1], lo, hi, mean, want, sum_logr / draws);
    assert_true(fabs(mean - want) < 0.02 * (scale[1] - scale[0]) + 0.003);
    assert_true(fabs(sum_logr / draws) < 0.02);
    assert_true(lo < scale[0] + 0.05 * (scale[1] - scale[0]));
    assert_true(hi > scale[1] - 0.05 * (scale[1] - scale[0]));
}

static void test_rrc_scale_and_ratio(void **state) {
    (void)state;
    const float ratio[2] = {3.0f / 4.0f, 4.0f / 3.0f};
    const float gs[2] = {0.32f, 1.0f}, ls[2] = {0.05f, 0.32f};
    check_rrc(512, 512, ls, ratio, 20000);
    check_rrc(400, 600, ls, ratio, 20000);
    /* global crops on a square image: near scale 1 only aspects close to 1 fit, so the area
     * stays in range but the mean shifts; the fraction bounds are the real property */
    Rng r;
    rng_init(&r, 3);
    for (int k = 0; k < 20000; k++) {
        CropBox c = rrc_params(&r, 512, 512, gs, ratio);
        double frac = c.w * (double)c.h / (512.0 * 512.0);
        assert_true(frac >= gs[0] - 0.002 && frac <= 1.0);
    }
}

/* ---- multi-crop ---- */

static float *make_image(int W, int H, uint64_t seed) {
    float *img = malloc((size_t)W * H * sizeof(float));
    Rng r;
    rng_init(&r, seed);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            img[(size_t)y * W + x] = 0.5f + 0.3f * sinf(x * 0.05f) * cosf(y * 0.03f) + 0.1f * (rng_uniform(&r) - 0.5f);
    return img;
}

typedef struct Crops {
    float *g[2], *l[AUG_MAX_LOCAL];
    float *buf;
    size_t gsz, lsz, total;
} Crops;

/* crops with 16 guard floats after each, set to a sentinel */
static Crops crops_alloc(const MultiCropConfig *c) {
    Crops k;
    k.gsz = (size_t)c->channels * c->global_size * c->global_size;
    k.lsz = (size_t)c->channels * c->local_size * c->local_size;
    k.total = 2 * (k.gsz + 16) + (size_t)c->n_local * (k.lsz + 16);
    k.buf = malloc(k.total * sizeof(float));
    for (size_t i = 0; i < k.total; i++) k.buf[i] = 12345.0f;
    float *p = k.buf;
    for (int i = 0; i < 2; i++, p += k.gsz + 16) k.g[i] = p;
    for (int i = 0; i < c->n_local; i++, p += k.lsz + 16) k.l[i] = p;
    return k;
}

static void test_multicrop_sizes_and_determinism(void **state) {
    (void)state;
    int W = 300, H = 260;
    float *img = make_image(W, H, 1);
    MultiCropConfig cfg = multicrop_default();
    Err e;
    assert_int_equal(multicrop_validate(&cfg, &e), 0);
    Crops a = crops_alloc(&cfg), b = crops_alloc(&cfg), c = crops_alloc(&cfg);
    AugWork ws = {0};
    Rng r1, r2;
    rng_init(&r1, 42);
    rng_init(&r2, 43);
    CropInfo info[2 + AUG_MAX_LOCAL];
    multicrop(img, W, H, &cfg, &r1, a.g, a.l, info, &ws);
    multicrop(img, W, H, &cfg, &r1, b.g, b.l, NULL, &ws);
    multicrop(img, W, H, &cfg, &r2, c.g, c.l, NULL, &ws);
    /* every output element written (no sentinel left inside), no guard overwritten */
    float *p = a.buf;
    for (int i = 0; i < 2 + cfg.n_local; i++) {
        size_t sz = i < 2 ? a.gsz : a.lsz;
        for (size_t k = 0; k < sz; k++) assert_true(p[k] != 12345.0f && isfinite(p[k]));
        for (size_t k = sz; k < sz + 16; k++) assert_true(p[k] == 12345.0f);
        p += sz + 16;
    }
    assert_memory_equal(a.buf, b.buf, a.total * sizeof(float));   /* same rng state: same crops */
    assert_true(memcmp(a.buf, c.buf, a.total * sizeof(float)) != 0);
    /* 3 replicated channels normalised with their own mean/std: channel c = (x - m_c)/s_c */
    for (size_t k = 0; k < a.gsz / 3; k += 97) {
        float x0 = a.g[0][k] * cfg.std[0] + cfg.mean[0];
        float x2 = a.g[0][2 * a.gsz / 3 + k] * cfg.std[2] + cfg.mean[2];
        assert_float_equal(x0, x2, 1e-5);
        assert_true(x0 >= -1e-6f && x0 <= 1.0f + 1e-6f);
    }
    for (int i = 0; i < 2 + cfg.n_local; i++) assert_true(info[i].box.w >= 1 && info[i].box.x + info[i].box.w <= W);
    free(a.buf);
    free(b.buf);
    free(c.buf);
    augwork_free(&ws);
    free(img);
}

static void test_multicrop_probabilities(void **state) {
    (void)state;
    int W = 64, H = 64;
    float *img = make_image(W, H, 2);
    for (int quirk = 0; quirk < 2; quirk++) {
        MultiCropConfig cfg = multicrop_default();
        cfg.global_size = 16;
        cfg.local_size = 8;
        cfg.blur_dinov2_quirk = quirk;
        Crops k = crops_alloc(&cfg);
        AugWork ws = {0};
        int trials = 2000;
        int blur[3] = {0}, sol[3] = {0}, flip = 0, jit = 0, nloc = 0;
        for (int t = 0; t < trials; t++) {
            Rng r;
            rng_init(&r, 1000 + (uint64_t)t);
            CropInfo info[2 + AUG_MAX_LOCAL];
            multicrop(img, W, H, &cfg, &r, k.g, k.l, info, &ws);
            for (int i = 0; i < 2 + cfg.n_local; i++) {
                int slot = i < 2 ? i : 2;
                blur[slot] += info[i].blur_sigma > 0;
                sol[slot] += info[i].solarized;
                flip += info[i].flipped;
                jit += info[i].jittered;
                if (info[i].blur_sigma > 0) assert_true(info[i].blur_sigma >= 0.1f && info[i].blur_sigma <= 2.0f);
                if (info[i].jittered)
                    assert_true(info[i].brightness >= 0.6f && info[i].brightness <= 1.4f && info[i].contrast >= 0.6f &&
                                info[i].contrast <= 1.4f);
            }
            nloc += cfg.n_local;
        }
        double pb0 = (double)blur[0] / trials, pb1 = (double)blur[1] / trials, pb2 = (double)blur[2] / nloc;
        double ps1 = (double)sol[1] / trials;
        int ncrop = trials * (2 + cfg.n_local);
        print_message("quirk %d: blur p = %.3f / %.3f / %.3f, solarize(global 2) %.3f, flip %.3f, jitter %.3f\n", quirk,
                      pb0, pb1, pb2, ps1, (double)flip / ncrop, (double)jit / ncrop);
        double want0 = quirk ? 0.0 : 1.0, want1 = quirk ? 0.9 : 0.1;
        assert_true(fabs(pb0 - want0) < 1e-9);
        assert_true(fabs(pb1 - want1) < 0.03);
        assert_true(fabs(pb2 - 0.5) < 0.02);
        assert_true(fabs(ps1 - 0.2) < 0.03);
        assert_int_equal(sol[0], 0);
        assert_int_equal(sol[2], 0);
        assert_true(fabs((double)flip / ncrop - 0.5) < 0.02);
        assert_true(fabs((double)jit / ncrop - 0.8) < 0.02);
        free(k.buf);
        augwork_free(&ws);
    }
    free(img);
}

static void test_multicrop_identity_path(void **state) {
    (void)state;
    /* no jitter/blur/solarize, scale (1, 1) on a square image: the crop is the whole image and a
     * same-size bicubic resize is the identity (PIL's kernel at integer offsets is 1, 0, 0) */
    int S = 32;
    float *img = make_image(S, S, 3);
    MultiCropConfig cfg = multicrop_default();
    cfg.global_size = S;
    cfg.global_scale[0] = cfg.global_scale[1] = 1.0f;
    cfg.n_local = 0;
    cfg.jitter_p = 0;
    cfg.blur_p[0] = cfg.blur_p[1] = 0;
    cfg.solarize_p = 0;
    cfg.flip_p = 1.0f;
    cfg.channels = 1;
    cfg.mean[0] = 0.25f;
    cfg.std[0] = 0.5f;
    Crops k = crops_alloc(&cfg);
    AugWork ws = {0};
    Rng r;
    rng_init(&r, 5);
    CropInfo info[2];
    multicrop(img, S, S, &cfg, &r, k.g, k.l, info, &ws);
    assert_int_equal(info[0].box.w, S);
    assert_int_equal(info[0].flipped, 1);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            float want = (img[y * S + (S - 1 - x)] - 0.25f) / 0.5f;   /* mirrored */
            assert_float_equal(k.g[0][y * S + x], want, 1e-5);
        }
    free(k.buf);
    augwork_free(&ws);
    free(img);
}

static void test_multicrop_gamma(void **state) {
    (void)state;
    /* gamma off (the default) draws nothing, so the DINOv2 stream is unchanged; on, each jittered
     * crop is the gamma-off crop raised to its own exponent in [e^-g, e^g] (brightness and
     * contrast at factor 1, no blur: the later draws cannot change the pixels) */
    int W = 80, H = 72;
    float *img = make_image(W, H, 4);
    MultiCropConfig cfg = multicrop_default();
    cfg.global_size = 32;
    cfg.local_size = 16;
    cfg.n_local = 4;
    cfg.channels = 1;
    cfg.mean[0] = 0.0f;
    cfg.std[0] = 1.0f;
    cfg.jitter_p = 1.0f;
    cfg.brightness = cfg.contrast = 0.0f;
    cfg.blur_p[0] = cfg.blur_p[1] = cfg.blur_p[2] = 0.0f;
    cfg.solarize_p = 0.0f;
    Crops off = crops_alloc(&cfg), on = crops_alloc(&cfg);
    AugWork ws = {0};
    Rng r;
    rng_init(&r, 77);
    CropInfo ioff[2 + AUG_MAX_LOCAL], ion[2 + AUG_MAX_LOCAL];
    multicrop(img, W, H, &cfg, &r, off.g, off.l, ioff, &ws);
    cfg.gamma = 0.5f;
    Err e;
    assert_int_equal(multicrop_validate(&cfg, &e), 0);
    multicrop(img, W, H, &cfg, &r, on.g, on.l, ion, &ws);
    float gmin = 10.0f, gmax = 0.0f;
    for (int i = 0; i < 2 + cfg.n_local; i++) {
        assert_float_equal(ioff[i].gamma, 1.0f, 0.0f);
        float g = ion[i].gamma;
        assert_true(g >= expf(-0.5f) - 1e-6f && g <= expf(0.5f) + 1e-6f);
        gmin = fminf(gmin, g);
        gmax = fmaxf(gmax, g);
        assert_memory_equal(&ioff[i].box, &ion[i].box, sizeof(CropBox));
        const float *a = i < 2 ? off.g[i] : off.l[i - 2], *b = i < 2 ? on.g[i] : on.l[i - 2];
        int S = i < 2 ? cfg.global_size : cfg.local_size;
        for (int k = 0; k < S * S; k++) assert_float_equal(b[k], powf(a[k], g), 1e-5);
    }
    assert_true(gmax - gmin > 0.1f);   /* each crop draws its own exponent */
    cfg.gamma = -0.1f;
    assert_int_equal(multicrop_validate(&cfg, &e), 1);
    assert_non_null(strstr(e.msg, "crops.gamma"));
    free(off.buf);
    free(on.buf);
    augwork_free(&ws);
    free(img);
}

static void test_multicrop_validate_errors(void **state) {
    (void)state;
    Err e;
    MultiCropConfig c = multicrop_default();
    c.n_local = 20;
    assert_int_equal(multicrop_validate(&c, &e), 1);
    assert_non_null(strstr(e.msg, "crops.local_crops_number"));
    c = multicrop_default();
    c.local_scale[0] = 0.5f;
    c.local_scale[1] = 0.3f;
    assert_int_equal(multicrop_validate(&c, &e), 1);
    assert_non_null(strstr(e.msg, "crops.local_crops_scale"));
}

/* ---- CLAHE ---- */

static void test_clahe_constant_by_hand(void **state) {
    (void)state;
    /* 64x64 constant 128/255, 8x8 tiles of 64 px: clip = max(1, int(2*64/256)) = 1, so bin 128
     * keeps 1 and 63 are redistributed: 0 per bin + residual 63 with step 256/63 = 4 at bins
     * 0, 4, ..., 248.  cdf(128) = 1 + 33 = 34 -> round(34 * 255/64) = 135. */
    int S = 64;
    float *in = malloc(S * S * sizeof(float)), *out = malloc(S * S * sizeof(float));
    for (int i = 0; i < S * S; i++) in[i] = 128.0f / 255.0f;
    ClaheConfig cfg = clahe_default();
    AugWork ws = {0};
    Err e;
    assert_int_equal(clahe_f32(in, S, S, out, &cfg, &ws, &e), 0);
    for (int i = 0; i < S * S; i++) assert_float_equal(out[i], 135.0f / 255.0f, 1e-6);
    /* clip 0 = plain per-tile equalisation: a constant tile maps to 255 */
    cfg.clip_limit = 0;
    assert_int_equal(clahe_f32(in, S, S, out, &cfg, &ws, &e), 0);
    for (int i = 0; i < S * S; i++) assert_float_equal(out[i], 1.0f, 1e-6);
    augwork_free(&ws);
    free(in);
    free(out);
}

static double mean_local_std(const float *x, int W, int H, int win) {
    double acc = 0;
    int n = 0;
    for (int by = 0; by + win <= H; by += win)
        for (int bx = 0; bx + win <= W; bx += win) {
            double s = 0, s2 = 0;
            for (int y = by; y < by + win; y++)
                for (int xx = bx; xx < bx + win; xx++) {
                    s += x[y * W + xx];
                    s2 += x[y * W + xx] * x[y * W + xx];
                }
            double m = s / (win * win);
            acc += sqrt(fmax(s2 / (win * win) - m * m, 0));
            n++;
        }
    return acc / n;
}

static void test_clahe_properties(void **state) {
    (void)state;
    /* a low-contrast textured image on a slow ramp; sizes not divisible by the tiles (padding) */
    int W = 203, H = 150;
    float *in = malloc((size_t)W * H * sizeof(float)), *out = malloc((size_t)W * H * sizeof(float));
    Rng r;
    rng_init(&r, 9);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            in[y * W + x] = 0.3f + 0.2f * x / W + 0.03f * sinf(x * 0.7f) * sinf(y * 0.5f) + 0.01f * rng_uniform(&r);
    ClaheConfig cfg = clahe_default();
    AugWork ws = {0};
    Err e;
    assert_int_equal(clahe_f32(in, W, H, out, &cfg, &ws, &e), 0);
    float mn = 1, mx = 0;
    for (int i = 0; i < W * H; i++) {
        mn = fminf(mn, out[i]);
        mx = fmaxf(mx, out[i]);
    }
    assert_true(mn >= 0.0f && mx <= 1.0f);
    double before = mean_local_std(in, W, H, 12), after = mean_local_std(out, W, H, 12);
    print_message("CLAHE: mean local std (12x12) %.4f -> %.4f (x%.1f), output range [%.3f, %.3f]\n", before, after,
                  after / before, (double)mn, (double)mx);
    assert_true(after > 2.0 * before);
    /* at a fixed position the mapping is monotone in the input (every tile LUT is a cdf) */
    float a[64 * 64], b[64 * 64], oa[64 * 64], ob[64 * 64];
    for (int i = 0; i < 64 * 64; i++) {
        a[i] = 0.2f + 0.3f * rng_uniform(&r);
        b[i] = fminf(a[i] + 0.05f, 1.0f);
    }
    assert_int_equal(clahe_f32(a, 64, 64, oa, &cfg, &ws, &e), 0);
    /* b differs from a everywhere, so the tile histograms differ too; compare a pixel with its
     * own brighter value inside the same image instead: duplicate rows */
    for (int y = 0; y < 64; y += 2)
        for (int x = 0; x < 64; x++) b[(y + 1) * 64 + x] = fminf(a[y * 64 + x] + 0.05f, 1.0f), b[y * 64 + x] = a[y * 64 + x];
    assert_int_equal(clahe_f32(b, 64, 64, ob, &cfg, &ws, &e), 0);
    int violations = 0;
    for (int y = 0; y < 64; y += 2)
        for (int x = 0; x < 64; x++) violations += ob[(y + 1) * 64 + x] + 0.02f < ob[y * 64 + x];
    assert_int_equal(violations, 0);
    cfg.tiles_x = 0;
    assert_int_equal(clahe_f32(a, 64, 64, oa, &cfg, &ws, &e), 1);
    augwork_free(&ws);
    free(in);
    free(out);
}

/* ---- iBOT masks ---- */

static int n_components(const uint8_t *m, int H, int W) {
    uint8_t seen[64 * 64] = {0};
    int stack[64 * 64], n = 0;
    for (int s = 0; s < H * W; s++) {
        if (!m[s] || seen[s]) continue;
        n++;
        int sp = 0;
        stack[sp++] = s;
        seen[s] = 1;
        while (sp) {
            int c = stack[--sp], i = c / W, j = c % W;
            int nb[4][2] = {{i + 1, j}, {i - 1, j}, {i, j + 1}, {i, j - 1}};
            for (int k = 0; k < 4; k++) {
                int a = nb[k][0], b = nb[k][1];
                if (a >= 0 && a < H && b >= 0 && b < W && m[a * W + b] && !seen[a * W + b]) {
                    seen[a * W + b] = 1;
                    stack[sp++] = a * W + b;
                }
            }
        }
    }
    return n;
}

static void test_mask_generator_vs_dinov2(void **state) {
    (void)state;
    RefFile *r = ref_open("augment_ops");
    size_t n, shape[4];
    int nd;
    float *targets = ref_get(r, "mask_targets", &n, &nd, shape);
    float *draws = ref_get(r, "mask_draws", &n, &nd, shape);
    float *stats = ref_get(r, "mask_stats", &n, &nd, shape);
    MaskConfig c = mask_default(16, 16);
    int D = (int)draws[0];
    Rng rng;
    rng_init(&rng, 11);
    uint8_t m[256];
    for (int t = 0; t < 3; t++) {
        int target = (int)targets[t];
        double sc = 0, scomp = 0;
        for (int d = 0; d < D; d++) {
            MaskStats st;
            int cnt = mask_generate(&rng, &c, target, m, &st);
            int sum = 0;
            for (int k = 0; k < 256; k++) sum += m[k];
            assert_int_equal(sum, cnt);
            assert_true(cnt <= target);
            /* every block drawn with room for a full block targets >= 4 patches; after rounding
             * its rectangle holds >= 3; the aspect stays in [0.3, 1/0.3] up to rounding */
            for (int b = 0; b < st.n_blocks && b < 64; b++) {
                if (st.block_max[b] >= c.min_num_patches) {
                    assert_true(st.block_area[b] >= 4.0f && st.block_area[b] <= (float)st.block_max[b]);
                    assert_true(st.block_h[b] * st.block_w[b] >= 3);
                }
                assert_true(st.block_h[b] * st.block_w[b] <= 128 + 2 * 16);
            }
            sc += cnt;
            scomp += n_components(m, 16, 16);
        }
        double mc = sc / D, mcomp = scomp / D;
        double ref_mc = stats[4 * t], ref_sd = stats[4 * t + 1], ref_comp = stats[4 * t + 2], ref_csd = stats[4 * t + 3];
        print_message("MaskingGenerator(%d): mean count %.3f (DINOv2 %.3f), mean blocks %.3f (DINOv2 %.3f)\n", target, mc,
                      ref_mc, mcomp, ref_comp);
        /* two independent means: 5 standard errors of the difference */
        double se_c = sqrt(2.0 / D) * fmax(ref_sd, 0.05), se_b = sqrt(2.0 / D) * ref_csd;
        assert_true(fabs(mc - ref_mc) < 5 * se_c + 0.02);
        assert_true(fabs(mcomp - ref_comp) < 5 * se_b);
    }
    free(targets);
    free(draws);
    free(stats);
    ref_close(r);
}

static void test_mask_collate_ratios(void **state) {
    (void)state;
    MaskConfig c = mask_default(16, 16);
    int n_crops = 64, N = 256;
    uint8_t *masks = malloc((size_t)n_crops * N);
    int masked_in_first_half = 0, trials = 20;
    for (int t = 0; t < trials; t++) {
        Rng r;
        rng_init(&r, 100 + (uint64_t)t);
        int ub = mask_collate(&r, &c, n_crops, masks);
        /* upperbound = sum_i int(256 * p_{i+1}), p = linspace(0.1, 0.5, 33) */
        int want_ub = 0;
        for (int i = 0; i < 32; i++) want_ub += (int)(256.0f * (0.1f + 0.4f * (float)(i + 1) / 32.0f));
        assert_int_equal(ub, want_ub);
        int counts[64], n_masked = 0;
        for (int k = 0; k < n_crops; k++) {
            int s = 0;
            for (int j = 0; j < N; j++) s += masks[k * N + j];
            counts[k] = s;
            if (s > 0) {
                n_masked++;
                masked_in_first_half += k < n_crops / 2;
                double ratio = (double)s / N;
                assert_true(ratio >= 0.1 - 4.0 / N && ratio <= 0.5);
            }
        }
        assert_int_equal(n_masked, 32);
        /* sorted, the k-th masked ratio sits in its linspace bin [p_k, p_{k+1}] (count may fall
         * short of int(N * U) by a few patches when the last block does not fit) */
        int sorted[64], m = 0;
        for (int k = 0; k < n_crops; k++)
            if (counts[k]) sorted[m++] = counts[k];
        for (int i = 1; i < m; i++)
            for (int j = i; j > 0 && sorted[j] < sorted[j - 1]; j--) {
                int tmp = sorted[j];
                sorted[j] = sorted[j - 1];
                sorted[j - 1] = tmp;
            }
        for (int i = 0; i < m; i++) {
            double p0 = 0.1 + 0.4 * i / 32.0, p1 = 0.1 + 0.4 * (i + 1) / 32.0;
            assert_true(sorted[i] <= (int)(N * p1) + 1 && sorted[i] >= (int)(N * p0) - 4);
        }
    }
    /* shuffled across the batch: masked crops are not all in one half */
    double share = (double)masked_in_first_half / (32.0 * trials);
    print_message("mask_collate: share of masked crops in the first half %.3f (0.5 expected)\n", share);
    assert_true(share > 0.35 && share < 0.65);
    free(masks);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_matches_pil),
        cmocka_unit_test(test_blur_jitter_match_torchvision),
        cmocka_unit_test(test_rrc_scale_and_ratio),
        cmocka_unit_test(test_multicrop_sizes_and_determinism),
        cmocka_unit_test(test_multicrop_probabilities),
        cmocka_unit_test(test_multicrop_identity_path),
        cmocka_unit_test(test_multicrop_gamma),
        cmocka_unit_test(test_multicrop_validate_errors),
        cmocka_unit_test(test_clahe_constant_by_hand),
        cmocka_unit_test(test_clahe_properties),
        cmocka_unit_test(test_mask_generator_vs_dinov2),
        cmocka_unit_test(test_mask_collate_ratios),
    };
    return RUN_GROUP(tests);
}
