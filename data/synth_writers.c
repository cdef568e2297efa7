/*
 * data/synth_writers.c — synthetic datasets in the public datasets' on-disk formats
 * (mammo-data.md A1, A3; MammoVQA's JSON), so the real converters are what tests exercise:
 *
 *   <out>/vindr-mammo/breast-level_annotations.csv
 *                     finding_annotations.csv          one row per box, "No Finding" rows
 *                     images/<study_id>/<image_id>.dicom
 *   <out>/cbis-ddsm/{mass,calc}_case_description_{train,test}_set.csv
 *                   CBIS-DDSM/<Mass|Calc>-<Training|Test>_P_00001_LEFT_CC/<study>/<series>/000000.dcm
 *                   CBIS-DDSM/<...>_LEFT_CC_<abnormality id>/<study>/<series>/00000{0,1}.dcm
 *                   (ROI mask 0/255 at full size + cropped image; which of the two files the
 *                   CSV calls the mask is swapped for ~1 in 4 abnormalities, as in the release)
 *   <out>/mammovqa/MammoVQA-Image-{Train,Eval,Bench}.json, images/<image_id>.png
 *
 * Images are rendered in parallel (OpenMP, dynamic schedule: every image is a pure function of
 * the seed and its index, so the files do not depend on the thread count); CSV/JSON rows are
 * written afterwards in image order.
 */
#include <errno.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "data/csv.h"
#include "data/dicom.h"
#include "data/image.h"
#include "data/synth.h"
#include "data/synth_internal.h"

/* ------------------------------------------------------------------------------------------ */
/* ids and small helpers */

static uint64_t splitmix64(uint64_t x) {
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

/* 32 hex digits from (seed, a, b, kind), like VinDr's hashed ids */
static void hex_id(char out[33], uint64_t seed, uint64_t a, uint64_t b, uint64_t kind) {
    uint64_t h1 = splitmix64(seed ^ splitmix64(a * 0x100000001b3ull ^ splitmix64(b + 31 * kind)));
    uint64_t h2 = splitmix64(h1 ^ 0xA5A5A5A55A5A5A5Aull ^ kind);
    snprintf(out, 33, "%016llx%016llx", (unsigned long long)h1, (unsigned long long)h2);
}

/* a deterministic uniform in [0, 1) for per-image writer choices */
static double unit_hash(uint64_t seed, uint64_t a, uint64_t b) {
    return (double)(splitmix64(seed ^ splitmix64(a ^ splitmix64(b))) >> 11) * (1.0 / 9007199254740992.0);
}

static const char *split_vindr(int s) { return s == SYNTH_TEST ? "test" : "training"; }

/* image-level pathology: the breast's (the finding is seen in both views) */
static const char *vqa_pathology(int p) { return p == SYNTH_MALIGNANT ? "Malignant" : (p == SYNTH_BENIGN ? "Benign" : "Normal"); }

static const char *cbis_pathology(const SynthFinding *f) {
    if (f->malignant) return "MALIGNANT";
    if (f->birads <= SYNTH_BR2) return "BENIGN_WITHOUT_CALLBACK";
    if (f->birads == SYNTH_BR3 && (f->seed & 1)) return "BENIGN_WITHOUT_CALLBACK";
    return "BENIGN";
}

/* CBIS puts distortions, asymmetries and lymph nodes in the mass table */
static int cbis_is_mass(const SynthFinding *f) { return f->type != SYNTH_CALC; }

static const char *cbis_mass_shape(const SynthFinding *f) {
    switch (f->type) {
    case SYNTH_DISTORTION: return "ARCHITECTURAL_DISTORTION";
    case SYNTH_ASYMMETRY: return "FOCAL_ASYMMETRIC_DENSITY";
    case SYNTH_LYMPH_NODE: return "LYMPH_NODE";
    default: return synth_shape_name(f->shape);
    }
}

static const char *cbis_mass_margin(const SynthFinding *f) {
    switch (f->type) {
    case SYNTH_DISTORTION: return "SPICULATED";
    case SYNTH_ASYMMETRY: return "ILL_DEFINED";
    case SYNTH_LYMPH_NODE: return "CIRCUMSCRIBED";
    default: return synth_margin_name(f->margin);
    }
}

/* what one rendered image leaves for the label files */
typedef struct ImgRec {
    int n_lesions;
    int box[SYNTH_MAX_FINDINGS][4];
    int finding[SYNTH_MAX_FINDINGS];
    char image_id[33], series_id[33];
    char cbis_img[2][256];                 /* [0] mass case, [1] calc case: full-image path */
    char cbis_roi[SYNTH_MAX_FINDINGS][256], cbis_crop[SYNTH_MAX_FINDINGS][256];
    int cbis_abn_id[SYNTH_MAX_FINDINGS];
} ImgRec;

/* ------------------------------------------------------------------------------------------ */
/* DICOM */

static void fill_info(DicomInfo *in, const SynthConfig *cfg, const SynthExam *ex, const SynthImage *img,
                      const char *patient_id, const char *study_uid, const char *series_uid, const char *sop_uid,
                      const char *series_desc, int mono1) {
    dicom_info_init(in);
    snprintf(in->patient_id, sizeof in->patient_id, "%s", patient_id);
    snprintf(in->study_uid, sizeof in->study_uid, "%s", study_uid);
    snprintf(in->series_uid, sizeof in->series_uid, "%s", series_uid);
    snprintf(in->sop_instance_uid, sizeof in->sop_instance_uid, "%s", sop_uid);
    snprintf(in->manufacturer, sizeof in->manufacturer, "versamammo.c synth");
    snprintf(in->series_description, sizeof in->series_description, "%s", series_desc);
    in->laterality = img->side == SYNTH_LEFT ? 'L' : 'R';
    snprintf(in->view, sizeof in->view, "%s", synth_view_name(img->view));
    /* hanging protocol orientation (doc B1): A\R LCC, A\FR LMLO, P\L RCC, P\FL RMLO */
    static const char *orient[4] = {"A\\R", "A\\FR", "P\\L", "P\\FL"};
    snprintf(in->patient_orientation, sizeof in->patient_orientation, "%s", orient[img->side * 2 + img->view]);
    in->pixel_spacing[0] = in->pixel_spacing[1] = img->mm_per_px;
    in->bits_stored = cfg->bits;
    in->high_bit = cfg->bits - 1;
    uint32_t maxv = (1u << cfg->bits) - 1u;
    /* a window from just under fat to the top of the range; MONOCHROME1 stores maxv - value */
    double lo = 0.6 * img->level_fat, hi = (double)maxv;
    in->has_window = 1;
    in->window_width = hi - lo;
    in->window_center = mono1 ? maxv - 0.5 * (lo + hi) : 0.5 * (lo + hi);
    in->voi_function = VOI_LINEAR;
    snprintf(in->photometric, sizeof in->photometric, "%s", mono1 ? "MONOCHROME1" : "MONOCHROME2");
    in->has_padding = 1;
    in->padding_value = mono1 ? (int32_t)maxv : 0;
    (void)ex;
}

/* pixels as stored: MONOCHROME1 inverts (air becomes maxv, the padding value) */
static int stored_image(const SynthImage *img, int mono1, Image *out, Err *e) {
    if (image_alloc(out, img->width, img->height, img->bits, e)) return 1;
    uint16_t maxv = (uint16_t)((1u << img->bits) - 1u);
    size_t n = (size_t)img->width * img->height;
    for (size_t i = 0; i < n; i++) out->px[i] = mono1 ? (uint16_t)(maxv - img->pixels[i]) : img->pixels[i];
    return 0;
}

static char *join2(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 2);
    if (!s) return NULL;
    memcpy(s, a, la);
    s[la] = '/';
    memcpy(s + la + 1, b, lb + 1);
    return s;
}

/* write `im` at dir/rel (creating the directories of rel) */
static int write_dicom_at(const char *dir, const char *rel, const DicomInfo *in, const Image *im, Err *e) {
    char *path = join2(dir, rel);
    if (!path) return err_set(e, "out of memory");
    char *slash = strrchr(path, '/');
    *slash = 0;
    int rc = make_dirs(path, e);
    *slash = '/';
    if (!rc) rc = dicom_write(path, in, im, e);
    free(path);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* per-image work */

typedef struct WCtx {
    const SynthConfig *cfg;
    const SynthExam *exams;
    char vindr_dir[4096], cbis_dir[4096], vqa_dir[4096];
    int formats;
} WCtx;

static int write_image(const WCtx *w, long idx, ImgRec *rec, Err *e) {
    const SynthConfig *cfg = w->cfg;
    long p = idx / 4;
    int vi = (int)(idx % 4);
    const SynthExam *ex = &w->exams[p];
    SynthImage img;
    if (synth_render(cfg, ex, vi, &img, e)) return 1;
    const SynthBreast *b = &ex->breast[img.side];
    memset(rec, 0, sizeof *rec);
    rec->n_lesions = img.n_lesions;
    for (int l = 0; l < img.n_lesions; l++) {
        rec->box[l][0] = img.lesions[l].x0;
        rec->box[l][1] = img.lesions[l].y0;
        rec->box[l][2] = img.lesions[l].x1;
        rec->box[l][3] = img.lesions[l].y1;
        rec->finding[l] = img.lesions[l].finding;
    }
    hex_id(rec->image_id, cfg->seed, (uint64_t)p, (uint64_t)vi, 2);
    hex_id(rec->series_id, cfg->seed, (uint64_t)p, (uint64_t)vi, 1);
    int mono1 = unit_hash(cfg->seed, (uint64_t)idx, 77) < cfg->priors.monochrome1;
    char study_id[33];
    hex_id(study_id, cfg->seed, (uint64_t)p, 0, 0);
    Image st = {0};
    int rc = 0;

    if (w->formats & SYNTH_FMT_VINDR) {
        char rel[128], uid_st[DICOM_UID_LEN], uid_se[DICOM_UID_LEN], uid_sop[DICOM_UID_LEN];
        dicom_make_uid(uid_st, NULL, splitmix64(cfg->seed ^ 11), (uint64_t)p);
        dicom_make_uid(uid_se, NULL, splitmix64(cfg->seed ^ 12), (uint64_t)idx);
        dicom_make_uid(uid_sop, NULL, splitmix64(cfg->seed ^ 13), (uint64_t)idx);
        DicomInfo in;
        fill_info(&in, cfg, ex, &img, study_id, uid_st, uid_se, uid_sop, "", mono1);
        snprintf(rel, sizeof rel, "images/%s/%s.dicom", study_id, rec->image_id);
        rc = stored_image(&img, mono1, &st, e) || write_dicom_at(w->vindr_dir, rel, &in, &st, e);
        image_free(&st);
        if (rc) goto out;
    }

    if ((w->formats & SYNTH_FMT_CBIS) && img.n_lesions > 0) {
        /* one case folder per (table, image); abnormality ids count within the table */
        char pid[24];
        snprintf(pid, sizeof pid, "P_%05ld", p + 1);
        const char *train = ex->split == SYNTH_TEST ? "Test" : "Training";
        const char *lat = img.side == SYNTH_LEFT ? "LEFT" : "RIGHT";
        int n_abn[2] = {0, 0};
        for (int l = 0; l < img.n_lesions && !rc; l++) {
            const SynthFinding *f = &b->findings[img.lesions[l].finding];
            int t = cbis_is_mass(f) ? 0 : 1;
            char subject[96];
            snprintf(subject, sizeof subject, "%s-%s_%s_%s_%s", t == 0 ? "Mass" : "Calc", train, pid, lat,
                     synth_view_name(img.view));
            char uid_st[DICOM_UID_LEN], uid_se[DICOM_UID_LEN], uid_sop[DICOM_UID_LEN];
            if (n_abn[t]++ == 0) {   /* the full image of this case */
                dicom_make_uid(uid_st, NULL, splitmix64(cfg->seed ^ 21), (uint64_t)idx * 2 + t);
                dicom_make_uid(uid_se, NULL, splitmix64(cfg->seed ^ 22), (uint64_t)idx * 2 + t);
                dicom_make_uid(uid_sop, NULL, splitmix64(cfg->seed ^ 23), (uint64_t)idx * 2 + t);
                snprintf(rec->cbis_img[t], sizeof rec->cbis_img[t], "%s/%s/%s/000000.dcm", subject, uid_st, uid_se);
                DicomInfo in;
                fill_info(&in, cfg, ex, &img, subject, uid_st, uid_se, uid_sop, "full mammogram images", 0);
                rc = stored_image(&img, 0, &st, e) || write_dicom_at(w->cbis_dir, rec->cbis_img[t], &in, &st, e);
                image_free(&st);
                if (rc) break;
            }
            int abn = n_abn[t];
            rec->cbis_abn_id[l] = abn;
            uint64_t key = (uint64_t)idx * 8 + (uint64_t)l;
            dicom_make_uid(uid_st, NULL, splitmix64(cfg->seed ^ 31), key);
            dicom_make_uid(uid_se, NULL, splitmix64(cfg->seed ^ 32), key);
            int swap = unit_hash(cfg->seed, key, 5) < 0.25;
            char roi_dir[240];
            snprintf(roi_dir, sizeof roi_dir, "%s_%d/%s/%s", subject, abn, uid_st, uid_se);
            snprintf(rec->cbis_roi[l], sizeof rec->cbis_roi[l], "%s/%s", roi_dir, swap ? "000000.dcm" : "000001.dcm");
            snprintf(rec->cbis_crop[l], sizeof rec->cbis_crop[l], "%s/%s", roi_dir, swap ? "000001.dcm" : "000000.dcm");
            /* ROI mask: 0/255, the full image's size */
            const SynthLesion *les = &img.lesions[l];
            Image m = {0}, crop = {0};
            if (image_alloc(&m, img.width, img.height, 8, e)) {
                rc = 1;
                break;
            }
            int bw = les->x1 - les->x0, bh = les->y1 - les->y0;
            for (int y = 0; y < bh; y++)
                for (int x = 0; x < bw; x++)
                    if (les->mask[(size_t)y * bw + x]) m.px[(size_t)(les->y0 + y) * img.width + les->x0 + x] = 255;
            DicomInfo in;
            dicom_make_uid(uid_sop, NULL, splitmix64(cfg->seed ^ 33), key);
            fill_info(&in, cfg, ex, &img, subject, uid_st, uid_se, uid_sop, "ROI mask images", 0);
            in.bits_stored = 8;
            in.high_bit = 7;
            in.has_window = 0;
            in.has_padding = 0;
            rc = write_dicom_at(w->cbis_dir, rec->cbis_roi[l], &in, &m, e);
            image_free(&m);
            if (rc) break;
            /* cropped image: the box with a 10 % margin */
            int mx = bw / 10 + 2, my = bh / 10 + 2;
            Rect r = {les->x0 - mx, les->y0 - my, les->x1 + mx, les->y1 + my};
            if (stored_image(&img, 0, &st, e) || image_crop(&st, r, &crop, e)) {
                image_free(&st);
                rc = 1;
                break;
            }
            image_free(&st);
            dicom_make_uid(uid_sop, NULL, splitmix64(cfg->seed ^ 34), key);
            fill_info(&in, cfg, ex, &img, subject, uid_st, uid_se, uid_sop, "cropped images", 0);
            rc = write_dicom_at(w->cbis_dir, rec->cbis_crop[l], &in, &crop, e);
            image_free(&crop);
        }
        if (rc) goto out;
    }

    if (w->formats & SYNTH_FMT_VQA) {
        /* 8-bit PNG, as MammoVQA distributes its images */
        Image im8 = {0};
        if (image_alloc(&im8, img.width, img.height, 8, e)) {
            rc = 1;
            goto out;
        }
        int sh = img.bits - 8;
        for (size_t i = 0; i < (size_t)img.width * img.height; i++) im8.px[i] = (uint16_t)(img.pixels[i] >> sh);
        char rel[64];
        snprintf(rel, sizeof rel, "images/%s.png", rec->image_id);
        char *path = join2(w->vqa_dir, rel);
        rc = path ? image_save_png(path, &im8, e) : err_set(e, "out of memory");
        free(path);
        image_free(&im8);
    }
out:
    synth_image_free(&img);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* label files */

static int write_vindr_csvs(const WCtx *w, const ImgRec *recs, long n_img, Err *e) {
    static const char *const bh[] = {"study_id", "series_id", "image_id", "laterality", "view_position", "height",
                                     "width", "breast_birads", "breast_density", "split", NULL};
    static const char *const fh[] = {"study_id", "series_id", "image_id", "laterality", "view_position", "height",
                                     "width", "breast_birads", "breast_density", "finding_categories",
                                     "finding_birads", "xmin", "ymin", "xmax", "ymax", "split", NULL};
    char *bp = join2(w->vindr_dir, "breast-level_annotations.csv"), *fp = join2(w->vindr_dir, "finding_annotations.csv");
    CsvWriter bw, fw;
    int rc = 1;
    if (csv_writer_open(&bw, bp, bh, e)) goto out0;
    if (csv_writer_open(&fw, fp, fh, e)) {
        csv_writer_close(&bw, NULL);
        goto out0;
    }
    for (long i = 0; i < n_img; i++) {
        const ImgRec *r = &recs[i];
        const SynthExam *ex = &w->exams[i / 4];
        int vi = (int)(i % 4), side = vi / 2, view = vi % 2;
        const SynthBreast *b = &ex->breast[side];
        char study_id[33], birads[16], dens[16];
        hex_id(study_id, w->cfg->seed, (uint64_t)(i / 4), 0, 0);
        snprintf(birads, sizeof birads, "BI-RADS %d", synth_birads_number(b->birads));
        snprintf(dens, sizeof dens, "DENSITY %c", "ABCD"[b->density]);
        /* the image columns, shared by both files */
#define IMAGE_COLS(W)                                  \
    csv_put(W, study_id);                              \
    csv_put(W, r->series_id);                          \
    csv_put(W, r->image_id);                           \
    csv_put(W, side == SYNTH_LEFT ? "L" : "R");        \
    csv_put(W, synth_view_name(view));                 \
    csv_put_long(W, w->cfg->height);                   \
    csv_put_long(W, w->cfg->width);                    \
    csv_put(W, birads);                                \
    csv_put(W, dens)
        IMAGE_COLS(&bw);
        csv_put(&bw, split_vindr(ex->split));
        csv_end_row(&bw);
        if (r->n_lesions == 0) {
            IMAGE_COLS(&fw);
            csv_put(&fw, "['No Finding']");
            for (int k = 0; k < 5; k++) csv_put(&fw, "");
            csv_put(&fw, split_vindr(ex->split));
            csv_end_row(&fw);
        }
        for (int l = 0; l < r->n_lesions; l++) {
            const SynthFinding *f = &b->findings[r->finding[l]];
            char cat[64], fb[16];
            snprintf(cat, sizeof cat, "['%s']", synth_finding_name(f->type));
            /* VinDr gives lymph nodes (and skin/nipple findings) no BI-RADS */
            if (f->type == SYNTH_LYMPH_NODE) fb[0] = 0;
            else snprintf(fb, sizeof fb, "BI-RADS %d", synth_birads_number(f->birads));
            IMAGE_COLS(&fw);
            csv_put(&fw, cat);
            csv_put(&fw, fb);
            for (int k = 0; k < 4; k++) csv_putf(&fw, "%.2f", (double)r->box[l][k]);
            csv_put(&fw, split_vindr(ex->split));
            csv_end_row(&fw);
        }
#undef IMAGE_COLS
    }
    rc = csv_writer_close(&bw, e);
    if (csv_writer_close(&fw, rc ? NULL : e)) rc = 1;
out0:
    free(bp);
    free(fp);
    return rc;
}

static int write_cbis_csvs(const WCtx *w, const ImgRec *recs, long n_img, Err *e) {
    static const char *const mh[] = {"patient_id", "breast_density", "left or right breast", "image view",
                                     "abnormality id", "abnormality type", "mass shape", "mass margins", "assessment",
                                     "pathology", "subtlety", "image file path", "cropped image file path",
                                     "ROI mask file path", NULL};
    static const char *const ch[] = {"patient_id", "breast density", "left or right breast", "image view",
                                     "abnormality id", "abnormality type", "calc type", "calc distribution",
                                     "assessment", "pathology", "subtlety", "image file path",
                                     "cropped image file path", "ROI mask file path", NULL};
    static const char *names[4] = {"mass_case_description_train_set.csv", "mass_case_description_test_set.csv",
                                   "calc_case_description_train_set.csv", "calc_case_description_test_set.csv"};
    CsvWriter cw[4];
    int opened = 0, rc = 0;
    for (; opened < 4; opened++) {
        char *p = join2(w->cbis_dir, names[opened]);
        int bad = csv_writer_open(&cw[opened], p, opened < 2 ? mh : ch, e);
        free(p);
        if (bad) {
            rc = 1;
            break;
        }
    }
    for (long i = 0; i < n_img && !rc; i++) {
        const ImgRec *r = &recs[i];
        const SynthExam *ex = &w->exams[i / 4];
        int vi = (int)(i % 4), side = vi / 2, view = vi % 2;
        const SynthBreast *b = &ex->breast[side];
        char pid[24];
        snprintf(pid, sizeof pid, "P_%05ld", i / 4 + 1);
        for (int l = 0; l < r->n_lesions; l++) {
            const SynthFinding *f = &b->findings[r->finding[l]];
            int t = cbis_is_mass(f) ? 0 : 1;
            CsvWriter *o = &cw[t * 2 + (ex->split == SYNTH_TEST)];
            csv_put(o, pid);
            csv_put_long(o, b->density + 1);
            csv_put(o, side == SYNTH_LEFT ? "LEFT" : "RIGHT");
            csv_put(o, synth_view_name(view));
            csv_put_long(o, r->cbis_abn_id[l]);
            csv_put(o, t == 0 ? "mass" : "calcification");
            csv_put(o, t == 0 ? cbis_mass_shape(f) : synth_calc_morph_name(f->calc_morph));
            csv_put(o, t == 0 ? cbis_mass_margin(f) : synth_calc_dist_name(f->calc_dist));
            csv_put_long(o, synth_birads_number(f->birads));
            csv_put(o, cbis_pathology(f));
            csv_put_long(o, f->subtlety);
            csv_put(o, r->cbis_img[t]);
            csv_put(o, r->cbis_crop[l]);
            /* the release has a trailing newline in some ROI paths */
            if (unit_hash(w->cfg->seed, (uint64_t)i * 8 + (uint64_t)l, 9) < 0.2) csv_putf(o, "%s\n", r->cbis_roi[l]);
            else csv_put(o, r->cbis_roi[l]);
            csv_end_row(o);
        }
    }
    for (int k = 0; k < opened; k++)
        if (csv_writer_close(&cw[k], rc ? NULL : e)) rc = 1;
    return rc;
}

/* MammoVQA image-level records: {"1": {"Path", "Dataset", "Question topic", "Question type",
 * "Question", "Options", "Answer"}, ...}; the Abnormality topic is multi-label. */
static void json_str(FILE *f, const char *s) {
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\') fputc('\\', f);
        fputc(*s, f);
    }
    fputc('"', f);
}

static void json_list(FILE *f, const char *const *v, int n) {
    fputc('[', f);
    for (int i = 0; i < n; i++) {
        if (i) fputs(", ", f);
        json_str(f, v[i]);
    }
    fputc(']', f);
}

static void vqa_item(FILE *f, long *k, const char *path, const char *topic, const char *qtype, const char *question,
                     const char *const *opts, int n_opts, const char *const *ans, int n_ans) {
    fprintf(f, "%s\n    \"%ld\": {\n        \"Path\": ", *k ? "," : "", *k + 1);
    json_str(f, path);
    fputs(",\n        \"Dataset\": \"Synth\",\n        \"Question topic\": ", f);
    json_str(f, topic);
    fputs(",\n        \"Question type\": ", f);
    json_str(f, qtype);
    fputs(",\n        \"Question\": ", f);
    json_str(f, question);
    fputs(",\n        \"Options\": ", f);
    json_list(f, opts, n_opts);
    fputs(",\n        \"Answer\": ", f);
    if (!strcmp(qtype, "multiple choice")) json_list(f, ans, n_ans);
    else json_str(f, ans[0]);
    fputs("\n    }", f);
    (*k)++;
}

static int write_vqa_json(const WCtx *w, const ImgRec *recs, long n_img, Err *e) {
    static const char *files[3] = {"MammoVQA-Image-Train.json", "MammoVQA-Image-Eval.json", "MammoVQA-Image-Bench.json"};
    static const char *views[2] = {"CC", "MLO"}, *lats[2] = {"Left", "Right"};
    static const char *acr[4] = {"Level A", "Level B", "Level C", "Level D"};
    static const char *birads[6] = {"Bi-Rads 0", "Bi-Rads 1", "Bi-Rads 2", "Bi-Rads 3", "Bi-Rads 4", "Bi-Rads 5"};
    static const char *path_opts[3] = {"Normal", "Benign", "Malignant"};
    static const char *subtle[6] = {"Normal", "Level 1", "Level 2", "Level 3", "Level 4", "Level 5"};
    static const char *abn[10] = {"Architectural distortion", "Asymmetry", "Calcification", "Mass", "Miscellaneous",
                                  "Nipple retraction", "Normal", "Skin retraction", "Skin thickening",
                                  "Suspicious lymph node"};
    static const char *abn_of_type[SYNTH_N_FINDING_TYPES] = {"Mass", "Calcification", "Architectural distortion",
                                                             "Asymmetry", "Suspicious lymph node"};
    FILE *f[3] = {NULL, NULL, NULL};
    long k[3] = {0, 0, 0};
    int rc = 0;
    for (int s = 0; s < 3 && !rc; s++) {
        char *p = join2(w->vqa_dir, files[s]);
        f[s] = p ? fopen(p, "w") : NULL;
        if (!f[s]) rc = err_set(e, "%s: cannot create (%s)", p ? p : files[s], strerror(errno));
        else fputc('{', f[s]);
        free(p);
    }
    for (long i = 0; i < n_img && !rc; i++) {
        const ImgRec *r = &recs[i];
        const SynthExam *ex = &w->exams[i / 4];
        int vi = (int)(i % 4), side = vi / 2, view = vi % 2;
        const SynthBreast *b = &ex->breast[side];
        FILE *o = f[ex->split];
        long *kk = &k[ex->split];
        char path[64];
        snprintf(path, sizeof path, "/images/%s.png", r->image_id);
        const char *a[SYNTH_MAX_FINDINGS + 1];
        a[0] = views[view];
        vqa_item(o, kk, path, "View", "single choice", "Which view is this mammogram?", views, 2, a, 1);
        a[0] = lats[side];
        vqa_item(o, kk, path, "Laterality", "single choice", "Which breast is shown in this mammogram?", lats, 2, a, 1);
        a[0] = acr[b->density];
        vqa_item(o, kk, path, "ACR", "single choice", "What is the ACR breast density level of this mammogram?", acr, 4,
                 a, 1);
        a[0] = birads[synth_birads_number(b->birads)];
        vqa_item(o, kk, path, "Bi-Rads", "single choice", "What is the BI-RADS assessment category of this mammogram?",
                 birads, 6, a, 1);
        a[0] = vqa_pathology(b->pathology);
        vqa_item(o, kk, path, "Pathology", "single choice", "What is the pathology of the findings in this mammogram?",
                 path_opts, 3, a, 1);
        /* subtlety of the most suspicious finding seen in this image */
        int best = -1;
        for (int l = 0; l < r->n_lesions; l++)
            if (best < 0 || b->findings[r->finding[l]].birads > b->findings[r->finding[best]].birads) best = l;
        a[0] = best < 0 ? "Normal" : subtle[b->findings[r->finding[best]].subtlety];
        vqa_item(o, kk, path, "Subtlety", "single choice", "How subtle is the abnormality in this mammogram?", subtle, 6,
                 a, 1);
        int na = 0;
        for (int l = 0; l < r->n_lesions; l++) {
            const char *s = abn_of_type[b->findings[r->finding[l]].type];
            int dup = 0;
            for (int j = 0; j < na; j++) dup |= !strcmp(a[j], s);
            if (!dup) a[na++] = s;
        }
        if (!na) a[na++] = "Normal";
        vqa_item(o, kk, path, "Abnormality", "multiple choice", "What abnormalities are present in this mammogram?",
                 abn, 10, a, na);
    }
    for (int s = 0; s < 3; s++) {
        if (!f[s]) continue;
        fputs(k[s] ? "\n}\n" : "}\n", f[s]);
        if (ferror(f[s])) rc = rc ? rc : err_set(e, "%s/%s: write error", w->vqa_dir, files[s]);
        if (fclose(f[s]) != 0 && !rc) rc = err_set(e, "%s/%s: write error", w->vqa_dir, files[s]);
    }
    return rc;
}

/* ------------------------------------------------------------------------------------------ */

int synth_parse_formats(const char *s, int *formats, Err *e) {
    *formats = 0;
    const char *p = s;
    while (*p) {
        size_t n = strcspn(p, ",");
        if (n == 5 && !strncmp(p, "vindr", 5)) *formats |= SYNTH_FMT_VINDR;
        else if (n == 4 && !strncmp(p, "cbis", 4)) *formats |= SYNTH_FMT_CBIS;
        else if (n == 3 && !strncmp(p, "vqa", 3)) *formats |= SYNTH_FMT_VQA;
        else if (n == 3 && !strncmp(p, "all", 3)) *formats |= SYNTH_FMT_ALL;
        else return err_set(e, "synth: unknown format '%.*s' (vindr, cbis, vqa, all)", (int)n, p);
        p += n;
        if (*p == ',') p++;
    }
    if (!*formats) return err_set(e, "synth: no format given (vindr, cbis, vqa, all)");
    return 0;
}

static void progress_line(const SynthConfig *cfg, long done, long total, double t0) {
    if (cfg->progress) {
        cfg->progress(cfg->progress_ud, done, total);
        return;
    }
    if (cfg->quiet) return;
    double dt = omp_get_wtime() - t0;
    fprintf(stderr, "\rsynth: %ld/%ld images (%.1f img/s)%s", done, total, dt > 0 ? done / dt : 0.0,
            done == total ? "\n" : "");
    fflush(stderr);
}

int synth_write_dataset(const SynthConfig *cfg, const char *out_dir, int formats, Err *e) {
    if (synth_config_check(cfg, e)) return 1;
    if (!(formats & SYNTH_FMT_ALL)) return err_set(e, "synth: no output format selected (formats = %d)", formats);
    if (strlen(out_dir) > 3000) return err_set(e, "%s: output path too long", out_dir);
    WCtx w;
    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    w.formats = formats;
    snprintf(w.vindr_dir, sizeof w.vindr_dir, "%s/vindr-mammo", out_dir);
    snprintf(w.cbis_dir, sizeof w.cbis_dir, "%s/cbis-ddsm", out_dir);
    snprintf(w.vqa_dir, sizeof w.vqa_dir, "%s/mammovqa", out_dir);
    if (make_dirs(out_dir, e)) return 1;
    if ((formats & SYNTH_FMT_VINDR) && make_dirs(w.vindr_dir, e)) return 1;
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/CBIS-DDSM", w.cbis_dir);
    if ((formats & SYNTH_FMT_CBIS) && make_dirs(sub, e)) return 1;
    snprintf(sub, sizeof sub, "%s/images", w.vqa_dir);
    if ((formats & SYNTH_FMT_VQA) && make_dirs(sub, e)) return 1;

    long np = cfg->n_patients, n_img = 4 * np;
    SynthExam *exams = malloc(sizeof(SynthExam) * (size_t)(np ? np : 1));
    ImgRec *recs = calloc((size_t)(n_img ? n_img : 1), sizeof(ImgRec));
    if (!exams || !recs) {
        free(exams);
        free(recs);
        return err_set(e, "synth: out of memory for %ld patients", np);
    }
    for (long p = 0; p < np; p++) synth_sample_exam(cfg, p, &exams[p]);
    w.exams = exams;

    int failed = 0;
    long done = 0;
    Err first = {{0}};
    double t0 = omp_get_wtime();
    long step = n_img / 100 > 1 ? n_img / 100 : 1;
    int nth = cfg->nthreads > 0 ? cfg->nthreads : omp_get_max_threads();
#pragma omp parallel for schedule(dynamic, 1) num_threads(nth)
    for (long i = 0; i < n_img; i++) {
        int stop;
#pragma omp atomic read
        stop = failed;
        if (stop) continue;
        Err le;
        if (write_image(&w, i, &recs[i], &le)) {
#pragma omp critical(synth_write_err)
            {
                if (!failed) first = le;
#pragma omp atomic write
                failed = 1;
            }
            continue;
        }
        long d;
#pragma omp atomic capture
        d = ++done;
        if (d % step == 0 || d == n_img) {
#pragma omp critical(synth_progress)
            progress_line(cfg, d, n_img, t0);
        }
    }
    int rc = 0;
    if (failed) {
        if (e) *e = first;
        rc = 1;
    }
    if (!rc && (formats & SYNTH_FMT_VINDR)) rc = write_vindr_csvs(&w, recs, n_img, e);
    if (!rc && (formats & SYNTH_FMT_CBIS)) rc = write_cbis_csvs(&w, recs, n_img, e);
    if (!rc && (formats & SYNTH_FMT_VQA)) rc = write_vqa_json(&w, recs, n_img, e);
    free(exams);
    free(recs);
    return rc;
}
