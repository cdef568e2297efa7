/* run.c — one benchmark run: every selected task for every model, features from the cache or the
 * backbone, then each protocol's head and test metrics with bootstrap CIs.  A task that cannot run
 * (dataset missing, protocol of part 2) gets a status instead of failing the run. */
#include "bench/bench.h"
#include "engine/train.h"
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *bench_status_name(int s) {
    static const char *names[] = {"ok", "skipped", "not implemented", "failed"};
    return s >= 0 && s <= BENCH_FAILED ? names[s] : "?";
}

__attribute__((format(printf, 3, 4))) static void sfmt(char *dst, size_t n, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst, n, fmt, ap);
    va_end(ap);
}

static uint64_t fnv1a(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

const BenchMetric *bench_result_metric(const BenchResult *r, const char *name) {
    for (int i = 0; i < r->metrics.n; i++)
        if (!strcmp(r->metrics.m[i].name, name)) return &r->metrics.m[i];
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* one task's items, labels and features, pooled over its prepared files */

typedef struct TaskTable {
    size_t n, d;
    float *x;          // (n, d)
    uint8_t *split;    // (n)
    int32_t *y;        // (n) single label
    uint8_t *Y;        // (n, C) multi-label
    int precut;
    double feat_seconds;
    int n_cached, n_files;
} TaskTable;

static void table_free(TaskTable *t) {
    free(t->x);
    free(t->split);
    free(t->y);
    free(t->Y);
    memset(t, 0, sizeof *t);
}

static const char *unit_name(int unit) { return unit == BENCH_UNIT_CROP ? "crop" : "image"; }

/* Labels of the items of one file: keep[i] = 1 when item i belongs to the task. */
static int item_labels(const BenchTask *t, const Prepared *p, const BenchItems *it, int32_t *y, uint8_t *Y, uint8_t *keep,
                       Err *e) {
    const int C = t->n_classes;
    int map[PREP_MAX_CLASSES > PREP_MAX_FINDINGS ? PREP_MAX_CLASSES : PREP_MAX_FINDINGS];
    uint32_t mask[PREP_MAX_CLASSES > PREP_MAX_FINDINGS ? PREP_MAX_CLASSES : PREP_MAX_FINDINGS];
    int none = -1;
    int is_box = !strcmp(t->label, "box"), is_find = !strcmp(t->label, "findings");
    if (is_box || is_find) {
        if (p->n_findings == 0) return err_set(e, "%s: no finding classes (/findings) for label '%s'", p->path, t->label);
        if (is_box && it->precut) return err_set(e, "%s: label 'box' needs lesion boxes, and the file has none", p->path);
        if (is_find && !t->multilabel)
            return err_set(e, "task %s: label 'findings' is multi-label (set multilabel: true, or use label: box)", t->id);
        if (bench_class_map(t, p->path, p->finding_names, p->n_findings, map, mask, &none, e)) return 1;
        for (size_t i = 0; i < it->n; i++) {
            int64_t b = it->box[i];
            int32_t bl = b >= 0 ? p->boxes[b].label : -1;
            if (is_box) {
                y[i] = bl >= 0 && bl < p->n_findings ? map[bl] : -1;
                keep[i] = y[i] >= 0;
                continue;
            }
            uint32_t bits = 0;
            int any = 0;
            if (b >= 0) {   /* a crop: its box's class */
                if (bl >= 0 && bl < p->n_findings) bits = mask[bl], any = 1;
            } else {
                const uint8_t *f = p->findings + (size_t)it->sample[i] * p->n_findings;
                for (int j = 0; j < p->n_findings; j++)
                    if (f[j]) bits |= mask[j], any = 1;
            }
            if (!any && none >= 0) bits |= 1u << none;
            for (int k = 0; k < C; k++) Y[i * (size_t)C + k] = (bits >> k) & 1u;
            keep[i] = b < 0 || bl >= 0;   /* a crop without a finding class has no target */
        }
        return 0;
    }
    int col = prep_label_col(p, t->label);
    if (col < 0) {
        char have[512] = "";
        for (int j = 0; j < p->n_labels; j++) {
            size_t l = strlen(have);
            snprintf(have + l, sizeof have - l, "%s%s", j ? ", " : "", p->label_names[j]);
        }
        return err_set(e, "%s: no label column '%s' (the file has: %s%s)", p->path, t->label, have,
                       p->n_findings ? "; and findings" : "");
    }
    if (bench_class_map(t, p->path, p->class_names[col], p->n_classes[col], map, mask, &none, e)) return 1;
    for (size_t i = 0; i < it->n; i++) {
        int32_t v = bench_item_label(p, it, i, col);
        if (v < 0 || v >= p->n_classes[col]) {
            keep[i] = 0;
            if (!t->multilabel) y[i] = -1;
            continue;
        }
        if (t->multilabel) {
            for (int k = 0; k < C; k++) Y[i * (size_t)C + k] = (mask[v] >> k) & 1u;
            keep[i] = 1;
        } else {
            y[i] = map[v];
            keep[i] = y[i] >= 0;
        }
    }
    return 0;
}

static int build_table(Ctx *c, const BenchRun *run, const BenchModel *m, const BenchTask *t, const char *out_dir,
                       int use_clahe, int retrieval, int no_cache, int quiet, TaskTable *tt, Err *e) {
    const BenchSettings *s = &run->reg.set;
    const int C = t->n_classes;
    memset(tt, 0, sizeof *tt);
    tt->d = (size_t)m->feat_dim;
    for (int k = 0; k < t->n_datasets; k++) {
        char path[1024];
        if (t->file[k][0] == '/') snprintf(path, sizeof path, "%s", t->file[k]);
        else snprintf(path, sizeof path, "%s/%s", run->data_root[0] ? run->data_root : ".", t->file[k]);
        Prepared p;
        if (prep_open(&p, path, e)) return 1;
        BenchItems it;
        if (bench_items(&p, t->unit, &it, e)) {
            prep_close(&p);
            return 1;
        }
        tt->precut |= it.precut;
        int32_t *y = malloc(it.n * sizeof(int32_t));
        uint8_t *Y = calloc(it.n * (size_t)C + 1, 1), *keep = calloc(it.n, 1);
        int rc = item_labels(t, &p, &it, y, Y, keep, e);
        float *feat = NULL;
        if (!rc) {
            BenchPreproc pp = {.size = m->size, .in_chans = m->in_chans, .mean = retrieval ? s->retrieval_mean : s->mean,
                               .std = retrieval ? s->retrieval_std : s->std, .clahe = use_clahe, .clahe_cfg = s->clahe,
                               .crop_margin = s->crop_margin, .crop_min = s->crop_min};
            char dir[1024], cache[1400], tag[256];
            snprintf(dir, sizeof dir, "%s/features/%s", out_dir, m->name);
            sfmt(tag, sizeof tag, "mean=%g std=%g clahe=%d clip=%g tiles=%d margin=%g min=%d", pp.mean, pp.std, pp.clahe,
                 pp.clahe_cfg.clip_limit, pp.clahe_cfg.tiles_x, pp.crop_margin, pp.crop_min);
            sfmt(cache, sizeof cache, "%s/%s.%s.%d%s.%08llx.h5", dir, t->dataset[k], it.precut ? "precut" : unit_name(t->unit),
                 m->size, use_clahe ? ".clahe" : "", (unsigned long long)(fnv1a(tag) & 0xffffffffu));
            int cached = 0;
            double t0 = wall_seconds();
            rc = (!no_cache && make_dirs(dir, e)) ||
                 bench_features(c, m, &p, &it, &pp, s->batch, no_cache ? NULL : cache, &feat, &cached, quiet, e);
            tt->feat_seconds += wall_seconds() - t0;
            tt->n_cached += cached;
            tt->n_files++;
        }
        if (!rc) {   /* append the task's items */
            size_t add = 0;
            for (size_t i = 0; i < it.n; i++) add += keep[i];
            size_t n0 = tt->n, D = tt->d;
            tt->x = realloc(tt->x, (n0 + add) * D * sizeof(float) + 1);
            tt->split = realloc(tt->split, n0 + add + 1);
            tt->y = realloc(tt->y, (n0 + add + 1) * sizeof(int32_t));
            tt->Y = realloc(tt->Y, (n0 + add) * (size_t)C + 1);
            size_t j = n0;
            for (size_t i = 0; i < it.n; i++) {
                if (!keep[i]) continue;
                memcpy(tt->x + j * D, feat + i * D, D * sizeof(float));
                tt->split[j] = it.split[i];
                tt->y[j] = t->multilabel ? 0 : y[i];
                memcpy(tt->Y + j * (size_t)C, Y + i * (size_t)C, (size_t)C);
                j++;
            }
            tt->n = j;
        }
        free(feat);
        free(y);
        free(Y);
        free(keep);
        bench_items_free(&it);
        prep_close(&p);
        if (rc) return 1;
    }
    if (tt->n == 0) return err_set(e, "no items with a label of the task (check label '%s' and the class map)", t->label);
    return 0;
}

/* test rows' labels in order */
static void test_targets(const TaskTable *tt, int C, int32_t *y, uint8_t *Y) {
    size_t k = 0;
    for (size_t i = 0; i < tt->n; i++) {
        if (tt->split[i] != PREP_SPLIT_TEST) continue;
        if (y) y[k] = tt->y[i];
        if (Y) memcpy(Y + k * (size_t)C, tt->Y + i * (size_t)C, (size_t)C);
        k++;
    }
}

static void append(char *dst, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void append(char *dst, size_t n, const char *fmt, ...) {
    size_t l = strlen(dst);
    if (l + 1 >= n) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst + l, n - l, fmt, ap);
    va_end(ap);
}

static void run_task(Ctx *c, const BenchRun *run, const BenchModel *m, const BenchTask *t, const BenchRunOpts *o,
                     BenchResult *r) {
    const BenchSettings *s = &run->reg.set;
    double t0 = wall_seconds();
    int any_impl = 0;
    char later[128] = "";
    for (int i = 0; i < t->n_protocols; i++) {
        if (bench_protocol_implemented(t->protocols[i])) any_impl = 1;
        else append(later, sizeof later, "%s%s", later[0] ? ", " : "", bench_protocol_name(t->protocols[i]));
    }
    if (!any_impl) {
        r->status = BENCH_NOT_IMPLEMENTED;
        sfmt(r->detail, sizeof r->detail, "protocol not implemented yet: %s (benchmark part 2)", later);
        return;
    }
    char missing[1024];
    if (!bench_task_data_present(t, run->data_root, missing, sizeof missing)) {
        r->status = BENCH_SKIPPED;
        const char *hint = "";
        for (int k = 0; k < t->n_datasets; k++)
            if (strstr(missing, t->file[k])) hint = t->prepare[k];
        sfmt(r->detail, sizeof r->detail, "dataset missing: %s%s%s", missing, hint[0] ? " (prepare: " : "", hint[0] ? hint : "");
        if (hint[0]) append(r->detail, sizeof r->detail, ")");
        return;
    }
    Err e = {0};
    const int C = t->n_classes;
    const uint64_t head_seed = s->seed ^ fnv1a(t->id), boot_seed = s->boot_seed ^ fnv1a(t->id);
    if (t->category == BENCH_SEGMENTATION || t->category == BENCH_DETECTION || t->category == BENCH_VQA) {
        /* part 2: the head trains on the backbone's maps, no pooled-feature table */
        BenchDenseArgs da = {.s = s, .data_root = run->data_root, .out_dir = o->out_dir, .head_seed = head_seed,
                             .boot_seed = boot_seed, .quiet = o->quiet};
        int rc = t->category == BENCH_SEGMENTATION ? bench_proto_segmentation(c, m, t, &da, r, &e)
                 : t->category == BENCH_DETECTION  ? bench_proto_detection(c, m, t, &da, r, &e)
                                                   : bench_proto_vqa(c, m, t, &da, r, &e);
        r->seconds = wall_seconds() - t0;
        if (rc) {
            r->status = BENCH_FAILED;
            sfmt(r->detail, sizeof r->detail, "%s: %s", bench_protocol_name(t->protocols[0]), e.msg);
        } else {
            r->status = BENCH_OK;
            append(r->detail, sizeof r->detail, "%.1f s", r->seconds);
        }
        return;
    }
    int retrieval_only = 1;   /* then the features use the retrieval normalisation */
    for (int i = 0; i < t->n_protocols; i++)
        if (t->protocols[i] != PROTO_RETRIEVAL && bench_protocol_implemented(t->protocols[i])) retrieval_only = 0;
    int clahe = t->clahe >= 0 ? t->clahe : (t->multilabel && s->multilabel_clahe);
    TaskTable tt;
    int rc = build_table(c, run, m, t, o->out_dir, clahe, retrieval_only, o->no_cache, o->quiet, &tt, &e);
    TaskTable tr = {0};   /* retrieval's own normalisation when the task also has heads */
    int have_tr = 0;
    if (!rc && !retrieval_only) {
        for (int i = 0; i < t->n_protocols && !rc; i++)
            if (t->protocols[i] == PROTO_RETRIEVAL && (s->retrieval_mean != s->mean || s->retrieval_std != s->std)) {
                rc = build_table(c, run, m, t, o->out_dir, clahe, 1, o->no_cache, o->quiet, &tr, &e);
                have_tr = !rc;
            }
    }
    if (rc) {
        r->status = BENCH_FAILED;
        sfmt(r->detail, sizeof r->detail, "%s", e.msg);
        table_free(&tt);
        table_free(&tr);
        r->seconds = wall_seconds() - t0;
        return;
    }
    for (size_t i = 0; i < tt.n; i++)
        if (tt.split[i] <= PREP_SPLIT_TEST) r->n_split[tt.split[i]]++;
    BenchData d = {.n = tt.n, .d = tt.d, .x = tt.x, .split = tt.split, .C = C, .y = t->multilabel ? NULL : tt.y,
                   .Y = t->multilabel ? tt.Y : NULL};
    size_t nte = r->n_split[PREP_SPLIT_TEST];
    float *score = malloc((nte * (size_t)C + 1) * sizeof(float));
    int32_t *yte = malloc((nte + 1) * sizeof(int32_t));
    uint8_t *Yte = malloc(nte * (size_t)C + 1);
    test_targets(&tt, C, yte, Yte);
    if (tt.precut) append(r->detail, sizeof r->detail, "no lesion boxes: images taken as pre-cut crops; ");
    for (int i = 0; i < t->n_protocols && !rc; i++) {
        int p = t->protocols[i];
        BenchProbeLog lg;
        switch (p) {
        case PROTO_LINEAR:
        case PROTO_MULTILABEL: {
            const BenchHeadOpts *ho = p == PROTO_LINEAR ? &s->linear : &s->multilabel;
            rc = bench_linear_probe(c, &d, ho, head_seed, score, &lg, &e);
            if (!rc && p == PROTO_LINEAR) rc = bench_eval_classification(yte, score, nte, C, s, boot_seed, "", &r->metrics, &e);
            if (!rc && p == PROTO_MULTILABEL) rc = bench_eval_multilabel(Yte, score, nte, C, s, boot_seed, "", &r->metrics, &e);
            if (!rc)
                append(r->detail, sizeof r->detail, "%s head: best at iteration %ld of %ld%s; ", bench_protocol_name(p),
                       lg.best_iter, lg.iters, lg.val_is_train ? " (no val split: selected on train)" : "");
            break;
        }
        case PROTO_KNN:
            rc = bench_knn(&d, s->knn_k, s->knn_temperature, score, &e) ||
                 bench_eval_classification(yte, score, nte, C, s, boot_seed, "knn_", &r->metrics, &e);
            break;
        case PROTO_RETRIEVAL: {
            BenchData dr = d;
            if (have_tr) dr.x = tr.x;
            rc = bench_eval_retrieval(&dr, s, boot_seed, &r->metrics, &e);
            break;
        }
        default:
            break;
        }
        if (rc) {
            r->status = BENCH_FAILED;
            sfmt(r->detail, sizeof r->detail, "%s: %s", bench_protocol_name(p), e.msg);
        }
    }
    if (!rc) {
        r->status = BENCH_OK;
        if (later[0]) append(r->detail, sizeof r->detail, "not run yet (part 2): %s; ", later);
        append(r->detail, sizeof r->detail, "features %.1f s (%d/%d cached)", tt.feat_seconds + tr.feat_seconds,
               tt.n_cached + tr.n_cached, tt.n_files + tr.n_files);
    }
    free(score);
    free(yte);
    free(Yte);
    table_free(&tt);
    table_free(&tr);
    r->seconds = wall_seconds() - t0;
}

static void progress(const BenchRun *run, const BenchResult *r, int k, int total) {
    const BenchTask *t = &run->reg.tasks[r->task];
    fprintf(stderr, "[bench] %*d/%d %-12s %-30s %-14s ", total >= 100 ? 3 : total >= 10 ? 2 : 1, k, total,
            run->model_names[r->model], t->id, bench_category_name(t->category));
    if (r->status != BENCH_OK) {
        fprintf(stderr, "%s: %s\n", bench_status_name(r->status), r->detail);
        return;
    }
    const BenchMetric *pm = bench_result_metric(r, t->metric);
    if (pm) fprintf(stderr, "%s %.3f [%.3f, %.3f]", t->metric, pm->ci.value, pm->ci.lo, pm->ci.hi);
    for (int i = 0; i < r->metrics.n; i++) {   /* the other protocols' headline numbers */
        const BenchMetric *m = &r->metrics.m[i];
        if (pm && m != pm && (!strcmp(m->name, "knn_auc") || !strcmp(m->name, "mapr") || !strcmp(m->name, "map50") ||
                                !strcmp(m->name, "iou") || !strcmp(m->name, "bacc")))
            fprintf(stderr, "  %s %.3f", m->name, m->ci.value);
    }
    fprintf(stderr, "  (n %zu/%zu/%zu, %.1f s)\n", r->n_split[0], r->n_split[1], r->n_split[2], r->seconds);
}

/* ------------------------------------------------------------------------------------------ */

int bench_run(const BenchRunOpts *o, BenchRun *run, Err *e) {
    memset(run, 0, sizeof *run);
    double t_start = wall_seconds();
    if (bench_registry_load(&run->reg, o->suite, o->task_files, o->n_task_files, o->overrides, o->n_overrides, e)) return 1;
    snprintf(run->data_root, sizeof run->data_root, "%s", o->data_root ? o->data_root : ".");
    if (o->n_models < 1) return err_set(e, "no model given (--model NAME=SPEC)");
    run->task_sel = malloc((size_t)run->reg.n_tasks * sizeof(int) + 1);
    for (int i = 0; i < run->reg.n_tasks; i++)
        if (bench_task_selected(&run->reg.tasks[i], o->only, o->n_only)) run->task_sel[run->n_sel++] = i;
    if (run->n_sel == 0) return err_set(e, "no task of %s matches the --only patterns", run->reg.path);
    for (int i = 0; i < o->n_models; i++)
        for (int j = 0; j < i; j++)
            if (!strcmp(o->models[i].name, o->models[j].name)) return err_set(e, "model name '%s' is given twice", o->models[i].name);
    run->baseline = -1;
    for (int i = 0; o->baseline && i < o->n_models; i++)
        if (!strcmp(o->models[i].name, o->baseline)) run->baseline = i;
    if (o->baseline && run->baseline < 0) return err_set(e, "--baseline %s: no --model of that name", o->baseline);
    if (make_dirs(o->out_dir, e)) return 1;
    /* every model is loaded before any task runs, so a bad spec fails at once */
    BenchModel *models = calloc((size_t)o->n_models, sizeof(BenchModel));
    run->n_models = o->n_models;
    run->model_names = calloc((size_t)o->n_models, sizeof *run->model_names);
    run->model_specs = calloc((size_t)o->n_models, sizeof *run->model_specs);
    run->model_descs = calloc((size_t)o->n_models, sizeof *run->model_descs);
    int loaded = 0, rc = 0;
    for (; loaded < o->n_models; loaded++) {
        if (bench_model_load(&models[loaded], o->models[loaded].name, o->models[loaded].spec, run->reg.set.size, e)) {
            rc = 1;
            break;
        }
        snprintf(run->model_names[loaded], BENCH_NAME_LEN, "%s", models[loaded].name);
        snprintf(run->model_specs[loaded], 512, "%s", models[loaded].spec);
        snprintf(run->model_descs[loaded], 256, "%s", models[loaded].desc);
        if (!o->quiet) fprintf(stderr, "[bench] model %s: %s\n", models[loaded].name, models[loaded].desc);
    }
    if (!rc) {
        Ctx c;
        ctx_init(&c, run->reg.set.seed);
        c.nthreads = engine_threads_init();
        run->res = calloc((size_t)run->n_models * run->n_sel, sizeof(BenchResult));
        int k = 0, total = run->n_models * run->n_sel;
        for (int mi = 0; mi < run->n_models; mi++)
            for (int ti = 0; ti < run->n_sel; ti++) {
                BenchResult *r = &run->res[(size_t)mi * run->n_sel + ti];
                r->model = mi;
                r->task = run->task_sel[ti];
                run_task(&c, run, &models[mi], &run->reg.tasks[r->task], o, r);
                if (!o->quiet) progress(run, r, ++k, total);
            }
        ctx_free(&c);
    }
    for (int i = 0; i < loaded; i++) bench_model_free(&models[i]);
    free(models);
    run->seconds = wall_seconds() - t_start;
    return rc;
}

void bench_run_free(BenchRun *run) {
    bench_registry_free(&run->reg);
    free(run->model_names);
    free(run->model_specs);
    free(run->model_descs);
    free(run->task_sel);
    for (size_t i = 0; run->res && i < (size_t)run->n_models * run->n_sel; i++) bench_metrics_free(&run->res[i].metrics);
    free(run->res);
    memset(run, 0, sizeof *run);
}
