/*
 * data/prepared.h — the prepared dataset format (one HDF5 file per dataset), its reader and
 * writer, patient-disjoint split assignment, pretraining corpora (several prepared files with
 * per-source weights), and the converters from the public datasets' raw layouts.
 *
 * ============================== prepared HDF5 format, version 1 ==============================
 * Root attributes
 *   format      string  "versa-prepared"
 *   version     int     1
 *   dataset     string  converter name ("vindr", "cbis-ddsm", "inbreast", "cmmd", "rsna",
 *                       "embed", "mias", "manifest") or the caller's name
 *   source      string  raw root the file was made from (informational)
 *   preprocess  string  e.g. "crop=1 flip=auto size=512x512 keep_aspect=0 resize=area bits=16"
 *   n           int     number of samples N (dim 0 of every per-sample dataset)
 *   height, width int   image size H, W (all images share it)
 *   bits        int     8 or 16: /images is uint8 or uint16
 *   max_value   int     255 or 65535: a pixel / max_value is in [0, 1]
 *   label_names string  the label datasets' names in order, '\n'-separated (may be "")
 * Datasets (N = samples, M = boxes)
 *   /images        (N, H, W) uint8|uint16  chunks (1, H, W), deflate (gzip) optional
 *   /masks         (N, H, W) uint8 0/1     optional (only when the source has masks); chunks
 *                                          (1, H, W), deflate; never-written chunks read as 0
 *   /mask_present  (N) uint8               1 = the sample's mask is annotated (0 = unknown);
 *                                          only with /masks
 *   /labels/<name> (N) int32               class index, -1 = missing; attribute `classes`:
 *                                          the class names '\n'-separated
 *   /findings      (N, F) uint8            multi-hot finding types; attribute `classes`;
 *                                          absent when F = 0
 *   /view          (N) int8                0 CC, 1 MLO, 2 other, -1 unknown
 *   /laterality    (N) int8                0 L, 1 R, -1 unknown
 *   /split         (N) uint8               0 train, 1 val, 2 test
 *   /patient_id    (N) string[64]          fixed length, NUL padded
 *   /image_id      (N) string[128]         source image identifier (relative path or id)
 *   /orig_size     (N, 2) int32            source image (height, width)
 *   /transform     (N, 7) float32          crop x0, y0, x1, y1 (source px), flipped, sx, sy:
 *                                          prepared = ((src - crop0) mirrored if flipped) * s
 *   /boxes         (M, 4) float32          x0, y0, x1, y1 in prepared pixels
 *   /box_label     (M) int32               index into /findings classes, -1 = unlabelled
 *   /box_offset    (N + 1) int64           boxes of sample i are rows [off[i], off[i+1])
 *   /box_labels/<name> (M) int32           optional, for some of the /labels: the lesion's own
 *                                          value (same classes), -1 = unknown; e.g. CBIS-DDSM's
 *                                          per-abnormality pathology, where an image's label is
 *                                          the worst of its lesions'
 * Canonical label names and classes (converters use them whenever the meaning matches):
 *   density   "A".."D" (ACR a-d)          birads    "0".."6" (4a/4b/4c -> "4")
 *   pathology "normal", "benign", "malignant" (CBIS BENIGN_WITHOUT_CALLBACK -> benign)
 * Dataset-specific labels are documented with each converter below.
 * Splits never put one patient in two splits: a patient's split is decided once, from the
 * source's split when it has one (train patients then give val_frac of themselves to val),
 * else from a seeded shuffle of the sorted patient ids.
 * =============================================================================================
 *
 * Thread safety: the reader may be used from several threads at once.  The HDF5 library is not
 * thread-safe here, so every HDF5 call runs under one process-wide mutex; image reads fetch the
 * raw (compressed) chunk under the lock and inflate it outside, so decompression runs in
 * parallel.
 */
#ifndef VERSA_DATA_PREPARED_H
#define VERSA_DATA_PREPARED_H

#include <stddef.h>
#include <stdint.h>
#include "engine/engine.h"
#include "data/image.h"
#include "data/csv.h"
#include "data/dicom.h"

#define PREP_MAX_LABELS 16
#define PREP_MAX_CLASSES 64
#define PREP_MAX_FINDINGS 32
#define PREP_NAME_LEN 48
#define PREP_PATIENT_LEN 64
#define PREP_IMAGE_ID_LEN 128

enum { PREP_VIEW_CC = 0, PREP_VIEW_MLO = 1, PREP_VIEW_OTHER = 2 };       /* -1 unknown */
enum { PREP_LAT_L = 0, PREP_LAT_R = 1 };                                /* -1 unknown */
enum { PREP_SPLIT_TRAIN = 0, PREP_SPLIT_VAL = 1, PREP_SPLIT_TEST = 2 };  /* -1 none (inputs) */

/* canonical class lists ('\n'-separated, as stored) */
#define PREP_CLASSES_DENSITY "A\nB\nC\nD"
#define PREP_CLASSES_BIRADS "0\n1\n2\n3\n4\n5\n6"
#define PREP_CLASSES_PATHOLOGY "normal\nbenign\nmalignant"
enum { PREP_PATH_NORMAL = 0, PREP_PATH_BENIGN = 1, PREP_PATH_MALIGNANT = 2 };

typedef struct PrepBox {
    float x0, y0, x1, y1;   /* pixels, [x0, x1) x [y0, y1) */
    int32_t label;          /* finding class index or -1 */
    /* the lesion's own value of label column k (/box_labels/<name>), -1 = none: the image's
     * value applies.  Written only for the schema's box_labels; a reader fills -1 elsewhere. */
    int32_t values[PREP_MAX_LABELS];
} PrepBox;

typedef struct PrepLabelDef {
    const char *name;       /* "density" */
    const char *classes;    /* "A\nB\nC\nD" */
} PrepLabelDef;

/* ------------------------------------------------------------------------------------------ */
/* Writer */

typedef struct PrepSchema {
    const char *dataset;        /* root attribute `dataset` */
    const char *source;         /* may be NULL */
    const char *preprocess;     /* may be NULL */
    int height, width;
    int bits;                   /* 8 or 16 */
    int gzip;                   /* deflate level 0 (off) .. 9 for /images; masks use max(1, gzip) */
    int has_masks;
    int n_labels;
    PrepLabelDef labels[PREP_MAX_LABELS];
    const char *findings;       /* finding classes '\n'-separated, or NULL/"" for none */
    const char *box_labels;     /* names of labels that also have a value per box (PrepBox.values),
                                   '\n'-separated, each one of labels[]; NULL/"" for none */
} PrepSchema;

/* One sample as given to the writer (all pointers borrowed for the call). */
typedef struct PrepSample {
    const void *pixels;          /* (H, W) uint8 or uint16 per schema.bits */
    const uint8_t *mask;         /* (H, W) 0/1, or NULL = not annotated (prep_encode reads it;
                                    mask_present is whether the encoding has a mask) */
    const int32_t *labels;       /* (n_labels), -1 missing */
    const uint8_t *findings;     /* (F) 0/1, or NULL = none */
    const PrepBox *boxes;
    int n_boxes;
    int view, laterality, split; /* split must be 0..2 */
    const char *patient_id;
    const char *image_id;
    int orig_h, orig_w;
    float transform[7];
} PrepSample;

/* A sample's pixels (and mask) compressed into the on-disk chunk bytes.  Encoding is
 * thread-safe (it only reads the schema), so converters encode in parallel and add in order. */
typedef struct PrepEncoded {
    uint8_t *img;
    size_t img_bytes;
    uint8_t *mask;               /* NULL when the sample has no mask */
    size_t mask_bytes;
} PrepEncoded;

typedef struct PrepWriter PrepWriter;

/* Creates "<path>.tmp"; prep_writer_close writes the metadata and renames it to path, so a
 * failed conversion never leaves a half-written file under the final name. */
int prep_writer_open(PrepWriter **w, const char *path, const PrepSchema *s, Err *e);
int prep_encode(const PrepSchema *s, const PrepSample *smp, PrepEncoded *enc, Err *e);
void prep_encoded_free(PrepEncoded *enc);
int prep_writer_add_encoded(PrepWriter *w, const PrepSample *smp, const PrepEncoded *enc, Err *e);
int prep_writer_add(PrepWriter *w, const PrepSample *smp, Err *e);   /* encode + add */
int prep_writer_close(PrepWriter *w, Err *e);   /* frees w */
void prep_writer_abort(PrepWriter *w);          /* removes the .tmp file, frees w */

/* ------------------------------------------------------------------------------------------ */
/* Reader */

typedef struct Prepared {
    char path[512];
    int64_t file, images, masks;      /* hid_t; masks < 0 when absent */
    int direct_chunks;                /* /images chunked (1, H, W): raw chunk reads */
    int images_deflate, masks_deflate;
    size_t n;
    int h, w, bits;
    uint32_t max_value;
    char dataset[64];
    /* labels: (n, n_labels) row-major */
    int n_labels;
    char label_names[PREP_MAX_LABELS][PREP_NAME_LEN];
    int n_classes[PREP_MAX_LABELS];
    char class_names[PREP_MAX_LABELS][PREP_MAX_CLASSES][PREP_NAME_LEN];
    int32_t *labels;
    /* findings: (n, n_findings) */
    int n_findings;
    char finding_names[PREP_MAX_FINDINGS][PREP_NAME_LEN];
    uint8_t *findings;
    int8_t *view, *laterality;        /* (n) */
    uint8_t *split;                   /* (n) */
    uint8_t *mask_present;            /* (n), NULL without /masks */
    char *patient_id;                 /* (n, PREP_PATIENT_LEN) */
    char *image_id;                   /* (n, PREP_IMAGE_ID_LEN) */
    int32_t *orig_size;               /* (n, 2) */
    float *transform;                 /* (n, 7) */
    PrepBox *boxes;                   /* (n_boxes) */
    int64_t *box_offset;              /* (n + 1) */
    size_t n_boxes;
} Prepared;

/* Opens and validates the whole file: format/version attributes, every required dataset with
 * shape (N, ...) consistent with the attributes, label values within their class counts, box
 * offsets monotone.  Metadata is loaded into memory; pixels stay on disk.  Errors name the file
 * and the offending dataset/attribute ("v.h5: missing dataset '/split'", "v.h5: not an HDF5
 * file or truncated"). */
int prep_open(Prepared *p, const char *path, Err *e);
void prep_close(Prepared *p);

/* Pixels of sample i into dst (H*W uint8 or uint16 per p->bits). */
int prep_read_image(const Prepared *p, size_t i, void *dst, Err *e);
/* Same, as floats pixel / max_value in [0, 1]. */
int prep_read_image_f32(const Prepared *p, size_t i, float *dst, Err *e);
/* Mask of sample i into dst (H*W 0/1); zeros when the file has no masks. */
int prep_read_mask(const Prepared *p, size_t i, uint8_t *dst, Err *e);

int prep_label_col(const Prepared *p, const char *name);                 /* -1 if absent */
static inline int32_t prep_label(const Prepared *p, size_t i, int col) {
    return p->labels[i * (size_t)p->n_labels + (size_t)col];
}
static inline const char *prep_patient(const Prepared *p, size_t i) { return p->patient_id + i * PREP_PATIENT_LEN; }
static inline const char *prep_image_id(const Prepared *p, size_t i) { return p->image_id + i * PREP_IMAGE_ID_LEN; }
static inline size_t prep_n_boxes(const Prepared *p, size_t i) {
    return (size_t)(p->box_offset[i + 1] - p->box_offset[i]);
}
static inline const PrepBox *prep_sample_boxes(const Prepared *p, size_t i) { return p->boxes + p->box_offset[i]; }

const char *prep_split_name(int split);     /* "train", "val", "test" */
int prep_split_parse(const char *s);        /* "train"/"training"/"val"/"valid"/"eval"/"test"... or -1 */

/* ------------------------------------------------------------------------------------------ */
/* Patient-disjoint splits */

typedef struct SplitOpts {
    uint64_t seed;
    float val_frac;      /* of train patients moved to val when the source has a split (0.1) */
    float frac[3];       /* train/val/test fractions for sources without a split (0.7, 0.1, 0.2) */
} SplitOpts;

SplitOpts split_opts_default(void);

/* patient[i] (n strings), src_split[i] in {-1, 0, 1, 2}; fills split[i] in {0, 1, 2}.  A patient
 * whose images carry different source splits gets the last of them in test > val > train order
 * (so a test patient never leaks into train); *n_conflicts (may be NULL) counts such patients. */
void assign_splits(const char *const *patient, const int *src_split, size_t n, const SplitOpts *o,
                   int *split, size_t *n_conflicts);

/* ------------------------------------------------------------------------------------------ */
/* Pretraining corpora: several prepared files, each with a sampling weight. */

#define CORPUS_MAX_SOURCES 64

typedef struct CorpusSource {
    const char *path;
    float weight;        /* relative share of an epoch's samples (> 0) */
} CorpusSource;

typedef struct Corpus {
    int n;
    Prepared *src;       /* (n), opened */
    float weight[CORPUS_MAX_SOURCES];
    int h, w, bits;      /* shared by every source (checked) */
} Corpus;

/* Opens every source; they must share image size (the error names both files). */
int corpus_open(Corpus *c, const CorpusSource *src, int n, Err *e);
/* The source list from a config (engine/config.c, which holds lists of plain values only):
 *   <prefix>.sources: [vindr.h5, embed.h5, rsna.h5]     prepared files
 *   <prefix>.weights: [1.0, 2.0, 1.0]                    optional, default 1 each
 * Fills src[0..*n) (paths point into cfg); errors name the config and key. */
int corpus_sources_from_config(const Config *cfg, const char *prefix, CorpusSource *src, int max, int *n, Err *e);
void corpus_close(Corpus *c);

/* ------------------------------------------------------------------------------------------ */
/* Converters: raw public layouts -> prepared HDF5 */

enum { CONVERT_FAIL = 0, CONVERT_SKIP = 1 };   /* missing/unreadable source image policy */

typedef struct ConvertOpts {
    const char *raw_root;        /* the dataset's root directory as distributed */
    const char *out_path;        /* prepared .h5 */
    int width, height;           /* output size (required) */
    int bits;                    /* 8 or 16 (16) */
    int gzip;                    /* 0..9 (4) */
    PrepOpts prep;               /* crop / flip / keep_aspect / resize mode (io helper's) */
    int minmax;                  /* min-max stretch each image before storing (0) */
    DicomRenderOpts dicom;       /* how DICOMs are rendered: VOI window (auto), MONOCHROME1
                                    inverted, padding zeroed (VinDr's official reader), 16 bit */
    SplitOpts split;
    int on_missing;              /* CONVERT_FAIL (default) or CONVERT_SKIP */
    long limit;                  /* convert at most this many images (0 = all) */
    int verbose;
    /* generic manifest: CSV path, and the label columns (NULL = every non-reserved column) */
    const char *manifest;
    const char *const *manifest_labels;
} ConvertOpts;

ConvertOpts convert_opts_default(void);

typedef struct ConvertStats {
    long n_written, n_skipped;
    long n_boxes, n_masks;
    long n_split[3];
    size_t n_split_conflicts;
    double seconds;
    char first_skip[512];        /* message of the first skipped image */
} ConvertStats;

/* Label sets written by each converter (beyond view/laterality/patient/split):
 *   vindr      density, birads; findings = the 10 VinDr categories; boxes (first category)
 *   cbis-ddsm  density, birads (assessment), pathology, subtlety ("1".."5"); findings mass,
 *              calcification; boxes + masks from the ROI mask DICOMs (union per image)
 *   cbis-ddsm-roi  the same labels, one sample per abnormality: the release's cropped image of
 *              the lesion (no breast crop, padded to keep its shape), labelled with its own
 *              row's values; no boxes or masks
 *   inbreast   density (ACR), birads, birads_sub ("1","2","3","4a","4b","4c","5","6"); findings
 *              from ROI names; boxes of polygon ROIs; masks = union of "Mass" polygons
 *   cmmd       pathology (breasts without a row = normal), abnormality (mass, calcification,
 *              both), subtype (Luminal A, Luminal B, HER2-enriched, triple negative)
 *   rsna       density, birads ("0","1","2" as canonical 0..2), cancer ("0","1"), biopsy,
 *              invasive, implant, difficult_negative_case
 *   embed      density (tissueden 5 -> missing), birads (asses letter), pathology
 *              (path_severity 0/1 malignant, 2..4 benign, 5 normal); boxes from ROI_coords
 *   mias       tissue ("F","G","D"), pathology; findings CALC..ASYM; boxes + circle masks
 *   manifest   every requested column; classes = sorted distinct values (numeric order when
 *              all are integers)
 * File names and headers are exactly those of mammo-data.md (see each convert_*.c). */
int convert_vindr(const ConvertOpts *o, ConvertStats *st, Err *e);
int convert_cbis(const ConvertOpts *o, ConvertStats *st, Err *e);
int convert_cbis_roi(const ConvertOpts *o, ConvertStats *st, Err *e);
int convert_inbreast(const ConvertOpts *o, ConvertStats *st, Err *e);
int convert_cmmd(const ConvertOpts *o, ConvertStats *st, Err *e);
int convert_rsna(const ConvertOpts *o, ConvertStats *st, Err *e);
int convert_embed(const ConvertOpts *o, ConvertStats *st, Err *e);
int convert_mias(const ConvertOpts *o, ConvertStats *st, Err *e);
int convert_manifest(const ConvertOpts *o, ConvertStats *st, Err *e);
/* By name ("vindr", "cbis-ddsm", ...) for the CLI; unknown names list the known ones. */
int convert_dataset(const char *name, const ConvertOpts *o, ConvertStats *st, Err *e);

/* ------------------------------------------------------------------------------------------ */
/* Converter building blocks (data/convert_common.c).  A converter parses its label files into a
 * RawSet of RawRecords (one per image, annotations in source pixels), then convert_run loads,
 * preprocesses and writes them: images in parallel (OpenMP), written in record order. */

enum { RAW_POLYGON = 0, RAW_CIRCLE = 1 };

typedef struct RawShape {
    int kind;               /* RAW_POLYGON or RAW_CIRCLE */
    float *xy;              /* polygon: n (x, y) vertices, source pixels (malloc'd) */
    int n;
    float cx, cy, r;        /* circle: centre and radius */
    int to_mask;            /* 1: filled into the sample's mask */
    int box_label;          /* >= -1: also a box of the shape's extent with this label; -2: none */
    int32_t box_values[PREP_MAX_LABELS];   /* that box's PrepBox.values (-1 when added) */
} RawShape;

typedef struct RawMaskRef {
    char *path;             /* a binary mask image of the source size, or (search) a directory /
                               a file whose siblings are searched for one (CBIS-DDSM ROI folders) */
    int box_label;          /* >= -1: a box of the mask's extent with this label; -2: none */
    int search;             /* 1: search path's folder (inside the raw root only); 0: path itself */
    int32_t box_values[PREP_MAX_LABELS];   /* that box's PrepBox.values (-1 when added) */
} RawMaskRef;

typedef struct RawRecord {
    char *image_path;       /* source image (DICOM, PNG, JPEG, PGM); malloc'd */
    char image_id[PREP_IMAGE_ID_LEN];
    char patient_id[PREP_PATIENT_LEN];
    int32_t labels[PREP_MAX_LABELS];        /* -1 = missing */
    uint8_t findings[PREP_MAX_FINDINGS];
    int view, laterality, src_split;        /* -1 = unknown / none */
    PrepBox *boxes;                         /* source pixels */
    int n_boxes, cap_boxes;
    RawMaskRef *masks;
    int n_masks, cap_masks;
    RawShape *shapes;
    int n_shapes, cap_shapes;
    int y_up;               /* box/shape y is measured from the bottom row (MIAS) */
    int annotated;          /* the mask is annotated even when empty */
} RawRecord;

typedef struct RawSet {
    RawRecord *r;
    size_t n, cap;
    PrepSchema schema;      /* dataset name, labels, findings, has_masks (size/bits from opts) */
} RawSet;

RawRecord *rawset_add(RawSet *s);                  /* zeroed record, labels/view/split -1 */
void rawset_pop(RawSet *s);                        /* drop (and free) the last record */
void rawset_free(RawSet *s);
/* Each returns the box values of what it added (PrepBox.values, all -1), for a converter whose
 * schema has box_labels to fill in: raw_add_mask(r, ...)[PATHOLOGY_COL] = p. */
int32_t *raw_add_box(RawRecord *r, float x0, float y0, float x1, float y1, int label);
int32_t *raw_add_mask(RawRecord *r, const char *path, int box_label, int search);
int32_t *raw_add_polygon(RawRecord *r, const float *xy, int n, int to_mask, int box_label);
int32_t *raw_add_circle(RawRecord *r, float cx, float cy, float rad, int to_mask, int box_label);

/* Assign splits (opts->split), load + preprocess every record (opts->prep at width x height,
 * flip by the record's laterality), rasterise masks, transform boxes, write opts->out_path. */
int convert_run(RawSet *s, const ConvertOpts *o, ConvertStats *st, Err *e);

/* DICOM/PNG files below dir (RAW_SEARCH_MAX_DEPTH levels), sorted by path, into *files (malloc'd,
 * each malloc'd): the count, or -1 once there are more than RAW_SEARCH_MAX_FILES (then the
 * RAW_SEARCH_MAX_FILES listed are still to be freed).  A CBIS-DDSM ROI series folder holds a mask
 * and a crop; a search that finds more than this is not looking at one ROI folder and stops. */
#define RAW_SEARCH_MAX_FILES 64
#define RAW_SEARCH_MAX_DEPTH 4
int raw_list_images(const char *dir, char ***files);

/* small helpers shared by the converters */
char *path_join(const char *a, const char *b);      /* malloc'd "a/b" */
int path_exists(const char *p);                     /* regular file or directory */
void str_copy(char *dst, size_t n, const char *src);  /* strncpy that always terminates */
int label_index(const char *classes, const char *value);   /* index of value in a '\n' list */
/* Value parsers: the class index, -1 for an empty/NaN field, -2 for an unrecognised value. */
int parse_density(const char *s);     /* "DENSITY A".."D", "A".."D", "a".."d", "1".."4" -> 0..3 */
int parse_birads(const char *s);      /* "BI-RADS 4", "BIRADS 4a", "4C", "0".."6" -> 0..6 */
int parse_view(const char *s);        /* CC; MLO; ML, LM, XCCL, AT, ... -> other */
int parse_laterality(const char *s);  /* L, LEFT, R, RIGHT (any case) */
/* The first worksheet of an .xlsx file as a Csv (header = first row; messages name the .xlsx
 * and use the sheet's row numbers as lines).  Zip (stored/deflate) + sharedStrings + sheet XML;
 * shared, inline and numeric cells.  (data/convert_xlsx.c) */
int xlsx_read(const char *path, Csv *csv, Err *e);

/* A sorted string -> index map (for joining label tables); keys are borrowed. */
typedef struct StrIndex {
    const char **key;
    size_t *val;
    size_t n;
} StrIndex;
void strindex_build(StrIndex *ix, const char *const *keys, size_t n);   /* val[i] = i */
long strindex_find(const StrIndex *ix, const char *key);                /* first match or -1 */
/* every match: positions [*first, *first + return) of ix->val */
size_t strindex_range(const StrIndex *ix, const char *key, size_t *first);
void strindex_free(StrIndex *ix);
/* Errors for a bad field: "<file>:<line>: column '<col>': unknown value '<v>'" */
int err_value(Err *e, const Csv *csv, size_t row, const char *col, const char *v);

#endif
