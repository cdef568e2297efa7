/*
 * bench.h — the downstream benchmark: the task registry (configs/bench/NAME.yaml), frozen-backbone
 * protocols (linear probe, multi-label linear probe, k-NN, retrieval), metrics with bootstrap
 * confidence intervals, and the run report (results.csv, report.md, ranks.png).
 *
 * The model in one paragraph:
 *   A suite is a YAML file of `datasets` (prepared HDF5 files under --data-root, with a hint how to
 *   make each) and `tasks` (dataset, category, label column and class map, unit = whole image or
 *   lesion crop, protocols, primary metric), plus protocol settings.  For every model and every
 *   (dataset, unit, preprocessing) the backbone runs once over all items and the pooled features
 *   are cached in HDF5 under <out>/features/; the heads (linear, k-NN, retrieval) then run on the
 *   cached features, so rerunning them is cheap.  Every test metric comes with a 95% percentile
 *   CI from seeded bootstrap resamples of the test set (the same resamples for every model).
 *   Per-task ranks of the models by each task's primary metric give the paper's summary
 *   figures: average rank and number of first places.
 *
 * Categories and protocols (recipe.md §3.3):
 *   classification  linear (Linear + CE, AdamW, early stopping on val), knn (cosine, k = 20,
 *                   temperature-weighted votes as DINO's eval_knn); multi-label tasks: multilabel
 *                   (Linear + sigmoid, BCE, CLAHE input)
 *   retrieval       retrieval (cosine; top-K accuracy, mAP@R; database = non-test, queries = test)
 *   segmentation    unet          } implemented by the benchmark's part 2; until then such tasks
 *   detection       faster_rcnn   } are reported as "protocol not implemented yet", never as
 *   vqa             vilt          } failures
 *
 * Where the benchmark deliberately differs from the published code: the backbone runs in eval
 * mode while features are extracted (the released scripts keep it in train mode, quirk Q4, which
 * makes CNN features depend on the head-training batches); the features are the same for every
 * head, which is what makes caching them valid.
 */
#ifndef VERSA_BENCH_H
#define VERSA_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include "engine/engine.h"
#include "nn/nn.h"
#include "data/data.h"
#include "ssl/ssl.h"

/* ------------------------------------------------------------------------------------------ */
/* Registry (bench/registry.c) */

typedef enum BenchCategory {
    BENCH_CLASSIFICATION = 0,   /* single-label and multi-label ("Finding") */
    BENCH_SEGMENTATION,
    BENCH_DETECTION,
    BENCH_RETRIEVAL,
    BENCH_VQA,
    BENCH_N_CATEGORIES
} BenchCategory;

typedef enum BenchProtocol {
    PROTO_LINEAR = 0,           /* linear head, CE */
    PROTO_KNN,                  /* k-NN on frozen features */
    PROTO_MULTILABEL,           /* linear head + sigmoid, BCE */
    PROTO_RETRIEVAL,
    PROTO_UNET,                 /* part 2: UNet / TransUNet-cup decoder */
    PROTO_FASTER_RCNN,          /* part 2: Faster R-CNN + FPN */
    PROTO_VILT,                 /* part 2: ViLT with the backbone as patch embedding */
    BENCH_N_PROTOCOLS
} BenchProtocol;

enum { BENCH_UNIT_IMAGE = 0, BENCH_UNIT_CROP = 1 };
enum { BENCH_SELECT_ACC = 0, BENCH_SELECT_AUC = 1, BENCH_SELECT_LOSS = 2 };

const char *bench_category_name(int cat);      /* "classification", ... */
int bench_category_parse(const char *s);       /* -1 if unknown */
const char *bench_protocol_name(int p);        /* "linear", "knn", ... */
int bench_protocol_parse(const char *s);       /* -1 if unknown */
int bench_protocol_implemented(int p);         /* 1 for the protocols of this part */

#define BENCH_NAME_LEN 64
#define BENCH_MAX_CLASSES 32
#define BENCH_MAX_PROTOCOLS 4
#define BENCH_MAX_DATASETS 4      /* a task may pool several prepared files (retrieval #37) */
#define BENCH_MAX_TOPK 8

typedef struct BenchTask {
    char id[BENCH_NAME_LEN];              /* the key under `tasks:` */
    int paper;                            /* task number in recipe.md §3.4 (0: not a paper task) */
    char title[128];                      /* "CBIS-DDSM-breast Composition" */
    int n_datasets;
    char dataset[BENCH_MAX_DATASETS][BENCH_NAME_LEN];   /* keys under `datasets:` */
    char file[BENCH_MAX_DATASETS][256];   /* prepared files, relative to --data-root */
    char prepare[BENCH_MAX_DATASETS][384];/* how to make each file (shown when it is missing) */
    int category;                         /* BenchCategory */
    int multilabel;                       /* 1: multi-hot targets */
    int n_protocols;
    int protocols[BENCH_MAX_PROTOCOLS];   /* BenchProtocol */
    int unit;                             /* BENCH_UNIT_IMAGE or BENCH_UNIT_CROP */
    /* label: a /labels column of the prepared file; "findings" (the /findings multi-hot; for a
     * crop the one-hot of its box's finding class); "box" (a crop's box finding class, single
     * label); "mask" / "boxes" (segmentation / detection targets); a VQA question topic */
    char label[BENCH_NAME_LEN];
    int n_classes;
    char classes[BENCH_MAX_CLASSES][BENCH_NAME_LEN];    /* published names, index order */
    /* the prepared file's class names that make up each task class, '|'-separated (a merge such
     * as "4a|4b|4c"); "<none>" = a sample without any finding (INbreast "Normal").  Prepared
     * classes named nowhere are dropped (their samples leave the task). */
    char source[BENCH_MAX_CLASSES][160];
    char drop[160];                       /* the published drops, '|'-separated (documentation) */
    char metric[32];                      /* primary metric: ranks are computed on it */
    long sizes[3];                        /* published Train/Eval/Test sizes (0: unknown) */
    int clahe;                            /* -1: the protocol's default; 0/1 */
    char note[256];
} BenchTask;

typedef struct BenchHeadOpts {
    double lr, weight_decay;              /* AdamW: 1e-3, 0 (the paper's downstream optimiser) */
    int batch;                            /* 32 */
    long val_every;                       /* iterations between validations (500) */
    long patience;                        /* validations without improvement before stopping (20) */
    long max_iters;                       /* hard cap (50000) */
    int select;                           /* BENCH_SELECT_*: acc (classification), auc (multi-label) */
    int standardize;                      /* z-score each feature with train statistics first (1) */
} BenchHeadOpts;

typedef struct BenchSettings {
    int size;                             /* input size when a model spec gives none (512) */
    int batch;                            /* images per forward pass while extracting (16) */
    float mean, std;                      /* x/max -> (x - mean) / std: 0.5 / 0.5 */
    float crop_margin;                    /* context around a lesion box, fraction of its longer side */
    int crop_min;                         /* smallest crop side, prepared pixels */
    BenchHeadOpts linear, multilabel;
    int multilabel_clahe;                 /* CLAHE input for multi-label tasks (1) */
    ClaheConfig clahe;                    /* clip 2.0, 8 x 8 tiles */
    float threshold;                      /* multi-label decision threshold (0.5) */
    int knn_k;                            /* 20 */
    float knn_temperature;                /* 0.07 */
    int n_topk, topk[BENCH_MAX_TOPK];     /* retrieval K values: 1, 2, 3 */
    float retrieval_mean, retrieval_std;  /* retrieval normalisation: 0.3089 / 0.2505 */
    int boot_n;                           /* bootstrap resamples (1000) */
    uint64_t boot_seed;
    double boot_level;                    /* 0.95 */
    uint64_t seed;                        /* heads: init and shuffling */
    /* part 2 heads, trained on the frozen backbone for a fixed number of AdamW steps (cosine
     * schedule, 5% warmup); the last weights are tested (the published scripts' epochs and
     * selection are not recoverable) */
    struct {
        double lr; int batch; long steps;
        float width;                      /* decoder channel scale (1 = the paper's plan) */
    } seg;
    struct {
        double lr; int batch; long steps;
        int fpn_ch, rep_size, train_fpn;  /* 256, 1024, 0 (the paper's frozen FPN, quirk Q5) */
        int n_sizes; float sizes[DET_MAX_ANCHOR];   /* anchor sizes in input pixels: 32, 64, 128 */
        int box_batch, rpn_batch;         /* 512, 256 */
        int proposals;                    /* RPN pre-NMS (per level) and post-NMS (per image) in
                                             training: 2000; half at test (torchvision's 1000) */
    } det;
    struct {
        double lr; int batch; long steps;
        int dim, depth, heads, max_words; /* ViLT-B: 768, 12, 12, 40 */
    } vqa;
    int sheet_n;                          /* test images on each contact sheet (0: none) */
} BenchSettings;

/* The settings' keys with defaults and help (for --help and key=value overrides). */
extern const CfgSpec BENCH_SETTINGS_KEYS[];
extern const size_t BENCH_N_SETTINGS_KEYS;

typedef struct BenchRegistry {
    char path[512];                       /* the suite file */
    char name[BENCH_NAME_LEN];            /* suite.name, else the file's stem */
    char description[256];
    Config cfg;                           /* defaults + suite + extra task files + overrides */
    BenchTask *tasks;
    int n_tasks;
    BenchSettings set;
} BenchRegistry;

/* The suite's file: an existing path as given, else configs/bench/<suite>.yaml under the current
 * folder or next to the program (<exe>/../configs/bench).  Returns 0 and fills out. */
int bench_suite_path(const char *suite, char *out, size_t n, Err *e);
/* Loads defaults, the suite, then each extra task file (their tasks and datasets are added,
 * later files win), then key=value overrides of the settings.  Validates every task: unknown
 * fields (with the closest known one), categories, protocols, class lists, metrics.  Errors name
 * the file and the key, e.g. "my.yaml: tasks.x.lable: unknown field 'lable' (did you mean
 * 'label'?)". */
int bench_registry_load(BenchRegistry *r, const char *suite, const char *const *extra, int n_extra,
                        const char *const *overrides, int n_overrides, Err *e);
void bench_registry_free(BenchRegistry *r);
int bench_find_task(const BenchRegistry *r, const char *id);   /* index or -1 */
/* 1 when every prepared file of the task exists under data_root; else 0 and the first missing
 * path in missing (may be NULL). */
int bench_task_data_present(const BenchTask *t, const char *data_root, char *missing, size_t n);
/* `versa bench --list`: one line per task (id, category, unit, protocols, dataset present or
 * missing), then the missing datasets with how to prepare them. */
void bench_list(FILE *out, const BenchRegistry *r, const char *data_root);
/* glob patterns (fnmatch) on task ids and categories: 1 when t is selected (n == 0: all) */
int bench_task_selected(const BenchTask *t, const char *const *patterns, int n);

/* Maps the prepared classes names[0..n) of the task's label onto the task's classes:
 *   single label: map[j] = task class index, or -1 (dropped);
 *   multi-label:  mask[j] = bitmask of the task classes that prepared class j switches on
 *                 (map may be NULL then); *none_class = the class marked "<none>" or -1.
 * Error (naming the task, the file and the classes it has) when a task class matches none of the
 * file's classes — almost always a typo in the registry. */
int bench_class_map(const BenchTask *t, const char *file, const char (*names)[PREP_NAME_LEN], int n,
                    int *map, uint32_t *mask, int *none_class, Err *e);

/* ------------------------------------------------------------------------------------------ */
/* Metrics (bench/metrics.c).
 * Every metric takes optional multiplicities w (n): row i counts w[i] times (a bootstrap resample
 * expressed as counts); w = NULL counts every row once.  Definitions follow scikit-learn 1.2:
 *   accuracy            sum w [y == pred] / sum w
 *   balanced accuracy   mean recall over the classes present in y (balanced_accuracy_score)
 *   macro F1            mean of 2TP / (2TP + FP + FN) over the classes present in y or pred
 *                       (f1_score(average='macro'), zero_division 0)
 *   AUC                 Mann-Whitney with mid-ranks for ties (roc_auc_score); NaN when the
 *                       positives or the negatives are empty
 *   macro OvR AUC       mean of one-vs-rest AUCs over the classes present in y (and absent from
 *                       none of the rows, so that each AUC is defined)
 *   multi-label AUC     mean AUC over the classes with at least one positive and one negative
 *   multi-label F1      macro F1 at `threshold` (score > thr) over the classes with a positive
 *   subset accuracy     fraction of rows whose thresholded vector equals the target exactly
 * NaN means "undefined on these rows" (e.g. a resample without positives). */
double metric_accuracy(const int32_t *y, const int32_t *pred, const uint32_t *w, size_t n);
double metric_balanced_accuracy(const int32_t *y, const int32_t *pred, int C, const uint32_t *w, size_t n);
double metric_f1_macro(const int32_t *y, const int32_t *pred, int C, const uint32_t *w, size_t n);
double metric_auc(const float *score, const uint8_t *pos, const uint32_t *w, size_t n);
/* prob (n, C) class scores */
double metric_auc_ovr(const float *prob, int C, const int32_t *y, const uint32_t *w, size_t n);
/* score, Y: (n, C) */
double metric_auc_multilabel(const float *score, const uint8_t *Y, int C, const uint32_t *w, size_t n);
double metric_f1_multilabel(const float *score, const uint8_t *Y, int C, float threshold, const uint32_t *w, size_t n);
double metric_subset_accuracy(const float *score, const uint8_t *Y, int C, float threshold, const uint32_t *w, size_t n);

/* Retrieval, per query.  q (nq, d) and db (ndb, d) are L2-normalised rows; neighbours by cosine
 * similarity, ties by database index.  hits (nq, nk): 1 when one of the k[j] nearest database
 * items has the query's label; ap (nq): AP@R = (1/R) sum_{i<=R} P@i * rel(i) with R = the number
 * of database items of the query's label (Musgrave et al. 2020), NaN when R = 0. */
void retrieval_per_query(const float *q, const int32_t *qy, size_t nq, const float *db, const int32_t *dby,
                         size_t ndb, size_t d, const int *k, int nk, uint8_t *hits, float *ap);

/* Percentile with linear interpolation between order statistics (numpy's default) of the finite
 * values of x (n, modified: sorted).  NaN when none is finite. */
double bench_percentile(double *x, size_t n, double q);

/* Bootstrap: `stat` computes n_stats numbers on the rows weighted by w (NULL = the test set
 * itself).  Resample r draws n rows with replacement from rng_fork(seed, r), so the CIs do not
 * depend on the thread count and every model sees the same resamples.  CI = percentiles
 * (1-level)/2 and (1+level)/2 of the finite resampled values. */
typedef void (*BenchStatFn)(const void *ud, const uint32_t *w, size_t n, double *out);
typedef struct BenchCI {
    double value, lo, hi;
    int n_valid;           /* resamples where the statistic was defined */
} BenchCI;
/* resamples: NULL, or receives the (n_resamples, n_stats) resampled values (malloc'd; the caller frees) */
int bench_bootstrap(BenchStatFn stat, const void *ud, size_t n, int n_stats, int n_resamples, uint64_t seed,
                    double level, BenchCI *out, double **resamples);

/* ------------------------------------------------------------------------------------------ */
/* Protocols on cached features (bench/protocols.c) */

typedef struct BenchData {
    size_t n, d;
    const float *x;          /* (n, d) features */
    const uint8_t *split;    /* (n) PREP_SPLIT_* */
    int C;
    const int32_t *y;        /* (n) class, single label (NULL for multi-label) */
    const uint8_t *Y;        /* (n, C) multi-hot (NULL for single label) */
} BenchData;

typedef struct BenchProbeLog {
    long iters;              /* optimisation steps taken */
    long best_iter;          /* step of the selected weights */
    double best_val;         /* validation score there (acc / AUC / -loss) */
    int val_is_train;        /* no val split: selection ran on the train rows */
} BenchProbeLog;

/* Trains a linear head on the train rows (CE, or BCE for d->Y), validates every val_every steps
 * on the val rows, keeps the best, stops after `patience` validations without improvement.
 * With o->standardize the features are first z-scored with the train rows' mean and variance
 * (variance + 1e-6 x its mean over dimensions), MAE's linear-probe BatchNorm without affine: the
 * head has the same capacity, but eval-mode features of very different scales (a random-init
 * EfficientNet's are ~1e-14; the published code kept BN in train mode, quirk Q4) all train.
 * score (n_test, C): softmax (single label) or sigmoid (multi-label) of the test rows in order.
 * Deterministic for a seed. */
int bench_linear_probe(Ctx *c, const BenchData *d, const BenchHeadOpts *o, uint64_t seed, float *score,
                       BenchProbeLog *log, Err *e);
/* DINO eval_knn: database = train rows, cosine similarity, the k nearest vote with weight
 * exp(sim / T); score (n_test, C) = votes normalised to sum 1. */
int bench_knn(const BenchData *d, int k, float temperature, float *score, Err *e);
/* rows of a split, in order; returns the count (idx may be NULL to count) */
size_t bench_rows(const BenchData *d, int split, uint32_t *idx);
/* L2-normalise rows in place (zero rows stay zero) */
void bench_l2_normalize(float *x, size_t n, size_t d);

/* Test metrics with CIs.  Names: classification auc, bacc, acc, f1; multi-label auc, f1, acc
 * (subset); retrieval top<K>..., mapr.  `prefix` is prepended (e.g. "knn_"). */
#define BENCH_MAX_METRICS 48
typedef struct BenchMetric {
    char name[32];
    BenchCI ci;
    float *boot;              /* (n_boot) the metric on each bootstrap resample, NaN where undefined (owned) */
    int n_boot;
} BenchMetric;
typedef struct BenchMetrics {
    int n;
    BenchMetric m[BENCH_MAX_METRICS];
} BenchMetrics;
/* Appends n_stats metrics named prefix + names[s] with their CIs and their columns of the bootstrap
 * values (resamples: (n_resamples, n_stats), as bench_bootstrap returns them; NULL keeps none). */
void bench_metrics_add(BenchMetrics *out, const char *prefix, const char *const *names, int n_stats, const BenchCI *ci,
                       const double *resamples, int n_resamples);
void bench_metrics_free(BenchMetrics *m);

/* Paired comparison of two models' metric on the same test set (a - b).  Both were bootstrapped
 * with the same seed over the same items, so resample r of each is the same draw of test rows and
 * the difference per resample is the difference's bootstrap distribution: much narrower than the
 * two marginal CIs when the models err on the same rows.  out->value = a - b on the test set;
 * lo / hi its percentile CI at `level` over the resamples where both are finite (n_valid);
 * *p_le0 = the fraction of them where a - b <= 0 (a one-sided bootstrap p-value for "a > b").
 * Returns 1 (and NaNs) when the two have no resamples or different numbers of them. */
int bench_paired_diff(const BenchMetric *a, const BenchMetric *b, double level, BenchCI *out, double *p_le0);

int bench_eval_classification(const int32_t *y, const float *prob, size_t n, int C, const BenchSettings *s,
                              uint64_t seed, const char *prefix, BenchMetrics *out, Err *e);
int bench_eval_multilabel(const uint8_t *Y, const float *score, size_t n, int C, const BenchSettings *s, uint64_t seed,
                          const char *prefix, BenchMetrics *out, Err *e);
/* x: (n, d) features (normalised here on a copy); database = split != test, queries = test */
int bench_eval_retrieval(const BenchData *d, const BenchSettings *s, uint64_t seed, BenchMetrics *out, Err *e);

/* ------------------------------------------------------------------------------------------ */
/* Models (bench/models.c)
 *
 * SPEC forms (fields separated by ':'; key=value fields anywhere after the path):
 *   ckpt:PATH[:teacher|student][:SIZE]      a stage-1 checkpoint of this project (ssl_load_model)
 *   effnet-ckpt:PATH[:efficientnet-bN][:SIZE][:prefix=P]
 *                                           lukemelas EfficientNet tensors (stage 2 students,
 *                                           Mammo-CLIP / VersaMammo (Enb5) weights converted from
 *                                           PyTorch); variant and prefix inferred from the names
 *   vit-h5:PATH[:SIZE][:prefix=P]           DINOv2-named ViT tensors (weights from PyTorch);
 *                                           arch, patch, depth inferred from the shapes
 *   random:vit_tiny|vit_small|vit_base|vit_large:PATCH[:SIZE]   random-init baselines
 *   random:efficientnet-bN[:SIZE]
 *   optional seed=N (random init), size=N.
 * Without SIZE the suite's input.size is used (rounded to the nearest multiple of a ViT's patch:
 * 512 -> 518 for /14, as the paper). */

enum { BENCH_VIT = 0, BENCH_EFFNET = 1 };

enum { BENCH_FEAT_GAP = 0, BENCH_FEAT_CLS, BENCH_FEAT_CLS_GAP };

typedef struct BenchModel {
    char name[BENCH_NAME_LEN];
    char spec[512];
    char desc[256];             /* "vit_tiny/16 random init", "efficientnet-b0 from x.h5 (prefix 'student.')" */
    char fingerprint[512];      /* spec + file size/mtime: part of the feature cache key */
    int kind;                   /* BENCH_VIT / BENCH_EFFNET */
    int size;                   /* input size */
    int in_chans;
    int feat_dim;
    int patch;                  /* ViT only */
    int feature;                /* ViT only: BENCH_FEAT_GAP (the paper's), _CLS, _CLS_GAP (DINOv2's linear eval) */
    ParamStore ps;
    ViT vit;
    SslModel ssl;               /* ckpt: backbone is ssl.backbone */
    int is_ssl;
    EffNet effnet;
} BenchModel;

int bench_model_load(BenchModel *m, const char *name, const char *spec, int default_size, Err *e);
void bench_model_free(BenchModel *m);
/* x (B, in_chans, size, size) normalised images -> feat (B, feat_dim): the mean of the
 * final-norm patch tokens (ViT, the paper's feature; the spec's feature=cls / cls_gap takes the
 * final-norm CLS token, or CLS then mean as DINOv2's linear evaluation does) or the pooled head
 * feature (EfficientNet).
 * Eval mode, no gradient. */
void bench_model_forward(Ctx *c, const BenchModel *m, const float *x, int B, float *feat);

/* ------------------------------------------------------------------------------------------ */
/* Items and features (bench/features.c) */

typedef struct BenchItems {
    size_t n;
    int64_t *sample;          /* (n) sample index in the prepared file */
    int64_t *box;             /* (n) global box index (crop), -1 = the whole image */
    uint8_t *split;           /* (n) */
    int precut;               /* unit crop on a file without boxes: its images are the crops */
} BenchItems;

/* image: one item per sample; crop: one per lesion box (a file without any box: its images are
 * taken to be pre-cut crops, as a manifest of ROI crops). */
int bench_items(const Prepared *p, int unit, BenchItems *it, Err *e);
void bench_items_free(BenchItems *it);
/* Item i's value of label column col: a crop's own lesion value where the file has one
 * (/box_labels, e.g. CBIS pathology), else its image's; -1 = missing. */
int32_t bench_item_label(const Prepared *p, const BenchItems *it, size_t i, int col);

typedef struct BenchPreproc {
    int size;                 /* output side */
    int in_chans;
    float mean, std;
    int clahe;
    ClaheConfig clahe_cfg;
    float crop_margin;
    int crop_min;
} BenchPreproc;

/* One item as the backbone sees it: the whole image or a square crop around the box (side
 * max(w, h) * (1 + 2 margin), at least crop_min, zero outside the image) -> bilinear resize to
 * size x size -> [CLAHE] -> (x - mean) / std, replicated to in_chans.  out: (in_chans, size, size).
 * work: at least 2 * size^2 + (crop side)^2 floats (bench_item_work_floats). */
int bench_item_pixels(const Prepared *p, const BenchItems *it, size_t i, const BenchPreproc *pp, float *img,
                      float *work, size_t work_n, AugWork *aw, float *out, Err *e);
size_t bench_item_work_floats(const Prepared *p, const BenchPreproc *pp);

/* Features of every item, from the cache file when its key matches, else extracted (in batches of
 * `batch`) and written there atomically.  *feat (it->n, m->feat_dim) is malloc'd.  *cached is
 * set to 1 when read from the cache.  cache_path may be NULL (no caching). */
int bench_features(Ctx *c, const BenchModel *m, const Prepared *p, const BenchItems *it, const BenchPreproc *pp,
                   int batch, const char *cache_path, float **feat, int *cached, int quiet, Err *e);

/* ------------------------------------------------------------------------------------------ */
/* Runs and reports (bench/run.c, bench/report.c, bench/plot.c) */

typedef enum BenchStatus { BENCH_OK = 0, BENCH_SKIPPED, BENCH_NOT_IMPLEMENTED, BENCH_FAILED } BenchStatus;
const char *bench_status_name(int s);   /* "ok", "skipped", "not implemented", "failed" */

typedef struct BenchModelSpec {
    const char *name, *spec;
} BenchModelSpec;

typedef struct BenchRunOpts {
    const char *suite;                    /* "synthetic", "versamammo92" or a YAML path */
    const char *const *task_files;        /* --tasks FILE.yaml ... */
    int n_task_files;
    const char *const *overrides;         /* key=value */
    int n_overrides;
    const BenchModelSpec *models;
    int n_models;
    const char *data_root;
    const char *out_dir;
    const char *const *only;              /* task id / category patterns */
    int n_only;
    const char *baseline;                 /* NULL, or a model name: paired differences against it */
    int no_cache;
    int quiet;                            /* no progress lines */
} BenchRunOpts;

typedef struct BenchResult {
    int model, task;                      /* indices into BenchRun.models / reg.tasks */
    int status;                           /* BenchStatus */
    char detail[512];                     /* why skipped / failed; notes */
    BenchMetrics metrics;
    size_t n_split[3];                    /* items per split after the class map */
    double seconds;
} BenchResult;

typedef struct BenchRun {
    BenchRegistry reg;
    char data_root[512];
    int n_models;
    char (*model_names)[BENCH_NAME_LEN];
    char (*model_specs)[512];
    char (*model_descs)[256];
    int *task_sel;                        /* selected task indices */
    int n_sel;
    BenchResult *res;                     /* n_models * n_sel, model-major */
    int baseline;                         /* model index of --baseline, -1: none */
    double seconds;
} BenchRun;

/* Loads the registry and every model, runs each selected task, fills run.  Task-level problems
 * (a missing dataset, a protocol of part 2, a bad label column) become statuses, not errors;
 * the return is nonzero only when the run cannot start (bad suite, bad model spec, out dir). */
int bench_run(const BenchRunOpts *o, BenchRun *run, Err *e);
void bench_run_free(BenchRun *run);
const BenchMetric *bench_result_metric(const BenchResult *r, const char *name);

/* Ranks per task on the task's primary metric (higher is better; ties share the mean rank),
 * over the tasks every model completed.  rank: (n_tasks, n_models); avg (n_models); firsts
 * (n_models) counts the tasks where a model has the best value (ties: each). */
typedef struct BenchRanks {
    int n_models, n_tasks;
    int *task;          /* (n_tasks) indices into run->task_sel */
    double *value;      /* (n_tasks, n_models) */
    double *rank;       /* (n_tasks, n_models) */
    double *avg;        /* (n_models) */
    int *firsts;        /* (n_models) */
} BenchRanks;
int bench_ranks(const BenchRun *run, BenchRanks *rk);
void bench_ranks_free(BenchRanks *rk);

/* results.csv, status.csv, report.md and ranks.png in out_dir; with a baseline also paired.csv
 * (model,task,metric,baseline,diff,ci_low,ci_high,p_le0) and its section of report.md */
int bench_write_report(const BenchRun *run, const char *out_dir, Err *e);
/* rank per task (one row per task, a dot per model) and the average ranks, 8-bit RGB PNG */
int bench_plot_ranks(const BenchRun *run, const BenchRanks *rk, const char *png_path, Err *e);

/* ------------------------------------------------------------------------------------------ */
/* Synthetic datasets for configs/bench/synthetic.yaml (bench/synthetic.c): `versa synth` in the
 * VinDr-Mammo and CBIS-DDSM layouts under <dir>/raw, then the real converters write
 * <dir>/synth-vindr.h5 and <dir>/synth-cbis.h5. */
typedef struct BenchSynthOpts {
    const char *dir;
    long patients;            /* 250 */
    uint64_t seed;            /* 0 */
    int width, height;        /* synthetic image size (256 x 320) */
    int vindr_size;           /* prepared side, VinDr layout (128) */
    int cbis_size;            /* prepared side, CBIS layout: crops are cut from it (256) */
    float acq_spread;         /* display-processing spread between images (1; versa synth --acquisition) */
    int quiet;
} BenchSynthOpts;
BenchSynthOpts bench_synth_opts_default(void);
int bench_make_synthetic(const BenchSynthOpts *o, Err *e);

/* ------------------------------------------------------------------------------------------ */
/* Dense and multimodal protocols (part 2): the head trains on the frozen backbone's maps, which
 * are recomputed each step (eval mode, no gradient) rather than cached — a multi-scale map is
 * ~100x a pooled feature.
 *   unet         bench/protocol_seg.c  images with a non-empty mask; BCE + Dice; H/V flips;
 *                per-image Dice and IoU at threshold 0.5 after resizing the logits bilinearly to
 *                the mask's size; metrics dice, iou
 *   faster_rcnn  bench/protocol_det.c  every image (those without a box are negatives); boxes of
 *                the task's finding classes; metrics mean_iou (the paper's: score >= 0.5, NMS 0.5,
 *                best IoU per GT box, mean per image, images without GT skipped), map50 (VOC
 *                all-point AP at IoU 0.5), froc_0.5 / froc_1 / froc_2 (sensitivity at that many
 *                false positives per image)
 *   vilt         bench/protocol_vqa.c  MammoVQA JSON (a folder with MammoVQA-Image-{Train,Eval,
 *                Bench}.json and images/), one question topic per task; fusion transformer on
 *                word tokens + the backbone's image tokens; metrics acc, bacc, f1 (single answer)
 *                or acc (exact set), f1, auc (multi-label topic)
 * Each writes its metrics (bootstrap CIs over test images / questions) into r, the split sizes
 * and a detail line; seg and det also a contact sheet <out_dir>/sheets/<task>.<model>.png. */
typedef struct BenchDenseArgs {
    const BenchSettings *s;
    const char *data_root, *out_dir;
    uint64_t head_seed, boot_seed;
    int quiet;
} BenchDenseArgs;

/* Shared by the three (bench/dense.c). */
/* sample i of p as the backbone sees it: (S, S) gray, bilinear resize, (x - mean) / std; raw has
 * room for p->h * p->w floats */
int bench_dense_image(const Prepared *p, size_t i, int S, float mean, float std, float *raw, float *out, Err *e);
/* x (in_chans, S, S) from a gray (S, S) image, mirrored left-right (flip_h) / top-bottom (flip_v) */
void bench_dense_input(const float *gray, int S, int in_chans, int flip_h, int flip_v, float *x);
/* cosine lr with 5% linear warmup from 0 */
double bench_dense_lr(long step, long steps, double lr);
/* the path of a task's k-th prepared file: as written when absolute, else under data_root */
void bench_task_file(const BenchTask *t, int k, const char *data_root, char *path, size_t n);
void bench_model_dims(const BenchModel *m, BackboneDims *d);
/* x (B, in_chans, size, size) -> the backbone's maps; eval mode, no gradient, c->training kept */
BackboneMaps bench_model_maps(Ctx *c, const BenchModel *m, Tensor *x);
int bench_proto_segmentation(Ctx *c, const BenchModel *m, const BenchTask *t, const BenchDenseArgs *a, BenchResult *r,
                             Err *e);
int bench_proto_detection(Ctx *c, const BenchModel *m, const BenchTask *t, const BenchDenseArgs *a, BenchResult *r,
                          Err *e);
int bench_proto_vqa(Ctx *c, const BenchModel *m, const BenchTask *t, const BenchDenseArgs *a, BenchResult *r, Err *e);

/* One MammoVQA record ({"id": {"Path": ..., "Question topic": ..., "Question": ..., "Answer":
 * "text" | ["text", ...], other keys skipped}, ...}); strings truncated to their fields. */
typedef struct VqaRec {
    char path[256];
    char topic[64];
    char question[256];
    char answers[BENCH_MAX_CLASSES][BENCH_NAME_LEN];
    int n_answers;
} VqaRec;
/* The MammoVQA JSON in buf[0..len) -> *out (n_out records, free()); errors name `name` and the
 * byte offset.  Nesting is limited (64); \uXXXX outside ASCII becomes '?'. */
int bench_vqa_parse(const char *buf, size_t len, const char *name, VqaRec **out, size_t *n_out, Err *e);

/* Detection metrics on n images (bench/protocol_det.c).  dets: per image, boxes (k, 4) and
 * scores (k) (any order); gt: per image (g, 4).  w: image multiplicities (NULL = 1 each).
 * out[0] mean best IoU (paper), out[1] AP@0.5, out[2..4] FROC sensitivity at 0.5, 1, 2 FP/image. */
typedef struct BenchDetImage {
    int n_det, n_gt;
    const float *boxes, *scores, *gt;
} BenchDetImage;
void bench_det_metrics(const BenchDetImage *im, size_t n, const uint32_t *w, double out[5]);
/* per-image Dice and IoU of a binary prediction (threshold applied) against a 0/1 mask; both empty = 1 */
void bench_dice_iou(const uint8_t *pred, const uint8_t *gt, size_t n, double *dice, double *iou);

/* Contact sheet (bench/plot_dense.c): tiles of gray images (side S each, values in [0, 1]) with
 * the ground truth in green and the prediction in red — masks as outlines, boxes as rectangles
 * (input pixels), predictions with a score shown as box only when score >= 0.5. */
typedef struct BenchSheetTile {
    const float *img;                     /* (S, S) */
    const uint8_t *gt_mask, *pred_mask;   /* (S, S) or NULL */
    const float *gt_boxes; int n_gt;      /* (n_gt, 4) */
    const float *pred_boxes; int n_pred;  /* (n_pred, 4) */
} BenchSheetTile;
int bench_contact_sheet(const BenchSheetTile *tiles, int n, int S, int cols, const char *png_path, Err *e);

/* ------------------------------------------------------------------------------------------ */
/* Training curves (bench/plot_lines.c, `versa plot`): metrics.jsonl -> one line-plot panel per
 * numeric key (x = "step"; "elapsed_s" is not plotted; null = a gap; a key ending in "_per_s"
 * that is 0 counts as not measured).  Panels are PLOT_PANEL_W x PLOT_PANEL_H, at most 3 per row,
 * under a title band; panel k's curve is drawn in PLOT_LINES_PALETTE[k % 8]. */
#define PLOT_PANEL_W 480
#define PLOT_PANEL_H 300
extern const uint8_t PLOT_LINES_PALETTE[8][3];

typedef struct PlotSeries {
    char name[64];
    double *y;            /* (n_rows) NAN where the row has no finite value */
} PlotSeries;

typedef struct PlotMetrics {
    size_t n_rows;
    double *step;         /* (n_rows) */
    PlotSeries *series;   /* (n_series) in the order the keys first appear */
    int n_series;
    double elapsed_s;     /* the last row's, 0 when absent */
} PlotMetrics;

int plot_read_metrics(const char *path, PlotMetrics *m, Err *e);   /* errors name file:line */
void plot_metrics_free(PlotMetrics *m);
/* first and last finite values of series k; 0 when it has none */
int plot_series_first_last(const PlotMetrics *m, int k, double *first, double *last);
int plot_lines_png(const PlotMetrics *m, const char *title, const char *png_path, Err *e);
/* image size for n panels; panel i's plot area, inclusive pixel edges: data range [a, b] of
 * plot_nice_range maps linearly onto x0..x1 (x) and y1..y0 (y, upwards) */
void plot_lines_size(int n_panels, int *w, int *h);
void plot_lines_area(int n_panels, int i, int *x0, int *y0, int *x1, int *y1);
/* axis range [a, b] covering [lo, hi] on ticks of step 1, 2, 2.5 or 5 x 10^k (about 5 intervals) */
void plot_nice_range(double lo, double hi, double *a, double *b, double *step);

#endif
