/*
 * data/synth_preview.c — a contact sheet of generated images for people to look at: a grid of
 * 8-bit RGB tiles with lesion boxes (red malignant, green benign), mask outlines (yellow) and a
 * caption per tile ("P3 L MLO dens C BR 4C"), drawn with data/canvas.h.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "data/canvas.h"
#include "data/synth.h"

/* text with a black drop shadow, so captions stay readable on bright tissue */
static void caption(RgbImage *im, int x, int y, const char *s, float scale, const uint8_t col[3]) {
    static const uint8_t black[3] = {0, 0, 0};
    rgb_text(im, x + 1, y + 1, s, scale, black);
    rgb_text(im, x, y, s, scale, col);
}

int synth_contact_sheet(const SynthConfig *cfg, int n, int cols, int tile_w, const char *png_path, Err *e) {
    if (synth_config_check(cfg, e)) return 1;
    if (n < 1 || cols < 1) return err_set(e, "synth_contact_sheet: n = %d, cols = %d must be >= 1", n, cols);
    int W = cfg->width, H = cfg->height;
    if (tile_w <= 0 || tile_w > W) tile_w = W;
    int tile_h = (int)((long)H * tile_w / W), pad = 4;
    int rows = (n + cols - 1) / cols;
    static const uint8_t bg[3] = {40, 40, 40};
    RgbImage sheet;
    if (rgb_init(&sheet, cols * (tile_w + pad) + pad, rows * (tile_h + pad) + pad, bg, e)) return 1;
    int failed = 0;
    Err first = {{0}};
#pragma omp parallel for schedule(dynamic, 1) num_threads(cfg->nthreads > 0 ? cfg->nthreads : omp_get_max_threads())
    for (int k = 0; k < n; k++) {
        SynthExam ex;
        SynthImage img;
        Err le;
        synth_sample_exam(cfg, k / 4, &ex);
        if (synth_render(cfg, &ex, k % 4, &img, &le)) {
#pragma omp critical(synth_sheet_err)
            if (!failed++) first = le;
            continue;
        }
        RgbImage tile;
        if (rgb_init(&tile, tile_w, tile_h, NULL, &le)) {
            synth_image_free(&img);
#pragma omp critical(synth_sheet_err)
            if (!failed++) first = le;
            continue;
        }
        /* area-average down to the tile, 8 bits */
        float sc = (float)W / tile_w, maxv = (float)((1u << img.bits) - 1u);
        for (int ty = 0; ty < tile_h; ty++)
            for (int tx = 0; tx < tile_w; tx++) {
                int x0 = (int)(tx * sc), x1 = (int)((tx + 1) * sc), y0 = (int)(ty * sc), y1 = (int)((ty + 1) * sc);
                if (x1 <= x0) x1 = x0 + 1;
                if (y1 <= y0) y1 = y0 + 1;
                double s = 0;
                int m = 0;
                for (int y = y0; y < y1 && y < H; y++)
                    for (int x = x0; x < x1 && x < W; x++, m++) s += img.pixels[(size_t)y * W + x];
                uint8_t v = (uint8_t)lrintf(255.0f * (float)(s / (m ? m : 1)) / maxv);
                uint8_t *p = tile.px + ((size_t)ty * tile_w + tx) * 3;
                p[0] = p[1] = p[2] = v;
            }
        static const uint8_t red[3] = {255, 40, 40}, green[3] = {40, 230, 60}, yellow[3] = {255, 230, 0},
                             cyan[3] = {120, 220, 255};
        const SynthBreast *b = &ex.breast[img.side];
        for (int l = 0; l < img.n_lesions; l++) {
            const SynthLesion *les = &img.lesions[l];
            const SynthFinding *f = &b->findings[les->finding];
            int bw = les->x1 - les->x0, bh = les->y1 - les->y0;
            /* mask outline: mask pixels with a 4-neighbour outside */
            for (int y = 0; y < bh; y++)
                for (int x = 0; x < bw; x++)
                    if (rgb_mask_edge(les->mask, bw, bh, x, y))
                        rgb_put(&tile, (int)((les->x0 + x) / sc), (int)((les->y0 + y) / sc), yellow);
            const uint8_t *col = f->malignant ? red : green;
            int x0 = (int)(les->x0 / sc) - 2, y0 = (int)(les->y0 / sc) - 2;
            int x1 = (int)(les->x1 / sc) + 1, y1 = (int)(les->y1 / sc) + 1;
            rgb_rect(&tile, x0, y0, x1, y1, 1, col);
            char cap[64];
            static const char *abbr[SYNTH_N_FINDING_TYPES] = {"mass", "calc", "AD", "asym", "LN"};
            snprintf(cap, sizeof cap, "%s %s", abbr[f->type], synth_birads_name(f->birads));
            caption(&tile, x0, y1 + 3, cap, 1.0f, col);
        }
        char cap[96];
        snprintf(cap, sizeof cap, "P%d %c %s dens %c BR %s", k / 4, img.side ? 'R' : 'L', synth_view_name(img.view),
                 "ABCD"[b->density], synth_birads_name(b->birads));
        caption(&tile, 4, 4, cap, tile_w >= 300 ? 1.5f : 1.0f, cyan);
        /* into the sheet */
        int ox = pad + (k % cols) * (tile_w + pad), oy = pad + (k / cols) * (tile_h + pad);
        for (int y = 0; y < tile_h; y++)
            memcpy(sheet.px + ((size_t)(oy + y) * sheet.w + ox) * 3, tile.px + (size_t)y * tile_w * 3, (size_t)tile_w * 3);
        rgb_free(&tile);
        synth_image_free(&img);
    }
    if (failed) {
        rgb_free(&sheet);
        if (e) *e = first;
        return 1;
    }
    int rc = rgb_write_png(&sheet, png_path, e);
    rgb_free(&sheet);
    return rc;
}
