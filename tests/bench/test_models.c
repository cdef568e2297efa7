/* test_models.c — the backbones a benchmark compares and what they see:
 *   effnet-ckpt  lukemelas-named EfficientNet tensors under any prefix (a stage-2 checkpoint with
 *                extra heads, or weights exported from PyTorch without versa attributes): variant
 *                and prefix inferred, features equal to the original model's
 *   vit-h5       DINOv2-named ViT tensors: width, patch, depth, grid, LayerScale inferred
 *   ckpt         a stage-1 checkpoint (config inside), teacher backbone
 *   random       baselines and spec errors
 *   items        lesion crops: square around the box with margin, zero outside the image, resized */
#include "tests/common/testutil.h"
#include "bench/bench.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char g_dir[128];

static int setup(void **st) {
    (void)st;
    snprintf(g_dir, sizeof g_dir, "/tmp/versa_test_bench_models_%d", (int)getpid());
    char cmd[256];
    snprintf(cmd, sizeof cmd, "mkdir -p %s", g_dir);
    return system(cmd) == 0 ? 0 : 1;
}

static int teardown(void **st) {
    (void)st;
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_dir);
    return system(cmd) == 0 ? 0 : 1;
}

static float *random_images(int B, int C, int S, uint64_t seed) {
    float *x = malloc((size_t)B * C * S * S * sizeof(float));
    Rng r;
    rng_init(&r, seed);
    rng_fill_normal(&r, x, (size_t)B * C * S * S, 0.0f, 1.0f);
    return x;
}

/* features of the original model, eval mode */
static void reference_features(const EffNet *en, const ViT *vit, const float *x, int B, int S, float *out) {
    Ctx c;
    ctx_init(&c, 0);
    ctx_set_grad(&c, 0);
    c.training = 0;
    ctx_step_begin(&c);
    Tensor *in = tensor_from(&c, 4, TSHAPE((size_t)B, 3, (size_t)S, (size_t)S), x);
    Tensor *f = en ? effnet_forward(&c, en, in).pooled : vit_forward(&c, vit, in, NULL).pooled;
    tensor_copy_to(f, out);
    ctx_free(&c);
}

static void model_features(const BenchModel *m, const float *x, int B, float *out) {
    Ctx c;
    ctx_init(&c, 0);
    bench_model_forward(&c, m, x, B, out);
    ctx_free(&c);
}

static void test_effnet_ckpt_infers_variant_and_prefix(void **st) {
    (void)st;
    const int S = 64, B = 2;
    EffNetConfig ec;
    effnet_config("efficientnet-b0", &ec);
    ec.static_size = S;
    ParamStore ps, head, other;
    params_init(&ps);
    params_init(&head);
    params_init(&other);
    EffNet en, en2;
    effnet_declare(&en, &ec, &ps, "");
    effnet_declare(&en2, &ec, &other, "");
    Linear lin;
    linear_declare(&lin, &head, "", "birads_head", en.feat_dim, 7, 1);
    params_alloc(&ps);
    params_alloc(&head);
    params_alloc(&other);
    Rng r;
    rng_init(&r, 11);
    effnet_init(&en, &r);
    effnet_init(&en2, &r);
    init_torch_default_linear(&lin, &r);
    /* BN statistics that are not the identity, so loading the buffers matters */
    rng_fill_uniform(&r, ps.buf, ps.n_buf, 0.5f, 1.5f);
    /* a stage-2-like file: the student under "student.", a head beside it, no versa metadata */
    char path[256], path2[256];
    snprintf(path, sizeof path, "%s/student.h5", g_dir);
    CkptStore stores[2] = {{.prefix = "student.", .ps = &ps}, {.prefix = "student.", .ps = &head}};
    Err e = {0};
    if (ckpt_save_stores(path, stores, 2, NULL, NULL, 0, &e)) fail_msg("%s", e.msg);
    BenchModel m;
    if (bench_model_load(&m, "enb0", "effnet-ckpt:", 128, &e) == 0) fail_msg("an empty path loaded");
    char spec[400];
    snprintf(spec, sizeof spec, "effnet-ckpt:%s:%d", path, S);
    if (bench_model_load(&m, "enb0", spec, 128, &e)) fail_msg("%s", e.msg);
    print_message("  %s\n", m.desc);
    assert_int_equal(m.kind, BENCH_EFFNET);
    assert_int_equal(m.feat_dim, 1280);
    assert_int_equal(m.size, S);
    assert_non_null(strstr(m.desc, "efficientnet-b0"));
    assert_non_null(strstr(m.desc, "prefix 'student.'"));
    float *x = random_images(B, 3, S, 3);
    float *got = malloc((size_t)B * 1280 * sizeof(float)), *want = malloc((size_t)B * 1280 * sizeof(float));
    model_features(&m, x, B, got);
    reference_features(&en, NULL, x, B, S, want);
    assert_close("effnet features", got, want, (size_t)B * 1280, 0, 1e-6);
    bench_model_free(&m);
    /* the wrong variant named explicitly is an error that says what the file holds */
    snprintf(spec, sizeof spec, "effnet-ckpt:%s:efficientnet-b1", path);
    assert_int_equal(bench_model_load(&m, "x", spec, 64, &e), 1);
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, "16 blocks"));
    /* two EfficientNets in one file: ambiguous until prefix= chooses */
    snprintf(path2, sizeof path2, "%s/two.h5", g_dir);
    CkptStore two[2] = {{.prefix = "student.", .ps = &ps}, {.prefix = "teacher.", .ps = &other}};
    if (ckpt_save_stores(path2, two, 2, NULL, NULL, 0, &e)) fail_msg("%s", e.msg);
    snprintf(spec, sizeof spec, "effnet-ckpt:%s:%d", path2, S);
    assert_int_equal(bench_model_load(&m, "x", spec, 64, &e), 1);
    print_message("  %s\n", e.msg);
    assert_non_null(strstr(e.msg, "prefix="));
    snprintf(spec, sizeof spec, "effnet-ckpt:%s:%d:prefix=teacher.", path2, S);
    if (bench_model_load(&m, "x", spec, 64, &e)) fail_msg("%s", e.msg);
    model_features(&m, x, B, got);
    reference_features(&en2, NULL, x, B, S, want);
    assert_close("effnet features (prefix=teacher.)", got, want, (size_t)B * 1280, 0, 1e-6);
    bench_model_free(&m);
    free(x);
    free(got);
    free(want);
    params_free(&ps);
    params_free(&head);
    params_free(&other);
}

static void test_vit_h5_infers_architecture(void **st) {
    (void)st;
    const int B = 2, S = 48;
    ViTConfig vc;
    vit_config("vit_tiny", 8, 32, &vc);   /* pos-embed for a 4 x 4 grid, run at 6 x 6 */
    vc.depth = 3;
    ParamStore ps;
    params_init(&ps);
    ViT vit;
    vit_declare(&vit, &vc, &ps, "");
    params_alloc(&ps);
    Rng r;
    rng_init(&r, 5);
    vit_init(&vit, &r);
    rng_fill_normal(&r, ps.data, ps.n_train, 0.0f, 0.05f);   /* LayerScale etc. away from their init */
    char path[256], spec[400];
    snprintf(path, sizeof path, "%s/vit.h5", g_dir);
    CkptStore cs = {.prefix = "backbone.", .ps = &ps};
    Err e = {0};
    if (ckpt_save_stores(path, &cs, 1, NULL, NULL, 0, &e)) fail_msg("%s", e.msg);
    snprintf(spec, sizeof spec, "vit-h5:%s:%d", path, S);
    BenchModel m;
    if (bench_model_load(&m, "vit", spec, 512, &e)) fail_msg("%s", e.msg);
    print_message("  %s\n", m.desc);
    assert_int_equal(m.kind, BENCH_VIT);
    assert_int_equal(m.patch, 8);
    assert_int_equal(m.feat_dim, 192);
    assert_int_equal(m.vit.cfg.depth, 3);
    assert_int_equal(m.vit.cfg.img_size, 32);
    assert_true(m.vit.cfg.layerscale > 0);
    float *x = random_images(B, 3, S, 4);
    float got[2 * 192], want[2 * 192];
    model_features(&m, x, B, got);
    reference_features(NULL, &vit, x, B, S, want);
    assert_close("vit features", got, want, (size_t)B * 192, 0, 1e-6);
    bench_model_free(&m);
    /* the default size rounds to the patch: 50 -> 48 */
    snprintf(spec, sizeof spec, "vit-h5:%s", path);
    if (bench_model_load(&m, "vit", spec, 50, &e)) fail_msg("%s", e.msg);
    assert_int_equal(m.size, 48);
    bench_model_free(&m);
    free(x);
    vit_free(&vit);
    params_free(&ps);
}

static void test_stage1_checkpoint(void **st) {
    (void)st;
    Config cfg;
    cfg_init(&cfg);
    Err e = {0};
    assert_int_equal(cfg_declare(&cfg, PRETRAIN_KEYS, PRETRAIN_N_KEYS, &e), 0);
    const char *kv[] = {"student.patch_size=8", "crops.global_crops_size=32", "dino.head_n_prototypes=32",
                        "dino.head_bottleneck_dim=16", "dino.head_hidden_dim=32", "ibot.head_n_prototypes=32",
                        "ibot.head_bottleneck_dim=16", "ibot.head_hidden_dim=32"};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        if (cfg_override(&cfg, kv[i], 0, &e)) fail_msg("%s", e.msg);
    SslConfig s;
    if (ssl_config_from(&cfg, &s, &e)) fail_msg("%s", e.msg);
    ParamStore ps;
    params_init(&ps);
    SslModel sm;
    ssl_model_declare(&sm, &s, &ps);
    params_alloc(&ps);
    Rng r;
    rng_init(&r, 9);
    ssl_model_init(&sm, &r);
    char *yaml = cfg_to_yaml(&cfg);
    char path[256], spec[400];
    snprintf(path, sizeof path, "%s/pretrain.h5", g_dir);
    CkptMeta meta = {.step = 1, .config_text = yaml};
    rng_init(&meta.rng, 0);
    CkptStore cs = {.prefix = "teacher.", .ps = &ps};
    if (ckpt_save_stores(path, &cs, 1, &meta, NULL, 0, &e)) fail_msg("%s", e.msg);
    snprintf(spec, sizeof spec, "ckpt:%s:teacher", path);
    BenchModel m;
    if (bench_model_load(&m, "teacher", spec, 40, &e)) fail_msg("%s", e.msg);
    print_message("  %s\n", m.desc);
    assert_int_equal(m.size, 40);
    assert_true(m.is_ssl && m.patch == 8 && m.feat_dim == 192);
    const int B = 2;
    float *x = random_images(B, 3, 40, 8);
    float got[2 * 192], want[2 * 192];
    model_features(&m, x, B, got);
    reference_features(NULL, &sm.backbone, x, B, 40, want);
    assert_close("stage-1 teacher features", got, want, (size_t)B * 192, 0, 1e-6);
    bench_model_free(&m);
    /* feature=cls: the final-norm CLS token; feature=cls_gap: CLS then the patch mean (DINOv2's
     * linear evaluation), each equal to the model's own outputs */
    float cls[2 * 192], both[2 * 384];
    {
        Ctx c;
        ctx_init(&c, 0);
        ctx_set_grad(&c, 0);
        c.training = 0;
        ctx_step_begin(&c);
        ViTOut o = vit_forward(&c, &sm.backbone, tensor_from(&c, 4, TSHAPE(2, 3, 40, 40), x), NULL);
        tensor_copy_to(o.cls, cls);
        ctx_free(&c);
    }
    snprintf(spec, sizeof spec, "ckpt:%s:teacher:feature=cls", path);
    if (bench_model_load(&m, "teacher", spec, 40, &e)) fail_msg("%s", e.msg);
    assert_int_equal(m.feat_dim, 192);
    model_features(&m, x, B, got);
    assert_close("feature=cls", got, cls, (size_t)B * 192, 0, 1e-6);
    assert_true(fabsf(got[0] - want[0]) > 1e-4f);   /* not the GAP feature again */
    bench_model_free(&m);
    snprintf(spec, sizeof spec, "ckpt:%s:teacher:feature=cls_gap", path);
    if (bench_model_load(&m, "teacher", spec, 40, &e)) fail_msg("%s", e.msg);
    assert_int_equal(m.feat_dim, 384);
    model_features(&m, x, B, both);
    for (int b = 0; b < B; b++) {
        assert_close("cls_gap: CLS half", both + b * 384, cls + b * 192, 192, 0, 1e-6);
        assert_close("cls_gap: GAP half", both + b * 384 + 192, want + b * 192, 192, 0, 1e-6);
    }
    bench_model_free(&m);
    /* a student was not saved in this file */
    snprintf(spec, sizeof spec, "ckpt:%s:student", path);
    assert_int_equal(bench_model_load(&m, "s", spec, 40, &e), 1);
    print_message("  %s\n", e.msg);
    free(x);
    free(yaml);
    ssl_model_free(&sm);
    params_free(&ps);
    cfg_free(&cfg);
}

static void test_random_specs(void **st) {
    (void)st;
    BenchModel m;
    Err e = {0};
    if (bench_model_load(&m, "v", "random:vit_tiny:16:90", 512, &e)) fail_msg("%s", e.msg);
    assert_int_equal(m.size, 96);   /* nearest multiple of the patch */
    assert_int_equal(m.feat_dim, 192);
    bench_model_free(&m);
    if (bench_model_load(&m, "v", "random:vit_small:14", 512, &e)) fail_msg("%s", e.msg);
    assert_int_equal(m.size, 518);   /* the paper's 518 for /14 from input.size 512 */
    bench_model_free(&m);
    if (bench_model_load(&m, "e", "random:efficientnet-b0:seed=3", 96, &e)) fail_msg("%s", e.msg);
    assert_true(m.kind == BENCH_EFFNET && m.size == 96 && m.feat_dim == 1280);
    assert_non_null(strstr(m.desc, "seed 3"));
    bench_model_free(&m);
    /* layerscale=: the random baseline with the LayerScale init a pretraining config uses */
    for (int k = 0; k < 2; k++) {
        if (bench_model_load(&m, "v", k ? "random:vit_tiny:16:32:layerscale=1" : "random:vit_tiny:16:32", 512, &e))
            fail_msg("%s", e.msg);
        const Tensor *g = m.vit.blocks[0].ls1;
        assert_non_null(g);
        assert_float_equal(g->data[0], k ? 1.0f : 1e-5f, 1e-9f);
        if (!strstr(m.desc, k ? "LayerScale 1)" : "LayerScale 1e-05)")) fail_msg("desc: %s", m.desc);
        bench_model_free(&m);
    }
    const char *bad[][2] = {{"v", "random:vit_tiny"}, {"v", "random:resnet50:224"}, {"v", "torch:x.pt"},
                            {"a/b", "random:vit_tiny:16"}, {"v", "effnet-ckpt:/nonexistent.h5"},
                            {"v", "random:vit_tiny:16:feature=mean"}, {"v", "random:vit_tiny:16:layerscale=-1"},
                            {"v", "random:efficientnet-b0:feature=cls"}, {"v", "random:efficientnet-b0:layerscale=1"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        assert_int_equal(bench_model_load(&m, bad[i][0], bad[i][1], 64, &e), 1);
        print_message("  %s=%s: %s\n", bad[i][0], bad[i][1], e.msg);
    }
}

/* ---- items: crops and whole images ---- */

static void write_prepared(const char *path) {
    enum { H = 40, W = 40 };
    static uint8_t px[H * W];
    for (int i = 0; i < H * W; i++) px[i] = 51;   /* 0.2 */
    for (int y = 10; y < 16; y++)
        for (int x = 20; x < 26; x++) px[y * W + x] = 255;
    PrepSchema s = {.dataset = "test", .height = H, .width = W, .bits = 8, .n_labels = 1,
                    .labels = {{"density", PREP_CLASSES_DENSITY}}, .findings = "mass\ncalcification",
                    .box_labels = "density"};
    /* box 0 has its own value (D), box 1 none (-1: the image's C applies) */
    PrepBox boxes[2] = {{20, 10, 26, 16, 0, {3}}, {0, 0, 4, 4, 1, {-1}}};
    int32_t lab[1] = {2};
    uint8_t f[2] = {1, 1};
    PrepSample smp = {.pixels = px, .labels = lab, .findings = f, .boxes = boxes, .n_boxes = 2, .view = 0, .laterality = 0,
                      .split = 0, .patient_id = "p", .image_id = "i", .orig_h = H, .orig_w = W};
    PrepWriter *w;
    Err e = {0};
    if (prep_writer_open(&w, path, &s, &e) || prep_writer_add(w, &smp, &e) || prep_writer_close(w, &e)) fail_msg("%s", e.msg);
}

static void test_item_pixels(void **st) {
    (void)st;
    char path[256];
    snprintf(path, sizeof path, "%s/items.h5", g_dir);
    write_prepared(path);
    Prepared p;
    Err e = {0};
    if (prep_open(&p, path, &e)) fail_msg("%s", e.msg);
    BenchItems it;
    assert_int_equal(bench_items(&p, BENCH_UNIT_CROP, &it, &e), 0);
    assert_int_equal(it.n, 2);
    assert_true(it.box[0] == 0 && it.box[1] == 1 && it.sample[1] == 0 && !it.precut);
    assert_int_equal(bench_item_label(&p, &it, 0, 0), 3);   /* the lesion's own */
    assert_int_equal(bench_item_label(&p, &it, 1, 0), 2);   /* none of its own: the image's */
    BenchPreproc pp = {.size = 16, .in_chans = 3, .mean = 0.0f, .std = 1.0f, .crop_margin = 0.5f, .crop_min = 4};
    size_t wn = bench_item_work_floats(&p, &pp);
    float *img = malloc(40 * 40 * sizeof(float)), *work = malloc(wn * sizeof(float)), out[3 * 16 * 16];
    AugWork aw = {0};
    /* box 0 (20..26, 10..16): a 12-pixel square around it, the bright lesion in the middle */
    assert_int_equal(bench_item_pixels(&p, &it, 0, &pp, img, work, wn, &aw, out, &e), 0);
    print_message("  crop of box 0: centre %.3f, corner %.3f\n", out[8 * 16 + 8], out[0]);
    assert_true(fabsf(out[8 * 16 + 8] - 1.0f) < 1e-6f);
    assert_true(fabsf(out[0] - 0.2f) < 1e-6f);
    assert_memory_equal(out, out + 256, 256 * sizeof(float));   /* gray replicated to 3 channels */
    /* box 1 at the image corner (0..4): an 8-pixel square starting at (-2, -2), zero outside */
    assert_int_equal(bench_item_pixels(&p, &it, 1, &pp, img, work, wn, &aw, out, &e), 0);
    print_message("  crop of box 1: (0,0) %.3f, (15,15) %.3f\n", out[0], out[15 * 16 + 15]);
    assert_true(out[0] == 0.0f);
    assert_true(fabsf(out[15 * 16 + 15] - 0.2f) < 1e-6f);
    /* normalisation */
    pp.mean = 0.5f;
    pp.std = 0.5f;
    assert_int_equal(bench_item_pixels(&p, &it, 0, &pp, img, work, wn, &aw, out, &e), 0);
    assert_true(fabsf(out[8 * 16 + 8] - 1.0f) < 1e-6f && fabsf(out[0] + 0.6f) < 1e-6f);
    bench_items_free(&it);
    /* whole image: the bilinear resize of the prepared image */
    assert_int_equal(bench_items(&p, BENCH_UNIT_IMAGE, &it, &e), 0);
    assert_true(it.n == 1 && it.box[0] == -1);
    assert_int_equal(bench_item_label(&p, &it, 0, 0), 2);
    pp.mean = 0.0f;
    pp.std = 1.0f;
    pp.in_chans = 1;
    assert_int_equal(bench_item_pixels(&p, &it, 0, &pp, img, work, wn, &aw, out, &e), 0);
    float full[40 * 40], want[16 * 16];
    prep_read_image_f32(&p, 0, full, &e);
    resize_f32(full, 40, 40, want, 16, 16, RESIZE_BILINEAR);
    assert_memory_equal(out, want, sizeof want);
    bench_items_free(&it);
    augwork_free(&aw);
    free(img);
    free(work);
    prep_close(&p);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_effnet_ckpt_infers_variant_and_prefix),
        cmocka_unit_test(test_vit_h5_infers_architecture),
        cmocka_unit_test(test_stage1_checkpoint),
        cmocka_unit_test(test_random_specs),
        cmocka_unit_test(test_item_pixels),
    };
    return cmocka_run_group_tests_name(__FILE__, tests, setup, teardown);
}
