/* threads.c — one thread count for OpenMP and OpenBLAS, and a line saying which BLAS runs.
 *
 * The OpenMP build of OpenBLAS takes its thread count from omp_get_max_threads() on every call
 * (and runs single-threaded inside a parallel region), so setting OpenMP is what matters;
 * openblas_set_num_threads is called as well so the pthread build would agree. */
#include "engine.h"
#include <cblas.h>
#include <omp.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

/* a positive integer from the environment, else 0 */
static int env_threads(const char *name) {
    const char *s = getenv(name);
    if (!s || !*s) return 0;
    char *end;
    long v = strtol(s, &end, 10);
    /* OMP_NUM_THREADS may be a list ("4,2"); its first entry is the outer level */
    if (end == s || (*end && *end != ',') || v <= 0 || v > 4096) return 0;
    return (int)v;
}

int engine_threads_init(void) {
    int n = env_threads("VERSA_THREADS");
    if (!n) n = env_threads("OMP_NUM_THREADS");
    if (!n) {
        /* the cores this process may run on: under `mpirun --bind-to core|socket` that is the
         * rank's share, not the whole machine (which would oversubscribe every core) */
        cpu_set_t set;
        if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) n = CPU_COUNT(&set);
        else {
            long np = sysconf(_SC_NPROCESSORS_ONLN);
            n = np > 0 ? (int)np : 1;
        }
    }
    omp_set_num_threads(n);
    openblas_set_num_threads(n);
    return n;
}

const char *engine_blas_info(void) {
    /* openblas_get_config(): "OpenBLAS 0.3.21 NO_LAPACKE DYNAMIC_ARCH ... Zen MAX_THREADS=64";
     * keep its first two words (name and version) */
    static char buf[160];
    char ver[64] = "OpenBLAS";
    const char *cfg = openblas_get_config();
    if (cfg) {
        size_t k = 0;
        int words = 0;
        for (const char *p = cfg; *p && k + 1 < sizeof ver; p++) {
            if (*p == ' ' && ++words == 2) break;
            ver[k++] = *p;
        }
        ver[k] = '\0';
    }
    int par = openblas_get_parallel();
    const char *mode = par == 0 ? "sequential build" : par == 1 ? "pthreads build" : "OpenMP build";
    int nt = omp_get_max_threads();
    snprintf(buf, sizeof buf, "%s %s, %s, %d thread%s", ver, openblas_get_corename(), mode, nt, nt == 1 ? "" : "s");
    return buf;
}

const char *engine_blas_better_core(const char *core, int has_avx2, int has_avx512f, int is_amd) {
    static const char *const AVX512_CORES[] = {"SkylakeX", "CooperLake", "SapphireRapids", NULL};
    static const char *const AVX2_CORES[] = {"Haswell", "Zen", "SkylakeX", "CooperLake", "SapphireRapids", NULL};
    if (!has_avx2 && !has_avx512f) return NULL;
    const char *const *ok = has_avx512f ? AVX512_CORES : AVX2_CORES;
    for (int i = 0; core && ok[i]; i++)
        if (!strcasecmp(core, ok[i])) return NULL;
    return has_avx512f ? "SkylakeX" : is_amd ? "Zen" : "Haswell";
}

const char *engine_blas_advice(void) {
    const char *set = getenv("OPENBLAS_CORETYPE");
    if (set && *set) return NULL;
    __builtin_cpu_init();
    const char *core = openblas_get_corename();
    const char *best = engine_blas_better_core(core, __builtin_cpu_supports("avx2"), __builtin_cpu_supports("avx512f"),
                                               __builtin_cpu_is("amd"));
    if (!best) return NULL;
    static char buf[256];
    snprintf(buf, sizeof buf,
             "OpenBLAS chose its %s kernels for this CPU (it does not know the model); export "
             "OPENBLAS_CORETYPE=%s for several times faster matrix products",
             core ? core : "generic", best);
    return buf;
}
