/*
 * convert_embed.c — EMBED Open Data (Emory, AWS) -> prepared HDF5.
 *
 * Raw layout (mammo-data.md A6), under the root or root/tables/:
 *   EMBED_OpenData_metadata.csv  one row per file: empi_anon, acc_anon, anon_dicom_path,
 *                                FinalImageType (2D, C-view, ...), ImageLateralityFinal,
 *                                ViewPosition, ROI_coords ("[[ymin, xmin, ymax, xmax], ...]" —
 *                                y first!), ...
 *   EMBED_OpenData_clinical.csv  one row per finding: empi_anon, acc_anon, tissueden, asses,
 *                                side (L/R/B), path_severity, ...
 *   images at cohort_N/<patient>/<study>/<SOPInstanceUID>.dcm; anon_dicom_path is an absolute
 *   path on Emory's system, resolved from its "cohort" component (or its last 3 components).
 * Only FinalImageType == 2D images are converted.  An image takes the clinical rows of its exam
 * (acc_anon) whose side is its laterality, B or empty: density = tissueden 1..4 (5 = male ->
 * missing), birads = the highest assessment (asses A=0, N=1, B=2, P=3, S=4, M=5, K=6, X=none),
 * pathology = the most severe path_severity (0, 1 -> malignant; 2, 3, 4 -> benign; 5 -> normal;
 * 6, non-breast cancer -> missing).  Boxes from ROI_coords (label -1).  Patient = empi_anon.
 */
#include "data/prepared.h"

#include <stdlib.h>
#include <string.h>

static int asses_birads(const char *s) {
    while (*s == ' ') s++;
    if (!*s) return -1;
    static const char letters[] = "ANBPSMK";
    const char *p = s[1] == 0 || s[1] == ' ' ? strchr(letters, s[0]) : NULL;
    if (p && *p) return (int)(p - letters);
    if (s[0] == 'X' && (s[1] == 0 || s[1] == ' ')) return -1;
    return -2;
}

static int severity_pathology(long sev) {
    if (sev == 0 || sev == 1) return PREP_PATH_MALIGNANT;
    if (sev >= 2 && sev <= 4) return PREP_PATH_BENIGN;
    if (sev == 5) return PREP_PATH_NORMAL;
    return -1;
}

static char *resolve_embed(const char *root, const char *p) {
    while (*p == ' ') p++;
    if (*p != '/') {
        char *q = path_join(root, p);
        if (path_exists(q)) return q;
        free(q);
    }
    const char *c = strstr(p, "cohort");
    if (c && (c == p || c[-1] == '/')) return path_join(root, c);
    /* last 3 components: patient/study/file */
    const char *end = p + strlen(p), *s = end;
    int slashes = 0;
    while (s > p && slashes < 3)
        if (*--s == '/') slashes++;
    if (*s == '/') s++;
    return path_join(root, s);
}

static char *find_table(const char *root, const char *name) {
    char *p = path_join(root, name);
    if (path_exists(p)) return p;
    free(p);
    char *t = path_join(root, "tables");
    p = path_join(t, name);
    free(t);
    return p;
}

int convert_embed(const ConvertOpts *o, ConvertStats *st, Err *e) {
    RawSet set = {0};
    set.schema = (PrepSchema){.dataset = "embed", .n_labels = 3,
                              .labels = {{"density", PREP_CLASSES_DENSITY},
                                         {"birads", PREP_CLASSES_BIRADS},
                                         {"pathology", PREP_CLASSES_PATHOLOGY}}};
    char *mpath = find_table(o->raw_root, "EMBED_OpenData_metadata.csv");
    char *cpath = find_table(o->raw_root, "EMBED_OpenData_clinical.csv");
    Csv m = {0}, c = {0};
    StrIndex ix = {0};
    const char **acc = NULL;
    int rc = 1;
    static const char *const mcols[] = {"empi_anon", "acc_anon", "anon_dicom_path", "FinalImageType",
                                        "ImageLateralityFinal", "ViewPosition", NULL};
    static const char *const ccols[] = {"acc_anon", "tissueden", "asses", "side", "path_severity", NULL};
    if (csv_read(mpath, &m, e) || csv_require_columns(&m, mcols, e)) goto out;
    if (csv_read(cpath, &c, e) || csv_require_columns(&c, ccols, e)) goto out;
    int c_acc = csv_col(&c, "acc_anon"), c_den = csv_col(&c, "tissueden"), c_as = csv_col(&c, "asses"),
        c_side = csv_col(&c, "side"), c_sev = csv_col(&c, "path_severity");
    acc = xmalloc((c.nrows ? c.nrows : 1) * sizeof *acc);
    for (size_t i = 0; i < c.nrows; i++) acc[i] = csv_get(&c, i, c_acc);
    strindex_build(&ix, acc, c.nrows);
    int m_pat = csv_col(&m, "empi_anon"), m_acc = csv_col(&m, "acc_anon"), m_path = csv_col(&m, "anon_dicom_path"),
        m_type = csv_col(&m, "FinalImageType"), m_lat = csv_col(&m, "ImageLateralityFinal"),
        m_view = csv_col(&m, "ViewPosition"), m_roi = csv_col(&m, "ROI_coords");
    for (size_t i = 0; i < m.nrows; i++) {
        if (strcmp(csv_get(&m, i, m_type), "2D") != 0) continue;
        RawRecord *r = rawset_add(&set);
        const char *dp = csv_get(&m, i, m_path);
        r->image_path = resolve_embed(o->raw_root, dp);
        const char *base = strrchr(dp, '/');
        str_copy(r->image_id, sizeof r->image_id, base ? base + 1 : dp);
        str_copy(r->patient_id, sizeof r->patient_id, csv_get(&m, i, m_pat));
        if ((r->laterality = parse_laterality(csv_get(&m, i, m_lat))) < -1) {
            err_value(e, &m, i, "ImageLateralityFinal", csv_get(&m, i, m_lat));
            goto out;
        }
        r->view = parse_view(csv_get(&m, i, m_view));
        /* clinical rows of the exam on this side */
        size_t first, n = strindex_range(&ix, csv_get(&m, i, m_acc), &first);
        long best_sev = 99;
        for (size_t k = 0; k < n; k++) {
            size_t row = ix.val[first + k];
            const char *sd = csv_get(&c, row, c_side);
            int side = parse_laterality(sd);
            int both = side == -1 || sd[0] == 'B';   /* empty/NaN or both breasts */
            if (!both && side != r->laterality) continue;
            if (!csv_is_empty(&c, row, c_den)) {
                long den;
                if (csv_get_long(&c, row, c_den, &den, e)) goto out;
                if (den < 1 || den > 5) {
                    err_value(e, &c, row, "tissueden", csv_get(&c, row, c_den));
                    goto out;
                }
                r->labels[0] = den == 5 ? -1 : (int32_t)(den - 1);
            }
            int b = asses_birads(csv_get(&c, row, c_as));
            if (b < -1) {
                err_value(e, &c, row, "asses", csv_get(&c, row, c_as));
                goto out;
            }
            if (b > r->labels[1]) r->labels[1] = b;
            if (!csv_is_empty(&c, row, c_sev)) {
                double sev;
                if (csv_get_double(&c, row, c_sev, &sev, e)) goto out;
                if (sev < best_sev) best_sev = (long)sev;
            }
        }
        if (best_sev != 99) r->labels[2] = severity_pathology(best_sev);
        /* ROI_coords: groups of 4 numbers (ymin, xmin, ymax, xmax) */
        if (m_roi >= 0) {
            const char *s = csv_get(&m, i, m_roi);
            double v[4];
            int nv = 0;
            while (*s) {
                char *end;
                if ((*s >= '0' && *s <= '9') || *s == '-' || *s == '.') {
                    double x = strtod(s, &end);
                    if (end == s) {
                        s++;
                        continue;
                    }
                    v[nv++] = x;
                    s = end;
                    if (nv == 4) {
                        raw_add_box(r, (float)v[1], (float)v[0], (float)v[3], (float)v[2], -1);
                        nv = 0;
                    }
                } else {
                    s++;
                }
            }
        }
    }
    rc = convert_run(&set, o, st, e);
out:
    strindex_free(&ix);
    free(acc);
    csv_free(&m);
    csv_free(&c);
    rawset_free(&set);
    free(mpath);
    free(cpath);
    return rc;
}
