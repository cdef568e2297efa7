/*
 * perf_loader.c — throughput of the data path: synthetic VinDr-style dataset -> converter ->
 * prepared HDF5 -> DINOv2 multi-crop loader (with iBOT masks) and the plain supervised loader
 * (512 + CLAHE).  Prints numbers; asserts nothing about time.
 *
 *   perf_loader [n_patients=16] [prepared_size=256] [workers=2] [batches=12]
 *               [--config FILE.yaml] [--set KEY=VALUE ...]
 *
 * Multi-crop cases:
 *   - the DINOv2 defaults, 2 x 224 + 8 x 96 (from prepared_size and from 512);
 *   - the pretraining config (default configs/pretrain/vit_tiny_cpu.yaml, + --set overrides) at
 *     224: its crop counts, scales and iBOT settings with crops.global_crops_size = 224 and
 *     crops.local_crops_size = 96 — the "multi-crop loading at 224" of the issue, the same crops
 *     bench/perf/perf_pretrain.c trains on;
 *   - that config exactly as written (2 x 96 + 4 x 48 for vit_tiny_cpu), what `versa pretrain`
 *     with it loads.
 * The loader is set up from the config the way ssl_pretrain does it (ssl/pretrain.c).
 *
 * Every case is timed by the wall clock and by the process's CPU time (the worker threads'
 * work; the main thread only waits).  On a shared machine the wall clock measures the load as
 * much as the loader; the "core" rate = images / (CPU-seconds / workers) is what the workers
 * deliver with a core each.  Lines starting with "RESULT data" are read by bench/run_data.sh.
 *
 * The synthetic generator (data/synth.h) writes the raw dataset; if it fails the program falls
 * back to random images written straight into a prepared file (and says so).
 */
#include "data/data.h"
#include "ssl/ssl.h"
#include "bench/perf/perf_common.h"

#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int random_prepared(const char *path, int n, int size, Err *e) {
    PrepSchema s = {.dataset = "random", .height = size, .width = size, .bits = 16, .gzip = 4, .n_labels = 1,
                    .labels = {{"density", PREP_CLASSES_DENSITY}}};
    PrepWriter *w;
    if (prep_writer_open(&w, path, &s, e)) return 1;
    uint16_t *px = malloc((size_t)size * size * sizeof *px);   /* (size, size) */
    Rng r;
    rng_init(&r, 1);
    for (int i = 0; i < n; i++) {
        for (int y = 0; y < size; y++)
            for (int x = 0; x < size; x++)
                px[(size_t)y * size + x] = (uint16_t)(x < size * 2 / 3 ? 20000 + (rng_u32(&r) & 8191) + 40 * y : 0);
        int32_t lab = i % 4;
        char id[32];
        snprintf(id, sizeof id, "r%d", i);
        PrepSample smp = {.pixels = px, .labels = &lab, .split = 0, .patient_id = id, .image_id = id};
        if (prep_writer_add(w, &smp, e)) {
            free(px);
            prep_writer_abort(w);
            return 1;
        }
    }
    free(px);
    return prep_writer_close(w, e);
}

/* Times n_batches batches after 2 warm-up batches; prints one line and, with a key, the RESULT
 * lines <key>_images_per_s (wall), _images_per_s_core and _cpu_ms_per_image. */
static void bench_loader(const char *name, const char *key, const Corpus *c, LoaderConfig cfg, int n_batches) {
    Loader *L;
    Err e;
    if (loader_open(&L, c, &cfg, &e)) {
        fprintf(stderr, "perf_loader: %s\n", e.msg);
        return;
    }
    const Batch *b;
    for (int k = 0; k < 2; k++)   /* warm-up: threads started, buffers touched */
        if (loader_next(L, &b, &e)) {
            fprintf(stderr, "perf_loader: %s\n", e.msg);
            loader_close(L);
            return;
        }
    double t0 = perf_clock(CLOCK_MONOTONIC), c0 = perf_clock(CLOCK_PROCESS_CPUTIME_ID);
    for (int k = 0; k < n_batches; k++)
        if (loader_next(L, &b, &e)) {
            fprintf(stderr, "perf_loader: %s\n", e.msg);
            break;
        }
    double dt = perf_clock(CLOCK_MONOTONIC) - t0, dc = perf_clock(CLOCK_PROCESS_CPUTIME_ID) - c0;
    double images = (double)n_batches * cfg.batch_size;
    int w = cfg.n_workers > 0 ? cfg.n_workers : 1;
    printf("%-50s workers %d  batch %3d  %6.2f batches/s  %7.1f images/s  (%.1f ms CPU per image = %.1f images/s core)\n",
           name, cfg.n_workers, cfg.batch_size, n_batches / dt, images / dt, 1e3 * dc / images, images / (dc / w));
    if (key) {
        printf("RESULT data %s_images_per_s %.2f\n", key, images / dt);
        printf("RESULT data %s_images_per_s_core %.2f\n", key, images / (dc / w));
        printf("RESULT data %s_cpu_ms_per_image %.2f\n", key, 1e3 * dc / images);
        printf("RESULT data %s_workers %d\n", key, cfg.n_workers);
    }
    fflush(stdout);
    loader_close(L);
}

/* The multi-crop loader of a pretraining config, as ssl_pretrain builds it (ssl/pretrain.c). */
static LoaderConfig loader_from_ssl(const SslConfig *s, int workers, int batch) {
    LoaderConfig lc = ssl_loader_config(s);
    lc.split = -1;
    lc.batch_size = batch;
    lc.n_workers = workers;
    return lc;
}

/* Config file + overrides (+ extra, e.g. the 224 crop sizes) -> SslConfig. */
static int ssl_from(const char *path, const char **sets, int nsets, const char **extra, int nextra, SslConfig *s,
                    Err *e) {
    Config cfg;
    cfg_init(&cfg);
    int rc = cfg_declare(&cfg, PRETRAIN_KEYS, PRETRAIN_N_KEYS, e);
    if (!rc && path) rc = cfg_load_file(&cfg, path, e);
    for (int i = 0; i < nsets && !rc; i++) rc = cfg_override(&cfg, sets[i], 0, e);
    for (int i = 0; i < nextra && !rc; i++) rc = cfg_override(&cfg, extra[i], 0, e);
    if (!rc) rc = ssl_config_from(&cfg, s, e);
    cfg_free(&cfg);
    return rc;
}

int main(int argc, char **argv) {
    long n_patients = 16;
    int size = 256, workers = 2, n_batches = 12;
    const char *config = "configs/pretrain/vit_tiny_cpu.yaml";
    const char *sets[16];
    int nsets = 0, npos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config") && i + 1 < argc) config = argv[++i];
        else if (!strcmp(argv[i], "--set") && i + 1 < argc && nsets < 16) sets[nsets++] = argv[++i];
        else if (argv[i][0] != '-' && npos < 4) {
            long v = atol(argv[i]);
            if (npos == 0) n_patients = v;
            else if (npos == 1) size = (int)v;
            else if (npos == 2) workers = (int)v;
            else n_batches = (int)v;
            npos++;
        } else {
            fprintf(stderr, "usage: %s [n_patients] [prepared_size] [workers] [batches] [--config FILE.yaml] "
                            "[--set KEY=VALUE ...]\n", argv[0]);
            return 2;
        }
    }
    if (n_patients < 1 || size < 64 || workers < 0 || n_batches < 1) {
        fprintf(stderr, "perf_loader: need n_patients >= 1, prepared_size >= 64, workers >= 0, batches >= 1\n");
        return 2;
    }
    engine_threads_init();
    char dir[] = "/tmp/versa_perf_loader_XXXXXX";
    if (!mkdtemp(dir)) return 1;
    char raw[300], prepared[300], prepared512[300];
    snprintf(raw, sizeof raw, "%s/raw", dir);
    snprintf(prepared, sizeof prepared, "%s/vindr_%d.h5", dir, size);
    snprintf(prepared512, sizeof prepared512, "%s/vindr_512.h5", dir);
    printf("perf_loader: %d OpenMP threads, %ld synthetic patients (%ld images)\n", omp_get_max_threads(), n_patients,
           4 * n_patients);

    Err e;
    SynthConfig sc;
    synth_config_default(&sc);
    sc.n_patients = n_patients;
    sc.quiet = 1;
    double t0 = perf_clock(CLOCK_MONOTONIC);
    int have_raw = synth_write_dataset(&sc, raw, SYNTH_FMT_VINDR, &e) == 0;
    double t_synth = perf_clock(CLOCK_MONOTONIC) - t0;
    int n_images = 0;
    if (have_raw) {
        printf("synthesis (VinDr format, %dx%d 12-bit DICOM): %.1f images/s\n", sc.width, sc.height,
               4.0 * n_patients / t_synth);
        int sizes[2] = {size, 512};
        const char *outs[2] = {prepared, prepared512};
        for (int k = 0; k < (size == 512 ? 1 : 2); k++) {
            ConvertOpts o = convert_opts_default();
            char vroot[340];
            snprintf(vroot, sizeof vroot, "%s/vindr-mammo", raw);
            o.raw_root = vroot;
            o.out_path = outs[k];
            o.width = o.height = sizes[k];
            ConvertStats st;
            if (convert_vindr(&o, &st, &e)) {
                fprintf(stderr, "perf_loader: convert: %s\n", e.msg);
                have_raw = 0;
                break;
            }
            n_images = (int)st.n_written;
            printf("convert_vindr -> %dx%d uint16 gzip 4: %ld images in %.2f s = %.1f images/s\n", sizes[k], sizes[k],
                   st.n_written, st.seconds, st.n_written / st.seconds);
        }
    } else {
        fprintf(stderr, "perf_loader: synthetic dataset unavailable (%s); using random images\n", e.msg);
    }
    if (!have_raw) {
        n_images = (int)(4 * n_patients);
        if (random_prepared(prepared, n_images, size, &e) || random_prepared(prepared512, n_images, 512, &e)) {
            fprintf(stderr, "perf_loader: %s\n", e.msg);
            return 1;
        }
    }

    Corpus c;
    CorpusSource src = {prepared, 1.0f};
    if (corpus_open(&c, &src, 1, &e)) {
        fprintf(stderr, "perf_loader: %s\n", e.msg);
        return 1;
    }
    LoaderConfig cfg = loader_config_default(LOADER_MULTICROP);
    cfg.split = -1;
    cfg.batch_size = 32 < n_images ? 32 : n_images;
    cfg.n_workers = workers;
    char name[160];
    snprintf(name, sizeof name, "multi-crop 2x224 + 8x96 + iBOT, from %d", size);
    bench_loader(name, NULL, &c, cfg, n_batches);
    cfg.n_workers = 1;
    bench_loader(name, NULL, &c, cfg, n_batches / 2 > 2 ? n_batches / 2 : 2);
    corpus_close(&c);

    CorpusSource s512 = {prepared512, 1.0f};
    if (corpus_open(&c, &s512, 1, &e) == 0) {
        cfg = loader_config_default(LOADER_MULTICROP);
        cfg.split = -1;
        cfg.batch_size = 32 < n_images ? 32 : n_images;
        cfg.n_workers = workers;
        bench_loader("multi-crop 2x224 + 8x96 + iBOT, from 512", NULL, &c, cfg, n_batches);

        /* the pretraining config: at 224 (global 224, local 96) and as written */
        static const char *at224[2] = {"crops.global_crops_size=224", "crops.local_crops_size=96"};
        const char *cname = strrchr(config, '/') ? strrchr(config, '/') + 1 : config;
        for (int k = 0; k < 2; k++) {
            SslConfig s;
            if (ssl_from(config, sets, nsets, at224, k == 0 ? 2 : 0, &s, &e)) {
                fprintf(stderr, "perf_loader: %s\n", e.msg);
                continue;
            }
            int B = s.batch < n_images ? s.batch : n_images;
            LoaderConfig lc = loader_from_ssl(&s, workers, B);
            snprintf(name, sizeof name, "%s: 2x%d + %dx%d%s, from 512", cname, s.global_size, s.n_local, s.local_size,
                     lc.ibot ? " + iBOT" : "");
            const char *key = k == 0 ? "loader_mc224" : "loader_mc_config";
            bench_loader(name, key, &c, lc, n_batches);
            if (k == 0) {
                printf("RESULT data loader_mc224_crops 2x%d+%dx%d\n", s.global_size, s.n_local, s.local_size);
                lc.n_workers = 1;   /* one worker: the per-worker rate */
                bench_loader(name, "loader_mc224_1w", &c, lc, n_batches / 2 > 2 ? n_batches / 2 : 2);
            } else {
                printf("RESULT data loader_mc_config_crops 2x%d+%dx%d\n", s.global_size, s.n_local, s.local_size);
            }
        }

        LoaderConfig pc = loader_config_default(LOADER_PLAIN);
        pc.batch_size = 8 < n_images ? 8 : n_images;
        pc.n_workers = workers;
        pc.plain.hflip_p = pc.plain.vflip_p = 0.5f;
        bench_loader("plain 512, flips", NULL, &c, pc, n_batches);
        pc.plain.clahe = 1;
        bench_loader("plain 512, flips + CLAHE (2.0, 8x8)", NULL, &c, pc, n_batches);
        corpus_close(&c);
    }
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    if (system(cmd) != 0) fprintf(stderr, "perf_loader: could not remove %s\n", dir);
    return 0;
}
