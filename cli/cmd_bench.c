/* cmd_bench.c — `versa bench`: list a suite, make the synthetic datasets, or run the benchmark
 * on frozen backbones and write the report. */
#include "cli/cli.h"
#include "bench/bench.h"
#include "engine/train.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_ARGS 64

static void usage(void) {
    printf("usage: versa bench --suite SUITE --model NAME=SPEC [--model NAME=SPEC ...] --data-root DIR\n"
           "                   --out DIR [--tasks FILE.yaml ...] [--only PATTERN,...] [--baseline NAME]\n"
           "                   [--no-cache] [--quiet]\n"
           "                   [key=value ...]\n"
           "       versa bench --list [--suite SUITE] [--tasks FILE.yaml ...] [--data-root DIR]\n"
           "       versa bench --make-synthetic DIR [--patients N] [--seed S] [--size WxH] [--acquisition X]\n\n"
           "Scores frozen backbones on the benchmark tasks of a suite: features are extracted once per\n"
           "(model, dataset, preprocessing) and cached under OUT/features; linear, multi-label, k-NN and\n"
           "retrieval protocols run on them; every test metric gets a bootstrap 95%% CI.  Writes\n"
           "OUT/results.csv, status.csv, report.md (a table per category, average rank, first places)\n"
           "and ranks.png.  A task whose dataset is missing is skipped.  See docs/benchmark.md.\n\n"
           "SUITE: synthetic, versamammo92 (configs/bench/NAME.yaml) or a YAML file.\n"
           "SPEC:\n"
           "  ckpt:PATH[:teacher|student][:SIZE]        stage-1 checkpoint of versa pretrain\n"
           "  effnet-ckpt:PATH[:efficientnet-bN][:SIZE][:prefix=P]\n"
           "                                            lukemelas-named EfficientNet (stage-2 student,\n"
           "                                            or weights converted from PyTorch)\n"
           "  vit-h5:PATH[:SIZE][:prefix=P]             DINOv2-named ViT tensors (e.g. from PyTorch)\n"
           "  random:vit_tiny:16[:SIZE]                 random-init baselines (vit_tiny..vit_large)\n"
           "  random:efficientnet-b0[:SIZE]             (efficientnet-b0..b7); seed=N picks the init\n"
           "Without SIZE, input.size is used (ViTs: the nearest multiple of the patch).  ViT options:\n"
           "  feature=gap|cls|cls_gap  the probed feature: mean of the final-norm patch tokens (default,\n"
           "                           the paper's), the CLS token, or both (DINOv2's linear evaluation)\n"
           "  layerscale=X             random ViTs: LayerScale init (default 1e-5; 1 = the CPU pretraining\n"
           "                           configs' init)\n\n"
           "options:\n"
           "  --list              one line per task: category, unit, protocols, dataset present/missing\n"
           "  --tasks FILE.yaml   more datasets/tasks (e.g. a private cohort), merged into the suite\n"
           "  --only PATTERNS     comma-separated globs on task ids or categories (cbis_*,retrieval)\n"
           "  --baseline NAME     paired bootstrap differences of every other model to model NAME on the\n"
           "                      same test resamples (OUT/paired.csv and a section of report.md)\n"
           "  --no-cache          extract features again and do not write the cache\n"
           "  --quiet             no progress lines\n"
           "  --make-synthetic D  synthesise VinDr/CBIS-layout datasets and prepare them into D\n"
           "                      (synth-vindr.h5, synth-cbis.h5, raw/mammovqa/*.json): the data of the\n"
           "                      synthetic suite; with --patients N (250), --seed S (0), --size WxH\n"
           "                      (256x320) and --acquisition X (1: versa synth's display spread)\n\n"
           "settings (key=value overrides the suite):\n");
    cfg_print_help(BENCH_SETTINGS_KEYS, BENCH_N_SETTINGS_KEYS, stdout);
}

static int make_synthetic(const char *dir, int argc, char **argv) {
    BenchSynthOpts o = bench_synth_opts_default();
    o.dir = dir;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        char *end = NULL;
        if (!strcmp(a, "--make-synthetic")) {
            i++;
            continue;
        }
        if (!v) return cli_fail("bench: %s needs a value", a);
        if (!strcmp(a, "--patients")) {
            o.patients = strtol(v, &end, 10);
            if (*end || o.patients < 4) return cli_fail("bench: --patients: '%s' is not a count >= 4", v);
        } else if (!strcmp(a, "--seed")) {
            o.seed = strtoull(v, &end, 10);
            if (*end) return cli_fail("bench: --seed: '%s' is not an integer", v);
        } else if (!strcmp(a, "--size")) {
            if (sscanf(v, "%dx%d", &o.width, &o.height) != 2) return cli_fail("bench: --size: '%s' is not WxH", v);
        } else if (!strcmp(a, "--acquisition")) {
            o.acq_spread = strtof(v, &end);
            if (end == v || *end) return cli_fail("bench: --acquisition: '%s' is not a number", v);
        } else {
            return cli_fail("bench: --make-synthetic takes --patients, --seed, --size, --acquisition (not '%s')", a);
        }
        i++;
    }
    engine_threads_init();
    Err e = {0};
    double t0 = wall_seconds();
    if (bench_make_synthetic(&o, &e)) return cli_fail("%s", e.msg);
    fprintf(stderr, "[bench] synthetic datasets ready in %.1f s: versa bench --suite synthetic --data-root %s ...\n",
            wall_seconds() - t0, dir);
    return 0;
}

int cmd_bench(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        usage();
        return 0;
    }
    const char *suite = NULL, *data_root = ".", *out = NULL, *synth_dir = NULL, *baseline = NULL;
    const char *tasks[MAX_ARGS], *overrides[MAX_ARGS], *only[MAX_ARGS];
    BenchModelSpec models[MAX_ARGS];
    char only_buf[1024] = "", model_buf[MAX_ARGS][600];
    int n_tasks = 0, n_over = 0, n_only = 0, n_models = 0, list = 0, no_cache = 0, quiet = 0;
    const char *synth_opt = NULL;   /* --patients / --seed / --size / --acquisition: options of --make-synthetic */
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--list")) list = 1;
        else if (!strcmp(a, "--no-cache")) no_cache = 1;
        else if (!strcmp(a, "--quiet")) quiet = 1;
        else if (a[0] == '-' && a[1] == '-') {
            const char *v = i + 1 < argc ? argv[++i] : NULL;
            if (!v) return cli_fail("bench: %s needs a value", a);
            if (!strcmp(a, "--suite")) suite = v;
            else if (!strcmp(a, "--data-root")) data_root = v;
            else if (!strcmp(a, "--out")) out = v;
            else if (!strcmp(a, "--make-synthetic")) synth_dir = v;
            else if (!strcmp(a, "--baseline")) baseline = v;
            else if (!strcmp(a, "--patients") || !strcmp(a, "--seed") || !strcmp(a, "--size") || !strcmp(a, "--acquisition"))
                synth_opt = a;
            else if (!strcmp(a, "--tasks")) {
                if (n_tasks == MAX_ARGS) return cli_fail("bench: too many --tasks");
                tasks[n_tasks++] = v;
            } else if (!strcmp(a, "--only")) {
                size_t l = strlen(only_buf);
                snprintf(only_buf + l, sizeof only_buf - l, "%s%s", l ? "," : "", v);
            } else if (!strcmp(a, "--model")) {
                if (n_models == MAX_ARGS) return cli_fail("bench: too many --model");
                const char *eq = strchr(v, '=');
                if (!eq || eq == v || !eq[1]) return cli_fail("bench: --model: '%s' is not NAME=SPEC (e.g. vit=random:vit_tiny:16:96)", v);
                snprintf(model_buf[n_models], sizeof model_buf[n_models], "%s", v);
                model_buf[n_models][eq - v] = 0;
                models[n_models] = (BenchModelSpec){model_buf[n_models], model_buf[n_models] + (eq - v) + 1};
                n_models++;
            } else {
                return cli_fail("bench: unknown option '%s' (try 'versa bench --help')", a);
            }
        } else if (strchr(a, '=')) {
            if (n_over == MAX_ARGS) return cli_fail("bench: too many key=value overrides");
            overrides[n_over++] = a;
        } else {
            return cli_fail("bench: unexpected argument '%s' (try 'versa bench --help')", a);
        }
    }
    if (synth_dir) return make_synthetic(synth_dir, argc, argv);
    if (synth_opt) return cli_fail("bench: %s only goes with --make-synthetic DIR", synth_opt);
    for (char *save = NULL, *t = strtok_r(only_buf, ",", &save); t && n_only < MAX_ARGS; t = strtok_r(NULL, ",", &save))
        only[n_only++] = t;
    Err e = {0};
    if (list) {
        BenchRegistry r;
        if (bench_registry_load(&r, suite ? suite : "versamammo92", tasks, n_tasks, overrides, n_over, &e))
            return cli_fail("%s", e.msg);
        bench_list(stdout, &r, data_root);
        bench_registry_free(&r);
        return 0;
    }
    if (!suite) return cli_fail("bench: no --suite given (synthetic, versamammo92 or a YAML file)");
    if (n_models == 0) return cli_fail("bench: no --model NAME=SPEC given (e.g. --model vit=random:vit_tiny:16:96)");
    char out_default[300];
    if (!out) {
        const char *b = strrchr(suite, '/');
        snprintf(out_default, sizeof out_default, "bench/results/%s", b ? b + 1 : suite);
        char *dot = strstr(out_default, ".y");
        if (dot) *dot = 0;
        out = out_default;
    }
    BenchRunOpts o = {.suite = suite, .task_files = tasks, .n_task_files = n_tasks, .overrides = overrides,
                      .n_overrides = n_over, .models = models, .n_models = n_models, .data_root = data_root,
                      .out_dir = out, .only = only, .n_only = n_only, .baseline = baseline, .no_cache = no_cache,
                      .quiet = quiet};
    cli_note_blas(1);
    BenchRun run;
    if (bench_run(&o, &run, &e)) {
        bench_run_free(&run);
        return cli_fail("%s", e.msg);
    }
    int rc = bench_write_report(&run, out, &e);
    int counts[4] = {0};
    for (size_t i = 0; i < (size_t)run.n_models * run.n_sel; i++) counts[run.res[i].status]++;
    fprintf(stderr, "[bench] done in %.1f s: %d ok, %d skipped (dataset missing), %d not implemented yet, %d failed -> %s/report.md\n",
            run.seconds, counts[BENCH_OK], counts[BENCH_SKIPPED], counts[BENCH_NOT_IMPLEMENTED], counts[BENCH_FAILED], out);
    bench_run_free(&run);
    if (rc) return cli_fail("%s", e.msg);
    if (counts[BENCH_FAILED]) return cli_fail("bench: %d task run(s) failed (see %s/status.csv)", counts[BENCH_FAILED], out);
    return 0;
}
