/* test_dicom.c — the DICOM reader on third-party files (pydicom + opj_compress, see
 * tests/data/fixtures/make_fixtures.py), the VOI functions against hand-computed values, the
 * writer round trip, and corrupt / truncated / hostile inputs (which must fail cleanly). */
#include "tests/common/testutil.h"
#include "data/data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FIX "tests/data/fixtures/"

static int P12(int x, int y) { return (x * 37 + y * 101 + 5) % 4096; }
static int P8(int x, int y) { return (x * 17 + y * 31) % 256; }

static uint8_t *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz);
    assert_int_equal(fread(b, 1, (size_t)sz, f), (size_t)sz);
    fclose(f);
    *n = (size_t)sz;
    return b;
}

static void read_ok(const char *path, Dicom *d) {
    Err e = {{0}};
    int rc = dicom_read(path, d, &e);
    if (rc) fail_msg("%s", e.msg);
}

/* The tags every fixture written by base_ds() carries. */
static void check_common_tags(const Dicom *d) {
    const DicomInfo *in = &d->info;
    assert_string_equal(in->patient_id, "PAT-0042");
    assert_string_equal(in->study_uid, "1.2.3.4.5.100");
    assert_string_equal(in->series_uid, "1.2.3.4.5.200");
    assert_string_equal(in->sop_instance_uid, "1.2.3.4.5.6.7.8.9");
    assert_string_equal(in->sop_class_uid, "1.2.840.10008.5.1.4.1.1.1.2");
    assert_string_equal(in->modality, "MG");
    assert_int_equal(in->samples_per_pixel, 1);
}

static void check_p12(const Dicom *d, int w, int h) {
    assert_int_equal(d->info.cols, w);
    assert_int_equal(d->info.rows, h);
    assert_non_null(d->pixels);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            if (d->pixels[y * w + x] != P12(x, y))
                fail_msg("pixel (%d,%d) = %d, want %d", x, y, d->pixels[y * w + x], P12(x, y));
}

/* ---- reading ---- */

static void explicit_like(const char *path, const char *ts) {
    Dicom d;
    read_ok(path, &d);
    check_common_tags(&d);
    const DicomInfo *in = &d.info;
    assert_string_equal(in->transfer_syntax, ts);
    assert_int_equal(in->bits_allocated, 16);
    assert_int_equal(in->bits_stored, 12);
    assert_int_equal(in->high_bit, 11);
    assert_int_equal(in->pixel_representation, 0);
    assert_string_equal(in->photometric, "MONOCHROME2");
    assert_int_equal(in->laterality, 'L');
    assert_string_equal(in->view, "MLO");
    assert_string_equal(in->patient_orientation, "A\\R");
    assert_true(fabsf(in->pixel_spacing[0] - 0.085f) < 1e-7f && fabsf(in->pixel_spacing[1] - 0.085f) < 1e-7f);
    assert_true(in->rescale_slope == 2.0 && in->rescale_intercept == -100.0);
    assert_true(in->has_window);
    assert_true(in->window_center == 600.0 && in->window_width == 800.0);   /* first of two values */
    assert_int_equal(in->voi_function, VOI_LINEAR);
    check_p12(&d, 6, 4);

    /* render: x = 2 s - 100, LINEAR window c 600 w 800 */
    float out[24];
    Err e;
    assert_int_equal(dicom_render_f32(&d, NULL, out, &e), 0);
    /* hand-computed: (2,1) s = 180, x = 260: (260 - 599.5) / 799 + 0.5 = 0.0750938673
     *                (5,3) s = 493, x = 886: (886 - 599.5) / 799 + 0.5 = 0.8585732165
     *                (1,1) s = 143, x = 186 <= 599.5 - 399.5 = 200 -> 0 */
    assert_float_equal(out[1 * 6 + 2], 0.0750938673, 1e-6);
    assert_float_equal(out[3 * 6 + 5], 0.8585732165, 1e-6);
    assert_float_equal(out[1 * 6 + 1], 0.0, 0);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 6; x++) {
            double xv = 2.0 * P12(x, y) - 100, want = xv <= 200 ? 0 : xv > 999 ? 1 : (xv - 599.5) / 799 + 0.5;
            assert_float_equal(out[y * 6 + x], want, 1e-6);
        }
    /* 16-bit Image rendering is the same, quantised */
    Image im;
    assert_int_equal(dicom_render(&d, NULL, &im, &e), 0);
    assert_int_equal(im.bits, 16);
    assert_int_equal(im.px[3 * 6 + 5], (int)lround(0.8585732165 * 65535));
    image_free(&im);
    dicom_free(&d);
}

static void test_explicit_le(void **s) { (void)s; explicit_like(FIX "explicit_le.dcm", "1.2.840.10008.1.2.1"); }
static void test_implicit_le(void **s) { (void)s; explicit_like(FIX "implicit_le.dcm", "1.2.840.10008.1.2"); }
static void test_deflated_le(void **s) { (void)s; explicit_like(FIX "deflated_le.dcm", "1.2.840.10008.1.2.1.99"); }
static void test_no_preamble(void **s) { (void)s; explicit_like(FIX "no_preamble.dcm", "1.2.840.10008.1.2.1"); }

static void test_monochrome1(void **s) {
    (void)s;
    Dicom d;
    read_ok(FIX "mono1.dcm", &d);
    assert_string_equal(d.info.photometric, "MONOCHROME1");
    assert_int_equal(d.info.laterality, 'R');   /* from Laterality (0020,0060) */
    assert_string_equal(d.info.view, "CC");
    assert_false(d.info.has_window);
    check_p12(&d, 6, 4);
    /* no window: min-max over stored 5..493, then inverted: y = 1 - (s - 5) / 488 */
    float out[24], raw[24];
    Err e;
    assert_int_equal(dicom_render_f32(&d, NULL, out, &e), 0);
    DicomRenderOpts keep = {.no_invert = 1};
    assert_int_equal(dicom_render_f32(&d, &keep, raw, &e), 0);
    assert_float_equal(out[0], 1.0, 1e-7);          /* s = 5: darkest stored = brightest shown */
    assert_float_equal(out[23], 0.0, 1e-7);         /* s = 493 */
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 6; x++) {
            double lin = (P12(x, y) - 5) / 488.0;
            assert_float_equal(out[y * 6 + x], 1.0 - lin, 1e-6);
            assert_float_equal(raw[y * 6 + x], lin, 1e-6);
        }
    dicom_free(&d);
}

static void test_signed_linear_exact(void **s) {
    (void)s;
    Dicom d;
    read_ok(FIX "signed.dcm", &d);
    assert_int_equal(d.info.pixel_representation, 1);
    assert_int_equal(d.info.voi_function, VOI_LINEAR_EXACT);
    /* junk in the 4 unused high bits is masked, 12-bit two's complement sign-extended */
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 6; x++) assert_int_equal(d.pixels[y * 6 + x], P12(x, y) - 2048);
    float out[24];
    Err e;
    assert_int_equal(dicom_render_f32(&d, NULL, out, &e), 0);
    /* LINEAR_EXACT c = -1800, w = 600: (s + 1800) / 600 + 0.5
     * (0,0) s = -2043 -> 0.095; (5,3) s = -1555 -> 0.9083333 */
    assert_float_equal(out[0], 0.095, 1e-6);
    assert_float_equal(out[23], 0.9083333333, 1e-6);
    dicom_free(&d);
}

static void test_sigmoid_8bit(void **s) {
    (void)s;
    Dicom d;
    read_ok(FIX "sigmoid8.dcm", &d);
    assert_int_equal(d.info.bits_allocated, 8);
    assert_int_equal(d.info.voi_function, VOI_SIGMOID);
    for (int y = 0; y < 4; y++)
        for (int x = 0; x < 6; x++) assert_int_equal(d.pixels[y * 6 + x], P8(x, y));
    float out[24];
    Err e;
    assert_int_equal(dicom_render_f32(&d, NULL, out, &e), 0);
    /* 1 / (1 + exp(-4 (x - 128) / 64)): x = 0 -> 1/(1+e^8) = 3.353501e-4; x = 178 -> 0.9579122721 */
    assert_float_equal(out[0], 3.353501304664781e-4, 1e-8);
    assert_float_equal(out[23], 0.9579122720843811, 1e-6);
    dicom_free(&d);
}

static void test_voi_functions(void **s) {
    (void)s;
    /* LINEAR (C.11.2.1.2.1), c = 2048, w = 4096: bounds 0 and 4095 */
    assert_float_equal(dicom_voi(0, 2048, 4096, VOI_LINEAR), 0.0, 0);
    assert_float_equal(dicom_voi(2047.5, 2048, 4096, VOI_LINEAR), 0.5, 1e-12);
    assert_float_equal(dicom_voi(4095, 2048, 4096, VOI_LINEAR), 1.0, 1e-12);
    assert_float_equal(dicom_voi(1000, 2048, 4096, VOI_LINEAR), (1000 - 2047.5) / 4095 + 0.5, 1e-12);
    /* width 1: a hard threshold at c - 0.5 */
    assert_float_equal(dicom_voi(9.5, 10, 1, VOI_LINEAR), 0.0, 0);
    assert_float_equal(dicom_voi(9.6, 10, 1, VOI_LINEAR), 1.0, 0);
    /* LINEAR_EXACT, c = 100, w = 50 */
    assert_float_equal(dicom_voi(75, 100, 50, VOI_LINEAR_EXACT), 0.0, 0);
    assert_float_equal(dicom_voi(100, 100, 50, VOI_LINEAR_EXACT), 0.5, 1e-12);
    assert_float_equal(dicom_voi(110, 100, 50, VOI_LINEAR_EXACT), 0.7, 1e-12);
    assert_float_equal(dicom_voi(125, 100, 50, VOI_LINEAR_EXACT), 1.0, 1e-12);
    assert_float_equal(dicom_voi(126, 100, 50, VOI_LINEAR_EXACT), 1.0, 0);
    /* SIGMOID, c = 100, w = 50: 1 / (1 + exp(-4 (x - c) / w)) */
    assert_float_equal(dicom_voi(100, 100, 50, VOI_SIGMOID), 0.5, 1e-12);
    assert_float_equal(dicom_voi(125, 100, 50, VOI_SIGMOID), 0.8807970779778823, 1e-12);   /* 1/(1+e^-2) */
    assert_float_equal(dicom_voi(75, 100, 50, VOI_SIGMOID), 0.11920292202211755, 1e-12);
}

static void sequences_like(const char *path) {
    Dicom d;
    read_ok(path, &d);
    check_common_tags(&d);
    check_p12(&d, 6, 4);   /* the icon's own Pixel Data inside a sequence is not taken */
    assert_true(d.info.has_voi_lut);
    assert_int_equal(d.info.voi_lut_n, 512);
    assert_int_equal(d.info.voi_lut_first, 0);
    assert_int_equal(d.info.voi_lut_bits, 16);
    assert_int_equal(d.info.voi_lut[3], 384);
    float out[24];
    Err e;
    assert_int_equal(dicom_render_f32(&d, NULL, out, &e), 0);
    for (int i = 0; i < 24; i++) assert_float_equal(out[i], 128.0 * P12(i % 6, i / 6) / 65535.0, 1e-6);
    dicom_free(&d);
}

static void test_sequences_explicit(void **s) { (void)s; sequences_like(FIX "sequences.dcm"); }
static void test_sequences_implicit(void **s) { (void)s; sequences_like(FIX "sequences_implicit.dcm"); }

static void test_jpeg2000(void **s) {
    (void)s;
    const char *files[] = {FIX "j2k.dcm", FIX "j2k_2frag.dcm"};
    for (int f = 0; f < 2; f++) {
        Dicom d;
        read_ok(files[f], &d);
        assert_string_equal(d.info.transfer_syntax, "1.2.840.10008.1.2.4.90");
        check_p12(&d, 16, 12);
        dicom_free(&d);
    }
}

static void test_unsupported_syntax(void **s) {
    (void)s;
    Dicom d;
    Err e = {{0}};
    assert_int_not_equal(dicom_read(FIX "rle.dcm", &d, &e), 0);
    assert_non_null(strstr(e.msg, FIX "rle.dcm: "));
    assert_non_null(strstr(e.msg, "1.2.840.10008.1.2.5"));
    assert_non_null(strstr(e.msg, "RLE Lossless"));
    assert_null(d.pixels);
    /* the header alone is still readable */
    assert_int_equal(dicom_read_header(FIX "rle.dcm", &d, &e), 0);
    assert_string_equal(d.info.transfer_syntax, "1.2.840.10008.1.2.5");
    assert_null(d.pixels);
    dicom_free(&d);
    assert_string_equal(dicom_transfer_syntax_name("1.2.840.10008.1.2.4.70"),
                        "JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14, SV1)");
}

static void test_header_only_and_load_image(void **s) {
    (void)s;
    Dicom d;
    Err e;
    assert_int_equal(dicom_read_header(FIX "explicit_le.dcm", &d, &e), 0);
    assert_null(d.pixels);
    assert_int_equal(d.info.rows, 4);
    assert_string_equal(d.info.view, "MLO");
    dicom_free(&d);
    Image im;
    DicomInfo info;
    DicomRenderOpts o = {.out_bits = 8};
    assert_int_equal(dicom_load_image(FIX "explicit_le.dcm", &o, &im, &info, &e), 0);
    assert_int_equal(im.bits, 8);
    assert_int_equal(im.w, 6);
    assert_int_equal(im.px[23], (int)lround(0.8585732165 * 255));
    assert_int_equal(info.laterality, 'L');
    image_free(&im);
    /* image_load recognises a DICOM by content and renders it at 16 bits */
    assert_int_equal(image_load(FIX "no_preamble.dcm", &im, &e), 0);
    assert_int_equal(im.bits, 16);
    assert_int_equal(im.px[23], (int)lround(0.8585732165 * 65535));
    image_free(&im);
}

/* dicom_read_header reads a 64 kB prefix first; a header running past it (here a large private
 * element before the image tags, ending exactly on the prefix boundary) must trigger a re-read,
 * never a silently incomplete header. */
static void test_header_past_prefix(void **s) {
    (void)s;
    size_t n;
    uint8_t *orig = slurp(FIX "explicit_le.dcm", &n);
    size_t ds0 = 144 + (size_t)(orig[140] | orig[141] << 8);   /* after the meta group */
    size_t len = 65536 - 12 - ds0;
    size_t m = n + 12 + len;
    uint8_t *b = calloc(m, 1);
    memcpy(b, orig, ds0);
    const uint8_t hdr[12] = {0x09, 0x00, 0x00, 0x10, 'O', 'B', 0, 0, (uint8_t)len, (uint8_t)(len >> 8), 0, 0};
    memcpy(b + ds0, hdr, 12);
    memcpy(b + ds0 + 12 + len, orig + ds0, n - ds0);
    char path[256];
    snprintf(path, sizeof path, "/tmp/versa_test_dicom_%d_prefix.dcm", (int)getpid());
    FILE *f = fopen(path, "wb");
    fwrite(b, 1, m, f);
    fclose(f);
    Dicom d;
    Err e;
    assert_int_equal(dicom_read_header(path, &d, &e), 0);
    assert_int_equal(d.info.rows, 4);
    assert_int_equal(d.info.cols, 6);
    assert_string_equal(d.info.view, "MLO");
    dicom_free(&d);
    read_ok(path, &d);
    check_p12(&d, 6, 4);
    dicom_free(&d);
    unlink(path);
    free(b);
    free(orig);
}

/* ---- writer ---- */

static void tmp_path(char *buf, size_t n, const char *tag) {
    snprintf(buf, n, "/tmp/versa_test_dicom_%d_%s.dcm", (int)getpid(), tag);
}

static void roundtrip(int bits, const char *photometric) {
    Image im;
    Err e;
    int w = 37, h = 23;
    assert_int_equal(image_alloc(&im, w, h, bits, &e), 0);
    Rng r;
    rng_init(&r, 1234 + (uint64_t)bits);
    for (int i = 0; i < w * h; i++) im.px[i] = (uint16_t)rng_below(&r, 1u << bits);
    im.px[0] = (uint16_t)((1u << bits) - 1);   /* the extreme values */
    im.px[1] = 0;
    DicomInfo in;
    dicom_info_init(&in);
    in.bits_stored = bits;
    snprintf(in.photometric, sizeof in.photometric, "%s", photometric);
    snprintf(in.patient_id, sizeof in.patient_id, "SYN-000123");
    snprintf(in.view, sizeof in.view, "MLO");
    snprintf(in.manufacturer, sizeof in.manufacturer, "versamammo synth");
    snprintf(in.patient_orientation, sizeof in.patient_orientation, "P\\L");
    in.laterality = 'R';
    in.pixel_spacing[0] = in.pixel_spacing[1] = 0.1f;
    in.rescale_slope = 0.5;
    in.rescale_intercept = 12.25;
    in.has_window = 1;
    in.window_center = 1234.5;
    in.window_width = 987.25;
    in.voi_function = VOI_SIGMOID;
    in.has_padding = 1;
    in.padding_value = 0;
    char path[256];
    tmp_path(path, sizeof path, photometric);
    if (dicom_write(path, &in, &im, &e)) fail_msg("%s", e.msg);

    Dicom d;
    read_ok(path, &d);
    const DicomInfo *o = &d.info;
    assert_string_equal(o->transfer_syntax, "1.2.840.10008.1.2.1");
    assert_string_equal(o->photometric, photometric);
    assert_int_equal(o->bits_stored, bits);
    assert_int_equal(o->bits_allocated, bits <= 8 ? 8 : 16);
    assert_int_equal(o->high_bit, bits - 1);
    assert_string_equal(o->patient_id, "SYN-000123");
    assert_string_equal(o->view, "MLO");
    assert_string_equal(o->manufacturer, "versamammo synth");
    assert_string_equal(o->patient_orientation, "P\\L");
    assert_string_equal(o->modality, "MG");
    assert_string_equal(o->presentation_intent, "FOR PRESENTATION");
    assert_int_equal(o->laterality, 'R');
    assert_float_equal(o->pixel_spacing[0], 0.1, 1e-7);
    assert_true(o->rescale_slope == 0.5 && o->rescale_intercept == 12.25);
    assert_true(o->has_window && o->window_center == 1234.5 && o->window_width == 987.25);
    assert_int_equal(o->voi_function, VOI_SIGMOID);
    assert_true(o->has_padding && o->padding_value == 0);
    assert_int_equal(o->presentation_lut_inverse, strcmp(photometric, "MONOCHROME1") == 0);
    /* generated UIDs: 2.25 form, <= 64 chars, digits and dots */
    const char *uids[] = {o->study_uid, o->series_uid, o->sop_instance_uid};
    for (int k = 0; k < 3; k++) {
        assert_true(strncmp(uids[k], "2.25.", 5) == 0 && strlen(uids[k]) <= 64);
        assert_int_equal(strspn(uids[k], "0123456789."), strlen(uids[k]));
    }
    Image back;
    assert_int_equal(dicom_stored_image(&d, &back, &e), 0);
    assert_int_equal(back.w, w);
    assert_int_equal(back.h, h);
    assert_int_equal(back.bits, bits);
    assert_memory_equal(back.px, im.px, (size_t)w * h * sizeof(uint16_t));
    image_free(&back);

    /* deterministic: the same input gives the same bytes */
    uint8_t *b1, *b2;
    size_t n1, n2;
    assert_int_equal(dicom_write_mem(&in, &im, &b1, &n1, &e), 0);
    assert_int_equal(dicom_write_mem(&in, &im, &b2, &n2, &e), 0);
    assert_int_equal(n1, n2);
    assert_memory_equal(b1, b2, n1);
    assert_int_equal(n1 % 2, 0);
    free(b1);
    free(b2);
    dicom_free(&d);
    image_free(&im);
    unlink(path);
}

static void test_writer_roundtrip(void **s) {
    (void)s;
    roundtrip(12, "MONOCHROME2");
    roundtrip(16, "MONOCHROME1");
    roundtrip(8, "MONOCHROME2");
    roundtrip(7, "MONOCHROME1");   /* odd pixel byte count: padded */
}

static void test_writer_rejects(void **s) {
    (void)s;
    Image im;
    Err e;
    assert_int_equal(image_alloc(&im, 4, 4, 16, &e), 0);
    im.px[5] = 5000;
    DicomInfo in;
    dicom_info_init(&in);   /* 12 bits stored */
    uint8_t *b;
    size_t n;
    assert_int_not_equal(dicom_write_mem(&in, &im, &b, &n, &e), 0);
    assert_non_null(strstr(e.msg, "exceeds BitsStored 12"));
    snprintf(in.photometric, sizeof in.photometric, "RGB");
    im.px[5] = 0;
    assert_int_not_equal(dicom_write_mem(&in, &im, &b, &n, &e), 0);
    assert_non_null(strstr(e.msg, "photometric"));
    char path[64] = "/nonexistent-dir/x.dcm";
    dicom_info_init(&in);
    assert_int_not_equal(dicom_write(path, &in, &im, &e), 0);
    assert_non_null(strstr(e.msg, "/nonexistent-dir/x.dcm: cannot create"));
    image_free(&im);
}

/* PixelPaddingValue: excluded from the min-max range, and zeroed on request (after inversion). */
static void test_padding_and_full_window(void **s) {
    (void)s;
    Image im;
    Err e;
    assert_int_equal(image_alloc(&im, 4, 1, 12, &e), 0);
    im.px[0] = 0; im.px[1] = 100; im.px[2] = 200; im.px[3] = 300;
    DicomInfo in;
    dicom_info_init(&in);
    snprintf(in.photometric, sizeof in.photometric, "MONOCHROME1");
    in.has_padding = 1;
    in.padding_value = 0;
    uint8_t *buf;
    size_t n;
    assert_int_equal(dicom_write_mem(&in, &im, &buf, &n, &e), 0);
    Dicom d;
    assert_int_equal(dicom_read_mem(buf, n, "pad.dcm", &d, 0, &e), 0);
    float out[4];
    /* min-max over 100..300 (padding ignored), inverted: 1, 0.5, 0; the padding pixel clamps to
     * 0 before inversion -> 1, unless zeroed */
    assert_int_equal(dicom_render_f32(&d, NULL, out, &e), 0);
    assert_float_equal(out[0], 1.0, 1e-7);
    assert_float_equal(out[1], 1.0, 1e-7);
    assert_float_equal(out[2], 0.5, 1e-7);
    assert_float_equal(out[3], 0.0, 1e-7);
    DicomRenderOpts zp = {.zero_padding = 1};
    assert_int_equal(dicom_render_f32(&d, &zp, out, &e), 0);
    assert_float_equal(out[0], 0.0, 0);
    assert_float_equal(out[2], 0.5, 1e-7);
    /* the full 12-bit range instead of min-max: y = 1 - s / 4095 */
    DicomRenderOpts full = {.window = DICOM_WINDOW_FULL};
    assert_int_equal(dicom_render_f32(&d, &full, out, &e), 0);
    assert_float_equal(out[3], 1.0 - 300.0 / 4095.0, 1e-6);
    assert_float_equal(out[0], 1.0, 1e-7);
    dicom_free(&d);
    free(buf);
    image_free(&im);
}

/* ---- corrupt, truncated and hostile inputs ---- */

static void test_truncated_everywhere(void **s) {
    (void)s;
    const char *files[] = {FIX "explicit_le.dcm", FIX "implicit_le.dcm", FIX "sequences.dcm", FIX "sequences_implicit.dcm",
                           FIX "j2k.dcm", FIX "deflated_le.dcm", FIX "signed.dcm"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        size_t n;
        uint8_t *full = slurp(files[f], &n);
        Dicom ref;
        read_ok(files[f], &ref);
        size_t npx = (size_t)ref.info.rows * ref.info.cols;
        for (size_t cut = 0; cut < n; cut++) {
            uint8_t *b = malloc(cut ? cut : 1);   /* exact-size copy so ASan sees any overread */
            memcpy(b, full, cut);
            Dicom d;
            Err e = {{0}};
            if (dicom_read_mem(b, cut, "cut.dcm", &d, 0, &e) == 0) {
                /* only a cut through trailing padding after a complete deflate stream may parse,
                 * and then it must give exactly the full file's pixels */
                if (!strstr(files[f], "deflated") || cut + 8 < n) fail_msg("%s cut at %zu parsed", files[f], cut);
                assert_memory_equal(d.pixels, ref.pixels, npx * sizeof(int32_t));
                dicom_free(&d);
            } else {
                assert_true(strncmp(e.msg, "cut.dcm: ", 9) == 0);
            }
            free(b);
        }
        dicom_free(&ref);
        free(full);
    }
    Dicom d;
    Err e;
    assert_int_not_equal(dicom_read("tests/data/fixtures/does_not_exist.dcm", &d, &e), 0);
    assert_string_equal(e.msg, "tests/data/fixtures/does_not_exist.dcm: no such file");
}

/* Offset of the first occurrence of an explicit-VR element header (tag + VR). */
static size_t find_elem(const uint8_t *b, size_t n, uint16_t g, uint16_t el, const char *vr) {
    for (size_t i = 132; i + 6 <= n; i++)
        if (b[i] == (g & 0xFF) && b[i + 1] == (g >> 8) && b[i + 2] == (el & 0xFF) && b[i + 3] == (el >> 8) &&
            b[i + 4] == vr[0] && b[i + 5] == vr[1])
            return i;
    fail_msg("element (%04X,%04X) not found", g, el);
    return 0;
}

static void test_absurd_lengths(void **s) {
    (void)s;
    size_t n;
    uint8_t *orig = slurp(FIX "explicit_le.dcm", &n);
    uint8_t *b = malloc(n);
    Dicom d;
    Err e;

    /* Pixel Data length 0xFFFFFFF0 */
    memcpy(b, orig, n);
    size_t p = find_elem(b, n, 0x7FE0, 0x0010, "OW");
    b[p + 8] = 0xF0; b[p + 9] = 0xFF; b[p + 10] = 0xFF; b[p + 11] = 0xFF;
    assert_int_not_equal(dicom_read_mem(b, n, "big.dcm", &d, 0, &e), 0);
    assert_non_null(strstr(e.msg, "big.dcm: truncated DICOM"));

    /* Rows = Columns = 65535 with the original 48 pixel bytes: refused before allocating */
    memcpy(b, orig, n);
    p = find_elem(b, n, 0x0028, 0x0010, "US");
    b[p + 8] = 0xFF; b[p + 9] = 0xFF;
    p = find_elem(b, n, 0x0028, 0x0011, "US");
    b[p + 8] = 0xFF; b[p + 9] = 0xFF;
    assert_int_not_equal(dicom_read_mem(b, n, "huge.dcm", &d, 0, &e), 0);
    assert_non_null(strstr(e.msg, "huge.dcm: image too large"));

    /* Rows = 5 (one row more than stored) -> truncated pixel data */
    memcpy(b, orig, n);
    p = find_elem(b, n, 0x0028, 0x0010, "US");
    b[p + 8] = 5;
    assert_int_not_equal(dicom_read_mem(b, n, "short.dcm", &d, 0, &e), 0);
    assert_non_null(strstr(e.msg, "short.dcm: truncated pixel data"));

    /* a 16-bit length of a short element running past the end */
    memcpy(b, orig, n);
    p = find_elem(b, n, 0x0010, 0x0020, "LO");
    b[p + 6] = 0xFF; b[p + 7] = 0xFF;
    assert_int_not_equal(dicom_read_mem(b, n, "len.dcm", &d, 0, &e), 0);
    assert_non_null(strstr(e.msg, "len.dcm: truncated DICOM: element (0010,0020)"));

    /* garbage VR */
    memcpy(b, orig, n);
    p = find_elem(b, n, 0x0010, 0x0020, "LO");
    b[p + 4] = 'Z'; b[p + 5] = 'Z';
    assert_int_not_equal(dicom_read_mem(b, n, "vr.dcm", &d, 0, &e), 0);
    assert_non_null(strstr(e.msg, "vr.dcm: corrupt DICOM: invalid VR"));

    /* BitsStored > BitsAllocated */
    memcpy(b, orig, n);
    p = find_elem(b, n, 0x0028, 0x0101, "US");
    b[p + 8] = 17;
    assert_int_not_equal(dicom_read_mem(b, n, "bits.dcm", &d, 0, &e), 0);
    assert_non_null(strstr(e.msg, "bits.dcm: BitsStored 17"));

    /* not DICOM at all */
    const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13};
    assert_int_not_equal(dicom_read_mem(png, sizeof png, "x.png", &d, 0, &e), 0);
    assert_non_null(strstr(e.msg, "x.png: not a DICOM file"));
    free(b);
    free(orig);
}

/* 200 nested undefined-length sequences must hit the depth limit, not the stack. */
static void test_nesting_bomb(void **s) {
    (void)s;
    size_t cap = 132 + 200 * 20 + 64, n = 0;
    uint8_t *b = calloc(cap, 1);
    memcpy(b + 128, "DICM", 4);
    n = 132;
    for (int i = 0; i < 200; i++) {
        const uint8_t sq[12] = {0x08, 0x00, 0x15, 0x11, 'S', 'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF};   /* (0008,1115) */
        const uint8_t item[8] = {0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF};
        memcpy(b + n, sq, 12);
        memcpy(b + n + 12, item, 8);
        n += 20;
    }
    Dicom d;
    Err e;
    assert_int_not_equal(dicom_read_mem(b, n, "bomb.dcm", &d, 0, &e), 0);
    assert_non_null(strstr(e.msg, "bomb.dcm: corrupt DICOM: sequences nested deeper"));
    free(b);
}

/* Deterministic byte mutations of every fixture: must never crash (ASan checks reads). */
static void test_mutations(void **s) {
    (void)s;
    const char *files[] = {FIX "explicit_le.dcm", FIX "implicit_le.dcm", FIX "sequences.dcm", FIX "j2k.dcm",
                           FIX "deflated_le.dcm", FIX "signed.dcm", FIX "sigmoid8.dcm"};
    Rng r;
    rng_init(&r, 99);
    int parsed = 0, failed = 0;
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        size_t n;
        uint8_t *orig = slurp(files[f], &n);
        uint8_t *b = malloc(n);
        for (int t = 0; t < 400; t++) {
            memcpy(b, orig, n);
            int k = 1 + (int)rng_below(&r, 4);
            for (int j = 0; j < k; j++) {
                size_t at = 128 + rng_below(&r, (uint32_t)(n - 128));
                uint32_t kind = rng_below(&r, 3);
                b[at] = kind == 0 ? (uint8_t)rng_u32(&r) : kind == 1 ? 0xFF : 0x00;
            }
            Dicom d;
            Err e;
            if (dicom_read_mem(b, n, "mut.dcm", &d, 0, &e) == 0) {
                Image im;
                if (dicom_render(&d, NULL, &im, &e) == 0) image_free(&im);
                dicom_free(&d);
                parsed++;
            } else {
                assert_true(strncmp(e.msg, "mut.dcm: ", 9) == 0);
                failed++;
            }
        }
        free(b);
        free(orig);
    }
    assert_true(failed > 0 && parsed > 0);   /* both outcomes exercised */
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_explicit_le),
        cmocka_unit_test(test_implicit_le),
        cmocka_unit_test(test_deflated_le),
        cmocka_unit_test(test_no_preamble),
        cmocka_unit_test(test_monochrome1),
        cmocka_unit_test(test_signed_linear_exact),
        cmocka_unit_test(test_sigmoid_8bit),
        cmocka_unit_test(test_voi_functions),
        cmocka_unit_test(test_sequences_explicit),
        cmocka_unit_test(test_sequences_implicit),
        cmocka_unit_test(test_jpeg2000),
        cmocka_unit_test(test_unsupported_syntax),
        cmocka_unit_test(test_header_only_and_load_image),
        cmocka_unit_test(test_header_past_prefix),
        cmocka_unit_test(test_writer_roundtrip),
        cmocka_unit_test(test_writer_rejects),
        cmocka_unit_test(test_padding_and_full_window),
        cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_absurd_lengths),
        cmocka_unit_test(test_nesting_bomb),
        cmocka_unit_test(test_mutations),
    };
    return RUN_GROUP(tests);
}
