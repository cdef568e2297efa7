/* test_plot.c — `versa plot`: a metrics.jsonl with known straight-line curves is drawn, and the
 * PNG is checked pixel by pixel against the public geometry (plot_lines_size / plot_lines_area /
 * plot_nice_range): the curve colour must be on the line and absent off it.  Runs the binary
 * named by VERSA_BIN, else build/versa. */
#include "tests/common/testutil.h"
#include "bench/bench.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#include <stb_image.h>
#pragma GCC diagnostic pop

static const char *versa_bin(void) {
    const char *b = getenv("VERSA_BIN");
    return b && b[0] ? b : "build/versa";
}

static char dir[64];

/* runs "versa plot ARGS", stdout+stderr to dir/log; returns the exit status */
static int run_plot(const char *args, char *log, size_t n) {
    char cmd[1024], path[128];
    snprintf(path, sizeof path, "%s/log", dir);
    snprintf(cmd, sizeof cmd, "%s plot %s >%s 2>&1", versa_bin(), args, path);
    int st = system(cmd);
    FILE *f = fopen(path, "r");
    size_t k = f ? fread(log, 1, n - 1, f) : 0;
    log[k] = 0;
    if (f) fclose(f);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static void write_file(const char *name, const char *text) {
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static int setup(void **st) {
    (void)st;
    if (access(versa_bin(), X_OK) != 0) {
        fprintf(stderr, "%s not found: build it first (make) or set VERSA_BIN\n", versa_bin());
        return -1;
    }
    snprintf(dir, sizeof dir, "/tmp/versa-plot-XXXXXX");
    return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **st) {
    (void)st;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    return system(cmd) == 0 ? 0 : -1;
}

static int is_col(const uint8_t *img, int w, int h, int x, int y, const uint8_t col[3]) {
    if (x < 0 || y < 0 || x >= w || y >= h) return 0;
    return !memcmp(img + ((size_t)y * w + x) * 3, col, 3);
}

/* the colour within +-2 px of (x, y): the line is 2 px wide and positions round */
static int near_col(const uint8_t *img, int w, int h, double x, double y, const uint8_t col[3]) {
    for (int dy = -2; dy <= 2; dy++)
        for (int dx = -2; dx <= 2; dx++)
            if (is_col(img, w, h, (int)lround(x) + dx, (int)lround(y) + dy, col)) return 1;
    return 0;
}

/* loss = step / 10 rises along the diagonal of panel 0; lr = 10 - step / 10 falls along the
 * anti-diagonal of panel 1; images_per_s is 0 (not measured) except every 20 steps, where it is
 * 4 (a flat line at mid-height of panel 2 after plot_nice_range's band around a constant);
 * elapsed_s is not plotted. */
static void test_curves_land_on_their_pixels(void **st) {
    (void)st;
    char text[16384] = "", line[256];
    for (int s = 0; s <= 100; s++) {
        snprintf(line, sizeof line, "{\"step\":%d,\"loss\":%g,\"lr\":%g,\"images_per_s\":%g,\"elapsed_s\":%.1f}\n", s,
                 s / 10.0, 10 - s / 10.0, s % 20 == 0 ? 4.0 : 0.0, s * 0.5);
        strcat(text, line);
    }
    write_file("metrics.jsonl", text);
    char args[256], log[4096];
    snprintf(args, sizeof args, "%s --out %s/c.png", dir, dir);
    int rc = run_plot(args, log, sizeof log);
    if (rc != 0) fail_msg("versa plot %s: status %d: %s", args, rc, log);
    /* one line per quantity with first -> last */
    assert_non_null(strstr(log, "loss"));
    assert_non_null(strstr(log, "0 -> 10"));
    assert_null(strstr(log, "elapsed_s"));

    char png[128];
    snprintf(png, sizeof png, "%s/c.png", dir);
    int w, h, ch, ew, eh;
    uint8_t *img = stbi_load(png, &w, &h, &ch, 3);
    assert_non_null(img);
    plot_lines_size(3, &ew, &eh);
    assert_int_equal(w, ew);
    assert_int_equal(h, eh);
    assert_int_equal(w, 2 * PLOT_PANEL_W);   /* 3 panels: 2 columns, 2 rows */

    double a, b, step;
    plot_nice_range(0, 100, &a, &b, &step);
    assert_true(a == 0 && b == 100);
    plot_nice_range(0, 10, &a, &b, &step);
    assert_true(a == 0 && b == 10);

    for (int panel = 0; panel < 2; panel++) {
        int x0, y0, x1, y1;
        plot_lines_area(3, panel, &x0, &y0, &x1, &y1);
        const uint8_t *col = PLOT_LINES_PALETTE[panel];
        for (double t = 0.05; t < 1.0; t += 0.1) {
            double x = x0 + t * (x1 - x0);
            double f = panel == 0 ? t : 1 - t;           /* the curve's height, 0..1 of the area */
            double y = y1 - f * (y1 - y0);
            if (!near_col(img, w, h, x, y, col)) fail_msg("panel %d: no curve pixel at t=%.2f (%.0f,%.0f)", panel, t, x, y);
            /* a quarter of the area's height above and below: background, not the curve */
            for (int sgn = -1; sgn <= 1; sgn += 2) {
                double yo = y + sgn * 0.25 * (y1 - y0);
                if (yo > y0 + 3 && yo < y1 - 3 && near_col(img, w, h, x, yo, col))
                    fail_msg("panel %d: curve colour off the line at t=%.2f (%.0f,%.0f)", panel, t, x, yo);
            }
        }
    }
    /* images_per_s: measured points only, a flat line in the middle (range 3.6..4.4) */
    int x0, y0, x1, y1;
    plot_lines_area(3, 2, &x0, &y0, &x1, &y1);
    plot_nice_range(4, 4, &a, &b, &step);
    double ymid = y1 - (4 - a) / (b - a) * (y1 - y0);
    for (double t = 0.1; t < 1.0; t += 0.2)
        assert_true(near_col(img, w, h, x0 + t * (x1 - x0), ymid, PLOT_LINES_PALETTE[2]));
    /* a dropped 0 would pull the line to the bottom edge */
    for (double t = 0.1; t < 1.0; t += 0.2)
        assert_false(near_col(img, w, h, x0 + t * (x1 - x0), y1 - 3, PLOT_LINES_PALETTE[2]));
    stbi_image_free(img);
}

/* user errors: exit 1 and one "versa: ..." line naming the file (and line) */
static void test_errors(void **st) {
    (void)st;
    char args[256], log[4096];
    snprintf(args, sizeof args, "%s/missing.jsonl", dir);
    assert_int_equal(run_plot(args, log, sizeof log), 1);
    assert_non_null(strstr(log, "versa: "));
    assert_non_null(strstr(log, "missing.jsonl"));

    write_file("bad.jsonl", "{\"step\":1,\"loss\":2.5}\n{\"step\":2,\"loss\":oops}\n");
    snprintf(args, sizeof args, "%s/bad.jsonl --out %s/bad.png", dir, dir);
    assert_int_equal(run_plot(args, log, sizeof log), 1);
    if (!strstr(log, "bad.jsonl:2:") || !strstr(log, "loss")) fail_msg("want file:line and key, got: %s", log);

    write_file("empty.jsonl", "\n");
    snprintf(args, sizeof args, "%s/empty.jsonl --out %s/e.png", dir, dir);
    assert_int_equal(run_plot(args, log, sizeof log), 1);
    assert_non_null(strstr(log, "empty"));

    snprintf(args, sizeof args, "%s/metrics.jsonl --out %s/nodir/", dir, dir);
    assert_int_equal(run_plot(args, log, sizeof log), 1);
    assert_non_null(strstr(log, "--out"));
}

/* the reader on its own: keys appearing late, null, strings and booleans */
static void test_reader(void **st) {
    (void)st;
    write_file("r.jsonl", "{\"step\":5,\"loss\":1,\"tag\":\"x\",\"skipped\":true}\n"
                          "{\"step\":6,\"loss\":null,\"kd\":0.5}\n"
                          "{\"step\":7,\"loss\":3,\"kd\":0.25,\"elapsed_s\":9}\n");
    char path[128];
    snprintf(path, sizeof path, "%s/r.jsonl", dir);
    PlotMetrics m;
    Err e = {0};
    assert_int_equal(plot_read_metrics(path, &m, &e), 0);
    assert_int_equal(m.n_rows, 3);
    assert_int_equal(m.n_series, 2);
    assert_string_equal(m.series[0].name, "loss");
    assert_string_equal(m.series[1].name, "kd");
    assert_true(m.step[0] == 5 && m.step[2] == 7);
    assert_true(m.series[0].y[0] == 1 && isnan(m.series[0].y[1]) && m.series[0].y[2] == 3);
    assert_true(isnan(m.series[1].y[0]) && m.series[1].y[1] == 0.5);
    assert_true(m.elapsed_s == 9);
    double first, last;
    assert_true(plot_series_first_last(&m, 1, &first, &last));
    assert_true(first == 0.5 && last == 0.25);
    plot_metrics_free(&m);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_curves_land_on_their_pixels),
        cmocka_unit_test(test_errors),
        cmocka_unit_test(test_reader),
    };
    return cmocka_run_group_tests_name(__FILE__, tests, setup, teardown);
}
