/*
 * convert_cbis.c — CBIS-DDSM (TCIA) -> prepared HDF5.
 *
 * Raw layout (mammo-data.md A1): mass_case_description_{train,test}_set.csv and
 * calc_case_description_{train,test}_set.csv, one row per abnormality, exact headers:
 *   mass: patient_id, breast_density, left or right breast, image view, abnormality id,
 *         abnormality type, mass shape, mass margins, assessment, pathology, subtlety,
 *         image file path, cropped image file path, ROI mask file path
 *   calc: the same with "breast density" (a space!) and calc type, calc distribution.
 * Image paths are "<Subject>/<StudyUID>/<SeriesUID>/000000.dcm" (or 1-1.dcm), with a possible
 * trailing newline.  They are resolved under the root as given, under root/CBIS-DDSM/, and
 * finally by the subject folder (the NBIA download tree does not follow the CSV paths).  The ROI
 * folder holds the mask and the crop in no fixed order: the mask is the binary image of the full
 * image's size (convert_common's mask search).
 * One sample per full image (rows grouped by subject folder): pathology = the worst
 * (BENIGN_WITHOUT_CALLBACK -> benign), birads = max assessment, findings mass/calcification,
 * subtlety of the first abnormality, masks = union of the ROI masks, one box per ROI carrying
 * its own abnormality's assessment, pathology and subtlety (/box_labels/: crops are labelled by
 * their lesion, as the release's rows are).
 * Split: *_train_set -> train (val carved from train patients), *_test_set -> test.
 * cbis-roi (convert_cbis_roi): one sample per row instead — the abnormality's cropped image, its
 * own row's labels, no boxes or masks; the split is the same, patient by patient.
 */
#include "data/dicom.h"
#include "data/prepared.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *CBIS_FINDINGS = "mass\ncalcification";
/* label columns of the schema below */
enum { CBIS_DENSITY = 0, CBIS_BIRADS = 1, CBIS_PATHOLOGY = 2, CBIS_SUBTLETY = 3 };

static int isdir(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

/* first .dcm below dir (sorted walk), preferring one whose path contains `prefer` */
static char *find_dicom(const char *dir, const char *prefer, int depth) {
    DIR *d = opendir(dir);
    if (!d) return NULL;
    char *names[256];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 256)
        if (de->d_name[0] != '.') names[n++] = strdup(de->d_name);
    closedir(d);
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && strcmp(names[j], names[j - 1]) < 0; j--) {
            char *t = names[j];
            names[j] = names[j - 1];
            names[j - 1] = t;
        }
    char *found = NULL, *fallback = NULL;
    for (int i = 0; i < n && !found; i++) {
        char *p = path_join(dir, names[i]);
        if (isdir(p)) {
            if (depth < 4) {
                char *f = find_dicom(p, prefer, depth + 1);
                if (f && prefer && *prefer && strstr(f, prefer)) found = f;
                else if (f && !fallback) fallback = f;
                else free(f);
            }
            free(p);
        } else {
            const char *ext = strrchr(names[i], '.');
            if (ext && !strcmp(ext, ".dcm")) {
                if (prefer && *prefer && strstr(p, prefer)) found = p;
                else if (!fallback) fallback = p;
                else free(p);
            } else {
                free(p);
            }
        }
    }
    for (int i = 0; i < n; i++) free(names[i]);
    if (found) {
        free(fallback);
        return found;
    }
    return fallback;
}

/* CSV path -> trimmed relative path, subject folder and series UID */
static void split_csv_path(const char *s, char *rel, size_t n, char *subject, char *series) {
    while (*s == ' ' || *s == '\n' || *s == '\r') s++;
    snprintf(rel, n, "%s", s);
    size_t l = strlen(rel);
    while (l && (rel[l - 1] == '\n' || rel[l - 1] == '\r' || rel[l - 1] == ' ')) rel[--l] = 0;
    subject[0] = series[0] = 0;
    const char *a = strchr(rel, '/');
    size_t sl = a ? (size_t)(a - rel) : strlen(rel);
    if (sl > 255) sl = 255;
    memcpy(subject, rel, sl);
    subject[sl] = 0;
    if (a) {
        const char *b = strchr(a + 1, '/');
        if (b) {
            const char *c = strchr(b + 1, '/');
            size_t ql = c ? (size_t)(c - b - 1) : strlen(b + 1);
            if (ql > 255) ql = 255;
            memcpy(series, b + 1, ql);
            series[ql] = 0;
        }
    }
}

/* Resolve a CSV path under root: literal, under CBIS-DDSM/, else the subject folder (a DICOM
 * inside it for images, the folder itself for ROI masks).  Returns a malloc'd path. */
static char *resolve(const char *root, const char *csv_path, int want_dir) {
    char rel[1024], subject[256], series[256];
    split_csv_path(csv_path, rel, sizeof rel, subject, series);
    char *p = path_join(root, rel);
    if (path_exists(p)) return p;
    char *alt = path_join(root, "CBIS-DDSM");
    char *q = path_join(alt, rel);
    if (path_exists(q)) {
        free(p);
        free(alt);
        return q;
    }
    free(q);
    const char *bases[2] = {root, alt};
    /* the subject-folder fallback walks a folder: only a real subject name, never "", "." or ".." */
    int subject_ok = subject[0] && strcmp(subject, ".") && strcmp(subject, "..");
    for (int b = 0; b < 2 && subject_ok; b++) {
        char *dir = path_join(bases[b], subject);
        if (isdir(dir)) {
            if (want_dir) {
                free(p);
                free(alt);
                return dir;
            }
            char *f = find_dicom(dir, series, 0);
            free(dir);
            if (f) {
                free(p);
                free(alt);
                return f;
            }
        } else {
            free(dir);
        }
    }
    free(alt);
    return p;   /* missing: the load reports this path */
}

static int parse_pathology(const char *s) {
    char b[64];
    snprintf(b, sizeof b, "%s", s);
    size_t l = strlen(b);
    while (l && (b[l - 1] == ' ' || b[l - 1] == '\r')) b[--l] = 0;
    if (!l) return -1;
    if (!strcmp(b, "MALIGNANT")) return PREP_PATH_MALIGNANT;
    if (!strcmp(b, "BENIGN") || !strcmp(b, "BENIGN_WITHOUT_CALLBACK")) return PREP_PATH_BENIGN;
    return -2;
}

/* The cropped image of one abnormality.  The release's ROI folders hold the crop and the ROI
 * mask in no fixed order (and the CSV's two columns are sometimes swapped), so the crop is the
 * first DICOM — the CSV's own path, then the files under the ROI's subject folder — whose size is
 * not the full image's W x H (the mask's is).  Returns a malloc'd path, or NULL with *e set. */
static char *roi_crop_path(const char *root, const char *csv_crop, int W, int H, Err *e) {
    char rel[1024], subject[256], series[256];
    split_csv_path(csv_crop, rel, sizeof rel, subject, series);
    char *p = resolve(root, csv_crop, 0);
    Dicom d = {0};
    Err e1;
    if (!isdir(p) && dicom_read_header(p, &d, &e1) == 0) {
        int full = d.info.cols == W && d.info.rows == H;
        dicom_free(&d);
        if (!full) return p;
    }
    char *dir = subject[0] && strcmp(subject, ".") && strcmp(subject, "..") ? resolve(root, subject, 1) : NULL;
    char **files = NULL, *found = NULL;
    int n = dir && isdir(dir) ? raw_list_images(dir, &files) : 0;
    for (int k = 0; k < n && !found; k++) {
        if (dicom_read_header(files[k], &d, &e1) == 0) {
            if (!(d.info.cols == W && d.info.rows == H)) found = strdup(files[k]);
            dicom_free(&d);
        }
    }
    for (int k = 0; k < (n < 0 ? RAW_SEARCH_MAX_FILES : n); k++) free(files[k]);
    free(files);
    if (!found) {
        char *named = path_join(root, rel);   /* the CSV's path, not whatever the fallback resolved */
        err_set(e, "%s: no cropped image there%s (a DICOM whose size is not the full image's %dx%d)", named,
                n < 0 ? ", and too many files under its subject folder to search" : n ? " nor under its subject folder" : "", W, H);
        free(named);
    }
    free(dir);
    free(p);
    return found;
}

/* rois = 0: one record per full image (rows grouped by subject folder), a box + mask per ROI;
 * rois = 1: one record per row, its cropped image, labelled with the row's own values.  A row
 * whose crop cannot be found fails the conversion, or with CONVERT_SKIP is counted in *skipped
 * (first message in skip_msg). */
static int read_table(const char *root, const char *file, int is_mass, int split, int rois, const ConvertOpts *o,
                      RawSet *set, char ***keys, size_t *nkeys, size_t *capkeys, long *skipped, char *skip_msg,
                      size_t skip_len, Err *e) {
    char *path = path_join(root, file);
    if (!path_exists(path)) {
        free(path);
        return -1;   /* absent file: not an error by itself */
    }
    Csv c = {0};
    const char *const mass_cols[] = {"patient_id", "breast_density", "left or right breast", "image view", "abnormality id",
                                     "abnormality type", "mass shape", "mass margins", "assessment", "pathology",
                                     "subtlety", "image file path", "cropped image file path", "ROI mask file path", NULL};
    const char *const calc_cols[] = {"patient_id", "breast density", "left or right breast", "image view", "abnormality id",
                                     "abnormality type", "calc type", "calc distribution", "assessment", "pathology",
                                     "subtlety", "image file path", "cropped image file path", "ROI mask file path", NULL};
    if (csv_read(path, &c, e) || csv_require_columns(&c, is_mass ? mass_cols : calc_cols, e)) {
        csv_free(&c);
        free(path);
        return 1;
    }
    free(path);
    int c_pat = csv_col(&c, "patient_id"), c_den = csv_col(&c, is_mass ? "breast_density" : "breast density"),
        c_lat = csv_col(&c, "left or right breast"), c_view = csv_col(&c, "image view"),
        c_type = csv_col(&c, "abnormality type"), c_as = csv_col(&c, "assessment"), c_path = csv_col(&c, "pathology"),
        c_sub = csv_col(&c, "subtlety"), c_img = csv_col(&c, "image file path"), c_roi = csv_col(&c, "ROI mask file path"),
        c_crop = csv_col(&c, "cropped image file path"), c_id = csv_col(&c, "abnormality id");
    for (size_t i = 0; i < c.nrows; i++) {
        char rel[1024], subject[256], series[256];
        split_csv_path(csv_get(&c, i, c_img), rel, sizeof rel, subject, series);
        /* group rows by subject folder (a linear scan of this table's own records is enough:
         * the rows of one image are adjacent in the release, but do not rely on it) */
        RawRecord *r = NULL;
        for (size_t k = *nkeys; !rois && k-- > 0;)
            if (!strcmp((*keys)[k], subject)) {
                r = &set->r[k];
                break;
            }
        long sub = 0;   /* 1..5; 0 = empty */
        if (!csv_is_empty(&c, i, c_sub) && csv_get_long(&c, i, c_sub, &sub, e)) goto fail;
        if (!csv_is_empty(&c, i, c_sub) && (sub < 1 || sub > 5)) {
            err_value(e, &c, i, "subtlety", csv_get(&c, i, c_sub));
            goto fail;
        }
        if (!r) {
            r = rawset_add(set);
            r->labels[CBIS_SUBTLETY] = (int32_t)(sub - 1);
            if (!rois) {
                if (*nkeys == *capkeys) {
                    *capkeys = *capkeys ? 2 * *capkeys : 64;
                    *keys = xrealloc(*keys, *capkeys * sizeof **keys);
                }
                (*keys)[(*nkeys)++] = strdup(subject);
            }
            r->image_path = resolve(root, csv_get(&c, i, c_img), 0);
            str_copy(r->image_id, sizeof r->image_id, subject);
            str_copy(r->patient_id, sizeof r->patient_id, csv_get(&c, i, c_pat));
            r->src_split = split;
            r->annotated = !rois;
            if ((r->laterality = parse_laterality(csv_get(&c, i, c_lat))) < -1) goto bad_lat;
            r->view = parse_view(csv_get(&c, i, c_view));
            if ((r->labels[CBIS_DENSITY] = parse_density(csv_get(&c, i, c_den))) < -1) {
                err_value(e, &c, i, is_mass ? "breast_density" : "breast density", csv_get(&c, i, c_den));
                goto fail;
            }
        }
        int b = parse_birads(csv_get(&c, i, c_as));
        if (b < -1) {
            err_value(e, &c, i, "assessment", csv_get(&c, i, c_as));
            goto fail;
        }
        if (b > r->labels[CBIS_BIRADS]) r->labels[CBIS_BIRADS] = b;
        int p = parse_pathology(csv_get(&c, i, c_path));
        if (p < -1) {
            err_value(e, &c, i, "pathology", csv_get(&c, i, c_path));
            goto fail;
        }
        if (p > r->labels[CBIS_PATHOLOGY]) r->labels[CBIS_PATHOLOGY] = p;
        const char *type = csv_get(&c, i, c_type);
        int f = label_index(CBIS_FINDINGS, type);
        if (f < 0) {
            err_value(e, &c, i, "abnormality type", type);
            goto fail;
        }
        r->findings[f] = 1;
        if (rois) {
            /* the crop replaces the full image: its size tells the two ROI files apart */
            Dicom full = {0};
            char *crop = NULL;
            if (dicom_read_header(r->image_path, &full, e) == 0) {
                crop = roi_crop_path(root, csv_get(&c, i, c_crop), full.info.cols, full.info.rows, e);
                dicom_free(&full);
            }
            if (!crop) {
                rawset_pop(set);
                if (o->on_missing != CONVERT_SKIP) goto fail;
                if (!(*skipped)++) snprintf(skip_msg, skip_len, "%s", e->msg);
                continue;
            }
            free(r->image_path);
            r->image_path = crop;
            char roi_subject[256];
            split_csv_path(csv_get(&c, i, c_crop), rel, sizeof rel, roi_subject, series);
            if (roi_subject[0]) str_copy(r->image_id, sizeof r->image_id, roi_subject);
            else {
                char id[600];
                snprintf(id, sizeof id, "%s_%s", subject, csv_get(&c, i, c_id));
                str_copy(r->image_id, sizeof r->image_id, id);
            }
            continue;
        }
        if (!csv_is_empty(&c, i, c_roi)) {
            char *m = resolve(root, csv_get(&c, i, c_roi), 1);
            /* the lesion's own values; the image's are the worst / first of its lesions' */
            int32_t *own = raw_add_mask(r, m, f, 1);
            own[CBIS_BIRADS] = b;
            own[CBIS_PATHOLOGY] = p;
            own[CBIS_SUBTLETY] = (int32_t)(sub - 1);
            free(m);
        }
        continue;
    bad_lat:
        err_value(e, &c, i, "left or right breast", csv_get(&c, i, c_lat));
        goto fail;
    }
    csv_free(&c);
    return 0;
fail:
    csv_free(&c);
    return 1;
}

static int convert_cbis_any(const ConvertOpts *o, int rois, ConvertStats *st, Err *e) {
    RawSet set = {0};
    set.schema = (PrepSchema){.dataset = rois ? "cbis-ddsm-roi" : "cbis-ddsm", .n_labels = 4, .findings = CBIS_FINDINGS,
                              .has_masks = !rois, .box_labels = rois ? NULL : "birads\npathology\nsubtlety",
                              .labels = {{"density", PREP_CLASSES_DENSITY},
                                         {"birads", PREP_CLASSES_BIRADS},
                                         {"pathology", PREP_CLASSES_PATHOLOGY},
                                         {"subtlety", "1\n2\n3\n4\n5"}}};
    static const struct {
        const char *file;
        int mass, split;
    } tabs[4] = {{"mass_case_description_train_set.csv", 1, PREP_SPLIT_TRAIN},
                 {"mass_case_description_test_set.csv", 1, PREP_SPLIT_TEST},
                 {"calc_case_description_train_set.csv", 0, PREP_SPLIT_TRAIN},
                 {"calc_case_description_test_set.csv", 0, PREP_SPLIT_TEST}};
    char **keys = NULL;
    size_t nkeys = 0, capkeys = 0;
    long skipped = 0;
    char skip_msg[sizeof st->first_skip] = "";
    int found = 0, rc = 0;
    for (int t = 0; t < 4 && !rc; t++) {
        int r = read_table(o->raw_root, tabs[t].file, tabs[t].mass, tabs[t].split, rois, o, &set, &keys, &nkeys,
                           &capkeys, &skipped, skip_msg, sizeof skip_msg, e);
        if (r > 0) rc = 1;
        else if (r == 0) found++;
    }
    if (!rc && !found) rc = err_set(e, "%s: none of the CBIS-DDSM case description CSVs (mass_case_description_train_set.csv, ...) found", o->raw_root);
    if (!rc) {
        ConvertOpts ro = *o;
        /* a crop is already the lesion's region: no breast-region crop; padded, not stretched,
         * so a lesion keeps its shape */
        if (rois) {
            ro.prep.crop = 0;
            ro.prep.keep_aspect = 1;
        }
        rc = convert_run(&set, &ro, st, e);
        if (!rc && st && skipped) {
            if (!st->n_skipped) snprintf(st->first_skip, sizeof st->first_skip, "%s", skip_msg);
            st->n_skipped += skipped;
        }
    }
    for (size_t k = 0; k < nkeys; k++) free(keys[k]);
    free(keys);
    rawset_free(&set);
    return rc;
}

int convert_cbis(const ConvertOpts *o, ConvertStats *st, Err *e) { return convert_cbis_any(o, 0, st, e); }

int convert_cbis_roi(const ConvertOpts *o, ConvertStats *st, Err *e) { return convert_cbis_any(o, 1, st, e); }
