/*
 * convert_cmmd.c — CMMD, the Chinese Mammography Database (TCIA) -> prepared HDF5.
 *
 * Raw layout (mammo-data.md A4):
 *   CMMD_clinicaldata_revision.xlsx   columns ID1, LeftRight, Age, number, abnormality,
 *                                     classification, subtype; one row per breast with a lesion
 *                                     (a .csv export with the same columns is accepted too)
 *   CMMD/<ID1>/<MM-DD-YYYY-nnnnn>/<1.000000-nnnnn>/1-{1..4}.dcm
 * Laterality comes from the DICOM ImageLaterality tag (file order 1-1/1-2 is not fixed), the view
 * from ViewPosition or, when absent, PatientOrientation ("A\FR"-style rows with F = MLO).  CMMD
 * stores the view in ViewCodeSequence, which the DICOM reader skips, so files without either tag
 * get view -1.
 * Labels: pathology (Benign/Malignant; breasts without a row = normal), abnormality (mass,
 * calcification, both), subtype (Luminal A, Luminal B, HER2-enriched, triple negative).
 * Patient = ID1; no source split (seeded patient split).
 */
#include "data/prepared.h"
#include "data/dicom.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static const char *CMMD_ABN = "mass\ncalcification\nboth";
static const char *CMMD_SUBTYPE = "Luminal A\nLuminal B\nHER2-enriched\ntriple negative";

typedef struct Paths {
    char **p;
    size_t n, cap;
} Paths;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void walk_dcm(const char *dir, Paths *out, int depth) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.') continue;
        char *p = path_join(dir, de->d_name);
        struct stat st;
        if (stat(p, &st) == 0 && S_ISDIR(st.st_mode)) {
            if (depth < 6) walk_dcm(p, out, depth + 1);
            free(p);
            continue;
        }
        const char *ext = strrchr(de->d_name, '.');
        if (ext && !strcasecmp(ext, ".dcm")) {
            if (out->n == out->cap) {
                out->cap = out->cap ? 2 * out->cap : 64;
                out->p = xrealloc(out->p, out->cap * sizeof *out->p);
            }
            out->p[out->n++] = p;
        } else {
            free(p);
        }
    }
    closedir(d);
}

/* case-insensitive index in a '\n' list, ignoring surrounding spaces */
static int ci_index(const char *classes, const char *v) {
    char b[64];
    while (*v == ' ') v++;
    str_copy(b, sizeof b, v);
    size_t l = strlen(b);
    while (l && b[l - 1] == ' ') b[--l] = 0;
    if (!l) return -1;
    int k = 0;
    for (const char *p = classes; *p; k++) {
        const char *q = strchr(p, '\n');
        size_t len = q ? (size_t)(q - p) : strlen(p);
        if (len == l && !strncasecmp(p, b, len)) return k;
        if (!q) break;
        p = q + 1;
    }
    return -2;
}

int convert_cmmd(const ConvertOpts *o, ConvertStats *st, Err *e) {
    RawSet set = {0};
    set.schema = (PrepSchema){.dataset = "cmmd", .n_labels = 3,
                              .labels = {{"pathology", PREP_CLASSES_PATHOLOGY},
                                         {"abnormality", CMMD_ABN},
                                         {"subtype", CMMD_SUBTYPE}}};
    Csv c = {0};
    Paths files = {0};
    StrIndex ix = {0};
    char **keys = NULL;
    size_t nkeys = 0;
    int rc = 1;
    char *xp = path_join(o->raw_root, "CMMD_clinicaldata_revision.xlsx");
    char *cp = path_join(o->raw_root, "CMMD_clinicaldata_revision.csv");
    char *idir = path_join(o->raw_root, "CMMD");
    static const char *const cols[] = {"ID1", "LeftRight", "abnormality", "classification", "subtype", NULL};
    if (path_exists(xp) ? xlsx_read(xp, &c, e) : csv_read(cp, &c, e)) goto out;
    if (csv_require_columns(&c, cols, e)) goto out;
    int c_id = csv_col(&c, "ID1"), c_lr = csv_col(&c, "LeftRight"), c_ab = csv_col(&c, "abnormality"),
        c_cl = csv_col(&c, "classification"), c_sub = csv_col(&c, "subtype");
    /* breast key "<ID1>_<L|R>" -> row */
    keys = xmalloc((c.nrows ? c.nrows : 1) * sizeof *keys);
    for (size_t i = 0; i < c.nrows; i++) {
        int lat = parse_laterality(csv_get(&c, i, c_lr));
        if (lat < 0) {
            err_value(e, &c, i, "LeftRight", csv_get(&c, i, c_lr));
            goto out_keys;
        }
        const char *id = csv_get(&c, i, c_id);
        keys[i] = xmalloc(strlen(id) + 3);
        sprintf(keys[i], "%s_%c", id, lat == PREP_LAT_L ? 'L' : 'R');
        nkeys = i + 1;
    }
    strindex_build(&ix, (const char *const *)keys, c.nrows);
    walk_dcm(idir, &files, 0);
    if (files.n == 0) {
        err_set(e, "%s: no DICOM files found", idir);
        goto out_keys;
    }
    qsort(files.p, files.n, sizeof *files.p, cmp_str);
    size_t rootlen = strlen(idir) + 1;
    for (size_t f = 0; f < files.n; f++) {
        Dicom d;
        Err e1;
        const char *rel = files.p[f] + rootlen;   /* "<ID1>/<study>/<series>/1-1.dcm" */
        char id1[64];
        const char *slash = strchr(rel, '/');
        size_t il = slash ? (size_t)(slash - rel) : strlen(rel);
        if (il >= sizeof id1) il = sizeof id1 - 1;
        memcpy(id1, rel, il);
        id1[il] = 0;
        RawRecord *r = rawset_add(&set);
        r->image_path = strdup(files.p[f]);
        str_copy(r->image_id, sizeof r->image_id, rel);
        str_copy(r->patient_id, sizeof r->patient_id, id1);
        if (dicom_read_header(files.p[f], &d, &e1)) {
            /* an unreadable file: left to the pipeline, which applies the on_missing policy */
            continue;
        }
        r->laterality = d.info.laterality == 'L' ? PREP_LAT_L : d.info.laterality == 'R' ? PREP_LAT_R : -1;
        if (d.info.view[0]) r->view = parse_view(d.info.view);
        else if (d.info.patient_orientation[0]) {
            const char *bs = strchr(d.info.patient_orientation, '\\');
            r->view = bs && strchr(bs + 1, 'F') ? PREP_VIEW_MLO : PREP_VIEW_CC;
        }
        dicom_free(&d);
        r->labels[0] = PREP_PATH_NORMAL;
        if (r->laterality < 0) continue;
        char key[80];
        snprintf(key, sizeof key, "%s_%c", id1, r->laterality == PREP_LAT_L ? 'L' : 'R');
        long row = strindex_find(&ix, key);
        if (row < 0) continue;   /* a breast without a row: normal */
        const char *cl = csv_get(&c, (size_t)row, c_cl);
        int p = ci_index("benign\nmalignant", cl);
        if (p < -1) {
            err_value(e, &c, (size_t)row, "classification", cl);
            goto out_keys;
        }
        r->labels[0] = p < 0 ? -1 : p + 1;
        if ((r->labels[1] = ci_index(CMMD_ABN, csv_get(&c, (size_t)row, c_ab))) < -1) {
            err_value(e, &c, (size_t)row, "abnormality", csv_get(&c, (size_t)row, c_ab));
            goto out_keys;
        }
        if ((r->labels[2] = ci_index(CMMD_SUBTYPE, csv_get(&c, (size_t)row, c_sub))) < -1) {
            err_value(e, &c, (size_t)row, "subtype", csv_get(&c, (size_t)row, c_sub));
            goto out_keys;
        }
    }
    rc = convert_run(&set, o, st, e);
out_keys:
    for (size_t k = 0; k < nkeys; k++) free(keys[k]);
out:
    free(keys);
    strindex_free(&ix);
    for (size_t k = 0; k < files.n; k++) free(files.p[k]);
    free(files.p);
    csv_free(&c);
    rawset_free(&set);
    free(xp);
    free(cp);
    free(idir);
    return rc;
}
