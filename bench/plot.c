/* plot.c — ranks.png: one row per ranked task with a dot per model at its rank (1 = best, left),
 * then the average rank of each model, and a legend with average ranks and first places.  Text
 * and pixels with data/canvas.h. */
#include "bench/bench.h"
#include <math.h>

/* diamonds for the average ranks; the rest is data/canvas.h */
static void diamond(RgbImage *c, float cx, float cy, float r, const uint8_t col[3]) {
    for (int y = (int)floorf(cy - r); y <= (int)ceilf(cy + r); y++)
        for (int x = (int)floorf(cx - r); x <= (int)ceilf(cx + r); x++)
            if (fabsf(x - cx) + fabsf(y - cy) <= r) rgb_put(c, x, y, col);
}

static const uint8_t PALETTE[8][3] = {{31, 119, 180}, {255, 127, 14}, {44, 160, 44}, {214, 39, 40},
                                      {148, 103, 189}, {140, 86, 75}, {227, 119, 194}, {23, 190, 207}};
static const uint8_t BLACK[3] = {20, 20, 20}, GRID[3] = {215, 215, 215}, FAINT[3] = {240, 240, 240},
                     GREY[3] = {110, 110, 110};

int bench_plot_ranks(const BenchRun *run, const BenchRanks *rk, const char *png_path, Err *e) {
    const int M = run->n_models, T = rk->n_tasks, S = 2;   /* S: text scale */
    const int row_h = 22, pad = 16, title_h = 44, head_h = 26;
    int label_w = rgb_text_width("average rank", S);
    for (int k = 0; k < T; k++) {
        const BenchTask *t = &run->reg.tasks[run->task_sel[rk->task[k]]];
        char lab[160];
        snprintf(lab, sizeof lab, "%s", t->id);
        int w = rgb_text_width(lab, S);
        if (w > label_w) label_w = w;
    }
    const int plot_w = M > 1 ? 110 * M : 220;
    const int legend_h = M * 24 + 12;
    char title[256];
    snprintf(title, sizeof title, "Rank per task (1 = best): %s, %d tasks, %d models", run->reg.name, T, M);
    int W = pad + label_w + 24 + plot_w + 40 + pad;
    int min_w = rgb_text_width(title, S) + 2 * pad;
    for (int mi = 0; mi < M; mi++) {   /* legend lines */
        int w = rgb_text_width(run->model_names[mi], S) + rgb_text_width(": average rank 0.00, first places 000/000", S) + 24 + 2 * pad;
        if (w > min_w) min_w = w;
    }
    if (W < min_w) W = min_w;
    const int H = title_h + head_h + (T > 0 ? T : 1) * row_h + 10 + row_h + 14 + legend_h + pad;
    static const uint8_t WHITE[3] = {255, 255, 255};
    RgbImage c;
    if (rgb_init(&c, W, H, WHITE, e)) return 1;
    char buf[256];
    rgb_text(&c, pad, 12, title, S, BLACK);
    const int x0 = pad + label_w + 24, y0 = title_h + head_h;
    /* x of rank r: 1 at the left edge of the plot, M at the right */
    #define XR(r) ((float)x0 + 20.0f + (M > 1 ? ((float)(r) - 1.0f) / (float)(M - 1) * (float)(plot_w - 40) : (float)(plot_w - 40) / 2))
    for (int r = 1; r <= M; r++) {
        int x = (int)XR(r);
        snprintf(buf, sizeof buf, "%d", r);
        rgb_text(&c, x - rgb_text_width(buf, S) / 2, title_h + 4, buf, S, GREY);
        rgb_fill(&c, x, y0 - 4, x + 1, y0 + (T > 0 ? T : 1) * row_h + 10 + row_h, GRID);
    }
    rgb_text(&c, pad + label_w - rgb_text_width("rank", S), title_h + 4, "rank", S, GREY);
    if (T == 0) rgb_text(&c, x0, y0 + 4, "no task was completed by every model", S, GREY);
    for (int k = 0; k < T; k++) {
        const BenchTask *t = &run->reg.tasks[run->task_sel[rk->task[k]]];
        int y = y0 + k * row_h;
        if (k % 2) rgb_fill(&c, pad, y, c.w - pad, y + row_h, FAINT);
        for (int r = 1; r <= M; r++) rgb_fill(&c, (int)XR(r), y, (int)XR(r) + 1, y + row_h, GRID);
        rgb_text(&c, pad + label_w - rgb_text_width(t->id, S), y + 4, t->id, S, BLACK);
        for (int mi = 0; mi < M; mi++) {
            /* models with the same rank stack vertically instead of hiding each other */
            float dy = M > 1 ? ((float)mi - (M - 1) / 2.0f) * fminf(5.0f, 14.0f / (float)M) : 0;
            rgb_disc(&c, XR(rk->rank[(size_t)k * M + mi]), (float)y + row_h / 2.0f + dy, 5.0f, PALETTE[mi % 8]);
        }
    }
    int ya = y0 + (T > 0 ? T : 1) * row_h + 10;
    rgb_fill(&c, pad, ya - 6, c.w - pad, ya - 5, BLACK);
    rgb_text(&c, pad + label_w - rgb_text_width("average rank", S), ya + 4, "average rank", S, BLACK);
    for (int mi = 0; mi < M && T > 0; mi++) {
        float dy = M > 1 ? ((float)mi - (M - 1) / 2.0f) * fminf(5.0f, 14.0f / (float)M) : 0;
        diamond(&c, XR(rk->avg[mi]), (float)ya + row_h / 2.0f + dy, 8.0f, PALETTE[mi % 8]);
    }
    #undef XR
    int yl = ya + row_h + 14;
    for (int mi = 0; mi < M; mi++) {
        int y = yl + mi * 24;
        rgb_fill(&c, pad, y + 2, pad + 16, y + 18, PALETTE[mi % 8]);
        if (T > 0)
            snprintf(buf, sizeof buf, "%s: average rank %.2f, first places %d/%d", run->model_names[mi], rk->avg[mi],
                     rk->firsts[mi], T);
        else
            snprintf(buf, sizeof buf, "%s", run->model_names[mi]);
        rgb_text(&c, pad + 24, y + 2, buf, S, BLACK);
    }
    int rc = rgb_write_png(&c, png_path, e);
    rgb_free(&c);
    return rc;
}
