/* test_prepared.c — the prepared HDF5 format: write/read round trip (8/16 bit, gzip on/off,
 * masks, boxes, labels), concurrent reads, truncated / foreign / incomplete / corrupt files,
 * patient-disjoint split assignment, corpora. */
#include "tests/common/testutil.h"
#include "data/prepared.h"

#include <hdf5.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define W 24
#define H 20
#define N 7

static char tmpdir[256];

static int setup(void **state) {
    (void)state;
    snprintf(tmpdir, sizeof tmpdir, "/tmp/versa_test_prepared_XXXXXX");
    assert_non_null(mkdtemp(tmpdir));
    return 0;
}

static int teardown(void **state) {
    (void)state;
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : 1;
}

static void tpath(char *out, const char *name) { snprintf(out, 512, "%s/%s", tmpdir, name); }

/* deterministic content for sample i */
static uint16_t px_value(int i, int y, int x) { return (uint16_t)((i * 7919 + y * 131 + x * 17) % 65536); }

typedef struct Expect {
    PrepBox boxes[N][3];
    int nb[N];
} Expect;

static void write_file(const char *path, int bits, int gzip, int with_masks, Expect *ex) {
    PrepSchema s = {.dataset = "unit", .source = "/raw", .preprocess = "none", .height = H, .width = W, .bits = bits,
                    .gzip = gzip, .has_masks = with_masks, .n_labels = 2,
                    .labels = {{"density", PREP_CLASSES_DENSITY}, {"pathology", PREP_CLASSES_PATHOLOGY}},
                    .findings = "mass\ncalc\nasym", .box_labels = "pathology"};
    PrepWriter *w;
    Err e;
    assert_int_equal(prep_writer_open(&w, path, &s, &e), 0);
    static uint16_t p16[H * W];
    static uint8_t p8[H * W], m[H * W];
    for (int i = 0; i < N; i++) {
        for (int y = 0; y < H; y++)
            for (int x = 0; x < W; x++) {
                p16[y * W + x] = px_value(i, y, x);
                p8[y * W + x] = (uint8_t)(px_value(i, y, x) & 255);
                m[y * W + x] = (uint8_t)(x >= i && x < i + 5 && y >= 2 && y < 9);
            }
        int32_t labels[2] = {i % 4, i == 3 ? -1 : i % 3};
        uint8_t findings[3] = {(uint8_t)(i & 1), (uint8_t)(i % 3 == 0), 0};
        ex->nb[i] = i % 4;
        for (int k = 0; k < ex->nb[i]; k++) {
            /* values[0] (density) is not a box label: the 0 it holds here must read back as -1 */
            ex->boxes[i][k] = (PrepBox){1.5f * k, 2.0f + i, 10.0f + k, 12.25f + i, k % 3 - (k == 2 ? 3 : 0), {0}};
            ex->boxes[i][k].values[1] = (i + k) % 3 - 1;   /* pathology -1..1 */
        }
        char pid[32], iid[32];
        snprintf(pid, sizeof pid, "patient_%d", i / 2);
        snprintf(iid, sizeof iid, "img/%03d.dcm", i);
        PrepSample smp = {.pixels = bits == 8 ? (void *)p8 : (void *)p16,
                          .mask = (with_masks && i != 5) ? m : NULL,
                          .labels = labels, .findings = findings,
                          .boxes = ex->boxes[i], .n_boxes = ex->nb[i],
                          .view = i % 3 == 2 ? PREP_VIEW_OTHER : i % 2, .laterality = i % 2 ? PREP_LAT_R : PREP_LAT_L,
                          .split = i % 3, .patient_id = pid, .image_id = iid,
                          .orig_h = 100 + i, .orig_w = 80 + i,
                          .transform = {1, 2, 3, 4, (float)(i & 1), 0.5f, 0.25f}};
        assert_int_equal(prep_writer_add(w, &smp, &e), 0);
    }
    assert_int_equal(prep_writer_close(w, &e), 0);
}

static void check_file(const char *path, int bits, int with_masks, const Expect *ex) {
    Prepared p;
    Err e;
    int rc = prep_open(&p, path, &e);
    if (rc) fail_msg("%s", e.msg);
    assert_int_equal(p.n, N);
    assert_int_equal(p.h, H);
    assert_int_equal(p.w, W);
    assert_int_equal(p.bits, bits);
    assert_int_equal(p.max_value, bits == 8 ? 255 : 65535);
    assert_string_equal(p.dataset, "unit");
    assert_int_equal(p.n_labels, 2);
    assert_string_equal(p.label_names[1], "pathology");
    assert_int_equal(p.n_classes[0], 4);
    assert_string_equal(p.class_names[1][2], "malignant");
    assert_int_equal(p.n_findings, 3);
    assert_string_equal(p.finding_names[2], "asym");
    assert_int_equal(prep_label_col(&p, "pathology"), 1);
    assert_int_equal(prep_label_col(&p, "birads"), -1);
    uint16_t img16[H * W];
    uint8_t img8[H * W], m[H * W];
    float f[H * W];
    for (int i = 0; i < N; i++) {
        assert_int_equal(prep_read_image(&p, (size_t)i, bits == 8 ? (void *)img8 : (void *)img16, &e), 0);
        assert_int_equal(prep_read_image_f32(&p, (size_t)i, f, &e), 0);
        for (int k = 0; k < H * W; k++) {
            uint16_t want = px_value(i, k / W, k % W);
            if (bits == 8) want &= 255;
            assert_int_equal(bits == 8 ? img8[k] : img16[k], want);
            assert_float_equal(f[k], (float)want / (float)p.max_value, 1e-7);
        }
        assert_int_equal(prep_read_mask(&p, (size_t)i, m, &e), 0);
        for (int k = 0; k < H * W; k++) {
            int x = k % W, y = k / W;
            int want = with_masks && i != 5 && x >= i && x < i + 5 && y >= 2 && y < 9;
            assert_int_equal(m[k], want);
        }
        if (with_masks) assert_int_equal(p.mask_present[i], i != 5);
        else assert_null(p.mask_present);
        assert_int_equal(prep_label(&p, (size_t)i, 0), i % 4);
        assert_int_equal(prep_label(&p, (size_t)i, 1), i == 3 ? -1 : i % 3);
        assert_int_equal(p.findings[i * 3 + 0], i & 1);
        assert_int_equal(p.findings[i * 3 + 1], i % 3 == 0);
        assert_int_equal(p.view[i], i % 3 == 2 ? PREP_VIEW_OTHER : i % 2);
        assert_int_equal(p.laterality[i], i % 2);
        assert_int_equal(p.split[i], i % 3);
        char pid[32], iid[32];
        snprintf(pid, sizeof pid, "patient_%d", i / 2);
        snprintf(iid, sizeof iid, "img/%03d.dcm", i);
        assert_string_equal(prep_patient(&p, (size_t)i), pid);
        assert_string_equal(prep_image_id(&p, (size_t)i), iid);
        assert_int_equal(p.orig_size[2 * i], 100 + i);
        assert_float_equal(p.transform[7 * i + 4], (float)(i & 1), 0);
        assert_float_equal(p.transform[7 * i + 6], 0.25f, 0);
        assert_int_equal(prep_n_boxes(&p, (size_t)i), ex->nb[i]);
        const PrepBox *b = prep_sample_boxes(&p, (size_t)i);
        for (int k = 0; k < ex->nb[i]; k++) {
            assert_memory_equal(&b[k], &ex->boxes[i][k], 4 * sizeof(float));
            int want = ex->boxes[i][k].label;
            assert_int_equal(b[k].label, want < -1 || want >= 3 ? -1 : want);
            assert_int_equal(b[k].values[1], (i + k) % 3 - 1);
            assert_int_equal(b[k].values[0], -1);
            assert_int_equal(b[k].values[PREP_MAX_LABELS - 1], -1);
        }
    }
    Err e2;
    assert_int_equal(prep_read_image(&p, N, img16, &e2), 1);
    assert_non_null(strstr(e2.msg, "out of range"));
    prep_close(&p);
}

static void test_round_trip(void **state) {
    (void)state;
    struct { int bits, gzip, masks; } v[] = {{16, 4, 1}, {8, 0, 1}, {16, 0, 0}, {8, 9, 0}};
    for (int k = 0; k < 4; k++) {
        char path[512];
        char name[64];
        snprintf(name, sizeof name, "rt_%d_%d_%d.h5", v[k].bits, v[k].gzip, v[k].masks);
        tpath(path, name);
        Expect ex;
        write_file(path, v[k].bits, v[k].gzip, v[k].masks, &ex);
        char tmp[600];
        snprintf(tmp, sizeof tmp, "%s.tmp", path);
        assert_int_equal(access(tmp, F_OK), -1);   /* renamed into place */
        check_file(path, v[k].bits, v[k].masks, &ex);
    }
}

/* ---- concurrent readers ---- */

typedef struct ThreadArg {
    const Prepared *p;
    int errors;
} ThreadArg;

static void *reader(void *arg) {
    ThreadArg *a = arg;
    uint16_t img[H * W];
    for (int rep = 0; rep < 50; rep++)
        for (int i = 0; i < N; i++) {
            Err e;
            if (prep_read_image(a->p, (size_t)i, img, &e)) a->errors++;
            for (int k = 0; k < H * W; k++)
                if (img[k] != px_value(i, k / W, k % W)) a->errors++;
        }
    return NULL;
}

static void test_concurrent_reads(void **state) {
    (void)state;
    char path[512];
    tpath(path, "mt.h5");
    Expect ex;
    write_file(path, 16, 6, 1, &ex);
    Prepared p;
    Err e;
    assert_int_equal(prep_open(&p, path, &e), 0);
    pthread_t th[4];
    ThreadArg a[4];
    for (int k = 0; k < 4; k++) {
        a[k] = (ThreadArg){&p, 0};
        pthread_create(&th[k], NULL, reader, &a[k]);
    }
    for (int k = 0; k < 4; k++) {
        pthread_join(th[k], NULL);
        assert_int_equal(a[k].errors, 0);
    }
    prep_close(&p);
}

/* ---- broken files ---- */

static void copy_prefix(const char *src, const char *dst, long nbytes) {
    FILE *f = fopen(src, "rb"), *g = fopen(dst, "wb");
    assert_non_null(f);
    assert_non_null(g);
    char buf[4096];
    long left = nbytes;
    size_t r;
    while (left > 0 && (r = fread(buf, 1, left < 4096 ? (size_t)left : 4096, f)) > 0) {
        fwrite(buf, 1, r, g);
        left -= (long)r;
    }
    fclose(f);
    fclose(g);
}

static long file_size(const char *p) {
    FILE *f = fopen(p, "rb");
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fclose(f);
    return n;
}

static void expect_open_error(const char *path, const char *needle) {
    Prepared p;
    Err e = {{0}};
    assert_int_equal(prep_open(&p, path, &e), 1);
    print_message("  %s\n", e.msg);
    if (!strstr(e.msg, path)) fail_msg("error does not name the file: %s", e.msg);
    if (!strstr(e.msg, needle)) fail_msg("error '%s' lacks '%s'", e.msg, needle);
}

static void test_truncated_and_foreign_files(void **state) {
    (void)state;
    char good[512], bad[512];
    tpath(good, "good.h5");
    Expect ex;
    write_file(good, 16, 4, 1, &ex);
    long n = file_size(good);
    long cuts[] = {n / 2, n - 100, 600, 8};
    for (int k = 0; k < 4; k++) {
        tpath(bad, "truncated.h5");
        copy_prefix(good, bad, cuts[k]);
        expect_open_error(bad, "truncated");
    }
    tpath(bad, "text.h5");
    FILE *f = fopen(bad, "w");
    fputs("study_id,image_id\n1,2\n", f);
    fclose(f);
    expect_open_error(bad, "not an HDF5 file");
    tpath(bad, "absent.h5");
    expect_open_error(bad, "no such file");
    /* an HDF5 file that is not a prepared dataset */
    tpath(bad, "other.h5");
    hid_t h = H5Fcreate(bad, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    H5Fclose(h);
    expect_open_error(bad, "not a prepared dataset");
}

static void delete_and_expect(const char *good, const char *obj, const char *needle) {
    char bad[512];
    tpath(bad, "missing.h5");
    copy_prefix(good, bad, file_size(good));
    hid_t h = H5Fopen(bad, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(h >= 0);
    assert_true(H5Ldelete(h, obj, H5P_DEFAULT) >= 0);
    H5Fclose(h);
    expect_open_error(bad, needle);
}

static void test_missing_dataset(void **state) {
    (void)state;
    char good[512];
    tpath(good, "good2.h5");
    Expect ex;
    write_file(good, 16, 4, 1, &ex);
    delete_and_expect(good, "split", "missing dataset '/split'");
    delete_and_expect(good, "images", "missing dataset '/images'");
    delete_and_expect(good, "labels/density", "missing dataset '/labels/density'");
    delete_and_expect(good, "box_offset", "missing dataset '/box_offset'");
    delete_and_expect(good, "mask_present", "missing dataset '/mask_present'");
    /* /box_labels is optional: without it every box value reads as -1 (files from before it);
     * a value outside the label's classes is refused by name */
    char old[512];
    tpath(old, "nobox.h5");
    copy_prefix(good, old, file_size(good));
    hid_t h = H5Fopen(old, H5F_ACC_RDWR, H5P_DEFAULT);
    assert_true(H5Ldelete(h, "box_labels", H5P_DEFAULT) >= 0);
    H5Fclose(h);
    Prepared p;
    Err e;
    assert_int_equal(prep_open(&p, old, &e), 0);
    assert_true(p.n_boxes > 0);
    for (size_t b = 0; b < p.n_boxes; b++) assert_int_equal(p.boxes[b].values[1], -1);
    prep_close(&p);
    copy_prefix(good, old, file_size(good));
    h = H5Fopen(old, H5F_ACC_RDWR, H5P_DEFAULT);
    hid_t d = H5Dopen2(h, "box_labels/pathology", H5P_DEFAULT);
    int32_t v[64];
    assert_true(H5Dread(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    v[0] = 3;   /* pathology has 3 classes */
    assert_true(H5Dwrite(d, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Dclose(d);
    H5Fclose(h);
    expect_open_error(old, "'/box_labels/pathology'[0] = 3 outside [-1, 3)");
}

static void test_corrupt_chunk(void **state) {
    (void)state;
    char path[512];
    tpath(path, "corrupt.h5");
    Expect ex;
    write_file(path, 16, 4, 0, &ex);
    /* find sample 3's compressed chunk and overwrite its middle with garbage */
    hid_t h = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t d = H5Dopen2(h, "images", H5P_DEFAULT);
    hsize_t off[3] = {3, 0, 0};
    unsigned filt;
    haddr_t addr;
    hsize_t size;
    assert_true(H5Dget_chunk_info_by_coord(d, off, &filt, &addr, &size) >= 0);
    H5Dclose(d);
    H5Fclose(h);
    FILE *f = fopen(path, "r+b");
    fseek(f, (long)(addr + size / 3), SEEK_SET);
    for (int k = 0; k < 64; k++) fputc(0xA5 ^ k, f);
    fclose(f);
    Prepared p;
    Err e;
    assert_int_equal(prep_open(&p, path, &e), 0);   /* metadata is intact */
    uint16_t img[H * W];
    assert_int_equal(prep_read_image(&p, 2, img, &e), 0);
    assert_int_equal(prep_read_image(&p, 3, img, &e), 1);
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, path));
    assert_non_null(strstr(e.msg, "sample 3"));
    prep_close(&p);
}

static void test_writer_rejects_bad_input(void **state) {
    (void)state;
    char path[512];
    tpath(path, "bad_w.h5");
    PrepSchema s = {.dataset = "x", .height = H, .width = W, .bits = 12};
    PrepWriter *w;
    Err e;
    assert_int_equal(prep_writer_open(&w, path, &s, &e), 1);
    assert_non_null(strstr(e.msg, "bits"));
    s.bits = 8;
    s.n_labels = 1;
    s.labels[0] = (PrepLabelDef){"density", PREP_CLASSES_DENSITY};
    assert_int_equal(prep_writer_open(&w, path, &s, &e), 0);
    uint8_t px[H * W] = {0};
    int32_t lab = 4;   /* only 4 classes: 0..3 */
    PrepSample smp = {.pixels = px, .labels = &lab, .split = 0, .image_id = "a"};
    assert_int_equal(prep_writer_add(w, &smp, &e), 1);
    assert_non_null(strstr(e.msg, "label 'density' = 4"));
    prep_writer_abort(w);
    /* box labels: a name that is not a label, and a box value outside the classes */
    s.box_labels = "pathology";
    assert_int_equal(prep_writer_open(&w, path, &s, &e), 1);
    assert_non_null(strstr(e.msg, "box label 'pathology' is not one of the labels"));
    s.box_labels = "density";
    assert_int_equal(prep_writer_open(&w, path, &s, &e), 0);
    lab = 1;
    PrepBox box = {0, 0, 4, 4, -1, {0}};
    box.values[0] = 7;
    smp.boxes = &box;
    smp.n_boxes = 1;
    assert_int_equal(prep_writer_add(w, &smp, &e), 1);
    assert_non_null(strstr(e.msg, "box 0: label 'density' = 7"));
    prep_writer_abort(w);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);
    assert_int_equal(access(path, F_OK), -1);
}

/* ---- splits ---- */

static void test_splits_without_source_split(void **state) {
    (void)state;
    enum { NI = 1000 };
    static char ids[NI][16];
    const char *pat[NI];
    int src[NI], sp[NI], sp2[NI], sp3[NI];
    Rng r;
    rng_init(&r, 1);
    for (int i = 0; i < NI; i++) {
        snprintf(ids[i], sizeof ids[i], "P%03u", rng_below(&r, 300));
        pat[i] = ids[i];
        src[i] = -1;
    }
    SplitOpts o = split_opts_default();
    o.seed = 5;
    size_t conflicts;
    assign_splits(pat, src, NI, &o, sp, &conflicts);
    assert_int_equal(conflicts, 0);
    /* one split per patient */
    int seen[300], np = 0, cnt[3] = {0};
    for (int k = 0; k < 300; k++) seen[k] = -1;
    for (int i = 0; i < NI; i++) {
        int pk = atoi(ids[i] + 1);
        if (seen[pk] < 0) {
            seen[pk] = sp[i];
            cnt[sp[i]]++;
            np++;
        }
        assert_int_equal(seen[pk], sp[i]);
    }
    print_message("patients %d: train %d val %d test %d\n", np, cnt[0], cnt[1], cnt[2]);
    assert_int_equal(cnt[0], (int)(np * 0.7 + 0.5));
    assert_int_equal(cnt[0] + cnt[1], (int)(np * 0.8 + 0.5));
    /* deterministic, independent of the input order, seed-dependent */
    const char *pat_rev[NI];
    int src_rev[NI];
    for (int i = 0; i < NI; i++) {
        pat_rev[i] = pat[NI - 1 - i];
        src_rev[i] = -1;
    }
    assign_splits(pat_rev, src_rev, NI, &o, sp2, NULL);
    for (int i = 0; i < NI; i++) assert_int_equal(sp2[NI - 1 - i], sp[i]);
    o.seed = 6;
    assign_splits(pat, src, NI, &o, sp3, NULL);
    int diff = 0;
    for (int i = 0; i < NI; i++) diff += sp3[i] != sp[i];
    assert_true(diff > 100);
}

static void test_splits_respect_source(void **state) {
    (void)state;
    enum { NI = 400 };
    static char ids[NI][16];
    const char *pat[NI];
    int src[NI], sp[NI];
    for (int i = 0; i < NI; i++) {
        int p = i / 4;   /* 100 patients x 4 images */
        snprintf(ids[i], sizeof ids[i], "S%03d", p);
        pat[i] = ids[i];
        src[i] = p < 80 ? PREP_SPLIT_TRAIN : PREP_SPLIT_TEST;
    }
    /* patient 7 has one image marked test: a conflict, resolved to test */
    src[7 * 4 + 2] = PREP_SPLIT_TEST;
    SplitOpts o = split_opts_default();
    size_t conflicts;
    assign_splits(pat, src, NI, &o, sp, &conflicts);
    assert_int_equal(conflicts, 1);
    int val_patients = 0;
    for (int p = 0; p < 100; p++) {
        int s0 = sp[p * 4];
        for (int k = 1; k < 4; k++) assert_int_equal(sp[p * 4 + k], s0);
        if (p >= 80 || p == 7) assert_int_equal(s0, PREP_SPLIT_TEST);
        else assert_true(s0 == PREP_SPLIT_TRAIN || s0 == PREP_SPLIT_VAL);
        val_patients += s0 == PREP_SPLIT_VAL;
    }
    assert_int_equal(val_patients, 8);   /* round(0.1 * 79 source-train patients) */
}

static void test_corpus_size_mismatch(void **state) {
    (void)state;
    char a[512], b[512];
    tpath(a, "ca.h5");
    Expect ex;
    write_file(a, 16, 1, 0, &ex);
    tpath(b, "cb.h5");
    PrepSchema s = {.dataset = "other", .height = 10, .width = 10, .bits = 8};
    PrepWriter *w;
    Err e;
    assert_int_equal(prep_writer_open(&w, b, &s, &e), 0);
    uint8_t px[100] = {0};
    PrepSample smp = {.pixels = px, .split = 0, .image_id = "z"};
    assert_int_equal(prep_writer_add(w, &smp, &e), 0);
    assert_int_equal(prep_writer_close(w, &e), 0);
    CorpusSource src[2] = {{a, 1.0f}, {b, 2.0f}};
    Corpus c;
    assert_int_equal(corpus_open(&c, src, 2, &e), 1);
    assert_non_null(strstr(e.msg, a));
    assert_non_null(strstr(e.msg, b));
    src[1].path = a;
    src[1].weight = 0;
    assert_int_equal(corpus_open(&c, src, 2, &e), 1);
    assert_non_null(strstr(e.msg, "weight"));
    src[1].weight = 3;
    assert_int_equal(corpus_open(&c, src, 2, &e), 0);
    assert_int_equal(c.n, 2);
    corpus_close(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_concurrent_reads),
        cmocka_unit_test(test_truncated_and_foreign_files),
        cmocka_unit_test(test_missing_dataset),
        cmocka_unit_test(test_corrupt_chunk),
        cmocka_unit_test(test_writer_rejects_bad_input),
        cmocka_unit_test(test_splits_without_source_split),
        cmocka_unit_test(test_splits_respect_source),
        cmocka_unit_test(test_corpus_size_mismatch),
    };
    return cmocka_run_group_tests_name(__FILE__, tests, setup, teardown);
}
