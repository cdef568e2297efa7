/* plot_dense.c — contact sheets of segmentation / detection predictions: each test image in gray,
 * the ground truth in green and the prediction in red (mask outlines, box rectangles), tiles
 * scaled up to at least 192 pixels so small lesions stay visible. */
#include "bench/bench.h"
#include <math.h>

static const uint8_t GREEN[3] = {40, 220, 60}, RED[3] = {240, 40, 40};

/* box b = (x0, y0, x1, y1) in input pixels of the tile at (ox, oy), scaled z times, as a 2-pixel
 * outline kept inside the tile */
static void box(RgbImage *c, int ox, int oy, int z, int S, const float *b, const uint8_t col[3]) {
    int x0 = ox + (int)lroundf(b[0] * z), y0 = oy + (int)lroundf(b[1] * z);
    int x1 = ox + (int)lroundf(b[2] * z) - 1, y1 = oy + (int)lroundf(b[3] * z) - 1;
    const int hi = S * z - 1;
    x0 = x0 < ox ? ox : x0;
    y0 = y0 < oy ? oy : y0;
    x1 = x1 > ox + hi ? ox + hi : x1;
    y1 = y1 > oy + hi ? oy + hi : y1;
    rgb_rect(c, x0, y0, x1, y1, 2, col);
}

int bench_contact_sheet(const BenchSheetTile *tiles, int n, int S, int cols, const char *png_path, Err *e) {
    if (n < 1 || S < 1) return err_set(e, "%s: nothing to draw", png_path);
    const int z = S >= 192 ? 1 : (192 + S - 1) / S, T = S * z, pad = 4;
    cols = cols < 1 ? 1 : cols > n ? n : cols;
    const int rows = (n + cols - 1) / cols;
    RgbImage c;
    if (rgb_init(&c, cols * (T + pad) + pad, rows * (T + pad) + pad, NULL, e)) return 1;
    for (int i = 0; i < n; i++) {
        const BenchSheetTile *t = &tiles[i];
        const int ox = pad + (i % cols) * (T + pad), oy = pad + (i / cols) * (T + pad);
        for (int y = 0; y < T; y++)
            for (int x = 0; x < T; x++) {
                float v = t->img[(y / z) * S + x / z];
                uint8_t g = (uint8_t)lroundf(255.0f * (v < 0 ? 0 : v > 1 ? 1 : v));
                const uint8_t col[3] = {g, g, g};
                rgb_put(&c, ox + x, oy + y, col);
            }
        if (t->gt_mask) rgb_mask_outline(&c, t->gt_mask, S, S, ox, oy, z, GREEN);
        if (t->pred_mask) rgb_mask_outline(&c, t->pred_mask, S, S, ox, oy, z, RED);
        for (int k = 0; k < t->n_gt; k++) box(&c, ox, oy, z, S, t->gt_boxes + 4 * k, GREEN);
        for (int k = 0; k < t->n_pred; k++) box(&c, ox, oy, z, S, t->pred_boxes + 4 * k, RED);
    }
    int rc = rgb_write_png(&c, png_path, e);
    rgb_free(&c);
    return rc;
}
