/*
 * convert_common.c — the part every converter shares: raw records, patient-disjoint splits, the
 * parallel load -> preprocess -> rasterise -> encode pipeline, and in-order writing.
 */
#include "data/prepared.h"
#include "data/dicom.h"

#include <dirent.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

/* ------------------------------------------------------------------------------------------ */
/* helpers */

char *path_join(const char *a, const char *b) {
    if (!a || !*a) return strdup(b);
    size_t la = strlen(a);
    char *p = xmalloc(la + strlen(b) + 2);
    sprintf(p, "%s%s%s", a, a[la - 1] == '/' ? "" : "/", b);
    return p;
}

void str_copy(char *dst, size_t n, const char *src) {
    if (!n) return;
    size_t l = strlen(src);
    if (l >= n) l = n - 1;
    memcpy(dst, src, l);
    dst[l] = 0;
}

int path_exists(const char *p) {
    struct stat st;
    return stat(p, &st) == 0;
}

static int is_dir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

int label_index(const char *classes, const char *value) {
    int k = 0;
    size_t lv = strlen(value);
    for (const char *p = classes; p && *p; k++) {
        const char *q = strchr(p, '\n');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == lv && strncmp(p, value, len) == 0) return k;
        if (!q) break;
        p = q + 1;
    }
    return -1;
}

ConvertOpts convert_opts_default(void) {
    ConvertOpts o = {0};
    o.width = o.height = 0;
    o.bits = 16;
    o.gzip = 4;
    o.prep = prep_opts_default();
    o.split = split_opts_default();
    o.on_missing = CONVERT_FAIL;
    o.dicom = (DicomRenderOpts){.window = DICOM_WINDOW_AUTO, .no_invert = 0, .zero_padding = 1, .out_bits = 16};
    return o;
}

/* ------------------------------------------------------------------------------------------ */
/* raw records */

RawRecord *rawset_add(RawSet *s) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        RawRecord *r = realloc(s->r, cap * sizeof *r);
        if (!r) {
            fprintf(stderr, "convert: out of memory\n");
            abort();
        }
        s->r = r;
        s->cap = cap;
    }
    RawRecord *r = &s->r[s->n++];
    memset(r, 0, sizeof *r);
    for (int k = 0; k < PREP_MAX_LABELS; k++) r->labels[k] = -1;
    r->view = r->laterality = r->src_split = -1;
    return r;
}

static void rawrecord_free(RawRecord *r) {
    free(r->image_path);
    free(r->boxes);
    for (int k = 0; k < r->n_masks; k++) free(r->masks[k].path);
    free(r->masks);
    for (int k = 0; k < r->n_shapes; k++) free(r->shapes[k].xy);
    free(r->shapes);
}

void rawset_pop(RawSet *s) {
    if (s->n) rawrecord_free(&s->r[--s->n]);
}

void rawset_free(RawSet *s) {
    for (size_t i = 0; i < s->n; i++) rawrecord_free(&s->r[i]);
    free(s->r);
    memset(s, 0, sizeof *s);
}

#define PUSH(arr, n, cap)                                                     \
    do {                                                                      \
        if ((n) == (cap)) {                                                   \
            (cap) = (cap) ? 2 * (cap) : 4;                                    \
            void *q_ = realloc((arr), (size_t)(cap) * sizeof *(arr));         \
            if (!q_) { fprintf(stderr, "convert: out of memory\n"); abort(); } \
            (arr) = q_;                                                       \
        }                                                                     \
    } while (0)

static int32_t *no_values(int32_t *v) {
    for (int k = 0; k < PREP_MAX_LABELS; k++) v[k] = -1;
    return v;
}

int32_t *raw_add_box(RawRecord *r, float x0, float y0, float x1, float y1, int label) {
    PUSH(r->boxes, r->n_boxes, r->cap_boxes);
    r->boxes[r->n_boxes] = (PrepBox){x0, y0, x1, y1, label, {0}};
    return no_values(r->boxes[r->n_boxes++].values);
}

int32_t *raw_add_mask(RawRecord *r, const char *path, int box_label, int search) {
    PUSH(r->masks, r->n_masks, r->cap_masks);
    r->masks[r->n_masks] = (RawMaskRef){strdup(path), box_label, search, {0}};
    return no_values(r->masks[r->n_masks++].box_values);
}

int32_t *raw_add_polygon(RawRecord *r, const float *xy, int n, int to_mask, int box_label) {
    PUSH(r->shapes, r->n_shapes, r->cap_shapes);
    RawShape *s = &r->shapes[r->n_shapes++];
    memset(s, 0, sizeof *s);
    s->kind = RAW_POLYGON;
    s->xy = xmalloc((size_t)(n > 0 ? n : 1) * 2 * sizeof(float));
    memcpy(s->xy, xy, (size_t)n * 2 * sizeof(float));
    s->n = n;
    s->to_mask = to_mask;
    s->box_label = box_label;
    return no_values(s->box_values);
}

int32_t *raw_add_circle(RawRecord *r, float cx, float cy, float rad, int to_mask, int box_label) {
    PUSH(r->shapes, r->n_shapes, r->cap_shapes);
    RawShape *s = &r->shapes[r->n_shapes++];
    memset(s, 0, sizeof *s);
    s->kind = RAW_CIRCLE;
    s->cx = cx;
    s->cy = cy;
    s->r = rad;
    s->to_mask = to_mask;
    s->box_label = box_label;
    return no_values(s->box_values);
}

/* ------------------------------------------------------------------------------------------ */
/* masks */

/* pixel centres inside the polygon (even-odd rule) */
/* Coordinates come from label files: clamp in float before converting, since a cast of a value
 * outside int's range (1e30, inf, NaN) is undefined behaviour. */
static int clamp_to_int(float v, int lo, int hi) {
    return v >= (float)hi ? hi : v > (float)lo ? (int)v : lo;   /* NaN -> lo */
}

static void fill_polygon(uint16_t *m, int W, int H, const float *xy, int n) {
    if (n < 3) return;
    for (int k = 0; k < 2 * n; k++)
        if (!isfinite(xy[k])) return;   /* a vertex at NaN/inf outlines nothing */
    float ymin = xy[1], ymax = xy[1];
    for (int k = 1; k < n; k++) {
        ymin = fminf(ymin, xy[2 * k + 1]);
        ymax = fmaxf(ymax, xy[2 * k + 1]);
    }
    int y0 = clamp_to_int(floorf(ymin), 0, H), y1 = clamp_to_int(ceilf(ymax), -1, H - 1);
    float xs[512];
    for (int y = y0; y <= y1; y++) {
        float yc = y + 0.5f;
        int nx = 0;
        for (int k = 0; k < n && nx < 512; k++) {
            float ax = xy[2 * k], ay = xy[2 * k + 1];
            float bx = xy[2 * ((k + 1) % n)], by = xy[2 * ((k + 1) % n) + 1];
            if ((ay <= yc && by > yc) || (by <= yc && ay > yc)) xs[nx++] = ax + (yc - ay) / (by - ay) * (bx - ax);
        }
        for (int i = 1; i < nx; i++)   /* insertion sort: a handful of crossings */
            for (int j = i; j > 0 && xs[j] < xs[j - 1]; j--) {
                float t = xs[j];
                xs[j] = xs[j - 1];
                xs[j - 1] = t;
            }
        for (int i = 0; i + 1 < nx; i += 2) {
            /* pixel x is inside when xs[i] <= x + 0.5 < xs[i+1] */
            int xa = clamp_to_int(ceilf(xs[i] - 0.5f), 0, W), xb = clamp_to_int(ceilf(xs[i + 1] - 0.5f), 0, W);
            for (int x = xa; x < xb; x++) m[(size_t)y * W + x] = 1;
        }
    }
}

static void fill_circle(uint16_t *m, int W, int H, float cx, float cy, float r) {
    if (!isfinite(cx) || !isfinite(cy) || !(r >= 0) || !isfinite(r)) return;
    int y0 = clamp_to_int(floorf(cy - r), 0, H), y1 = clamp_to_int(ceilf(cy + r), -1, H - 1);
    int x0 = clamp_to_int(floorf(cx - r), 0, W), x1 = clamp_to_int(ceilf(cx + r), -1, W - 1);
    for (int y = y0; y <= y1; y++)
        for (int x = x0; x <= x1; x++) {
            float dx = x + 0.5f - cx, dy = y + 0.5f - cy;
            if (dx * dx + dy * dy <= r * r) m[(size_t)y * W + x] = 1;
        }
}

/* 1 if im is binary (<= 2 distinct values, one of them 0) */
static int is_binary(const Image *im) {
    uint16_t a = 0, b = 0;
    int na = 0;
    size_t n = (size_t)im->w * im->h;
    for (size_t i = 0; i < n; i++) {
        uint16_t v = im->px[i];
        if (v == 0) continue;
        if (!na) {
            a = v;
            na = 1;
        } else if (v != a) {
            b = v;
            return 0;
        }
    }
    (void)b;
    return 1;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int list_images(const char *dir, char ***out, int *cap, int n, int depth) {
    DIR *d = opendir(dir);
    if (!d) return n;
    struct dirent *de;
    while (n >= 0 && (de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *p = path_join(dir, de->d_name);
        if (is_dir(p)) {
            if (depth < RAW_SEARCH_MAX_DEPTH) n = list_images(p, out, cap, n, depth + 1);
            free(p);
            continue;
        }
        const char *ext = strrchr(de->d_name, '.');
        if (!ext || (strcasecmp(ext, ".dcm") && strcasecmp(ext, ".dicom") && strcasecmp(ext, ".png"))) {
            free(p);
            continue;
        }
        if (n == RAW_SEARCH_MAX_FILES) {
            free(p);
            n = -1;
            break;
        }
        if (n == *cap) {
            *cap = *cap ? 2 * *cap : 8;
            *out = xrealloc(*out, (size_t)*cap * sizeof **out);
        }
        (*out)[n++] = p;
    }
    closedir(d);
    return n;
}

int raw_list_images(const char *dir, char ***files) {
    int cap = 0;
    *files = NULL;
    int n = list_images(dir, files, &cap, 0, 0);
    if (n > 1) qsort(*files, (size_t)n, sizeof **files, cmp_str);
    return n;
}

/* 1 when dir lies strictly inside root (after resolving "..", "." and links). */
static int is_inside(const char *dir, const char *root) {
    char *d = root ? realpath(dir, NULL) : NULL, *r = root ? realpath(root, NULL) : NULL;
    size_t lr = r ? strlen(r) : 0;
    int in = d && r && strncmp(d, r, lr) == 0 && (d[lr] == '/' || (lr == 1 && d[1]));
    free(d);
    free(r);
    return in;
}

/* Load the binary mask for ref: the file itself when it is binary and of the image's size, else
 * (ref->search) the first such image in its folder tree (CBIS-DDSM ROI folders hold the mask and
 * the crop in no fixed order).  The search never leaves the raw root. */
static int load_mask_ref(const RawMaskRef *ref, const char *root, int W, int H, Image *out, Err *e) {
    Image m = {0};
    Err e1;
    if (!is_dir(ref->path)) {
        if (image_load(ref->path, &m, &e1) == 0) {
            if (m.w == W && m.h == H && is_binary(&m)) {
                *out = m;
                return 0;
            }
            image_free(&m);
            if (!ref->search) return err_set(e, "%s: not a binary mask of the image size %dx%d", ref->path, W, H);
        } else if (!ref->search || path_exists(ref->path)) {
            *e = e1;
            return 1;
        }
    } else if (!ref->search) {
        return err_set(e, "%s: a folder, not a mask image", ref->path);
    }
    /* search the directory (or the file's directory) */
    char *dir = strdup(ref->path);
    if (!is_dir(dir)) {
        char *slash = strrchr(dir, '/');
        if (slash) *slash = 0;
        else strcpy(dir, ".");
    }
    if (!is_inside(dir, root)) {
        err_set(e, "%s: no mask there, and its folder is not inside the raw root %s to search", ref->path, root ? root : "(none)");
        free(dir);
        return 1;
    }
    char **files = NULL;
    int n = raw_list_images(dir, &files);
    int listed = n < 0 ? RAW_SEARCH_MAX_FILES : n, found = 0;
    if (n < 0) {
        err_set(e, "%s: more than %d images under %s; not searched for the ROI mask", ref->path, RAW_SEARCH_MAX_FILES, dir);
    } else {
        for (int k = 0; k < n && !found; k++) {
            if (image_load(files[k], &m, &e1) == 0) {
                if (m.w == W && m.h == H && is_binary(&m)) found = 1;
                else image_free(&m);
            }
        }
        if (!found)
            err_set(e, "%s: no binary mask of the image size %dx%d%s", ref->path, W, H,
                    n ? " among the files there" : " (missing)");
    }
    for (int k = 0; k < listed; k++) free(files[k]);
    free(files);
    free(dir);
    if (!found) return 1;
    *out = m;
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* one record */

typedef struct Done {
    int ok;
    Err err;
    PrepEncoded enc;
    PrepBox *boxes;
    int n_boxes;
    int has_mask, mask_nonempty;
    int orig_h, orig_w;
    float transform[7];
} Done;

static int convert_one(const RawRecord *r, const PrepSchema *schema, const ConvertOpts *o, Done *d, Err *e) {
    Image im = {0}, out = {0}, src_mask = {0}, out_mask = {0};
    int rc = 1;
    const char *ext = strrchr(r->image_path, '.');
    int is_dicom = ext && (!strcasecmp(ext, ".dcm") || !strcasecmp(ext, ".dicom"));
    if (is_dicom ? dicom_load_image(r->image_path, &o->dicom, &im, NULL, e) : image_load(r->image_path, &im, e)) return 1;
    d->orig_h = im.h;
    d->orig_w = im.w;
    if (o->minmax && image_rescale_minmax(&im, im.bits, &im, e)) goto done;
    PrepOpts po = o->prep;
    po.out_w = o->width;
    po.out_h = o->height;
    PrepTransform T;
    char lat = r->laterality == PREP_LAT_L ? 'L' : r->laterality == PREP_LAT_R ? 'R' : 0;
    prep_plan(&im, lat, &po, &T);
    if (prep_apply_image(&T, &im, &out, e)) goto done;
    if (out.w != o->width || out.h != o->height) {
        err_set(e, "%s: preprocessing gave %dx%d, expected %dx%d", r->image_path, out.w, out.h, o->width, o->height);
        goto done;
    }
    /* boxes in source pixels: explicit ones, then mask and shape extents */
    int cap = r->n_boxes + r->n_masks + r->n_shapes;
    BoxF *bf = malloc((size_t)(cap ? cap : 1) * sizeof *bf);
    PrepBox *bl = malloc((size_t)(cap ? cap : 1) * sizeof *bl);   /* label and values of box k */
    if (!bf || !bl) {
        free(bf);
        free(bl);
        err_set(e, "%s: out of memory for %d annotations", r->image_path, cap);
        goto done;
    }
    int nb = 0;
    for (int k = 0; k < r->n_boxes; k++) {
        PrepBox b = r->boxes[k];
        if (r->y_up) {
            float y0 = (float)(im.h - 1) - b.y1 + 1.0f, y1 = (float)(im.h - 1) - b.y0 + 1.0f;
            b.y0 = y0;
            b.y1 = y1;
        }
        bf[nb] = (BoxF){b.x0, b.y0, b.x1, b.y1};
        bl[nb++] = b;
    }
    if (schema->has_masks) {
        if (image_alloc(&src_mask, im.w, im.h, 8, e)) {
            free(bf);
            free(bl);
            goto done;
        }
    }
    for (int k = 0; k < r->n_masks; k++) {
        Image m;
        if (load_mask_ref(&r->masks[k], o->raw_root, im.w, im.h, &m, e)) {
            free(bf);
            free(bl);
            goto done;
        }
        int x0 = m.w, y0 = m.h, x1 = -1, y1 = -1;
        for (int y = 0; y < m.h; y++)
            for (int x = 0; x < m.w; x++)
                if (m.px[(size_t)y * m.w + x]) {
                    if (src_mask.px) src_mask.px[(size_t)y * m.w + x] = 1;
                    if (x < x0) x0 = x;
                    if (x > x1) x1 = x;
                    if (y < y0) y0 = y;
                    if (y > y1) y1 = y;
                }
        image_free(&m);
        if (x1 >= 0 && r->masks[k].box_label >= -1) {
            bf[nb] = (BoxF){(float)x0, (float)y0, (float)x1 + 1, (float)y1 + 1};
            bl[nb] = (PrepBox){.label = r->masks[k].box_label};
            memcpy(bl[nb++].values, r->masks[k].box_values, sizeof bl->values);
        }
    }
    for (int k = 0; k < r->n_shapes; k++) {
        RawShape s = r->shapes[k];
        float *xy = NULL;
        if (s.kind == RAW_POLYGON) {
            xy = xmalloc((size_t)(s.n > 0 ? s.n : 1) * 2 * sizeof(float));
            memcpy(xy, s.xy, (size_t)s.n * 2 * sizeof(float));
            if (r->y_up)
                for (int v = 0; v < s.n; v++) xy[2 * v + 1] = (float)(im.h - 1) - xy[2 * v + 1];
        } else if (r->y_up) {
            s.cy = (float)(im.h - 1) - s.cy;
        }
        if (s.to_mask && src_mask.px) {
            if (s.kind == RAW_POLYGON) fill_polygon(src_mask.px, im.w, im.h, xy, s.n);
            else fill_circle(src_mask.px, im.w, im.h, s.cx + 0.5f, s.cy + 0.5f, s.r);
        }
        if (s.box_label >= -1) {
            BoxF b;
            if (s.kind == RAW_POLYGON && s.n > 0) {
                b = (BoxF){xy[0], xy[1], xy[0], xy[1]};
                for (int v = 1; v < s.n; v++) {
                    b.x0 = fminf(b.x0, xy[2 * v]);
                    b.x1 = fmaxf(b.x1, xy[2 * v]);
                    b.y0 = fminf(b.y0, xy[2 * v + 1]);
                    b.y1 = fmaxf(b.y1, xy[2 * v + 1]);
                }
            } else {   /* circle centred on pixel (cx, cy) */
                b = (BoxF){s.cx + 0.5f - s.r, s.cy + 0.5f - s.r, s.cx + 0.5f + s.r, s.cy + 0.5f + s.r};
            }
            bf[nb] = b;
            bl[nb] = (PrepBox){.label = s.box_label};
            memcpy(bl[nb++].values, s.box_values, sizeof bl->values);
        }
        free(xy);
    }
    /* clip to the source image, then follow the preprocessing */
    for (int k = 0; k < nb; k++) {
        bf[k].x0 = fminf(fmaxf(bf[k].x0, 0), (float)im.w);
        bf[k].x1 = fminf(fmaxf(bf[k].x1, 0), (float)im.w);
        bf[k].y0 = fminf(fmaxf(bf[k].y0, 0), (float)im.h);
        bf[k].y1 = fminf(fmaxf(bf[k].y1, 0), (float)im.h);
    }
    prep_apply_boxes(&T, bf, (size_t)nb);
    d->boxes = xmalloc((size_t)(nb > 0 ? nb : 1) * sizeof *d->boxes);
    d->n_boxes = 0;
    for (int k = 0; k < nb; k++)
        if (bf[k].x1 > bf[k].x0 && bf[k].y1 > bf[k].y0) {   /* cropped away otherwise */
            PrepBox b = bl[k];
            b.x0 = bf[k].x0, b.y0 = bf[k].y0, b.x1 = bf[k].x1, b.y1 = bf[k].y1;
            d->boxes[d->n_boxes++] = b;
        }
    free(bf);
    free(bl);

    /* pixels to the stored bit depth */
    size_t npx = (size_t)o->width * o->height;
    void *px = malloc(npx * (o->bits == 8 ? 1 : 2));
    if (!px) {
        err_set(e, "%s: out of memory for a %dx%d output image", r->image_path, o->width, o->height);
        goto done;
    }
    uint32_t smax = image_maxval(&out), tmax = o->bits == 8 ? 255u : 65535u;
    if (o->bits == 8) {
        uint8_t *p8 = px;
        for (size_t i = 0; i < npx; i++) p8[i] = (uint8_t)(((uint64_t)out.px[i] * tmax + smax / 2) / smax);
    } else {
        uint16_t *p16 = px;
        for (size_t i = 0; i < npx; i++) p16[i] = (uint16_t)(((uint64_t)out.px[i] * tmax + smax / 2) / smax);
    }
    uint8_t *mask8 = NULL;
    if (src_mask.px) {
        if (prep_apply_mask(&T, &src_mask, &out_mask, e)) {
            free(px);
            goto done;
        }
        mask8 = malloc(npx);
        if (!mask8) {
            free(px);
            err_set(e, "%s: out of memory for a %dx%d mask", r->image_path, o->width, o->height);
            goto done;
        }
        int any = 0;
        for (size_t i = 0; i < npx; i++) any |= (mask8[i] = out_mask.px[i] != 0);
        d->mask_nonempty = any;
        d->has_mask = any || r->annotated || r->n_masks > 0 || r->n_shapes > 0;
    }
    PrepSample smp = {.pixels = px, .mask = d->has_mask ? mask8 : NULL, .image_id = r->image_id};
    rc = prep_encode(schema, &smp, &d->enc, e);
    free(px);
    free(mask8);
    d->transform[0] = (float)T.crop.x0;
    d->transform[1] = (float)T.crop.y0;
    d->transform[2] = (float)T.crop.x1;
    d->transform[3] = (float)T.crop.y1;
    d->transform[4] = (float)T.flip;
    d->transform[5] = T.sx;
    d->transform[6] = T.sy;
done:
    image_free(&im);
    image_free(&out);
    image_free(&src_mask);
    image_free(&out_mask);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* the run */

int convert_run(RawSet *s, const ConvertOpts *o, ConvertStats *st, Err *e) {
    ConvertStats dummy;
    if (!st) st = &dummy;
    memset(st, 0, sizeof *st);
    if (o->width < 1 || o->height < 1) return err_set(e, "convert: output size %dx%d not set", o->width, o->height);
    if (o->bits != 8 && o->bits != 16) return err_set(e, "convert: bits %d must be 8 or 16", o->bits);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    size_t n = s->n;
    if (o->limit > 0 && (size_t)o->limit < n) n = (size_t)o->limit;
    if (n == 0) return err_set(e, "%s: no images found to convert", o->raw_root ? o->raw_root : "?");

    /* patient-disjoint splits over the records being written */
    const char **pat = xmalloc(n * sizeof *pat);
    int *src = xmalloc(n * sizeof *src), *split = xmalloc(n * sizeof *split);
    for (size_t i = 0; i < n; i++) {
        pat[i] = s->r[i].patient_id;
        src[i] = s->r[i].src_split;
    }
    assign_splits(pat, src, n, &o->split, split, &st->n_split_conflicts);
    free(pat);
    free(src);

    PrepSchema schema = s->schema;
    schema.height = o->height;
    schema.width = o->width;
    schema.bits = o->bits;
    schema.gzip = o->gzip;
    schema.source = o->raw_root;
    char pre[256];
    snprintf(pre, sizeof pre, "crop=%d flip=%s size=%dx%d keep_aspect=%d resize=%s bits=%d minmax=%d", o->prep.crop,
             o->prep.flip == FLIP_NONE ? "none" : o->prep.flip == FLIP_AUTO ? "auto" : "tissue", o->width, o->height,
             o->prep.keep_aspect, o->prep.mode == RESIZE_BILINEAR ? "bilinear" : o->prep.mode == RESIZE_AREA ? "area" : "nearest",
             o->bits, o->minmax);
    schema.preprocess = pre;
    PrepWriter *w;
    if (prep_writer_open(&w, o->out_path, &schema, e)) {
        free(split);
        return 1;
    }
    int nth = omp_get_max_threads();
    size_t block = (size_t)(4 * nth);
    Done *done = calloc(block, sizeof *done);
    if (!done) {
        free(split);
        prep_writer_abort(w);
        return err_set(e, "convert: out of memory");
    }
    int rc = 0;
    for (size_t b0 = 0; b0 < n && !rc; b0 += block) {
        size_t bn = n - b0 < block ? n - b0 : block;
        /* images are independent and land in their own slot: any schedule gives the same file */
#pragma omp parallel for schedule(dynamic, 1)
        for (size_t k = 0; k < bn; k++) {
            Done *d = &done[k];
            memset(d, 0, sizeof *d);
            d->ok = convert_one(&s->r[b0 + k], &schema, o, d, &d->err) == 0;
        }
        for (size_t k = 0; k < bn && !rc; k++) {
            Done *d = &done[k];
            const RawRecord *r = &s->r[b0 + k];
            if (!d->ok) {
                if (o->on_missing == CONVERT_FAIL) {
                    *e = d->err;
                    rc = 1;
                } else {
                    if (st->n_skipped++ == 0) snprintf(st->first_skip, sizeof st->first_skip, "%s", d->err.msg);
                    if (o->verbose) fprintf(stderr, "convert: skipping %s\n", d->err.msg);
                }
                continue;
            }
            PrepSample smp = {.labels = r->labels,
                              .findings = r->findings,
                              .boxes = d->boxes,
                              .n_boxes = d->n_boxes,
                              .view = r->view,
                              .laterality = r->laterality,
                              .split = split[b0 + k],
                              .patient_id = r->patient_id,
                              .image_id = r->image_id,
                              .orig_h = d->orig_h,
                              .orig_w = d->orig_w};
            memcpy(smp.transform, d->transform, sizeof smp.transform);
            if (prep_writer_add_encoded(w, &smp, &d->enc, e)) {
                rc = 1;
                continue;
            }
            st->n_written++;
            st->n_boxes += d->n_boxes;
            st->n_masks += d->mask_nonempty;
            st->n_split[split[b0 + k]]++;
        }
        for (size_t k = 0; k < bn; k++) {
            prep_encoded_free(&done[k].enc);
            free(done[k].boxes);
            done[k].boxes = NULL;
        }
        if (o->verbose && !rc) fprintf(stderr, "convert: %zu / %zu images\n", b0 + bn, n);
    }
    free(done);
    free(split);
    if (!rc && st->n_written == 0) {
        err_set(e, "%s: every image was skipped (first: %s)", o->out_path, st->first_skip);
        rc = 1;
    }
    if (rc) {
        prep_writer_abort(w);
        return 1;
    }
    if (prep_writer_close(w, e)) return 1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    st->seconds = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    return 0;
}

int convert_dataset(const char *name, const ConvertOpts *o, ConvertStats *st, Err *e) {
    static const struct {
        const char *name;
        int (*fn)(const ConvertOpts *, ConvertStats *, Err *);
    } tab[] = {{"vindr", convert_vindr},   {"cbis-ddsm", convert_cbis}, {"cbis-ddsm-roi", convert_cbis_roi},
               {"inbreast", convert_inbreast}, {"cmmd", convert_cmmd}, {"rsna", convert_rsna},
               {"embed", convert_embed},   {"mias", convert_mias},      {"manifest", convert_manifest}};
    for (size_t k = 0; k < sizeof tab / sizeof *tab; k++)
        if (strcmp(name, tab[k].name) == 0) return tab[k].fn(o, st, e);
    if (strcmp(name, "vindr-mammo") == 0) return convert_vindr(o, st, e);
    if (strcmp(name, "cbis") == 0) return convert_cbis(o, st, e);
    if (strcmp(name, "cbis-roi") == 0) return convert_cbis_roi(o, st, e);
    return err_set(e, "unknown dataset '%s' (known: vindr, cbis-ddsm, cbis-ddsm-roi, inbreast, cmmd, rsna, embed, mias, manifest)", name);
}

/* ------------------------------------------------------------------------------------------ */
/* value parsers */

static const char *skip_ws(const char *s) {
    while (*s == ' ' || *s == '\t') s++;
    return s;
}

static int is_empty_value(const char *s) {
    s = skip_ws(s);
    return !*s || !strcasecmp(s, "nan") || !strcasecmp(s, "na") || !strcasecmp(s, "none") || !strcasecmp(s, "null");
}

/* s with trailing blanks removed, into buf */
static const char *trimmed(const char *s, char *buf, size_t n) {
    s = skip_ws(s);
    snprintf(buf, n, "%s", s);
    size_t l = strlen(buf);
    while (l && (buf[l - 1] == ' ' || buf[l - 1] == '\t' || buf[l - 1] == '\r' || buf[l - 1] == '\n')) buf[--l] = 0;
    return buf;
}

int parse_density(const char *s) {
    if (is_empty_value(s)) return -1;
    char b[64];
    const char *t = trimmed(s, b, sizeof b);
    if (!strncasecmp(t, "DENSITY", 7)) t = skip_ws(t + 7);
    if (t[0] && !t[1]) {
        if (t[0] >= 'A' && t[0] <= 'D') return t[0] - 'A';
        if (t[0] >= 'a' && t[0] <= 'd') return t[0] - 'a';
        if (t[0] >= '1' && t[0] <= '4') return t[0] - '1';
    }
    if (!strcmp(t, "1.0") || !strcmp(t, "2.0") || !strcmp(t, "3.0") || !strcmp(t, "4.0")) return t[0] - '1';
    return -2;
}

int parse_birads(const char *s) {
    if (is_empty_value(s)) return -1;
    char b[64];
    const char *t = trimmed(s, b, sizeof b);
    if (!strncasecmp(t, "BI-RADS", 7)) t = skip_ws(t + 7);
    else if (!strncasecmp(t, "BIRADS", 6)) t = skip_ws(t + 6);
    else if (!strncasecmp(t, "BIRAD", 5)) t = skip_ws(t + 5);
    if (t[0] >= '0' && t[0] <= '6') {
        if (!t[1] || !strcmp(t + 1, ".0")) return t[0] - '0';
        if (t[0] == '4' && (t[1] == 'a' || t[1] == 'b' || t[1] == 'c' || t[1] == 'A' || t[1] == 'B' || t[1] == 'C') && !t[2])
            return 4;
    }
    return -2;
}

int parse_view(const char *s) {
    if (is_empty_value(s)) return -1;
    char b[32];
    const char *t = trimmed(s, b, sizeof b);
    if (!strcasecmp(t, "CC")) return PREP_VIEW_CC;
    if (!strcasecmp(t, "MLO")) return PREP_VIEW_MLO;
    return PREP_VIEW_OTHER;
}

int parse_laterality(const char *s) {
    if (is_empty_value(s)) return -1;
    char b[32];
    const char *t = trimmed(s, b, sizeof b);
    if (!strcasecmp(t, "L") || !strcasecmp(t, "LEFT")) return PREP_LAT_L;
    if (!strcasecmp(t, "R") || !strcasecmp(t, "RIGHT")) return PREP_LAT_R;
    return -2;
}

int err_value(Err *e, const Csv *csv, size_t row, const char *col, const char *v) {
    return err_set(e, "%s:%zu: column '%s': unknown value '%s'", csv->path, csv->line[row], col, v);
}

/* ------------------------------------------------------------------------------------------ */
/* string index */

typedef struct KV {
    const char *k;
    size_t v;
} KV;

static int kv_cmp(const void *a, const void *b) {
    const KV *x = a, *y = b;
    int c = strcmp(x->k, y->k);
    return c ? c : (x->v < y->v ? -1 : x->v > y->v);
}

void strindex_build(StrIndex *ix, const char *const *keys, size_t n) {
    KV *kv = xmalloc((n ? n : 1) * sizeof *kv);
    for (size_t i = 0; i < n; i++) kv[i] = (KV){keys[i], i};
    qsort(kv, n, sizeof *kv, kv_cmp);
    ix->key = xmalloc((n ? n : 1) * sizeof *ix->key);
    ix->val = xmalloc((n ? n : 1) * sizeof *ix->val);
    for (size_t i = 0; i < n; i++) {
        ix->key[i] = kv[i].k;
        ix->val[i] = kv[i].v;
    }
    ix->n = n;
    free(kv);
}

long strindex_find(const StrIndex *ix, const char *key) {
    size_t lo = 0, hi = ix->n;
    while (lo < hi) {   /* first key >= key */
        size_t mid = (lo + hi) / 2;
        if (strcmp(ix->key[mid], key) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < ix->n && strcmp(ix->key[lo], key) == 0 ? (long)ix->val[lo] : -1;
}

size_t strindex_range(const StrIndex *ix, const char *key, size_t *first) {
    size_t lo = 0, hi = ix->n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (strcmp(ix->key[mid], key) < 0) lo = mid + 1;
        else hi = mid;
    }
    *first = lo;
    size_t n = 0;
    while (lo + n < ix->n && strcmp(ix->key[lo + n], key) == 0) n++;
    return n;
}

void strindex_free(StrIndex *ix) {
    free(ix->key);
    free(ix->val);
    memset(ix, 0, sizeof *ix);
}
