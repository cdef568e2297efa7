/* cmd_pretrain.c — `versa pretrain CONFIG.yaml [key=value ...] [--resume]`: stage 1. */
#include "cli/cli.h"
#include "engine/train.h"
#include "ssl/ssl.h"
#include <stdio.h>
#include <string.h>

int cmd_pretrain(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        cli_print_config_help("pretrain [--resume]",
                              "Stage 1: DINOv2-style self-supervised training of the ViT teacher (DINO + iBOT +\n"
                              "KoLeo, EMA teacher, multi-crop) on prepared HDF5 datasets.  Writes\n"
                              "<train.output_dir>/checkpoint.h5 (student, teacher, optimizer, RNG, centers) and\n"
                              "metrics.jsonl.  --resume continues exactly from the checkpoint.  Multi-node:\n"
                              "mpirun -np R build/versa pretrain ... (data-parallel, see docs/cluster.md).",
                              PRETRAIN_KEYS, PRETRAIN_N_KEYS);
        return 0;
    }
    int resume = 0;
    char *args[256];
    int n = 0;
    for (int i = 0; i < argc && n < 255; i++) {
        if (!strcmp(argv[i], "--resume")) resume = 1;
        else args[n++] = argv[i];
    }
    Ctx c;
    ctx_init(&c, 0);
    dist_init(&c, NULL, NULL);
    c.nthreads = engine_threads_init();
    cli_note_blas(dist_is_root(&c));
    Config cfg;
    if (cli_load_config(&cfg, PRETRAIN_KEYS, PRETRAIN_N_KEYS, n, args)) {
        dist_finalize();
        return 1;
    }
    Err e = {0};
    TrainRunResult res = {0};
    int rc = ssl_pretrain(&cfg, resume, &c, &res, &e);
    if (rc) {
        if (c.world > 1) dist_abort(&c, "%s", e.msg);
        cli_fail("%s", e.msg);
    } else if (dist_is_root(&c)) {
        train_print_done("pretrain", &res);
    }
    cfg_free(&cfg);
    ctx_free(&c);
    dist_finalize();
    return rc ? 1 : 0;
}
