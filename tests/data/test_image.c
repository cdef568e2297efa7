/* test_image.c — PNG/JPEG/PGM loading (third-party files from make_fixtures.py), our PNG writer
 * (8 and 16 bit), conversions, crop/flip, resampling against PyTorch / PIL references
 * (tests/ref/image_resize.py), and corrupt / truncated inputs. */
#include "tests/common/testutil.h"
#include "data/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/data/fixtures/"

static int P16(int x, int y) { return (x * 4099 + y * 13007 + 1) % 65536; }
static int P12(int x, int y) { return (x * 37 + y * 101 + 5) % 4096; }
static int P8(int x, int y) { return (x * 17 + y * 31) % 256; }

static void load_ok(const char *path, Image *im) {
    Err e = {{0}};
    if (image_load(path, im, &e)) fail_msg("%s", e.msg);
}

static void check_formula(const Image *im, int w, int h, int (*f)(int, int)) {
    assert_int_equal(im->w, w);
    assert_int_equal(im->h, h);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (im->px[y * w + x] != f(x, y)) fail_msg("pixel (%d,%d) = %d, want %d", x, y, im->px[y * w + x], f(x, y));
}

static void test_png16_keeps_16_bits(void **s) {
    (void)s;
    Image im;
    load_ok(FIX "gray16.png", &im);   /* written by PIL */
    assert_int_equal(im.bits, 16);
    check_formula(&im, 7, 5, P16);
    uint16_t mn, mx;
    image_minmax(&im, &mn, &mx);
    assert_true(mx > 255);            /* really 16-bit content */
    image_free(&im);
    load_ok(FIX "gray16.pgm", &im);
    assert_int_equal(im.bits, 16);
    check_formula(&im, 7, 5, P16);
    image_free(&im);
}

static void test_png8_pgm(void **s) {
    (void)s;
    Image im;
    load_ok(FIX "gray8.png", &im);
    assert_int_equal(im.bits, 8);
    check_formula(&im, 7, 5, P8);
    image_free(&im);
    load_ok(FIX "gray8.pgm", &im);   /* P5 with a comment line */
    assert_int_equal(im.bits, 8);
    check_formula(&im, 7, 5, P8);
    image_free(&im);
    load_ok(FIX "gray12_ascii.pgm", &im);   /* P2, maxval 4095 -> 12 bits */
    assert_int_equal(im.bits, 12);
    check_formula(&im, 7, 5, P12);
    image_free(&im);
}

static void test_rgb_to_luma(void **s) {
    (void)s;
    Image im;
    load_ok(FIX "rgb.png", &im);
    assert_int_equal(im.bits, 8);
    /* round(0.299 R + 0.587 G + 0.114 B), by hand */
    const int want[6] = {76, 150, 29, 18, 124, 77};   /* red, green, blue, (10,20,30), (200,100,50), gray 77 */
    for (int i = 0; i < 6; i++) assert_int_equal(im.px[i], want[i]);
    image_free(&im);
}

static void test_jpeg(void **s) {
    (void)s;
    Image im;
    load_ok(FIX "ramp.jpg", &im);   /* PIL quality 95, ramp 8 x */
    assert_int_equal(im.bits, 8);
    assert_int_equal(im.w, 32);
    assert_int_equal(im.h, 16);
    int worst = 0;
    for (int y = 0; y < 16; y++)
        for (int x = 0; x < 32; x++) {
            int d = abs((int)im.px[y * 32 + x] - x * 8);
            worst = d > worst ? d : worst;
        }
    assert_true(worst <= 4);   /* lossy, but close */
    image_free(&im);
}

static void tmp_path(char *buf, size_t n, const char *tag) {
    snprintf(buf, n, "/tmp/versa_test_image_%d_%s", (int)getpid(), tag);
}

static void test_png_writer_roundtrip(void **s) {
    (void)s;
    const int bits[] = {16, 12, 8, 1};
    for (int k = 0; k < 4; k++) {
        Image im, back;
        Err e;
        int w = 61, h = 37;
        assert_int_equal(image_alloc(&im, w, h, bits[k], &e), 0);
        Rng r;
        rng_init(&r, 7 + (uint64_t)k);
        for (int i = 0; i < w * h; i++) im.px[i] = (uint16_t)rng_below(&r, 1u << bits[k]);
        im.px[0] = (uint16_t)image_maxval(&im);
        char path[256];
        tmp_path(path, sizeof path, "rt.png");
        if (image_save_png(path, &im, &e)) fail_msg("%s", e.msg);
        load_ok(path, &back);
        assert_int_equal(back.bits, bits[k] > 8 ? 16 : 8);   /* values are kept, depth is 8 or 16 */
        assert_int_equal(back.w, w);
        assert_int_equal(back.h, h);
        assert_memory_equal(back.px, im.px, (size_t)w * h * 2);
        image_free(&back);
        /* PGM keeps the exact bit depth */
        tmp_path(path, sizeof path, "rt.pgm");
        assert_int_equal(image_save_pgm(path, &im, &e), 0);
        load_ok(path, &back);
        assert_int_equal(back.bits, bits[k]);
        assert_memory_equal(back.px, im.px, (size_t)w * h * 2);
        image_free(&back);
        unlink(path);
        tmp_path(path, sizeof path, "rt.png");
        unlink(path);
        image_free(&im);
    }
}

static void expect_load_error(const char *path, const char *needle) {
    Image im;
    Err e = {{0}};
    assert_int_not_equal(image_load(path, &im, &e), 0);
    assert_null(im.px);
    if (strncmp(e.msg, path, strlen(path)) != 0 || !strstr(e.msg, needle))
        fail_msg("error for %s: '%s' (want the path and '%s')", path, e.msg, needle);
}

static void test_load_errors(void **s) {
    (void)s;
    expect_load_error(FIX "nope.png", "no such file");
    expect_load_error(FIX "truncated.png", "corrupt or truncated");
    expect_load_error(FIX "corrupt.png", "corrupt or truncated");
    expect_load_error(FIX "not_an_image.png", "unsupported or unrecognised image format");
    expect_load_error("tests/data/fixtures", "");   /* a directory */
    char path[256];
    tmp_path(path, sizeof path, "empty.png");
    FILE *f = fopen(path, "wb");
    fclose(f);
    expect_load_error(path, "empty file");
    unlink(path);
    /* a JPEG whose Huffman table claims more than 256 codes (stb 2.27 wrote out of bounds) */
    FILE *jf = fopen(FIX "ramp.jpg", "rb");
    assert_non_null(jf);
    uint8_t jpg[4096];
    size_t jn = fread(jpg, 1, sizeof jpg, jf);
    fclose(jf);
    size_t dht = 2;
    while (dht + 4 < jn && !(jpg[dht] == 0xFF && jpg[dht + 1] == 0xC4)) dht++;
    assert_true(dht + 4 < jn);
    for (int i = 0; i < 16; i++) jpg[dht + 5 + i] = 0x20;   /* 16 x 32 = 512 codes */
    Image im;
    Err e;
    assert_int_not_equal(image_load_mem(jpg, jn, "dht.jpg", &im, &e), 0);
    if (strncmp(e.msg, "dht.jpg: corrupt or truncated image (JPEG: ", 43)) fail_msg("%s", e.msg);
    print_message("  %s\n", e.msg);
    /* an empty IDAT before the data (legal PNG; stb 2.27 computed NULL + 0 on it, UB found by
     * fuzz_image) loads exactly like the file without it */
    {
        FILE *gf = fopen(FIX "gray8.png", "rb");
        assert_non_null(gf);
        uint8_t orig[4096], with[4096 + 12];
        size_t on = fread(orig, 1, sizeof orig, gf);
        fclose(gf);
        size_t at = 8;
        while (at + 8 < on && memcmp(orig + at + 4, "IDAT", 4))
            at += 12 + (((size_t)orig[at] << 24) | ((size_t)orig[at + 1] << 16) | ((size_t)orig[at + 2] << 8) | orig[at + 3]);
        assert_true(at + 8 < on);
        static const uint8_t empty_idat[12] = {0, 0, 0, 0, 'I', 'D', 'A', 'T', 0x35, 0xAF, 0x06, 0x1E};
        memcpy(with, orig, at);
        memcpy(with + at, empty_idat, 12);
        memcpy(with + at + 12, orig + at, on - at);
        Image a, b;
        Err ea = {{0}}, eb = {{0}};
        if (image_load_mem(orig, on, "orig.png", &a, &ea)) fail_msg("%s", ea.msg);
        if (image_load_mem(with, on + 12, "with.png", &b, &eb)) fail_msg("%s", eb.msg);
        assert_true(a.w == b.w && a.h == b.h && a.bits == b.bits);
        assert_memory_equal(a.px, b.px, (size_t)a.w * a.h * sizeof(uint16_t));
        image_free(&a);
        image_free(&b);
    }
    /* a PNG header claiming 65535 x 65535 pixels in a few bytes is refused before decoding */
    FILE *pf = fopen(FIX "gray8.png", "rb");
    uint8_t png[256];
    size_t pn = fread(png, 1, sizeof png, pf);
    fclose(pf);
    png[16] = 0; png[17] = 0; png[18] = 0xFF; png[19] = 0xFF;   /* IHDR width */
    png[20] = 0; png[21] = 0; png[22] = 0xFF; png[23] = 0xFF;   /* IHDR height */
    assert_int_not_equal(image_load_mem(png, pn, "big.png", &im, &e), 0);
    assert_non_null(strstr(e.msg, "big.png: "));
    tmp_path(path, sizeof path, "short.pgm");
    f = fopen(path, "wb");
    fputs("P5\n100 100\n255\nabc", f);
    fclose(f);
    expect_load_error(path, "truncated PGM");
    unlink(path);
}

/* Every prefix of a PNG, JPEG and PGM fails cleanly (exact-size buffers: ASan sees overreads). */
static void test_truncated_everywhere(void **s) {
    (void)s;
    const char *files[] = {FIX "gray16.png", FIX "rgb.png", FIX "ramp.jpg", FIX "gray16.pgm", FIX "gray12_ascii.pgm"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        FILE *fp = fopen(files[f], "rb");
        assert_non_null(fp);
        uint8_t full[4096];
        size_t n = fread(full, 1, sizeof full, fp);
        fclose(fp);
        int ok = 0;
        for (size_t cut = 0; cut < n; cut++) {
            uint8_t *b = malloc(cut ? cut : 1);
            memcpy(b, full, cut);
            Image im;
            Err e = {{0}};
            if (image_load_mem(b, cut, "cut", &im, &e) == 0) {
                ok++;   /* a decoder may accept a file missing only its trailer (JPEG EOI, PNG IEND) */
                image_free(&im);
            } else {
                assert_true(strncmp(e.msg, "cut: ", 5) == 0);
            }
            free(b);
        }
        assert_true(ok <= 16);
    }
}

static void test_conversions(void **s) {
    (void)s;
    Image im, o;
    Err e;
    assert_int_equal(image_alloc(&im, 4, 1, 12, &e), 0);
    im.px[0] = 0; im.px[1] = 1000; im.px[2] = 3000; im.px[3] = 4095;
    float f[4];
    image_to_float(&im, f);
    assert_float_equal(f[1], 1000.0 / 4095.0, 1e-7);
    assert_float_equal(f[3], 1.0, 0);
    image_to_float_window(&im, 1000, 3000, f);
    assert_float_equal(f[0], 0.0, 0);
    assert_float_equal(f[2], 1.0, 0);
    assert_int_equal(image_rescale_minmax(&im, 8, &o, &e), 0);
    assert_int_equal(o.bits, 8);
    assert_int_equal(o.px[1], 62);   /* round(1000 / 4095 * 255) = round(62.27) */
    assert_int_equal(o.px[3], 255);
    image_free(&o);
    const float x[4] = {-0.5f, 0.25f, 0.5f, 2.0f};
    assert_int_equal(image_from_float(x, 4, 1, 8, &o, &e), 0);
    assert_int_equal(o.px[0], 0);
    assert_int_equal(o.px[1], 64);    /* 63.75 rounds up */
    assert_int_equal(o.px[2], 128);
    assert_int_equal(o.px[3], 255);
    image_free(&o);
    float v[4] = {1, 2, 3, 4};
    double m, sd;
    float_mean_std(v, 4, &m, &sd);
    assert_float_equal(m, 2.5, 1e-12);
    assert_float_equal(sd, sqrt(1.25), 1e-12);
    float_normalize(v, 4, 2.5f, 0.5f);
    assert_float_equal(v[0], -3.0, 1e-6);
    image_free(&im);
    assert_int_not_equal(image_alloc(&im, 0, 5, 8, &e), 0);
    assert_int_not_equal(image_alloc(&im, 5, 5, 17, &e), 0);
}

static void test_crop_flip_boxes(void **s) {
    (void)s;
    Image im, c;
    Err e;
    assert_int_equal(image_alloc(&im, 5, 4, 8, &e), 0);
    for (int i = 0; i < 20; i++) im.px[i] = (uint16_t)i;
    assert_int_equal(image_crop(&im, (Rect){1, 1, 4, 3}, &c, &e), 0);
    assert_int_equal(c.w, 3);
    assert_int_equal(c.h, 2);
    const uint16_t want[6] = {6, 7, 8, 11, 12, 13};
    assert_memory_equal(c.px, want, sizeof want);
    image_flip_h(&c);
    const uint16_t flipped[6] = {8, 7, 6, 13, 12, 11};
    assert_memory_equal(c.px, flipped, sizeof flipped);
    image_free(&c);
    assert_int_equal(image_crop(&im, (Rect){-3, 2, 99, 99}, &c, &e), 0);   /* clipped */
    assert_int_equal(c.w, 5);
    assert_int_equal(c.h, 2);
    image_free(&c);
    assert_int_not_equal(image_crop(&im, (Rect){7, 0, 9, 2}, &c, &e), 0);   /* empty after clipping */
    image_free(&im);

    BoxF b = {10, 20, 30, 40};
    BoxF cb = box_crop(b, (Rect){5, 25, 25, 100});
    assert_true(cb.x0 == 5 && cb.y0 == 0 && cb.x1 == 20 && cb.y1 == 15);   /* clipped to 20 x 75 */
    BoxF fb = box_flip_h(b, 100);
    assert_true(fb.x0 == 70 && fb.x1 == 90 && fb.y0 == 20 && fb.y1 == 40);
    BoxF sb = box_scale(b, 0.5f, 2.0f);
    assert_true(sb.x0 == 5 && sb.y0 == 40 && sb.x1 == 15 && sb.y1 == 80);
}

static void test_resize_hand(void **s) {
    (void)s;
    /* bilinear 2 -> 4 (half-pixel centres, edges clamped): [0, 100] -> [0, 25, 75, 100] */
    const float a[2] = {0, 100};
    float o4[4];
    resize_f32(a, 2, 1, o4, 4, 1, RESIZE_BILINEAR);
    const float w4[4] = {0, 25, 75, 100};
    for (int i = 0; i < 4; i++) assert_float_equal(o4[i], w4[i], 1e-5);
    /* area 3 -> 2: [0, 30, 60] -> [(0 + 0.5*30)/1.5, (0.5*30 + 60)/1.5] = [10, 50] */
    const float b[3] = {0, 30, 60};
    float o2[2];
    resize_f32(b, 3, 1, o2, 2, 1, RESIZE_AREA);
    assert_float_equal(o2[0], 10, 1e-5);
    assert_float_equal(o2[1], 50, 1e-5);
    /* nearest on an Image keeps labels exactly */
    Image m, r;
    Err e;
    assert_int_equal(image_alloc(&m, 4, 1, 8, &e), 0);
    m.px[0] = 1; m.px[1] = 2; m.px[2] = 3; m.px[3] = 4;
    assert_int_equal(image_resize(&m, 2, 1, RESIZE_NEAREST, &r, &e), 0);
    assert_int_equal(r.px[0], 1);
    assert_int_equal(r.px[1], 3);
    image_free(&r);
    assert_int_equal(image_resize(&m, 7, 3, RESIZE_NEAREST, &r, &e), 0);
    for (int i = 0; i < 21; i++) assert_true(r.px[i] >= 1 && r.px[i] <= 4);
    image_free(&r);
    image_free(&m);
}

/* resize_f32 vs PyTorch (bilinear, nearest) and PIL BOX (area, shrinking). */
static void test_resize_vs_reference(void **s) {
    (void)s;
    RefFile *rf = ref_open("image_resize");
    size_t n, shape[VT_MAX_DIMS];
    int nd;
    float *img = ref_get(rf, "image", &n, &nd, shape);
    int ih = (int)shape[0], iw = (int)shape[1];
    float *sizes = ref_get(rf, "sizes", &n, &nd, shape);
    size_t nsz = shape[0];
    for (size_t k = 0; k < nsz; k++) {
        int ow = (int)sizes[2 * k], oh = (int)sizes[2 * k + 1];
        float *got = malloc((size_t)ow * oh * sizeof(float));
        char key[32];
        snprintf(key, sizeof key, "bilinear%zu", k);
        float *want = ref_get(rf, key, &n, &nd, shape);
        resize_f32(img, iw, ih, got, ow, oh, RESIZE_BILINEAR);
        assert_close(key, got, want, n, 1e-5, 1e-5);
        free(want);
        snprintf(key, sizeof key, "nearest%zu", k);
        want = ref_get(rf, key, &n, &nd, shape);
        resize_f32(img, iw, ih, got, ow, oh, RESIZE_NEAREST);
        assert_close(key, got, want, n, 1e-7, 0);   /* exact copies */
        free(want);
        free(got);
    }
    free(sizes);
    float *asz = ref_get(rf, "area_sizes", &n, &nd, shape);
    for (size_t k = 0; k < shape[0]; k++) {
        int ow = (int)asz[2 * k], oh = (int)asz[2 * k + 1];
        float *got = malloc((size_t)ow * oh * sizeof(float));
        char key[32];
        snprintf(key, sizeof key, "area%zu", k);
        size_t m;
        size_t sh2[VT_MAX_DIMS];
        float *want = ref_get(rf, key, &m, &nd, sh2);
        resize_f32(img, iw, ih, got, ow, oh, RESIZE_AREA);
        assert_close(key, got, want, m, 1e-5, 1e-4);
        free(want);
        free(got);
    }
    free(asz);
    /* integer factors vs PIL's BOX filter directly */
    float *img2 = ref_get(rf, "image2", &n, &nd, shape);
    const int isz[2][2] = {{4, 3}, {8, 6}};
    for (int k = 0; k < 2; k++) {
        float got[48];
        char key[32];
        snprintf(key, sizeof key, "area_int%d", k);
        size_t m;
        size_t sh2[VT_MAX_DIMS];
        float *want = ref_get(rf, key, &m, &nd, sh2);
        resize_f32(img2, (int)shape[1], (int)shape[0], got, isz[k][0], isz[k][1], RESIZE_AREA);
        assert_close(key, got, want, m, 1e-6, 1e-5);
        free(want);
    }
    free(img2);
    free(img);
    ref_close(rf);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png16_keeps_16_bits),
        cmocka_unit_test(test_png8_pgm),
        cmocka_unit_test(test_rgb_to_luma),
        cmocka_unit_test(test_jpeg),
        cmocka_unit_test(test_png_writer_roundtrip),
        cmocka_unit_test(test_load_errors),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_conversions),
        cmocka_unit_test(test_crop_flip_boxes),
        cmocka_unit_test(test_resize_hand),
        cmocka_unit_test(test_resize_vs_reference),
    };
    return RUN_GROUP(tests);
}
