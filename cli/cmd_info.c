/* cmd_info.c — `versa info`: what this build is and what it will run on. */
#include "cli/cli.h"
#include <hdf5.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <yaml.h>

/* the "model name" line of /proc/cpuinfo, or "unknown" */
static void cpu_model(char *buf, size_t n) {
    snprintf(buf, n, "unknown");
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (!f) return;
    char line[256];
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, "model name", 10)) continue;
        const char *v = strchr(line, ':');
        if (v) {
            v += 1 + (v[1] == ' ');
            snprintf(buf, n, "%.*s", (int)strcspn(v, "\n"), v);
        }
        break;
    }
    fclose(f);
}

int cmd_info(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        printf("usage: versa info\n\nPrints the version, the thread count (VERSA_THREADS, else OMP_NUM_THREADS,\n"
               "else every core), the BLAS library and kernel in use, the CPU and library versions.\n");
        return 0;
    }
    if (argc > 1) return cli_fail("info: unexpected argument '%s' (try 'versa info --help')", argv[1]);
    int threads = engine_threads_init();
    char cpu[160];
    cpu_model(cpu, sizeof cpu);
    unsigned h5maj = 0, h5min = 0, h5rel = 0;
    H5get_libversion(&h5maj, &h5min, &h5rel);
    struct sysinfo si;
    double mem_gb = sysinfo(&si) == 0 ? (double)si.totalram * si.mem_unit / (1 << 30) : 0;
    const char *simd =
#if defined(__AVX512F__)
        "AVX-512";
#elif defined(__AVX2__) && defined(__FMA__)
        "AVX2+FMA";
#elif defined(__AVX2__)
        "AVX2";
#else
        "SSE2";
#endif
    printf("versa %s (versamammo.c)\n", VERSA_VERSION);
    printf("threads  %d\n", threads);
    printf("BLAS     %s\n", engine_blas_info());
    const char *advice = engine_blas_advice();
    if (advice) printf("         note: %s\n", advice);
    printf("CPU      %s, %ld cores online, %.1f GB RAM; built for %s\n", cpu, (long)get_nprocs(), mem_gb, simd);
    printf("libs     HDF5 %u.%u.%u, libyaml %s\n", h5maj, h5min, h5rel, yaml_get_version_string());
    return 0;
}
