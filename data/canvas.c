/* canvas.c — see data/canvas.h.  stb_image_write's implementation is compiled once in
 * data/stb_impl.c; stb_easy_font is header-only and used only here. */
#include "data/canvas.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wmissing-braces"
#include <stb_image_write.h>
#include <stb_easy_font.h>
#pragma GCC diagnostic pop

int rgb_init(RgbImage *c, int w, int h, const uint8_t bg[3], Err *e) {
    memset(c, 0, sizeof *c);
    if (w < 1 || h < 1 || w > 65535 || h > 65535)
        return err_set(e, "rgb_init: %dx%d is not a valid image size (1..65535 per side)", w, h);
    const size_t n = (size_t)w * (size_t)h;
    c->px = malloc(n * 3);
    if (!c->px) return err_set(e, "rgb_init: out of memory for a %dx%d RGB image", w, h);
    c->w = w;
    c->h = h;
    if (!bg || (bg[0] == bg[1] && bg[1] == bg[2])) {   /* gray (the usual case): one memset */
        memset(c->px, bg ? bg[0] : 0, n * 3);
    } else {
        for (size_t i = 0; i < n; i++) memcpy(c->px + 3 * i, bg, 3);
    }
    return 0;
}

void rgb_free(RgbImage *c) {
    free(c->px);
    memset(c, 0, sizeof *c);
}

void rgb_fill(RgbImage *c, int x0, int y0, int x1, int y1, const uint8_t col[3]) {
    x0 = x0 < 0 ? 0 : x0;
    y0 = y0 < 0 ? 0 : y0;
    x1 = x1 > c->w ? c->w : x1;
    y1 = y1 > c->h ? c->h : y1;
    for (int y = y0; y < y1; y++) {
        uint8_t *p = c->px + ((size_t)y * (size_t)c->w + (size_t)x0) * 3;
        for (int x = x0; x < x1; x++, p += 3) memcpy(p, col, 3);
    }
}

void rgb_rect(RgbImage *c, int x0, int y0, int x1, int y1, int thickness, const uint8_t col[3]) {
    if (x1 < x0 || y1 < y0 || thickness < 1) return;
    const int t = thickness;
    rgb_fill(c, x0, y0, x1 + 1, y0 + t < y1 + 1 ? y0 + t : y1 + 1, col);         /* top */
    rgb_fill(c, x0, y1 - t + 1 > y0 ? y1 - t + 1 : y0, x1 + 1, y1 + 1, col);     /* bottom */
    rgb_fill(c, x0, y0, x0 + t < x1 + 1 ? x0 + t : x1 + 1, y1 + 1, col);         /* left */
    rgb_fill(c, x1 - t + 1 > x0 ? x1 - t + 1 : x0, y0, x1 + 1, y1 + 1, col);     /* right */
}

void rgb_disc(RgbImage *c, float cx, float cy, float r, const uint8_t col[3]) {
    for (int y = (int)floorf(cy - r); y <= (int)ceilf(cy + r); y++)
        for (int x = (int)floorf(cx - r); x <= (int)ceilf(cx + r); x++)
            if ((x - cx) * (x - cx) + (y - cy) * (y - cy) <= r * r) rgb_put(c, x, y, col);
}

void rgb_segment(RgbImage *c, double xa, double ya, double xb, double yb, int thickness, const uint8_t col[3]) {
    int n = (int)ceil(fmax(fabs(xb - xa), fabs(yb - ya)));
    for (int k = 0; k <= n; k++) {
        double t = n ? (double)k / n : 0;
        int x = (int)lround(xa + t * (xb - xa)), y = (int)lround(ya + t * (yb - ya));
        rgb_fill(c, x, y, x + thickness, y + thickness, col);
    }
}

void rgb_mask_outline(RgbImage *c, const uint8_t *mask, int mw, int mh, int ox, int oy, int z, const uint8_t col[3]) {
    for (int y = 0; y < mh; y++)
        for (int x = 0; x < mw; x++)
            if (rgb_mask_edge(mask, mw, mh, x, y)) rgb_fill(c, ox + x * z, oy + y * z, ox + (x + 1) * z, oy + (y + 1) * z, col);
}

/* ------------------------------------------------------------------------------------------ */
/* Text */

/* stb_easy_font indexes its glyph table with (c - 32) unchecked: keep to printable ASCII */
static char font_char(char ch) { return ch == '\n' || (ch >= 32 && ch < 127) ? ch : '?'; }

int rgb_text_width(const char *s, float scale) {
    int w = 0, line = 0;   /* font units */
    for (; *s; s++) {
        char one[2] = {font_char(*s), 0};
        if (one[0] == '\n') line = 0;
        else line += stb_easy_font_width(one);
        if (line > w) w = line;
    }
    return (int)ceilf((float)w * scale);
}

int rgb_text(RgbImage *c, int x, int y, const char *s, float scale, const uint8_t col[3]) {
    /* one glyph at a time, so the quad buffer is small and on the stack (a glyph is at most 11
     * strokes of 64 bytes) */
    char quads[16 * 64];
    float pen_x = 0, pen_y = 0;   /* font units */
    for (const char *p = s; *p; p++) {
        char one[2] = {font_char(*p), 0};
        if (one[0] == '\n') {
            pen_x = 0;
            pen_y += 12;
            continue;
        }
        int nq = stb_easy_font_print(pen_x, pen_y, one, NULL, quads, sizeof quads);
        for (int q = 0; q < nq; q++) {
            const float *v = (const float *)(quads + q * 64);   /* vertex 0 (x0, y0) .. vertex 2 (x1, y1) */
            rgb_fill(c, x + (int)floorf(v[0] * scale), y + (int)floorf(v[1] * scale), x + (int)ceilf(v[8] * scale),
                        y + (int)ceilf(v[9] * scale), col);
        }
        pen_x += (float)stb_easy_font_width(one);
    }
    return rgb_text_width(s, scale);
}

/* ------------------------------------------------------------------------------------------ */
/* PNG */

typedef struct PngSink {
    FILE *f;
    int short_write;
} PngSink;

static void png_sink(void *ctx, void *data, int size) {
    PngSink *s = ctx;
    if (fwrite(data, 1, (size_t)size, s->f) != (size_t)size) s->short_write = 1;
}

int rgb_write_png(const RgbImage *c, const char *path, Err *e) {
    if (!c->px || c->w < 1 || c->h < 1) return err_set(e, "%s: nothing to write (empty image)", path);
    PngSink s = {fopen(path, "wb"), 0};
    if (!s.f) return err_set(e, "%s: cannot create (%s)", path, strerror(errno));
    /* unlike stbi_write_png, which ignores fwrite and fclose failures (a full disk gives a
     * truncated file and success) */
    int encoded = stbi_write_png_to_func(png_sink, &s, c->w, c->h, 3, c->px, c->w * 3);
    int closed = fclose(s.f) == 0;
    if (encoded && !s.short_write && closed) return 0;
    return err_set(e, "%s: %s", path, encoded ? "write error" : "cannot encode the PNG (out of memory)");
}
