/* report.c — what a run leaves in its folder:
 *   results.csv   model,task,category,metric,value,ci_low,ci_high (one row per test metric)
 *   status.csv    model,task,category,status,detail,n_train,n_val,n_test,seconds
 *   report.md     a table per category (primary metric with its CI, best in bold), every metric,
 *                 the paper's summary (rank per task, average rank, first places), tasks not run
 *   ranks.png     the ranks per task and the average ranks (bench/plot.c)
 *   paired.csv    with a baseline model: model,task,metric,baseline,diff,ci_low,ci_high,p_le0, every
 *                 other model's paired bootstrap difference to it (bench_paired_diff) */
#include "bench/bench.h"
#include <unistd.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int bench_ranks(const BenchRun *run, BenchRanks *rk) {
    memset(rk, 0, sizeof *rk);
    const int M = run->n_models;
    rk->n_models = M;
    rk->task = malloc(((size_t)run->n_sel + 1) * sizeof(int));
    rk->value = malloc(((size_t)run->n_sel * M + 1) * sizeof(double));
    rk->rank = malloc(((size_t)run->n_sel * M + 1) * sizeof(double));
    rk->avg = calloc((size_t)M, sizeof(double));
    rk->firsts = calloc((size_t)M, sizeof(int));
    for (int ti = 0; ti < run->n_sel; ti++) {
        const BenchTask *t = &run->reg.tasks[run->task_sel[ti]];
        double *v = rk->value + (size_t)rk->n_tasks * M;
        int ok = 1;
        for (int mi = 0; mi < M && ok; mi++) {
            const BenchResult *r = &run->res[(size_t)mi * run->n_sel + ti];
            const BenchMetric *pm = r->status == BENCH_OK ? bench_result_metric(r, t->metric) : NULL;
            ok = pm && isfinite(pm->ci.value);
            if (ok) v[mi] = pm->ci.value;
        }
        if (!ok) continue;
        double *rank = rk->rank + (size_t)rk->n_tasks * M, best = -INFINITY;
        for (int mi = 0; mi < M; mi++) best = fmax(best, v[mi]);
        for (int mi = 0; mi < M; mi++) {   /* higher is better; ties share the mean of their ranks */
            int above = 0, tied = 0;
            for (int j = 0; j < M; j++) {
                above += v[j] > v[mi];
                tied += v[j] == v[mi];
            }
            rank[mi] = 1.0 + above + (tied - 1) / 2.0;
            rk->avg[mi] += rank[mi];
            rk->firsts[mi] += v[mi] == best;
        }
        rk->task[rk->n_tasks++] = ti;
    }
    for (int mi = 0; mi < M; mi++) rk->avg[mi] = rk->n_tasks ? rk->avg[mi] / rk->n_tasks : NAN;
    return 0;
}

void bench_ranks_free(BenchRanks *rk) {
    free(rk->task);
    free(rk->value);
    free(rk->rank);
    free(rk->avg);
    free(rk->firsts);
    memset(rk, 0, sizeof *rk);
}

/* a CSV field, quoted when it holds a comma, quote or newline */
static void csv_field(FILE *f, const char *s) {
    if (!strpbrk(s, ",\"\n")) {
        fputs(s, f);
        return;
    }
    fputc('"', f);
    for (; *s; s++) {
        if (*s == '"') fputc('"', f);
        fputc(*s == '\n' ? ' ' : *s, f);
    }
    fputc('"', f);
}

static void md_cell(FILE *f, const char *s) {   /* '|' would split a markdown cell */
    for (; *s; s++) fputs(*s == '|' ? "\\|" : (char[2]){*s, 0}, f);
}

static const char *task_category(const BenchTask *t) { return bench_category_name(t->category); }

/* dir/name opened for writing with its header line; NULL (and e set) when it cannot be */
static FILE *csv_create(const char *dir, const char *name, const char *header, char *p, size_t np, Err *e) {
    snprintf(p, np, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    if (!f) err_set(e, "%s: cannot write", p);
    else fprintf(f, "%s\n", header);
    return f;
}

static int write_csvs(const BenchRun *run, const char *dir, Err *e) {
    char p[1200];
    FILE *f = csv_create(dir, "results.csv", "model,task,category,metric,value,ci_low,ci_high", p, sizeof p, e);
    if (!f) return 1;
    for (int ti = 0; ti < run->n_sel; ti++)
        for (int mi = 0; mi < run->n_models; mi++) {
            const BenchResult *r = &run->res[(size_t)mi * run->n_sel + ti];
            const BenchTask *t = &run->reg.tasks[r->task];
            if (r->status != BENCH_OK) continue;
            for (int k = 0; k < r->metrics.n; k++) {
                const BenchMetric *m = &r->metrics.m[k];
                fprintf(f, "%s,%s,%s,%s,%.6f,%.6f,%.6f\n", run->model_names[mi], t->id, task_category(t), m->name,
                        m->ci.value, m->ci.lo, m->ci.hi);
            }
        }
    if (fclose(f)) return err_set(e, "%s: write failed", p);
    if (!(f = csv_create(dir, "status.csv", "model,task,category,status,detail,n_train,n_val,n_test,seconds", p, sizeof p, e)))
        return 1;
    for (int ti = 0; ti < run->n_sel; ti++)
        for (int mi = 0; mi < run->n_models; mi++) {
            const BenchResult *r = &run->res[(size_t)mi * run->n_sel + ti];
            const BenchTask *t = &run->reg.tasks[r->task];
            fprintf(f, "%s,%s,%s,%s,", run->model_names[mi], t->id, task_category(t), bench_status_name(r->status));
            csv_field(f, r->detail);
            fprintf(f, ",%zu,%zu,%zu,%.2f\n", r->n_split[0], r->n_split[1], r->n_split[2], r->seconds);
        }
    if (fclose(f)) return err_set(e, "%s: write failed", p);
    return 0;
}

/* the paired difference of model mi to the baseline on one metric of task ti; 1 when there is none
 * (either model did not complete the task, or their test sets differ) */
static int paired(const BenchRun *run, int mi, int ti, const char *metric, BenchCI *d, double *p_le0) {
    const BenchResult *r = &run->res[(size_t)mi * run->n_sel + ti], *b = &run->res[(size_t)run->baseline * run->n_sel + ti];
    if (r->status != BENCH_OK || b->status != BENCH_OK || r->n_split[PREP_SPLIT_TEST] != b->n_split[PREP_SPLIT_TEST]) return 1;
    const BenchMetric *m = bench_result_metric(r, metric), *mb = bench_result_metric(b, metric);
    return !m || !mb || bench_paired_diff(m, mb, run->reg.set.boot_level, d, p_le0);
}

static int write_paired_csv(const BenchRun *run, const char *dir, Err *e) {
    char p[1200];
    FILE *f = csv_create(dir, "paired.csv", "model,task,metric,baseline,diff,ci_low,ci_high,p_le0", p, sizeof p, e);
    if (!f) return 1;
    for (int ti = 0; ti < run->n_sel; ti++)
        for (int mi = 0; mi < run->n_models; mi++) {
            const BenchResult *r = &run->res[(size_t)mi * run->n_sel + ti];
            if (mi == run->baseline || r->status != BENCH_OK) continue;
            for (int k = 0; k < r->metrics.n; k++) {
                BenchCI d;
                double p0;
                if (paired(run, mi, ti, r->metrics.m[k].name, &d, &p0)) continue;
                fprintf(f, "%s,%s,%s,%s,%.6f,%.6f,%.6f,%.4f\n", run->model_names[mi], run->reg.tasks[r->task].id,
                        r->metrics.m[k].name, run->model_names[run->baseline], d.value, d.lo, d.hi, p0);
            }
        }
    if (fclose(f)) return err_set(e, "%s: write failed", p);
    return 0;
}

/* `first`: the leading column titles, '|'-separated */
static void model_header(FILE *f, const BenchRun *run, const char *first) {
    fprintf(f, "| %s |", first);
    for (int mi = 0; mi < run->n_models; mi++) fprintf(f, " %s |", run->model_names[mi]);
    fprintf(f, "\n|");
    for (const char *p = first; p; p = strchr(p + 1, '|')) fprintf(f, "---|");
    for (int mi = 0; mi < run->n_models; mi++) fprintf(f, "---|");
    fputc('\n', f);
}

/* one row: the metric of every model with its CI; the best value in bold */
static void metric_row(FILE *f, const BenchRun *run, int ti, const char *metric, int with_ci) {
    double best = -INFINITY;
    for (int mi = 0; mi < run->n_models; mi++) {
        const BenchMetric *m = bench_result_metric(&run->res[(size_t)mi * run->n_sel + ti], metric);
        if (m && isfinite(m->ci.value) && run->res[(size_t)mi * run->n_sel + ti].status == BENCH_OK) best = fmax(best, m->ci.value);
    }
    for (int mi = 0; mi < run->n_models; mi++) {
        const BenchResult *r = &run->res[(size_t)mi * run->n_sel + ti];
        const BenchMetric *m = r->status == BENCH_OK ? bench_result_metric(r, metric) : NULL;
        if (!m) {
            fprintf(f, " %s |", r->status == BENCH_OK ? "–" : bench_status_name(r->status));
            continue;
        }
        int b = run->n_models > 1 && m->ci.value == best;
        fprintf(f, " %s%.3f%s", b ? "**" : "", m->ci.value, b ? "**" : "");
        if (with_ci) fprintf(f, " [%.3f, %.3f]", m->ci.lo, m->ci.hi);
        fprintf(f, " |");
    }
    fputc('\n', f);
}

static int write_markdown(const BenchRun *run, const BenchRanks *rk, const char *dir, Err *e) {
    char p[1200];
    snprintf(p, sizeof p, "%s/report.md", dir);
    FILE *f = fopen(p, "w");
    if (!f) return err_set(e, "%s: cannot write", p);
    const BenchSettings *s = &run->reg.set;
    time_t now = time(NULL);
    char date[64];
    strftime(date, sizeof date, "%Y-%m-%d %H:%M", localtime(&now));
    fprintf(f, "# Benchmark report: %s\n\n", run->reg.name);
    if (run->reg.description[0]) fprintf(f, "%s\n\n", run->reg.description);
    int counts[4] = {0};
    for (size_t i = 0; i < (size_t)run->n_models * run->n_sel; i++) counts[run->res[i].status]++;
    fprintf(f, "Run of %s, %.0f s; suite `%s`, data root `%s`; %d tasks x %d models: %d ok, %d skipped (dataset "
               "missing), %d not implemented yet, %d failed.\n\n",
            date, run->seconds, run->reg.path, run->data_root, run->n_sel, run->n_models, counts[BENCH_OK],
            counts[BENCH_SKIPPED], counts[BENCH_NOT_IMPLEMENTED], counts[BENCH_FAILED]);
    fprintf(f, "| model | spec | backbone |\n|---|---|---|\n");
    for (int mi = 0; mi < run->n_models; mi++)
        fprintf(f, "| %s | `%s` | %s |\n", run->model_names[mi], run->model_specs[mi], run->model_descs[mi]);
    fprintf(f, "\nProtocols on frozen features (backbone in eval mode): linear head (%sAdamW lr %g, wd %g, batch %d, "
               "validation every %ld iterations, early stop after %ld without improvement, selection by %s); multi-label "
               "head (BCE%s, selection by %s); k-NN (k = %d, T = %g, DINO's weighted vote); retrieval (cosine; database = "
               "train + val, queries = test).  Every value: test metric with a %.0f%% percentile CI from %d bootstrap "
               "resamples of the test set (seed %llu, the same resamples for every model).\n\n",
            s->linear.standardize ? "features z-scored with train statistics, " : "", s->linear.lr, s->linear.weight_decay, s->linear.batch, s->linear.val_every, s->linear.patience,
            s->linear.select == BENCH_SELECT_ACC ? "accuracy" : s->linear.select == BENCH_SELECT_AUC ? "AUC" : "loss",
            s->multilabel_clahe ? ", CLAHE input" : "",
            s->multilabel.select == BENCH_SELECT_ACC ? "subset accuracy" : s->multilabel.select == BENCH_SELECT_AUC ? "macro AUC" : "loss",
            s->knn_k, s->knn_temperature, 100 * s->boot_level, s->boot_n, (unsigned long long)s->boot_seed);

    /* summary */
    fprintf(f, "## Summary\n\n");
    if (rk->n_tasks == 0) {
        fprintf(f, "No task was completed by every model, so there are no ranks.\n\n");
    } else {
        fprintf(f, "Ranks on each task's primary metric (1 = best, ties share the mean rank) over the %d tasks every "
                   "model completed.\n\n| model | average rank | first places |\n|---|---|---|\n", rk->n_tasks);
        for (int mi = 0; mi < run->n_models; mi++)
            fprintf(f, "| %s | %.2f | %d / %d |\n", run->model_names[mi], rk->avg[mi], rk->firsts[mi], rk->n_tasks);
        fprintf(f, "\n![ranks per task](ranks.png)\n\n### Rank per task\n\n");
        model_header(f, run, "task (metric)");
        for (int k = 0; k < rk->n_tasks; k++) {
            const BenchTask *t = &run->reg.tasks[run->task_sel[rk->task[k]]];
            fprintf(f, "| %s (%s) |", t->id, t->metric);
            for (int mi = 0; mi < run->n_models; mi++) {
                double r = rk->rank[(size_t)k * run->n_models + mi];
                fprintf(f, r == floor(r) ? " %.0f |" : " %.1f |", r);
            }
            fputc('\n', f);
        }
        fputc('\n', f);
    }

    if (run->baseline >= 0) {
        const char *base = run->model_names[run->baseline];
        fprintf(f, "## Paired differences against %s\n\nEvery model minus %s on each task's primary metric, on the same "
                   "bootstrap resamples of the test set: the difference, its %.0f%% CI and P(difference <= 0) over the "
                   "resamples (every metric: paired.csv).  Narrower than comparing the two marginal CIs, because both "
                   "models are scored on the same drawn rows.\n\n",
                base, base, 100 * s->boot_level);
        model_header(f, run, "task | metric");
        for (int ti = 0; ti < run->n_sel; ti++) {
            const BenchTask *t = &run->reg.tasks[run->task_sel[ti]];
            fprintf(f, "| %s | %s |", t->id, t->metric);
            for (int mi = 0; mi < run->n_models; mi++) {
                BenchCI d;
                double p0;
                if (mi == run->baseline) fprintf(f, " (baseline) |");
                else if (paired(run, mi, ti, t->metric, &d, &p0)) fprintf(f, " – |");
                else fprintf(f, " %+.3f [%+.3f, %+.3f] p %.3f |", d.value, d.lo, d.hi, p0);
            }
            fputc('\n', f);
        }
        fputc('\n', f);
    }

    /* per category */
    for (int cat = 0; cat < BENCH_N_CATEGORIES; cat++) {
        int any = 0;
        for (int ti = 0; ti < run->n_sel && !any; ti++) {
            const BenchTask *t = &run->reg.tasks[run->task_sel[ti]];
            for (int mi = 0; mi < run->n_models; mi++)
                any |= t->category == cat && run->res[(size_t)mi * run->n_sel + ti].status == BENCH_OK;
        }
        if (!any) continue;
        fprintf(f, "## %s\n\nPrimary metric with its 95%% CI.\n\n", bench_category_name(cat));
        model_header(f, run, "task | metric");
        for (int ti = 0; ti < run->n_sel; ti++) {
            const BenchTask *t = &run->reg.tasks[run->task_sel[ti]];
            if (t->category != cat) continue;
            int ok = 0;
            for (int mi = 0; mi < run->n_models; mi++) ok |= run->res[(size_t)mi * run->n_sel + ti].status == BENCH_OK;
            if (!ok) continue;
            fprintf(f, "| %s%s | %s |", t->id, t->multilabel ? " (multi-label)" : "", t->metric);
            metric_row(f, run, ti, t->metric, 1);
        }
        fprintf(f, "\nEvery metric:\n\n");
        model_header(f, run, "task | metric");
        for (int ti = 0; ti < run->n_sel; ti++) {
            const BenchTask *t = &run->reg.tasks[run->task_sel[ti]];
            if (t->category != cat) continue;
            const BenchResult *first = NULL;
            for (int mi = 0; mi < run->n_models && !first; mi++)
                if (run->res[(size_t)mi * run->n_sel + ti].status == BENCH_OK) first = &run->res[(size_t)mi * run->n_sel + ti];
            if (!first) continue;
            for (int k = 0; k < first->metrics.n; k++) {
                fprintf(f, "| %s | %s |", t->id, first->metrics.m[k].name);
                metric_row(f, run, ti, first->metrics.m[k].name, 1);
            }
        }
        fputc('\n', f);
        if (cat == BENCH_SEGMENTATION || cat == BENCH_DETECTION) {
            /* the protocols' contact sheets: test images, ground truth green, prediction red */
            int listed = 0;
            for (int ti = 0; ti < run->n_sel; ti++) {
                const BenchTask *t = &run->reg.tasks[run->task_sel[ti]];
                if (t->category != cat) continue;
                for (int mi = 0; mi < run->n_models; mi++) {
                    char png[1400];
                    snprintf(png, sizeof png, "%s/sheets/%s.%s.png", dir, t->id, run->model_names[mi]);
                    if (access(png, R_OK) != 0) continue;
                    if (!listed) fprintf(f, "Predictions on test images (ground truth green, prediction red%s):\n\n",
                                         cat == BENCH_DETECTION ? "; boxes with score >= 0.5 after NMS 0.5" : "");
                    listed = 1;
                    fprintf(f, "- %s, %s: ![%s %s](sheets/%s.%s.png)\n", t->id, run->model_names[mi], t->id,
                            run->model_names[mi], t->id, run->model_names[mi]);
                }
            }
            if (listed) fputc('\n', f);
        }
    }

    /* not run */
    int header = 0;
    for (int ti = 0; ti < run->n_sel; ti++)
        for (int mi = 0; mi < run->n_models; mi++) {
            const BenchResult *r = &run->res[(size_t)mi * run->n_sel + ti];
            if (r->status == BENCH_OK) continue;
            const BenchTask *t = &run->reg.tasks[r->task];
            if (!header) fprintf(f, "## Tasks not run\n\n| task | category | model | status | detail |\n|---|---|---|---|---|\n");
            header = 1;
            fprintf(f, "| %s | %s | %s | %s | ", t->id, task_category(t), run->model_names[mi], bench_status_name(r->status));
            md_cell(f, r->detail);
            fprintf(f, " |\n");
        }
    if (fclose(f)) return err_set(e, "%s: write failed", p);
    return 0;
}

int bench_write_report(const BenchRun *run, const char *out_dir, Err *e) {
    BenchRanks rk;
    bench_ranks(run, &rk);
    int rc = write_csvs(run, out_dir, e) || (run->baseline >= 0 && write_paired_csv(run, out_dir, e)) ||
             write_markdown(run, &rk, out_dir, e);
    if (!rc) {
        char p[1200];
        snprintf(p, sizeof p, "%s/ranks.png", out_dir);
        rc = bench_plot_ranks(run, &rk, p, e);
    }
    bench_ranks_free(&rk);
    return rc;
}
