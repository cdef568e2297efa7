/*
 * convert_rsna.c — RSNA Screening Mammography Breast Cancer Detection (Kaggle) -> prepared HDF5.
 *
 * Raw layout (mammo-data.md A5):
 *   train.csv   site_id, patient_id, image_id, laterality, view, age, cancer, biopsy, invasive,
 *               BIRADS, implant, density, machine_id, difficult_negative_case
 *   train_images/<patient_id>/<image_id>.dcm   (many JPEG 2000; some JPEG-Lossless, which the
 *               DICOM reader refuses by name: use on_missing = CONVERT_SKIP or `gdcmconv --raw`)
 * test.csv has no labels and is not converted.
 * Labels: density (A-D), birads (0, 1, 2 as the canonical classes; often empty), cancer, biopsy,
 * invasive, implant, difficult_negative_case (0/1, "True"/"False").  View: CC, MLO, others ->
 * "other".  Patient = patient_id; no source split (seeded patient split).
 */
#include "data/prepared.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* 0/1, True/False; -1 empty; -2 other */
static int parse_bool(const char *s) {
    while (*s == ' ') s++;
    if (!*s || !strcasecmp(s, "nan")) return -1;
    if (!strcmp(s, "0") || !strcmp(s, "0.0") || !strcasecmp(s, "false")) return 0;
    if (!strcmp(s, "1") || !strcmp(s, "1.0") || !strcasecmp(s, "true")) return 1;
    return -2;
}

int convert_rsna(const ConvertOpts *o, ConvertStats *st, Err *e) {
    RawSet set = {0};
    set.schema = (PrepSchema){.dataset = "rsna", .n_labels = 7,
                              .labels = {{"density", PREP_CLASSES_DENSITY},
                                         {"birads", PREP_CLASSES_BIRADS},
                                         {"cancer", "0\n1"},
                                         {"biopsy", "0\n1"},
                                         {"invasive", "0\n1"},
                                         {"implant", "0\n1"},
                                         {"difficult_negative_case", "0\n1"}}};
    char *cpath = path_join(o->raw_root, "train.csv");
    Csv c = {0};
    int rc = 1;
    static const char *const cols[] = {"patient_id", "image_id", "laterality", "view", "cancer", "BIRADS", "density", NULL};
    if (csv_read(cpath, &c, e) || csv_require_columns(&c, cols, e)) goto out;
    int c_pat = csv_col(&c, "patient_id"), c_img = csv_col(&c, "image_id"), c_lat = csv_col(&c, "laterality"),
        c_view = csv_col(&c, "view"), c_bi = csv_col(&c, "BIRADS"), c_den = csv_col(&c, "density");
    const char *bool_cols[5] = {"cancer", "biopsy", "invasive", "implant", "difficult_negative_case"};
    int c_bool[5];
    for (int k = 0; k < 5; k++) c_bool[k] = csv_col(&c, bool_cols[k]);   /* optional except cancer */
    for (size_t i = 0; i < c.nrows; i++) {
        RawRecord *r = rawset_add(&set);
        const char *pat = csv_get(&c, i, c_pat), *img = csv_get(&c, i, c_img);
        char rel[256];
        snprintf(rel, sizeof rel, "train_images/%.100s/%.100s.dcm", pat, img);
        r->image_path = path_join(o->raw_root, rel);
        str_copy(r->image_id, sizeof r->image_id, img);
        str_copy(r->patient_id, sizeof r->patient_id, pat);
        if ((r->laterality = parse_laterality(csv_get(&c, i, c_lat))) < -1) {
            err_value(e, &c, i, "laterality", csv_get(&c, i, c_lat));
            goto out;
        }
        r->view = parse_view(csv_get(&c, i, c_view));
        if ((r->labels[0] = parse_density(csv_get(&c, i, c_den))) < -1) {
            err_value(e, &c, i, "density", csv_get(&c, i, c_den));
            goto out;
        }
        int b = parse_birads(csv_get(&c, i, c_bi));
        if (b < -1 || b > 2) {
            err_value(e, &c, i, "BIRADS", csv_get(&c, i, c_bi));
            goto out;
        }
        r->labels[1] = b;
        for (int k = 0; k < 5; k++) {
            if (c_bool[k] < 0) continue;
            int v = parse_bool(csv_get(&c, i, c_bool[k]));
            if (v < -1) {
                err_value(e, &c, i, bool_cols[k], csv_get(&c, i, c_bool[k]));
                goto out;
            }
            r->labels[2 + k] = v;
        }
    }
    rc = convert_run(&set, o, st, e);
out:
    csv_free(&c);
    rawset_free(&set);
    free(cpath);
    return rc;
}
