/* preprocess.c — the recipe's mammogram preprocessing: breast-region crop (air/tissue threshold
 * + largest connected component), flip to a common side, resize with masks and boxes following,
 * and intensity normalisation.
 *
 * The crop and side decisions are made on a block-averaged copy at most ANALYSIS_MAX pixels on
 * a side: a 4000 x 3000 mammogram then costs a few milliseconds and a few hundred kB instead of
 * label and queue arrays of 12 Mpx, and the box loses at most one block, which we give back as
 * a one-block margin. */
#include "data/image.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define ANALYSIS_MAX 512

CropOpts crop_opts_default(void) {
    CropOpts o = {.border = 5, .threshold = -1.0f, .margin = 0, .min_area = 0.01f};
    return o;
}

PrepOpts prep_opts_default(void) {
    PrepOpts o = {.crop = 1, .crop_opts = crop_opts_default(), .flip = FLIP_AUTO, .out_w = 0, .out_h = 0,
                  .keep_aspect = 0, .mode = RESIZE_AREA};
    return o;
}

/* Block-averaged copy of region r: (lh, lw) = ceil(size / f) with f the block size. */
typedef struct Low {
    uint16_t *px;   /* (lh, lw) */
    int lw, lh, f;
} Low;

static int low_make(const Image *im, Rect r, Low *lo) {
    int w = r.x1 - r.x0, h = r.y1 - r.y0;
    int big = w > h ? w : h;
    int f = (big + ANALYSIS_MAX - 1) / ANALYSIS_MAX;
    if (f < 1) f = 1;
    lo->f = f;
    lo->lw = (w + f - 1) / f;
    lo->lh = (h + f - 1) / f;
    lo->px = malloc((size_t)lo->lw * (size_t)lo->lh * sizeof(uint16_t));
    uint64_t *acc = calloc((size_t)lo->lw, sizeof(uint64_t));   /* (lw) row sums of one block row */
    if (!lo->px || !acc) { free(lo->px); free(acc); lo->px = NULL; return 1; }
    for (int by = 0; by < lo->lh; by++) {
        int y0 = r.y0 + by * f, y1 = y0 + f < r.y1 ? y0 + f : r.y1;
        memset(acc, 0, (size_t)lo->lw * sizeof(uint64_t));
        for (int y = y0; y < y1; y++) {
            const uint16_t *row = image_row(im, y) + r.x0;
            for (int bx = 0, x = 0; bx < lo->lw; bx++) {
                int xe = x + f < w ? x + f : w;
                uint64_t sum = 0;
                for (; x < xe; x++) sum += row[x];
                acc[bx] += sum;
            }
        }
        for (int bx = 0; bx < lo->lw; bx++) {
            int bw = (bx + 1) * f < w ? f : w - bx * f;
            uint64_t cnt = (uint64_t)bw * (uint64_t)(y1 - y0);
            lo->px[(size_t)by * lo->lw + bx] = (uint16_t)((acc[bx] + cnt / 2) / cnt);
        }
    }
    free(acc);
    return 0;
}

/* Otsu over a 256-bin histogram spanning [min, max] of v (n values); returns a value t such that
 * "bright" is v > t. */
static uint16_t otsu_u16(const uint16_t *v, size_t n) {
    uint16_t mn = 0xffff, mx = 0;
    for (size_t i = 0; i < n; i++) {
        mn = v[i] < mn ? v[i] : mn;
        mx = v[i] > mx ? v[i] : mx;
    }
    if (n == 0 || mx <= mn) return mx;
    double span = (double)(mx - mn) + 1.0;
    uint64_t hist[256] = {0};
    for (size_t i = 0; i < n; i++) hist[(int)((v[i] - mn) * 256.0 / span)]++;
    double total = (double)n, sum_all = 0.0;
    for (int b = 0; b < 256; b++) sum_all += b * (double)hist[b];
    double w0 = 0.0, sum0 = 0.0, best = -1.0;
    int best_b = 0;
    for (int b = 0; b < 255; b++) {
        w0 += (double)hist[b];
        sum0 += b * (double)hist[b];
        double w1 = total - w0;
        if (w0 == 0 || w1 == 0) continue;
        double m0 = sum0 / w0, m1 = (sum_all - sum0) / w1;
        double between = w0 * w1 * (m0 - m1) * (m0 - m1);
        if (between > best) { best = between; best_b = b; }
    }
    /* the largest value that falls in bin best_b */
    double t = mn + (best_b + 1) * span / 256.0 - 1e-9;
    uint16_t ti = (uint16_t)floor(t);
    return ti < mx ? ti : (uint16_t)(mx - 1);
}

uint16_t image_otsu(const Image *im, int skip_border) {
    Rect r = {skip_border, skip_border, im->w - skip_border, im->h - skip_border};
    if (r.x1 <= r.x0 || r.y1 <= r.y0) r = (Rect){0, 0, im->w, im->h};
    size_t n = (size_t)(r.x1 - r.x0) * (size_t)(r.y1 - r.y0);
    uint16_t *tmp = malloc(n * sizeof(uint16_t));
    if (!tmp) return 0;
    size_t k = 0;
    for (int y = r.y0; y < r.y1; y++)
        for (int x = r.x0; x < r.x1; x++) tmp[k++] = image_row(im, y)[x];
    uint16_t t = otsu_u16(tmp, n);
    free(tmp);
    return t;
}

static int cmp_u16(const void *a, const void *b) {
    uint16_t x = *(const uint16_t *)a, y = *(const uint16_t *)b;
    return (x > y) - (x < y);
}

/* Threshold between air and tissue on the block-averaged image.  Otsu alone is not enough: on a
 * fatty breast with a few dense islands the largest between-class variance can lie between fat
 * and dense tissue, and the crop then keeps only the dense islands and cuts off lesions in the
 * fat near the skin.  So the background level is measured where air is: of the four edge strips
 * (5% of the side, inside the border trim) the one with the lowest median (the chest wall and,
 * on MLO, the axilla are tissue, the nipple side is air).  The threshold sits 5% of the way
 * from that level to the 99th percentile (the bright end of the tissue) and at least 3 robust
 * sigmas of the strip above it, capped at Otsu's threshold (the bound when no edge shows air).
 * A constant image gives t = its value, so no pixel is "bright". */
static uint16_t tissue_threshold(const Low *lo) {
    int lw = lo->lw, lh = lo->lh;
    size_t ln = (size_t)lw * (size_t)lh;
    uint16_t t_otsu = otsu_u16(lo->px, ln);
    int sx = lw / 20 > 1 ? lw / 20 : 1, sy = lh / 20 > 1 ? lh / 20 : 1;
    size_t cap = (size_t)(sx > sy ? sx : sy) * (size_t)(lw > lh ? lw : lh);
    uint16_t *strip = malloc(cap * sizeof(uint16_t));   /* (one strip's pixels) */
    uint32_t *hist = calloc(65536, sizeof(uint32_t));   /* (65536) value histogram */
    if (!strip || !hist) { free(strip); free(hist); return t_otsu; }
    double bg = 65535.0, sigma = 0.0;
    for (int side = 0; side < 4; side++) {   /* top, bottom, left, right */
        size_t n = 0;
        int x0 = side == 3 ? lw - sx : 0, x1 = side == 2 ? sx : lw;
        int y0 = side == 1 ? lh - sy : 0, y1 = side == 0 ? sy : lh;
        for (int y = y0; y < y1; y++)
            for (int x = x0; x < x1; x++) strip[n++] = lo->px[(size_t)y * lw + x];
        qsort(strip, n, sizeof(uint16_t), cmp_u16);
        double med = strip[n / 2];
        if (med >= bg) continue;
        bg = med;
        for (size_t i = 0; i < n; i++) strip[i] = (uint16_t)fabs((double)strip[i] - med);
        qsort(strip, n, sizeof(uint16_t), cmp_u16);
        sigma = 1.4826 * strip[n / 2];   /* median absolute deviation -> sigma */
    }
    for (size_t i = 0; i < ln; i++) hist[lo->px[i]]++;
    size_t rank = (size_t)(0.99 * (double)(ln - 1)), seen = 0;
    int hi = 0;
    while (seen + hist[hi] <= rank) seen += hist[hi++];
    free(strip);
    free(hist);
    double t = bg + fmax(0.05 * (hi - bg), 3.0 * sigma);
    if (t > t_otsu) t = t_otsu;
    if (t < bg) t = bg;
    return (uint16_t)t;
}

/* Largest 8-connected component of mask (h, w) (values 0/1); fills its bounding box and returns
 * its area.  Flood fill with an explicit stack: no recursion, bounded memory. */
static size_t largest_component(const uint8_t *mask, int w, int h, Rect *bb) {
    size_t npx = (size_t)w * (size_t)h;
    uint8_t *seen = calloc(npx, 1);
    int32_t *stack = malloc(npx * sizeof(int32_t));
    size_t best = 0;
    if (!seen || !stack) { free(seen); free(stack); return 0; }
    for (size_t start = 0; start < npx; start++) {
        if (!mask[start] || seen[start]) continue;
        size_t top = 0, area = 0;
        Rect r = {w, h, -1, -1};
        stack[top++] = (int32_t)start;
        seen[start] = 1;
        while (top) {
            int32_t p = stack[--top];
            int x = p % w, y = p / w;
            area++;
            if (x < r.x0) r.x0 = x;
            if (x > r.x1) r.x1 = x;
            if (y < r.y0) r.y0 = y;
            if (y > r.y1) r.y1 = y;
            for (int dy = -1; dy <= 1; dy++)
                for (int dx = -1; dx <= 1; dx++) {
                    int nx = x + dx, ny = y + dy;
                    if ((dx | dy) == 0 || nx < 0 || ny < 0 || nx >= w || ny >= h) continue;
                    size_t q = (size_t)ny * (size_t)w + (size_t)nx;
                    if (mask[q] && !seen[q]) { seen[q] = 1; stack[top++] = (int32_t)q; }
                }
        }
        if (area > best) {
            best = area;
            *bb = (Rect){r.x0, r.y0, r.x1 + 1, r.y1 + 1};
        }
    }
    free(seen);
    free(stack);
    return best;
}

Rect image_breast_bbox(const Image *im, const CropOpts *opts) {
    CropOpts o = opts ? *opts : crop_opts_default();
    Rect full = {0, 0, im->w, im->h};
    Rect in = {o.border, o.border, im->w - o.border, im->h - o.border};
    if (o.border < 0 || in.x1 - in.x0 < 2 || in.y1 - in.y0 < 2) in = full;
    Low lo;
    if (low_make(im, in, &lo)) return in;
    size_t ln = (size_t)lo.lw * (size_t)lo.lh;
    uint16_t t;
    if (o.threshold < 0) {
        t = tissue_threshold(&lo);
    } else {
        uint16_t mx = 0;
        for (size_t i = 0; i < ln; i++) mx = lo.px[i] > mx ? lo.px[i] : mx;
        double tv = o.threshold * mx;
        t = (uint16_t)(tv >= 65535 ? 65535 : tv);
    }
    uint8_t *mask = malloc(ln);
    if (!mask) { free(lo.px); return in; }
    for (size_t i = 0; i < ln; i++) mask[i] = lo.px[i] > t;
    Rect bb;
    size_t area = largest_component(mask, lo.lw, lo.lh, &bb);
    free(mask);
    free(lo.px);
    if (area == 0 || (double)area < o.min_area * (double)ln) return in;
    /* back to full resolution, one block of slack on each side for partially covered blocks */
    int f = lo.f, slack = f > 1 ? f : 0;
    Rect r = {in.x0 + bb.x0 * f - slack - o.margin, in.y0 + bb.y0 * f - slack - o.margin,
              in.x0 + bb.x1 * f + slack + o.margin, in.y0 + bb.y1 * f + slack + o.margin};
    if (r.x0 < in.x0 - o.margin) r.x0 = in.x0 - o.margin;
    if (r.y0 < in.y0 - o.margin) r.y0 = in.y0 - o.margin;
    if (r.x1 > in.x1 + o.margin) r.x1 = in.x1 + o.margin;
    if (r.y1 > in.y1 + o.margin) r.y1 = in.y1 + o.margin;
    if (r.x0 < 0) r.x0 = 0;
    if (r.y0 < 0) r.y0 = 0;
    if (r.x1 > im->w) r.x1 = im->w;
    if (r.y1 > im->h) r.y1 = im->h;
    return r;
}

int image_breast_on_right(const Image *im) {
    Rect full = {0, 0, im->w, im->h};
    Low lo;
    if (low_make(im, full, &lo)) return 0;
    uint16_t t = tissue_threshold(&lo);
    /* intensity above threshold per half; the middle column (odd widths) counts for neither */
    double left = 0.0, right = 0.0;
    for (int y = 0; y < lo.lh; y++)
        for (int x = 0; x < lo.lw; x++) {
            uint16_t v = lo.px[(size_t)y * lo.lw + x];
            if (v <= t) continue;
            if (2 * x + 1 < lo.lw) left += v;
            else if (2 * x + 1 > lo.lw) right += v;
        }
    free(lo.px);
    return right > left;
}

void prep_plan(const Image *im, char laterality, const PrepOpts *opts, PrepTransform *t) {
    PrepOpts o = opts ? *opts : prep_opts_default();
    memset(t, 0, sizeof *t);
    t->src_w = im->w;
    t->src_h = im->h;
    t->crop = o.crop ? image_breast_bbox(im, &o.crop_opts) : (Rect){0, 0, im->w, im->h};
    if (t->crop.x1 <= t->crop.x0 || t->crop.y1 <= t->crop.y0) t->crop = (Rect){0, 0, im->w, im->h};
    switch (o.flip) {
    case FLIP_NONE: t->flip = 0; break;
    case FLIP_AUTO:
        if (laterality == 'R' || laterality == 'r') t->flip = 1;
        else if (laterality == 'L' || laterality == 'l') t->flip = 0;
        else t->flip = image_breast_on_right(im);
        break;
    case FLIP_TISSUE: t->flip = image_breast_on_right(im); break;
    }
    int cw = t->crop.x1 - t->crop.x0, ch = t->crop.y1 - t->crop.y0;
    t->out_w = o.out_w > 0 ? o.out_w : cw;
    t->out_h = o.out_h > 0 ? o.out_h : ch;
    if (o.keep_aspect && o.out_w > 0 && o.out_h > 0) {
        double s = fmin((double)t->out_w / cw, (double)t->out_h / ch);
        t->fit_w = (int)lround(cw * s);
        t->fit_h = (int)lround(ch * s);
        t->fit_w = t->fit_w < 1 ? 1 : t->fit_w > t->out_w ? t->out_w : t->fit_w;
        t->fit_h = t->fit_h < 1 ? 1 : t->fit_h > t->out_h ? t->out_h : t->fit_h;
    } else {
        t->fit_w = t->out_w;
        t->fit_h = t->out_h;
    }
    t->sx = (float)t->fit_w / (float)cw;
    t->sy = (float)t->fit_h / (float)ch;
    t->mode = o.mode;
}

/* crop -> flip -> resize (one streaming pass) -> pad, shared by images and masks */
static int apply(const PrepTransform *t, const Image *in, ResizeMode mode, Image *out, Err *e) {
    memset(out, 0, sizeof *out);
    if (in->w != t->src_w || in->h != t->src_h)
        return err_set(e, "preprocess: image is %dx%d but the transform was planned for %dx%d", in->w, in->h, t->src_w, t->src_h);
    Image r;
    if (image_crop_resize(in, t->crop, t->flip, t->fit_w, t->fit_h, mode, &r, e)) return 1;
    if (t->fit_w == t->out_w && t->fit_h == t->out_h) {
        *out = r;
        return 0;
    }
    Image p;
    if (image_alloc(&p, t->out_w, t->out_h, r.bits, e)) { image_free(&r); return 1; }
    for (int y = 0; y < r.h; y++) memcpy(image_row(&p, y), image_row(&r, y), (size_t)r.w * sizeof(uint16_t));
    image_free(&r);
    *out = p;
    return 0;
}

int prep_apply_image(const PrepTransform *t, const Image *in, Image *out, Err *e) { return apply(t, in, t->mode, out, e); }

int prep_apply_mask(const PrepTransform *t, const Image *mask, Image *out, Err *e) {
    return apply(t, mask, RESIZE_NEAREST, out, e);
}

void prep_apply_boxes(const PrepTransform *t, BoxF *boxes, size_t n) {
    int cw = t->crop.x1 - t->crop.x0;
    for (size_t i = 0; i < n; i++) {
        BoxF b = box_crop(boxes[i], t->crop);
        if (t->flip) b = box_flip_h(b, cw);
        boxes[i] = box_scale(b, t->sx, t->sy);
    }
}

void prep_normalize(const Image *im, float mean, float std, float *out) {
    size_t npx = (size_t)im->w * (size_t)im->h;
    float s = 1.0f / (float)image_maxval(im), inv = 1.0f / std;
    for (size_t i = 0; i < npx; i++) out[i] = ((float)im->px[i] * s - mean) * inv;
}
