/* train.c — progress line, JSONL metrics, checkpoint cadence, exact resume and the NaN guard,
 * shared by every trainer. */
#include "engine/train.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

double wall_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t peak_rss_bytes(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (size_t)ru.ru_maxrss * 1024;
}

void train_print_done(const char *name, const TrainRunResult *r) {
    fprintf(stderr, "[%s] done: %ld steps, %.0f images in %.1f s (%.1f img/s), loss %.4f -> %.4f, peak RSS %.0f MB\n", name,
            r->steps, r->images, r->seconds, r->seconds > 0 ? r->images / r->seconds : 0, r->first_loss, r->last_loss,
            (double)peak_rss_bytes() / 1e6);
}

const char *train_ckpt_path(const TrainLoop *t, char *buf, size_t n) {
    snprintf(buf, n, "%s/checkpoint.h5", t->out_dir);
    return buf;
}

/* Keep the metric lines of steps <= step (a resumed run rewrites what came after). */
static int truncate_metrics(const char *path, long step, Err *e) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *o = fopen(tmp, "w");
    if (!o) {
        fclose(f);
        return err_set(e, "%s: cannot write: %s", tmp, strerror(errno));
    }
    char line[8192];
    while (fgets(line, sizeof line, f)) {
        const char *s = strstr(line, "\"step\":");
        if (s && atol(s + 7) > step) continue;
        fputs(line, o);
    }
    fclose(f);
    if (fclose(o) != 0 || rename(tmp, path) != 0) return err_set(e, "%s: cannot rewrite: %s", path, strerror(errno));
    return 0;
}

/* A writer killed mid-checkpoint leaves "<checkpoint>.tmp.<pid>" (the real checkpoint is never
 * touched before the rename).  Remove those whose writer is gone, so repeated kills do not fill
 * the disk with checkpoint-sized garbage; a live pid (another run writing) is left alone. */
static void remove_stale_tmp(const TrainLoop *t) {
    char path[1024];
    train_ckpt_path(t, path, sizeof path);
    const char *slash = strrchr(path, '/');
    const char *base = slash ? slash + 1 : path;
    char prefix[1100];
    snprintf(prefix, sizeof prefix, "%s.tmp.", base);
    DIR *d = opendir(t->out_dir);
    if (!d) return;
    for (struct dirent *de; (de = readdir(d));) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0) continue;
        char *end;
        long pid = strtol(de->d_name + strlen(prefix), &end, 10);
        if (*end || pid <= 0) continue;
        if (kill((pid_t)pid, 0) == 0 || errno != ESRCH) continue;   /* the writer is alive */
        char full[2048];
        snprintf(full, sizeof full, "%s/%s", t->out_dir, de->d_name);
        if (unlink(full) == 0 && !t->quiet) fprintf(stderr, "[%s] removed %s (left by a killed writer)\n", t->name, full);
    }
    closedir(d);
}

int train_begin(TrainLoop *t, int resume, Err *e) {
    if (t->log_every <= 0) t->log_every = 10;
    t->step = 0;
    const int root = dist_is_root(t->ctx);
    if (root && make_dirs(t->out_dir, e)) return 1;
    if (root) remove_stale_tmp(t);
    char path[1024], mpath[1024];
    if (resume) {
        train_ckpt_path(t, path, sizeof path);
        CkptMeta meta = {0};
        if (ckpt_load_stores(path, t->stores, t->n_stores, &meta, NULL, 0, t->extra, t->n_extra, e)) return 1;
        t->step = meta.step;
        if (t->rng) *t->rng = meta.rng;
        if (!t->quiet && root) fprintf(stderr, "[%s] resumed from %s at step %ld\n", t->name, path, t->step);
    }
    snprintf(mpath, sizeof mpath, "%s/metrics.jsonl", t->out_dir);
    if (root) {
        if (resume && truncate_metrics(mpath, t->step, e)) return 1;
        t->metrics = fopen(mpath, resume ? "a" : "w");
        if (!t->metrics) return err_set(e, "%s: cannot write: %s", mpath, strerror(errno));
    }
    t->t_begin = t->t_window = wall_seconds();
    return 0;
}

int train_metrics_bad(TrainLoop *t, const Metric *m, int n, const char **which) {
    double bad = 0;
    int first = -1;
    for (int i = 0; i < n; i++)
        if (!isfinite(m[i].value)) {
            bad = 1;
            if (first < 0) first = i;
        }
    dist_allreduce_max_double(t->ctx, &bad, 1);   /* one rank's NaN stops or skips every rank */
    if (which) *which = first >= 0 ? m[first].name : "(another rank)";
    return bad != 0;
}

static void write_jsonl(TrainLoop *t, const Metric *m, int n, double ips, int skipped) {
    if (!t->metrics) return;
    fprintf(t->metrics, "{\"step\":%ld", t->step);
    for (int i = 0; i < n; i++) {
        if (isfinite(m[i].value)) fprintf(t->metrics, ",\"%s\":%.8g", m[i].name, m[i].value);
        else fprintf(t->metrics, ",\"%s\":null", m[i].name);
    }
    fprintf(t->metrics, ",\"images_per_s\":%.4g,\"elapsed_s\":%.3f%s}\n", ips, wall_seconds() - t->t_begin,
            skipped ? ",\"skipped\":true" : "");
    fflush(t->metrics);
}

static void fmt_duration(double s, char *buf, size_t n) {
    long x = (long)(s + 0.5);
    if (x >= 3600) snprintf(buf, n, "%ldh%02ldm", x / 3600, (x % 3600) / 60);
    else if (x >= 60) snprintf(buf, n, "%ldm%02lds", x / 60, x % 60);
    else snprintf(buf, n, "%lds", x);
}

static void progress_line(TrainLoop *t, const Metric *m, int n, double ips) {
    if (t->quiet || !dist_is_root(t->ctx)) return;
    double elapsed = wall_seconds() - t->t_begin;
    char eta[32], el[32];
    double rate = elapsed > 0 ? (double)t->step / elapsed : 0;   /* steps per second since begin */
    fmt_duration(rate > 0 ? (double)(t->total_steps - t->step) / rate : 0, eta, sizeof eta);
    fmt_duration(elapsed, el, sizeof el);
    fprintf(stderr, "[%s] %ld/%ld", t->name, t->step, t->total_steps);
    for (int i = 0; i < n; i++) {
        const char *nm = m[i].name;
        if (!strcmp(nm, "lr") || !strcmp(nm, "wd") || !strcmp(nm, "momentum")) fprintf(stderr, " %s %.3g", nm, m[i].value);
        else fprintf(stderr, " %s %.4f", nm, m[i].value);
    }
    fprintf(stderr, " | %.1f img/s | %s elapsed, ETA %s\n", ips, el, eta);
}

int train_checkpoint(TrainLoop *t, Err *e) {
    if (!dist_is_root(t->ctx)) return 0;
    char path[1024];
    train_ckpt_path(t, path, sizeof path);
    CkptMeta meta = {.step = t->step, .config_text = t->config_text};
    if (t->rng) meta.rng = *t->rng;
    return ckpt_save_stores(path, t->stores, t->n_stores, &meta, t->extra, t->n_extra, e);
}

static int finish_step(TrainLoop *t, const Metric *m, int n, double images, int skipped, Err *e) {
    t->step++;
    t->images_window += images;
    t->images_total += images;
    t->steps_window++;
    int log_now = t->step % t->log_every == 0 || t->step == t->total_steps || t->step == 1;
    if (log_now) {
        double now = wall_seconds();
        double ips = now > t->t_window ? t->images_window / (now - t->t_window) : 0;
        write_jsonl(t, m, n, ips, skipped);
        progress_line(t, m, n, ips);
        t->t_window = now;
        t->images_window = 0;
        t->steps_window = 0;
    } else if (t->metrics) {
        write_jsonl(t, m, n, 0, skipped);
    }
    if (t->ckpt_every > 0 && t->step % t->ckpt_every == 0 && t->step < t->total_steps)
        return train_checkpoint(t, e);
    return 0;
}

int train_end_step(TrainLoop *t, const Metric *m, int n, double images, Err *e) {
    const char *which = NULL;
    if (t->nan_policy == TRAIN_NAN_STOP && train_metrics_bad(t, m, n, &which))
        return err_set(e, "%s: step %ld: %s is not finite; stopping (the last checkpoint is kept)", t->name,
                       t->step + 1, which);
    return finish_step(t, m, n, images, 0, e);
}

void train_skip_step(TrainLoop *t, const Metric *m, int n) {
    t->skipped++;
    if (!t->quiet && dist_is_root(t->ctx))
        fprintf(stderr, "[%s] step %ld: non-finite loss, batch skipped (%ld so far)\n", t->name, t->step + 1, t->skipped);
    Err e;
    finish_step(t, m, n, 0, 1, &e);
}

long train_inject_nan_step(void) {
    const char *v = getenv("VERSA_INJECT_NAN_STEP");
    return v ? atol(v) : 0;
}

int train_finish(TrainLoop *t, Err *e) {
    int rc = train_checkpoint(t, e);
    if (t->metrics) {
        fclose(t->metrics);
        t->metrics = NULL;
    }
    return rc;
}
