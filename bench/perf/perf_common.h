/* perf_common.h — clocks, peak RSS and the step-timing loop shared by the bench/perf programs.
 *
 * Every step is timed twice: by the wall clock and by the CPU time of the whole process
 * (CLOCK_PROCESS_CPUTIME_ID, all threads).  On a machine shared with other processes the wall
 * clock measures the load as much as the code; CPU-seconds per step do not (much), and
 * "core" rates = images / (CPU-seconds / threads) are what the step would run at with its
 * threads' cores to itself.  OMP_WAIT_POLICY=PASSIVE keeps idle OpenMP threads asleep, so
 * waiting is not counted as work (the PyTorch side runs under the same policy).
 *
 * A run is `passes` passes of `steps` steps after one warm-up step (which grows the arena and
 * the tape); the per-step average of each pass is kept and the best pass of each clock is
 * reported, separately. */
#ifndef VERSA_PERF_COMMON_H
#define VERSA_PERF_COMMON_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static inline double perf_clock(clockid_t id) {
    struct timespec t;
    clock_gettime(id, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct PerfTm {
    double wall, cpu;   /* seconds */
} PerfTm;

static inline PerfTm perf_now(void) {
    return (PerfTm){perf_clock(CLOCK_MONOTONIC), perf_clock(CLOCK_PROCESS_CPUTIME_ID)};
}

static inline PerfTm perf_since(PerfTm t0) {
    PerfTm t = perf_now();
    return (PerfTm){t.wall - t0.wall, t.cpu - t0.cpu};
}

/* keeps the best (smallest) of each clock separately */
static inline void perf_best(PerfTm *best, PerfTm t) {
    if (t.wall < best->wall) best->wall = t.wall;
    if (t.cpu < best->cpu) best->cpu = t.cpu;
}

/* "nothing measured yet" for perf_best */
static const PerfTm PERF_TM_WORST = {1e30, 1e30};

/* Per-op times of a profiled step, keyed by op name (the ops' static strings): forward time, and
 * backward time and node count as charged by Ctx.backward_node_hook.  Names past PERF_MAX_OPS are
 * not recorded. */
#define PERF_MAX_OPS 64
typedef struct PerfOps {
    const char *name[PERF_MAX_OPS];
    double fwd[PERF_MAX_OPS], bwd[PERF_MAX_OPS];
    long bwd_nodes[PERF_MAX_OPS];
    int n;
} PerfOps;

/* the row of `name`, added if new; -1 when the table is full */
static inline int perf_ops_row(PerfOps *p, const char *name) {
    int k = 0;
    while (k < p->n && strcmp(p->name[k], name)) k++;
    if (k == p->n) {
        if (p->n == PERF_MAX_OPS) return -1;
        p->name[p->n++] = name;
    }
    return k;
}

static inline void perf_ops_backward(PerfOps *p, const char *name, double seconds) {
    int k = perf_ops_row(p, name);
    if (k < 0) return;
    p->bwd[k] += seconds;
    p->bwd_nodes[k]++;
}

static inline double perf_peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1e3;   /* ru_maxrss is in KiB on Linux */
}

/* Runs step(arg) once to warm up, then `passes` x `steps`; prints one line per pass and returns
 * the best per-step wall and CPU time (each clock's best pass). */
static inline PerfTm perf_run(const char *name, void (*step)(void *), void *arg, int passes, int steps,
                              double images) {
    step(arg);
    PerfTm best = PERF_TM_WORST;
    for (int p = 0; p < passes; p++) {
        PerfTm t0 = perf_now();
        for (int s = 0; s < steps; s++) step(arg);
        PerfTm t = perf_since(t0);
        t.wall /= steps;
        t.cpu /= steps;
        printf("   %s pass %d: %.3f s/step wall, %.3f CPU-s/step, %.2f images/s wall\n", name, p + 1, t.wall, t.cpu,
               images / t.wall);
        fflush(stdout);
        perf_best(&best, t);
    }
    return best;
}

/* The RESULT lines bench/run_models.sh reads: <case>_step_s, _step_cpu_s, _images_per_s,
 * _images_per_s_core, _peak_rss_mb. */
static inline void perf_results(const char *side, const char *name, PerfTm best, double images, int nt) {
    printf("RESULT %s %s_step_s %.4f\n", side, name, best.wall);
    printf("RESULT %s %s_step_cpu_s %.4f\n", side, name, best.cpu);
    printf("RESULT %s %s_images_per_s %.2f\n", side, name, images / best.wall);
    printf("RESULT %s %s_images_per_s_core %.2f\n", side, name, images / (best.cpu / nt));
    printf("RESULT %s %s_peak_rss_mb %.0f\n", side, name, perf_peak_rss_mb());
    fflush(stdout);
}

#endif
