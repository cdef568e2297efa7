/* test_embed.c — `versa embed` for EfficientNet students: the pooled feature of one image from a
 * distill config (random init from train.seed) and from a distill-style checkpoint (weights and BN
 * statistics loaded, heads ignored).  The binary is run as a user runs it (VERSA_BIN, else
 * build/versa) and its printed embedding is compared with the same model run in-process on the
 * same preprocessed image (EfficientNet parity with PyTorch itself is tests/nn/test_models.c). */
#include "tests/common/testutil.h"
#include "data/data.h"
#include "distill/distill.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FEAT 1280   /* EfficientNet-B0 head width */
#define SIZE 32     /* student.image_size of the test config */

static char dir[] = "/tmp/versa-embed-XXXXXX";
static char cfg_path[256], img_path[256], ckpt_path[256], bad_path[256];

static const char *CONFIG = "student:\n  arch: efficientnet-b0\n  image_size: 32\ntrain:\n  seed: 7\n";

static const char *versa_bin(void) {
    const char *b = getenv("VERSA_BIN");
    return b && b[0] ? b : "build/versa";
}

typedef struct Run {
    int status;
    size_t dim;
    float v[FEAT + 8];
    char err[2048];
} Run;

/* "versa embed ARGS": exit status, the embedding it printed (dim line + values), stderr */
static void run_embed(const char *args, Run *r) {
    char out[] = "/tmp/versa-embed-out-XXXXXX", err[] = "/tmp/versa-embed-err-XXXXXX";
    close(mkstemp(out));
    close(mkstemp(err));
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "OMP_NUM_THREADS=1 %s embed %s >%s 2>%s", versa_bin(), args, out, err);
    int st = system(cmd);
    r->status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    r->dim = 0;
    FILE *f = fopen(out, "r");
    double norm;
    if (f && fscanf(f, "dim %zu norm %lf", &r->dim, &norm) == 2 && r->dim <= FEAT + 8)
        for (size_t i = 0; i < r->dim; i++)
            if (fscanf(f, "%f", &r->v[i]) != 1) r->dim = i;
    if (f) fclose(f);
    f = fopen(err, "r");
    size_t k = f ? fread(r->err, 1, sizeof r->err - 1, f) : 0;
    r->err[k] = 0;
    if (f) fclose(f);
    unlink(out);
    unlink(err);
}

/* the test config's student (heads as a distill run has them when n_heads > 0) */
static void build_student(DistillModel *m, ParamStore *ps, int n_heads, uint64_t seed) {
    Config cfg;
    Err e = {0};
    cfg_init(&cfg);
    DistillConfig d;
    assert_int_equal(cfg_declare(&cfg, DISTILL_KEYS, DISTILL_N_KEYS, &e) || cfg_load_string(&cfg, CONFIG, "test", &e) ||
                         distill_config_from(&cfg, &d, &e),
                     0);
    cfg_free(&cfg);
    d.n_heads = n_heads;
    for (int h = 0; h < n_heads; h++) {
        snprintf(d.heads[h].name, sizeof d.heads[h].name, h ? "density" : "birads");
        d.heads[h].n_classes = h ? 4 : 5;
    }
    params_init(ps);
    ps->values_only = 1;
    distill_model_declare(m, &d, ps, 0);
    params_alloc(ps);
    Rng r;
    rng_init(&r, seed);
    distill_model_init(m, &r);
}

/* the pooled feature (FEAT) of the image at `size`, preprocessed as the CLI documents: gray in
 * [0, 1], bilinear to size x size, 3 channels, (x - data.mean) / data.std with the defaults */
static void reference_embedding(const DistillModel *m, int size, float *feat) {
    Image im = {0};
    Err e = {0};
    assert_int_equal(image_load(img_path, &im, &e), 0);
    const size_t P = (size_t)size * size;
    float *gray = malloc((size_t)im.w * im.h * sizeof(float)), *x = malloc(3 * P * sizeof(float));
    image_to_float(&im, gray);
    resize_f32(gray, im.w, im.h, x, size, size, RESIZE_BILINEAR);
    for (int ch = 2; ch >= 0; ch--)
        for (size_t i = 0; i < P; i++) x[ch * P + i] = (x[i] - 0.3089f) / 0.2505f;
    Ctx c;
    ctx_init(&c, 0);
    ctx_set_grad(&c, 0);
    c.training = 0;
    EffNetOut o = effnet_forward(&c, &m->backbone, tensor_wrap(&c, x, 4, TSHAPE(1, 3, (size_t)size, (size_t)size)));
    assert_int_equal(o.pooled->numel, FEAT);
    memcpy(feat, o.pooled->data, FEAT * sizeof(float));
    ctx_free(&c);
    free(gray);
    free(x);
    image_free(&im);
}

/* the printed embedding against the in-process one: %.6g keeps 6 significant digits, so the
 * worst error relative to the largest element; a random-init student in eval mode has a tiny
 * feature (the activations shrink through ~80 default-initialised layers), hence no atol */
static void check_embedding(const char *what, const float *got, const float *want) {
    float big = 0;
    for (size_t i = 0; i < FEAT; i++) big = fabsf(want[i]) > big ? fabsf(want[i]) : big;
    if (!(big > 0)) fail_msg("%s: the reference embedding is all zeros", what);
    double err = max_rel_err(got, want, FEAT);
    if (!(err < 2e-5)) fail_msg("%s: max error %.3g of the largest element (want < 2e-5)", what, err);
}

static int setup(void **st) {
    (void)st;
    if (access(versa_bin(), X_OK) != 0) {
        fprintf(stderr, "%s not found: build it first (make) or set VERSA_BIN\n", versa_bin());
        return -1;
    }
    if (!mkdtemp(dir)) return -1;
    snprintf(cfg_path, sizeof cfg_path, "%s/student.yaml", dir);
    snprintf(img_path, sizeof img_path, "%s/image.png", dir);
    snprintf(ckpt_path, sizeof ckpt_path, "%s/checkpoint.h5", dir);
    snprintf(bad_path, sizeof bad_path, "%s/bad.h5", dir);
    FILE *f = fopen(cfg_path, "w");
    if (!f) return -1;
    fputs(CONFIG, f);
    fclose(f);
    /* a 40x52 8-bit image with structure at several scales (not square: the resize matters) */
    const int W = 40, H = 52;
    float *g = malloc((size_t)W * H * sizeof(float));
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++)
            g[y * W + x] = 0.5f + 0.3f * sinf(0.3f * x) * cosf(0.2f * y) + 0.15f * ((x / 8 + y / 8) % 2);
    Image im = {0};
    Err e = {0};
    int rc = image_from_float(g, W, H, 8, &im, &e) || image_save_png(img_path, &im, &e);
    free(g);
    image_free(&im);
    return rc ? -1 : 0;
}

static int teardown(void **st) {
    (void)st;
    unlink(cfg_path);
    unlink(img_path);
    unlink(ckpt_path);
    unlink(bad_path);
    rmdir(dir);
    return 0;
}

/* the config's random init (train.seed 7), eval mode, at student.image_size and at --size 48 */
static void test_embed_effnet_config(void **st) {
    (void)st;
    DistillModel m;
    ParamStore ps;
    build_student(&m, &ps, 0, 7);
    static float want[FEAT];
    static Run r, r2;
    char args[600];
    snprintf(args, sizeof args, "--model %s --image %s", cfg_path, img_path);
    run_embed(args, &r);
    if (r.status != 0) fail_msg("versa embed %s: status %d: %s", args, r.status, r.err);
    assert_int_equal(r.dim, FEAT);
    reference_embedding(&m, SIZE, want);
    check_embedding("embed config 32", r.v, want);

    snprintf(args, sizeof args, "--model %s --image %s --size 48", cfg_path, img_path);
    run_embed(args, &r2);
    assert_int_equal(r2.status, 0);
    assert_int_equal(r2.dim, FEAT);
    reference_embedding(&m, 48, want);
    check_embedding("embed config --size 48", r2.v, want);
    assert_true(max_rel_err(r.v, r2.v, FEAT) > 1e-3);   /* the size was applied */
    params_free(&ps);
}

/* a checkpoint as `versa distill` writes it: lukemelas backbone names at the root, the heads under
 * heads.<name>, the config text; other weights (seed 11) and BN statistics than the config's */
static void test_embed_effnet_checkpoint(void **st) {
    (void)st;
    DistillModel m;
    ParamStore ps;
    build_student(&m, &ps, 2, 11);
    for (size_t i = 0; i < ps.n; i++) {   /* running statistics that change the eval-mode output */
        Tensor *t = ps.p[i].t;
        size_t len = strlen(ps.p[i].name);
        if (len > 12 && !strcmp(ps.p[i].name + len - 12, "running_mean"))
            for (size_t j = 0; j < t->numel; j++) t->data[j] = 0.05f * (float)((j % 7) - 3);
        if (len > 11 && !strcmp(ps.p[i].name + len - 11, "running_var"))
            for (size_t j = 0; j < t->numel; j++) t->data[j] = 0.5f + 0.1f * (float)(j % 11);
    }
    CkptMeta meta = {0};
    meta.config_text = CONFIG;
    Err e = {0};
    if (ckpt_save(ckpt_path, &ps, 0, &meta, NULL, 0, &e)) fail_msg("%s", e.msg);
    static float want[FEAT], cfg_feat[FEAT];
    static Run r;
    char args[600];
    snprintf(args, sizeof args, "--model %s --image %s", ckpt_path, img_path);
    run_embed(args, &r);
    if (r.status != 0) fail_msg("versa embed %s: status %d: %s", args, r.status, r.err);
    assert_int_equal(r.dim, FEAT);
    reference_embedding(&m, SIZE, want);
    check_embedding("embed checkpoint", r.v, want);
    params_free(&ps);

    /* and it is not the config's random init: the weights were loaded */
    build_student(&m, &ps, 0, 7);
    reference_embedding(&m, SIZE, cfg_feat);
    assert_true(max_rel_err(r.v, cfg_feat, FEAT) > 1e-2);
    params_free(&ps);
}

/* a checkpoint whose config names an EfficientNet but that lacks its tensors: one-line error */
static void test_embed_effnet_errors(void **st) {
    (void)st;
    ParamStore ps;
    params_init(&ps);
    param_(&ps, "heads.birads.weight", 5, 1280);
    params_alloc(&ps);
    CkptMeta meta = {0};
    meta.config_text = CONFIG;
    Err e = {0};
    if (ckpt_save(bad_path, &ps, 0, &meta, NULL, 0, &e)) fail_msg("%s", e.msg);
    params_free(&ps);
    static Run r;
    char args[600];
    snprintf(args, sizeof args, "--model %s --image %s", bad_path, img_path);
    run_embed(args, &r);
    int lines = 0;
    for (const char *p = r.err; *p; p++) lines += *p == '\n';
    if (r.status != 1 || lines != 1 || strncmp(r.err, "versa: ", 7) || !strstr(r.err, "bad.h5"))
        fail_msg("versa embed %s: status %d, stderr: %s", args, r.status, r.err);
    snprintf(args, sizeof args, "--model %s --image %s/missing.png", cfg_path, dir);
    run_embed(args, &r);
    if (r.status != 1 || !strstr(r.err, "missing.png")) fail_msg("versa embed %s: status %d, stderr: %s", args, r.status, r.err);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_embed_effnet_config),
        cmocka_unit_test(test_embed_effnet_checkpoint),
        cmocka_unit_test(test_embed_effnet_errors),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
