/* test_preprocess.c — breast crop, flip to a common side, resize of image / mask / boxes, and
 * normalisation on synthetic mammogram-like images whose true geometry is known. */
#include "tests/common/testutil.h"
#include "data/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A 12-bit "mammogram": dark noisy background, a half-ellipse breast against the left or right
 * edge (chest wall), a bright 2-px scanner frame on every edge, a bright burned-in marker in
 * the opposite top corner, and a bright rectangular lesion inside the breast.  Returns the tight
 * bounding boxes of the breast (ignoring the frame) and of the lesion, and the lesion mask. */
typedef struct Phantom {
    Image im, lesion;      /* lesion: 8-bit 0/1 mask */
    Rect breast, lesion_bb;
} Phantom;

static void make_phantom(Phantom *p, int w, int h, int right, uint64_t seed) {
    Err e;
    assert_int_equal(image_alloc(&p->im, w, h, 12, &e), 0);
    assert_int_equal(image_alloc(&p->lesion, w, h, 8, &e), 0);
    Rng r;
    rng_init(&r, seed);
    double cx = right ? w - 1 : 0, cy = h * 0.5, a = 0.6 * w, b = 0.38 * h;
    double lx = right ? w - 1 - 0.3 * w : 0.3 * w, ly = cy + 0.1 * h, lr = 0.03 * w + 2;
    p->breast = (Rect){w, h, -1, -1};
    p->lesion_bb = (Rect){w, h, -1, -1};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double u = (x - cx) / a, v = (y - cy) / b, r2 = u * u + v * v;
            int val = 30 + (int)rng_below(&r, 30);
            if (r2 <= 1.0) {
                val = 1500 + (int)(1000 * (1.0 - r2)) + (int)rng_below(&r, 200);
                if (x >= 2 && y >= 2 && x < w - 2 && y < h - 2) {   /* breast bbox without the frame */
                    if (x < p->breast.x0) p->breast.x0 = x;
                    if (x > p->breast.x1) p->breast.x1 = x;
                    if (y < p->breast.y0) p->breast.y0 = y;
                    if (y > p->breast.y1) p->breast.y1 = y;
                }
                if (fabs(x - lx) <= lr && fabs(y - ly) <= 0.75 * lr) {   /* a rectangle: a nearest-
                                      resized mask keeps its exact extent, unlike a disc's 1-px tips */
                    val += 600;
                    p->lesion.px[(size_t)y * w + x] = 1;
                    if (x < p->lesion_bb.x0) p->lesion_bb.x0 = x;
                    if (x > p->lesion_bb.x1) p->lesion_bb.x1 = x;
                    if (y < p->lesion_bb.y0) p->lesion_bb.y0 = y;
                    if (y > p->lesion_bb.y1) p->lesion_bb.y1 = y;
                }
            }
            if (x < 2 || y < 2 || x >= w - 2 || y >= h - 2) val = 4095;   /* scanner frame */
            int mx = right ? 10 : w - 20;                               /* marker, opposite side */
            if (x >= mx && x < mx + 9 && y >= 10 && y < 19) val = 4000;
            p->im.px[(size_t)y * w + x] = (uint16_t)(val > 4095 ? 4095 : val);
        }
    p->breast.x1++;   /* exclusive ends */
    p->breast.y1++;
    p->lesion_bb.x1++;
    p->lesion_bb.y1++;
}

static void free_phantom(Phantom *p) {
    image_free(&p->im);
    image_free(&p->lesion);
}

static void assert_rect_near(Rect got, Rect want, int tol) {
    if (abs(got.x0 - want.x0) > tol || abs(got.y0 - want.y0) > tol || abs(got.x1 - want.x1) > tol || abs(got.y1 - want.y1) > tol)
        fail_msg("rect [%d,%d)x[%d,%d), want [%d,%d)x[%d,%d) +-%d", got.x0, got.x1, got.y0, got.y1, want.x0, want.x1,
                 want.y0, want.y1, tol);
}

static void test_otsu(void **s) {
    (void)s;
    Image im;
    Err e;
    assert_int_equal(image_alloc(&im, 20, 10, 12, &e), 0);
    for (int i = 0; i < 200; i++) im.px[i] = i % 3 == 0 ? 3000 : 100;
    uint16_t t = image_otsu(&im, 0);
    assert_true(t >= 100 && t < 3000);
    image_free(&im);
}

static void test_crop_finds_breast(void **s) {
    (void)s;
    for (int right = 0; right < 2; right++) {
        Phantom p;
        make_phantom(&p, 240, 180, right, 1 + (uint64_t)right);
        CropOpts o = crop_opts_default();
        Rect bb = image_breast_bbox(&p.im, &o);
        /* frame trimmed, marker dropped (a separate, smaller component); the breast reaches the
         * chest-wall edge, where the border trim of 5 px stops it */
        Rect want = p.breast;
        if (want.x0 < 5) want.x0 = 5;
        if (want.x1 > 240 - 5) want.x1 = 240 - 5;
        assert_rect_near(bb, want, 1);
        free_phantom(&p);
    }
    /* large image: analysed at block size 3, box within two blocks and containing the breast */
    Phantom p;
    make_phantom(&p, 1400, 1100, 1, 3);
    Rect bb = image_breast_bbox(&p.im, NULL);
    Rect want = p.breast;
    if (want.x1 > 1400 - 5) want.x1 = 1400 - 5;
    assert_rect_near(bb, want, 7);
    assert_true(bb.x0 <= want.x0 && bb.y0 <= want.y0 && bb.x1 >= want.x1 && bb.y1 >= want.y1);
    free_phantom(&p);
    /* a constant image has no component: the border-trimmed image comes back */
    Image c;
    Err e;
    assert_int_equal(image_alloc(&c, 50, 40, 8, &e), 0);
    bb = image_breast_bbox(&c, NULL);
    assert_true(bb.x0 == 5 && bb.y0 == 5 && bb.x1 == 45 && bb.y1 == 35);
    image_free(&c);
}

/* A fatty breast: a large fat half-disc (about 1100 of 4095) with dense tissue (3600) filling the
 * part near the chest wall and a faint mass (1350) at the skin line on the nipple side.  Otsu's
 * threshold falls between fat and dense tissue here (asserted, so this case keeps testing what it
 * is meant to), which would crop to the dense part and cut the mass away; the crop must find the
 * whole breast instead. */
static void test_crop_fatty_breast_keeps_skin_lesion(void **s) {
    (void)s;
    const int w = 240, h = 200;
    Image im;
    Err e;
    assert_int_equal(image_alloc(&im, w, h, 12, &e), 0);
    Rng r;
    rng_init(&r, 11);
    double cy = 0.5 * h, a = 0.8 * w, b = 0.45 * h;
    Rect breast = {w, h, -1, -1}, lesion = {w, h, -1, -1};
    double lx = a - 4.0, ly = cy, lr = 6.0;   /* mass centre 4 px inside the skin line */
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            double u = x / a, v = (y - cy) / b, r2 = u * u + v * v;
            int val = (int)rng_below(&r, 40);                            /* air */
            if (r2 <= 1.0) {
                val = 1050 + (int)rng_below(&r, 100);                    /* fat */
                if (x < 0.45 * w) val = 3550 + (int)rng_below(&r, 100);  /* dense, near the chest wall */
                if ((x - lx) * (x - lx) + (y - ly) * (y - ly) <= lr * lr) {
                    val = 1300 + (int)rng_below(&r, 100);                /* mass in the fat */
                    if (x < lesion.x0) lesion.x0 = x;
                    if (x > lesion.x1) lesion.x1 = x;
                    if (y < lesion.y0) lesion.y0 = y;
                    if (y > lesion.y1) lesion.y1 = y;
                }
                if (x < breast.x0) breast.x0 = x;
                if (x > breast.x1) breast.x1 = x;
                if (y < breast.y0) breast.y0 = y;
                if (y > breast.y1) breast.y1 = y;
            }
            im.px[(size_t)y * w + x] = (uint16_t)val;
        }
    breast.x1++;
    breast.y1++;
    lesion.x1++;
    lesion.y1++;
    assert_true(lesion.x1 >= breast.x1 - 3);   /* the mass reaches the skin line */
    uint16_t t_otsu = image_otsu(&im, 5);
    assert_true(t_otsu > 1150 && t_otsu < 3550); /* Otsu alone would split fat from dense tissue */
    Rect bb = image_breast_bbox(&im, NULL);
    Rect want = breast;
    if (want.x0 < 5) want.x0 = 5;
    if (want.y0 < 5) want.y0 = 5;
    if (want.y1 > h - 5) want.y1 = h - 5;
    assert_rect_near(bb, want, 1);
    assert_true(bb.x0 <= lesion.x0 && bb.y0 <= lesion.y0 && bb.x1 >= lesion.x1 && bb.y1 >= lesion.y1);
    image_free(&im);
}

/* The generator's own breasts: over 6 patients (24 views, every density) at a small size, the crop
 * equals the breast mask's bounding box (within 1 px, inside the border trim) and no lesion mask
 * pixel falls outside it. */
static void test_crop_synthetic_breasts(void **s) {
    (void)s;
    SynthConfig sc;
    synth_config_default(&sc);
    sc.n_patients = 6;
    sc.width = 104;
    sc.height = 128;
    sc.quiet = 1;
    sc.priors.density[0] = sc.priors.density[1] = 0.4f;   /* mostly fatty breasts */
    sc.priors.density[2] = sc.priors.density[3] = 0.1f;
    sc.priors.n_findings[0] = 0.0f;                         /* every breast has lesions */
    int n_lesions = 0, fatty = 0;
    for (long p = 0; p < sc.n_patients; p++) {
        SynthExam ex;
        synth_sample_exam(&sc, p, &ex);
        for (int v = 0; v < 4; v++) {
            SynthImage si;
            Err e;
            if (synth_render(&sc, &ex, v, &si, &e)) fail_msg("%s", e.msg);
            fatty += ex.breast[v / 2].density <= 1;
            Image im = {.px = si.pixels, .w = si.width, .h = si.height, .bits = si.bits};
            Rect bb = image_breast_bbox(&im, NULL);
            const int B = 5;   /* default border trim */
            Rect want = {si.width, si.height, -1, -1};
            for (int y = B; y < si.height - B; y++)
                for (int x = B; x < si.width - B; x++)
                    if (si.breast_mask[(size_t)y * si.width + x]) {
                        if (x < want.x0) want.x0 = x;
                        if (x > want.x1) want.x1 = x;
                        if (y < want.y0) want.y0 = y;
                        if (y > want.y1) want.y1 = y;
                    }
            want.x1++;
            want.y1++;
            assert_rect_near(bb, want, 1);
            for (int k = 0; k < si.n_lesions; k++) {
                const SynthLesion *L = &si.lesions[k];
                int lw = L->x1 - L->x0;
                n_lesions++;
                for (int y = L->y0; y < L->y1; y++)
                    for (int x = L->x0; x < L->x1; x++) {
                        if (!L->mask[(size_t)(y - L->y0) * lw + (x - L->x0)]) continue;
                        if (x < B || y < B || x >= si.width - B || y >= si.height - B) continue;
                        if (x < bb.x0 || y < bb.y0 || x >= bb.x1 || y >= bb.y1)
                            fail_msg("patient %ld view %d lesion %d: mask pixel (%d,%d) outside crop [%d,%d)x[%d,%d)", p, v, k,
                                     x, y, bb.x0, bb.x1, bb.y0, bb.y1);
                    }
            }
            synth_image_free(&si);
        }
    }
    assert_true(n_lesions >= 12);
    assert_true(fatty >= 8);
}

static void test_flip_to_left(void **s) {
    (void)s;
    Phantom p;
    make_phantom(&p, 240, 180, 1, 7);
    assert_int_equal(image_breast_on_right(&p.im), 1);
    PrepOpts o = prep_opts_default();
    PrepTransform t;
    prep_plan(&p.im, 0, &o, &t);      /* unknown laterality: by tissue */
    assert_int_equal(t.flip, 1);
    prep_plan(&p.im, 'R', &o, &t);
    assert_int_equal(t.flip, 1);
    prep_plan(&p.im, 'L', &o, &t);    /* FLIP_AUTO trusts the tag */
    assert_int_equal(t.flip, 0);
    o.flip = FLIP_TISSUE;
    prep_plan(&p.im, 'L', &o, &t);
    assert_int_equal(t.flip, 1);
    Image out;
    Err e;
    assert_int_equal(prep_apply_image(&t, &p.im, &out, &e), 0);
    assert_int_equal(image_breast_on_right(&out), 0);
    /* the flip mirrors the crop exactly */
    Image c;
    assert_int_equal(image_crop(&p.im, t.crop, &c, &e), 0);
    assert_int_equal(out.w, c.w);
    for (int y = 0; y < c.h; y += 7)
        for (int x = 0; x < c.w; x += 5) assert_int_equal(image_row(&out, y)[x], image_row(&c, y)[c.w - 1 - x]);
    image_free(&c);
    image_free(&out);
    o.flip = FLIP_NONE;
    prep_plan(&p.im, 'R', &o, &t);
    assert_int_equal(t.flip, 0);
    free_phantom(&p);

    make_phantom(&p, 240, 180, 0, 8);
    assert_int_equal(image_breast_on_right(&p.im), 0);
    free_phantom(&p);
}

/* Image, mask (nearest) and box go through the same crop -> flip -> resize. */
static void pipeline_case(int keep_aspect, int out_w, int out_h) {
    Phantom p;
    make_phantom(&p, 300, 220, 1, 11);
    PrepOpts o = prep_opts_default();
    o.out_w = out_w;
    o.out_h = out_h;
    o.keep_aspect = keep_aspect;
    PrepTransform t;
    prep_plan(&p.im, 'R', &o, &t);
    Image img, mask;
    Err e;
    assert_int_equal(prep_apply_image(&t, &p.im, &img, &e), 0);
    assert_int_equal(prep_apply_mask(&t, &p.lesion, &mask, &e), 0);
    assert_int_equal(img.w, out_w);
    assert_int_equal(img.h, out_h);
    assert_int_equal(img.bits, 12);
    assert_int_equal(mask.w, out_w);
    assert_int_equal(mask.bits, 8);
    /* nearest: labels only, never interpolated */
    Rect mb = {out_w, out_h, -1, -1};
    for (int y = 0; y < out_h; y++)
        for (int x = 0; x < out_w; x++) {
            uint16_t v = image_row(&mask, y)[x];
            assert_true(v == 0 || v == 1);
            if (v) {
                if (x < mb.x0) mb.x0 = x;
                if (x > mb.x1) mb.x1 = x;
                if (y < mb.y0) mb.y0 = y;
                if (y > mb.y1) mb.y1 = y;
            }
        }
    mb.x1++;
    mb.y1++;
    BoxF box = {(float)p.lesion_bb.x0, (float)p.lesion_bb.y0, (float)p.lesion_bb.x1, (float)p.lesion_bb.y1};
    prep_apply_boxes(&t, &box, 1);
    /* nearest takes source floor(d * in / out), so the resized mask spans exactly
     * [ceil(b0), ceil(b1)) of the scaled box */
    Rect bx = {(int)ceilf(box.x0 - 1e-4f), (int)ceilf(box.y0 - 1e-4f), (int)ceilf(box.x1 - 1e-4f), (int)ceilf(box.y1 - 1e-4f)};
    assert_rect_near(mb, bx, 0);
    /* after flipping a right breast, the lesion is in the left half */
    assert_true(box.x1 < t.fit_w * 0.75f);
    if (keep_aspect) {
        /* aspect kept (to a pixel), padding is zero */
        double ar_crop = (double)(t.crop.x1 - t.crop.x0) / (t.crop.y1 - t.crop.y0);
        double ar_fit = (double)t.fit_w / t.fit_h;
        assert_true(fabs(ar_fit - ar_crop) < 2.0 / t.fit_h * ar_crop + 1e-9 || fabs(ar_fit - ar_crop) < 2.0 / t.fit_w);
        assert_true(t.fit_w == out_w || t.fit_h == out_h);
        for (int y = 0; y < out_h; y++)
            for (int x = t.fit_w; x < out_w; x++) assert_int_equal(image_row(&img, y)[x], 0);
        for (int y = t.fit_h; y < out_h; y++)
            for (int x = 0; x < out_w; x++) assert_int_equal(image_row(&img, y)[x], 0);
    } else {
        assert_true(t.fit_w == out_w && t.fit_h == out_h);
    }
    image_free(&img);
    image_free(&mask);
    /* a mask of another size is refused */
    Image wrong;
    assert_int_equal(image_alloc(&wrong, 10, 10, 8, &e), 0);
    assert_int_not_equal(prep_apply_mask(&t, &wrong, &mask, &e), 0);
    assert_non_null(strstr(e.msg, "10x10"));
    image_free(&wrong);
    free_phantom(&p);
}

static void test_resize_mask_nearest_boxes_scaled(void **s) {
    (void)s;
    pipeline_case(0, 128, 128);   /* stretch (the recipe's 512 x 512 resize, smaller) */
    pipeline_case(0, 97, 161);
    pipeline_case(1, 100, 100);   /* keep aspect + pad */
    pipeline_case(1, 64, 160);
}

static void test_normalize(void **s) {
    (void)s;
    Image im;
    Err e;
    assert_int_equal(image_alloc(&im, 3, 1, 8, &e), 0);
    im.px[0] = 0; im.px[1] = 51; im.px[2] = 255;
    float out[3];
    prep_normalize(&im, 0.5f, 0.5f, out);   /* the downstream protocol: x / 255, mean 0.5, std 0.5 */
    assert_float_equal(out[0], -1.0, 1e-6);
    assert_float_equal(out[1], -0.6, 1e-6);
    assert_float_equal(out[2], 1.0, 1e-6);
    prep_normalize(&im, 0.3089f, 0.2505f, out);   /* stage-2 pretraining statistics */
    assert_float_equal(out[1], (0.2 - 0.3089) / 0.2505, 1e-5);
    image_free(&im);
}

/* Speed: a 2400 x 1900 12-bit mammogram through crop + flip + area resize to 512 x 512. */
static void test_speed(void **s) {
    (void)s;
    Phantom p;
    make_phantom(&p, 2400, 1900, 1, 21);
    PrepOpts o = prep_opts_default();
    o.out_w = o.out_h = 512;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    PrepTransform t;
    Image out;
    Err e;
    const int reps = 3;
    for (int k = 0; k < reps; k++) {
        prep_plan(&p.im, 0, &o, &t);
        assert_int_equal(prep_apply_image(&t, &p.im, &out, &e), 0);
        image_free(&out);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double ms = ((t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6) / reps;
    print_message("preprocess 2400x1900 -> 512x512: %.1f ms/image\n", ms);
    assert_true(ms < 2000);   /* generous: the CPU is shared; typical is tens of ms */
    free_phantom(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_otsu),
        cmocka_unit_test(test_crop_finds_breast),
        cmocka_unit_test(test_crop_fatty_breast_keeps_skin_lesion),
        cmocka_unit_test(test_crop_synthetic_breasts),
        cmocka_unit_test(test_flip_to_left),
        cmocka_unit_test(test_resize_mask_nearest_boxes_scaled),
        cmocka_unit_test(test_normalize),
        cmocka_unit_test(test_speed),
    };
    return RUN_GROUP(tests);
}
