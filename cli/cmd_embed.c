/* cmd_embed.c — `versa embed --model CONFIG_OR_CHECKPOINT --image FILE`: the embedding of one image,
 * the quickest check that a checkpoint (or a config's random initialisation) works. */
#include "cli/cli.h"
#include "data/data.h"
#include "ssl/ssl.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* A stage-1 model from a pretrain config (random init with train.seed) or a checkpoint. */
static int load_vit(const char *model, const char *which, SslConfig *s, SslModel *m, ParamStore *ps, Err *e) {
    if (ends_with(model, ".h5")) return ssl_load_model(model, which, s, m, ps, e);
    Config cfg;
    cfg_init(&cfg);
    int rc = cfg_declare(&cfg, PRETRAIN_KEYS, PRETRAIN_N_KEYS, e) || cfg_load_file(&cfg, model, e) ||
             ssl_config_from(&cfg, s, e);
    cfg_free(&cfg);
    if (rc) return 1;
    params_init(ps);
    ps->values_only = 1;
    ssl_model_declare(m, s, ps);
    params_alloc(ps);
    Rng r;
    rng_init(&r, s->seed);
    ssl_model_init(m, &r);
    return 0;
}

int cmd_embed(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        printf("usage: versa embed --model CONFIG.yaml|CHECKPOINT.h5 --image FILE [--size N] [--which teacher|student]\n\n"
               "Prints the embedding of one image: the mean of the final-norm patch tokens for a ViT\n"
               "(the paper's downstream feature).  --model takes a stage-1 checkpoint (teacher by\n"
               "default) or a pretrain config (random initialisation from train.seed).  FILE: PNG,\n"
               "JPEG, PGM or DICOM; it is scaled to N x N (default: the model's global crop size),\n"
               "replicated to 3 channels and normalised with the ImageNet mean/std used in pretraining.\n"
               "Output: one line 'dim D norm X' then the D values on one line.\n");
        return 0;
    }
    const char *model = NULL, *image = NULL, *which = "teacher";
    int size = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return cli_fail("embed: %s needs a value (try 'versa embed --help')", a);
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--image")) image = v;
        else if (!strcmp(a, "--which")) which = v;
        else if (!strcmp(a, "--size")) {
            char *end;
            size = (int)strtol(v, &end, 10);
            if (*end || size < 1) return cli_fail("embed: --size: '%s' is not a positive integer", v);
        } else return cli_fail("embed: unknown option '%s' (try 'versa embed --help')", a);
        i++;
    }
    if (!model || !image) return cli_fail("embed: --model and --image are required (try 'versa embed --help')");
    if (strcmp(which, "teacher") && strcmp(which, "student")) return cli_fail("embed: --which: '%s' is not teacher or student", which);
    engine_threads_init();
    Err e = {0};
    SslConfig s;
    SslModel m;
    ParamStore ps;
    if (load_vit(model, which, &s, &m, &ps, &e)) return cli_fail("%s", e.msg);
    if (size == 0) size = s.global_size;
    if (size % s.vit.patch) return cli_fail("embed: --size %d is not a multiple of the patch size %d", size, s.vit.patch);
    Image im = {0};
    if (image_load(image, &im, &e)) return cli_fail("%s", e.msg);
    float *gray = malloc((size_t)im.w * im.h * sizeof(float));
    float *x = malloc(3 * (size_t)size * size * sizeof(float));
    image_to_float(&im, gray);
    resize_f32(gray, im.w, im.h, x, size, size, RESIZE_BILINEAR);
    MultiCropConfig mc = multicrop_default();
    const size_t P = (size_t)size * size;
    for (int ch = 2; ch >= 0; ch--)
        for (size_t i = 0; i < P; i++) x[ch * P + i] = (x[i] - mc.mean[ch]) / mc.std[ch];
    Ctx c;
    ctx_init(&c, 0);
    ctx_set_grad(&c, 0);
    c.training = 0;
    Tensor *t = tensor_wrap(&c, x, 4, TSHAPE(1, 3, (size_t)size, (size_t)size));
    ViTOut o = vit_forward(&c, &m.backbone, t, NULL);
    const size_t D = o.pooled->numel;
    double norm = 0;
    for (size_t i = 0; i < D; i++) norm += (double)o.pooled->data[i] * o.pooled->data[i];
    printf("dim %zu norm %.6g\n", D, sqrt(norm));
    for (size_t i = 0; i < D; i++) printf(i ? " %.6g" : "%.6g", o.pooled->data[i]);
    printf("\n");
    ctx_free(&c);
    free(gray);
    free(x);
    image_free(&im);
    ssl_model_free(&m);
    params_free(&ps);
    return 0;
}
