/* test_fuzz_regressions.c — every fuzz target's code, built with the normal library, replayed on
 * (1) the inputs that made a fuzzer or the limits audit find a bug (tests/fuzz/regressions/
 * <target>/, one file per bug; docs/robustness.md lists them) and (2) the committed seed corpus
 * (tests/fuzz/corpus/<target>/).  A target checks its own properties and aborts on a violation,
 * so a crash here is a regression; under `make asan` the same replay runs with ASan + UBSan.
 * Then, for each bug, the outcome the fix promises, asserted directly: the clear error a hostile
 * file must now produce (a replay alone cannot fail without a sanitizer). */
#include "tests/common/testutil.h"

/* the targets themselves (FUZZ_TARGET is empty outside the libFuzzer build) */
#include "tests/fuzz/fuzz_cbis.c"
#include "tests/fuzz/fuzz_checkpoint.c"
#include "tests/fuzz/fuzz_cmmd.c"
#include "tests/fuzz/fuzz_config.c"
#include "tests/fuzz/fuzz_csv.c"
#include "tests/fuzz/fuzz_dicom.c"
#include "tests/fuzz/fuzz_embed.c"
#include "tests/fuzz/fuzz_features.c"
#include "tests/fuzz/fuzz_image.c"
#include "tests/fuzz/fuzz_inbreast.c"
#include "tests/fuzz/fuzz_manifest.c"
#include "tests/fuzz/fuzz_mias.c"
#include "tests/fuzz/fuzz_prepared.c"
#include "tests/fuzz/fuzz_rsna.c"
#include "tests/fuzz/fuzz_vindr.c"
#include "tests/fuzz/fuzz_vqa.c"
#include "tests/fuzz/fuzz_xlsx.c"

typedef struct Target {
    const char *name;
    int (*fn)(const uint8_t *, size_t);
} Target;

static const Target TARGETS[] = {
    {"cbis", fuzz_cbis},         {"checkpoint", fuzz_checkpoint}, {"cmmd", fuzz_cmmd},   {"config", fuzz_config},
    {"csv", fuzz_csv},           {"dicom", fuzz_dicom},           {"embed", fuzz_embed}, {"image", fuzz_image},
    {"features", fuzz_features},
    {"inbreast", fuzz_inbreast}, {"manifest", fuzz_manifest},     {"mias", fuzz_mias},   {"prepared", fuzz_prepared},
    {"rsna", fuzz_rsna},         {"vindr", fuzz_vindr},           {"vqa", fuzz_vqa},     {"xlsx", fuzz_xlsx},
};
#define N_TARGETS (sizeof TARGETS / sizeof TARGETS[0])

static uint8_t *read_all(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long sz = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)sz + 1);
    assert_non_null(b);
    *n = fread(b, 1, (size_t)sz, f);
    fclose(f);
    assert_int_equal(*n, (size_t)sz);
    return b;
}

/* Runs every file of dir through fn; returns how many. */
static int replay_dir(const char *dir, const Target *t) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        size_t len;
        uint8_t *buf = read_all(path, &len);
        assert_int_equal(t->fn(buf, len), 0);
        free(buf);
        n++;
    }
    closedir(d);
    return n;
}

static void test_replay_regressions(void **st) {
    (void)st;
    int total = 0;
    for (size_t k = 0; k < N_TARGETS; k++) {
        char dir[256];
        snprintf(dir, sizeof dir, "tests/fuzz/regressions/%s", TARGETS[k].name);
        total += replay_dir(dir, &TARGETS[k]);
    }
    print_message("replayed %d regression inputs\n", total);
    assert_true(total >= 31);
}

static void test_replay_corpus(void **st) {
    (void)st;
    for (size_t k = 0; k < N_TARGETS; k++) {
        char dir[256];
        snprintf(dir, sizeof dir, "tests/fuzz/corpus/%s", TARGETS[k].name);
        int n = replay_dir(dir, &TARGETS[k]);
        if (n == 0) fail_msg("no seed corpus for target %s", TARGETS[k].name);
    }
}

/* ---- the fixes, one outcome each ---- */

static void regression_path(char *out, size_t n, const char *target, const char *name) {
    snprintf(out, n, "tests/fuzz/regressions/%s/%s", target, name);
}

/* builds the described HDF5 file of a regression input; returns its path */
static const char *build_h5(const char *target, const char *name) {
    static char out[1024];
    char in[512];
    regression_path(in, sizeof in, target, name);
    size_t len;
    uint8_t *buf = read_all(in, &len);
    fuzz_join(out, sizeof out, fuzz_tmpdir(), "regression.h5");
    assert_int_equal(h5f_build(buf, len, out), 1);
    free(buf);
    return out;
}

static void expect_prep_error(const char *name, const char *needle) {
    Prepared p;
    Err e = {{0}};
    const char *path = build_h5("prepared", name);
    if (prep_open(&p, path, &e) == 0) fail_msg("%s: prep_open accepted it", name);
    print_message("%s -> %s\n", name, e.msg);
    if (!strstr(e.msg, needle)) fail_msg("%s: message '%s' lacks '%s'", name, e.msg, needle);
    h5f_check_closed(name);
}

/* Attributes of several values were read into one variable (stack / heap overflow): now they
 * are refused like a missing attribute. */
static void test_prepared_array_attributes(void **st) {
    (void)st;
    expect_prep_error("version_attr_array", "attribute 'version'");
    expect_prep_error("format_attr_array", "attribute 'format'");
    expect_prep_error("label_names_vlen_array", "'label_names'");
}

/* n samples declared over unwritten chunked datasets (a 1 KB file): 2^28 is beyond the sample
 * limit; 2^22 is within it, but its tables (~1 GB of ids) are not backed by the file — refused
 * before any allocation instead of reading gigabytes of fill values */
static void test_prepared_unbacked_sizes(void **st) {
    (void)st;
    expect_prep_error("huge_n_unbacked", "bad root attributes (n 268435456");
    expect_prep_error("n_4m_unbacked", "declares more data than the file holds");
}

/* a 64-character NUL-padded patient id fills its field: the reader terminates it */
static void test_prepared_ids_terminated(void **st) {
    (void)st;
    Prepared p;
    Err e = {{0}};
    const char *path = build_h5("prepared", "patient_id_unterminated");
    if (prep_open(&p, path, &e)) fail_msg("%s", e.msg);
    assert_int_equal(strlen(prep_patient(&p, 0)), PREP_PATIENT_LEN - 1);
    assert_int_equal(strlen(prep_patient(&p, 1)), PREP_PATIENT_LEN - 1);
    assert_string_equal(prep_image_id(&p, 1), "b/c.dcm");
    prep_close(&p);
}

static void expect_ckpt_error(const char *name, const char *needle) {
    ParamStore s, t;
    fuzz_ckpt_declare(&s, 0);
    fuzz_ckpt_declare(&t, 1);
    float center[5];
    CkptStore stores[2] = {{.prefix = "student.", .ps = &s, .with_optim = 1}, {.prefix = "teacher.", .ps = &t}};
    CkptExtra extra[1] = {{"dino_center", center, 5}};
    CkptMeta meta;
    char config[256];
    Err e = {{0}};
    const char *path = build_h5("checkpoint", name);
    int rc = ckpt_load_stores(path, stores, 2, &meta, config, sizeof config, extra, 1, &e);
    print_message("%s -> rc %d, %s (buf_left %d)\n", name, rc, e.msg, rc ? -1 : meta.rng.buf_left);
    if (needle) {
        assert_int_equal(rc, 1);
        if (!strstr(e.msg, needle)) fail_msg("%s: message '%s' lacks '%s'", name, e.msg, needle);
    } else {   /* a malformed optional attribute falls back to the documented default */
        assert_int_equal(rc, 0);
        assert_int_equal(meta.step, 7);
        assert_int_equal(meta.rng.buf_left, 0);
    }
    params_free(&s);
    params_free(&t);
    h5f_check_closed(name);
}

/* step / rng_buf / config attributes with more values than the reader's variable */
static void test_checkpoint_array_attributes(void **st) {
    (void)st;
    expect_ckpt_error("step_attr_array", "missing training state");
    expect_ckpt_error("config_attr_array", "cannot read the config attribute");
    expect_ckpt_error("rng_buf_9_values", NULL);
}

/* 100000 empty header fields over 1400 one-field rows: 140 M padded cells (1.1 GB of pointers
 * from a 100 KB file) before the limit; now one line naming the table size */
static void test_csv_cell_limit(void **st) {
    (void)st;
    char path[256];
    regression_path(path, sizeof path, "csv", "wide_header_short_rows");
    size_t n;
    uint8_t *buf = read_all(path, &n);
    Csv c;
    Err e = {{0}};
    assert_int_equal(csv_parse((const char *)buf, n, "wide.csv", ',', &c, &e), 1);
    print_message("%s\n", e.msg);
    assert_non_null(strstr(e.msg, "1400 rows x 100000 columns"));
    free(buf);
}

static void expect_xlsx_error(const char *name, const char *needle) {
    char in[256], path[1024];
    regression_path(in, sizeof in, "xlsx", name);
    size_t n;
    uint8_t *buf = read_all(in, &n);
    FuzzParts fp;
    fuzz_split(buf, n, &fp);
    ZipEntry ent[2] = {{"xl/sharedStrings.xml", fp.p[0], fp.n[0], 1}, {"xl/worksheets/sheet1.xml", fp.p[1], fp.n[1], 0}};
    ZipBuf z = {0};
    zip_build(ent, 2, &z);
    fuzz_join(path, sizeof path, fuzz_tmpdir(), "regression.xlsx");
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    fwrite(z.b, 1, z.n, f);
    fclose(f);
    Csv c;
    Err e = {{0}};
    assert_int_equal(xlsx_read(path, &c, &e), 1);
    print_message("%s -> %s\n", name, e.msg);
    if (!strstr(e.msg, needle)) fail_msg("%s: message '%s' lacks '%s'", name, e.msg, needle);
    free(z.b);
    free(buf);
}

/* <row r="2000000000"> wrote two billion newlines; r="ZZZZZZZZZZ1" overflowed an int */
static void test_xlsx_sheet_limits(void **st) {
    (void)st;
    expect_xlsx_error("row_number_2e9", "row number '2000000000' outside 1..1048576");
    expect_xlsx_error("column_ref_overflow", "beyond column XFD");
}

/* A Mass polygon with NaN / 1e30 vertices (INbreast XML) and a MIAS circle of radius 1e30: the
 * float -> int casts of the rasteriser were undefined; now the conversion succeeds, the
 * non-finite polygon fills nothing and the huge circle fills its whole image. */
static void test_converter_huge_shapes(void **st) {
    (void)st;
    const struct {
        const char *target, *name;
        int (*fn)(const uint8_t *, size_t);
    } cases[] = {{"inbreast", "polygon_nan_huge", fuzz_inbreast}, {"mias", "circle_huge", fuzz_mias}};
    for (size_t k = 0; k < 2; k++) {
        char in[256];
        regression_path(in, sizeof in, cases[k].target, cases[k].name);
        size_t n;
        uint8_t *buf = read_all(in, &n);
        assert_int_equal(cases[k].fn(buf, n), 0);   /* converts, output checked by the harness */
        free(buf);
    }
    /* and directly: the MIAS circle covers the (cropped, resized) image */
    char root[1024], out[1100];
    fuzz_join(root, sizeof root, fuzz_tmpdir(), "mias");
    fuzz_join(out, sizeof out, fuzz_tmpdir(), "mias_check.h5");
    ConvertOpts o = convert_opts_default();
    o.raw_root = root;
    o.out_path = out;
    o.width = 16;
    o.height = 12;
    o.bits = 8;
    o.on_missing = CONVERT_SKIP;
    ConvertStats cs;
    Err e = {{0}};
    if (convert_mias(&o, &cs, &e)) fail_msg("%s", e.msg);
    Prepared p;
    if (prep_open(&p, out, &e)) fail_msg("%s", e.msg);
    uint8_t m[16 * 12];
    size_t i0 = 0;
    while (i0 < p.n && strcmp(prep_image_id(&p, i0), "mdb001")) i0++;
    assert_true(i0 < p.n);
    assert_int_equal(prep_read_mask(&p, i0, m, &e), 0);
    for (size_t k = 0; k < sizeof m; k++) assert_int_equal(m[k], 1);
    prep_close(&p);
    unlink(out);
}

/* stb_image 2.27 bugs reached through image_load_mem (found by fuzz_image): a PPM header number
 * past INT_MAX (signed overflow in stb's header reader) and a JPEG whose SOI follows a 0xFF fill
 * byte, which skipped the Huffman-table guard (stb then indexes past its 257-entry table) */
static void test_image_stb_guards(void **st) {
    (void)st;
    const struct {
        const char *name, *needle;
    } cases[] = {{"ppm_header_int_overflow", "corrupt PPM header"},
                 /* both JPEG bugs were stb 2.27's; JPEG now goes to libjpeg-turbo (data/jpeg.c) */
                 {"jpeg_fill_byte_soi_huffman", "corrupt or truncated image (JPEG: "},
                 {"jpeg_bit_buffer_shift_33", "corrupt or truncated image (JPEG: "},
                 /* both PNG inputs end in a chunk whose length runs past the file: refused before stb
                  * (the empty-IDAT path itself is tested on a valid file in test_image) */
                 {"png_empty_first_idat_null_offset", "a PNG chunk runs past the end of the file"},
                 {"png_chunk_length_2gib_idat_buffer", "a PNG chunk runs past the end of the file"},
                 /* fix 20's first version recursed forever on an empty IDAT whose CRC is cut off */
                 {"png_empty_idat_without_crc_recursion", "unsupported or unrecognised image format"}};
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        char in[256];
        regression_path(in, sizeof in, "image", cases[k].name);
        size_t n;
        uint8_t *buf = read_all(in, &n);
        Image im;
        Err e = {{0}};
        assert_int_equal(image_load_mem(buf, n, cases[k].name, &im, &e), 1);
        print_message("%s\n", e.msg);
        if (!strstr(e.msg, cases[k].needle)) fail_msg("'%s' lacks '%s'", e.msg, cases[k].needle);
        free(buf);
    }
}

/* student.patch_size=0 divided by zero in ssl_config_from (found by fuzz_config) */
static void test_config_patch_size_zero(void **st) {
    (void)st;
    Config c;
    cfg_init(&c);
    Err e = {{0}};
    assert_int_equal(cfg_declare(&c, PRETRAIN_KEYS, PRETRAIN_N_KEYS, &e), 0);
    assert_int_equal(cfg_override(&c, "student.patch_size=0", 0, &e), 0);
    SslConfig s;
    assert_int_equal(ssl_config_from(&c, &s, &e), 1);
    print_message("%s\n", e.msg);
    assert_non_null(strstr(e.msg, "student.patch_size: 0"));
    cfg_free(&c);
}

/* the features file a regression input describes must be refused with this message */
static void features_refused(const char *name, int which, const char *want) {
    char in[256], path[1024];
    regression_path(in, sizeof in, "features", name);
    size_t n;
    uint8_t *buf = read_all(in, &n);
    fuzz_join(path, sizeof path, fuzz_tmpdir(), "features_regression.h5");
    assert_int_equal(h5f_build(buf, n, path), 1);
    free(buf);
    TeacherFeatures tf;
    Err e = {{0}};
    assert_int_equal(teacher_features_load(path, which, 4, &tf, &e), 1);
    print_message("%s\n", e.msg);
    assert_non_null(strstr(e.msg, want));
    unlink(path);
}

/* teacher_features_load (found by the limits audit): a 2^31 x 2^31 never-written dataset made
 * (n * d + 1) * 4 wrap to 4 bytes, and H5Dread then filled 2^62 floats into them */
static void test_features_dims_overflow(void **st) {
    (void)st;
    features_refused("dims_overflow_unbacked", TFEAT_CLS, "'/cls' has 2147483648 rows but the prepared file has 4 samples");
    features_refused("dims_overflow_unbacked", TFEAT_GAP, "'/gap' has 1073741824 values per row (at most 65536)");
}

/* teacher_features_load (found by fuzz_features): a '/sample' value of -1 was converted to size_t
 * before the range check (undefined behaviour); it must be refused with the row named */
static void test_features_sample_index_negative(void **st) {
    (void)st;
    features_refused("sample_index_negative_float", TFEAT_CLS, "'/sample' row 1: -1 is not a new sample index below 4");
}

/* teacher_features_load (found by fuzz_features): a (4, 0) '/gap' loaded as 4 features of width 0
 * (stage 2 would take cosines of empty vectors); a '/sample' of two columns would have been read
 * as its first four values, and one of zero columns past its buffer */
static void test_features_zero_width(void **st) {
    (void)st;
    features_refused("gap_zero_width", TFEAT_GAP, "'/gap' has no values per row");
    features_refused("gap_zero_width_fuzzed", TFEAT_GAP, "'/gap' has no values per row");
    features_refused("sample_two_columns", TFEAT_CLS, "'/sample' has 2 values per row, expected one sample index");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_replay_regressions),
        cmocka_unit_test(test_features_sample_index_negative),
        cmocka_unit_test(test_replay_corpus),
        cmocka_unit_test(test_prepared_array_attributes),
        cmocka_unit_test(test_prepared_unbacked_sizes),
        cmocka_unit_test(test_prepared_ids_terminated),
        cmocka_unit_test(test_checkpoint_array_attributes),
        cmocka_unit_test(test_csv_cell_limit),
        cmocka_unit_test(test_xlsx_sheet_limits),
        cmocka_unit_test(test_converter_huge_shapes),
        cmocka_unit_test(test_image_stb_guards),
        cmocka_unit_test(test_config_patch_size_zero),
        cmocka_unit_test(test_features_dims_overflow),
        cmocka_unit_test(test_features_zero_width),
    };
    return cmocka_run_group_tests_name(__FILE__, tests, NULL, NULL);
}
