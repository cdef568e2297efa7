/*
 * perf_synth.c — throughput of the synthetic mammogram generator, the work of `versa synth`:
 * render (anatomy, texture, lesions, projection, noise) + write the files of the chosen formats
 * (synth_write_dataset, parallel over images with OpenMP).  Prints numbers; asserts nothing.
 *
 *   perf_synth [--patients N=8] [--size WxH=416x512] [--passes P=2]
 *
 * Cases (each the best of P passes, a fresh output folder per pass):
 *   vindr  12-bit DICOM + the two VinDr CSVs          (`versa synth --formats vindr`)
 *   all    VinDr + CBIS-DDSM (DICOM images, ROI masks, crops, CSVs) + MammoVQA (PNG + JSON),
 *          the default of `versa synth`
 * Threads: OMP_NUM_THREADS / VERSA_THREADS.  Rates are given by the wall clock and as "core"
 * rates, images / (CPU-seconds / threads): on a shared machine the wall clock measures the load
 * as much as the generator.  Lines starting with "RESULT data" are read by bench/run_data.sh.
 */
#include "data/data.h"
#include "bench/perf/perf_common.h"

#include <omp.h>
#include <unistd.h>

int main(int argc, char **argv) {
    long n_patients = 8;
    int W = 416, H = 512, passes = 2;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--patients")) n_patients = atol(argv[i + 1]);
        else if (!strcmp(argv[i], "--size")) {
            if (sscanf(argv[i + 1], "%dx%d", &W, &H) != 2) W = H = 0;
        } else if (!strcmp(argv[i], "--passes")) passes = atoi(argv[i + 1]);
        else {
            W = 0;
            break;
        }
    }
    if (argc % 2 == 0 || n_patients < 1 || W < 64 || H < 64 || passes < 1) {
        fprintf(stderr, "usage: %s [--patients N] [--size WxH] [--passes P]\n", argv[0]);
        return 2;
    }
    int nt = engine_threads_init();
    SynthConfig sc;
    synth_config_default(&sc);
    sc.n_patients = n_patients;
    sc.width = W;
    sc.height = H;
    sc.quiet = 1;
    const double images = 4.0 * (double)n_patients;
    printf("perf_synth: %d threads, %ld patients = %.0f images at %dx%d, %d-bit, best of %d passes\n", nt, n_patients,
           images, W, H, sc.bits, passes);
    char dir[] = "/tmp/versa_perf_synth_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    static const struct { const char *name; int formats; } cases[2] = {{"vindr", SYNTH_FMT_VINDR}, {"all", SYNTH_FMT_ALL}};
    for (int k = 0; k < 2; k++) {
        PerfTm best = PERF_TM_WORST;
        for (int p = 0; p < passes; p++) {
            char out[300], cmd[340];
            snprintf(out, sizeof out, "%s/%s_%d", dir, cases[k].name, p);
            Err e;
            PerfTm t0 = perf_now();
            if (synth_write_dataset(&sc, out, cases[k].formats, &e)) {
                fprintf(stderr, "perf_synth: %s\n", e.msg);
                return 1;
            }
            perf_best(&best, perf_since(t0));
            snprintf(cmd, sizeof cmd, "rm -rf %s", out);
            if (system(cmd) != 0) fprintf(stderr, "perf_synth: could not remove %s\n", out);
        }
        printf("synth %-6s %dx%d: %.2f s wall = %6.1f images/s; %.1f ms CPU per image = %6.1f images/s core\n",
               cases[k].name, W, H, best.wall, images / best.wall, 1e3 * best.cpu / images, images / (best.cpu / nt));
        printf("RESULT data synth_%s_images_per_s %.2f\n", cases[k].name, images / best.wall);
        printf("RESULT data synth_%s_images_per_s_core %.2f\n", cases[k].name, images / (best.cpu / nt));
        printf("RESULT data synth_%s_cpu_ms_per_image %.2f\n", cases[k].name, 1e3 * best.cpu / images);
        fflush(stdout);
    }
    printf("RESULT data synth_size %dx%d\n", W, H);
    printf("RESULT data synth_threads %d\n", nt);
    rmdir(dir);
    return 0;
}
