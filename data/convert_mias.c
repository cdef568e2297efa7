/*
 * convert_mias.c — MIAS / mini-MIAS -> prepared HDF5.
 *
 * Raw layout (mammo-data.md A7): mdb001.pgm ... mdb322.pgm (P5, 1024x1024 in the release) and
 * Info.txt, whitespace-separated "REFNUM BG CLASS [SEVERITY [X Y RADIUS]]" with an optional
 * header line, several lines for an image with several abnormalities.
 *   BG: F fatty, G fatty-glandular, D dense-glandular -> label tissue ("F", "G", "D")
 *   CLASS: CALC, CIRC, SPIC, MISC, ARCH, ASYM -> findings; NORM -> pathology normal
 *   SEVERITY: B / M -> pathology benign / malignant (worst over the lines; each located
 *             abnormality's box keeps its own: /box_labels/pathology)
 *   X, Y: centre with the origin at the BOTTOM-left (row = H - 1 - Y); RADIUS in pixels.  Lines
 *   without coordinates (widely distributed calcifications) give findings only.
 * Each located abnormality gives a box (its circle's extent, label = class) and fills a circle
 * in the mask.  MLO only; laterality from the number (even = left, odd = right, the MIAS README's
 * pairing); patient = the pair (mdb001 + mdb002 = patient 1).  No source split.
 */
#include "data/prepared.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MIAS_TISSUE = 0, MIAS_PATHOLOGY = 1 };   /* label columns of the schema */

static const char *MIAS_FINDINGS = "CALC\nCIRC\nSPIC\nMISC\nARCH\nASYM";

static int find_ref(RawSet *s, const char *ref) {
    for (size_t k = s->n; k-- > 0;)
        if (!strcmp(s->r[k].image_id, ref)) return (int)k;
    return -1;
}

static int parse_num(const char *t, float *v) {
    char *end;
    double x = strtod(t, &end);
    if (end == t || *end) return 0;
    *v = (float)x;
    return 1;
}

int convert_mias(const ConvertOpts *o, ConvertStats *st, Err *e) {
    RawSet set = {0};
    set.schema = (PrepSchema){.dataset = "mias", .n_labels = 2, .findings = MIAS_FINDINGS, .has_masks = 1,
                              .labels = {{"tissue", "F\nG\nD"}, {"pathology", PREP_CLASSES_PATHOLOGY}},
                              .box_labels = "pathology"};
    char *ipath = path_join(o->raw_root, "Info.txt");
    FILE *f = fopen(ipath, "r");
    int rc = 1;
    if (!f) {
        err_set(e, "%s: no such file", ipath);
        goto out;
    }
    char line[512];
    int ln = 0;
    while (fgets(line, sizeof line, f)) {
        ln++;
        char *tok[8];
        int nt = 0;
        for (char *p = strtok(line, " \t\r\n"); p && nt < 8; p = strtok(NULL, " \t\r\n")) tok[nt++] = p;
        if (nt == 0) continue;
        if (!strcmp(tok[0], "REFNUM")) continue;   /* header */
        if (strncmp(tok[0], "mdb", 3) != 0 || !isdigit((unsigned char)tok[0][3])) {
            err_set(e, "%s:%d: expected a reference like 'mdb001', got '%s'", ipath, ln, tok[0]);
            goto out_f;
        }
        if (nt < 3) {
            err_set(e, "%s:%d: expected 'REFNUM BG CLASS ...', got %d fields", ipath, ln, nt);
            goto out_f;
        }
        int k = find_ref(&set, tok[0]);
        RawRecord *r;
        if (k < 0) {
            r = rawset_add(&set);
            str_copy(r->image_id, sizeof r->image_id, tok[0]);
            char file[64];
            snprintf(file, sizeof file, "%.40s.pgm", tok[0]);
            r->image_path = path_join(o->raw_root, file);
            int num = atoi(tok[0] + 3);
            snprintf(r->patient_id, sizeof r->patient_id, "mias_%03d", (num + 1) / 2);
            r->laterality = num % 2 == 0 ? PREP_LAT_L : PREP_LAT_R;
            r->view = PREP_VIEW_MLO;
            r->y_up = 1;
            r->annotated = 1;
        } else {
            r = &set.r[k];
        }
        int bg = label_index("F\nG\nD", tok[1]);
        if (bg < 0) {
            err_set(e, "%s:%d: column BG: unknown value '%s' (F, G or D)", ipath, ln, tok[1]);
            goto out_f;
        }
        r->labels[MIAS_TISSUE] = bg;
        if (!strcmp(tok[2], "NORM")) {
            if (r->labels[MIAS_PATHOLOGY] < PREP_PATH_NORMAL) r->labels[MIAS_PATHOLOGY] = PREP_PATH_NORMAL;
            continue;
        }
        int cls = label_index(MIAS_FINDINGS, tok[2]);
        if (cls < 0) {
            err_set(e, "%s:%d: column CLASS: unknown value '%s'", ipath, ln, tok[2]);
            goto out_f;
        }
        r->findings[cls] = 1;
        int sev = -1;
        if (nt >= 4) {
            sev = !strcmp(tok[3], "B") ? PREP_PATH_BENIGN : !strcmp(tok[3], "M") ? PREP_PATH_MALIGNANT : -2;
            if (sev < 0) {
                err_set(e, "%s:%d: column SEVERITY: unknown value '%s' (B or M)", ipath, ln, tok[3]);
                goto out_f;
            }
            if (sev > r->labels[MIAS_PATHOLOGY]) r->labels[MIAS_PATHOLOGY] = sev;
        }
        float x, y, rad;
        if (nt >= 7 && parse_num(tok[4], &x) && parse_num(tok[5], &y) && parse_num(tok[6], &rad))
            raw_add_circle(r, x, y, rad, 1, cls)[MIAS_PATHOLOGY] = sev;   /* (x, y) from the bottom-left: y_up */
    }
    rc = convert_run(&set, o, st, e);
out_f:
    fclose(f);
out:
    rawset_free(&set);
    free(ipath);
    return rc;
}
