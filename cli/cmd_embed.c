/* cmd_embed.c — `versa embed --model CONFIG_OR_CHECKPOINT --image FILE`: the embedding of one image,
 * the quickest check that a checkpoint (or a config's random initialisation) works.  Two kinds of
 * model: a stage-1 ViT (pretrain config / checkpoint) and a stage-2 EfficientNet student (distill
 * config / checkpoint), told apart by the config's student.arch. */
#include "cli/cli.h"
#include "data/data.h"
#include "distill/distill.h"
#include "ssl/ssl.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* 1 when the config text (a YAML file, or a checkpoint's saved config) describes an EfficientNet
 * student (student.arch efficientnet-*), 0 otherwise (a ViT; its loader reports any problem). */
static int is_effnet_model(const char *model) {
    Config cfg;
    cfg_init(&cfg);   /* undeclared: any key set loads, only student.arch is read */
    Err e = {0};
    int rc;
    if (ends_with(model, ".h5")) {
        char *yaml = ckpt_read_config(model, &e);
        rc = yaml ? cfg_load_string(&cfg, yaml, model, &e) : 1;
        free(yaml);
    } else {
        rc = cfg_load_file(&cfg, model, &e);
    }
    const char *arch = rc ? NULL : cfg_get(&cfg, "student.arch");
    int yes = arch && !strncmp(arch, "efficientnet", 12);
    cfg_free(&cfg);
    return yes;
}

/* The student of a distill config (random init with train.seed) or checkpoint (its saved config,
 * then its weights and BN statistics; heads and projector in the file are ignored). */
static int load_effnet(const char *model, DistillConfig *d, DistillModel *m, ParamStore *ps, Err *e) {
    int ckpt = ends_with(model, ".h5");
    Config cfg;
    cfg_init(&cfg);
    int rc = cfg_declare(&cfg, DISTILL_KEYS, DISTILL_N_KEYS, e);
    if (!rc && ckpt) {
        char *yaml = ckpt_read_config(model, e);
        rc = yaml ? cfg_load_string(&cfg, yaml, model, e) : 1;
        free(yaml);
    } else if (!rc) {
        rc = cfg_load_file(&cfg, model, e);
    }
    if (!rc) rc = distill_config_from(&cfg, d, e);
    cfg_free(&cfg);   /* d's strings pointed into cfg: only its numbers are used below */
    if (rc) return 1;
    d->n_heads = 0;
    params_init(ps);
    ps->values_only = 1;
    distill_model_declare(m, d, ps, 0);
    params_alloc(ps);
    Rng r;
    rng_init(&r, d->seed);
    distill_model_init(m, &r);
    if (ckpt) {
        CkptStore st = {.prefix = "", .ps = ps, .partial = 1};
        if (ckpt_load_stores(model, &st, 1, NULL, NULL, 0, NULL, 0, e)) {
            params_free(ps);
            return 1;
        }
    }
    return 0;
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

/* FILE as a (1, 3, size, size) input: gray in [0, 1], bilinear to size x size, replicated to 3
 * channels, channel k normalised with mean[k], std[k].  Returns the malloc'd input or NULL. */
static float *load_input(const char *image, int size, const float *mean, const float *std, Err *e) {
    Image im = {0};
    if (image_load(image, &im, e)) return NULL;
    float *gray = malloc((size_t)im.w * im.h * sizeof(float));
    float *x = malloc(3 * (size_t)size * size * sizeof(float));   // (3, size, size)
    image_to_float(&im, gray);
    resize_f32(gray, im.w, im.h, x, size, size, RESIZE_BILINEAR);
    const size_t P = (size_t)size * size;
    for (int ch = 2; ch >= 0; ch--)   /* channel 0 last: the others read the gray plane it holds */
        for (size_t i = 0; i < P; i++) x[ch * P + i] = (x[i] - mean[ch]) / std[ch];
    free(gray);
    image_free(&im);
    return x;
}

static void print_embedding(const Tensor *f) {
    const size_t D = f->numel;
    double norm = 0;
    for (size_t i = 0; i < D; i++) norm += (double)f->data[i] * f->data[i];
    printf("dim %zu norm %.6g\n", D, sqrt(norm));
    for (size_t i = 0; i < D; i++) printf(i ? " %.6g" : "%.6g", f->data[i]);
    printf("\n");
}

/* the pooled feature of a stage-2 student (eval mode: BN running statistics) */
static int embed_effnet(const char *model, const char *image, int size) {
    Err e = {0};
    DistillConfig d;
    DistillModel m;
    ParamStore ps;
    if (load_effnet(model, &d, &m, &ps, &e)) return cli_fail("%s", e.msg);
    if (size == 0) size = d.image_size;
    const float mean[3] = {d.mean, d.mean, d.mean}, std[3] = {d.std, d.std, d.std};
    float *x = load_input(image, size, mean, std, &e);
    if (!x) {
        params_free(&ps);
        return cli_fail("%s", e.msg);
    }
    Ctx c;
    ctx_init(&c, 0);
    ctx_set_grad(&c, 0);
    c.training = 0;
    Tensor *t = tensor_wrap(&c, x, 4, TSHAPE(1, 3, (size_t)size, (size_t)size));
    print_embedding(effnet_forward(&c, &m.backbone, t).pooled);
    ctx_free(&c);
    free(x);
    params_free(&ps);
    return 0;
}

int cmd_embed(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) {
        printf("usage: versa embed --model CONFIG.yaml|CHECKPOINT.h5 --image FILE [--size N] [--which teacher|student]\n\n"
               "Prints the embedding of one image: for a ViT (a stage-1 pretrain config or checkpoint) the\n"
               "mean of the final-norm patch tokens (the paper's downstream feature); for an EfficientNet\n"
               "student (a stage-2 distill config or `versa distill` checkpoint, student.arch efficientnet-*)\n"
               "the global-average-pooled head feature, in eval mode.  A config gives a random\n"
               "initialisation from train.seed (student.init is not applied).  --which picks the stage-1\n"
               "model (teacher by default).  FILE: PNG, JPEG, PGM or DICOM; it is scaled to N x N\n"
               "(default: the ViT's global crop size, the student's student.image_size), replicated to 3\n"
               "channels and normalised as in training (ViT: ImageNet mean/std; student: data.mean/std).\n"
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
    if (is_effnet_model(model)) return embed_effnet(model, image, size);
    Err e = {0};
    SslConfig s;
    SslModel m;
    ParamStore ps;
    if (load_vit(model, which, &s, &m, &ps, &e)) return cli_fail("%s", e.msg);
    if (size == 0) size = s.global_size;
    if (size % s.vit.patch) return cli_fail("embed: --size %d is not a multiple of the patch size %d", size, s.vit.patch);
    MultiCropConfig mc = multicrop_default();
    float *x = load_input(image, size, mc.mean, mc.std, &e);
    if (!x) return cli_fail("%s", e.msg);
    Ctx c;
    ctx_init(&c, 0);
    ctx_set_grad(&c, 0);
    c.training = 0;
    Tensor *t = tensor_wrap(&c, x, 4, TSHAPE(1, 3, (size_t)size, (size_t)size));
    ViTOut o = vit_forward(&c, &m.backbone, t, NULL);
    print_embedding(o.pooled);
    ctx_free(&c);
    free(x);
    ssl_model_free(&m);
    params_free(&ps);
    return 0;
}
