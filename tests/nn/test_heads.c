/* test_heads.c — the dense and multimodal heads (nn/unet.c, nn/detect.c, nn/fusion.c) and
 * RoIAlign (engine/op_roi_align.c).
 *
 * Against torchvision 0.14 (tests/ref/heads.py -> tests/ref/data/heads.h5): roi_align forward
 * and input gradient (borders, sub-pixel and empty boxes, adaptive sampling, aligned), nms and
 * batched_nms (identical kept lists), box_iou, BoxCoder encode/decode (both weight sets, the
 * log(1000/16) clamp), AnchorGenerator (the paper's 9 anchors on 5 levels), Matcher (with and
 * without low-quality matches), FeaturePyramidNetwork + LastLevelMaxPool, and a whole
 * RPN + RoIHeads: the four training losses and the gradients of every head weight and of every
 * level map (samplers that take everything, so nothing is random), and the inference detections.
 * Hand-checked: anchors of one cell, encode/decode round trip, the sampler's counts.
 * Finite differences: roi_align (strided input too).
 * Learning: each head on a tiny synthetic task, clearly above chance. */
#include "tests/common/testutil.h"
#include "nn/nn.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------------------------------------ */
/* helpers */

static float *rget(RefFile *r, const char *key, size_t *n, int *nd, size_t *shape) {
    return ref_get(r, key, n, nd, shape);
}

static float rscalar(RefFile *r, const char *key) {
    size_t n;
    float *v = ref_get(r, key, &n, NULL, NULL);
    float x = v[0];
    free(v);
    return x;
}

static Tensor *ref_tensor(Ctx *c, RefFile *r, const char *key, int requires_grad) {
    size_t n, shape[8];
    int nd;
    float *d = rget(r, key, &n, &nd, shape);
    Tensor *t = tensor_from(c, nd, shape, d);
    t->requires_grad = (uint8_t)requires_grad;
    free(d);
    return t;
}

/* copies a reference array into a parameter after checking its size */
static void ref_into(RefFile *r, const char *key, Tensor *t) {
    size_t n;
    float *d = rget(r, key, &n, NULL, NULL);
    if (n != t->numel) fail_msg("%s: %zu values for a tensor of %zu", key, n, t->numel);
    memcpy(t->data, d, n * sizeof(float));
    free(d);
}

/* |a - ref| <= tol * max|ref| + tol * |ref|; returns max |a - ref| / max |ref| */
static double check_ref(RefFile *r, const char *key, const float *a, size_t n, double tol) {
    size_t nr;
    float *b = rget(r, key, &nr, NULL, NULL);
    if (nr != n) fail_msg("%s: %zu values, expected %zu", key, n, nr);
    double mb = 0;
    for (size_t i = 0; i < n; i++) mb = fmax(mb, fabs((double)b[i]));
    assert_close(key, a, b, n, tol * (mb > 0 ? mb : 1), tol);
    double e = 0;
    for (size_t i = 0; i < n; i++) e = fmax(e, fabs((double)a[i] - b[i]));
    free(b);
    return e / (mb > 0 ? mb : 1);
}

static double user_seconds(void) {
    return (double)clock() / CLOCKS_PER_SEC;
}

/* ------------------------------------------------------------------------------------------ */
/* RoIAlign */

static void test_roi_align_vs_torchvision(void **st) {
    (void)st;
    static const char *cases[] = {"scale025_s2", "scale05_adaptive", "scale0125_s2_3x4", "scale025_aligned", "many"};
    RefFile *r = ref_open("heads");
    Ctx c;
    ctx_init(&c, 1);
    double wy = 0, wg = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char k[128];
        ctx_step_begin(&c);
        snprintf(k, sizeof k, "roi_align/%s/x", cases[i]);
        Tensor *x = ref_tensor(&c, r, k, 1);
        snprintf(k, sizeof k, "roi_align/%s/rois", cases[i]);
        size_t nr;
        float *rois = rget(r, k, &nr, NULL, NULL);
        snprintf(k, sizeof k, "roi_align/%s/args", cases[i]);
        float *a = rget(r, k, NULL, NULL, NULL);   /* out_h, out_w, scale, sampling, aligned */
        Tensor *y = op_roi_align(&c, x, rois, nr / 5, (int)a[0], (int)a[1], a[2], (int)a[3], (int)a[4]);
        snprintf(k, sizeof k, "roi_align/%s/y", cases[i]);
        wy = fmax(wy, check_ref(r, k, y->data, y->numel, 1e-5));
        snprintf(k, sizeof k, "roi_align/%s/R", cases[i]);
        size_t nR;
        float *R = rget(r, k, &nR, NULL, NULL);
        assert_int_equal(nR, y->numel);
        backward_from(&c, y, R);
        snprintf(k, sizeof k, "roi_align/%s/gx", cases[i]);
        wg = fmax(wg, check_ref(r, k, x->grad, x->numel, 1e-5));
        free(R);
        free(rois);
        free(a);
    }
    printf("  roi_align vs torchvision: max |dy| %.2e, |dgx| %.2e (relative to the largest value)\n", wy, wg);
    ctx_free(&c);
    ref_close(r);
}

typedef struct RoiGc {
    const float *rois;
    size_t K;
    int oh, ow, sampling, aligned;
    float scale;
} RoiGc;

static Tensor *f_roi(Ctx *c, Tensor **in, void *ud) {
    const RoiGc *g = ud;
    return op_roi_align(c, in[0], g->rois, g->K, g->oh, g->ow, g->scale, g->sampling, g->aligned);
}

static void test_roi_align_gradcheck(void **st) {
    (void)st;
    /* boxes inside, across the borders and smaller than a pixel; the kinks of bilinear taps sit
     * at integer feature coordinates, which these sample positions avoid */
    static const float rois[] = {0, 1.3f, 2.1f, 13.7f, 9.9f, 1, -3.1f, -1.7f, 7.3f, 5.9f, 0, 9.1f, 3.3f, 9.9f, 4.1f,
                                 1, 2.2f, 6.6f, 16.6f, 14.2f};
    RoiGc g = {rois, 4, 3, 2, 2, 0, 0.5f};
    GcInput in = GC_IN(4, 2, 3, 7, 9);
    double w = gradcheck("roi_align s2", f_roi, &in, 1, &g, (GcOpts){.h = 1e-2});
    g.sampling = 0;
    g.aligned = 1;
    in.transposed = 1;   /* (2, 3, 9, 7) base seen as (2, 3, 7, 9) */
    w = fmax(w, gradcheck("roi_align adaptive aligned strided", f_roi, &in, 1, &g, (GcOpts){.h = 1e-2}));
    printf("  roi_align gradcheck: worst %.3f of tolerance\n", w);
}

/* ------------------------------------------------------------------------------------------ */
/* box utilities */

static void test_nms_vs_torchvision(void **st) {
    (void)st;
    static const char *cases[] = {"n200_t05", "n200_t07", "n50_t03"};
    RefFile *r = ref_open("heads");
    for (size_t i = 0; i < 3; i++) {
        char k[128];
        size_t nb, ns, nk;
        snprintf(k, sizeof k, "nms/%s/boxes", cases[i]);
        float *boxes = rget(r, k, &nb, NULL, NULL);
        snprintf(k, sizeof k, "nms/%s/scores", cases[i]);
        float *scores = rget(r, k, &ns, NULL, NULL);
        snprintf(k, sizeof k, "nms/%s/thresh", cases[i]);
        float thr = rscalar(r, k);
        snprintf(k, sizeof k, "nms/%s/keep", cases[i]);
        float *keep_ref = rget(r, k, &nk, NULL, NULL);
        int32_t *keep = malloc(ns * sizeof(int32_t));
        size_t n = box_nms(boxes, scores, ns, thr, keep);
        assert_int_equal(n, nk);
        for (size_t j = 0; j < n; j++) assert_int_equal(keep[j], (int32_t)keep_ref[j]);
        printf("  nms %s: %zu of %zu kept, identical to torchvision\n", cases[i], n, ns);
        free(boxes);
        free(scores);
        free(keep_ref);
        free(keep);
    }
    size_t nb, ns, ng, nk;
    float *boxes = rget(r, "batched_nms/boxes", &nb, NULL, NULL);
    float *scores = rget(r, "batched_nms/scores", &ns, NULL, NULL);
    float *gf = rget(r, "batched_nms/groups", &ng, NULL, NULL);
    float *keep_ref = rget(r, "batched_nms/keep", &nk, NULL, NULL);
    int32_t *groups = malloc(ng * sizeof(int32_t)), *keep = malloc(ns * sizeof(int32_t));
    for (size_t i = 0; i < ng; i++) groups[i] = (int32_t)gf[i];
    size_t n = box_batched_nms(boxes, scores, groups, ns, rscalar(r, "batched_nms/thresh"), keep);
    assert_int_equal(n, nk);
    for (size_t j = 0; j < n; j++) assert_int_equal(keep[j], (int32_t)keep_ref[j]);
    printf("  batched_nms: %zu of %zu kept over 4 groups, identical to torchvision\n", n, ns);
    free(boxes);
    free(scores);
    free(gf);
    free(keep_ref);
    free(groups);
    free(keep);
    ref_close(r);
}

static void test_iou_coder_vs_torchvision(void **st) {
    (void)st;
    RefFile *r = ref_open("heads");
    size_t na, nb;
    float *a = rget(r, "iou/a", &na, NULL, NULL), *b = rget(r, "iou/b", &nb, NULL, NULL);
    na /= 4;
    nb /= 4;
    float *iou = malloc(na * nb * sizeof(float));
    box_iou_matrix(a, na, b, nb, iou);
    double e_iou = check_ref(r, "iou/iou", iou, na * nb, 1e-6);
    assert_float_equal(iou[2 * nb + 3], 1.0f, 1e-6f);   /* the duplicated box */

    size_t n;
    float *ref = rget(r, "coder/ref", &n, NULL, NULL), *gt = rget(r, "coder/gt", NULL, NULL, NULL);
    float *rel = rget(r, "coder/rel", NULL, NULL, NULL);
    n /= 4;
    float *d = malloc(n * 4 * sizeof(float)), *back = malloc(n * 4 * sizeof(float));
    static const float w1[4] = {1, 1, 1, 1}, w2[4] = {10, 10, 5, 5};
    const float *ws[2] = {w1, w2};
    static const char *names[2] = {"1111", "10_10_5_5"};
    double e_enc = 0, e_dec = 0, e_rt = 0;
    for (int k = 0; k < 2; k++) {
        char key[64];
        box_encode(ws[k], gt, ref, n, d);
        snprintf(key, sizeof key, "coder/deltas_%s", names[k]);
        e_enc = fmax(e_enc, check_ref(r, key, d, n * 4, 2e-6));
        /* round trip: decode(encode(gt)) == gt */
        box_decode(ws[k], d, ref, n, back);
        for (size_t i = 0; i < n * 4; i++) e_rt = fmax(e_rt, fabs((double)back[i] - gt[i]));
        box_decode(ws[k], rel, ref, n, back);
        snprintf(key, sizeof key, "coder/dec_%s", names[k]);
        e_dec = fmax(e_dec, check_ref(r, key, back, n * 4, 2e-6));
    }
    assert_true(e_rt < 1e-4);
    printf("  box_iou %.1e, encode %.1e, decode (incl. the clamp) %.1e rel.; round trip max |d| %.1e px\n", e_iou,
           e_enc, e_dec, e_rt);
    free(a);
    free(b);
    free(iou);
    free(ref);
    free(gt);
    free(rel);
    free(d);
    free(back);
    ref_close(r);
}

static void test_anchors_vs_torchvision(void **st) {
    (void)st;
    RefFile *r = ref_open("heads");
    float *img = rget(r, "anchors/image", NULL, NULL, NULL);
    size_t ng, ns, nr, na;
    float *grids = rget(r, "anchors/grids", &ng, NULL, NULL);
    float *sizes = rget(r, "anchors/sizes", &ns, NULL, NULL), *ratios = rget(r, "anchors/ratios", &nr, NULL, NULL);
    float *ref = rget(r, "anchors/anchors", &na, NULL, NULL);
    float *out = malloc(na * sizeof(float));
    size_t k = 0;
    for (size_t l = 0; l < ng / 2; l++) {
        int gh = (int)grids[2 * l], gw = (int)grids[2 * l + 1];
        k += anchors_grid(sizes, (int)ns, ratios, (int)nr, gh, gw, (int)img[0] / gh, (int)img[1] / gw, out + 4 * k);
    }
    assert_int_equal(4 * k, na);
    for (size_t i = 0; i < na; i++) assert_float_equal(out[i], ref[i], 0.0f);
    printf("  anchors: %zu on 5 levels, identical to torchvision's AnchorGenerator\n", k);
    /* hand-checked: ratio 0.5 (first), size 32 at cell (0, 0): w = 32 * sqrt(2) = 45.25 -> +-23,
     * h = 32 / sqrt(2) = 22.6 -> +-11 */
    assert_float_equal(out[0], -23.0f, 0.0f);
    assert_float_equal(out[1], -11.0f, 0.0f);
    assert_float_equal(out[2], 23.0f, 0.0f);
    assert_float_equal(out[3], 11.0f, 0.0f);
    /* the 10th anchor is cell (0, 1): shifted by the horizontal stride 90 // 23 = 3 */
    assert_float_equal(out[4 * 9 + 0], -23.0f + 3.0f, 0.0f);
    free(img);
    free(grids);
    free(sizes);
    free(ratios);
    free(ref);
    free(out);
    ref_close(r);
}

static void test_matcher_and_sampler(void **st) {
    (void)st;
    RefFile *r = ref_open("heads");
    size_t n, shape[4];
    int nd;
    float *iou = rget(r, "matcher/iou", &n, &nd, shape);
    size_t G = shape[0], P = shape[1];
    float hi = rscalar(r, "matcher/high"), lo = rscalar(r, "matcher/low");
    float *m_low = rget(r, "matcher/m_low", NULL, NULL, NULL), *m_plain = rget(r, "matcher/m_plain", NULL, NULL, NULL);
    int32_t *m = malloc(P * sizeof(int32_t));
    box_match(iou, G, P, hi, lo, 1, m);
    for (size_t p = 0; p < P; p++) assert_int_equal(m[p], (int32_t)m_low[p]);
    assert_int_equal(m[7], 1);   /* gt 1's low-quality best, restored */
    box_match(iou, G, P, hi, lo, 0, m);
    for (size_t p = 0; p < P; p++) assert_int_equal(m[p], (int32_t)m_plain[p]);
    assert_int_equal(m[7], MATCH_BELOW);
    assert_int_equal(m[20], MATCH_BETWEEN);
    printf("  matcher: %zu x %zu, identical to torchvision with and without low-quality matches\n", G, P);
    free(iou);
    free(m_low);
    free(m_plain);
    free(m);
    ref_close(r);

    /* sampler: 10 positives, 100 negatives, 7 ignored; batch 16 at 25% -> 4 + 12 */
    int32_t labels[117], pos[117], neg[117];
    for (int i = 0; i < 117; i++) labels[i] = i < 10 ? 1 : i < 110 ? 0 : -1;
    Rng rng;
    rng_init(&rng, 3);
    size_t np, nn;
    size_t tot = sample_pos_neg(labels, 117, 16, 0.25f, &rng, pos, &np, neg, &nn);
    assert_int_equal(np, 4);
    assert_int_equal(nn, 12);
    assert_int_equal(tot, 16);
    for (size_t i = 0; i < np; i++) assert_int_equal(labels[pos[i]], 1);
    for (size_t i = 0; i < nn; i++) assert_int_equal(labels[neg[i]], 0);
    /* too few positives: the rest are negatives (batch 256, 50%: 10 + 100 (all negatives)) */
    tot = sample_pos_neg(labels, 117, 256, 0.5f, &rng, pos, &np, neg, &nn);
    assert_int_equal(np, 10);
    assert_int_equal(nn, 100);
}

/* ------------------------------------------------------------------------------------------ */
/* FPN and the whole detector vs torchvision */

/* a CNN whose stages 2, 3, 5, 7 have strides 4, 8, 16, 32 and 3, 5, 6, 7 channels */
static BackboneDims fake_cnn_dims(void) {
    BackboneDims d;
    memset(&d, 0, sizeof d);
    d.kind = BACKBONE_CNN;
    static const int ch[8] = {1, 1, 3, 5, 1, 6, 1, 7}, sd[8] = {2, 2, 4, 8, 16, 16, 32, 32};
    memcpy(d.stage_ch, ch, sizeof ch);
    memcpy(d.stage_stride, sd, sizeof sd);
    return d;
}

static void load_det_weights(RefFile *r, FasterRCNN *m) {
    ref_into(r, "det/rpn.conv.w", m->rpn_conv.w);
    ref_into(r, "det/rpn.conv.b", m->rpn_conv.b);
    ref_into(r, "det/rpn.cls.w", m->rpn_cls.w);
    ref_into(r, "det/rpn.cls.b", m->rpn_cls.b);
    ref_into(r, "det/rpn.bbox.w", m->rpn_bbox.w);
    ref_into(r, "det/rpn.bbox.b", m->rpn_bbox.b);
    ref_into(r, "det/roi.fc6.w", m->fc6.w);
    ref_into(r, "det/roi.fc6.b", m->fc6.b);
    ref_into(r, "det/roi.fc7.w", m->fc7.w);
    ref_into(r, "det/roi.fc7.b", m->fc7.b);
    ref_into(r, "det/roi.cls.w", m->cls_score.w);
    ref_into(r, "det/roi.cls.b", m->cls_score.b);
    ref_into(r, "det/roi.bbox.w", m->bbox_pred.w);
    ref_into(r, "det/roi.bbox.b", m->bbox_pred.b);
}

static void test_fpn_vs_torchvision(void **st) {
    (void)st;
    RefFile *r = ref_open("heads");
    DetConfig cfg = det_config_default();
    cfg.fpn_ch = 8;
    cfg.rep_size = 32;
    BackboneDims bd = fake_cnn_dims();
    ParamStore ps;
    params_init(&ps);
    FasterRCNN m;
    det_declare(&m, &cfg, &bd, &ps, "");
    params_alloc(&ps);
    for (int l = 0; l < 4; l++) {
        char k[64];
        snprintf(k, sizeof k, "fpn/inner%d.w", l);
        ref_into(r, k, m.fpn_inner[l].w);
        snprintf(k, sizeof k, "fpn/inner%d.b", l);
        ref_into(r, k, m.fpn_inner[l].b);
        snprintf(k, sizeof k, "fpn/layer%d.w", l);
        ref_into(r, k, m.fpn_layer[l].w);
        snprintf(k, sizeof k, "fpn/layer%d.b", l);
        ref_into(r, k, m.fpn_layer[l].b);
    }
    Ctx c;
    ctx_init(&c, 1);
    ctx_step_begin(&c);
    BackboneMaps f;
    memset(&f, 0, sizeof f);
    f.kind = BACKBONE_CNN;
    static const int at[4] = {2, 3, 5, 7};
    for (int l = 0; l < 4; l++) {
        char k[32];
        snprintf(k, sizeof k, "fpn/in%d", l);
        f.stages[at[l]] = ref_tensor(&c, r, k, 0);
    }
    f.in_h = 64;
    f.in_w = 68;
    DetFeatures ft = det_fpn_forward(&c, &m, &f);
    double e = 0;
    for (int l = 0; l < 5; l++) {
        char k[32];
        snprintf(k, sizeof k, "fpn/out%d", l);
        e = fmax(e, check_ref(r, k, ft.lv[l]->data, ft.lv[l]->numel, 1e-5));
    }
    printf("  FPN (lateral + top-down + 3x3 + max-pool level) vs torchvision: max rel %.2e\n", e);
    ctx_free(&c);
    params_free(&ps);
    ref_close(r);
}

static void test_detector_vs_torchvision(void **st) {
    (void)st;
    RefFile *r = ref_open("heads");
    DetConfig cfg = det_config_default();
    cfg.fpn_ch = 8;
    cfg.rep_size = 32;
    /* take every anchor and every RoI: the losses are then deterministic */
    cfg.rpn_batch = 1000000;
    cfg.rpn_pos_frac = 1.0f;
    cfg.box_batch = 1000000;
    cfg.box_pos_frac = 1.0f;
    BackboneDims bd = fake_cnn_dims();
    ParamStore ps;
    params_init(&ps);
    FasterRCNN m;
    det_declare(&m, &cfg, &bd, &ps, "");
    params_alloc(&ps);
    load_det_weights(r, &m);
    params_zero_grad(&ps);

    Ctx c;
    ctx_init(&c, 1);
    ctx_step_begin(&c);
    DetFeatures ft;
    memset(&ft, 0, sizeof ft);
    ft.in_h = ft.in_w = 64;
    for (int l = 0; l < 5; l++) {
        char k[32];
        snprintf(k, sizeof k, "det/f%d", l);
        ft.lv[l] = ref_tensor(&c, r, k, 1);
    }
    size_t ngt;
    float *gt = rget(r, "det/gt", &ngt, NULL, NULL);
    float *gt_n = rget(r, "det/gt_n", NULL, NULL, NULL);
    DetTarget tg[3];
    size_t off = 0;
    for (int b = 0; b < 3; b++) {
        tg[b].n = (int)gt_n[b];
        tg[b].boxes = gt + 4 * off;
        off += (size_t)tg[b].n;
    }
    Rng rng;
    rng_init(&rng, 1);
    DetLosses L = det_forward_train(&c, &m, &ft, tg, &rng);
    double el = 0;
    el = fmax(el, check_ref(r, "det/loss_objectness", L.rpn_objectness->data, 1, 2e-5));
    el = fmax(el, check_ref(r, "det/loss_rpn_box_reg", L.rpn_box->data, 1, 2e-5));
    el = fmax(el, check_ref(r, "det/loss_classifier", L.classifier->data, 1, 2e-5));
    el = fmax(el, check_ref(r, "det/loss_box_reg", L.box_reg->data, 1, 2e-5));
    printf("  detector losses: objectness %.5f rpn_box %.5f classifier %.5f box_reg %.5f (%d + %d positives); "
           "max rel err %.1e\n",
           L.rpn_objectness->data[0], L.rpn_box->data[0], L.classifier->data[0], L.box_reg->data[0], L.n_rpn_pos,
           L.n_roi_pos, el);
    backward(&c, L.total);
    struct {
        const char *key;
        Tensor *t;
    } gs[] = {{"det/g.rpn.conv.w", m.rpn_conv.w}, {"det/g.rpn.conv.b", m.rpn_conv.b}, {"det/g.rpn.cls.w", m.rpn_cls.w},
              {"det/g.rpn.cls.b", m.rpn_cls.b},   {"det/g.rpn.bbox.w", m.rpn_bbox.w}, {"det/g.rpn.bbox.b", m.rpn_bbox.b},
              {"det/g.roi.fc6.w", m.fc6.w},       {"det/g.roi.fc6.b", m.fc6.b},       {"det/g.roi.fc7.w", m.fc7.w},
              {"det/g.roi.fc7.b", m.fc7.b},       {"det/g.roi.cls.w", m.cls_score.w}, {"det/g.roi.cls.b", m.cls_score.b},
              {"det/g.roi.bbox.w", m.bbox_pred.w}, {"det/g.roi.bbox.b", m.bbox_pred.b}};
    double eg = 0;
    for (size_t i = 0; i < sizeof gs / sizeof *gs; i++) eg = fmax(eg, check_ref(r, gs[i].key, gs[i].t->grad, gs[i].t->numel, 1e-4));
    double ef = 0;
    for (int l = 0; l < 5; l++) {
        char k[32];
        snprintf(k, sizeof k, "det/gf%d", l);
        ef = fmax(ef, check_ref(r, k, ft.lv[l]->grad, ft.lv[l]->numel, 1e-4));
    }
    printf("  detector gradients vs torchvision: weights max rel %.1e, level maps %.1e\n", eg, ef);

    /* inference: the test-time RPN settings and the box predictor's post-processing */
    m.cfg = det_config_default();
    m.cfg.fpn_ch = 8;
    m.cfg.rep_size = 32;
    ctx_step_begin(&c);
    for (int l = 0; l < 5; l++) {
        char k[32];
        snprintf(k, sizeof k, "det/f%d", l);
        ft.lv[l] = ref_tensor(&c, r, k, 0);
    }
    Detections det[3];
    det_detect(&c, &m, &ft, det);
    double eb = 0, es = 0;
    int n_sliver = 0, n_total = 0;
    for (int b = 0; b < 3; b++) {
        char k[64];
        size_t n;
        snprintf(k, sizeof k, "det/eval%d.scores", b);
        float *s = rget(r, k, &n, NULL, NULL);
        assert_int_equal((size_t)det[b].n, n);
        free(s);
        es = fmax(es, check_ref(r, k, det[b].scores, n, 1e-5));
        /* boxes: a proposal clipped to a sliver at the border (height << 1 px) is the difference of
         * two nearly equal numbers, so 1-ulp differences of exp() decide its final box; such
         * slivers (ref side < 4 px) may differ, every other box must match */
        snprintf(k, sizeof k, "det/eval%d.boxes", b);
        float *rb = rget(r, k, NULL, NULL, NULL);
        for (size_t q = 0; q < n; q++) {
            const float *a = det[b].boxes + 4 * q, *e = rb + 4 * q;
            double d = 0;
            for (int j = 0; j < 4; j++) d = fmax(d, fabs((double)a[j] - e[j]));
            if (d <= 1e-3) {
                eb = fmax(eb, d);
                continue;
            }
            if (fminf(e[2] - e[0], e[3] - e[1]) < 4.0f) {
                n_sliver++;
                continue;
            }
            fail_msg("detection %zu of image %d: (%g %g %g %g), torchvision (%g %g %g %g)", q, b, a[0], a[1], a[2],
                     a[3], e[0], e[1], e[2], e[3]);
        }
        n_total += n;
        free(rb);
    }
    assert_true(n_sliver * 50 <= n_total);
    printf("  detections vs torchvision (%d boxes on 3 images): scores max rel %.1e, boxes max |d| %.1e px "
           "(%d border slivers differ)\n", n_total, es, eb, n_sliver);
    free(gt);
    free(gt_n);
    ctx_free(&c);
    params_free(&ps);
    ref_close(r);
}


/* ------------------------------------------------------------------------------------------ */
/* Learning: frozen random backbones, small synthetic tasks */

typedef struct Backbone {
    ParamStore ps;
    int kind;
    EffNet eff;
    ViT vit;
    BackboneDims dims;
    int size;
} Backbone;

static void backbone_make(Backbone *b, int kind, int size) {
    memset(b, 0, sizeof *b);
    params_init(&b->ps);
    b->ps.values_only = 1;
    b->kind = kind;
    b->size = size;
    Rng r;
    rng_init(&r, 11);
    if (kind == BACKBONE_CNN) {
        EffNetConfig ec;
        effnet_config("efficientnet-b0", &ec);
        ec.static_size = size;
        effnet_declare(&b->eff, &ec, &b->ps, "");
        params_alloc(&b->ps);
        effnet_init(&b->eff, &r);
        backbone_dims_effnet(&b->eff, &b->dims);
    } else {
        ViTConfig vc;
        vit_config("vit_tiny", 8, size, &vc);
        vc.embed_dim = 48;
        vc.depth = 2;
        vc.heads = 3;
        vit_declare(&b->vit, &vc, &b->ps, "");
        params_alloc(&b->ps);
        vit_init(&b->vit, &r);
        backbone_dims_vit(&b->vit, &b->dims);
    }
}

static void backbone_free(Backbone *b) {
    if (b->kind == BACKBONE_VIT) vit_free(&b->vit);
    params_free(&b->ps);
}

/* A random EfficientNet in eval mode normalises with running statistics (0, 1) that do not fit
 * its activations: with fan-out init they shrink block after block, so the stride-4..32 maps come
 * out nearly identical for every image (per-image differences ~1e-4 of the bias) and a head on
 * them cannot localise anything.  The frozen backbone of a test therefore gets its BN running
 * statistics from one batch of task images first (momentum 1 = the batch's own statistics), the
 * "BN recalibration" of a random network; its weights stay random. */
static void backbone_calibrate(Ctx *c, Backbone *b, Tensor *x) {
    if (b->kind != BACKBONE_CNN) return;
    EffNet *e = &b->eff;
    BatchNorm2d *bns[3 * EFFNET_MAX_BLOCKS + 2];
    int n = 0;
    bns[n++] = &e->bn0;
    for (int i = 0; i < e->n_blocks; i++) {
        if (e->blocks[i].expand != 1) bns[n++] = &e->blocks[i].bn0;
        bns[n++] = &e->blocks[i].bn1;
        bns[n++] = &e->blocks[i].bn2;
    }
    bns[n++] = &e->bn1;
    float mom[3 * EFFNET_MAX_BLOCKS + 2];
    for (int i = 0; i < n; i++) {
        mom[i] = bns[i]->momentum;
        bns[i]->momentum = 1.0f;
    }
    int g = ctx_set_grad(c, 0), tr = c->training;
    c->training = 1;
    effnet_forward(c, e, x);
    c->training = tr;
    ctx_set_grad(c, g);
    for (int i = 0; i < n; i++) bns[i]->momentum = mom[i];
}

/* frozen backbone: eval mode, no gradient; the head then trains with c->training = train */
static BackboneMaps backbone_run(Ctx *c, const Backbone *b, Tensor *x, int train) {
    int g = ctx_set_grad(c, 0);
    c->training = 0;
    BackboneMaps f;
    if (b->kind == BACKBONE_CNN) {
        EffNetOut o = effnet_forward(c, &b->eff, x);
        f = backbone_maps_effnet(&o, b->size, b->size);
    } else {
        ViTOut o = vit_forward(c, &b->vit, x, NULL);
        f = backbone_maps_vit(c, &o, b->size, b->size);
    }
    ctx_set_grad(c, g);
    c->training = train;
    return f;
}

/* gray image (S, S) -> normalised 3-channel input at x */
static void to_input(const float *img, int S, float *x) {
    for (int ch = 0; ch < 3; ch++)
        for (int i = 0; i < S * S; i++) x[(size_t)ch * S * S + i] = (img[i] - 0.5f) / 0.5f;
}

/* a bright disk on a noisy background; mask (S, S) 0/1 */
static void make_disk(Rng *r, int S, float *img, float *mask) {
    float rad = 3.0f + rng_uniform(r) * (S / 4.0f - 3.0f);
    float cx = rad + rng_uniform(r) * (S - 2 * rad), cy = rad + rng_uniform(r) * (S - 2 * rad);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            float d2 = (x + 0.5f - cx) * (x + 0.5f - cx) + (y + 0.5f - cy) * (y + 0.5f - cy);
            int in = d2 <= rad * rad;
            mask[y * S + x] = (float)in;
            img[y * S + x] = 0.3f + 0.1f * rng_normal(r) + (in ? 0.45f : 0.0f);
        }
}

static double map_std(const Tensor *t) {
    double s = 0, s2 = 0;
    for (size_t i = 0; i < t->numel; i++) s += t->data[i], s2 += (double)t->data[i] * t->data[i];
    double m = s / (double)t->numel;
    return sqrt(fmax(s2 / (double)t->numel - m * m, 0.0));
}

/* Why the part-2 heads score 0 on the synthetic suite with a random EfficientNet (issue 8): in eval
 * mode its stage maps shrink geometrically, as torchvision's efficientnet_b0() does (random init,
 * .eval(), 96 px: std 0.132, 0.017, 4.9e-4, 1.1e-5, ..., 1.0e-13 for features[0..7]), so the
 * stride-4..32 taps of the FPN / UNet are numerically dead (below BatchNorm's eps 1e-5).  The bench
 * keeps that baseline as the paper defines it; the head tests above recalibrate BN first. */
static void test_random_effnet_maps_collapse(void **st) {
    (void)st;
    const int S = 64, B = 4;
    Backbone bb;
    backbone_make(&bb, BACKBONE_CNN, S);
    Ctx c;
    ctx_init(&c, 3);
    ctx_step_begin(&c);
    Rng data;
    rng_init(&data, 5);
    float *img = malloc((size_t)S * S * sizeof(float)), *m = malloc((size_t)S * S * sizeof(float));
    float *x = malloc((size_t)B * 3 * S * S * sizeof(float));
    for (int b = 0; b < B; b++) {
        make_disk(&data, S, img, m);
        to_input(img, S, x + (size_t)b * 3 * S * S);
    }
    Tensor *xt = tensor_from(&c, 4, TSHAPE((size_t)B, 3, (size_t)S, (size_t)S), x);
    BackboneMaps f = backbone_run(&c, &bb, xt, 0);
    double s0 = map_std(f.stages[0]), s2 = map_std(f.stages[2]) / s0, s7 = map_std(f.stages[7]) / s0;
    backbone_calibrate(&c, &bb, xt);
    BackboneMaps g = backbone_run(&c, &bb, xt, 0);
    double c0 = map_std(g.stages[0]), c7 = map_std(g.stages[7]) / c0;
    printf("  random EfficientNet-B0, eval mode: std(stage 2) / std(stem) %.1e, std(stage 7) / std(stem) %.1e "
           "(torchvision 3.7e-3, 7.7e-13); after BN recalibration %.1e\n", s2, s7, c7);
    assert_true(s2 > 1e-3 && s2 < 2e-2);
    assert_true(s7 < 1e-9);
    assert_true(c7 > 1e-2);
    free(img);
    free(m);
    free(x);
    ctx_free(&c);
    backbone_free(&bb);
}

static double train_seg(int kind, int S, int steps, int B, float width, double *secs) {
    double t0 = user_seconds();
    Backbone bb;
    backbone_make(&bb, kind, S);
    ParamStore ps;
    params_init(&ps);
    SegDecoder dec;
    seg_decoder_declare(&dec, &bb.dims, width, &ps, "decoder");
    params_alloc(&ps);
    Rng r;
    rng_init(&r, 5);
    seg_decoder_init(&dec, &r);
    OptimConfig oc = optim_adamw_default();
    oc.weight_decay = 0;
    Ctx c;
    ctx_init(&c, 7);
    float *img = malloc((size_t)S * S * sizeof(float)), *x = malloc((size_t)B * 3 * S * S * sizeof(float));
    float *m = malloc((size_t)B * S * S * sizeof(float));
    Rng data;
    rng_init(&data, 99);
    ctx_step_begin(&c);
    for (int b = 0; b < B; b++) {
        make_disk(&data, S, img, m + (size_t)b * S * S);
        to_input(img, S, x + (size_t)b * 3 * S * S);
    }
    backbone_calibrate(&c, &bb, tensor_from(&c, 4, TSHAPE((size_t)B, 3, (size_t)S, (size_t)S), x));
    for (int it = 0; it < steps; it++) {
        ctx_step_begin(&c);
        for (int b = 0; b < B; b++) {
            make_disk(&data, S, img, m + (size_t)b * S * S);
            to_input(img, S, x + (size_t)b * 3 * S * S);
        }
        Tensor *xt = tensor_from(&c, 4, TSHAPE((size_t)B, 3, (size_t)S, (size_t)S), x);
        BackboneMaps f = backbone_run(&c, &bb, xt, 1);
        Tensor *logits = seg_decoder_forward(&c, &dec, &f);                 /* (B, 1, S, S) */
        Tensor *mt = tensor_from(&c, 4, TSHAPE((size_t)B, 1, (size_t)S, (size_t)S), m);
        Tensor *loss = op_add(&c, loss_bce_logits(&c, logits, mt, NULL),
                              loss_soft_dice(&c, op_sigmoid(&c, logits), mt, 1e-6f));
        params_zero_grad(&ps);
        backward(&c, loss);
        optim_step(&ps, &oc, it + 1, 3e-3, 0.0);
        if (getenv("HEADS_VERBOSE") && it % 10 == 0) printf("    step %d loss %.4f (%.1f s)\n", it, loss->data[0], user_seconds() - t0);
    }
    /* eval: Dice at threshold 0.5 on fresh images, BN running statistics */
    double dice = 0;
    const int n_eval = 32 / B;
    for (int it = 0; it < n_eval; it++) {
        ctx_step_begin(&c);
        for (int b = 0; b < B; b++) {
            make_disk(&data, S, img, m + (size_t)b * S * S);
            to_input(img, S, x + (size_t)b * 3 * S * S);
        }
        Tensor *xt = tensor_from(&c, 4, TSHAPE((size_t)B, 3, (size_t)S, (size_t)S), x);
        int g = ctx_set_grad(&c, 0);
        BackboneMaps f = backbone_run(&c, &bb, xt, 0);
        Tensor *logits = seg_decoder_forward(&c, &dec, &f);
        ctx_set_grad(&c, g);
        for (int b = 0; b < B; b++) {
            double inter = 0, sp = 0, sg = 0;
            for (int i = 0; i < S * S; i++) {
                int p = logits->data[(size_t)b * S * S + i] > 0.0f, t = m[(size_t)b * S * S + i] > 0.5f;
                inter += p && t;
                sp += p;
                sg += t;
            }
            dice += sp + sg > 0 ? 2 * inter / (sp + sg) : 1.0;
        }
    }
    dice /= n_eval * B;
    free(img);
    free(x);
    free(m);
    ctx_free(&c);
    params_free(&ps);
    backbone_free(&bb);
    *secs = user_seconds() - t0;
    return dice;
}

/* Chance for the disk tasks: the whole image as the prediction gives Dice ~0.15 (disks cover 8% of
 * the image on average), an empty one 0. */
static void test_unet_learns_disks(void **st) {
    (void)st;
    double secs;
    double dice = train_seg(BACKBONE_CNN, 64, 50, 4, 0.5f, &secs);
    printf("  UNet (B0 plan, width 0.5) on a frozen random EfficientNet-B0, 64x64 disks: test Dice %.3f (%.1f s CPU)\n",
           dice, secs);
    assert_true(dice > 0.7);
}

static void test_cup_decoder_learns_disks(void **st) {
    (void)st;
    double secs;
    double dice = train_seg(BACKBONE_VIT, 32, 50, 8, 0.25f, &secs);
    printf("  TransUNet cup (width 0.25) on a frozen random ViT (patch 8), 32x32 disks: test Dice %.3f (%.1f s CPU)\n",
           dice, secs);
    assert_true(dice > 0.6);
}


/* one bright square of side 14..26 on a noisy 64 x 64 background */
static void make_square(Rng *r, int S, float *img, float *box) {
    float side = 14.0f + rng_uniform(r) * 12.0f;
    float x0 = rng_uniform(r) * (S - side), y0 = rng_uniform(r) * (S - side);
    box[0] = x0;
    box[1] = y0;
    box[2] = x0 + side;
    box[3] = y0 + side;
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            int in = x + 0.5f >= box[0] && x + 0.5f < box[2] && y + 0.5f >= box[1] && y + 0.5f < box[3];
            img[y * S + x] = 0.3f + 0.1f * rng_normal(r) + (in ? 0.4f : 0.0f);
        }
}

/* the paper's metric on one image: mean over gt boxes of the best IoU with a detection of
 * score >= 0.5 after NMS 0.5 (0 without one) */
static double mean_best_iou(const Detections *d, const float *gt, int n_gt) {
    int32_t keep[256];
    float bx[4 * 256], sc[256];
    int m = 0;
    for (int i = 0; i < d->n && m < 256; i++)
        if (d->scores[i] >= 0.5f) {
            memcpy(bx + 4 * m, d->boxes + 4 * i, 4 * sizeof(float));
            sc[m++] = d->scores[i];
        }
    size_t nk = box_nms(bx, sc, (size_t)m, 0.5f, keep);
    double s = 0;
    for (int g = 0; g < n_gt; g++) {
        float best = 0, iou;
        for (size_t k = 0; k < nk; k++) {
            box_iou_matrix(gt + 4 * g, 1, bx + 4 * (size_t)keep[k], 1, &iou);
            best = fmaxf(best, iou);
        }
        s += best;
    }
    return n_gt ? s / n_gt : 0;
}

/* Faster R-CNN learns to find one bright square.  The frozen backbone is a random ViT (patch 8):
 * on a frozen random EfficientNet even with recalibrated BN the stride-4..32 maps carry too little
 * of the image for a detector to localise within a few hundred steps (mean best IoU 0.17 after
 * 150 steps, 0.44 after 300), while the ViT's patch embedding passes the image through almost
 * linearly.  The CNN taps of the FPN are checked against torchvision above.
 * Chance: the best fixed box (the mean square, centred) reaches the mean best IoU printed as
 * "fixed box" (~0.2); a detector without scores >= 0.5 gets 0. */
static void test_detector_learns_squares(void **st) {
    (void)st;
    double t0 = user_seconds();
    const int S = 64, B = 4, steps = 100;
    Backbone bb;
    backbone_make(&bb, BACKBONE_VIT, S);
    DetConfig cfg = det_config_default();
    cfg.fpn_ch = 32;
    cfg.train_fpn = 1;
    cfg.n_sizes = 2;
    cfg.sizes[0] = 16;
    cfg.sizes[1] = 32;
    cfg.rep_size = 64;
    cfg.rpn_batch = 64;
    cfg.box_batch = 32;           /* one square per image: few RoIs, half of them positive */
    cfg.box_pos_frac = 0.5f;
    cfg.rpn_pre_nms_train = cfg.rpn_post_nms_train = 200;
    cfg.rpn_pre_nms_test = cfg.rpn_post_nms_test = 100;
    ParamStore ps;
    params_init(&ps);
    FasterRCNN m;
    det_declare(&m, &cfg, &bb.dims, &ps, "");
    params_alloc(&ps);
    Rng r;
    rng_init(&r, 21);
    det_init(&m, &r);
    OptimConfig oc = optim_adamw_default();
    Ctx c;
    ctx_init(&c, 3);
    float *img = malloc((size_t)S * S * sizeof(float)), *x = malloc((size_t)B * 3 * S * S * sizeof(float));
    float gt[4 * 4];
    Rng data;
    rng_init(&data, 77);
    double first = 0, last = 0;
    for (int it = 0; it < steps; it++) {
        ctx_step_begin(&c);
        DetTarget tg[4];
        for (int b = 0; b < B; b++) {
            make_square(&data, S, img, gt + 4 * b);
            to_input(img, S, x + (size_t)b * 3 * S * S);
            tg[b].boxes = gt + 4 * b;
            tg[b].n = 1;
        }
        Tensor *xt = tensor_from(&c, 4, TSHAPE((size_t)B, 3, (size_t)S, (size_t)S), x);
        BackboneMaps f = backbone_run(&c, &bb, xt, 1);
        DetFeatures ft = det_fpn_forward(&c, &m, &f);
        DetLosses L = det_forward_train(&c, &m, &ft, tg, &r);
        params_zero_grad(&ps);
        backward(&c, L.total);
        optim_step(&ps, &oc, it + 1, sched_cosine(it, steps, 1e-3, 0.0, steps / 10, 0.0), 0.0);
        if (it < 10) first += L.total->data[0] / 10;
        if (it >= steps - 10) last += L.total->data[0] / 10;
        if (getenv("HEADS_VERBOSE") && it % 10 == 0)
            printf("    step %d loss %.4f (obj %.3f rpn_box %.3f cls %.3f box %.3f) %.1f s\n", it, L.total->data[0],
                   L.rpn_objectness->data[0], L.rpn_box->data[0], L.classifier->data[0], L.box_reg->data[0],
                   user_seconds() - t0);
    }
    double miou = 0, fixed = 0;
    const int n_eval = 8;
    for (int it = 0; it < n_eval; it++) {
        ctx_step_begin(&c);
        for (int b = 0; b < B; b++) {
            make_square(&data, S, img, gt + 4 * b);
            to_input(img, S, x + (size_t)b * 3 * S * S);
        }
        Tensor *xt = tensor_from(&c, 4, TSHAPE((size_t)B, 3, (size_t)S, (size_t)S), x);
        int g = ctx_set_grad(&c, 0);
        BackboneMaps f = backbone_run(&c, &bb, xt, 0);
        DetFeatures ft = det_fpn_forward(&c, &m, &f);
        Detections d[4];
        det_detect(&c, &m, &ft, d);
        ctx_set_grad(&c, g);
        for (int b = 0; b < B; b++) {
            miou += mean_best_iou(&d[b], gt + 4 * b, 1);
            const float half = 10.0f, fb[4] = {S / 2 - half, S / 2 - half, S / 2 + half, S / 2 + half}, one = 1.0f;
            Detections fd = {.n = 1, .boxes = (float *)fb, .scores = (float *)&one};
            fixed += mean_best_iou(&fd, gt + 4 * b, 1);
            if (getenv("HEADS_VERBOSE") && it == 0)
                printf("    image %d: %d detections, top %.3f (%.1f %.1f %.1f %.1f), gt (%.1f %.1f %.1f %.1f)\n", b, d[b].n,
                       d[b].n ? d[b].scores[0] : 0.0f, d[b].n ? d[b].boxes[0] : 0.0f, d[b].n ? d[b].boxes[1] : 0.0f,
                       d[b].n ? d[b].boxes[2] : 0.0f, d[b].n ? d[b].boxes[3] : 0.0f, gt[4 * b], gt[4 * b + 1],
                       gt[4 * b + 2], gt[4 * b + 3]);
        }
    }
    miou /= n_eval * B;
    fixed /= n_eval * B;
    printf("  Faster R-CNN (FPN 32 ch, trained) on a frozen random ViT (patch 8), 64x64 bright squares: loss %.3f -> %.3f, "
           "mean best IoU %.3f on %d test images (fixed box %.3f; %.1f s CPU)\n",
           first, last, miou, n_eval * B, fixed, user_seconds() - t0);
    assert_true(last < 0.7 * first);
    assert_true(miou > 0.5);
    assert_true(miou > fixed + 0.25);
    free(img);
    free(x);
    ctx_free(&c);
    params_free(&ps);
    backbone_free(&bb);
}

/* VQA: "is there a mass?" (yes/no) and "which side is the mass on?" (left/right) about 32 x 32
 * images with a bright blob (radius 6 px) on one side or none; one answer head over the 4 answers,
 * so the model must read the question to know which pair applies and look at the image to choose.
 * Chance: 0.5 (a model that reads only the question).  With a radius-4 blob the image path needs
 * ~400 steps to leave that plateau; radius 6 gets there within 150, so 300 steps keep the test
 * short and far from the edge. */
enum { ANS_YES = 0, ANS_NO, ANS_LEFT, ANS_RIGHT };

static int make_vqa(Rng *r, int S, float *img, int32_t *ids) {
    int present = rng_uniform(r) < 0.5f, right = rng_uniform(r) < 0.5f;
    int side_q = rng_uniform(r) < 0.5f;
    if (side_q) present = 1;   /* the side question is asked about images with a mass */
    float cx = (right ? 0.75f : 0.25f) * S + (rng_uniform(r) - 0.5f) * 6, cy = 8 + rng_uniform(r) * (S - 16);
    for (int y = 0; y < S; y++)
        for (int x = 0; x < S; x++) {
            float d2 = (x - cx) * (x - cx) + (y - cy) * (y - cy);
            img[y * S + x] = 0.3f + 0.1f * rng_normal(r) + (present && d2 < 36.0f ? 0.5f : 0.0f);
        }
    /* vocabulary: 0 [PAD], 1 [UNK], 2 is, 3 there, 4 a, 5 mass, 6 which, 7 side, 8 the, 9 on */
    static const int32_t q_is[6] = {2, 3, 4, 5, 0, 0}, q_side[6] = {6, 7, 2, 8, 5, 9};
    memcpy(ids, side_q ? q_side : q_is, sizeof q_is);
    return side_q ? (right ? ANS_RIGHT : ANS_LEFT) : (present ? ANS_YES : ANS_NO);
}

static void test_fusion_learns_vqa(void **st) {
    (void)st;
    double t0 = user_seconds();
    const int S = 32, B = 16, L = 6, steps = 300;
    Backbone bb;
    backbone_make(&bb, BACKBONE_VIT, S);
    FusionConfig fc = {.dim = 64, .depth = 2, .heads = 4, .mlp_ratio = 2, .fuse_ch = 64, .vocab = 10, .max_words = 8,
                       .n_answers = 4};
    ParamStore ps;
    params_init(&ps);
    FusionModel m;
    fusion_declare(&m, &fc, &bb.dims, S, S, &ps, "vqa");
    params_alloc(&ps);
    assert_int_equal(m.cfg.img_tokens, 16);
    Rng r;
    rng_init(&r, 8);
    fusion_init(&m, &r);
    OptimConfig oc = optim_adamw_default();
    Ctx c;
    ctx_init(&c, 4);
    float *img = malloc((size_t)S * S * sizeof(float)), *x = malloc((size_t)B * 3 * S * S * sizeof(float));
    int32_t ids[16 * 6], ans[16];
    Rng data;
    rng_init(&data, 5);
    for (int it = 0; it < steps; it++) {
        ctx_step_begin(&c);
        for (int b = 0; b < B; b++) {
            ans[b] = make_vqa(&data, S, img, ids + b * L);
            to_input(img, S, x + (size_t)b * 3 * S * S);
        }
        Tensor *xt = tensor_from(&c, 4, TSHAPE((size_t)B, 3, (size_t)S, (size_t)S), x);
        BackboneMaps f = backbone_run(&c, &bb, xt, 1);
        Tensor *tok = fusion_image_tokens(&c, &m, &f);
        Tensor *loss = loss_cross_entropy(&c, fusion_forward(&c, &m, ids, L, tok), ans, 0.0f);
        params_zero_grad(&ps);
        backward(&c, loss);
        optim_step(&ps, &oc, it + 1, sched_cosine(it, steps, 1e-3, 1e-5, steps / 10, 0.0), 0.0);
        if (getenv("HEADS_VERBOSE") && it % 25 == 0) printf("    step %d loss %.4f\n", it, loss->data[0]);
    }
    int right = 0, n = 0, right_side = 0, n_side = 0;
    for (int it = 0; it < 8; it++) {
        ctx_step_begin(&c);
        for (int b = 0; b < B; b++) {
            ans[b] = make_vqa(&data, S, img, ids + b * L);
            to_input(img, S, x + (size_t)b * 3 * S * S);
        }
        Tensor *xt = tensor_from(&c, 4, TSHAPE((size_t)B, 3, (size_t)S, (size_t)S), x);
        int g = ctx_set_grad(&c, 0);
        BackboneMaps f = backbone_run(&c, &bb, xt, 0);
        Tensor *logits = fusion_forward(&c, &m, ids, L, fusion_image_tokens(&c, &m, &f));
        ctx_set_grad(&c, g);
        for (int b = 0; b < B; b++) {
            int best = 0;
            for (int k = 1; k < 4; k++)
                if (logits->data[b * 4 + k] > logits->data[b * 4 + best]) best = k;
            right += best == ans[b];
            n++;
            if (ans[b] >= ANS_LEFT) {
                right_side += best == ans[b];
                n_side++;
            }
        }
    }
    double acc = (double)right / n, acc_side = (double)right_side / n_side;
    printf("  fusion transformer (dim 64, 2 blocks) on a frozen random ViT, 'is there a mass' / 'which side': "
           "accuracy %.3f (side questions %.3f; chance 0.5) on %d questions (%.1f s CPU)\n",
           acc, acc_side, n, user_seconds() - t0);
    assert_true(acc > 0.8);
    assert_true(acc_side > 0.75);

    /* the CNN path: stages 3, 4, 6, 7 resized to stage 6's grid and concatenated */
    Backbone cb;
    backbone_make(&cb, BACKBONE_CNN, 64);
    ParamStore ps2;
    params_init(&ps2);
    FusionModel m2;
    FusionConfig fc2 = fc;
    fc2.img_tokens = 0;
    fusion_declare(&m2, &fc2, &cb.dims, 64, 64, &ps2, "vqa");
    params_alloc(&ps2);
    fusion_init(&m2, &r);
    assert_int_equal(m2.img_in, 40 + 80 + 192 + 320);
    assert_int_equal(m2.cfg.img_tokens, 4);
    ctx_step_begin(&c);
    Tensor *xt = tensor_zeros_(&c, 2, 3, 64, 64);
    BackboneMaps f = backbone_run(&c, &cb, xt, 0);
    Tensor *tok = fusion_image_tokens(&c, &m2, &f);
    assert_int_equal(tok->shape[1], 4);
    assert_int_equal(tok->shape[2], 632);
    Tensor *lg = fusion_forward(&c, &m2, ids, L, tok);
    assert_int_equal(lg->shape[0], 2);
    assert_int_equal(lg->shape[1], 4);
    params_free(&ps2);
    backbone_free(&cb);
    free(img);
    free(x);
    ctx_free(&c);
    params_free(&ps);
    backbone_free(&bb);
}

/* ------------------------------------------------------------------------------------------ */

int main(void) {
    engine_threads_init();
    if (getenv("HEADS_ONLY")) cmocka_set_test_filter(getenv("HEADS_ONLY"));  /* e.g. "*detector*" */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roi_align_vs_torchvision),
        cmocka_unit_test(test_roi_align_gradcheck),
        cmocka_unit_test(test_nms_vs_torchvision),
        cmocka_unit_test(test_iou_coder_vs_torchvision),
        cmocka_unit_test(test_anchors_vs_torchvision),
        cmocka_unit_test(test_matcher_and_sampler),
        cmocka_unit_test(test_fpn_vs_torchvision),
        cmocka_unit_test(test_detector_vs_torchvision),
        cmocka_unit_test(test_unet_learns_disks),
        cmocka_unit_test(test_cup_decoder_learns_disks),
        cmocka_unit_test(test_detector_learns_squares),
        cmocka_unit_test(test_fusion_learns_vqa),
        cmocka_unit_test(test_random_effnet_maps_collapse),
    };
    return RUN_GROUP(tests);
}
