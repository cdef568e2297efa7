/* cmd_extract.c — `versa extract CHECKPOINT PREPARED.h5 OUT.h5`: stage-1 features for stage 2. */
#include "cli/cli.h"
#include "ssl/ssl.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cmd_extract(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        printf("usage: versa extract CHECKPOINT.h5 PREPARED.h5 OUT.h5 [--model teacher|student] [--size N]\n"
               "                     [--batch B]\n\n"
               "Runs a stage-1 checkpoint's teacher (default) or student over every image of a prepared\n"
               "dataset and writes, per image: /cls and /gap (mean of the final-norm patch tokens, the\n"
               "paper's downstream feature), /dino_bottleneck and /ibot_bottleneck (the heads'\n"
               "L2-normalised bottlenecks) and /sample (the image's index in PREPARED.h5).  This file is\n"
               "the teacher signal of `versa distill` and a retrieval database.\n\n"
               "  --size N    input size (a multiple of the patch; default: the global crop size)\n"
               "  --batch B   images per forward pass (32)\n");
        return 0;
    }
    SslExtractOpts o = {.which = "teacher", .batch = 32};
    const char *pos[3];
    int np = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] != '-') {
            if (np == 3) return cli_fail("extract: unexpected argument '%s'", a);
            pos[np++] = a;
            continue;
        }
        const char *v = i + 1 < argc ? argv[++i] : NULL;
        if (!v) return cli_fail("extract: %s needs a value", a);
        char *end;
        if (!strcmp(a, "--model")) {
            if (strcmp(v, "teacher") && strcmp(v, "student")) return cli_fail("extract: --model: '%s' is not teacher or student", v);
            o.which = v;
        } else if (!strcmp(a, "--size")) {
            o.image_size = (int)strtol(v, &end, 10);
            if (*end || o.image_size < 1) return cli_fail("extract: --size: '%s' is not a positive integer", v);
        } else if (!strcmp(a, "--batch")) {
            o.batch = (int)strtol(v, &end, 10);
            if (*end || o.batch < 1) return cli_fail("extract: --batch: '%s' is not a positive integer", v);
        } else {
            return cli_fail("extract: unknown option '%s' (try 'versa extract --help')", a);
        }
    }
    if (np != 3) return cli_fail("extract: expected CHECKPOINT.h5 PREPARED.h5 OUT.h5 (try 'versa extract --help')");
    o.checkpoint = pos[0];
    o.prepared = pos[1];
    o.out = pos[2];
    Ctx c;
    ctx_init(&c, 0);
    c.nthreads = engine_threads_init();
    cli_note_blas(1);
    Err e = {0};
    int rc = ssl_extract(&o, &c, &e);
    ctx_free(&c);
    if (rc) return cli_fail("%s", e.msg);
    fprintf(stderr, "[extract] %s features -> %s\n", o.which, o.out);
    return 0;
}
