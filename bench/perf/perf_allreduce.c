/* perf_allreduce.c — what one data-parallel gradient all-reduce costs on this machine.
 *
 * Times dist_allreduce_mean (MPI_Allreduce SUM in place, then * 1/world: exactly what
 * dist_allreduce_grads does per step) over float blocks of 1, 16, 100 and 344 MB (344 MB = the
 * gradient block of ViT-B, ~86M parameters), and the bare dist_allreduce_sum next to it; a memcpy
 * of the same block on every rank at once is the memory-bandwidth yardstick (on a shared machine
 * it also shows how much of the time is contention).
 * Each timing is the slowest rank's, after a barrier; the median and the best over the repetitions
 * are reported as ms per step, algorithm bandwidth (bytes / time) and bus bandwidth
 * (algbw * 2(p-1)/p, the nccl-tests convention: the bytes each rank moves in a ring all-reduce).
 * On a shared machine the best is the better estimate of what the hardware does; the median is
 * what a step saw.
 *
 * Usage: perf_allreduce [MB ...]                   (default: 1 16 100 344)
 * Without mpirun it relaunches itself under `mpirun -np ${VERSA_BENCH_NP:-2}` on shared memory
 * (pml ob1, btl self,vader; single-copy mechanism from OMPI_MCA_btl_vader_single_copy_mechanism,
 * "none" unless set).  "RESULT allreduce <MB> <key> <value>" lines are for scripts.
 * Not run by the tests. */
#include "engine/engine.h"
#include "bench/perf/perf_common.h"
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* exec `mpirun -np NP ... <this program> args` (returns only on failure) */
static void relaunch(int argc, char **argv) {
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = '\0';
    const char *np = getenv("VERSA_BENCH_NP") ? getenv("VERSA_BENCH_NP") : "2";
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 0);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 0);
    setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
    setenv("OMP_NUM_THREADS", "1", 0);   /* the scaling loop: one thread per rank */
    char **args = calloc((size_t)argc + 16, sizeof(char *));
    int k = 0;
    const char *pre[] = {"mpirun", "-np", np, "--oversubscribe", "--bind-to", "none", "--mca", "btl", "self,vader",
                         "--mca", "pml", "ob1", NULL};
    for (int i = 0; pre[i]; i++) args[k++] = (char *)pre[i];
    args[k++] = exe;
    for (int i = 1; i < argc; i++) args[k++] = argv[i];
    args[k] = NULL;
    fprintf(stderr, "perf_allreduce: not under mpirun, relaunching: mpirun -np %s ... %s\n", np, exe);
    execvp("mpirun", args);
    perror("perf_allreduce: exec mpirun");
}

/* median / min over reps of the slowest rank's time for one call of fn on n floats */
typedef void (*ReduceFn)(Ctx *c, float *x, size_t n);

/* the memory-bandwidth yardstick: every rank copies its block at the same time */
static float *g_copy;   /* (n) */
static void copy_block(Ctx *c, float *x, size_t n) {
    (void)c;
    memcpy(g_copy, x, n * sizeof(float));
}

static void time_calls(Ctx *c, ReduceFn fn, float *x, size_t n, int reps, double *median, double *best) {
    double *t = malloc((size_t)reps * sizeof(double));
    fn(c, x, n);   /* warm-up: page faults, MPI's temporary buffers */
    for (int r = 0; r < reps; r++) {
        dist_barrier(c);
        double t0 = perf_clock(CLOCK_MONOTONIC);
        fn(c, x, n);
        t[r] = perf_clock(CLOCK_MONOTONIC) - t0;
    }
    dist_allreduce_max_double(c, t, (size_t)reps);
    qsort(t, (size_t)reps, sizeof(double), cmp_double);
    *median = t[reps / 2];
    *best = t[0];
    free(t);
}

int main(int argc, char **argv) {
    Ctx c;
    ctx_init(&c, 1);
    engine_threads_init();
    dist_init(&c, &argc, &argv);
    if (c.world == 1 && !getenv("OMPI_COMM_WORLD_SIZE") && !getenv("VERSA_MPI")) {
        relaunch(argc, argv);
        return 1;
    }
    double mbs[16] = {1, 16, 100, 344};
    int nsz = 4;
    if (argc > 1) {
        nsz = 0;
        for (int i = 1; i < argc && nsz < 16; i++) mbs[nsz++] = atof(argv[i]);
    }
    if (dist_is_root(&c)) {
        const char *sc = getenv("OMPI_MCA_btl_vader_single_copy_mechanism");
        char la[64] = "?\n";
        FILE *f = fopen("/proc/loadavg", "r");
        if (f) {
            if (!fgets(la, sizeof la, f)) snprintf(la, sizeof la, "?\n");
            fclose(f);
        }
        printf("== all-reduce of a float block over %d ranks (Open MPI, shared memory, single copy: %s), "
               "load average %s", c.world, sc ? sc : "default", la);
        printf("%7s %10s %4s | %9s %9s %9s | %7s %7s | %7s %7s | %9s\n", "MB", "floats", "reps", "mean ms",
               "best ms", "sum ms", "algbw", "busbw", "algbw", "busbw", "memcpy ms");
        printf("%7s %10s %4s | %9s %9s %9s | %15s | %15s | %9s\n", "", "", "", "median", "", "median",
               "GB/s (median)", "GB/s (best)", "median");
    }
    for (int s = 0; s < nsz; s++) {
        size_t n = (size_t)(mbs[s] * 1e6 / sizeof(float));
        if (n == 0) continue;
        float *x = malloc(n * sizeof(float));
        g_copy = malloc(n * sizeof(float));
        int ok = x != NULL && g_copy != NULL;
        double okd = ok ? 0.0 : 1.0;
        dist_allreduce_max_double(&c, &okd, 1);
        if (okd != 0.0) {
            if (dist_is_root(&c)) printf("%9.0f  (out of memory on some rank: skipped)\n", mbs[s]);
            free(x);
            free(g_copy);
            continue;
        }
        Rng rng;
        rng_init(&rng, 7 + (uint64_t)c.rank);
        rng_fill_uniform(&rng, x, n, -1.0f, 1.0f);
        /* about 2 s of calls per size, at least 3 and at most 50 */
        double t0 = perf_clock(CLOCK_MONOTONIC);
        dist_allreduce_sum(&c, x, n);
        double once = perf_clock(CLOCK_MONOTONIC) - t0;
        dist_allreduce_max_double(&c, &once, 1);
        int reps = (int)(2.0 / (once > 1e-6 ? once : 1e-6));
        reps = reps < 3 ? 3 : reps > 50 ? 50 : reps;
        double med_mean, best_mean, med_sum, best_sum, med_copy, best_copy;
        time_calls(&c, dist_allreduce_mean, x, n, reps, &med_mean, &best_mean);
        time_calls(&c, dist_allreduce_sum, x, n, reps, &med_sum, &best_sum);
        time_calls(&c, copy_block, x, n, reps, &med_copy, &best_copy);
        double bytes = (double)n * sizeof(float), bus = 2.0 * (c.world - 1) / c.world;
        double algbw = bytes / med_mean / 1e9, algbw_best = bytes / best_mean / 1e9;
        if (dist_is_root(&c)) {
            printf("%7.0f %10zu %4d | %9.2f %9.2f %9.2f | %7.2f %7.2f | %7.2f %7.2f | %9.2f\n", mbs[s], n, reps,
                   1e3 * med_mean, 1e3 * best_mean, 1e3 * med_sum, algbw, algbw * bus, algbw_best, algbw_best * bus,
                   1e3 * med_copy);
            printf("RESULT allreduce %.0f mean_ms %.3f\n", mbs[s], 1e3 * med_mean);
            printf("RESULT allreduce %.0f best_ms %.3f\n", mbs[s], 1e3 * best_mean);
            printf("RESULT allreduce %.0f algbw_gbs %.3f\n", mbs[s], algbw);
            printf("RESULT allreduce %.0f busbw_gbs %.3f\n", mbs[s], algbw * bus);
            printf("RESULT allreduce %.0f memcpy_ms %.3f\n", mbs[s], 1e3 * med_copy);
            fflush(stdout);
        }
        free(x);
        free(g_copy);
    }
    dist_finalize();
    ctx_free(&c);
    return 0;
}
