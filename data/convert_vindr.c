/*
 * convert_vindr.c — VinDr-Mammo (PhysioNet vindr-mammo 1.0.0) -> prepared HDF5.
 *
 * Raw layout (mammo-data.md A3):
 *   breast-level_annotations.csv  study_id, series_id, image_id, laterality, view_position,
 *                                 height, width, breast_birads, breast_density, split
 *   finding_annotations.csv       the image columns + finding_categories, finding_birads,
 *                                 xmin, ymin, xmax, ymax (one row per box; "No Finding" rows
 *                                 have empty coordinates)
 *   images/<study_id>/<image_id>.dicom
 * Labels: density ("DENSITY A".."D"), birads ("BI-RADS 1".."5"); findings = the 10 categories
 * (the `finding_categories` field is a Python list literal, e.g. "['Mass', 'Suspicious
 * Calcification']"); a box takes its row's first category and keeps the row's finding_birads
 * (/box_labels/birads; the image's birads is breast_birads).  split training/test is kept (val
 * carved from training patients); patient = study_id (one study per patient).
 */
#include "data/prepared.h"

#include <stdlib.h>
#include <string.h>

enum { VINDR_DENSITY = 0, VINDR_BIRADS = 1 };   /* label columns of the schema */

static const char *VINDR_FINDINGS =
    "Mass\nSuspicious Calcification\nAsymmetry\nFocal Asymmetry\nGlobal Asymmetry\nArchitectural Distortion\n"
    "Skin Thickening\nSkin Retraction\nNipple Retraction\nSuspicious Lymph Node";

/* Parses "['Mass', 'Suspicious Calcification']" into class indices; "No Finding" is skipped.
 * Returns the count, or -1 with *bad set to the unknown name. */
static int parse_categories(const char *s, int *out, int max, char *bad, size_t badn) {
    int n = 0;
    const char *p = s;
    while ((p = strpbrk(p, "'\""))) {
        char q = *p++;
        const char *end = strchr(p, q);
        if (!end) break;
        char name[128];
        size_t len = (size_t)(end - p) < sizeof name - 1 ? (size_t)(end - p) : sizeof name - 1;
        memcpy(name, p, len);
        name[len] = 0;
        p = end + 1;
        if (!strcmp(name, "No Finding")) continue;
        int k = label_index(VINDR_FINDINGS, name);
        if (k < 0) {
            snprintf(bad, badn, "%s", name);
            return -1;
        }
        if (n < max) out[n++] = k;
    }
    if (n == 0 && !strchr(s, '\'') && !strchr(s, '"') && *s && strcmp(s, "No Finding") != 0) {
        /* a bare single name without list brackets */
        int k = label_index(VINDR_FINDINGS, s);
        if (k < 0) {
            snprintf(bad, badn, "%s", s);
            return -1;
        }
        out[n++] = k;
    }
    return n;
}

int convert_vindr(const ConvertOpts *o, ConvertStats *st, Err *e) {
    char *bpath = path_join(o->raw_root, "breast-level_annotations.csv");
    char *fpath = path_join(o->raw_root, "finding_annotations.csv");
    Csv bl = {0}, fa = {0};
    RawSet set = {0};
    int rc = 1;
    static const char *const bcols[] = {"study_id", "series_id", "image_id", "laterality", "view_position",
                                        "breast_birads", "breast_density", "split", NULL};
    static const char *const fcols[] = {"study_id", "image_id", "finding_categories", "finding_birads",
                                        "xmin", "ymin", "xmax", "ymax", NULL};
    if (csv_read(bpath, &bl, e) || csv_require_columns(&bl, bcols, e)) goto out;
    if (csv_read(fpath, &fa, e) || csv_require_columns(&fa, fcols, e)) goto out;

    set.schema = (PrepSchema){.dataset = "vindr", .n_labels = 2, .findings = VINDR_FINDINGS,
                              .labels = {{"density", PREP_CLASSES_DENSITY}, {"birads", PREP_CLASSES_BIRADS}},
                              .box_labels = "birads"};
    int c_study = csv_col(&bl, "study_id"), c_img = csv_col(&bl, "image_id"), c_lat = csv_col(&bl, "laterality"),
        c_view = csv_col(&bl, "view_position"), c_bi = csv_col(&bl, "breast_birads"),
        c_den = csv_col(&bl, "breast_density"), c_split = csv_col(&bl, "split");
    const char **ids = xmalloc((bl.nrows ? bl.nrows : 1) * sizeof *ids);
    for (size_t i = 0; i < bl.nrows; i++) {
        const char *study = csv_get(&bl, i, c_study), *img = csv_get(&bl, i, c_img);
        RawRecord *r = rawset_add(&set);
        char rel[PREP_IMAGE_ID_LEN * 2];
        snprintf(rel, sizeof rel, "images/%s/%s.dicom", study, img);
        r->image_path = path_join(o->raw_root, rel);
        str_copy(r->image_id, sizeof r->image_id, img);
        str_copy(r->patient_id, sizeof r->patient_id, study);
        ids[i] = img;
        if ((r->laterality = parse_laterality(csv_get(&bl, i, c_lat))) < -1) {
            err_value(e, &bl, i, "laterality", csv_get(&bl, i, c_lat));
            free(ids);
            goto out;
        }
        r->view = parse_view(csv_get(&bl, i, c_view));
        if ((r->labels[VINDR_DENSITY] = parse_density(csv_get(&bl, i, c_den))) < -1) {
            err_value(e, &bl, i, "breast_density", csv_get(&bl, i, c_den));
            free(ids);
            goto out;
        }
        if ((r->labels[VINDR_BIRADS] = parse_birads(csv_get(&bl, i, c_bi))) < -1) {
            err_value(e, &bl, i, "breast_birads", csv_get(&bl, i, c_bi));
            free(ids);
            goto out;
        }
        const char *sp = csv_get(&bl, i, c_split);
        r->src_split = *sp ? prep_split_parse(sp) : -1;
        if (*sp && r->src_split < 0) {
            err_value(e, &bl, i, "split", sp);
            free(ids);
            goto out;
        }
    }
    StrIndex ix;
    strindex_build(&ix, ids, bl.nrows);
    int f_img = csv_col(&fa, "image_id"), f_cat = csv_col(&fa, "finding_categories"), f_bi = csv_col(&fa, "finding_birads");
    int f_c[4] = {csv_col(&fa, "xmin"), csv_col(&fa, "ymin"), csv_col(&fa, "xmax"), csv_col(&fa, "ymax")};
    for (size_t i = 0; i < fa.nrows; i++) {
        long k = strindex_find(&ix, csv_get(&fa, i, f_img));
        if (k < 0) {
            err_set(e, "%s:%zu: image_id '%s' is not in breast-level_annotations.csv", fa.path, fa.line[i], csv_get(&fa, i, f_img));
            goto fail_ix;
        }
        RawRecord *r = &set.r[k];
        int cats[PREP_MAX_FINDINGS];
        char bad[128];
        int nc = parse_categories(csv_get(&fa, i, f_cat), cats, PREP_MAX_FINDINGS, bad, sizeof bad);
        if (nc < 0) {
            err_set(e, "%s:%zu: column 'finding_categories': unknown category '%s'", fa.path, fa.line[i], bad);
            goto fail_ix;
        }
        for (int c = 0; c < nc; c++) r->findings[cats[c]] = 1;
        if (csv_is_empty(&fa, i, f_c[0])) continue;   /* "No Finding" row */
        double v[4];
        for (int c = 0; c < 4; c++)
            if (csv_get_double(&fa, i, f_c[c], &v[c], e)) goto fail_ix;
        int fb = parse_birads(csv_get(&fa, i, f_bi));
        if (fb < -1) {
            err_value(e, &fa, i, "finding_birads", csv_get(&fa, i, f_bi));
            goto fail_ix;
        }
        raw_add_box(r, (float)v[0], (float)v[1], (float)v[2], (float)v[3], nc > 0 ? cats[0] : -1)[VINDR_BIRADS] = fb;
    }
    strindex_free(&ix);
    free(ids);
    rc = convert_run(&set, o, st, e);
    goto out;
fail_ix:
    strindex_free(&ix);
    free(ids);
out:
    csv_free(&bl);
    csv_free(&fa);
    rawset_free(&set);
    free(bpath);
    free(fpath);
    return rc;
}
