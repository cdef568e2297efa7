/*
 * train.h — what every training loop of the project shares, so that stage 1 and stage 2 differ
 * only in their step function and losses: the output folder, the progress line, JSONL metrics,
 * the checkpoint cadence (atomic writes), exact resume, the NaN guard and the LR/WD multipliers
 * per parameter group.  Rank 0 alone writes; every rank reads a checkpoint on resume.
 *
 *   TrainLoop t = {.name = "pretrain", .out_dir = dir, .total_steps = N, .ckpt_every = 100,
 *                  .ctx = &c, .stores = stores, .n_stores = 2, .extra = centers, .n_extra = 2,
 *                  .config_text = yaml, .rng = &data_rng};
 *   train_begin(&t, resume, &e);          // loads <out_dir>/checkpoint.h5 when resuming
 *   while (t.step < t.total_steps) {
 *       ... one optimisation step ...
 *       train_end_step(&t, metrics, n, images, &e);   // NaN guard, log, checkpoint when due
 *   }
 *   train_finish(&t, &e);                 // final checkpoint
 */
#ifndef VERSA_TRAIN_H
#define VERSA_TRAIN_H

#include "engine/engine.h"

typedef struct Metric {
    const char *name;    /* "loss", "dino", "lr", ... */
    double value;
} Metric;

enum { TRAIN_NAN_STOP = 0, TRAIN_NAN_SKIP = 1 };

typedef struct TrainLoop {
    /* set by the caller */
    const char *name;            /* shown in the progress line */
    const char *out_dir;         /* checkpoint.h5, metrics.jsonl live here */
    long total_steps;
    long ckpt_every;             /* steps between checkpoints (0: only the final one) */
    long log_every;              /* steps between progress lines (default 10) */
    int nan_policy;              /* TRAIN_NAN_STOP (default) or TRAIN_NAN_SKIP */
    Ctx *ctx;
    const CkptStore *stores;
    int n_stores;
    CkptExtra *extra;            /* trainer state saved beside the parameters (centers, ...) */
    int n_extra;
    const char *config_text;     /* the run's config as YAML, saved in every checkpoint */
    Rng *rng;                    /* the trainer's RNG, saved and restored exactly */
    int quiet;                   /* no progress lines (tests) */
    /* state */
    long step;                   /* completed optimisation steps */
    long skipped;                /* steps skipped by TRAIN_NAN_SKIP */
    FILE *metrics;               /* rank 0 only */
    double t_begin, t_window;    /* wall clock at begin / start of the current log window */
    double images_window, images_total;
    long steps_window;
} TrainLoop;

/* Creates out_dir, opens metrics.jsonl (truncated to the resumed step on resume), and with
 * `resume` loads <out_dir>/checkpoint.h5 into the stores, extras and RNG and sets `step`. */
int train_begin(TrainLoop *t, int resume, Err *e);
/* After an optimisation step: checks every metric is finite (TRAIN_NAN_STOP: returns an error
 * naming the step and metric, leaving the last checkpoint as it was), increments `step`, writes
 * the JSONL line and the progress line, and saves a checkpoint when one is due.  `images` = the
 * images this step consumed over all ranks. */
int train_end_step(TrainLoop *t, const Metric *m, int n, double images, Err *e);
/* 1 when any metric is not finite (every rank agrees) — for TRAIN_NAN_SKIP callers that must
 * not apply the update: check before optim_step, then call train_skip_step. */
int train_metrics_bad(TrainLoop *t, const Metric *m, int n, const char **which);
void train_skip_step(TrainLoop *t, const Metric *m, int n);
int train_checkpoint(TrainLoop *t, Err *e);   /* now, at the current step */
int train_finish(TrainLoop *t, Err *e);       /* final checkpoint, close files */
/* "<out_dir>/checkpoint.h5" */
const char *train_ckpt_path(const TrainLoop *t, char *buf, size_t n);

/* What a whole run (ssl_pretrain, distill_train) reports to its caller */
typedef struct TrainRunResult {
    int quiet;            /* in: no progress lines */
    long steps;
    double seconds, images, first_loss, last_loss;
} TrainRunResult;
/* "[name] done: N steps, M images in S s (R img/s), loss a -> b, peak RSS X MB" on stderr */
void train_print_done(const char *name, const TrainRunResult *r);

/* Test-only fault injection (tests/e2e/test_faults.c, docs/robustness.md): the step (1-based)
 * named by VERSA_INJECT_NAN_STEP, whose batch a trainer poisons with a NaN; 0 when unset. */
long train_inject_nan_step(void);

/* Wall clock in seconds (monotonic) */
double wall_seconds(void);
/* Peak resident set size of this process in bytes */
size_t peak_rss_bytes(void);

#endif
