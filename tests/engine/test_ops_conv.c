/* test_ops_conv.c — op_conv2d: TF-"SAME" padding arithmetic, PyTorch references for every
 * kernel path (dense im2col+GEMM, pointwise GEMM, grouped, depthwise direct), finite-difference
 * gradient checks of every variant, a double-precision naive conv on layers large enough to use
 * several im2col tiles and the wide depthwise blocks, determinism, and shape errors. */
#include "tests/common/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* padding arithmetic */

static void test_conv_args_same(void **st) {
    (void)st;
    /* EfficientNet stem: 224 -> 112 with k3 s2 needs one pixel, all of it bottom/right */
    Conv2dArgs a = conv2d_args_same(224, 224, 3, 3, 2, 1, 1);
    assert_int_equal(a.pad_top, 0);
    assert_int_equal(a.pad_bottom, 1);
    assert_int_equal(a.pad_left, 0);
    assert_int_equal(a.pad_right, 1);
    assert_int_equal(a.stride_h, 2);
    assert_int_equal(a.groups, 1);
    /* k5 s2 on 28: out 14, total (14-1)*2 + 5 - 28 = 3 -> 1 top, 2 bottom */
    a = conv2d_args_same(28, 27, 5, 5, 2, 1, 240);
    assert_int_equal(a.pad_top, 1);
    assert_int_equal(a.pad_bottom, 2);
    assert_int_equal(a.pad_left, 2);   /* 27: out 14, total 26 + 5 - 27 = 4 */
    assert_int_equal(a.pad_right, 2);
    assert_int_equal(a.groups, 240);
    /* stride 1 keeps the size: k3 -> 1/1, dilation 2 -> 2/2 */
    a = conv2d_args_same(7, 7, 3, 3, 1, 2, 1);
    assert_int_equal(a.pad_top, 2);
    assert_int_equal(a.pad_bottom, 2);
    /* 1x1 s2 needs no padding */
    a = conv2d_args_same(9, 9, 1, 1, 2, 1, 1);
    assert_int_equal(a.pad_top + a.pad_bottom + a.pad_left + a.pad_right, 0);
    a = conv2d_args(2, 1, 3, 4);
    assert_int_equal(a.pad_right, 1);
    assert_int_equal(a.dil_w, 3);
    assert_int_equal(a.stride_h, 2);
}

/* ------------------------------------------------------------------------------------------ */
/* PyTorch references (tests/ref/ops_conv.py) */

static double g_worst_y, g_worst_g;   /* worst relative errors over all cases, for the log */

static Tensor *ref_tensor(Ctx *c, RefFile *r, const char *group, const char *name, int requires_grad) {
    char key[160];
    size_t n, shape[8];
    int nd;
    snprintf(key, sizeof key, "%s/%s", group, name);
    float *d = ref_get(r, key, &n, &nd, shape);
    Tensor *t = tensor_from(c, nd, shape, d);
    t->requires_grad = (uint8_t)requires_grad;
    free(d);
    return t;
}

/* compares a (n) against dataset group/name; returns max |a-b| / max |b| */
static double compare_ref(RefFile *r, const char *group, const char *name, const float *a, size_t n, double rel) {
    char key[160], what[200];
    size_t nr;
    snprintf(key, sizeof key, "%s/%s", group, name);
    float *b = ref_get(r, key, &nr, NULL, NULL);
    assert_int_equal(nr, n);
    double mb = 0;
    for (size_t i = 0; i < n; i++) mb = fmax(mb, fabs((double)b[i]));
    snprintf(what, sizeof what, "%s %s", group, name);
    /* elementwise: rel * (max magnitude + own magnitude), so near-zero outputs of a sum of
     * O(1) terms are judged on the scale of the terms */
    assert_close(what, a, b, n, rel * mb, rel);
    double e = max_rel_err(a, b, n);
    free(b);
    return e;
}

static void ref_conv_case(RefFile *r, const char *name) {
    char grp[128];
    snprintf(grp, sizeof grp, "conv/%s", name);
    Ctx c;
    ctx_init(&c, 1);
    Tensor *x = ref_tensor(&c, r, grp, "x", 1), *w = ref_tensor(&c, r, grp, "w", 1);
    char key[160];
    snprintf(key, sizeof key, "%s/b", grp);
    Tensor *b = ref_has(r, key) ? ref_tensor(&c, r, grp, "b", 1) : NULL;
    size_t n;
    snprintf(key, sizeof key, "%s/args", grp);
    float *ar = ref_get(r, key, &n, NULL, NULL);
    assert_int_equal(n, 9);
    Conv2dArgs a = {(int)ar[0], (int)ar[1], (int)ar[2], (int)ar[3], (int)ar[4], (int)ar[5], (int)ar[6], (int)ar[7],
                    (int)ar[8]};
    free(ar);
    snprintf(key, sizeof key, "%s/same", grp);
    if (ref_has(r, key)) {
        /* TF-"SAME" case: our padding helper must reproduce lukemelas' F.pad amounts */
        float *s = ref_get(r, key, &n, NULL, NULL);
        Conv2dArgs sa = conv2d_args_same((int)s[0], (int)s[1], (int)s[2], (int)s[3], (int)s[4], (int)s[5], (int)s[6]);
        free(s);
        assert_memory_equal(&sa, &a, sizeof a);
    }
    Tensor *y = op_conv2d(&c, x, w, b, a);
    double ey = compare_ref(r, grp, "y", y->data, y->numel, 1e-5);
    Tensor *R = ref_tensor(&c, r, grp, "R", 0);
    assert_int_equal(R->numel, y->numel);
    backward_from(&c, y, R->data);
    double eg = compare_ref(r, grp, "gx", x->grad, x->numel, 1e-5);
    eg = fmax(eg, compare_ref(r, grp, "gw", w->grad, w->numel, 1e-5));
    if (b) eg = fmax(eg, compare_ref(r, grp, "gb", b->grad, b->numel, 1e-5));
    printf("    %-22s out %.2e  grads %.2e (max |err| / max |ref|)\n", name, ey, eg);
    g_worst_y = fmax(g_worst_y, ey);
    g_worst_g = fmax(g_worst_g, eg);
    ctx_free(&c);
}

static void test_conv_vs_pytorch(void **st) {
    (void)st;
    static const char *cases[] = {
        "dense3x3",     "dense3x3_s2_nobias", "stem_same_s2",     "dense5x5_same_s1", "dilation2",
        "groups2",      "pointwise",          "pointwise_s2",     "pointwise_groups4", "dw3_s1",
        "dw3_s2_same",  "dw5_s1_same",        "dw5_s2_same",      "dw3_s1_wide_bias", "dw5_s2_wide_same",
        "dw3_dilation2", "dw_multiplier2",
    };
    RefFile *r = ref_open("ops_conv");
    g_worst_y = g_worst_g = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) ref_conv_case(r, cases[i]);
    printf("    conv vs PyTorch: worst output %.2e, worst gradient %.2e\n", g_worst_y, g_worst_g);
    ref_close(r);
}

/* ------------------------------------------------------------------------------------------ */
/* finite-difference gradient checks */

typedef struct ConvCase {
    Conv2dArgs a;
    int bias;
} ConvCase;

static Tensor *f_conv(Ctx *c, Tensor **in, void *ud) {
    const ConvCase *cc = ud;
    return op_conv2d(c, in[0], in[1], cc->bias ? in[2] : NULL, cc->a);
}

/* x (N, C, H, W), w (OC, C/groups, K, K) */
static void gc_conv(const char *what, size_t N, size_t C, size_t H, size_t W, size_t OC, size_t K, Conv2dArgs a,
                    int bias, int transposed) {
    ConvCase cc = {a, bias};
    GcInput in[3] = {GC_IN(4, N, C, H, W), GC_IN(4, OC, C / (size_t)a.groups, K, K), GC_IN(1, OC)};
    in[0].transposed = transposed;
    gradcheck(what, f_conv, in, bias ? 3 : 2, &cc, (GcOpts){0});
}

static void test_conv_gradcheck_dense(void **st) {
    (void)st;
    gc_conv("dense k3 s1 p1 bias", 2, 3, 6, 5, 4, 3, conv2d_args(1, 1, 1, 1), 1, 0);
    gc_conv("dense k3 s2 p1 no bias", 2, 3, 7, 7, 4, 3, conv2d_args(2, 1, 1, 1), 0, 0);
    gc_conv("dense k3 s2 SAME asymmetric", 1, 2, 6, 7, 3, 3, conv2d_args_same(6, 7, 3, 3, 2, 1, 1), 0, 0);
    gc_conv("dense k5 s2 SAME 3 images", 3, 2, 7, 6, 2, 5, conv2d_args_same(7, 6, 5, 5, 2, 1, 1), 1, 0);
    gc_conv("dense k3 dilation 2", 1, 2, 9, 8, 3, 3, conv2d_args(1, 2, 2, 1), 1, 0);
    gc_conv("dense k3 transposed input", 2, 3, 5, 7, 4, 3, conv2d_args(1, 1, 1, 1), 1, 1);
    Conv2dArgs rect = conv2d_args(1, 0, 1, 1);
    rect.stride_h = 2, rect.pad_left = 2, rect.dil_w = 2;
    gc_conv("dense k3 mixed h/w args", 2, 2, 7, 6, 3, 3, rect, 1, 0);
}

static void test_conv_gradcheck_grouped(void **st) {
    (void)st;
    gc_conv("groups 2", 2, 4, 6, 6, 6, 3, conv2d_args(1, 1, 1, 2), 1, 0);
    gc_conv("groups 2 stride 2 transposed", 2, 4, 7, 6, 4, 3, conv2d_args(2, 1, 1, 2), 0, 1);
    gc_conv("pointwise", 2, 5, 4, 3, 6, 1, conv2d_args(1, 0, 1, 1), 1, 0);
    gc_conv("pointwise 1 image", 1, 5, 4, 3, 6, 1, conv2d_args(1, 0, 1, 1), 0, 0);
    gc_conv("pointwise stride 2", 2, 4, 5, 5, 3, 1, conv2d_args(2, 0, 1, 1), 0, 0);
    gc_conv("pointwise groups 2 transposed", 2, 4, 4, 3, 6, 1, conv2d_args(1, 0, 1, 2), 1, 1);
    gc_conv("depthwise multiplier 2", 2, 3, 5, 5, 6, 3, conv2d_args(1, 1, 1, 3), 1, 0);
}

static void test_conv_gradcheck_depthwise(void **st) {
    (void)st;
    gc_conv("dw k3 s1 SAME", 2, 3, 6, 7, 3, 3, conv2d_args_same(6, 7, 3, 3, 1, 1, 3), 0, 0);
    gc_conv("dw k3 s1 bias", 2, 3, 5, 5, 3, 3, conv2d_args(1, 1, 1, 3), 1, 0);
    gc_conv("dw k3 s2 SAME", 2, 3, 8, 7, 3, 3, conv2d_args_same(8, 7, 3, 3, 2, 1, 3), 0, 0);
    gc_conv("dw k5 s1 SAME", 2, 2, 7, 8, 2, 5, conv2d_args_same(7, 8, 5, 5, 1, 1, 2), 1, 0);
    gc_conv("dw k5 s2 SAME", 2, 2, 9, 8, 2, 5, conv2d_args_same(9, 8, 5, 5, 2, 1, 2), 0, 0);
    gc_conv("dw k3 dilation 2", 1, 2, 8, 9, 2, 3, conv2d_args(1, 2, 2, 2), 0, 0);
    gc_conv("dw k3 s2 transposed", 2, 3, 9, 6, 3, 3, conv2d_args_same(9, 6, 3, 3, 2, 1, 3), 1, 1);
    gc_conv("dw k5 s2 1 image wide", 1, 2, 5, 37, 2, 5, conv2d_args_same(5, 37, 5, 5, 2, 1, 2), 1, 0);
    gc_conv("dw k3 s1 wide (16-blocks + tail)", 1, 2, 3, 35, 2, 3, conv2d_args(1, 1, 1, 2), 0, 0);
}

/* only some inputs need gradients: the stem (image input) and frozen weights */
static void test_conv_gradcheck_partial(void **st) {
    (void)st;
    struct { const char *what; size_t C, OC; Conv2dArgs a; int frozen; } cases[] = {
        {"dense, input constant", 3, 4, conv2d_args(2, 1, 1, 1), 0},
        {"dense, weight frozen", 3, 4, conv2d_args(2, 1, 1, 1), 1},
        {"depthwise, input constant", 3, 3, conv2d_args(1, 1, 1, 3), 0},
        {"depthwise, weight frozen", 3, 3, conv2d_args(2, 1, 1, 3), 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        ConvCase cc = {cases[i].a, 1};
        GcInput in[3] = {GC_IN(4, 2, cases[i].C, 6, 7), GC_IN(4, cases[i].OC, cases[i].C / (size_t)cases[i].a.groups,
                                                               3, 3),
                         GC_IN(1, cases[i].OC)};
        in[cases[i].frozen ? 1 : 0].no_grad = 1;
        gradcheck(cases[i].what, f_conv, in, 3, &cc, (GcOpts){0});
    }
}

/* ------------------------------------------------------------------------------------------ */
/* naive double-precision conv on larger layers: several im2col tiles, wide depthwise rows,
 * both the images-over-threads and the one-image-at-a-time paths */

typedef struct Naive {
    size_t N, C, H, W, OC, KH, KW, OH, OW, G;
    Conv2dArgs a;
} Naive;

/* y = conv(x, w), gx = dL/dx, gw = dL/dw for L = sum(y * R), all in double, by direct loops */
static void naive_conv(const Naive *g, const float *x, const float *w, const float *R, double *y, double *gx,
                       double *gw) {
    size_t cg = g->C / g->G, ocg = g->OC / g->G;
    for (size_t n = 0; n < g->N; n++)
        for (size_t oc = 0; oc < g->OC; oc++)
            for (size_t oh = 0; oh < g->OH; oh++)
                for (size_t ow = 0; ow < g->OW; ow++) {
                    size_t yi = ((n * g->OC + oc) * g->OH + oh) * g->OW + ow;
                    for (size_t icg = 0; icg < cg; icg++) {
                        size_t ic = oc / ocg * cg + icg;   /* input channel in oc's group */
                        for (size_t kh = 0; kh < g->KH; kh++)
                            for (size_t kw = 0; kw < g->KW; kw++) {
                                long ih = (long)oh * g->a.stride_h - g->a.pad_top + (long)kh * g->a.dil_h;
                                long iw = (long)ow * g->a.stride_w - g->a.pad_left + (long)kw * g->a.dil_w;
                                if (ih < 0 || iw < 0 || ih >= (long)g->H || iw >= (long)g->W) continue;
                                size_t xi = ((n * g->C + ic) * g->H + (size_t)ih) * g->W + (size_t)iw;
                                size_t wi = ((oc * cg + icg) * g->KH + kh) * g->KW + kw;
                                y[yi] += (double)x[xi] * w[wi];
                                gx[xi] += (double)R[yi] * w[wi];
                                gw[wi] += (double)R[yi] * x[xi];
                            }
                    }
                }
}

static void naive_check(const char *what, size_t N, size_t C, size_t H, size_t W, size_t OC, size_t K,
                        Conv2dArgs a) {
    Ctx c;
    ctx_init(&c, 3);
    Rng r;
    rng_init(&r, 99);
    Tensor *x = tensor_new_(&c, N, C, H, W), *w = tensor_new_(&c, OC, C / (size_t)a.groups, K, K);
    rng_fill_uniform(&r, x->data, x->numel, -1, 1);
    rng_fill_uniform(&r, w->data, w->numel, -1, 1);
    x->requires_grad = w->requires_grad = 1;
    Tensor *y = op_conv2d(&c, x, w, NULL, a);
    Naive g = {N, C, H, W, OC, K, K, y->shape[2], y->shape[3], (size_t)a.groups, a};
    float *R = malloc(y->numel * sizeof(float));
    rng_fill_uniform(&r, R, y->numel, -1, 1);
    backward_from(&c, y, R);
    double *ry = calloc(y->numel, sizeof(double)), *rgx = calloc(x->numel, sizeof(double)),
           *rgw = calloc(w->numel, sizeof(double));
    naive_conv(&g, x->data, w->data, R, ry, rgx, rgw);
    /* bounds from float accumulation over K*K*C/groups (outputs) or N*OH*OW (weight grads) terms */
    float *f = malloc((x->numel + w->numel + y->numel) * sizeof(float));
    double e[3];
    const float *got[3] = {y->data, x->grad, w->grad};
    const double *want[3] = {ry, rgx, rgw};
    size_t cnt[3] = {y->numel, x->numel, w->numel};
    const char *nm[3] = {"y", "dx", "dw"};
    for (int k = 0; k < 3; k++) {
        char msg[128];
        double mb = 0;
        for (size_t i = 0; i < cnt[k]; i++) {
            f[i] = (float)want[k][i];
            mb = fmax(mb, fabs(want[k][i]));
        }
        snprintf(msg, sizeof msg, "%s %s", what, nm[k]);
        assert_close(msg, got[k], f, cnt[k], 2e-5 * mb, 1e-5);
        e[k] = max_rel_err(got[k], f, cnt[k]);
    }
    printf("    %-34s y %.1e dx %.1e dw %.1e\n", what, e[0], e[1], e[2]);
    free(f), free(R), free(ry), free(rgx), free(rgw);
    ctx_free(&c);
}

static void test_conv_vs_naive_large(void **st) {
    (void)st;
    /* K = 128*9 = 1152 columns per output pixel: the 4M-float im2col tile holds 36 of 96 rows */
    naive_check("dense k3 s1 3 tiles, 2 images", 2, 128, 96, 96, 3, 3, conv2d_args(1, 1, 1, 1));
    naive_check("dense k3 s2 SAME, 1 image", 1, 16, 33, 30, 8, 3, conv2d_args_same(33, 30, 3, 3, 2, 1, 1));
    naive_check("pointwise 3 images", 3, 24, 20, 18, 40, 1, conv2d_args(1, 0, 1, 1));
    naive_check("dw k3 s1 wide", 2, 8, 30, 53, 8, 3, conv2d_args_same(30, 53, 3, 3, 1, 1, 8));
    naive_check("dw k3 s2 wide", 3, 8, 31, 66, 8, 3, conv2d_args_same(31, 66, 3, 3, 2, 1, 8));
    naive_check("dw k5 s1 wide", 2, 8, 28, 28, 8, 5, conv2d_args_same(28, 28, 5, 5, 1, 1, 8));
    naive_check("dw k5 s2 wide", 1, 8, 29, 41, 8, 5, conv2d_args_same(29, 41, 5, 5, 2, 1, 8));
    naive_check("grouped 4 k3 s2", 2, 8, 21, 19, 12, 3, conv2d_args(2, 1, 1, 4));
}

/* ------------------------------------------------------------------------------------------ */
/* determinism and errors */

static void run_once(size_t C, size_t OC, int groups, float *out, size_t *n_out) {
    Ctx c;
    ctx_init(&c, 5);
    Rng r;
    rng_init(&r, 11);
    Tensor *x = tensor_new_(&c, 4, C, 23, 29), *w = tensor_new_(&c, OC, C / (size_t)groups, 3, 3);
    Tensor *b = tensor_new_(&c, OC);
    rng_fill_uniform(&r, x->data, x->numel, -1, 1);
    rng_fill_uniform(&r, w->data, w->numel, -1, 1);
    rng_fill_uniform(&r, b->data, b->numel, -1, 1);
    x->requires_grad = w->requires_grad = b->requires_grad = 1;
    Tensor *y = op_conv2d(&c, x, w, b, conv2d_args(2, 1, 1, groups));
    float *R = malloc(y->numel * sizeof(float));
    rng_fill_uniform(&r, R, y->numel, -1, 1);
    backward_from(&c, y, R);
    size_t k = 0;
    memcpy(out + k, y->data, y->numel * sizeof(float)), k += y->numel;
    memcpy(out + k, x->grad, x->numel * sizeof(float)), k += x->numel;
    memcpy(out + k, w->grad, w->numel * sizeof(float)), k += w->numel;
    memcpy(out + k, b->grad, b->numel * sizeof(float)), k += b->numel;
    *n_out = k;
    free(R);
    ctx_free(&c);
}

static void test_conv_deterministic(void **st) {
    (void)st;
    size_t cap = 200000, n1, n2;
    float *a = malloc(cap * sizeof(float)), *b = malloc(cap * sizeof(float));
    for (int groups = 1; groups <= 16; groups *= 16) {   /* dense, then depthwise */
        run_once(16, 16, groups, a, &n1);
        run_once(16, 16, groups, b, &n2);
        assert_int_equal(n1, n2);
        assert_memory_equal(a, b, n1 * sizeof(float));
    }
    free(a), free(b);
}

static void test_conv_shape_errors(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    jmp_buf jb;
    c.fail_jmp = &jb;
    Tensor *x = tensor_zeros_(&c, 2, 4, 8, 8);
    Tensor *w = tensor_zeros_(&c, 6, 3, 3, 3);
    if (setjmp(jb) == 0) {
        op_conv2d(&c, x, w, NULL, conv2d_args(1, 1, 1, 1));
        fail_msg("4 input channels against a 3-channel weight did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "op_conv2d"));
    assert_non_null(strstr(c.fail_msg, "(2,4,8,8)"));
    assert_non_null(strstr(c.fail_msg, "(6,3,3,3)"));
    Tensor *w2 = tensor_zeros_(&c, 6, 4, 3, 3), *b = tensor_zeros_(&c, 5);
    if (setjmp(jb) == 0) {
        op_conv2d(&c, x, w2, b, conv2d_args(1, 1, 1, 1));
        fail_msg("a 5-element bias for 6 output channels did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "bias (5)"));
    Tensor *w3 = tensor_zeros_(&c, 6, 4, 11, 11);
    if (setjmp(jb) == 0) {
        op_conv2d(&c, x, w3, NULL, conv2d_args(1, 1, 1, 1));
        fail_msg("an 11x11 kernel on an 8x8 (+2 pad) input did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "smaller than"));
    ctx_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_args_same),           cmocka_unit_test(test_conv_vs_pytorch),
        cmocka_unit_test(test_conv_gradcheck_dense),     cmocka_unit_test(test_conv_gradcheck_grouped),
        cmocka_unit_test(test_conv_gradcheck_depthwise), cmocka_unit_test(test_conv_gradcheck_partial),
        cmocka_unit_test(test_conv_vs_naive_large),
        cmocka_unit_test(test_conv_deterministic),       cmocka_unit_test(test_conv_shape_errors),
    };
    return RUN_GROUP(tests);
}
