/*
 * data/canvas.h — drawing on 8-bit RGB images (RgbImage, next to the gray Image / FImage of
 * data/image.h) for pictures people look at: ranks.png and the training curves (bench/plot*.c),
 * the segmentation / detection contact sheets and the synthetic data contact sheet
 * (data/synth_preview.c).  Nothing here feeds a model.  (The synthetic generator's internal
 * `Canvas`, data/synth_internal.h, is an unrelated anatomy buffer.)
 *
 * Coordinates are integer pixels, x to the right and y down from the top left corner.  Every
 * function clips to the image, so shapes may hang over its edges.  Colours are {r, g, b}.
 * Text is stb_easy_font (a 5x7-ish vector font, 12 font units per line) rasterised as filled
 * rectangles.  No global state: different images may be drawn from different threads.
 */
#ifndef VERSA_DATA_CANVAS_H
#define VERSA_DATA_CANVAS_H

#include <stdint.h>
#include <string.h>
#include "engine/engine.h"

typedef struct RgbImage {
    uint8_t *px;   /* (h, w, 3) row-major; malloc'd by rgb_init */
    int w, h;
} RgbImage;

/* w x h pixels of colour bg (NULL: black); 0 on success, nonzero (Err filled) for a size outside
 * 1..65535 or out of memory. */
int rgb_init(RgbImage *c, int w, int h, const uint8_t bg[3], Err *e);
void rgb_free(RgbImage *c);   /* frees px, zeroes the struct */

static inline void rgb_put(RgbImage *c, int x, int y, const uint8_t col[3]) {
    if (x < 0 || y < 0 || x >= c->w || y >= c->h) return;
    memcpy(c->px + ((size_t)y * (size_t)c->w + (size_t)x) * 3, col, 3);
}

/* the filled rectangle [x0, x1) x [y0, y1) (empty when x1 <= x0 or y1 <= y0) */
void rgb_fill(RgbImage *c, int x0, int y0, int x1, int y1, const uint8_t col[3]);
/* the outline of the rectangle with inclusive corners (x0, y0) and (x1, y1): a band `thickness`
 * pixels wide just inside those edges (never outside them; a box thinner than two bands is
 * filled).  Nothing when x1 < x0, y1 < y0 or thickness < 1. */
void rgb_rect(RgbImage *c, int x0, int y0, int x1, int y1, int thickness, const uint8_t col[3]);
/* pixels whose centre offset (x - cx, y - cy) has length <= r */
void rgb_disc(RgbImage *c, float cx, float cy, float r, const uint8_t col[3]);
/* a line from (xa, ya) to (xb, yb): a thickness x thickness square (top left at the rounded
 * point) at every pixel step along the longer axis */
void rgb_segment(RgbImage *c, double xa, double ya, double xb, double yb, int thickness, const uint8_t col[3]);

/* 1 when pixel (x, y) of a (h, w) mask is set and lies on the mask's edge: on the border of the
 * mask or with a 4-neighbour that is not set */
static inline int rgb_mask_edge(const uint8_t *m, int w, int h, int x, int y) {
    if (!m[(size_t)y * w + x]) return 0;
    return x == 0 || y == 0 || x == w - 1 || y == h - 1 || !m[(size_t)y * w + x - 1] || !m[(size_t)y * w + x + 1] ||
           !m[(size_t)(y - 1) * w + x] || !m[(size_t)(y + 1) * w + x];
}
/* the edge pixels (rgb_mask_edge) of a (mh, mw) mask drawn at (ox, oy), each mask pixel as a
 * z x z block (z >= 1: the mask scaled up z times) */
void rgb_mask_outline(RgbImage *c, const uint8_t *mask, int mw, int mh, int ox, int oy, int z, const uint8_t col[3]);

/* Text with its top left corner at (x, y); `scale` pixels per font unit (1 gives ~7 px
 * tall capitals; a fractional scale rounds each stroke outwards).  '\n' starts a new line 12
 * font units lower; characters outside printable ASCII are drawn as '?'.  Returns the width in
 * pixels, i.e. rgb_text_width(s, scale). */
int rgb_text(RgbImage *c, int x, int y, const char *s, float scale, const uint8_t col[3]);
int rgb_text_width(const char *s, float scale);   /* of the longest line, rounded up */

/* 8-bit RGB PNG; errors name the file: "out/ranks.png: cannot create (No such file or directory)" */
int rgb_write_png(const RgbImage *c, const char *path, Err *e);

#endif
