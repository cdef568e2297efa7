/* plot_lines.c — training curves: metrics.jsonl (engine/train.c writes one JSON object per step)
 * read into series, drawn as a grid of line-plot panels, one per quantity, to an 8-bit RGB PNG.
 * Same font and palette as ranks.png (bench/plot.c), drawn with data/canvas.h.
 *
 * The geometry is fixed (PLOT_PANEL_W x PLOT_PANEL_H per panel, at most 3 columns) and public
 * through plot_lines_size / plot_lines_area / plot_nice_range, so a test can say which pixel a
 * data point lands on. */
#include "bench/bench.h"
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const uint8_t PLOT_LINES_PALETTE[8][3] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40},
                                          {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {23, 190, 207}};
static const uint8_t BLACK[3] = {20, 20, 20}, GRID[3] = {225, 225, 225}, GREY[3] = {110, 110, 110},
                     FRAME[3] = {150, 150, 150};

/* panel layout, pixels: the plot area sits inside the panel with room for the panel title above,
 * y tick labels on the left and x tick labels + axis name below */
enum { TITLE_H = 44, AREA_LEFT = 112, AREA_RIGHT = 24, AREA_TOP = 40, AREA_BOTTOM = 52, TEXT_SCALE = 2 };

/* ------------------------------------------------------------------------------------------ */
/* Reading metrics.jsonl */

static int add_series(PlotSeries **s, int *n, const char *name, size_t n_rows, size_t cap, Err *e, const char *path) {
    PlotSeries *ns = realloc(*s, (size_t)(*n + 1) * sizeof **s);
    if (!ns) return err_set(e, "%s: out of memory", path);
    *s = ns;
    PlotSeries *p = &ns[*n];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->y = malloc(cap * sizeof *p->y);
    if (!p->y) return err_set(e, "%s: out of memory", path);
    for (size_t i = 0; i < n_rows; i++) p->y[i] = NAN;   /* a key that appears late: missing before */
    (*n)++;
    return 0;
}

static const char *skip_ws(const char *p) {
    while (*p && isspace((unsigned char)*p)) p++;
    return p;
}

/* a JSON string at p (after the opening quote); copies at most n-1 bytes; returns the position
 * after the closing quote, or NULL */
static const char *parse_string(const char *p, char *out, size_t n) {
    size_t k = 0;
    for (; *p && *p != '"'; p++) {
        if (*p == '\\' && p[1]) p++;
        if (k + 1 < n) out[k++] = *p;
    }
    if (n) out[k < n ? k : n - 1] = 0;
    return *p == '"' ? p + 1 : NULL;
}

int plot_read_metrics(const char *path, PlotMetrics *m, Err *e) {
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "r");
    if (!f) return err_set(e, "%s: cannot read: %s", path, strerror(errno));
    size_t cap = 0, line_no = 0, len = 0;
    char *line = NULL;
    ssize_t got;
    int rc = 0;
    while ((got = getline(&line, &len, f)) >= 0) {
        line_no++;
        const char *p = skip_ws(line);
        if (!*p) continue;   /* blank lines (e.g. a trailing newline) are not rows */
        if (*p != '{') {
            rc = err_set(e, "%s:%zu: expected a JSON object per line", path, line_no);
            break;
        }
        if (m->n_rows == cap) {   /* grow every column together */
            cap = cap ? 2 * cap : 256;
            double *ns = realloc(m->step, cap * sizeof *ns);
            if (!ns) { rc = err_set(e, "%s: out of memory", path); break; }
            m->step = ns;
            for (int k = 0; k < m->n_series && !rc; k++) {
                double *ny = realloc(m->series[k].y, cap * sizeof *ny);
                if (!ny) rc = err_set(e, "%s: out of memory", path);
                else m->series[k].y = ny;
            }
            if (rc) break;
        }
        size_t row = m->n_rows;
        m->step[row] = NAN;
        for (int k = 0; k < m->n_series; k++) m->series[k].y[row] = NAN;
        p = skip_ws(p + 1);
        while (*p && *p != '}' && !rc) {
            char key[64];
            if (*p != '"' || !(p = parse_string(p + 1, key, sizeof key))) {
                rc = err_set(e, "%s:%zu: expected a quoted key", path, line_no);
                break;
            }
            p = skip_ws(p);
            if (*p != ':') {
                rc = err_set(e, "%s:%zu: expected ':' after \"%s\"", path, line_no, key);
                break;
            }
            p = skip_ws(p + 1);
            double v = NAN;
            int numeric = 0;
            if (*p == '"') {   /* strings are not plotted */
                char tmp[8];
                p = parse_string(p + 1, tmp, sizeof tmp);
                if (!p) { rc = err_set(e, "%s:%zu: unterminated string for \"%s\"", path, line_no, key); break; }
            } else if (!strncmp(p, "null", 4)) {
                p += 4;
                numeric = 1;   /* a non-finite value of a metric: a gap in its curve */
            } else if (!strncmp(p, "true", 4) || !strncmp(p, "false", 5)) {
                p += *p == 't' ? 4 : 5;
            } else {
                char *end;
                v = strtod(p, &end);
                if (end == p) {
                    rc = err_set(e, "%s:%zu: \"%s\": not a number", path, line_no, key);
                    break;
                }
                p = end;
                numeric = 1;
            }
            if (numeric && !strcmp(key, "step")) {
                m->step[row] = v;
            } else if (numeric && strcmp(key, "elapsed_s")) {
                int k = 0;
                while (k < m->n_series && strcmp(m->series[k].name, key)) k++;
                if (k == m->n_series && add_series(&m->series, &m->n_series, key, row, cap, e, path)) {
                    rc = 1;
                    break;
                }
                /* the trainer writes images_per_s = 0 between its measurement windows */
                size_t kl = strlen(key);
                int rate = kl > 6 && !strcmp(key + kl - 6, "_per_s");
                m->series[k].y[row] = rate && v == 0 ? NAN : v;
            }
            if (!strcmp(key, "elapsed_s") && numeric) m->elapsed_s = v;
            p = skip_ws(p);
            if (*p == ',') p = skip_ws(p + 1);
            else if (*p != '}') rc = err_set(e, "%s:%zu: expected ',' or '}' after \"%s\"", path, line_no, key);
        }
        if (rc) break;
        if (*p != '}') {
            rc = err_set(e, "%s:%zu: line is not a complete JSON object", path, line_no);
            break;
        }
        if (isnan(m->step[row])) m->step[row] = (double)(row + 1);   /* no "step" key: the row number */
        m->n_rows++;
    }
    free(line);
    fclose(f);
    if (!rc && m->n_rows == 0) rc = err_set(e, "%s: no metrics (empty file)", path);
    if (rc) plot_metrics_free(m);
    return rc;
}

void plot_metrics_free(PlotMetrics *m) {
    for (int k = 0; k < m->n_series; k++) free(m->series[k].y);
    free(m->series);
    free(m->step);
    memset(m, 0, sizeof *m);
}

int plot_series_first_last(const PlotMetrics *m, int k, double *first, double *last) {
    const double *y = m->series[k].y;
    size_t i = 0, j = m->n_rows;
    while (i < m->n_rows && !isfinite(y[i])) i++;
    while (j > i && !isfinite(y[j - 1])) j--;
    if (i == m->n_rows) return 0;
    *first = y[i];
    *last = y[j - 1];
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Geometry */

static int n_cols(int n_panels) { return n_panels <= 1 ? 1 : n_panels <= 4 ? 2 : 3; }

void plot_lines_size(int n_panels, int *w, int *h) {
    int cols = n_cols(n_panels), rows = n_panels < 1 ? 1 : (n_panels + cols - 1) / cols;
    *w = cols * PLOT_PANEL_W;
    *h = TITLE_H + rows * PLOT_PANEL_H;
}

void plot_lines_area(int n_panels, int i, int *x0, int *y0, int *x1, int *y1) {
    int cols = n_cols(n_panels);
    int px = (i % cols) * PLOT_PANEL_W, py = TITLE_H + (i / cols) * PLOT_PANEL_H;
    *x0 = px + AREA_LEFT;
    *x1 = px + PLOT_PANEL_W - AREA_RIGHT;
    *y0 = py + AREA_TOP;
    *y1 = py + PLOT_PANEL_H - AREA_BOTTOM;
}

/* 1, 2, 2.5 or 5 times a power of ten, >= x */
static double nice_step(double x) {
    double p = pow(10.0, floor(log10(x)));
    double f = x / p;
    return (f <= 1.0 ? 1.0 : f <= 2.0 ? 2.0 : f <= 2.5 ? 2.5 : f <= 5.0 ? 5.0 : 10.0) * p;
}

void plot_nice_range(double lo, double hi, double *a, double *b, double *step) {
    if (!(hi > lo)) {   /* a constant (or one point): a band around it */
        double d = lo != 0 ? fabs(lo) * 0.1 : 1.0;
        lo -= d;
        hi += d;
    }
    double s = nice_step((hi - lo) / 5);
    /* the 1e-9 keeps a bound that is a multiple of the step from moving out by rounding */
    *a = floor(lo / s + 1e-9) * s;
    *b = ceil(hi / s - 1e-9) * s;
    *step = s;
}

/* ------------------------------------------------------------------------------------------ */
/* Drawing */

/* a tick label short enough for the left margin: 0.5, 120, 2.5e-05 -> 2.5e-5 */
static void tick_label(double v, double step, char *buf, size_t n) {
    if (fabs(v) < step * 1e-6) v = 0;
    double a = fabs(v);
    if (a != 0 && (a < 1e-3 || a >= 1e5)) {
        snprintf(buf, n, "%.3g", v);
        char *ex = strchr(buf, 'e');   /* e-05 -> e-5 */
        if (ex) {
            char *d = ex + 1 + (ex[1] == '-' || ex[1] == '+');
            char *z = d;
            while (*z == '0' && z[1]) z++;
            memmove(d, z, strlen(z) + 1);
            if (ex[1] == '+') memmove(ex + 1, ex + 2, strlen(ex + 2) + 1);
        }
    } else {
        snprintf(buf, n, "%.4g", v);
    }
}

static void draw_panel(RgbImage *c, const PlotMetrics *m, int n_panels, int k, double xa, double xb, double xs) {
    int x0, y0, x1, y1;
    plot_lines_area(n_panels, k, &x0, &y0, &x1, &y1);
    const PlotSeries *s = &m->series[k];
    const uint8_t *col = PLOT_LINES_PALETTE[k % 8];
    double lo = INFINITY, hi = -INFINITY;
    size_t n_ok = 0;
    for (size_t i = 0; i < m->n_rows; i++)
        if (isfinite(s->y[i])) {
            lo = fmin(lo, s->y[i]);
            hi = fmax(hi, s->y[i]);
            n_ok++;
        }
    char buf[160], a[32], b[32];
    double first = 0, last = 0;
    if (plot_series_first_last(m, k, &first, &last)) {
        tick_label(first, fabs(first) + 1e-30, a, sizeof a);
        tick_label(last, fabs(last) + 1e-30, b, sizeof b);
        snprintf(buf, sizeof buf, "%s: %s -> %s", s->name, a, b);
    } else {
        snprintf(buf, sizeof buf, "%s", s->name);
    }
    rgb_text(c, x0, y0 - 30, buf, TEXT_SCALE, BLACK);
    if (n_ok == 0) {
        rgb_text(c, x0 + 10, (y0 + y1) / 2, "no finite values", TEXT_SCALE, GREY);
        return;
    }
    double ya, yb, ys;
    plot_nice_range(lo, hi, &ya, &yb, &ys);
    /* data -> pixel: the range's ends are the area's edges (inclusive) */
    #define PX(v) ((double)x0 + ((v) - xa) / (xb - xa) * (double)(x1 - x0))
    #define PY(v) ((double)y1 - ((v) - ya) / (yb - ya) * (double)(y1 - y0))
    for (int t = 0; t <= (int)lround((yb - ya) / ys); t++) {   /* y grid + labels */
        double v = ya + t * ys;
        int y = (int)lround(PY(v));
        rgb_fill(c, x0, y, x1 + 1, y + 1, GRID);
        tick_label(v, ys, buf, sizeof buf);
        rgb_text(c, x0 - 12 - rgb_text_width(buf, TEXT_SCALE), y - 6, buf, TEXT_SCALE, GREY);
    }
    for (int t = 0; t <= (int)lround((xb - xa) / xs); t++) {   /* x grid + labels */
        double v = xa + t * xs;
        int x = (int)lround(PX(v));
        rgb_fill(c, x, y0, x + 1, y1 + 1, GRID);
        tick_label(v, xs, buf, sizeof buf);
        rgb_text(c, x - rgb_text_width(buf, TEXT_SCALE) / 2, y1 + 10, buf, TEXT_SCALE, GREY);
    }
    rgb_text(c, (x0 + x1) / 2 - rgb_text_width("step", TEXT_SCALE) / 2, y1 + 28, "step", TEXT_SCALE, GREY);
    rgb_rect(c, x0, y0, x1, y1, 1, FRAME);
    /* the curve, through the finite points (gaps are bridged: rates are measured every few
     * steps); a few points also get a dot so a lone one is visible */
    double px = NAN, py = NAN;
    for (size_t i = 0; i < m->n_rows; i++) {
        if (!isfinite(s->y[i])) continue;
        double x = PX(m->step[i]), y = PY(s->y[i]);
        if (isfinite(px)) rgb_segment(c, px, py, x, y, 2, col);   /* 2 px wide */
        if (n_ok <= 40) rgb_fill(c, (int)lround(x) - 2, (int)lround(y) - 2, (int)lround(x) + 3, (int)lround(y) + 3, col);
        px = x;
        py = y;
    }
    #undef PX
    #undef PY
}

int plot_lines_png(const PlotMetrics *m, const char *title, const char *png_path, Err *e) {
    const int n = m->n_series;
    if (n == 0) return err_set(e, "%s: no numeric metrics to plot", title);
    static const uint8_t WHITE[3] = {255, 255, 255};
    int w, h;
    plot_lines_size(n, &w, &h);
    RgbImage c;
    if (rgb_init(&c, w, h, WHITE, e)) return 1;
    double lo = INFINITY, hi = -INFINITY, xa, xb, xs;
    for (size_t i = 0; i < m->n_rows; i++) {
        lo = fmin(lo, m->step[i]);
        hi = fmax(hi, m->step[i]);
    }
    plot_nice_range(lo, hi, &xa, &xb, &xs);
    char buf[600];
    snprintf(buf, sizeof buf, "%s: %zu steps", title, m->n_rows);
    if (m->elapsed_s > 0) snprintf(buf + strlen(buf), sizeof buf - strlen(buf), ", %.0f s", m->elapsed_s);
    rgb_text(&c, 16, 12, buf, TEXT_SCALE, BLACK);
    for (int k = 0; k < n; k++) draw_panel(&c, m, n, k, xa, xb, xs);
    int rc = rgb_write_png(&c, png_path, e);
    rgb_free(&c);
    return rc;
}
