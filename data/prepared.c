/*
 * prepared.c — the prepared HDF5 dataset: writer (raw chunk writes of pre-compressed images),
 * validating reader (raw chunk reads, inflated outside the HDF5 lock), patient-disjoint split
 * assignment and corpora.  The format is documented at the top of data/prepared.h.
 */
#include "data/prepared.h"

#include <hdf5.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <zlib.h>

#define PREP_FORMAT "versa-prepared"
#define PREP_VERSION 1
/* Sanity limits for sizes read from a file (checked before allocating): 16.7 M samples is 30x
 * the largest public mammography corpus; one metadata table at most 1 GiB. */
#define PREP_MAX_SAMPLES ((long)1 << 24)
#define PREP_MAX_ARRAY_BYTES ((size_t)1 << 30)

/* ------------------------------------------------------------------------------------------ */
/* HDF5 plumbing: silence the automatic error printing for the duration of a call (we report
 * through Err), and serialise calls when the library was built without thread safety. */

static pthread_mutex_t h5_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_once_t h5_once = PTHREAD_ONCE_INIT;
static int h5_threadsafe;

static void h5_probe(void) {
    hbool_t ts = 0;
    H5is_library_threadsafe(&ts);
    h5_threadsafe = ts ? 1 : 0;
}

typedef struct H5Guard {
    H5E_auto2_t func;
    void *data;
    int locked;
} H5Guard;

static H5Guard h5_enter(void) {
    H5Guard g = {0};
    pthread_once(&h5_once, h5_probe);
    if (!h5_threadsafe) {
        pthread_mutex_lock(&h5_mutex);
        g.locked = 1;
    }
    H5Eget_auto2(H5E_DEFAULT, &g.func, &g.data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return g;
}

static void h5_leave(H5Guard *g) {
    H5Eset_auto2(H5E_DEFAULT, g->func, g->data);
    if (g->locked) pthread_mutex_unlock(&h5_mutex);
}

static int attr_write_int(hid_t obj, const char *name, long v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I64LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    int64_t x = v;
    herr_t r = a < 0 ? -1 : H5Awrite(a, H5T_NATIVE_INT64, &x);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    return r < 0;
}

static int attr_write_str(hid_t obj, const char *name, const char *s) {
    if (!s) s = "";
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, strlen(s) + 1);
    H5Tset_strpad(t, H5T_STR_NULLTERM);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, t, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t r = a < 0 ? -1 : H5Awrite(a, t, s);
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(t);
    return r < 0;
}

/* 1 when attribute a holds exactly one value (scalar or one-element): H5Aread writes every
 * element, so reading a file's array attribute into one variable would overflow it. */
static int attr_is_single(hid_t a) {
    hid_t sp = H5Aget_space(a);
    hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (sp >= 0) H5Sclose(sp);
    return n == 1;
}

static int attr_read_int(hid_t obj, const char *name, long *v) {
    if (H5Aexists(obj, name) <= 0) return 1;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return 1;
    int64_t x = 0;
    herr_t r = attr_is_single(a) ? H5Aread(a, H5T_NATIVE_INT64, &x) : -1;
    H5Aclose(a);
    *v = (long)x;
    return r < 0;
}

/* Reads a fixed- or variable-length string attribute into a malloc'd string (NULL on error). */
static char *attr_read_str(hid_t obj, const char *name) {
    if (H5Aexists(obj, name) <= 0) return NULL;
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) return NULL;
    hid_t ft = H5Aget_type(a);
    char *out = NULL;
    if (H5Tget_class(ft) == H5T_STRING && attr_is_single(a)) {
        if (H5Tis_variable_str(ft) > 0) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, H5T_VARIABLE);
            char *v = NULL;
            if (H5Aread(a, mt, &v) >= 0 && v) {
                out = strdup(v);
                H5free_memory(v);
            }
            H5Tclose(mt);
        } else {
            size_t sz = H5Tget_size(ft);
            hid_t mt = H5Tcopy(H5T_C_S1);
            H5Tset_size(mt, sz + 1);
            H5Tset_strpad(mt, H5T_STR_NULLTERM);
            out = calloc(sz + 2, 1);
            if (out && H5Aread(a, mt, out) < 0) {
                free(out);
                out = NULL;
            }
            H5Tclose(mt);
        }
    }
    H5Tclose(ft);
    H5Aclose(a);
    return out;
}

/* '\n'-separated list -> names[n][PREP_NAME_LEN]; returns the count or -1 when over max */
static int split_names(const char *s, char (*names)[PREP_NAME_LEN], int max) {
    int n = 0;
    if (!s || !*s) return 0;
    const char *p = s;
    for (;;) {
        const char *q = strchr(p, '\n');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (n >= max) return -1;
        if (len >= PREP_NAME_LEN) len = PREP_NAME_LEN - 1;
        memcpy(names[n], p, len);
        names[n][len] = 0;
        n++;
        if (!q) break;
        p = q + 1;
    }
    return n;
}

static int count_names(const char *s) {
    if (!s || !*s) return 0;
    int n = 1;
    for (; *s; s++) n += *s == '\n';
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Writer */

struct PrepWriter {
    PrepSchema s;
    char *path, *tmp;
    hid_t file, images, masks;
    int n_findings;
    uint8_t per_box[PREP_MAX_LABELS];   /* label k has /box_labels/<name> (schema box_labels) */
    size_t n, cap;
    /* per-sample metadata, written at close */
    int32_t *labels;          /* (cap, n_labels) */
    uint8_t *findings;        /* (cap, F) */
    int8_t *view, *lat;
    uint8_t *split, *mask_present;
    char *patient, *image_id; /* (cap, LEN) */
    int32_t *orig_size;       /* (cap, 2) */
    float *transform;         /* (cap, 7) */
    PrepBox *boxes;
    size_t n_boxes, boxes_cap;
    int64_t *box_offset;      /* (cap + 1) */
    /* copies of the schema strings */
    char *str_pool[2 * PREP_MAX_LABELS + 4];
    int n_str;
};

static const char *keep_str(PrepWriter *w, const char *s) {
    if (!s) return NULL;
    char *c = strdup(s);
    w->str_pool[w->n_str++] = c;
    return c;
}

static void writer_free(PrepWriter *w) {
    free(w->path);
    free(w->tmp);
    free(w->labels);
    free(w->findings);
    free(w->view);
    free(w->lat);
    free(w->split);
    free(w->mask_present);
    free(w->patient);
    free(w->image_id);
    free(w->orig_size);
    free(w->transform);
    free(w->boxes);
    free(w->box_offset);
    for (int i = 0; i < w->n_str; i++) free(w->str_pool[i]);
    free(w);
}

static hid_t create_image_dset(hid_t file, const char *name, hid_t type, int h, int w, int gzip) {
    hsize_t dims[3] = {0, (hsize_t)h, (hsize_t)w};
    hsize_t maxd[3] = {H5S_UNLIMITED, (hsize_t)h, (hsize_t)w};
    hsize_t chunk[3] = {1, (hsize_t)h, (hsize_t)w};
    hid_t sp = H5Screate_simple(3, dims, maxd);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    H5Pset_chunk(dcpl, 3, chunk);
    if (gzip > 0) H5Pset_deflate(dcpl, (unsigned)gzip);
    /* unwritten chunks (samples without a mask) read as zeros and take no space */
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_IFSET);
    hid_t d = H5Dcreate2(file, name, type, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return d;
}

int prep_writer_open(PrepWriter **out, const char *path, const PrepSchema *s, Err *e) {
    *out = NULL;
    if (s->bits != 8 && s->bits != 16) return err_set(e, "%s: bits must be 8 or 16, got %d", path, s->bits);
    if (s->height < 1 || s->width < 1 || s->height > 16384 || s->width > 16384)
        return err_set(e, "%s: bad image size %dx%d", path, s->width, s->height);
    if (s->gzip < 0 || s->gzip > 9) return err_set(e, "%s: gzip level %d not in 0..9", path, s->gzip);
    if (s->n_labels < 0 || s->n_labels > PREP_MAX_LABELS)
        return err_set(e, "%s: %d labels (max %d)", path, s->n_labels, PREP_MAX_LABELS);
    for (int k = 0; k < s->n_labels; k++) {
        int nc = count_names(s->labels[k].classes);
        if (!s->labels[k].name || !*s->labels[k].name || strlen(s->labels[k].name) >= PREP_NAME_LEN ||
            strchr(s->labels[k].name, '/'))
            return err_set(e, "%s: label %d has a bad name", path, k);
        if (nc < 1 || nc > PREP_MAX_CLASSES)
            return err_set(e, "%s: label '%s' has %d classes (1..%d)", path, s->labels[k].name, nc, PREP_MAX_CLASSES);
    }
    int nf = count_names(s->findings);
    if (nf > PREP_MAX_FINDINGS) return err_set(e, "%s: %d finding classes (max %d)", path, nf, PREP_MAX_FINDINGS);
    uint8_t per_box[PREP_MAX_LABELS] = {0};
    char box_names[PREP_MAX_LABELS][PREP_NAME_LEN];
    int nb = split_names(s->box_labels, box_names, PREP_MAX_LABELS);
    if (nb < 0) return err_set(e, "%s: more than %d box labels", path, PREP_MAX_LABELS);
    for (int j = 0; j < nb; j++) {
        int k = 0;
        while (k < s->n_labels && strcmp(s->labels[k].name, box_names[j])) k++;
        if (k == s->n_labels) return err_set(e, "%s: box label '%s' is not one of the labels", path, box_names[j]);
        per_box[k] = 1;
    }

    PrepWriter *w = calloc(1, sizeof *w);
    w->s = *s;
    w->s.dataset = keep_str(w, s->dataset ? s->dataset : "");
    w->s.source = keep_str(w, s->source);
    w->s.preprocess = keep_str(w, s->preprocess);
    w->s.findings = keep_str(w, s->findings);
    for (int k = 0; k < s->n_labels; k++) {
        w->s.labels[k].name = keep_str(w, s->labels[k].name);
        w->s.labels[k].classes = keep_str(w, s->labels[k].classes);
    }
    w->s.box_labels = NULL;   /* kept as per_box */
    memcpy(w->per_box, per_box, sizeof per_box);
    w->n_findings = nf;
    w->path = strdup(path);
    w->tmp = malloc(strlen(path) + 5);
    sprintf(w->tmp, "%s.tmp", path);
    w->masks = -1;

    H5Guard g = h5_enter();
    w->file = H5Fcreate(w->tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (w->file < 0) {
        h5_leave(&g);
        writer_free(w);
        return err_set(e, "%s: cannot create file", path);
    }
    w->images = create_image_dset(w->file, "images", s->bits == 8 ? H5T_STD_U8LE : H5T_STD_U16LE, s->height,
                                  s->width, s->gzip);
    if (s->has_masks)
        w->masks = create_image_dset(w->file, "masks", H5T_STD_U8LE, s->height, s->width, s->gzip > 0 ? s->gzip : 1);
    h5_leave(&g);
    if (w->images < 0 || (s->has_masks && w->masks < 0)) {
        prep_writer_abort(w);
        return err_set(e, "%s: cannot create the image datasets", path);
    }
    *out = w;
    return 0;
}

static int deflate_bytes(const void *src, size_t n, int level, uint8_t **out, size_t *out_n) {
    uLongf cap = compressBound((uLong)n);
    *out = malloc(cap);
    if (!*out) return 1;
    if (compress2(*out, &cap, src, (uLong)n, level) != Z_OK) {
        free(*out);
        *out = NULL;
        return 1;
    }
    *out_n = cap;
    return 0;
}

int prep_encode(const PrepSchema *s, const PrepSample *smp, PrepEncoded *enc, Err *e) {
    memset(enc, 0, sizeof *enc);
    size_t npx = (size_t)s->height * s->width;
    size_t bytes = npx * (s->bits == 8 ? 1 : 2);
    if (s->gzip > 0) {
        if (deflate_bytes(smp->pixels, bytes, s->gzip, &enc->img, &enc->img_bytes))
            return err_set(e, "%s: compressing the image failed", smp->image_id ? smp->image_id : "?");
    } else {
        enc->img = malloc(bytes);
        if (!enc->img) return err_set(e, "out of memory encoding an image");
        memcpy(enc->img, smp->pixels, bytes);
        enc->img_bytes = bytes;
    }
    if (s->has_masks && smp->mask) {
        if (deflate_bytes(smp->mask, npx, s->gzip > 0 ? s->gzip : 1, &enc->mask, &enc->mask_bytes)) {
            prep_encoded_free(enc);
            return err_set(e, "%s: compressing the mask failed", smp->image_id ? smp->image_id : "?");
        }
    }
    return 0;
}

void prep_encoded_free(PrepEncoded *enc) {
    free(enc->img);
    free(enc->mask);
    memset(enc, 0, sizeof *enc);
}

static int grow_writer(PrepWriter *w) {
    size_t cap = w->cap ? 2 * w->cap : 256;
    int L = w->s.n_labels > 0 ? w->s.n_labels : 1, F = w->n_findings > 0 ? w->n_findings : 1;
#define GROW(p, per) do { void *q = realloc((p), cap * (per) * sizeof *(p)); if (!q) return 1; (p) = q; } while (0)
    GROW(w->labels, (size_t)L);
    GROW(w->findings, (size_t)F);
    GROW(w->view, 1);
    GROW(w->lat, 1);
    GROW(w->split, 1);
    GROW(w->mask_present, 1);
    GROW(w->patient, PREP_PATIENT_LEN);
    GROW(w->image_id, PREP_IMAGE_ID_LEN);
    GROW(w->orig_size, 2);
    GROW(w->transform, 7);
#undef GROW
    int64_t *bo = realloc(w->box_offset, (cap + 1) * sizeof *bo);
    if (!bo) return 1;
    w->box_offset = bo;
    if (w->cap == 0) w->box_offset[0] = 0;
    w->cap = cap;
    return 0;
}

int prep_writer_add_encoded(PrepWriter *w, const PrepSample *smp, const PrepEncoded *enc, Err *e) {
    const char *id = smp->image_id ? smp->image_id : "";
    if (smp->split < 0 || smp->split > 2) return err_set(e, "%s: sample '%s' has no split", w->path, id);
    for (int k = 0; k < w->s.n_labels; k++) {
        int32_t v = smp->labels ? smp->labels[k] : -1;
        int nc = count_names(w->s.labels[k].classes);
        if (v < -1 || v >= nc)
            return err_set(e, "%s: sample '%s': label '%s' = %d outside [-1, %d)", w->path, id, w->s.labels[k].name, v, nc);
        for (int b = 0; b < smp->n_boxes && w->per_box[k]; b++) {
            v = smp->boxes[b].values[k];
            if (v < -1 || v >= nc)
                return err_set(e, "%s: sample '%s': box %d: label '%s' = %d outside [-1, %d)", w->path, id, b,
                               w->s.labels[k].name, v, nc);
        }
    }
    if (w->n == w->cap && grow_writer(w)) return err_set(e, "%s: out of memory", w->path);
    size_t i = w->n;
    int L = w->s.n_labels, F = w->n_findings;
    for (int k = 0; k < L; k++) w->labels[i * L + k] = smp->labels ? smp->labels[k] : -1;
    for (int k = 0; k < F; k++) w->findings[i * F + k] = smp->findings ? (smp->findings[k] != 0) : 0;
    w->view[i] = (int8_t)(smp->view < -1 || smp->view > 2 ? -1 : smp->view);
    w->lat[i] = (int8_t)(smp->laterality < -1 || smp->laterality > 1 ? -1 : smp->laterality);
    w->split[i] = (uint8_t)smp->split;
    w->mask_present[i] = enc->mask != NULL;
    char *pp = w->patient + i * PREP_PATIENT_LEN, *ip = w->image_id + i * PREP_IMAGE_ID_LEN;
    memset(pp, 0, PREP_PATIENT_LEN);
    memset(ip, 0, PREP_IMAGE_ID_LEN);
    if (smp->patient_id) strncpy(pp, smp->patient_id, PREP_PATIENT_LEN - 1);
    strncpy(ip, id, PREP_IMAGE_ID_LEN - 1);
    w->orig_size[2 * i] = smp->orig_h;
    w->orig_size[2 * i + 1] = smp->orig_w;
    memcpy(w->transform + 7 * i, smp->transform, 7 * sizeof(float));
    if (w->n_boxes + (size_t)smp->n_boxes > w->boxes_cap) {
        size_t cap = w->boxes_cap ? 2 * w->boxes_cap : 256;
        while (cap < w->n_boxes + (size_t)smp->n_boxes) cap *= 2;
        PrepBox *b = realloc(w->boxes, cap * sizeof *b);
        if (!b) return err_set(e, "%s: out of memory", w->path);
        w->boxes = b;
        w->boxes_cap = cap;
    }
    for (int k = 0; k < smp->n_boxes; k++) {
        PrepBox b = smp->boxes[k];
        if (b.label < -1 || b.label >= F) b.label = -1;
        for (int j = 0; j < PREP_MAX_LABELS; j++)
            if (j >= L || !w->per_box[j]) b.values[j] = -1;
        w->boxes[w->n_boxes++] = b;
    }
    w->box_offset[i + 1] = (int64_t)w->n_boxes;

    /* pixels: extend by one image and write the pre-filtered chunk */
    H5Guard g = h5_enter();
    hsize_t dims[3] = {i + 1, (hsize_t)w->s.height, (hsize_t)w->s.width};
    hsize_t off[3] = {i, 0, 0};
    herr_t r = H5Dset_extent(w->images, dims);
    if (r >= 0) r = H5Dwrite_chunk(w->images, H5P_DEFAULT, 0, off, enc->img_bytes, enc->img);
    if (r >= 0 && w->masks >= 0) {
        r = H5Dset_extent(w->masks, dims);
        if (r >= 0 && enc->mask) r = H5Dwrite_chunk(w->masks, H5P_DEFAULT, 0, off, enc->mask_bytes, enc->mask);
    }
    h5_leave(&g);
    if (r < 0) return err_set(e, "%s: writing sample %zu failed (disk full?)", w->path, i);
    w->n++;
    return 0;
}

int prep_writer_add(PrepWriter *w, const PrepSample *smp, Err *e) {
    PrepEncoded enc;
    if (prep_encode(&w->s, smp, &enc, e)) return 1;
    int r = prep_writer_add_encoded(w, smp, &enc, e);
    prep_encoded_free(&enc);
    return r;
}

/* write a whole (dims) array as one dataset, chunked+deflated when large */
static int write_array(hid_t loc, const char *name, hid_t ftype, hid_t mtype, int ndim, const hsize_t *dims,
                       const void *data) {
    hid_t sp = H5Screate_simple(ndim, dims, NULL);
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    hsize_t total = 1;
    for (int d = 0; d < ndim; d++) total *= dims[d];
    if (total > 4096 && dims[0] > 0) {
        hsize_t chunk[4];
        for (int d = 0; d < ndim; d++) chunk[d] = dims[d];
        chunk[0] = dims[0] < 65536 ? dims[0] : 65536;
        H5Pset_chunk(dcpl, ndim, chunk);
        H5Pset_deflate(dcpl, 4);
    }
    hid_t d = H5Dcreate2(loc, name, ftype, sp, H5P_DEFAULT, dcpl, H5P_DEFAULT);
    herr_t r = d < 0 ? -1 : 0;
    if (d >= 0 && total > 0) r = H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data);
    if (d >= 0) H5Dclose(d);
    H5Pclose(dcpl);
    H5Sclose(sp);
    return r < 0;
}

static int write_classes(hid_t loc, const char *name, const char *classes) {
    hid_t d = H5Dopen2(loc, name, H5P_DEFAULT);
    if (d < 0) return 1;
    int r = attr_write_str(d, "classes", classes);
    H5Dclose(d);
    return r;
}

static hid_t string_type(size_t len) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, len);
    H5Tset_strpad(t, H5T_STR_NULLPAD);
    return t;
}

int prep_writer_close(PrepWriter *w, Err *e) {
    size_t n = w->n;
    int L = w->s.n_labels, F = w->n_findings;
    int bad = 0;
    H5Guard g = h5_enter();
    hid_t f = w->file;
    /* root attributes */
    char names[PREP_MAX_LABELS * (PREP_NAME_LEN + 1) + 1] = "";
    for (int k = 0; k < L; k++) {
        if (k) strcat(names, "\n");
        strcat(names, w->s.labels[k].name);
    }
    bad |= attr_write_str(f, "format", PREP_FORMAT);
    bad |= attr_write_int(f, "version", PREP_VERSION);
    bad |= attr_write_str(f, "dataset", w->s.dataset);
    bad |= attr_write_str(f, "source", w->s.source);
    bad |= attr_write_str(f, "preprocess", w->s.preprocess);
    bad |= attr_write_int(f, "n", (long)n);
    bad |= attr_write_int(f, "height", w->s.height);
    bad |= attr_write_int(f, "width", w->s.width);
    bad |= attr_write_int(f, "bits", w->s.bits);
    bad |= attr_write_int(f, "max_value", w->s.bits == 8 ? 255 : 65535);
    bad |= attr_write_str(f, "label_names", names);

    /* labels: one dataset per label, column k of the (n, L) table */
    hid_t lg = H5Gcreate2(f, "labels", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    bad |= lg < 0;
    int32_t *col = xmalloc((n ? n : 1) * sizeof *col);
    for (int k = 0; k < L && lg >= 0; k++) {
        for (size_t i = 0; i < n; i++) col[i] = w->labels[i * L + k];
        hsize_t d1[1] = {n};
        bad |= write_array(lg, w->s.labels[k].name, H5T_STD_I32LE, H5T_NATIVE_INT32, 1, d1, col);
        bad |= write_classes(lg, w->s.labels[k].name, w->s.labels[k].classes);
    }
    free(col);
    if (lg >= 0) H5Gclose(lg);
    if (F > 0) {
        hsize_t d2[2] = {n, (hsize_t)F};
        bad |= write_array(f, "findings", H5T_STD_U8LE, H5T_NATIVE_UINT8, 2, d2, w->findings);
        bad |= write_classes(f, "findings", w->s.findings);
    }
    hsize_t d1[1] = {n};
    bad |= write_array(f, "view", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, d1, w->view);
    bad |= write_classes(f, "view", "CC\nMLO\nother");
    bad |= write_array(f, "laterality", H5T_STD_I8LE, H5T_NATIVE_INT8, 1, d1, w->lat);
    bad |= write_classes(f, "laterality", "L\nR");
    bad |= write_array(f, "split", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, d1, w->split);
    bad |= write_classes(f, "split", "train\nval\ntest");
    if (w->masks >= 0) bad |= write_array(f, "mask_present", H5T_STD_U8LE, H5T_NATIVE_UINT8, 1, d1, w->mask_present);
    hid_t st = string_type(PREP_PATIENT_LEN);
    bad |= write_array(f, "patient_id", st, st, 1, d1, w->patient);
    H5Tclose(st);
    st = string_type(PREP_IMAGE_ID_LEN);
    bad |= write_array(f, "image_id", st, st, 1, d1, w->image_id);
    H5Tclose(st);
    hsize_t d2[2] = {n, 2};
    bad |= write_array(f, "orig_size", H5T_STD_I32LE, H5T_NATIVE_INT32, 2, d2, w->orig_size);
    hsize_t d7[2] = {n, 7};
    bad |= write_array(f, "transform", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, d7, w->transform);
    /* boxes: split the PrepBox records into the (M, 4) table and the (M) labels */
    size_t M = w->n_boxes;
    float *bx = xmalloc((M ? M : 1) * 4 * sizeof *bx);
    int32_t *bl = xmalloc((M ? M : 1) * sizeof *bl);
    for (size_t k = 0; k < M; k++) {
        bx[4 * k] = w->boxes[k].x0;
        bx[4 * k + 1] = w->boxes[k].y0;
        bx[4 * k + 2] = w->boxes[k].x1;
        bx[4 * k + 3] = w->boxes[k].y1;
        bl[k] = w->boxes[k].label;
    }
    hsize_t db[2] = {M, 4}, dm[1] = {M}, dof[1] = {n + 1};
    bad |= write_array(f, "boxes", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, 2, db, bx);
    bad |= write_array(f, "box_label", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, dm, bl);
    int64_t zero = 0;
    bad |= write_array(f, "box_offset", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, dof, n ? (void *)w->box_offset : (void *)&zero);
    hid_t bg = -1;
    for (int k = 0; k < L; k++) {
        if (!w->per_box[k]) continue;
        if (bg < 0 && (bg = H5Gcreate2(f, "box_labels", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT)) < 0) {
            bad = 1;
            break;
        }
        for (size_t b = 0; b < M; b++) bl[b] = w->boxes[b].values[k];
        bad |= write_array(bg, w->s.labels[k].name, H5T_STD_I32LE, H5T_NATIVE_INT32, 1, dm, bl);
    }
    if (bg >= 0) H5Gclose(bg);
    free(bx);
    free(bl);

    H5Dclose(w->images);
    if (w->masks >= 0) H5Dclose(w->masks);
    bad |= H5Fclose(f) < 0;
    h5_leave(&g);
    w->file = -1;
    if (bad) {
        unlink(w->tmp);
        err_set(e, "%s: writing the metadata failed", w->path);
        writer_free(w);
        return 1;
    }
    if (rename(w->tmp, w->path) != 0) {
        err_set(e, "%s: cannot rename from %s", w->path, w->tmp);
        unlink(w->tmp);
        writer_free(w);
        return 1;
    }
    writer_free(w);
    return 0;
}

void prep_writer_abort(PrepWriter *w) {
    if (!w) return;
    H5Guard g = h5_enter();
    if (w->images > 0) H5Dclose(w->images);
    if (w->masks > 0) H5Dclose(w->masks);
    if (w->file > 0) H5Fclose(w->file);
    h5_leave(&g);
    if (w->tmp) unlink(w->tmp);
    writer_free(w);
}

/* ------------------------------------------------------------------------------------------ */
/* Reader */

/* Opens dataset `name`, checks rank and leading dims (dims[d] == 0 means "any"), reads it as
 * mtype into a malloc'd buffer of `elem` bytes per element. */
static void *read_array(hid_t f, const char *path, const char *name, hid_t mtype, size_t elem, int ndim,
                        const hsize_t *want, int optional, size_t *n_out, Err *e, int *fail) {
    if (H5Lexists(f, name, H5P_DEFAULT) <= 0) {
        if (!optional) {
            err_set(e, "%s: missing dataset '/%s'", path, name);
            *fail = 1;
        }
        return NULL;
    }
    hid_t d = H5Dopen2(f, name, H5P_DEFAULT);
    if (d < 0) {
        err_set(e, "%s: cannot open dataset '/%s' (corrupt file?)", path, name);
        *fail = 1;
        return NULL;
    }
    hid_t sp = H5Dget_space(d);
    hsize_t dims[8] = {0};
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd == ndim) H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    int ok = nd == ndim;
    for (int k = 0; ok && k < ndim; k++)
        if (want[k] && dims[k] != want[k]) ok = 0;
    if (!ok) {
        char got[96] = "(", exp[96] = "(";
        for (int k = 0; k < nd && k < 8; k++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", k ? "," : "", (unsigned long long)dims[k]);
        for (int k = 0; k < ndim; k++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%s%llu", k ? "," : "", want[k] ? "" : "*",
                     (unsigned long long)want[k]);
        strcat(got, ")");
        strcat(exp, ")");
        err_set(e, "%s: dataset '/%s' has shape %s, expected %s", path, name, got, exp);
        H5Dclose(d);
        *fail = 1;
        return NULL;
    }
    /* The declared size must be backed by the file: deflate expands at most ~1032x, so a
     * dataset that claims more than that over its stored bytes (an unwritten chunked dataset of
     * a billion rows costs nothing on disk) is refused before anything is allocated. */
    size_t total = 1;
    int too_big = 0;
    for (int k = 0; k < ndim; k++) {
        if (dims[k] && total > PREP_MAX_ARRAY_BYTES / elem / dims[k]) too_big = 1;
        else total *= (size_t)dims[k];
    }
    hsize_t stored = H5Dget_storage_size(d);
    if (too_big || total * elem > PREP_MAX_ARRAY_BYTES || total * elem > 1100 * (size_t)stored + 65536) {
        err_set(e, "%s: dataset '/%s' declares more data than the file holds (%llu bytes stored)", path, name,
                (unsigned long long)stored);
        H5Dclose(d);
        *fail = 1;
        return NULL;
    }
    void *buf = calloc(total ? total : 1, elem);
    if (!buf) {
        err_set(e, "%s: out of memory reading dataset '/%s' (%zu values)", path, name, total);
        H5Dclose(d);
        *fail = 1;
        return NULL;
    }
    if (total > 0 && H5Dread(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf) < 0) {
        err_set(e, "%s: reading dataset '/%s' failed (corrupt file?)", path, name);
        free(buf);
        buf = NULL;
        *fail = 1;
    }
    H5Dclose(d);
    if (n_out) *n_out = total;
    return buf;
}

static int dset_props(hid_t d, int h, int w, int *direct, int *deflate) {
    hid_t dcpl = H5Dget_create_plist(d);
    *direct = 0;
    *deflate = 0;
    if (H5Pget_layout(dcpl) == H5D_CHUNKED) {
        hsize_t c[3];
        int nd = H5Pget_chunk(dcpl, 3, c);
        int nf = H5Pget_nfilters(dcpl), only_deflate = 1;
        for (int k = 0; k < nf; k++) {
            unsigned flags;
            size_t ne = 0;
            char nm[64];
            unsigned cd[8];
            H5Z_filter_t id = H5Pget_filter2(dcpl, (unsigned)k, &flags, &ne, cd, sizeof nm, nm, NULL);
            if (id == H5Z_FILTER_DEFLATE) *deflate = 1;
            else only_deflate = 0;
        }
        *direct = nd == 3 && c[0] == 1 && c[1] == (hsize_t)h && c[2] == (hsize_t)w && only_deflate;
    }
    H5Pclose(dcpl);
    return 0;
}

int prep_open(Prepared *p, const char *path, Err *e) {
    memset(p, 0, sizeof *p);
    p->file = p->images = p->masks = -1;
    snprintf(p->path, sizeof p->path, "%s", path);
    if (access(path, R_OK) != 0) return err_set(e, "%s: no such file or not readable", path);
    H5Guard g = h5_enter();
    int fail = 0;
    htri_t is = H5Fis_hdf5(path);
    hid_t f = is > 0 ? H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT) : -1;
    if (f < 0) {
        h5_leave(&g);
        return err_set(e, "%s: not an HDF5 file, or truncated/corrupt", path);
    }
    p->file = f;
    char *fmt = attr_read_str(f, "format");
    long version = 0, n = -1, h = 0, w = 0, bits = 0, maxv = 0;
    if (!fmt || strcmp(fmt, PREP_FORMAT) != 0) {
        err_set(e, "%s: attribute 'format' is %s%s%s, expected '%s' (not a prepared dataset)", path, fmt ? "'" : "missing",
                fmt ? fmt : "", fmt ? "'" : "", PREP_FORMAT);
        fail = 1;
    } else if (attr_read_int(f, "version", &version) || version != PREP_VERSION) {
        err_set(e, "%s: attribute 'version' is %ld, this reader knows version %d", path, version, PREP_VERSION);
        fail = 1;
    } else {
        const char *need[] = {"n", "height", "width", "bits", "max_value"};
        long *dst[] = {&n, &h, &w, &bits, &maxv};
        for (int k = 0; k < 5 && !fail; k++)
            if (attr_read_int(f, need[k], dst[k])) {
                err_set(e, "%s: missing root attribute '%s'", path, need[k]);
                fail = 1;
            }
        if (!fail && (n < 0 || n > PREP_MAX_SAMPLES || h < 1 || w < 1 || h > 16384 || w > 16384 ||
                      (bits != 8 && bits != 16) || maxv != (1L << bits) - 1)) {
            err_set(e, "%s: bad root attributes (n %ld, %ldx%ld, bits %ld, max_value %ld)", path, n, w, h, bits, maxv);
            fail = 1;
        }
    }
    free(fmt);
    if (!fail) {
        p->n = (size_t)n;
        p->h = (int)h;
        p->w = (int)w;
        p->bits = (int)bits;
        p->max_value = (uint32_t)maxv;
        char *ds = attr_read_str(f, "dataset");
        snprintf(p->dataset, sizeof p->dataset, "%s", ds ? ds : "");
        free(ds);
    }
    /* images */
    if (!fail) {
        if (H5Lexists(f, "images", H5P_DEFAULT) <= 0) {
            err_set(e, "%s: missing dataset '/images'", path);
            fail = 1;
        } else {
            p->images = H5Dopen2(f, "images", H5P_DEFAULT);
            hid_t sp = p->images >= 0 ? H5Dget_space(p->images) : -1;
            hsize_t dims[3] = {0};
            int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
            if (nd == 3) H5Sget_simple_extent_dims(sp, dims, NULL);
            if (sp >= 0) H5Sclose(sp);
            hid_t t = p->images >= 0 ? H5Dget_type(p->images) : -1;
            size_t tsz = t >= 0 ? H5Tget_size(t) : 0;
            int tint = t >= 0 && H5Tget_class(t) == H5T_INTEGER;
            if (t >= 0) H5Tclose(t);
            if (nd != 3 || dims[0] != p->n || dims[1] != (hsize_t)h || dims[2] != (hsize_t)w) {
                err_set(e, "%s: dataset '/images' shape does not match (n, height, width) = (%zu, %ld, %ld)", path, p->n, h, w);
                fail = 1;
            } else if (!tint || tsz != (size_t)(bits / 8)) {
                err_set(e, "%s: dataset '/images' is not uint%ld", path, bits);
                fail = 1;
            } else {
                dset_props(p->images, p->h, p->w, &p->direct_chunks, &p->images_deflate);
            }
        }
    }
    if (!fail && H5Lexists(f, "masks", H5P_DEFAULT) > 0) {
        p->masks = H5Dopen2(f, "masks", H5P_DEFAULT);
        hid_t sp = p->masks >= 0 ? H5Dget_space(p->masks) : -1;
        hsize_t dims[3] = {0};
        int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
        if (nd == 3) H5Sget_simple_extent_dims(sp, dims, NULL);
        if (sp >= 0) H5Sclose(sp);
        if (nd != 3 || dims[0] != p->n || dims[1] != (hsize_t)h || dims[2] != (hsize_t)w) {
            err_set(e, "%s: dataset '/masks' shape does not match /images", path);
            fail = 1;
        } else {
            int direct;
            dset_props(p->masks, p->h, p->w, &direct, &p->masks_deflate);
            if (!direct) p->masks_deflate = -1;   /* read through H5Dread */
        }
    }
    hsize_t N = p->n;
    /* labels */
    if (!fail) {
        char *ln = attr_read_str(f, "label_names");
        if (!ln) {
            err_set(e, "%s: missing root attribute 'label_names'", path);
            fail = 1;
        } else {
            p->n_labels = split_names(ln, p->label_names, PREP_MAX_LABELS);
            free(ln);
            if (p->n_labels < 0) {
                err_set(e, "%s: more than %d labels", path, PREP_MAX_LABELS);
                fail = 1;
            }
        }
        if (!fail && p->n_labels == 0) p->labels = calloc(1, sizeof *p->labels);
        for (int k = 0; k < p->n_labels && !fail; k++) {
            char dn[PREP_NAME_LEN + 8];
            snprintf(dn, sizeof dn, "labels/%s", p->label_names[k]);
            hsize_t want[1] = {N};
            int32_t *col = NULL;
            if (H5Lexists(f, "labels", H5P_DEFAULT) > 0)
                col = read_array(f, path, dn, H5T_NATIVE_INT32, 4, 1, want, 0, NULL, e, &fail);
            else {
                err_set(e, "%s: missing group '/labels'", path);
                fail = 1;
            }
            if (!col) break;
            /* the (n, L) table, once the first column proved n is backed by the file */
            if (!p->labels && !(p->labels = calloc(p->n * (size_t)p->n_labels + 1, sizeof *p->labels))) {
                err_set(e, "%s: out of memory for the labels of %zu samples", path, p->n);
                fail = 1;
                free(col);
                break;
            }
            hid_t d = H5Dopen2(f, dn, H5P_DEFAULT);
            char *cl = attr_read_str(d, "classes");
            H5Dclose(d);
            p->n_classes[k] = cl ? split_names(cl, p->class_names[k], PREP_MAX_CLASSES) : -1;
            free(cl);
            if (p->n_classes[k] < 1) {
                err_set(e, "%s: dataset '/%s' has no valid 'classes' attribute", path, dn);
                fail = 1;
            }
            for (size_t i = 0; i < p->n && !fail; i++) {
                if (col[i] < -1 || col[i] >= p->n_classes[k]) {
                    err_set(e, "%s: '/%s'[%zu] = %d outside [-1, %d)", path, dn, i, col[i], p->n_classes[k]);
                    fail = 1;
                }
                p->labels[i * p->n_labels + k] = col[i];
            }
            free(col);
        }
    }
    /* findings */
    if (!fail && H5Lexists(f, "findings", H5P_DEFAULT) > 0) {
        hid_t d = H5Dopen2(f, "findings", H5P_DEFAULT);
        char *cl = attr_read_str(d, "classes");
        H5Dclose(d);
        p->n_findings = cl ? split_names(cl, p->finding_names, PREP_MAX_FINDINGS) : -1;
        free(cl);
        if (p->n_findings < 1) {
            err_set(e, "%s: dataset '/findings' has no valid 'classes' attribute", path);
            fail = 1;
        } else {
            hsize_t want[2] = {N, (hsize_t)p->n_findings};
            p->findings = read_array(f, path, "findings", H5T_NATIVE_UINT8, 1, 2, want, 0, NULL, e, &fail);
        }
    }
    if (!fail) {
        hsize_t w1[1] = {N}, w2[2] = {N, 2}, w7[2] = {N, 7};
        p->view = read_array(f, path, "view", H5T_NATIVE_INT8, 1, 1, w1, 0, NULL, e, &fail);
        if (!fail) p->laterality = read_array(f, path, "laterality", H5T_NATIVE_INT8, 1, 1, w1, 0, NULL, e, &fail);
        if (!fail) p->split = read_array(f, path, "split", H5T_NATIVE_UINT8, 1, 1, w1, 0, NULL, e, &fail);
        if (!fail && p->masks >= 0)
            p->mask_present = read_array(f, path, "mask_present", H5T_NATIVE_UINT8, 1, 1, w1, 0, NULL, e, &fail);
        if (!fail) {
            hid_t st = string_type(PREP_PATIENT_LEN);
            p->patient_id = read_array(f, path, "patient_id", st, PREP_PATIENT_LEN, 1, w1, 0, NULL, e, &fail);
            H5Tclose(st);
        }
        if (!fail) {
            hid_t st = string_type(PREP_IMAGE_ID_LEN);
            p->image_id = read_array(f, path, "image_id", st, PREP_IMAGE_ID_LEN, 1, w1, 0, NULL, e, &fail);
            H5Tclose(st);
        }
        /* NUL-padded strings may use all their bytes; prep_patient/prep_image_id return C strings */
        for (size_t i = 0; !fail && i < p->n; i++) {
            p->patient_id[i * PREP_PATIENT_LEN + PREP_PATIENT_LEN - 1] = 0;
            p->image_id[i * PREP_IMAGE_ID_LEN + PREP_IMAGE_ID_LEN - 1] = 0;
        }
        if (!fail) p->orig_size = read_array(f, path, "orig_size", H5T_NATIVE_INT32, 4, 2, w2, 0, NULL, e, &fail);
        if (!fail) p->transform = read_array(f, path, "transform", H5T_NATIVE_FLOAT, 4, 2, w7, 0, NULL, e, &fail);
        hsize_t wo[1] = {N + 1};
        if (!fail) p->box_offset = read_array(f, path, "box_offset", H5T_NATIVE_INT64, 8, 1, wo, 0, NULL, e, &fail);
        size_t M = 0;
        hsize_t wb[2] = {0, 4};
        float *bx = NULL;
        int32_t *bl = NULL;
        if (!fail) bx = read_array(f, path, "boxes", H5T_NATIVE_FLOAT, 4, 2, wb, 0, &M, e, &fail);
        M /= 4;
        hsize_t wl[1] = {M};
        if (!fail) bl = read_array(f, path, "box_label", H5T_NATIVE_INT32, 4, 1, wl, 0, NULL, e, &fail);
        if (!fail) {
            p->n_boxes = M;
            p->boxes = malloc((M ? M : 1) * sizeof *p->boxes);
            if (!p->boxes) {
                err_set(e, "%s: out of memory for %zu boxes", path, M);
                fail = 1;
                M = 0;
            }
            for (size_t k = 0; k < M; k++) {
                p->boxes[k] = (PrepBox){bx[4 * k], bx[4 * k + 1], bx[4 * k + 2], bx[4 * k + 3], bl[k], {0}};
                for (int j = 0; j < PREP_MAX_LABELS; j++) p->boxes[k].values[j] = -1;
            }
            /* per-box values of some labels (the lesion's own, e.g. CBIS pathology) */
            int has_box_labels = H5Lexists(f, "box_labels", H5P_DEFAULT) > 0;
            for (int j = 0; j < p->n_labels && !fail && has_box_labels; j++) {
                char dn[PREP_NAME_LEN + 12];
                snprintf(dn, sizeof dn, "box_labels/%s", p->label_names[j]);
                if (H5Lexists(f, dn, H5P_DEFAULT) <= 0) continue;
                int32_t *v = read_array(f, path, dn, H5T_NATIVE_INT32, 4, 1, wl, 0, NULL, e, &fail);
                for (size_t k = 0; k < M && v && !fail; k++) {
                    if (v[k] < -1 || v[k] >= p->n_classes[j]) {
                        err_set(e, "%s: '/%s'[%zu] = %d outside [-1, %d)", path, dn, k, v[k], p->n_classes[j]);
                        fail = 1;
                    }
                    p->boxes[k].values[j] = v[k];
                }
                free(v);
            }
            if (!fail && (p->box_offset[0] != 0 || p->box_offset[p->n] != (int64_t)M)) {
                err_set(e, "%s: '/box_offset' does not span the %zu boxes", path, M);
                fail = 1;
            }
            for (size_t i = 0; i < p->n && !fail; i++)
                if (p->box_offset[i + 1] < p->box_offset[i]) {
                    err_set(e, "%s: '/box_offset' decreases at %zu", path, i);
                    fail = 1;
                }
            for (size_t i = 0; i < p->n && !fail; i++)
                if (p->split[i] > 2) {
                    err_set(e, "%s: '/split'[%zu] = %d (expected 0..2)", path, i, p->split[i]);
                    fail = 1;
                }
        }
        free(bx);
        free(bl);
    }
    h5_leave(&g);
    if (fail) {
        prep_close(p);
        return 1;
    }
    return 0;
}

void prep_close(Prepared *p) {
    H5Guard g = h5_enter();
    if (p->images >= 0) H5Dclose(p->images);
    if (p->masks >= 0) H5Dclose(p->masks);
    if (p->file >= 0) H5Fclose(p->file);
    h5_leave(&g);
    free(p->labels);
    free(p->findings);
    free(p->view);
    free(p->laterality);
    free(p->split);
    free(p->mask_present);
    free(p->patient_id);
    free(p->image_id);
    free(p->orig_size);
    free(p->transform);
    free(p->boxes);
    free(p->box_offset);
    char path[512];
    memcpy(path, p->path, sizeof path);
    memset(p, 0, sizeof *p);
    memcpy(p->path, path, sizeof path);
    p->file = p->images = p->masks = -1;
}

/* Read one (1, H, W) slab of dataset d into dst (nbytes): the raw chunk under the HDF5 lock and
 * inflate outside it, or a plain hyperslab read for other layouts. */
static int read_slab(const Prepared *p, hid_t d, int direct, int deflate, hid_t mtype, size_t i, void *dst,
                     size_t nbytes, const char *what, Err *e) {
    if (i >= p->n) return err_set(e, "%s: sample %zu out of range (n = %zu)", p->path, i, p->n);
    hsize_t off[3] = {i, 0, 0};
    if (direct) {
        H5Guard g = h5_enter();
        hsize_t csize = 0;
        herr_t r = H5Dget_chunk_storage_size(d, off, &csize);
        uint8_t *raw = NULL;
        uint32_t filters = 0;
        int have = r >= 0 && csize > 0;   /* else: never written (reads as the fill value) */
        if (have) {
            raw = deflate ? malloc(csize) : dst;
            if (!raw || (!deflate && csize != nbytes)) r = -1;
            else r = H5Dread_chunk(d, H5P_DEFAULT, off, &filters, raw);
        }
        h5_leave(&g);
        if (have) {
            if (r < 0) {
                if (deflate) free(raw);
                return err_set(e, "%s: sample %zu: reading the %s chunk failed (corrupt file?)", p->path, i, what);
            }
            if (deflate) {
                uLongf out_n = nbytes;
                int zr;
                if (filters & 1) {   /* the filter was skipped for this chunk: raw bytes */
                    zr = csize == nbytes ? Z_OK : Z_DATA_ERROR;
                    if (zr == Z_OK) memcpy(dst, raw, nbytes);
                } else {
                    zr = uncompress(dst, &out_n, raw, (uLong)csize);
                }
                free(raw);
                if (zr != Z_OK || out_n != nbytes)
                    return err_set(e, "%s: sample %zu: corrupt %s chunk (inflate failed)", p->path, i, what);
            }
            return 0;
        }
    }
    H5Guard g = h5_enter();
    hid_t fs = H5Dget_space(d);
    hsize_t cnt[3] = {1, (hsize_t)p->h, (hsize_t)p->w};
    H5Sselect_hyperslab(fs, H5S_SELECT_SET, off, NULL, cnt, NULL);
    hid_t ms = H5Screate_simple(3, cnt, NULL);
    herr_t r = H5Dread(d, mtype, ms, fs, H5P_DEFAULT, dst);
    H5Sclose(ms);
    H5Sclose(fs);
    h5_leave(&g);
    if (r < 0) return err_set(e, "%s: sample %zu: reading the %s failed (corrupt file?)", p->path, i, what);
    return 0;
}

int prep_read_image(const Prepared *p, size_t i, void *dst, Err *e) {
    size_t nb = (size_t)p->h * p->w * (p->bits == 8 ? 1 : 2);
    return read_slab(p, p->images, p->direct_chunks, p->images_deflate,
                     p->bits == 8 ? H5T_NATIVE_UINT8 : H5T_NATIVE_UINT16, i, dst, nb, "image", e);
}

int prep_read_image_f32(const Prepared *p, size_t i, float *dst, Err *e) {
    size_t npx = (size_t)p->h * p->w;
    /* read the integers into the tail of dst (they take at most half its bytes), expand forward */
    void *raw = (uint8_t *)dst + npx * sizeof(float) - npx * (p->bits == 8 ? 1 : 2);
    if (prep_read_image(p, i, raw, e)) return 1;
    float inv = 1.0f / (float)p->max_value;
    if (p->bits == 8) {
        const uint8_t *s = raw;
        for (size_t k = 0; k < npx; k++) dst[k] = (float)s[k] * inv;
    } else {
        const uint16_t *s = raw;
        for (size_t k = 0; k < npx; k++) dst[k] = (float)s[k] * inv;
    }
    return 0;
}

int prep_read_mask(const Prepared *p, size_t i, uint8_t *dst, Err *e) {
    size_t npx = (size_t)p->h * p->w;
    if (p->masks < 0) {
        memset(dst, 0, npx);
        return 0;
    }
    int direct = p->masks_deflate >= 0;
    return read_slab(p, p->masks, direct, p->masks_deflate > 0, H5T_NATIVE_UINT8, i, dst, npx, "mask", e);
}

int prep_label_col(const Prepared *p, const char *name) {
    for (int k = 0; k < p->n_labels; k++)
        if (strcmp(p->label_names[k], name) == 0) return k;
    return -1;
}

const char *prep_split_name(int split) {
    switch (split) {
    case PREP_SPLIT_TRAIN: return "train";
    case PREP_SPLIT_VAL: return "val";
    case PREP_SPLIT_TEST: return "test";
    default: return "none";
    }
}

int prep_split_parse(const char *s) {
    while (*s == ' ') s++;
    static const char *tr[] = {"train", "training", "Train", "TRAIN", "Training"};
    static const char *va[] = {"val", "valid", "validation", "eval", "Eval", "Val", "dev"};
    static const char *te[] = {"test", "Test", "TEST", "testing"};
    for (size_t k = 0; k < sizeof tr / sizeof *tr; k++) if (strcasecmp(s, tr[k]) == 0) return PREP_SPLIT_TRAIN;
    for (size_t k = 0; k < sizeof va / sizeof *va; k++) if (strcasecmp(s, va[k]) == 0) return PREP_SPLIT_VAL;
    for (size_t k = 0; k < sizeof te / sizeof *te; k++) if (strcasecmp(s, te[k]) == 0) return PREP_SPLIT_TEST;
    return -1;
}

/* ------------------------------------------------------------------------------------------ */
/* Splits */

SplitOpts split_opts_default(void) {
    return (SplitOpts){.seed = 0, .val_frac = 0.1f, .frac = {0.7f, 0.1f, 0.2f}};
}

typedef struct PatRef {
    const char *id;
    size_t idx;
} PatRef;

static int patref_cmp(const void *a, const void *b) {
    const PatRef *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    if (c) return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

/* split rank for the conflict rule: train < val < test */
static int split_rank(int s) { return s; }

void assign_splits(const char *const *patient, const int *src_split, size_t n, const SplitOpts *o,
                   int *split, size_t *n_conflicts) {
    if (n_conflicts) *n_conflicts = 0;
    if (n == 0) return;
    PatRef *ref = xmalloc(n * sizeof *ref);
    for (size_t i = 0; i < n; i++) ref[i] = (PatRef){patient[i] ? patient[i] : "", i};
    qsort(ref, n, sizeof *ref, patref_cmp);
    /* group images by patient: the patient's source split = max rank over its images */
    size_t np = 0;
    size_t *start = xmalloc((n + 1) * sizeof *start);
    int *psplit = xmalloc(n * sizeof *psplit);
    for (size_t a = 0; a < n;) {
        size_t b = a;
        int s = -1, conflict = 0;
        while (b < n && strcmp(ref[b].id, ref[a].id) == 0) {
            int t = src_split[ref[b].idx];
            if (t >= 0) {
                if (s >= 0 && t != s) conflict = 1;
                if (s < 0 || split_rank(t) > split_rank(s)) s = t;
            }
            b++;
        }
        if (conflict && n_conflicts) (*n_conflicts)++;
        start[np] = a;
        psplit[np] = s;
        np++;
        a = b;
    }
    start[np] = n;
    /* patients in sorted order; two seeded shuffles decide: the unsplit patients' fractions, and
     * which source-train patients move to val */
    Rng r;
    rng_init(&r, o->seed ^ 0x5911715ULL);
    uint32_t *none = xmalloc(np * sizeof *none), *train = xmalloc(np * sizeof *train);
    size_t n_none = 0, n_train = 0;
    for (size_t k = 0; k < np; k++) {
        if (psplit[k] < 0) none[n_none++] = (uint32_t)k;
        else if (psplit[k] == PREP_SPLIT_TRAIN) train[n_train++] = (uint32_t)k;
    }
    rng_shuffle(&r, none, n_none);
    double fsum = (double)o->frac[0] + o->frac[1] + o->frac[2];
    if (fsum <= 0) fsum = 1;
    size_t c_train = (size_t)((double)n_none * o->frac[0] / fsum + 0.5);
    size_t c_val = (size_t)((double)n_none * (o->frac[0] + o->frac[1]) / fsum + 0.5);
    for (size_t k = 0; k < n_none; k++)
        psplit[none[k]] = k < c_train ? PREP_SPLIT_TRAIN : (k < c_val ? PREP_SPLIT_VAL : PREP_SPLIT_TEST);
    Rng r2 = rng_fork(&r, 1);
    rng_shuffle(&r2, train, n_train);
    size_t c_v = (size_t)((double)n_train * o->val_frac + 0.5);
    for (size_t k = 0; k < c_v; k++) psplit[train[k]] = PREP_SPLIT_VAL;
    for (size_t k = 0; k < np; k++)
        for (size_t j = start[k]; j < start[k + 1]; j++) split[ref[j].idx] = psplit[k];
    free(none);
    free(train);
    free(start);
    free(psplit);
    free(ref);
}

/* ------------------------------------------------------------------------------------------ */
/* Corpus */

int corpus_open(Corpus *c, const CorpusSource *src, int n, Err *e) {
    memset(c, 0, sizeof *c);
    if (n < 1 || n > CORPUS_MAX_SOURCES) return err_set(e, "corpus: %d sources (1..%d)", n, CORPUS_MAX_SOURCES);
    c->src = calloc((size_t)n, sizeof *c->src);
    if (!c->src) return err_set(e, "corpus: out of memory");
    for (int k = 0; k < n; k++) {
        if (!(src[k].weight > 0.0f)) {
            corpus_close(c);
            return err_set(e, "corpus: source '%s': weight %g must be > 0", src[k].path, (double)src[k].weight);
        }
        if (prep_open(&c->src[k], src[k].path, e)) {
            corpus_close(c);
            return 1;
        }
        c->n = k + 1;
        c->weight[k] = src[k].weight;
        if (k == 0) {
            c->h = c->src[0].h;
            c->w = c->src[0].w;
            c->bits = c->src[0].bits;
        } else if (c->src[k].h != c->h || c->src[k].w != c->w) {
            err_set(e, "corpus: %s is %dx%d but %s is %dx%d (prepare every source at one size)", src[k].path,
                    c->src[k].w, c->src[k].h, src[0].path, c->w, c->h);
            corpus_close(c);
            return 1;
        }
    }
    return 0;
}

void corpus_close(Corpus *c) {
    for (int k = 0; k < c->n; k++) prep_close(&c->src[k]);
    free(c->src);
    c->src = NULL;
    c->n = 0;
}

int corpus_sources_from_config(const Config *cfg, const char *prefix, CorpusSource *src, int max, int *n, Err *e) {
    char ks[256], kw[256];
    snprintf(ks, sizeof ks, "%s.sources", prefix);
    snprintf(kw, sizeof kw, "%s.weights", prefix);
    *n = 0;
    size_t ns = cfg_has(cfg, ks) ? cfg_list_len(cfg, ks) : 0;
    if (ns == 0) return err_set(e, "%s: '%s' lists no prepared files", cfg->name, ks);
    if (ns > (size_t)max) return err_set(e, "%s: '%s' has %zu sources (max %d)", cfg->name, ks, ns, max);
    double w[CORPUS_MAX_SOURCES];
    size_t nw = 0;
    if (cfg_has(cfg, kw)) {
        Err e1 = {{0}};
        nw = cfg_get_floats(cfg, kw, w, CORPUS_MAX_SOURCES, &e1);
        if (e1.msg[0]) {
            *e = e1;
            return 1;
        }
        if (nw != ns) return err_set(e, "%s: '%s' has %zu values but '%s' lists %zu files", cfg->name, kw, nw, ks, ns);
    }
    for (size_t k = 0; k < ns; k++) {
        src[k].path = cfg_list_item(cfg, ks, k);
        src[k].weight = nw ? (float)w[k] : 1.0f;
        if (!(src[k].weight > 0.0f))
            return err_set(e, "%s: '%s'[%zu] = %g must be > 0", cfg->name, kw, k, (double)src[k].weight);
    }
    *n = (int)ns;
    return 0;
}
