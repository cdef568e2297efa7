/* plot_dense.c — contact sheets of segmentation / detection predictions: each test image in gray,
 * the ground truth in green and the prediction in red (mask outlines, box rectangles), tiles
 * scaled up to at least 192 pixels so small lesions stay visible. */
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
#pragma GCC diagnostic pop

static const uint8_t GREEN[3] = {40, 220, 60}, RED[3] = {240, 40, 40};

typedef struct Sheet {
    uint8_t *px;   // (h, w, 3)
    int w, h;
} Sheet;

static void put(Sheet *c, int x, int y, const uint8_t col[3]) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    memcpy(c->px + ((size_t)y * c->w + x) * 3, col, 3);
}

/* mask pixels with a 4-neighbour outside the mask, each drawn as a z x z block */
static void outline(Sheet *c, int ox, int oy, int z, const uint8_t *m, int S, const uint8_t col[3]) {
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            if (!m[y * S + x]) continue;
            int edge = x == 0 || y == 0 || x == S - 1 || y == S - 1 || !m[y * S + x - 1] || !m[y * S + x + 1] ||
                       !m[(y - 1) * S + x] || !m[(y + 1) * S + x];
            if (!edge) continue;
            for (int dy = 0; dy < z; dy++)
                for (int dx = 0; dx < z; dx++) put(c, ox + x * z + dx, oy + y * z + dy, col);
        }
}

static void rect(Sheet *c, int ox, int oy, int z, int S, const float *b, const uint8_t col[3]) {
    int x0 = ox + (int)lroundf(b[0] * z), y0 = oy + (int)lroundf(b[1] * z);
    int x1 = ox + (int)lroundf(b[2] * z) - 1, y1 = oy + (int)lroundf(b[3] * z) - 1;
    const int lo_x = ox, lo_y = oy, hi = S * z - 1;
    x0 = x0 < lo_x ? lo_x : x0;
    y0 = y0 < lo_y ? lo_y : y0;
    x1 = x1 > ox + hi ? ox + hi : x1;
    y1 = y1 > oy + hi ? oy + hi : y1;
    for (int t = 0; t < 2; t++) {   /* 2-pixel lines */
        for (int x = x0; x <= x1; x++) {
            put(c, x, y0 + t, col);
            put(c, x, y1 - t, col);
        }
        for (int y = y0; y <= y1; y++) {
            put(c, x0 + t, y, col);
            put(c, x1 - t, y, col);
        }
    }
}

int bench_contact_sheet(const BenchSheetTile *tiles, int n, int S, int cols, const char *png_path, Err *e) {
    if (n < 1 || S < 1) return err_set(e, "%s: nothing to draw", png_path);
    const int z = S >= 192 ? 1 : (192 + S - 1) / S, T = S * z, pad = 4;
    cols = cols < 1 ? 1 : cols > n ? n : cols;
    const int rows = (n + cols - 1) / cols;
    Sheet c = {.w = cols * (T + pad) + pad, .h = rows * (T + pad) + pad};
    c.px = calloc((size_t)c.w * c.h * 3, 1);
    if (!c.px) return err_set(e, "%s: out of memory for a %dx%d sheet", png_path, c.w, c.h);
    for (int i = 0; i < n; i++) {
        const BenchSheetTile *t = &tiles[i];
        const int ox = pad + (i % cols) * (T + pad), oy = pad + (i / cols) * (T + pad);
        for (int y = 0; y < T; y++)
            for (int x = 0; x < T; x++) {
                float v = t->img[(y / z) * S + x / z];
                uint8_t g = (uint8_t)lroundf(255.0f * (v < 0 ? 0 : v > 1 ? 1 : v));
                const uint8_t col[3] = {g, g, g};
                put(&c, ox + x, oy + y, col);
            }
        if (t->gt_mask) outline(&c, ox, oy, z, t->gt_mask, S, GREEN);
        if (t->pred_mask) outline(&c, ox, oy, z, t->pred_mask, S, RED);
        for (int k = 0; k < t->n_gt; k++) rect(&c, ox, oy, z, S, t->gt_boxes + 4 * k, GREEN);
        for (int k = 0; k < t->n_pred; k++) rect(&c, ox, oy, z, S, t->pred_boxes + 4 * k, RED);
    }
    int ok = stbi_write_png(png_path, c.w, c.h, 3, c.px, c.w * 3);
    free(c.px);
    return ok ? 0 : err_set(e, "%s: cannot write PNG", png_path);
}
