/* cmd_distill.c — `versa distill CONFIG.yaml [key=value ...] [--resume | --probe]`: stage 2. */
#include "cli/cli.h"
#include "distill/distill.h"
#include "engine/train.h"
#include <stdio.h>
#include <string.h>

static void print_probe(const ProbeResult *r, const char *what) {
    printf("probe %s (%.1f s)\n", what, r->seconds);
    printf("  %-24s %7s %7s %7s %9s %9s %9s\n", "task", "classes", "train", "test", "knn_bacc", "top1", "logreg");
    for (int i = 0; i < r->n_tasks; i++) {
        const ProbeTask *t = &r->task[i];
        printf("  %-24s %7d %7ld %7ld %9.4f %9.4f %9.4f   (chance %.4f, top-1 %.4f)\n", t->name, t->n_classes, t->n_train,
               t->n_test, t->knn_bacc, t->top1, t->logreg_bacc, t->chance, t->top1_chance);
    }
}

int cmd_distill(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        cli_print_config_help("distill [--resume | --probe]",
                              "Stage 2: the EfficientNet student (lukemelas names) trained with supervised heads\n"
                              "(BI-RADS, density, ... from the prepared file) plus relational distillation from the\n"
                              "stage-1 teacher: features from `versa extract` or the teacher run online.  Writes\n"
                              "<train.output_dir>/checkpoint.h5 (student + Adam state, loadable into PyTorch with\n"
                              "strict=True, see distill/distill.h) and metrics.jsonl.  --resume continues exactly.\n"
                              "--probe: frozen-feature k-NN / retrieval / logistic probes of probe.checkpoint (or a\n"
                              "random init) on probe.tasks.  Multi-node: mpirun -np R build/versa distill ...",
                              DISTILL_KEYS, DISTILL_N_KEYS);
        return 0;
    }
    int resume = 0, probe = 0;
    char *args[256];
    int n = 0;
    for (int i = 0; i < argc && n < 255; i++) {
        if (!strcmp(argv[i], "--resume")) resume = 1;
        else if (!strcmp(argv[i], "--probe")) probe = 1;
        else args[n++] = argv[i];
    }
    if (resume && probe) return cli_fail("distill: --resume and --probe exclude each other");
    Ctx c;
    ctx_init(&c, 0);
    if (!probe) dist_init(&c, NULL, NULL);
    c.nthreads = engine_threads_init();
    cli_note_blas(dist_is_root(&c));
    Config cfg;
    if (cli_load_config(&cfg, DISTILL_KEYS, DISTILL_N_KEYS, n, args)) {
        ctx_free(&c);
        dist_finalize();
        return 1;
    }
    Err e = {0};
    int rc;
    if (probe) {
        ProbeResult pr;
        rc = distill_probe(&cfg, &c, &pr, &e);
        if (rc) cli_fail("%s", e.msg);
        else print_probe(&pr, cfg_get_str(&cfg, "probe.checkpoint", "")[0] ? cfg_get_str(&cfg, "probe.checkpoint", "") : "random init");
    } else {
        TrainRunResult res = {0};
        rc = distill_train(&cfg, resume, &c, &res, &e);
        if (rc) {
            if (c.world > 1) dist_abort(&c, "%s", e.msg);
            cli_fail("%s", e.msg);
        } else if (dist_is_root(&c)) {
            train_print_done("distill", &res);
        }
    }
    cfg_free(&cfg);
    ctx_free(&c);
    dist_finalize();
    return rc ? 1 : 0;
}
