/*
 * convert_manifest.c — any cohort described by a CSV manifest -> prepared HDF5.
 *
 * Columns: `path` (required; image file relative to the manifest's directory or the raw root,
 * or absolute) and optionally `patient_id`, `split` (train/val/test, training/valid/...), `view`,
 * `laterality` (L/R), `mask` (a binary mask image of the same size).  Every other column (or only
 * those named in opts->manifest_labels) is a label whose classes are its distinct non-empty
 * values, in numeric order when all are integers, else sorted as strings; empty / NaN cells are
 * missing (-1).  Without `patient_id` each image is its own patient; without `split` patients are
 * split with the seed.
 */
#include "data/prepared.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *RESERVED[] = {"path", "patient_id", "split", "view", "laterality", "mask", NULL};

static int is_reserved(const char *c) {
    for (int k = 0; RESERVED[k]; k++)
        if (!strcmp(c, RESERVED[k])) return 1;
    return 0;
}

static int is_missing(const char *s) {
    while (*s == ' ') s++;
    return !*s || !strcasecmp(s, "nan") || !strcasecmp(s, "na") || !strcasecmp(s, "none");
}

static int is_int(const char *s, long *v) {
    char *end;
    *v = strtol(s, &end, 10);
    return end != s && *end == 0;
}

typedef struct Cls {
    const char *s;
    long v;
    int numeric;
} Cls;

static int cls_cmp(const void *a, const void *b) {
    const Cls *x = a, *y = b;
    if (x->numeric && y->numeric) return (x->v > y->v) - (x->v < y->v);
    return strcmp(x->s, y->s);
}

int convert_manifest(const ConvertOpts *o, ConvertStats *st, Err *e) {
    if (!o->manifest) return err_set(e, "convert manifest: no manifest CSV given");
    RawSet set = {0};
    Csv c = {0};
    char *classes[PREP_MAX_LABELS] = {0};
    int rc = 1;
    if (csv_read(o->manifest, &c, e)) return 1;
    static const char *const req[] = {"path", NULL};
    if (csv_require_columns(&c, req, e)) goto out;
    /* the base directory for relative paths: the raw root, else the manifest's directory */
    char base[1024];
    if (o->raw_root && *o->raw_root) str_copy(base, sizeof base, o->raw_root);
    else {
        str_copy(base, sizeof base, o->manifest);
        char *sl = strrchr(base, '/');
        if (sl) *sl = 0;
        else strcpy(base, ".");
    }
    int lcols[PREP_MAX_LABELS], nl = 0;
    if (o->manifest_labels) {
        for (int k = 0; o->manifest_labels[k]; k++) {
            int col = csv_col(&c, o->manifest_labels[k]);
            if (col < 0) {
                err_set(e, "%s: missing column '%s'", c.path, o->manifest_labels[k]);
                goto out;
            }
            if (nl == PREP_MAX_LABELS) {
                err_set(e, "%s: more than %d label columns", c.path, PREP_MAX_LABELS);
                goto out;
            }
            lcols[nl++] = col;
        }
    } else {
        for (int col = 0; col < c.ncols; col++) {
            if (is_reserved(c.header[col])) continue;
            if (nl == PREP_MAX_LABELS) {
                err_set(e, "%s: more than %d label columns (name the ones to use)", c.path, PREP_MAX_LABELS);
                goto out;
            }
            lcols[nl++] = col;
        }
    }
    /* classes per label column */
    Cls *vals = xmalloc((c.nrows ? c.nrows : 1) * sizeof *vals);
    for (int k = 0; k < nl; k++) {
        size_t nv = 0;
        int all_int = 1;
        for (size_t i = 0; i < c.nrows; i++) {
            const char *s = csv_get(&c, i, lcols[k]);
            if (is_missing(s)) continue;
            long v;
            int num = is_int(s, &v);
            all_int &= num;
            vals[nv++] = (Cls){s, v, num};
        }
        for (size_t i = 0; i < nv; i++) vals[i].numeric = all_int;
        qsort(vals, nv, sizeof *vals, cls_cmp);
        size_t len = 0, nc = 0;
        for (size_t i = 0; i < nv; i++)
            if (i == 0 || strcmp(vals[i].s, vals[i - 1].s) != 0) {
                len += strlen(vals[i].s) + 1;
                nc++;
            }
        if (nc == 0 || nc > PREP_MAX_CLASSES) {
            err_set(e, "%s: column '%s' has %zu distinct values (1..%d for a class label)", c.path, c.header[lcols[k]], nc,
                    PREP_MAX_CLASSES);
            free(vals);
            goto out;
        }
        classes[k] = xmalloc(len + 1);
        classes[k][0] = 0;
        for (size_t i = 0; i < nv; i++)
            if (i == 0 || strcmp(vals[i].s, vals[i - 1].s) != 0) {
                if (classes[k][0]) strcat(classes[k], "\n");
                strcat(classes[k], vals[i].s);
            }
        set.schema.labels[k] = (PrepLabelDef){c.header[lcols[k]], classes[k]};
    }
    free(vals);
    set.schema.dataset = "manifest";
    set.schema.n_labels = nl;
    int c_path = csv_col(&c, "path"), c_pat = csv_col(&c, "patient_id"), c_split = csv_col(&c, "split"),
        c_view = csv_col(&c, "view"), c_lat = csv_col(&c, "laterality"), c_mask = csv_col(&c, "mask");
    set.schema.has_masks = c_mask >= 0;
    for (size_t i = 0; i < c.nrows; i++) {
        RawRecord *r = rawset_add(&set);
        const char *p = csv_get(&c, i, c_path);
        if (is_missing(p)) {
            err_set(e, "%s:%zu: column 'path' is empty", c.path, c.line[i]);
            goto out;
        }
        r->image_path = p[0] == '/' ? strdup(p) : path_join(base, p);
        str_copy(r->image_id, sizeof r->image_id, p);
        str_copy(r->patient_id, sizeof r->patient_id, c_pat >= 0 && !is_missing(csv_get(&c, i, c_pat)) ? csv_get(&c, i, c_pat) : p);
        if (c_split >= 0 && !is_missing(csv_get(&c, i, c_split))) {
            r->src_split = prep_split_parse(csv_get(&c, i, c_split));
            if (r->src_split < 0) {
                err_value(e, &c, i, "split", csv_get(&c, i, c_split));
                goto out;
            }
        }
        if (c_view >= 0) r->view = parse_view(csv_get(&c, i, c_view));
        if (c_lat >= 0 && (r->laterality = parse_laterality(csv_get(&c, i, c_lat))) < -1) {
            err_value(e, &c, i, "laterality", csv_get(&c, i, c_lat));
            goto out;
        }
        for (int k = 0; k < nl; k++) {
            const char *s = csv_get(&c, i, lcols[k]);
            r->labels[k] = is_missing(s) ? -1 : label_index(classes[k], s);
        }
        if (c_mask >= 0 && !is_missing(csv_get(&c, i, c_mask))) {
            const char *mp = csv_get(&c, i, c_mask);
            char *full = mp[0] == '/' ? strdup(mp) : path_join(base, mp);
            raw_add_mask(r, full, -2, 0);
            free(full);
            r->annotated = 1;
        }
    }
    rc = convert_run(&set, o, st, e);
out:
    for (int k = 0; k < PREP_MAX_LABELS; k++) free(classes[k]);
    csv_free(&c);
    rawset_free(&set);
    return rc;
}
