/* cmd_plot.c — `versa plot RUN_DIR|metrics.jsonl [--out DIR|FILE.png]`: training curves to PNG. */
#include "cli/cli.h"
#include "bench/bench.h"
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

int cmd_plot(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        printf("usage: versa plot RUN_DIR|METRICS.jsonl [--out DIR|FILE.png] [--title TEXT] [--quiet]\n\n"
               "Draws the training curves of a `versa pretrain` or `versa distill` run: one panel per\n"
               "quantity of metrics.jsonl (every loss, learning rate, schedules, images/s; x = step), with\n"
               "axes, ticks and first -> last values, to an RGB PNG.  Prints one line per quantity:\n"
               "name, first and last value.\n\n"
               "  RUN_DIR       a folder with metrics.jsonl (train.output_dir of the run)\n"
               "  --out D|F     a folder (curves.png in it) or a .png path; default RUN_DIR/curves.png\n"
               "  --title TEXT  the image title (default: the metrics path)\n"
               "  --quiet       no per-quantity lines\n");
        return 0;
    }
    const char *in = NULL, *out = NULL, *title = NULL;
    int quiet = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else if (!strcmp(a, "--out") || !strcmp(a, "--title")) {
            if (i + 1 >= argc) return cli_fail("plot: %s needs a value", a);
            if (!strcmp(a, "--out")) out = argv[++i];
            else title = argv[++i];
        } else if (a[0] == '-') {
            return cli_fail("plot: unknown option '%s' (try 'versa plot --help')", a);
        } else if (in) {
            return cli_fail("plot: unexpected argument '%s' (one run folder or metrics file)", a);
        } else {
            in = a;
        }
    }
    if (!in) return cli_fail("plot: no RUN_DIR or metrics.jsonl given (try 'versa plot --help')");
    char metrics[1024], png[1100], dir[1024];
    if (is_dir(in)) {
        snprintf(metrics, sizeof metrics, "%s/metrics.jsonl", in);
        snprintf(dir, sizeof dir, "%s", in);
    } else {
        snprintf(metrics, sizeof metrics, "%s", in);
        snprintf(dir, sizeof dir, "%s", in);
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else snprintf(dir, sizeof dir, ".");
    }
    if (!out) snprintf(png, sizeof png, "%s/curves.png", dir);
    else if (ends_with(out, ".png")) snprintf(png, sizeof png, "%s", out);
    else if (is_dir(out)) snprintf(png, sizeof png, "%s/curves.png", out);
    else return cli_fail("plot: --out: '%s' is neither a folder nor a .png path", out);

    Err e = {0};
    PlotMetrics m;
    if (plot_read_metrics(metrics, &m, &e)) return cli_fail("%s", e.msg);
    int rc = plot_lines_png(&m, title ? title : metrics, png, &e);
    if (!rc && !quiet) {
        for (int k = 0; k < m.n_series; k++) {
            double first, last;
            if (plot_series_first_last(&m, k, &first, &last))
                printf("%-14s %12.6g -> %-12.6g\n", m.series[k].name, first, last);
            else
                printf("%-14s %12s\n", m.series[k].name, "(no values)");
        }
    }
    int w = 0, h = 0;
    plot_lines_size(m.n_series, &w, &h);
    size_t rows = m.n_rows;
    int n = m.n_series;
    plot_metrics_free(&m);
    if (rc) return cli_fail("%s", e.msg);
    fprintf(stderr, "[plot] %d quantities x %zu steps -> %s (%dx%d)\n", n, rows, png, w, h);
    return 0;
}
