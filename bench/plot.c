/* plot.c — ranks.png: one row per ranked task with a dot per model at its rank (1 = best, left),
 * then the average rank of each model, and a legend with average ranks and first places.  Text
 * with stb_easy_font, pixels with stb_image_write (compiled once in data/stb_impl.c). */
#include "bench/bench.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wmissing-braces"
#include <stb_image_write.h>
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

typedef struct Canvas {
    uint8_t *px;   // (h, w, 3)
    int w, h;
} Canvas;

static void put(Canvas *c, int x, int y, const uint8_t col[3]) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    memcpy(c->px + ((size_t)y * c->w + x) * 3, col, 3);
}

static void fill(Canvas *c, int x0, int y0, int x1, int y1, const uint8_t col[3]) {
    for (int y = y0; y < y1; y++)
        for (int x = x0; x < x1; x++) put(c, x, y, col);
}

static void disc(Canvas *c, float cx, float cy, float r, const uint8_t col[3]) {
    for (int y = (int)floorf(cy - r); y <= (int)ceilf(cy + r); y++)
        for (int x = (int)floorf(cx - r); x <= (int)ceilf(cx + r); x++)
            if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r) put(c, x, y, col);
}

static void diamond(Canvas *c, float cx, float cy, float r, const uint8_t col[3]) {
    for (int y = (int)floorf(cy - r); y <= (int)ceilf(cy + r); y++)
        for (int x = (int)floorf(cx - r); x <= (int)ceilf(cx + r); x++)
            if (fabsf(x - cx) + fabsf(y - cy) <= r) put(c, x, y, col);
}

/* text at (x, y) (top left), integer scale; returns the width in pixels */
static int text(Canvas *c, int x, int y, const char *s, int scale, const uint8_t col[3]) {
    static char buf[60000];
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", s);
    int nq = stb_easy_font_print(0, 0, tmp, NULL, buf, sizeof buf);
    for (int q = 0; q < nq; q++) {
        const float *v = (const float *)(buf + q * 64);
        int qx0 = (int)v[0], qy0 = (int)v[1], qx1 = (int)v[8], qy1 = (int)v[9];
        fill(c, x + qx0 * scale, y + qy0 * scale, x + qx1 * scale, y + qy1 * scale, col);
    }
    return stb_easy_font_width(tmp) * scale;
}

static int text_width(const char *s, int scale) {
    char tmp[256];
    snprintf(tmp, sizeof tmp, "%s", s);
    return stb_easy_font_width(tmp) * scale;
}

static const uint8_t PALETTE[8][3] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40},
                                      {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {23, 190, 207}};
static const uint8_t BLACK[3] = {20, 20, 20}, GRID[3] = {215, 215, 215}, FAINT[3] = {240, 240, 240},
                     GREY[3] = {110, 110, 110};

int bench_plot_ranks(const BenchRun *run, const BenchRanks *rk, const char *png_path, Err *e) {
    const int M = run->n_models, T = rk->n_tasks, S = 2;   /* S: text scale */
    const int row_h = 22, pad = 16, title_h = 44, head_h = 26;
    int label_w = text_width("average rank", S);
    for (int k = 0; k < T; k++) {
        const BenchTask *t = &run->reg.tasks[run->task_sel[rk->task[k]]];
        char lab[160];
        snprintf(lab, sizeof lab, "%s", t->id);
        int w = text_width(lab, S);
        if (w > label_w) label_w = w;
    }
    const int plot_w = M > 1 ? 110 * M : 220;
    const int legend_h = M * 24 + 12;
    char title[256];
    snprintf(title, sizeof title, "Rank per task (1 = best): %s, %d tasks, %d models", run->reg.name, T, M);
    Canvas c = {NULL, pad + label_w + 24 + plot_w + 40 + pad, 0};
    int min_w = text_width(title, S) + 2 * pad;
    for (int mi = 0; mi < M; mi++) {   /* legend lines */
        int w = text_width(run->model_names[mi], S) + text_width(": average rank 0.00, first places 000/000", S) + 24 + 2 * pad;
        if (w > min_w) min_w = w;
    }
    if (c.w < min_w) c.w = min_w;
    c.h = title_h + head_h + (T > 0 ? T : 1) * row_h + 10 + row_h + 14 + legend_h + pad;
    c.px = malloc((size_t)c.w * c.h * 3);
    if (!c.px) return err_set(e, "%s: out of memory", png_path);
    memset(c.px, 255, (size_t)c.w * c.h * 3);
    char buf[256];
    text(&c, pad, 12, title, S, BLACK);
    const int x0 = pad + label_w + 24, y0 = title_h + head_h;
    /* x of rank r: 1 at the left edge of the plot, M at the right */
    #define XR(r) ((float)x0 + 20.0f + (M > 1 ? ((float)(r) - 1.0f) / (float)(M - 1) * (float)(plot_w - 40) : (float)(plot_w - 40) / 2))
    for (int r = 1; r <= M; r++) {
        int x = (int)XR(r);
        snprintf(buf, sizeof buf, "%d", r);
        text(&c, x - text_width(buf, S) / 2, title_h + 4, buf, S, GREY);
        fill(&c, x, y0 - 4, x + 1, y0 + (T > 0 ? T : 1) * row_h + 10 + row_h, GRID);
    }
    text(&c, pad + label_w - text_width("rank", S), title_h + 4, "rank", S, GREY);
    if (T == 0) text(&c, x0, y0 + 4, "no task was completed by every model", S, GREY);
    for (int k = 0; k < T; k++) {
        const BenchTask *t = &run->reg.tasks[run->task_sel[rk->task[k]]];
        int y = y0 + k * row_h;
        if (k % 2) fill(&c, pad, y, c.w - pad, y + row_h, FAINT);
        for (int r = 1; r <= M; r++) fill(&c, (int)XR(r), y, (int)XR(r) + 1, y + row_h, GRID);
        text(&c, pad + label_w - text_width(t->id, S), y + 4, t->id, S, BLACK);
        for (int mi = 0; mi < M; mi++) {
            /* models with the same rank stack vertically instead of hiding each other */
            float dy = M > 1 ? ((float)mi - (M - 1) / 2.0f) * fminf(5.0f, 14.0f / (float)M) : 0;
            disc(&c, XR(rk->rank[(size_t)k * M + mi]), (float)y + row_h / 2.0f + dy, 5.0f, PALETTE[mi % 8]);
        }
    }
    int ya = y0 + (T > 0 ? T : 1) * row_h + 10;
    fill(&c, pad, ya - 6, c.w - pad, ya - 5, BLACK);
    text(&c, pad + label_w - text_width("average rank", S), ya + 4, "average rank", S, BLACK);
    for (int mi = 0; mi < M && T > 0; mi++) {
        float dy = M > 1 ? ((float)mi - (M - 1) / 2.0f) * fminf(5.0f, 14.0f / (float)M) : 0;
        diamond(&c, XR(rk->avg[mi]), (float)ya + row_h / 2.0f + dy, 8.0f, PALETTE[mi % 8]);
    }
    #undef XR
    int yl = ya + row_h + 14;
    for (int mi = 0; mi < M; mi++) {
        int y = yl + mi * 24;
        fill(&c, pad, y + 2, pad + 16, y + 18, PALETTE[mi % 8]);
        if (T > 0)
            snprintf(buf, sizeof buf, "%s: average rank %.2f, first places %d/%d", run->model_names[mi], rk->avg[mi],
                     rk->firsts[mi], T);
        else
            snprintf(buf, sizeof buf, "%s", run->model_names[mi]);
        text(&c, pad + 24, y + 2, buf, S, BLACK);
    }
    int ok = stbi_write_png(png_path, c.w, c.h, 3, c.px, c.w * 3);
    free(c.px);
    if (!ok) return err_set(e, "%s: cannot write the PNG", png_path);
    return 0;
}
