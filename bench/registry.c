/* registry.c — benchmark suites: YAML files of datasets, tasks and protocol settings, read with the
 * project's config system (engine/config.c flattens maps to dotted keys and keeps lists of plain
 * values), so a suite is
 *
 *     datasets:
 *       cbis-ddsm: {file: cbis-ddsm.h5, prepare: "versa prepare cbis RAW cbis-ddsm.h5 --size 512x512"}
 *     tasks:
 *       cbis_pathology: {paper: 4, dataset: cbis-ddsm, category: classification, unit: crop,
 *                        label: pathology, classes: [Benign, Malignant], source: [benign, malignant]}
 *     linear: {val_every: 500, patience: 20}
 *
 * and every key is checked: a task field or a setting that does not exist is an error naming the
 * file, the key and the closest known name. */
#include "bench/bench.h"
#include <fnmatch.h>
#include <stdarg.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* names */

/* NULL-terminated: `closest` walks them */
static const char *CATEGORY_NAMES[BENCH_N_CATEGORIES + 1] = {"classification", "segmentation", "detection",
                                                             "retrieval", "vqa", NULL};
static const char *PROTOCOL_NAMES[BENCH_N_PROTOCOLS + 1] = {"linear", "knn", "multilabel", "retrieval",
                                                            "unet", "faster_rcnn", "vilt", NULL};

const char *bench_category_name(int cat) {
    return cat >= 0 && cat < BENCH_N_CATEGORIES ? CATEGORY_NAMES[cat] : "?";
}

int bench_category_parse(const char *s) {
    for (int i = 0; i < BENCH_N_CATEGORIES; i++)
        if (!strcmp(s, CATEGORY_NAMES[i])) return i;
    return -1;
}

const char *bench_protocol_name(int p) {
    return p >= 0 && p < BENCH_N_PROTOCOLS ? PROTOCOL_NAMES[p] : "?";
}

int bench_protocol_parse(const char *s) {
    for (int i = 0; i < BENCH_N_PROTOCOLS; i++)
        if (!strcmp(s, PROTOCOL_NAMES[i])) return i;
    return -1;
}

int bench_protocol_implemented(int p) {
    return p == PROTO_LINEAR || p == PROTO_KNN || p == PROTO_MULTILABEL || p == PROTO_RETRIEVAL || p == PROTO_UNET ||
           p == PROTO_FASTER_RCNN || p == PROTO_VILT;
}

/* ------------------------------------------------------------------------------------------ */
/* settings */

const CfgSpec BENCH_SETTINGS_KEYS[] = {
    {"suite.name", CFG_STR, "", "suite name shown in reports (default: the file's stem)"},
    {"suite.description", CFG_STR, "", "one line about the suite"},
    {"input.size", CFG_INT, "512", "input side when a model spec gives none (ViT: nearest multiple of the patch)"},
    {"input.batch", CFG_INT, "16", "images per forward pass while extracting features"},
    {"input.mean", CFG_FLOAT, "0.5", "normalisation (x/max - mean) / std, classification and multi-label"},
    {"input.std", CFG_FLOAT, "0.5", "see input.mean"},
    {"input.crop_margin", CFG_FLOAT, "0.1", "context around a lesion box, fraction of its longer side"},
    {"input.crop_min", CFG_INT, "16", "smallest crop side in prepared pixels"},
    {"linear.lr", CFG_FLOAT, "1e-3", "AdamW learning rate of the linear head"},
    {"linear.weight_decay", CFG_FLOAT, "0", "AdamW weight decay"},
    {"linear.batch", CFG_INT, "32", "head training batch"},
    {"linear.val_every", CFG_INT, "500", "iterations between validations on the val split"},
    {"linear.patience", CFG_INT, "20", "validations without improvement before stopping"},
    {"linear.max_iters", CFG_INT, "50000", "hard cap on head iterations"},
    {"linear.select", CFG_STR, "acc", "model selection on val: acc, auc or loss"},
    {"linear.standardize", CFG_BOOL, "true", "z-score features with train statistics before the head (false: raw, as the paper)"},
    {"multilabel.lr", CFG_FLOAT, "1e-3", "AdamW learning rate of the multi-label head"},
    {"multilabel.weight_decay", CFG_FLOAT, "0", "AdamW weight decay"},
    {"multilabel.batch", CFG_INT, "32", "head training batch"},
    {"multilabel.val_every", CFG_INT, "500", "iterations between validations"},
    {"multilabel.patience", CFG_INT, "20", "validations without improvement before stopping"},
    {"multilabel.max_iters", CFG_INT, "50000", "hard cap on head iterations"},
    {"multilabel.select", CFG_STR, "auc", "model selection on val: auc, acc or loss"},
    {"multilabel.standardize", CFG_BOOL, "true", "z-score features with train statistics before the head"},
    {"multilabel.clahe", CFG_BOOL, "true", "CLAHE on the input of multi-label tasks"},
    {"multilabel.clahe_clip", CFG_FLOAT, "2.0", "CLAHE clip limit"},
    {"multilabel.clahe_tiles", CFG_INT, "8", "CLAHE tiles per side"},
    {"multilabel.threshold", CFG_FLOAT, "0.5", "decision threshold for F1 and subset accuracy"},
    {"knn.k", CFG_INT, "20", "neighbours of the k-NN probe"},
    {"knn.temperature", CFG_FLOAT, "0.07", "vote weight exp(similarity / T)"},
    {"retrieval.topk", CFG_LIST, "[1, 2, 3]", "K values of top-K accuracy"},
    {"retrieval.mean", CFG_FLOAT, "0.3089", "retrieval normalisation (the public extraction script's)"},
    {"retrieval.std", CFG_FLOAT, "0.2505", "see retrieval.mean"},
    {"bootstrap.n", CFG_INT, "1000", "bootstrap resamples of the test set"},
    {"bootstrap.seed", CFG_INT, "0", "seed of the resamples (the same for every model)"},
    {"bootstrap.level", CFG_FLOAT, "0.95", "confidence level of the percentile intervals"},
    {"seed", CFG_INT, "0", "seed of the heads (init, shuffling)"},
    {"segmentation.lr", CFG_FLOAT, "1e-3", "AdamW learning rate of the UNet decoder (cosine, 5% warmup)"},
    {"segmentation.batch", CFG_INT, "8", "images per step (the paper's batch)"},
    {"segmentation.steps", CFG_INT, "4000", "decoder training steps"},
    {"segmentation.width", CFG_FLOAT, "1.0", "decoder channel scale (1 = the paper's plan)"},
    {"detection.lr", CFG_FLOAT, "1e-3", "AdamW learning rate of the RPN and RoI heads (cosine, 5% warmup)"},
    {"detection.batch", CFG_INT, "8", "images per step (the paper's batch)"},
    {"detection.steps", CFG_INT, "4000", "detector training steps"},
    {"detection.fpn_channels", CFG_INT, "256", "FPN width"},
    {"detection.representation", CFG_INT, "1024", "TwoMLPHead width"},
    {"detection.train_fpn", CFG_BOOL, "false", "train the FPN too (the paper's lp runs keep it frozen, quirk Q5)"},
    {"detection.anchor_sizes", CFG_LIST, "[32, 64, 128]", "anchor sizes in input pixels, on every level"},
    {"detection.box_batch", CFG_INT, "512", "RoIs sampled per image"},
    {"detection.rpn_batch", CFG_INT, "256", "anchors sampled per image"},
    {"detection.proposals", CFG_INT, "2000", "RPN proposals kept in training (pre-NMS per level, post-NMS per image); half at test"},
    {"vqa.lr", CFG_FLOAT, "1e-4", "AdamW learning rate of the fusion transformer (cosine, 5% warmup)"},
    {"vqa.batch", CFG_INT, "16", "questions per step (the paper: 1 x 16 accumulated)"},
    {"vqa.steps", CFG_INT, "4000", "fusion training steps"},
    {"vqa.dim", CFG_INT, "768", "fusion transformer width (ViLT-B)"},
    {"vqa.depth", CFG_INT, "12", "fusion transformer blocks"},
    {"vqa.heads", CFG_INT, "12", "attention heads"},
    {"vqa.max_words", CFG_INT, "40", "question tokens kept (ViLT: 40)"},
    {"report.sheet_images", CFG_INT, "8", "test images on each segmentation / detection contact sheet (0: none)"},
};
const size_t BENCH_N_SETTINGS_KEYS = sizeof BENCH_SETTINGS_KEYS / sizeof BENCH_SETTINGS_KEYS[0];

static const char *TASK_FIELDS[] = {"title", "paper", "dataset", "category", "multilabel", "protocol", "unit", "label",
                                    "classes", "source", "drop", "metric", "sizes", "clahe", "note", NULL};
static const char *DATASET_FIELDS[] = {"file", "prepare", "note", NULL};

/* the closest of names (NULL-terminated) or of the settings keys, NULL when nothing is close */
static const char *closest(const char *s, const char *const *names) {
    const char *best = NULL;
    size_t best_d = strlen(s) / 3 + 2;
    if (names) {
        for (int i = 0; names[i]; i++) {
            size_t d = edit_distance_within(s, names[i], best_d - 1);
            if (d < best_d) best_d = d, best = names[i];
        }
    } else {
        for (size_t i = 0; i < BENCH_N_SETTINGS_KEYS; i++) {
            size_t d = edit_distance_within(s, BENCH_SETTINGS_KEYS[i].key, best_d - 1);
            if (d < best_d) best_d = d, best = BENCH_SETTINGS_KEYS[i].key;
        }
    }
    return best;
}

static int in_list(const char *s, const char *const *names) {
    for (int i = 0; names[i]; i++)
        if (!strcmp(s, names[i])) return 1;
    return 0;
}

static const char *origin(const Config *cfg, const char *key) {
    for (size_t i = 0; i < cfg->n; i++)
        if (!strcmp(cfg->e[i].key, key)) {
            int o = cfg->e[i].origin;
            return o >= 0 && (size_t)o < cfg->n_origins ? cfg->origins[o] : cfg->name;
        }
    return cfg->name;
}

static int check_keys(const Config *cfg, Err *e) {
    for (size_t i = 0; i < cfg->n; i++) {
        const char *key = cfg->e[i].key;
        const char *where = cfg->e[i].origin >= 0 && (size_t)cfg->e[i].origin < cfg->n_origins
                                ? cfg->origins[cfg->e[i].origin] : cfg->name;
        int is_task = !strncmp(key, "tasks.", 6), is_ds = !strncmp(key, "datasets.", 9);
        if (is_task || is_ds) {
            const char *id = key + (is_task ? 6 : 9);
            const char *dot = strchr(id, '.');
            if (!dot)
                return err_set(e, "%s: %s: a %s needs fields (e.g. %s: {%s})", where, key, is_task ? "task" : "dataset",
                               key, is_task ? "dataset: ..., category: ..." : "file: ...");
            const char *field = dot + 1;
            const char *const *fields = is_task ? TASK_FIELDS : DATASET_FIELDS;
            if (!in_list(field, fields)) {
                const char *s = closest(field, fields);
                if (s) return err_set(e, "%s: %s: unknown field '%s' (did you mean '%s'?)", where, key, field, s);
                return err_set(e, "%s: %s: unknown field '%s'", where, key, field);
            }
            continue;
        }
        int known = 0;
        for (size_t k = 0; k < BENCH_N_SETTINGS_KEYS && !known; k++) known = !strcmp(key, BENCH_SETTINGS_KEYS[k].key);
        if (!known) {
            const char *s = closest(key, NULL);
            if (s) return err_set(e, "%s: unknown key '%s' (did you mean '%s'?)", where, key, s);
            return err_set(e, "%s: unknown key '%s' (a suite has datasets, tasks and settings; see versa bench --help)",
                           where, key);
        }
    }
    return 0;
}

static int select_parse(const char *s, int *out) {
    if (!strcmp(s, "acc")) *out = BENCH_SELECT_ACC;
    else if (!strcmp(s, "auc")) *out = BENCH_SELECT_AUC;
    else if (!strcmp(s, "loss")) *out = BENCH_SELECT_LOSS;
    else return 1;
    return 0;
}

static int head_opts(const Config *cfg, const char *p, BenchHeadOpts *o, Err *e) {
    char k[64];
#define KEY(name) (snprintf(k, sizeof k, "%s.%s", p, name), k)
    o->lr = cfg_get_float(cfg, KEY("lr"), 1e-3, e);
    o->weight_decay = cfg_get_float(cfg, KEY("weight_decay"), 0, e);
    o->batch = (int)cfg_get_int(cfg, KEY("batch"), 32, e);
    o->val_every = cfg_get_int(cfg, KEY("val_every"), 500, e);
    o->patience = cfg_get_int(cfg, KEY("patience"), 20, e);
    o->max_iters = cfg_get_int(cfg, KEY("max_iters"), 50000, e);
    o->standardize = cfg_get_bool(cfg, KEY("standardize"), 1, e);
    const char *sel = cfg_get_str(cfg, KEY("select"), "acc");
    if (e->msg[0]) return 1;
    if (select_parse(sel, &o->select)) return err_set(e, "%s: %s: '%s' is not acc, auc or loss", origin(cfg, k), k, sel);
    if (o->lr <= 0 || o->batch < 1 || o->val_every < 1 || o->patience < 1 || o->max_iters < 1)
        return err_set(e, "%s: %s.*: lr, batch, val_every, patience and max_iters must be positive", origin(cfg, KEY("lr")), p);
#undef KEY
    return 0;
}

static int settings_from(const Config *cfg, BenchSettings *s, Err *e) {
    memset(s, 0, sizeof *s);
    s->size = (int)cfg_get_int(cfg, "input.size", 512, e);
    s->batch = (int)cfg_get_int(cfg, "input.batch", 16, e);
    s->mean = (float)cfg_get_float(cfg, "input.mean", 0.5, e);
    s->std = (float)cfg_get_float(cfg, "input.std", 0.5, e);
    s->crop_margin = (float)cfg_get_float(cfg, "input.crop_margin", 0.1, e);
    s->crop_min = (int)cfg_get_int(cfg, "input.crop_min", 16, e);
    s->multilabel_clahe = cfg_get_bool(cfg, "multilabel.clahe", 1, e);
    s->clahe = clahe_default();
    s->clahe.clip_limit = (float)cfg_get_float(cfg, "multilabel.clahe_clip", 2.0, e);
    s->clahe.tiles_x = s->clahe.tiles_y = (int)cfg_get_int(cfg, "multilabel.clahe_tiles", 8, e);
    s->threshold = (float)cfg_get_float(cfg, "multilabel.threshold", 0.5, e);
    s->knn_k = (int)cfg_get_int(cfg, "knn.k", 20, e);
    s->knn_temperature = (float)cfg_get_float(cfg, "knn.temperature", 0.07, e);
    double k[BENCH_MAX_TOPK];
    size_t nk = cfg_get_floats(cfg, "retrieval.topk", k, BENCH_MAX_TOPK, e);
    s->retrieval_mean = (float)cfg_get_float(cfg, "retrieval.mean", 0.3089, e);
    s->retrieval_std = (float)cfg_get_float(cfg, "retrieval.std", 0.2505, e);
    s->boot_n = (int)cfg_get_int(cfg, "bootstrap.n", 1000, e);
    s->boot_seed = (uint64_t)cfg_get_int(cfg, "bootstrap.seed", 0, e);
    s->boot_level = cfg_get_float(cfg, "bootstrap.level", 0.95, e);
    s->seed = (uint64_t)cfg_get_int(cfg, "seed", 0, e);
    s->seg.lr = cfg_get_float(cfg, "segmentation.lr", 1e-3, e);
    s->seg.batch = (int)cfg_get_int(cfg, "segmentation.batch", 8, e);
    s->seg.steps = cfg_get_int(cfg, "segmentation.steps", 4000, e);
    s->seg.width = (float)cfg_get_float(cfg, "segmentation.width", 1.0, e);
    s->det.lr = cfg_get_float(cfg, "detection.lr", 1e-3, e);
    s->det.batch = (int)cfg_get_int(cfg, "detection.batch", 8, e);
    s->det.steps = cfg_get_int(cfg, "detection.steps", 4000, e);
    s->det.fpn_ch = (int)cfg_get_int(cfg, "detection.fpn_channels", 256, e);
    s->det.rep_size = (int)cfg_get_int(cfg, "detection.representation", 1024, e);
    s->det.train_fpn = cfg_get_bool(cfg, "detection.train_fpn", 0, e);
    double as[DET_MAX_ANCHOR];
    size_t nas = cfg_get_floats(cfg, "detection.anchor_sizes", as, DET_MAX_ANCHOR, e);
    s->det.n_sizes = (int)nas;
    for (size_t i = 0; i < nas; i++) s->det.sizes[i] = (float)as[i];
    s->det.box_batch = (int)cfg_get_int(cfg, "detection.box_batch", 512, e);
    s->det.rpn_batch = (int)cfg_get_int(cfg, "detection.rpn_batch", 256, e);
    s->det.proposals = (int)cfg_get_int(cfg, "detection.proposals", 2000, e);
    s->vqa.lr = cfg_get_float(cfg, "vqa.lr", 1e-4, e);
    s->vqa.batch = (int)cfg_get_int(cfg, "vqa.batch", 16, e);
    s->vqa.steps = cfg_get_int(cfg, "vqa.steps", 4000, e);
    s->vqa.dim = (int)cfg_get_int(cfg, "vqa.dim", 768, e);
    s->vqa.depth = (int)cfg_get_int(cfg, "vqa.depth", 12, e);
    s->vqa.heads = (int)cfg_get_int(cfg, "vqa.heads", 12, e);
    s->vqa.max_words = (int)cfg_get_int(cfg, "vqa.max_words", 40, e);
    s->sheet_n = (int)cfg_get_int(cfg, "report.sheet_images", 8, e);
    if (e->msg[0]) return 1;
    if (head_opts(cfg, "linear", &s->linear, e) || head_opts(cfg, "multilabel", &s->multilabel, e)) return 1;
    s->n_topk = (int)nk;
    for (size_t i = 0; i < nk; i++) {
        s->topk[i] = (int)k[i];
        if (k[i] < 1 || k[i] != (double)s->topk[i])
            return err_set(e, "%s: retrieval.topk: %g is not a positive integer", origin(cfg, "retrieval.topk"), k[i]);
    }
#define CHECK(cond, key, what)                                                                  \
    if (!(cond)) return err_set(e, "%s: %s: %s", origin(cfg, key), key, what)
    CHECK(s->size >= 8, "input.size", "must be at least 8");
    CHECK(s->batch >= 1, "input.batch", "must be positive");
    CHECK(s->std > 0, "input.std", "must be positive");
    CHECK(s->crop_margin >= 0, "input.crop_margin", "must be >= 0");
    CHECK(s->crop_min >= 1, "input.crop_min", "must be positive");
    CHECK(s->clahe.clip_limit > 0 && s->clahe.tiles_x >= 1, "multilabel.clahe_clip", "CLAHE clip and tiles must be positive");
    CHECK(s->knn_k >= 1, "knn.k", "must be positive");
    CHECK(s->knn_temperature > 0, "knn.temperature", "must be positive");
    CHECK(s->n_topk >= 1, "retrieval.topk", "needs at least one K");
    CHECK(s->retrieval_std > 0, "retrieval.std", "must be positive");
    CHECK(s->boot_n >= 0, "bootstrap.n", "must be >= 0");
    CHECK(s->boot_level > 0 && s->boot_level < 1, "bootstrap.level", "must be in (0, 1)");
    CHECK(s->seg.lr > 0 && s->seg.batch >= 1 && s->seg.steps >= 1 && s->seg.width > 0, "segmentation.lr",
          "segmentation lr, batch, steps and width must be positive");
    CHECK(s->det.lr > 0 && s->det.batch >= 1 && s->det.steps >= 1 && s->det.fpn_ch >= 1 && s->det.rep_size >= 1 &&
          s->det.box_batch >= 1 && s->det.rpn_batch >= 1 && s->det.proposals >= 1, "detection.lr",
          "detection lr, batch, steps, widths and sampler sizes must be positive");
    CHECK(s->det.n_sizes >= 1, "detection.anchor_sizes", "needs at least one size");
    for (int i = 0; i < s->det.n_sizes; i++) CHECK(s->det.sizes[i] > 0, "detection.anchor_sizes", "sizes must be positive");
    CHECK(s->vqa.lr > 0 && s->vqa.batch >= 1 && s->vqa.steps >= 1 && s->vqa.max_words >= 1, "vqa.lr",
          "vqa lr, batch, steps and max_words must be positive");
    CHECK(s->vqa.dim >= 1 && s->vqa.heads >= 1 && s->vqa.dim % s->vqa.heads == 0, "vqa.dim", "must be a positive multiple of vqa.heads");
    CHECK(s->vqa.depth >= 1 && s->vqa.depth <= FUSION_MAX_DEPTH, "vqa.depth", "must be in 1..12");
    CHECK(s->sheet_n >= 0, "report.sheet_images", "must be >= 0");
#undef CHECK
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* tasks */

static void copy_str(char *dst, size_t n, const char *src) {
    str_copy(dst, n, src ? src : "");
}

/* the metrics a protocol produces (for checking `metric`) */
static int metric_known(const BenchTask *t, const BenchSettings *s, const char *m) {
    static const char *cls[] = {"auc", "bacc", "acc", "f1", NULL};
    static const char *ml[] = {"auc", "f1", "acc", NULL};
    static const char *seg[] = {"dice", "iou", NULL};
    static const char *det[] = {"mean_iou", "map50", "froc_0.5", "froc_1", "froc_2", NULL};
    static const char *vqa[] = {"acc", "bacc", "f1", "auc", NULL};
    for (int i = 0; i < t->n_protocols; i++) {
        switch (t->protocols[i]) {
        case PROTO_LINEAR:
            if (in_list(m, cls)) return 1;
            break;
        case PROTO_KNN:
            if (!strncmp(m, "knn_", 4) && in_list(m + 4, cls)) return 1;
            break;
        case PROTO_MULTILABEL:
            if (in_list(m, ml)) return 1;
            break;
        case PROTO_RETRIEVAL:
            if (!strcmp(m, "mapr")) return 1;
            for (int k = 0; k < s->n_topk; k++) {
                char b[16];
                snprintf(b, sizeof b, "top%d", s->topk[k]);
                if (!strcmp(m, b)) return 1;
            }
            break;
        case PROTO_UNET:
            if (in_list(m, seg)) return 1;
            break;
        case PROTO_FASTER_RCNN:
            if (in_list(m, det)) return 1;
            break;
        case PROTO_VILT:
            if (in_list(m, vqa)) return 1;
            break;
        }
    }
    return 0;
}

/* "<file>: tasks.<id>.<field>: <message>", the file being the one that set the field (or the task) */
__attribute__((format(printf, 5, 6)))
static int tfail(Err *e, const Config *cfg, const char *id, const char *field, const char *fmt, ...) {
    char key[256], msg[400];
    snprintf(key, sizeof key, "tasks.%s.%s", id, field);
    const char *where = NULL;
    for (size_t i = 0; i < cfg->n && !where; i++)
        if (!strcmp(cfg->e[i].key, key) || (!strncmp(cfg->e[i].key, key, 7 + strlen(id)) && cfg->e[i].key[6 + strlen(id)] == '.'))
            where = origin(cfg, cfg->e[i].key);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(e, "%s: %s: %s", where ? where : cfg->name, key, msg);
}

static int parse_task(const Config *cfg, const char *id, const BenchSettings *s, BenchTask *t, Err *e) {
    memset(t, 0, sizeof *t);
    copy_str(t->id, sizeof t->id, id);
    char k[512];
#define KEY(f) (snprintf(k, sizeof k, "tasks.%s.%s", id, f), k)
    if (strlen(id) >= BENCH_NAME_LEN) return err_set(e, "%s: task id '%s' is too long", origin(cfg, KEY("dataset")), id);
    copy_str(t->title, sizeof t->title, cfg_get_str(cfg, KEY("title"), id));
    t->paper = (int)cfg_get_int(cfg, KEY("paper"), 0, e);
    t->multilabel = cfg_get_bool(cfg, KEY("multilabel"), 0, e);
    t->clahe = cfg_has(cfg, KEY("clahe")) ? cfg_get_bool(cfg, KEY("clahe"), 0, e) : -1;
    copy_str(t->note, sizeof t->note, cfg_get_str(cfg, KEY("note"), ""));
    if (e->msg[0]) return 1;
    /* datasets */
    size_t nd = cfg_list_len(cfg, KEY("dataset"));
    if (nd == 0) return tfail(e, cfg, id, "dataset", "missing (the dataset key or prepared file name)");
    if (nd > BENCH_MAX_DATASETS) return tfail(e, cfg, id, "dataset", "at most %d datasets", BENCH_MAX_DATASETS);
    t->n_datasets = (int)nd;
    for (size_t i = 0; i < nd; i++) {
        const char *ds = cfg_list_item(cfg, KEY("dataset"), i);
        copy_str(t->dataset[i], sizeof t->dataset[i], ds);
        char dk[256];
        snprintf(dk, sizeof dk, "datasets.%s.file", ds);
        const char *file = cfg_get_str(cfg, dk, NULL);
        if (file) copy_str(t->file[i], sizeof t->file[i], file);
        else if (strlen(ds) > 3 && !strcmp(ds + strlen(ds) - 3, ".h5")) copy_str(t->file[i], sizeof t->file[i], ds);
        else snprintf(t->file[i], sizeof t->file[i], "%s.h5", ds);
        snprintf(dk, sizeof dk, "datasets.%s.prepare", ds);
        copy_str(t->prepare[i], sizeof t->prepare[i], cfg_get_str(cfg, dk, ""));
    }
    /* category, protocols */
    const char *cat = cfg_get_str(cfg, KEY("category"), NULL);
    if (!cat) return tfail(e, cfg, id, "category", "missing (classification, segmentation, detection, retrieval or vqa)");
    if ((t->category = bench_category_parse(cat)) < 0)
        return tfail(e, cfg, id, "category", "'%s' is not classification, segmentation, detection, retrieval or vqa", cat);
    size_t np = cfg_list_len(cfg, KEY("protocol"));
    if (np > BENCH_MAX_PROTOCOLS) return tfail(e, cfg, id, "protocol", "at most %d protocols", BENCH_MAX_PROTOCOLS);
    for (size_t i = 0; i < np; i++) {
        const char *p = cfg_list_item(cfg, KEY("protocol"), i);
        int pi = bench_protocol_parse(p);
        if (pi < 0) {
            const char *sgg = closest(p, PROTOCOL_NAMES);
            return tfail(e, cfg, id, "protocol", "unknown protocol '%s'%s%s%s", p, sgg ? " (did you mean '" : "", sgg ? sgg : "", sgg ? "'?)" : "");
        }
        t->protocols[t->n_protocols++] = pi;
    }
    if (t->n_protocols == 0) {   /* defaults by category */
        switch (t->category) {
        case BENCH_CLASSIFICATION:
            if (t->multilabel) t->protocols[t->n_protocols++] = PROTO_MULTILABEL;
            else {
                t->protocols[t->n_protocols++] = PROTO_LINEAR;
                t->protocols[t->n_protocols++] = PROTO_KNN;
            }
            break;
        case BENCH_SEGMENTATION: t->protocols[t->n_protocols++] = PROTO_UNET; break;
        case BENCH_DETECTION: t->protocols[t->n_protocols++] = PROTO_FASTER_RCNN; break;
        case BENCH_RETRIEVAL: t->protocols[t->n_protocols++] = PROTO_RETRIEVAL; break;
        case BENCH_VQA: t->protocols[t->n_protocols++] = PROTO_VILT; break;
        }
    }
    static const int want_cat[BENCH_N_PROTOCOLS] = {BENCH_CLASSIFICATION, BENCH_CLASSIFICATION, BENCH_CLASSIFICATION,
                                                    BENCH_RETRIEVAL, BENCH_SEGMENTATION, BENCH_DETECTION, BENCH_VQA};
    for (int i = 0; i < t->n_protocols; i++) {
        int p = t->protocols[i];
        if (want_cat[p] != t->category)
            return tfail(e, cfg, id, "protocol", "protocol '%s' belongs to %s tasks, not %s", bench_protocol_name(p), bench_category_name(want_cat[p]), cat);
        if ((p == PROTO_LINEAR || p == PROTO_KNN || p == PROTO_RETRIEVAL) && t->multilabel)
            return tfail(e, cfg, id, "protocol", "protocol '%s' needs a single-label task (multilabel: true uses 'multilabel')", bench_protocol_name(p));
        if (p == PROTO_MULTILABEL && !t->multilabel)
            return tfail(e, cfg, id, "protocol", "protocol 'multilabel' needs multilabel: true");
    }
    /* unit, label */
    const char *unit = cfg_get_str(cfg, KEY("unit"), "image");
    if (!strcmp(unit, "image")) t->unit = BENCH_UNIT_IMAGE;
    else if (!strcmp(unit, "crop")) t->unit = BENCH_UNIT_CROP;
    else return tfail(e, cfg, id, "unit", "'%s' is not image or crop", unit);
    const char *label = cfg_get_str(cfg, KEY("label"),
                                    t->category == BENCH_SEGMENTATION ? "mask" : t->category == BENCH_DETECTION ? "boxes" : NULL);
    if (!label) return tfail(e, cfg, id, "label", "missing (a label column of the prepared file, 'findings' or 'box')");
    copy_str(t->label, sizeof t->label, label);
    if (!strcmp(label, "box") && t->unit != BENCH_UNIT_CROP)
        return tfail(e, cfg, id, "label", "'box' (a lesion's finding class) needs unit: crop");
    /* classes and their sources */
    size_t nc = cfg_list_len(cfg, KEY("classes"));
    size_t min_c = t->multilabel || t->category == BENCH_SEGMENTATION || t->category == BENCH_DETECTION ? 1 : 2;
    if (nc < min_c) return tfail(e, cfg, id, "classes", "needs at least %zu classes", min_c);
    if (nc > BENCH_MAX_CLASSES) return tfail(e, cfg, id, "classes", "at most %d classes", BENCH_MAX_CLASSES);
    size_t ns = cfg_list_len(cfg, KEY("source"));
    if (ns && ns != nc)
        return tfail(e, cfg, id, "source", "%zu entries for %zu classes (one '|'-separated list of prepared classes per class)", ns, nc);
    t->n_classes = (int)nc;
    for (size_t i = 0; i < nc; i++) {
        const char *c = cfg_list_item(cfg, KEY("classes"), i);
        if (strlen(c) >= BENCH_NAME_LEN) return tfail(e, cfg, id, "classes", "class name '%s' is too long", c);
        copy_str(t->classes[i], sizeof t->classes[i], c);
        const char *src = ns ? cfg_list_item(cfg, KEY("source"), i) : c;
        if (strlen(src) >= sizeof t->source[i]) return tfail(e, cfg, id, "source", "entry %zu is too long", i);
        copy_str(t->source[i], sizeof t->source[i], src);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(t->classes[j], c)) return tfail(e, cfg, id, "classes", "class '%s' is listed twice", c);
    }
    size_t ndrop = cfg_list_len(cfg, KEY("drop"));
    for (size_t i = 0; i < ndrop; i++) {
        size_t l = strlen(t->drop);
        snprintf(t->drop + l, sizeof t->drop - l, "%s%s", i ? "|" : "", cfg_list_item(cfg, KEY("drop"), i));
    }
    size_t nsz = cfg_list_len(cfg, KEY("sizes"));
    if (nsz && nsz != 3) return tfail(e, cfg, id, "sizes", "expected [train, eval, test]");
    for (size_t i = 0; i < nsz; i++) {
        char *end;
        const char *v = cfg_list_item(cfg, KEY("sizes"), i);
        t->sizes[i] = strtol(v, &end, 10);
        if (*end || t->sizes[i] < 0) return tfail(e, cfg, id, "sizes", "'%s' is not a count", v);
    }
    /* primary metric */
    const char *metric = cfg_get_str(cfg, KEY("metric"), NULL);
    if (!metric) {
        switch (t->protocols[0]) {
        case PROTO_RETRIEVAL: {
            static char top[16];
            snprintf(top, sizeof top, "top%d", s->topk[0]);
            metric = top;
            break;
        }
        case PROTO_UNET: metric = "dice"; break;
        case PROTO_FASTER_RCNN: metric = "mean_iou"; break;
        case PROTO_VILT: metric = "acc"; break;
        default: metric = "auc";
        }
    }
    copy_str(t->metric, sizeof t->metric, metric);
    if (!metric_known(t, s, metric))
        return tfail(e, cfg, id, "metric", "'%s' is not a metric of the task's protocols (e.g. auc, bacc, acc, f1, knn_auc, top1, mapr, "
                    "dice, mean_iou)", metric);
#undef KEY
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* loading */

int bench_suite_path(const char *suite, char *out, size_t n, Err *e) {
    struct stat st;
    if (strchr(suite, '/') || strstr(suite, ".yaml") || strstr(suite, ".yml")) {
        if (stat(suite, &st) != 0) return err_set(e, "%s: no such suite file", suite);
        snprintf(out, n, "%s", suite);
        return 0;
    }
    snprintf(out, n, "configs/bench/%s.yaml", suite);
    if (stat(out, &st) == 0) return 0;
    char exe[PATH_MAX];
    ssize_t l = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (l > 0) {
        exe[l] = 0;
        char *sl = strrchr(exe, '/');
        if (sl) {
            *sl = 0;
            snprintf(out, n, "%s/../configs/bench/%s.yaml", exe, suite);
            if (stat(out, &st) == 0) return 0;
        }
    }
    return err_set(e, "no suite '%s' (configs/bench/%s.yaml not found; give a path to a YAML file)", suite, suite);
}

int bench_registry_load(BenchRegistry *r, const char *suite, const char *const *extra, int n_extra,
                        const char *const *overrides, int n_overrides, Err *e) {
    memset(r, 0, sizeof *r);
    cfg_init(&r->cfg);
    if (bench_suite_path(suite, r->path, sizeof r->path, e)) return 1;
    for (size_t i = 0; i < BENCH_N_SETTINGS_KEYS; i++)
        if (cfg_set(&r->cfg, BENCH_SETTINGS_KEYS[i].key, BENCH_SETTINGS_KEYS[i].def, e)) goto fail;
    if (cfg_load_file(&r->cfg, r->path, e)) goto fail;
    for (int i = 0; i < n_extra; i++)
        if (cfg_load_file(&r->cfg, extra[i], e)) goto fail;
    for (int i = 0; i < n_overrides; i++)
        if (cfg_override(&r->cfg, overrides[i], 0, e)) goto fail;
    if (check_keys(&r->cfg, e) || settings_from(&r->cfg, &r->set, e)) goto fail;
    /* suite name: suite.name, else the file's stem */
    const char *nm = cfg_get_str(&r->cfg, "suite.name", "");
    if (nm[0]) copy_str(r->name, sizeof r->name, nm);
    else {
        const char *b = strrchr(r->path, '/');
        copy_str(r->name, sizeof r->name, b ? b + 1 : r->path);
        char *dot = strrchr(r->name, '.');
        if (dot) *dot = 0;
    }
    copy_str(r->description, sizeof r->description, cfg_get_str(&r->cfg, "suite.description", ""));
    /* task ids in the order they first appear */
    int cap = 16;
    r->tasks = calloc((size_t)cap, sizeof(BenchTask));
    for (size_t i = 0; i < r->cfg.n; i++) {
        const char *key = r->cfg.e[i].key;
        if (strncmp(key, "tasks.", 6)) continue;
        char id[256];
        copy_str(id, sizeof id, key + 6);
        char *dot = strchr(id, '.');
        if (dot) *dot = 0;
        if (bench_find_task(r, id) >= 0) continue;
        if (r->n_tasks == cap) {
            cap *= 2;
            r->tasks = realloc(r->tasks, (size_t)cap * sizeof(BenchTask));
        }
        if (parse_task(&r->cfg, id, &r->set, &r->tasks[r->n_tasks], e)) goto fail;
        r->n_tasks++;
    }
    return 0;
fail:
    bench_registry_free(r);
    return 1;
}

void bench_registry_free(BenchRegistry *r) {
    cfg_free(&r->cfg);
    free(r->tasks);
    r->tasks = NULL;
    r->n_tasks = 0;
}

int bench_find_task(const BenchRegistry *r, const char *id) {
    for (int i = 0; i < r->n_tasks; i++)
        if (!strcmp(r->tasks[i].id, id)) return i;
    return -1;
}

int bench_task_data_present(const BenchTask *t, const char *data_root, char *missing, size_t n) {
    struct stat st;
    for (int i = 0; i < t->n_datasets; i++) {
        char p[1024];
        if (t->file[i][0] == '/') snprintf(p, sizeof p, "%s", t->file[i]);
        else snprintf(p, sizeof p, "%s/%s", data_root && *data_root ? data_root : ".", t->file[i]);
        if (stat(p, &st) != 0 || !S_ISREG(st.st_mode)) {
            if (missing) snprintf(missing, n, "%s", p);
            return 0;
        }
    }
    return 1;
}

int bench_task_selected(const BenchTask *t, const char *const *patterns, int n) {
    if (n == 0) return 1;
    for (int i = 0; i < n; i++)
        if (!fnmatch(patterns[i], t->id, 0) || !fnmatch(patterns[i], bench_category_name(t->category), 0)) return 1;
    return 0;
}

void bench_list(FILE *out, const BenchRegistry *r, const char *data_root) {
    int present = 0;
    for (int i = 0; i < r->n_tasks; i++) present += bench_task_data_present(&r->tasks[i], data_root, NULL, 0);
    fprintf(out, "%s: %d tasks, %d with their data under %s", r->name, r->n_tasks, present,
            data_root && *data_root ? data_root : ".");
    if (r->description[0]) fprintf(out, " — %s", r->description);
    fprintf(out, "\n%-4s %-32s %-15s %-6s %-18s %-26s %s\n", "#", "task", "category", "unit", "protocols", "dataset", "data");
    for (int i = 0; i < r->n_tasks; i++) {
        const BenchTask *t = &r->tasks[i];
        char protos[64] = "", ds[128] = "";
        int impl = 0;
        for (int p = 0; p < t->n_protocols; p++) {
            size_t l = strlen(protos);
            snprintf(protos + l, sizeof protos - l, "%s%s", p ? "," : "", bench_protocol_name(t->protocols[p]));
            impl |= bench_protocol_implemented(t->protocols[p]);
        }
        for (int d = 0; d < t->n_datasets; d++) {
            size_t l = strlen(ds);
            snprintf(ds + l, sizeof ds - l, "%s%s", d ? "+" : "", t->file[d]);
        }
        char num[8] = "-";
        if (t->paper) snprintf(num, sizeof num, "%d", t->paper);
        const char *cat = !t->multilabel ? bench_category_name(t->category)
                          : t->category == BENCH_CLASSIFICATION ? "multi-label" : "vqa (multi)";
        fprintf(out, "%-4s %-32s %-15s %-6s %-18s %-26s %s%s\n", num, t->id, cat,
                t->unit == BENCH_UNIT_CROP ? "crop" : "image", protos, ds,
                bench_task_data_present(t, data_root, NULL, 0) ? "present" : "missing",
                impl ? "" : " (protocol: part 2)");
    }
    /* each missing file once, with how to make it */
    int header = 0;
    for (int i = 0; i < r->n_tasks; i++) {
        const BenchTask *t = &r->tasks[i];
        for (int d = 0; d < t->n_datasets; d++) {
            int seen = 0;
            for (int j = 0; j < i && !seen; j++)
                for (int dd = 0; dd < r->tasks[j].n_datasets; dd++) seen |= !strcmp(r->tasks[j].file[dd], t->file[d]);
            for (int dd = 0; dd < d; dd++) seen |= !strcmp(t->file[dd], t->file[d]);
            if (seen) continue;
            BenchTask one = *t;
            one.n_datasets = 1;
            memcpy(one.file[0], t->file[d], sizeof one.file[0]);
            if (bench_task_data_present(&one, data_root, NULL, 0)) continue;
            if (!header) fprintf(out, "\nmissing datasets (prepare them under the data root):\n");
            header = 1;
            fprintf(out, "  %-26s %s\n", t->file[d], t->prepare[d][0] ? t->prepare[d] : "(no hint in the suite)");
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* class maps */

int bench_class_map(const BenchTask *t, const char *file, const char (*names)[PREP_NAME_LEN], int n, int *map,
                    uint32_t *mask, int *none_class, Err *e) {
    if (map)
        for (int j = 0; j < n; j++) map[j] = -1;
    if (mask) memset(mask, 0, (size_t)n * sizeof(uint32_t));
    if (none_class) *none_class = -1;
    for (int k = 0; k < t->n_classes; k++) {
        char buf[sizeof t->source[k]];
        copy_str(buf, sizeof buf, t->source[k]);
        int found = 0;
        for (char *save = NULL, *tok = strtok_r(buf, "|", &save); tok; tok = strtok_r(NULL, "|", &save)) {
            while (*tok == ' ') tok++;
            size_t l = strlen(tok);
            while (l && tok[l - 1] == ' ') tok[--l] = 0;
            if (!strcmp(tok, "<none>")) {
                if (!t->multilabel || !none_class)
                    return err_set(e, "task %s: class '%s': '<none>' only applies to multi-label findings", t->id, t->classes[k]);
                *none_class = k;
                found = 1;
                continue;
            }
            for (int j = 0; j < n; j++) {
                if (strcasecmp(names[j], tok)) continue;
                found = 1;
                if (t->multilabel) {
                    if (mask) mask[j] |= 1u << k;
                } else if (map) {
                    if (map[j] >= 0 && map[j] != k)
                        return err_set(e, "task %s: %s class '%s' is mapped to both '%s' and '%s'", t->id, file, names[j],
                                       t->classes[map[j]], t->classes[k]);
                    map[j] = k;
                }
            }
        }
        if (!found) {
            char have[512] = "";
            for (int j = 0; j < n; j++) {
                size_t l = strlen(have);
                snprintf(have + l, sizeof have - l, "%s%s", j ? ", " : "", names[j]);
            }
            return err_set(e, "task %s: class '%s' (source '%s') matches none of the %s classes of %s: %s", t->id,
                           t->classes[k], t->source[k], t->label, file, have);
        }
    }
    return 0;
}
