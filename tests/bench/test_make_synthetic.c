/* test_make_synthetic.c — `versa bench --make-synthetic`: the synthetic suite's two prepared files
 * from the real converters, deterministic, and --acquisition reaching the generator (same
 * patients and labels, other pixels). */
#include "tests/common/testutil.h"
#include "bench/bench.h"
#include "data/prepared.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* per-image mean pixel inside the breast (above the air level) of the VinDr-layout file, and
 * the labels; returns the number of images */
static size_t make_and_read(const char *dir, float acq, double *means, int32_t *labels) {
    BenchSynthOpts o = bench_synth_opts_default();
    o.dir = dir;
    o.patients = 8;
    o.width = 64;
    o.height = 80;
    o.vindr_size = 32;
    o.cbis_size = 32;
    o.acq_spread = acq;
    o.quiet = 1;
    Err e = {{0}};
    if (bench_make_synthetic(&o, &e)) fail_msg("bench_make_synthetic: %s", e.msg);
    char path[1024];
    snprintf(path, sizeof path, "%s/synth-cbis.h5", dir);
    assert_int_equal(access(path, R_OK), 0);
    snprintf(path, sizeof path, "%s/synth-vindr.h5", dir);
    Prepared p;
    if (prep_open(&p, path, &e)) fail_msg("prep_open: %s", e.msg);
    assert_int_equal(p.n, 32);
    size_t npx = (size_t)p.h * p.w, n = p.n;
    float *px = malloc(npx * sizeof *px);
    for (size_t i = 0; i < n; i++) {
        if (prep_read_image_f32(&p, i, px, &e)) fail_msg("read: %s", e.msg);
        double m = 0;
        size_t in = 0;
        for (size_t j = 0; j < npx; j++)
            if (px[j] > 0.02f) m += px[j], in++;
        assert_true(in > npx / 8);
        means[i] = m / (double)in;
        labels[i] = prep_label(&p, i, 0);
    }
    free(px);
    prep_close(&p);
    return n;
}

static double mean_abs_diff(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += fabs(a[i] - b[i]);
    return s / (double)n;
}

/* the same options give the same files; --acquisition changes the pixels of the same patients */
static void test_acquisition_option(void **st) {
    (void)st;
    char d1[] = "/tmp/versa-mksyn-XXXXXX", d1b[] = "/tmp/versa-mksyn-XXXXXX", d4[] = "/tmp/versa-mksyn-XXXXXX";
    assert_non_null(mkdtemp(d1));
    assert_non_null(mkdtemp(d1b));
    assert_non_null(mkdtemp(d4));
    double m1[32], m1b[32], m4[32];
    int32_t l1[32], l1b[32], l4[32];
    size_t n = make_and_read(d1, 1.0f, m1, l1);
    assert_int_equal(make_and_read(d1b, 1.0f, m1b, l1b), n);
    assert_int_equal(make_and_read(d4, 4.0f, m4, l4), n);
    double same = mean_abs_diff(m1, m1b, n), other = mean_abs_diff(m1, m4, n);
    print_message("mean |brightness difference| per image: same options %.4f, acquisition 1 vs 4 %.4f\n", same, other);
    assert_true(same == 0.0);
    assert_true(other > 0.01);
    assert_memory_equal(l1, l4, n * sizeof(int32_t));   /* same patients, same labels */
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s %s %s", d1, d1b, d4);
    assert_int_equal(system(cmd), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_acquisition_option),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
