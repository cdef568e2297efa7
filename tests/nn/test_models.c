/* test_models.c — parity of the ViT (DINOv2) and EfficientNet (lukemelas) with PyTorch.
 * tests/ref/models.py fills every tensor with a closed-form hash of (name, index) that
 * hash_fill_params reproduces, so the committed file holds only inputs, outputs and gradient
 * fingerprints.  Checked: every parameter name and shape exists on both sides, outputs
 * (forward <= 1e-4 relative), the input gradient, every parameter gradient's norm, sum and
 * sampled elements, BN running statistics after a training-mode step, and parameter counts. */
#include "tests/common/testutil.h"
#include "nn/nn.h"
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static uint32_t fnv1a(const char *s) {
    uint32_t h = 2166136261u;
    for (; *s; s++) {
        h ^= (uint8_t)*s;
        h *= 16777619u;
    }
    return h;
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && !strcmp(s + a - b, suf);
}

/* mirror of hash_value() in tests/ref/models.py */
static float hash_value(const char *name, size_t i, int ndim, size_t fan_in) {
    uint32_t x = fnv1a(name) + (uint32_t)i * 2654435761u;
    x ^= x >> 16;
    x *= 0x45D9F3Bu;
    x ^= x >> 16;
    double u = (double)x / 4294967296.0, v;
    if (ends_with(name, "num_batches_tracked")) v = 0;
    else if (ends_with(name, "running_var")) v = 0.5 + u;
    else if (ends_with(name, "running_mean")) v = 0.2 * (u - 0.5);
    else if (ends_with(name, "weight_g")) v = 1;
    else if (ndim >= 2) v = (2.0 * u - 1.0) / sqrt((double)fan_in);
    else if (ends_with(name, "bias")) v = 0.2 * (u - 0.5);
    else v = 1.0 + 0.2 * (u - 0.5);
    return (float)v;
}

static void hash_fill_params(ParamStore *ps) {
    for (size_t k = 0; k < ps->n; k++) {
        Tensor *t = ps->p[k].t;
        size_t fan_in = t->ndim >= 2 ? t->numel / t->shape[0] : 1;
        for (size_t i = 0; i < t->numel; i++) t->data[i] = hash_value(ps->p[k].name, i, t->ndim, fan_in);
    }
}

static size_t count_trainable(const ParamStore *ps) {
    size_t n = 0;
    for (size_t i = 0; i < ps->n; i++)
        if (ps->p[i].kind == PARAM_TRAINABLE) n += ps->p[i].t->numel;
    return n;
}

static long read_attr_long(const char *group, const char *attr) {
    const char *dir = getenv("VERSA_REF_DIR");
    char path[512];
    snprintf(path, sizeof path, "%s/models.h5", dir ? dir : "tests/ref/data");
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    assert_true(f >= 0);
    hid_t o = H5Oopen(f, group, H5P_DEFAULT);
    hid_t a = H5Aopen(o, attr, H5P_DEFAULT);
    long v = 0;
    H5Aread(a, H5T_NATIVE_LONG, &v);
    H5Aclose(a);
    H5Oclose(o);
    H5Fclose(f);
    return v;
}

/* newline-joined string attribute -> malloc'd copy */
static char *read_attr_str(const char *group, const char *attr) {
    const char *dir = getenv("VERSA_REF_DIR");
    char path[512];
    snprintf(path, sizeof path, "%s/models.h5", dir ? dir : "tests/ref/data");
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    hid_t o = H5Oopen(f, group, H5P_DEFAULT);
    hid_t a = H5Aopen(o, attr, H5P_DEFAULT);
    hid_t ty = H5Aget_type(a);
    char *s = NULL;
    if (H5Tis_variable_str(ty) > 0) {
        char *tmp = NULL;
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_size(mt, H5T_VARIABLE);
        H5Tset_cset(mt, H5Tget_cset(ty));
        H5Aread(a, mt, &tmp);
        s = strdup(tmp ? tmp : "");
        H5free_memory(tmp);
        H5Tclose(mt);
    } else {
        size_t n = H5Tget_size(ty);
        s = calloc(n + 1, 1);
        H5Aread(a, ty, s);
    }
    H5Tclose(ty);
    H5Aclose(a);
    H5Oclose(o);
    H5Fclose(f);
    return s;
}

static Tensor *weighted_loss(Ctx *c, Tensor **outs, Tensor **ws, int n) {
    Tensor *loss = NULL;
    for (int i = 0; i < n; i++) {
        Tensor *l = op_sum_all(c, op_mul(c, outs[i], ws[i]));
        loss = loss ? op_add(c, loss, l) : l;
    }
    return loss;
}

static Tensor *ref_tensor(Ctx *c, RefFile *r, const char *key) {
    size_t n, shape[8];
    int nd;
    float *d = ref_get(r, key, &n, &nd, shape);
    Tensor *t = tensor_from(c, nd, shape, d);
    free(d);
    return t;
}

/* Compare each parameter gradient with its PyTorch fingerprint: norm, sum, first 64 elements and
 * 32 strided ones; element tolerance relative to the gradient's largest magnitude. */
static void check_grad_fingerprints(ParamStore *ps, RefFile *r, const char *group, double rtol) {
    char key[256];
    snprintf(key, sizeof key, "%s/grad_fp", group);
    size_t n, shape[8];
    int nd;
    float *fp = ref_get(r, key, &n, &nd, shape);
    char *names = read_attr_str(group, "grad_names");
    size_t rows = shape[0], cols = shape[1], row = 0;
    /* Gradients that are zero in exact arithmetic (e.g. the bias of a BN feeding a training-mode
     * BN) are pure rounding noise on both sides: judge them against the largest gradient norm. */
    double scale = 0;
    for (size_t i = 0; i < rows; i++) scale = fmax(scale, fp[i * cols]);
    const double floor_abs = 1e-5 * scale;
    for (char *save = NULL, *nm = strtok_r(names, "\n", &save); nm; nm = strtok_r(NULL, "\n", &save), row++) {
        Param *p = params_find(ps, nm);
        if (!p) fail_msg("%s: PyTorch parameter '%s' has no counterpart", group, nm);
        const float *g = p->t->grad;
        const float *ref = fp + row * cols;
        size_t cnt = p->t->numel;
        double norm = 0, sum = 0, gmax = 0;
        for (size_t i = 0; i < cnt; i++) {
            norm += (double)g[i] * g[i];
            sum += g[i];
            gmax = fmax(gmax, fabs(g[i]));
        }
        norm = sqrt(norm);
        if (fabs(norm - ref[0]) > rtol * ref[0] + floor_abs)
            fail_msg("%s: grad norm of %s: %.7g vs PyTorch %.7g", group, nm, norm, ref[0]);
        double tol = rtol * gmax + floor_abs;
        if (fabs(sum - ref[1]) > tol * sqrt((double)cnt) + rtol * fabs(ref[1]))
            fail_msg("%s: grad sum of %s: %.7g vs PyTorch %.7g", group, nm, sum, ref[1]);
        size_t head = cnt < 64 ? cnt : 64;
        for (size_t i = 0; i < head; i++)
            if (fabs(g[i] - ref[2 + i]) > tol)
                fail_msg("%s: grad of %s[%zu]: %.7g vs PyTorch %.7g", group, nm, i, g[i], ref[2 + i]);
        size_t stride = cnt / 32 > 1 ? cnt / 32 : 1;
        for (size_t j = 0, i = 0; j < 32 && i < cnt; j++, i += stride)
            if (fabs(g[i] - ref[66 + j]) > tol)
                fail_msg("%s: grad of %s[%zu]: %.7g vs PyTorch %.7g", group, nm, i, g[i], ref[66 + j]);
    }
    size_t n_train = 0;
    for (size_t i = 0; i < ps->n; i++) n_train += ps->p[i].kind == PARAM_TRAINABLE;
    assert_int_equal(row, rows);
    assert_int_equal(n_train, rows);   /* same parameter set on both sides */
    free(fp);
    free(names);
}

static void compare_output(RefFile *r, const char *group, int i, Tensor *got, double rtol) {
    char key[128];
    snprintf(key, sizeof key, "%s/out%d", group, i);
    size_t n;
    float *ref = ref_get(r, key, &n, NULL, NULL);
    assert_int_equal(n, got->numel);
    float *tmp = malloc(n * sizeof(float));
    tensor_copy_to(got, tmp);
    double err = max_rel_err(tmp, ref, n);
    if (err > rtol) fail_msg("%s out%d: max relative error %.3g > %.1g", group, i, err, rtol);
    free(tmp);
    free(ref);
}

static void run_vit_case(const char *group, int masked) {
    ViTConfig cfg;
    assert_int_equal(vit_config("vit_tiny", 16, 32, &cfg), 0);
    ParamStore ps;
    params_init(&ps);
    ViT vit;
    vit_declare(&vit, &cfg, &ps, "");
    params_alloc(&ps);
    hash_fill_params(&ps);
    assert_int_equal(count_trainable(&ps), read_attr_long("vit_tiny", "n_params"));

    Ctx c;
    ctx_init(&c, 1);
    c.training = 0;
    RefFile *r = ref_open("models");
    char key[128];
    snprintf(key, sizeof key, "%s/x", group);
    Tensor *x = ref_tensor(&c, r, key);
    x->requires_grad = 1;
    uint8_t *masks = NULL;
    if (masked) {
        size_t n;
        snprintf(key, sizeof key, "%s/masks", group);
        float *m = ref_get(r, key, &n, NULL, NULL);
        masks = malloc(n);
        for (size_t i = 0; i < n; i++) masks[i] = m[i] != 0;
        free(m);
    }
    ViTOut o = vit_forward(&c, &vit, x, masks);
    Tensor *ws[3];
    for (int i = 0; i < 3; i++) {
        snprintf(key, sizeof key, "%s/w%d", group, i);
        ws[i] = ref_tensor(&c, r, key);
    }
    Tensor *outs[3] = {o.cls, o.patch, o.pooled};
    for (int i = 0; i < 3; i++) compare_output(r, group, i, outs[i], 1e-4);
    params_zero_grad(&ps);
    backward(&c, weighted_loss(&c, outs, ws, 3));
    snprintf(key, sizeof key, "%s/x_grad", group);
    size_t n;
    float *gx = ref_get(r, key, &n, NULL, NULL);
    double err = max_rel_err(x->grad, gx, n);
    if (err > 1e-3) fail_msg("%s: input gradient max relative error %.3g", group, err);
    check_grad_fingerprints(&ps, r, group, 2e-3);
    free(gx);
    free(masks);
    ref_close(r);
    ctx_free(&c);
    vit_free(&vit);
    params_free(&ps);
}

static void test_vit_tiny_matches_dinov2(void **st) {
    (void)st;
    run_vit_case("vit_tiny", 0);
}

static void test_vit_tiny_masked_matches_dinov2(void **st) {
    (void)st;
    run_vit_case("vit_tiny_masked", 1);
}

static void test_vit_param_counts(void **st) {
    (void)st;
    const char *archs[2] = {"vit_small", "vit_base"};
    for (int a = 0; a < 2; a++)
        for (int p = 14; p <= 16; p += 2) {
            ViTConfig cfg;
            vit_config(archs[a], p, 224, &cfg);
            ParamStore ps;
            params_init(&ps);
            ViT vit;
            vit_declare(&vit, &cfg, &ps, "");
            char attr[64];
            snprintf(attr, sizeof attr, "n_params_%s_p%d", archs[a], p);
            size_t n = 0;
            for (size_t i = 0; i < ps.n; i++)
                if (ps.p[i].kind == PARAM_TRAINABLE) n += ps.p[i].t->numel;
            assert_int_equal(n, read_attr_long("/", attr));
            vit_free(&vit);
            params_free(&ps);
        }
}

static void run_effnet_case(const char *group, int train, int static_size, int grads) {
    EffNetConfig cfg;
    assert_int_equal(effnet_config("efficientnet-b0", &cfg), 0);
    cfg.static_size = static_size;
    cfg.drop_connect = 0;   /* the reference runs without stochastic depth */
    ParamStore ps;
    params_init(&ps);
    EffNet *net = calloc(1, sizeof(EffNet));
    effnet_declare(net, &cfg, &ps, "");
    params_alloc(&ps);
    hash_fill_params(&ps);

    Ctx c;
    ctx_init(&c, 1);
    c.training = train;
    RefFile *r = ref_open("models");
    char key[128];
    snprintf(key, sizeof key, "%s/x", group);
    Tensor *x = ref_tensor(&c, r, key);
    x->requires_grad = 1;
    EffNetOut o = effnet_forward(&c, net, x);
    snprintf(key, sizeof key, "%s/w0", group);
    Tensor *w = ref_tensor(&c, r, key);
    compare_output(r, group, 0, o.pooled, 1e-4);
    if (grads) {
        params_zero_grad(&ps);
        backward(&c, weighted_loss(&c, &o.pooled, &w, 1));
        snprintf(key, sizeof key, "%s/x_grad", group);
        size_t n;
        float *gx = ref_get(r, key, &n, NULL, NULL);
        double err = max_rel_err(x->grad, gx, n);
        if (err > 1e-3) fail_msg("%s: input gradient max relative error %.3g", group, err);
        free(gx);
        check_grad_fingerprints(&ps, r, group, 2e-3);
    }
    if (train) {
        snprintf(key, sizeof key, "%s/running", group);
        size_t n;
        float *run = ref_get(r, key, &n, NULL, NULL);
        char *names = read_attr_str(group, "running_names");
        size_t off = 0;
        for (char *save = NULL, *nm = strtok_r(names, "\n", &save); nm; nm = strtok_r(NULL, "\n", &save)) {
            Param *p = params_find(&ps, nm);
            if (!p) fail_msg("no buffer '%s'", nm);
            assert_close(nm, p->t->data, run + off, p->t->numel, 1e-5, 1e-4);
            off += p->t->numel;
        }
        assert_int_equal(off, n);
        Param *nbt = params_find(&ps, "_bn0.num_batches_tracked");
        assert_non_null(nbt);
        assert_float_equal(nbt->t->data[0], 1.0f, 0);
        free(names);
        free(run);
    }
    ref_close(r);
    ctx_free(&c);
    free(net);
    params_free(&ps);
}

static void test_effnet_b0_eval_matches_lukemelas(void **st) {
    (void)st;
    run_effnet_case("effnet_b0_eval", 0, 48, 1);
}

static void test_effnet_b0_train_bn_matches_lukemelas(void **st) {
    (void)st;
    run_effnet_case("effnet_b0_train", 1, 48, 1);
}

static void test_effnet_static_padding_quirk(void **st) {
    (void)st;
    run_effnet_case("effnet_b0_static224_at72", 0, 224, 0);
}

static void test_effnet_param_counts(void **st) {
    (void)st;
    const char *names[2] = {"efficientnet-b0", "efficientnet-b5"};
    const char *attrs[2] = {"n_params_effnet_b0", "n_params_effnet_b5"};
    for (int v = 0; v < 2; v++) {
        EffNetConfig cfg;
        effnet_config(names[v], &cfg);
        ParamStore ps;
        params_init(&ps);
        EffNet *net = calloc(1, sizeof(EffNet));
        effnet_declare(net, &cfg, &ps, "");
        assert_int_equal(count_trainable(&ps), read_attr_long("/", attrs[v]));
        if (v == 1) {
            assert_int_equal(net->n_blocks, read_attr_long("/", "n_blocks_effnet_b5"));
            assert_int_equal(net->feat_dim, 2048);
        }
        free(net);
        params_free(&ps);
    }
}

static void test_dino_head_matches_dinov2(void **st) {
    (void)st;
    ParamStore ps;
    params_init(&ps);
    DinoHead h;
    dino_head_declare(&h, &ps, "", 48, 64, 32, 100, 3);
    params_alloc(&ps);
    hash_fill_params(&ps);
    for (size_t i = 0; i < 100; i++) h.weight_g->data[i] = 1.0f + hash_value("g", i, 2, 1);
    Ctx c;
    ctx_init(&c, 1);
    RefFile *r = ref_open("models");
    Tensor *x = ref_tensor(&c, r, "dino_head/x");
    x->requires_grad = 1;
    Tensor *z;
    Tensor *logits = dino_head_forward(&c, &h, x, &z);
    Tensor *outs[2] = {logits, z};
    Tensor *ws[2] = {ref_tensor(&c, r, "dino_head/w0"), ref_tensor(&c, r, "dino_head/w1")};
    compare_output(r, "dino_head", 0, logits, 1e-5);
    compare_output(r, "dino_head", 1, z, 1e-5);
    params_zero_grad(&ps);
    backward(&c, weighted_loss(&c, outs, ws, 2));
    check_grad_fingerprints(&ps, r, "dino_head", 1e-4);
    ref_close(r);
    ctx_free(&c);
    params_free(&ps);
}

/* PyTorch -> C through the normal checkpoint loader: a state_dict exported by h5py, nothing else */
static void test_vit_loads_pytorch_state_dict(void **st) {
    (void)st;
    ViTConfig cfg;
    vit_config("vit_tiny", 16, 32, &cfg);
    cfg.embed_dim = 32;
    cfg.depth = 2;
    cfg.heads = 2;
    ParamStore ps;
    params_init(&ps);
    ViT vit;
    vit_declare(&vit, &cfg, &ps, "");
    params_alloc(&ps);
    Err e = {0};
    const char *dir = getenv("VERSA_REF_DIR");
    char path[512];
    snprintf(path, sizeof path, "%s/vit_micro_torch.h5", dir ? dir : "tests/ref/data");
    if (ckpt_load(path, &ps, "", 0, NULL, NULL, 0, NULL, 0, &e)) fail_msg("%s", e.msg);
    Ctx c;
    ctx_init(&c, 1);
    ctx_set_grad(&c, 0);
    c.training = 0;
    RefFile *r = ref_open("vit_micro_io");
    Tensor *x = ref_tensor(&c, r, "x");
    ViTOut o = vit_forward(&c, &vit, x, NULL);
    size_t n;
    float *cls = ref_get(r, "cls", &n, NULL, NULL), *pooled = ref_get(r, "pooled", &n, NULL, NULL);
    assert_close("cls", o.cls->data, cls, o.cls->numel, 1e-5, 1e-4);
    assert_close("pooled", o.pooled->data, pooled, o.pooled->numel, 1e-5, 1e-4);
    free(cls);
    free(pooled);
    ref_close(r);
    ctx_free(&c);
    vit_free(&vit);
    params_free(&ps);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vit_tiny_matches_dinov2),
        cmocka_unit_test(test_vit_tiny_masked_matches_dinov2),
        cmocka_unit_test(test_vit_param_counts),
        cmocka_unit_test(test_effnet_b0_eval_matches_lukemelas),
        cmocka_unit_test(test_effnet_b0_train_bn_matches_lukemelas),
        cmocka_unit_test(test_effnet_static_padding_quirk),
        cmocka_unit_test(test_effnet_param_counts),
        cmocka_unit_test(test_dino_head_matches_dinov2),
        cmocka_unit_test(test_vit_loads_pytorch_state_dict),
    };
    return RUN_GROUP(tests);
}
