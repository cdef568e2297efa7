/*
 * detect.c — Faster R-CNN with a feature pyramid on a frozen backbone, as torchvision 0.14's
 * FasterRCNN (GeneralizedRCNN = FPN backbone + RegionProposalNetwork + RoIHeads) with the
 * paper's settings (recipe.md §3.3): FPN 256 channels and an extra max-pooled level; anchors of
 * sizes 32/64/128 x ratios 0.5/1/2 on each of the 5 levels; MultiScaleRoIAlign 7x7 (sampling 2)
 * on levels 0-3; a two-FC box head; two classes (background, lesion).
 *
 * One training step (det_forward_train), per image unless noted:
 *   RPN    3x3 conv + ReLU, 1x1 objectness (A per cell), 1x1 deltas (4A) on every level;
 *          anchors matched to the ground truth (IoU >= 0.7 positive, < 0.3 negative, each gt's
 *          best anchors kept), 256 sampled (half positive at most); BCE on the sampled
 *          objectness, smooth-L1 (beta 1/9, summed / #sampled) on the positives' deltas
 *          (BoxCoder weights 1, 1, 1, 1).
 *   proposals  the detached deltas decoded on the top-k anchors of each level, clipped, tiny
 *          boxes dropped, NMS 0.7 per level, the best post_nms kept.
 *   RoI head  proposals + gt boxes, matched at IoU 0.5, 512 sampled (25% positive at most),
 *          MultiScaleRoIAlign (level = floor(4 + log2(sqrt(area) / 224)) clamped to 2..5),
 *          fc6-ReLU-fc7-ReLU, class logits + per-class deltas (weights 10, 10, 5, 5); CE over the
 *          sampled RoIs + smooth-L1 (beta 1/9) on the positives' deltas of their class, summed /
 *          #sampled.
 * The four losses are torchvision's; the batch-level index bookkeeping runs on plain arrays in
 * the step arena, the differentiable parts are engine ops (conv, permute, concat, index_select,
 * roi_align, linear, losses).
 */
#include "nn/nn.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BBOX_XFORM_CLIP 4.135166556742356f   /* log(1000 / 16) */
static const float RPN_W[4] = {1.0f, 1.0f, 1.0f, 1.0f};
static const float ROI_W[4] = {10.0f, 10.0f, 5.0f, 5.0f};

/* ------------------------------------------------------------------------------------------ */
/* boxes */

static inline float box_area(const float *b) {
    return (b[2] - b[0]) * (b[3] - b[1]);
}

void box_iou_matrix(const float *a, size_t na, const float *b, size_t nb, float *iou) {
#pragma omp parallel for schedule(static) if (na * nb >= 65536)
    for (size_t i = 0; i < na; i++) {
        const float *p = a + 4 * i;
        float ap = box_area(p);
        for (size_t j = 0; j < nb; j++) {
            const float *q = b + 4 * j;
            float w = fminf(p[2], q[2]) - fmaxf(p[0], q[0]);
            float h = fminf(p[3], q[3]) - fmaxf(p[1], q[1]);
            w = w > 0.0f ? w : 0.0f;
            h = h > 0.0f ? h : 0.0f;
            float inter = w * h;
            iou[i * nb + j] = inter / (ap + box_area(q) - inter);
        }
    }
}

typedef struct ScoreIdx {
    float s;
    int32_t i;
} ScoreIdx;

/* decreasing score, then increasing index: a total order, so sorting is deterministic */
static int cmp_score_desc(const void *pa, const void *pb) {
    const ScoreIdx *a = pa, *b = pb;
    if (a->s > b->s) return -1;
    if (a->s < b->s) return 1;
    return (a->i > b->i) - (a->i < b->i);
}

/* order (n): indices of scores sorted by cmp_score_desc */
static void argsort_desc(const float *scores, size_t n, int32_t *order) {
    ScoreIdx *t = malloc((n ? n : 1) * sizeof *t);
    for (size_t i = 0; i < n; i++) {
        t[i].s = scores[i];
        t[i].i = (int32_t)i;
    }
    qsort(t, n, sizeof *t, cmp_score_desc);
    for (size_t i = 0; i < n; i++) order[i] = t[i].i;
    free(t);
}

/* torchvision's nms_kernel over the subset idx (m), writing kept members of idx to keep */
static size_t nms_subset(const float *boxes, const float *scores, const int32_t *idx, size_t m, float thresh,
                         int32_t *keep) {
    float *sc = calloc(m ? m : 1, sizeof(float));
    int32_t *order = malloc((m ? m : 1) * sizeof(int32_t));
    uint8_t *sup = calloc(m ? m : 1, 1);
    for (size_t k = 0; k < m; k++) sc[k] = scores[idx[k]];
    argsort_desc(sc, m, order);
    size_t nk = 0;
    for (size_t a = 0; a < m; a++) {
        int32_t i = order[a];
        if (sup[i]) continue;
        keep[nk++] = idx[i];
        const float *bi = boxes + 4 * (size_t)idx[i];
        float ai = box_area(bi);
        for (size_t b = a + 1; b < m; b++) {
            int32_t j = order[b];
            if (sup[j]) continue;
            const float *bj = boxes + 4 * (size_t)idx[j];
            float w = fmaxf(0.0f, fminf(bi[2], bj[2]) - fmaxf(bi[0], bj[0]));
            float h = fmaxf(0.0f, fminf(bi[3], bj[3]) - fmaxf(bi[1], bj[1]));
            float inter = w * h;
            float ovr = inter / (ai + box_area(bj) - inter);
            if (ovr > thresh) sup[j] = 1;
        }
    }
    free(sc);
    free(order);
    free(sup);
    return nk;
}

size_t box_nms(const float *boxes, const float *scores, size_t n, float thresh, int32_t *keep) {
    int32_t *idx = malloc((n ? n : 1) * sizeof(int32_t));
    for (size_t i = 0; i < n; i++) idx[i] = (int32_t)i;
    size_t nk = nms_subset(boxes, scores, idx, n, thresh, keep);
    free(idx);
    return nk;
}

size_t box_batched_nms(const float *boxes, const float *scores, const int32_t *group, size_t n, float thresh,
                       int32_t *keep) {
    if (n == 0) return 0;
    int32_t gmax = 0;
    for (size_t i = 0; i < n; i++) gmax = group[i] > gmax ? group[i] : gmax;
    int32_t *idx = malloc(n * sizeof(int32_t));
    int32_t *kept = malloc(n * sizeof(int32_t));
    size_t nk = 0;
    for (int32_t g = 0; g <= gmax; g++) {
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (group[i] == g) idx[m++] = (int32_t)i;
        if (m) nk += nms_subset(boxes, scores, idx, m, thresh, kept + nk);
    }
    /* merge the groups by decreasing score (ties: lower index) */
    ScoreIdx *t = malloc(nk * sizeof *t + 1);
    for (size_t k = 0; k < nk; k++) {
        t[k].s = scores[kept[k]];
        t[k].i = kept[k];
    }
    qsort(t, nk, sizeof *t, cmp_score_desc);
    for (size_t k = 0; k < nk; k++) keep[k] = t[k].i;
    free(t);
    free(idx);
    free(kept);
    return nk;
}

void box_encode(const float w[4], const float *gt, const float *ref, size_t n, float *deltas) {
    for (size_t i = 0; i < n; i++) {
        const float *p = ref + 4 * i, *g = gt + 4 * i;
        float pw = p[2] - p[0], ph = p[3] - p[1];
        float px = p[0] + 0.5f * pw, py = p[1] + 0.5f * ph;
        float gw = g[2] - g[0], gh = g[3] - g[1];
        float gx = g[0] + 0.5f * gw, gy = g[1] + 0.5f * gh;
        float *d = deltas + 4 * i;
        d[0] = w[0] * (gx - px) / pw;
        d[1] = w[1] * (gy - py) / ph;
        d[2] = w[2] * logf(gw / pw);
        d[3] = w[3] * logf(gh / ph);
    }
}

void box_decode(const float w[4], const float *deltas, const float *ref, size_t n, float *boxes) {
    for (size_t i = 0; i < n; i++) {
        const float *p = ref + 4 * i, *d = deltas + 4 * i;
        float pw = p[2] - p[0], ph = p[3] - p[1];
        float px = p[0] + 0.5f * pw, py = p[1] + 0.5f * ph;
        float dx = d[0] / w[0], dy = d[1] / w[1];
        float dw = fminf(d[2] / w[2], BBOX_XFORM_CLIP), dh = fminf(d[3] / w[3], BBOX_XFORM_CLIP);
        float cx = dx * pw + px, cy = dy * ph + py;
        float hw = 0.5f * (expf(dw) * pw), hh = 0.5f * (expf(dh) * ph);
        float *b = boxes + 4 * i;
        b[0] = cx - hw;
        b[1] = cy - hh;
        b[2] = cx + hw;
        b[3] = cy + hh;
    }
}

void box_clip(float *boxes, size_t n, int h, int w) {
    for (size_t i = 0; i < n; i++) {
        float *b = boxes + 4 * i;
        b[0] = fminf(fmaxf(b[0], 0.0f), (float)w);
        b[2] = fminf(fmaxf(b[2], 0.0f), (float)w);
        b[1] = fminf(fmaxf(b[1], 0.0f), (float)h);
        b[3] = fminf(fmaxf(b[3], 0.0f), (float)h);
    }
}

size_t anchors_grid(const float *sizes, int n_sizes, const float *ratios, int n_ratios, int grid_h, int grid_w,
                    int stride_h, int stride_w, float *out) {
    const int A = n_sizes * n_ratios;
    float cell[DET_MAX_ANCHOR * DET_MAX_ANCHOR][4];
    for (int r = 0; r < n_ratios; r++) {
        float hr = sqrtf(ratios[r]), wr = 1.0f / hr;
        for (int s = 0; s < n_sizes; s++) {
            float ws = wr * sizes[s], hs = hr * sizes[s];
            float *a = cell[r * n_sizes + s];
            a[0] = roundf(-ws / 2.0f);
            a[1] = roundf(-hs / 2.0f);
            a[2] = roundf(ws / 2.0f);
            a[3] = roundf(hs / 2.0f);
        }
    }
    size_t k = 0;
    for (int y = 0; y < grid_h; y++)
        for (int x = 0; x < grid_w; x++) {
            float sx = (float)(x * stride_w), sy = (float)(y * stride_h);
            for (int a = 0; a < A; a++, k++) {
                out[4 * k + 0] = sx + cell[a][0];
                out[4 * k + 1] = sy + cell[a][1];
                out[4 * k + 2] = sx + cell[a][2];
                out[4 * k + 3] = sy + cell[a][3];
            }
        }
    return k;
}

void box_match(const float *iou, size_t G, size_t P, float high, float low, int allow_low_quality, int32_t *matches) {
    int32_t *all = malloc((P ? P : 1) * sizeof(int32_t));   /* (P) best gt before thresholds */
    for (size_t p = 0; p < P; p++) {
        float v = -INFINITY;
        int32_t g0 = 0;
        for (size_t g = 0; g < G; g++)
            if (iou[g * P + p] > v) {
                v = iou[g * P + p];
                g0 = (int32_t)g;
            }
        all[p] = g0;
        matches[p] = v < low ? MATCH_BELOW : v < high ? MATCH_BETWEEN : g0;
    }
    if (allow_low_quality) {
        /* every prediction tied for a gt's highest IoU gets back its own best match */
        for (size_t g = 0; g < G; g++) {
            const float *row = iou + g * P;
            float hq = -INFINITY;
            for (size_t p = 0; p < P; p++) hq = row[p] > hq ? row[p] : hq;
            for (size_t p = 0; p < P; p++)
                if (row[p] == hq) matches[p] = all[p];
        }
    }
    free(all);
}

/* the first k entries of idx (n) become a uniform random k-subset, in random order */
static void partial_shuffle(int32_t *idx, size_t n, size_t k, Rng *r) {
    for (size_t i = 0; i < k && i < n; i++) {
        size_t j = i + rng_below(r, (uint32_t)(n - i));
        int32_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

size_t sample_pos_neg(const int32_t *labels, size_t n, int batch, float pos_frac, Rng *r, int32_t *pos,
                      size_t *n_pos, int32_t *neg, size_t *n_neg) {
    size_t np = 0, nn = 0;
    for (size_t i = 0; i < n; i++) {
        if (labels[i] >= 1) pos[np++] = (int32_t)i;
        else if (labels[i] == 0) neg[nn++] = (int32_t)i;
    }
    size_t want_pos = (size_t)(int)((float)batch * pos_frac);
    size_t kp = want_pos < np ? want_pos : np;
    size_t want_neg = (size_t)batch - kp;
    size_t kn = want_neg < nn ? want_neg : nn;
    partial_shuffle(pos, np, kp, r);
    partial_shuffle(neg, nn, kn, r);
    *n_pos = kp;
    *n_neg = kn;
    return kp + kn;
}

/* ------------------------------------------------------------------------------------------ */
/* model */

DetConfig det_config_default(void) {
    DetConfig d;
    memset(&d, 0, sizeof d);
    d.fpn_ch = 256;
    d.train_fpn = 0;
    d.n_sizes = 3;
    d.sizes[0] = 32;
    d.sizes[1] = 64;
    d.sizes[2] = 128;
    d.n_ratios = 3;
    d.ratios[0] = 0.5f;
    d.ratios[1] = 1.0f;
    d.ratios[2] = 2.0f;
    d.rpn_fg_iou = 0.7f;
    d.rpn_bg_iou = 0.3f;
    d.rpn_batch = 256;
    d.rpn_pos_frac = 0.5f;
    d.rpn_pre_nms_train = 2000;
    d.rpn_post_nms_train = 2000;
    d.rpn_pre_nms_test = 1000;
    d.rpn_post_nms_test = 1000;
    d.rpn_nms = 0.7f;
    d.box_fg_iou = 0.5f;
    d.box_bg_iou = 0.5f;
    d.box_batch = 512;
    d.box_pos_frac = 0.25f;
    d.box_score_thresh = 0.05f;
    d.box_nms = 0.5f;
    d.box_detections = 100;
    d.roi_size = 7;
    d.sampling_ratio = 2;
    d.rep_size = 1024;
    d.n_classes = 2;
    return d;
}

void det_declare(FasterRCNN *m, const DetConfig *cfg, const BackboneDims *bd, ParamStore *ps, const char *prefix) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->kind = bd->kind;
    m->A = cfg->n_sizes * cfg->n_ratios;
    const int F = cfg->fpn_ch;
    char fpn[160], k[160];
    nn_join(fpn, sizeof fpn, prefix, "fpn");
    int in_ch[4];
    if (bd->kind == BACKBONE_CNN) {
        /* the last stage at each stride 4, 8, 16, 32 (B5: enc2, enc3, enc5, enc7 as the paper) */
        for (int l = 0; l < 4; l++) {
            m->tap_stage[l] = -1;
            for (int s = 0; s < 8; s++)
                if (bd->stage_stride[s] == (4 << l)) m->tap_stage[l] = s;
            in_ch[l] = m->tap_stage[l] >= 0 ? bd->stage_ch[m->tap_stage[l]] : F;
        }
    } else {
        conv2d_declare(&m->vit_proj, ps, fpn, "vit_proj", bd->embed_dim, F, 1, 1, 1, 1);
        for (int l = 0; l < 4; l++) in_ch[l] = F;
    }
    for (int l = 0; l < 4; l++) {
        char n[32];
        snprintf(n, sizeof n, "inner_blocks.%d", l);
        conv2d_declare(&m->fpn_inner[l], ps, fpn, n, in_ch[l], F, 1, 1, 1, 1);
        snprintf(n, sizeof n, "layer_blocks.%d", l);
        conv2d_declare(&m->fpn_layer[l], ps, fpn, n, F, F, 3, 1, 1, 1);
    }
    nn_join(k, sizeof k, prefix, "rpn.head");
    conv2d_declare(&m->rpn_conv, ps, k, "conv", F, F, 3, 1, 1, 1);
    conv2d_declare(&m->rpn_cls, ps, k, "cls_logits", F, m->A, 1, 1, 1, 1);
    conv2d_declare(&m->rpn_bbox, ps, k, "bbox_pred", F, 4 * m->A, 1, 1, 1, 1);
    const int R = cfg->roi_size;
    nn_join(k, sizeof k, prefix, "roi_heads.box_head");
    linear_declare(&m->fc6, ps, k, "fc6", F * R * R, cfg->rep_size, 1);
    linear_declare(&m->fc7, ps, k, "fc7", cfg->rep_size, cfg->rep_size, 1);
    nn_join(k, sizeof k, prefix, "roi_heads.box_predictor");
    linear_declare(&m->cls_score, ps, k, "cls_score", cfg->rep_size, cfg->n_classes, 1);
    linear_declare(&m->bbox_pred, ps, k, "bbox_pred", cfg->rep_size, 4 * cfg->n_classes, 1);
}

void det_init(FasterRCNN *m, Rng *r) {
    for (int l = 0; l < 4; l++) {
        Conv2d *cs[2] = {&m->fpn_inner[l], &m->fpn_layer[l]};
        for (int i = 0; i < 2; i++) {
            /* kaiming_uniform_(a=1): bound sqrt(6 / ((1 + a^2) fan_in)) = sqrt(3 / fan_in) */
            float fan_in = (float)(cs[i]->in * cs[i]->k * cs[i]->k);
            init_uniform(cs[i]->w, r, sqrtf(3.0f / fan_in));
            init_constant(cs[i]->b, 0.0f);
        }
    }
    if (m->vit_proj.w) init_torch_default_conv(&m->vit_proj, r);
    Conv2d *rp[3] = {&m->rpn_conv, &m->rpn_cls, &m->rpn_bbox};
    for (int i = 0; i < 3; i++) {
        rng_fill_normal(r, rp[i]->w->data, rp[i]->w->numel, 0.0f, 0.01f);
        init_constant(rp[i]->b, 0.0f);
    }
    init_torch_default_linear(&m->fc6, r);
    init_torch_default_linear(&m->fc7, r);
    init_torch_default_linear(&m->cls_score, r);
    init_torch_default_linear(&m->bbox_pred, r);
}

DetFeatures det_fpn_forward(Ctx *c, const FasterRCNN *m, const BackboneMaps *f) {
    DetFeatures ft;
    memset(&ft, 0, sizeof ft);
    ft.in_h = f->in_h;
    ft.in_w = f->in_w;
    /* a frozen FPN records nothing: no gradient can reach it or the backbone */
    int prev = m->cfg.train_fpn ? c->grad_enabled : ctx_set_grad(c, 0);
    Tensor *in[4];
    if (m->kind == BACKBONE_CNN) {
        if (f->kind != BACKBONE_CNN) ctx_fail(c, "det_fpn_forward: CNN detector needs stage maps");
        for (int l = 0; l < 4; l++) {
            if (m->tap_stage[l] < 0 || !f->stages[m->tap_stage[l]])
                ctx_fail(c, "det_fpn_forward: the backbone has no stage of stride %d", 4 << l);
            in[l] = f->stages[m->tap_stage[l]];
        }
    } else {
        if (f->kind != BACKBONE_VIT || !f->patch) ctx_fail(c, "det_fpn_forward: ViT detector needs a patch map");
        /* one map -> 1x1 conv -> bilinear to strides 4, 8, 16, 32 (the paper's ViT backbones) */
        Tensor *p = conv2d_forward(c, &m->vit_proj, f->patch);
        for (int l = 0; l < 4; l++) {
            int hh = f->in_h / (4 << l), ww = f->in_w / (4 << l);
            in[l] = op_resize_bilinear(c, p, hh > 0 ? hh : 1, ww > 0 ? ww : 1);
        }
    }
    /* torchvision FeaturePyramidNetwork: top-down with nearest upsampling, then 3x3 outputs */
    Tensor *last = conv2d_forward(c, &m->fpn_inner[3], in[3]);
    ft.lv[3] = conv2d_forward(c, &m->fpn_layer[3], last);
    for (int l = 2; l >= 0; l--) {
        Tensor *lat = conv2d_forward(c, &m->fpn_inner[l], in[l]);
        Tensor *td = op_resize_nearest(c, last, (int)lat->shape[2], (int)lat->shape[3]);
        last = op_add(c, lat, td);
        ft.lv[l] = conv2d_forward(c, &m->fpn_layer[l], last);
    }
    ft.lv[4] = op_max_pool2d(c, ft.lv[3], 1, 2, 0);   /* LastLevelMaxPool */
    if (!m->cfg.train_fpn) ctx_set_grad(c, prev);
    return ft;
}

/* ------------------------------------------------------------------------------------------ */
/* RPN */

typedef struct RpnOut {
    Tensor *obj;              /* (B, T) objectness logits, levels concatenated */
    Tensor *deltas;           /* (B, T, 4) */
    float *anchors;           /* (T, 4), the same for every image */
    size_t T;
    size_t lvl_off[6];        /* level l owns anchors [lvl_off[l], lvl_off[l+1]) */
} RpnOut;

static RpnOut rpn_forward(Ctx *c, const FasterRCNN *m, const DetFeatures *ft) {
    RpnOut r;
    memset(&r, 0, sizeof r);
    const size_t B = ft->lv[0]->shape[0], A = (size_t)m->A;
    Tensor *objs[5], *dels[5];
    r.lvl_off[0] = 0;
    for (int l = 0; l < 5; l++) {
        const size_t H = ft->lv[l]->shape[2], W = ft->lv[l]->shape[3];
        Tensor *t = op_relu(c, conv2d_forward(c, &m->rpn_conv, ft->lv[l]));
        Tensor *o = conv2d_forward(c, &m->rpn_cls, t);                          /* (B, A, H, W) */
        Tensor *d = conv2d_forward(c, &m->rpn_bbox, t);                         /* (B, 4A, H, W) */
        o = op_contiguous(c, op_permute(c, o, (int[]){0, 2, 3, 1}));            /* (B, H, W, A) */
        objs[l] = op_reshape_(c, o, B, H * W * A);
        d = op_reshape_(c, d, B, A, 4, H, W);
        d = op_contiguous(c, op_permute(c, d, (int[]){0, 3, 4, 1, 2}));         /* (B, H, W, A, 4) */
        dels[l] = op_reshape_(c, d, B, H * W * A, 4);
        r.lvl_off[l + 1] = r.lvl_off[l] + H * W * A;
    }
    r.T = r.lvl_off[5];
    r.obj = op_concat(c, objs, 5, 1);
    r.deltas = op_concat(c, dels, 5, 1);
    r.anchors = arena_alloc(&c->step, r.T * 4 * sizeof(float));
    for (int l = 0; l < 5; l++) {
        const int H = (int)ft->lv[l]->shape[2], W = (int)ft->lv[l]->shape[3];
        /* torchvision: stride = image_size // grid_size (integer division) */
        anchors_grid(m->cfg.sizes, m->cfg.n_sizes, m->cfg.ratios, m->cfg.n_ratios, H, W, ft->in_h / H, ft->in_w / W,
                     r.anchors + 4 * r.lvl_off[l]);
    }
    return r;
}

/* RegionProposalNetwork.filter_proposals for image b: boxes (n, 4) + logits sorted by score */
static size_t rpn_proposals(Ctx *c, const FasterRCNN *m, const RpnOut *r, size_t b, int pre_nms, int post_nms, int in_h,
                            int in_w, float **boxes_out) {
    const float *obj = r->obj->data + b * r->T, *del = r->deltas->data + b * r->T * 4;
    size_t cap = 0;
    for (int l = 0; l < 5; l++) {
        size_t nl = r->lvl_off[l + 1] - r->lvl_off[l];
        cap += nl < (size_t)pre_nms ? nl : (size_t)pre_nms;
    }
    float *bx = arena_alloc(&c->step, (cap ? cap : 1) * 4 * sizeof(float));   /* (cap, 4) */
    float *sc = arena_alloc(&c->step, (cap ? cap : 1) * sizeof(float));       /* (cap) */
    int32_t *lv = arena_alloc(&c->step, (cap ? cap : 1) * sizeof(int32_t));
    size_t n = 0;
    for (int l = 0; l < 5; l++) {
        size_t o = r->lvl_off[l], nl = r->lvl_off[l + 1] - o;
        size_t k = nl < (size_t)pre_nms ? nl : (size_t)pre_nms;
        int32_t *order = arena_alloc(&c->step, (nl ? nl : 1) * sizeof(int32_t));
        argsort_desc(obj + o, nl, order);   /* top-k per level */
        for (size_t j = 0; j < k; j++) {
            size_t a = o + (size_t)order[j];
            float box[4];
            box_decode(RPN_W, del + 4 * a, r->anchors + 4 * a, 1, box);
            box_clip(box, 1, in_h, in_w);
            /* remove_small_boxes(1e-3); score_thresh 0 keeps every sigmoid */
            if (!(box[2] - box[0] >= 1e-3f && box[3] - box[1] >= 1e-3f)) continue;
            memcpy(bx + 4 * n, box, sizeof box);
            sc[n] = 1.0f / (1.0f + expf(-obj[a]));
            lv[n] = l;
            n++;
        }
    }
    int32_t *keep = arena_alloc(&c->step, (n ? n : 1) * sizeof(int32_t));
    size_t nk = box_batched_nms(bx, sc, lv, n, m->cfg.rpn_nms, keep);
    if (nk > (size_t)post_nms) nk = (size_t)post_nms;
    float *out = arena_alloc(&c->step, (nk ? nk : 1) * 4 * sizeof(float));
    for (size_t k = 0; k < nk; k++) memcpy(out + 4 * k, bx + 4 * (size_t)keep[k], 4 * sizeof(float));
    *boxes_out = out;
    return nk;
}

static Tensor *scalar_zero(Ctx *c) {
    return tensor_zeros_(c, 1);
}

/* smooth-L1 (beta) summed over rows of pred/target, divided by `denom` */
static Tensor *smooth_l1_sum_over(Ctx *c, Tensor *pred, Tensor *target, float beta, size_t denom) {
    Tensor *l = loss_smooth_l1(c, pred, target, beta);           /* mean over numel */
    return op_scale(c, l, (float)pred->numel / (float)(denom ? denom : 1));
}

/* ------------------------------------------------------------------------------------------ */
/* RoI heads */

/* MultiScaleRoIAlign over levels 0..3: rois (K, 5) -> (K, C, R, R) */
static Tensor *multiscale_roi_align(Ctx *c, const FasterRCNN *m, const DetFeatures *ft, const float *rois, size_t K) {
    const int R = m->cfg.roi_size;
    float scale[4];
    int kmin = 0, kmax = 0;
    for (int l = 0; l < 4; l++) {
        /* 2 ** round(log2(feature size / image size)), from the height as torchvision */
        float approx = (float)ft->lv[l]->shape[2] / (float)ft->in_h;
        scale[l] = exp2f(roundf(log2f(approx)));
    }
    kmin = (int)lroundf(-log2f(scale[0]));
    kmax = (int)lroundf(-log2f(scale[3]));
    int32_t *lvl = arena_alloc(&c->step, (K ? K : 1) * sizeof(int32_t));
    for (size_t k = 0; k < K; k++) {
        const float *b = rois + 5 * k + 1;
        float s = sqrtf(box_area(b));
        float t = floorf(4.0f + log2f(s / 224.0f) + 1e-6f);
        int v = isfinite(t) ? (int)t : kmin;
        v = v < kmin ? kmin : v > kmax ? kmax : v;
        lvl[k] = v - kmin;
    }
    Tensor *parts[4];
    int np = 0;
    int32_t *order = arena_alloc(&c->step, (K ? K : 1) * sizeof(int32_t));   /* rows of the concat, by level */
    size_t pos = 0;
    for (int l = 0; l < 4; l++) {
        size_t kl = 0;
        for (size_t k = 0; k < K; k++) kl += lvl[k] == l;
        if (!kl) continue;
        float *rl = arena_alloc(&c->step, kl * 5 * sizeof(float));
        size_t j = 0;
        for (size_t k = 0; k < K; k++)
            if (lvl[k] == l) {
                memcpy(rl + 5 * j, rois + 5 * k, 5 * sizeof(float));
                order[k] = (int32_t)(pos + j);
                j++;
            }
        parts[np++] = op_roi_align(c, ft->lv[l], rl, kl, R, R, scale[l], m->cfg.sampling_ratio, 0);
        pos += kl;
    }
    if (np == 0) return tensor_zeros_(c, 0, (size_t)m->cfg.fpn_ch, (size_t)R, (size_t)R);
    Tensor *cat = np == 1 ? parts[0] : op_concat(c, parts, np, 0);
    /* back to the rois' order; when it is already (one level: every RoI under 112 px, as on the
     * synthetic suite) skip the (K, C, R, R) copy and its gradient, 200 MB each at the paper's
     * 8 x 512 RoIs of 256 x 7 x 7 */
    int identity = 1;
    for (size_t k = 0; k < K && identity; k++) identity = order[k] == (int32_t)k;
    return identity ? cat : op_index_select(c, cat, 0, order, K);
}

/* (K, C, R, R) -> class logits (K, n_classes), deltas (K, 4 n_classes) */
static void box_head_forward(Ctx *c, const FasterRCNN *m, Tensor *feat, Tensor **logits, Tensor **deltas) {
    const size_t K = feat->shape[0];
    Tensor *x = op_reshape_(c, feat, K, feat->numel / (K ? K : 1));
    x = op_relu(c, linear_forward(c, &m->fc6, x));
    x = op_relu(c, linear_forward(c, &m->fc7, x));
    *logits = linear_forward(c, &m->cls_score, x);
    *deltas = linear_forward(c, &m->bbox_pred, x);
}

/* ------------------------------------------------------------------------------------------ */
/* training */

DetLosses det_forward_train(Ctx *c, const FasterRCNN *m, const DetFeatures *ft, const DetTarget *tg, Rng *rng) {
    const DetConfig *cf = &m->cfg;
    DetLosses L;
    memset(&L, 0, sizeof L);
    const size_t B = ft->lv[0]->shape[0];
    RpnOut r = rpn_forward(c, m, ft);
    const size_t T = r.T;

    /* ---- RPN targets and losses ---- */
    int32_t *labels = arena_alloc(&c->step, T * sizeof(int32_t));
    int32_t *matches = arena_alloc(&c->step, T * sizeof(int32_t));
    int32_t *pos = arena_alloc(&c->step, T * sizeof(int32_t)), *neg = arena_alloc(&c->step, T * sizeof(int32_t));
    size_t cap = B * (size_t)cf->rpn_batch;
    int32_t *sel = arena_alloc(&c->step, (cap ? cap : 1) * sizeof(int32_t));      /* sampled rows of (B*T) */
    float *sel_t = arena_alloc(&c->step, (cap ? cap : 1) * sizeof(float));        /* their 0/1 targets */
    int32_t *psel = arena_alloc(&c->step, (cap ? cap : 1) * sizeof(int32_t));     /* positive rows */
    float *ptgt = arena_alloc(&c->step, (cap ? cap : 1) * 4 * sizeof(float));     /* (P, 4) deltas */
    size_t S = 0, P = 0;
    for (size_t b = 0; b < B; b++) {
        const int G = tg[b].n;
        if (G == 0) {
            for (size_t p = 0; p < T; p++) labels[p] = 0;
        } else {
            float *iou = arena_alloc(&c->step, (size_t)G * T * sizeof(float));   /* (G, T) */
            box_iou_matrix(tg[b].boxes, (size_t)G, r.anchors, T, iou);
            box_match(iou, (size_t)G, T, cf->rpn_fg_iou, cf->rpn_bg_iou, 1, matches);
            for (size_t p = 0; p < T; p++)
                labels[p] = matches[p] >= 0 ? 1 : matches[p] == MATCH_BELOW ? 0 : -1;
        }
        size_t np, nn;
        sample_pos_neg(labels, T, cf->rpn_batch, cf->rpn_pos_frac, rng, pos, &np, neg, &nn);
        for (size_t i = 0; i < np; i++) {
            size_t a = (size_t)pos[i];
            sel[S] = (int32_t)(b * T + a);
            sel_t[S++] = 1.0f;
            psel[P] = (int32_t)(b * T + a);
            box_encode(RPN_W, tg[b].boxes + 4 * (size_t)matches[a], r.anchors + 4 * a, 1, ptgt + 4 * P);
            P++;
        }
        for (size_t i = 0; i < nn; i++) {
            sel[S] = (int32_t)(b * T + (size_t)neg[i]);
            sel_t[S++] = 0.0f;
        }
    }
    L.n_rpn_pos = (int)P;
    Tensor *obj_flat = op_reshape_(c, r.obj, B * T);
    if (S) {
        Tensor *o = op_index_select(c, obj_flat, 0, sel, S);                     /* (S) */
        L.rpn_objectness = loss_bce_logits(c, o, tensor_from(c, 1, TSHAPE(S), sel_t), NULL);
    } else {
        L.rpn_objectness = scalar_zero(c);
    }
    if (P) {
        Tensor *d = op_index_select(c, op_reshape_(c, r.deltas, B * T, 4), 0, psel, P);   /* (P, 4) */
        L.rpn_box = smooth_l1_sum_over(c, d, tensor_from(c, 2, TSHAPE(P, 4), ptgt), 1.0f / 9.0f, S);
    } else {
        L.rpn_box = scalar_zero(c);
    }

    /* ---- proposals (no gradient through them) and RoI sampling ---- */
    size_t rcap = B * (size_t)cf->box_batch;
    float *rois = arena_alloc(&c->step, (rcap ? rcap : 1) * 5 * sizeof(float));   /* (K, 5) */
    int32_t *rlab = arena_alloc(&c->step, (rcap ? rcap : 1) * sizeof(int32_t));   /* (K) class */
    int32_t *rpos = arena_alloc(&c->step, (rcap ? rcap : 1) * sizeof(int32_t));   /* rows k*C + class */
    float *rtgt = arena_alloc(&c->step, (rcap ? rcap : 1) * 4 * sizeof(float));   /* (Pr, 4) */
    size_t K = 0, Pr = 0;
    const size_t NC = (size_t)cf->n_classes;
    for (size_t b = 0; b < B; b++) {
        float *props;
        size_t np0 = rpn_proposals(c, m, &r, b, cf->rpn_pre_nms_train, cf->rpn_post_nms_train, ft->in_h, ft->in_w,
                                   &props);
        const int G = tg[b].n;
        size_t n = np0 + (size_t)G;                                   /* add_gt_proposals */
        const size_t n1 = n ? n : 1;
        float *cand = arena_alloc(&c->step, n1 * 4 * sizeof(float));  /* (n, 4) */
        memcpy(cand, props, np0 * 4 * sizeof(float));
        if (G) memcpy(cand + 4 * np0, tg[b].boxes, (size_t)G * 4 * sizeof(float));
        int32_t *lab = arena_alloc(&c->step, n1 * sizeof(int32_t)), *mt = arena_alloc(&c->step, n1 * sizeof(int32_t));
        int32_t *ps = arena_alloc(&c->step, n1 * sizeof(int32_t)), *ng = arena_alloc(&c->step, n1 * sizeof(int32_t));
        if (G == 0) {
            for (size_t i = 0; i < n; i++) lab[i] = 0;
        } else {
            float *iou = arena_alloc(&c->step, (size_t)G * n1 * sizeof(float));   /* (G, n) */
            box_iou_matrix(tg[b].boxes, (size_t)G, cand, n, iou);
            box_match(iou, (size_t)G, n, cf->box_fg_iou, cf->box_bg_iou, 0, mt);
            for (size_t i = 0; i < n; i++) lab[i] = mt[i] >= 0 ? 1 : mt[i] == MATCH_BELOW ? 0 : -1;
        }
        size_t np, nn;
        sample_pos_neg(lab, n, cf->box_batch, cf->box_pos_frac, rng, ps, &np, ng, &nn);
        /* torchvision keeps the sampled RoIs in index order: where(pos | neg) */
        uint8_t *take = arena_calloc(&c->step, n1);
        for (size_t i = 0; i < np; i++) take[ps[i]] = 1;
        for (size_t i = 0; i < nn; i++) take[ng[i]] = 1;
        for (size_t i = 0; i < n; i++) {
            if (!take[i]) continue;
            float *rr = rois + 5 * K;
            rr[0] = (float)b;
            memcpy(rr + 1, cand + 4 * i, 4 * sizeof(float));
            rlab[K] = lab[i];
            if (lab[i] > 0) {
                rpos[Pr] = (int32_t)(K * NC + (size_t)lab[i]);
                box_encode(ROI_W, tg[b].boxes + 4 * (size_t)mt[i], cand + 4 * i, 1, rtgt + 4 * Pr);
                Pr++;
            }
            K++;
        }
    }
    L.n_roi_pos = (int)Pr;
    if (K) {
        Tensor *feat = multiscale_roi_align(c, m, ft, rois, K);          /* (K, C, R, R) */
        Tensor *logits, *deltas;
        box_head_forward(c, m, feat, &logits, &deltas);
        L.classifier = loss_cross_entropy(c, logits, rlab, 0.0f);
        if (Pr) {
            Tensor *d = op_index_select(c, op_reshape_(c, deltas, K * NC, 4), 0, rpos, Pr);   /* (Pr, 4) */
            L.box_reg = smooth_l1_sum_over(c, d, tensor_from(c, 2, TSHAPE(Pr, 4), rtgt), 1.0f / 9.0f, K);
        } else {
            L.box_reg = scalar_zero(c);
        }
    } else {
        L.classifier = scalar_zero(c);
        L.box_reg = scalar_zero(c);
    }
    L.total = op_add(c, op_add(c, L.rpn_objectness, L.rpn_box), op_add(c, L.classifier, L.box_reg));
    return L;
}

/* ------------------------------------------------------------------------------------------ */
/* inference */

void det_detect(Ctx *c, const FasterRCNN *m, const DetFeatures *ft, Detections *out) {
    const DetConfig *cf = &m->cfg;
    int prev = ctx_set_grad(c, 0);
    const size_t B = ft->lv[0]->shape[0];
    RpnOut r = rpn_forward(c, m, ft);
    float **props = arena_alloc(&c->step, B * sizeof(float *));
    size_t *np = arena_alloc(&c->step, B * sizeof(size_t));
    size_t K = 0;
    for (size_t b = 0; b < B; b++) {
        np[b] = rpn_proposals(c, m, &r, b, cf->rpn_pre_nms_test, cf->rpn_post_nms_test, ft->in_h, ft->in_w, &props[b]);
        K += np[b];
    }
    float *rois = arena_alloc(&c->step, (K ? K : 1) * 5 * sizeof(float));
    size_t k = 0;
    for (size_t b = 0; b < B; b++)
        for (size_t i = 0; i < np[b]; i++, k++) {
            rois[5 * k] = (float)b;
            memcpy(rois + 5 * k + 1, props[b] + 4 * i, 4 * sizeof(float));
        }
    Tensor *logits = NULL, *deltas = NULL;
    if (K) box_head_forward(c, m, multiscale_roi_align(c, m, ft, rois, K), &logits, &deltas);
    Tensor *prob = K ? op_softmax(c, logits) : NULL;                 /* (K, NC) */
    const size_t NC = (size_t)cf->n_classes;
    size_t off = 0;
    for (size_t b = 0; b < B; b++) {
        const size_t n = np[b], cap = n * (NC - 1);
        float *bx = arena_alloc(&c->step, (cap ? cap : 1) * 4 * sizeof(float));
        float *sc = arena_alloc(&c->step, (cap ? cap : 1) * sizeof(float));
        int32_t *cl = arena_alloc(&c->step, (cap ? cap : 1) * sizeof(int32_t));
        size_t m2 = 0;
        for (size_t i = 0; i < n; i++) {
            const size_t row = off + i;
            for (size_t j = 1; j < NC; j++) {
                float s = prob->data[row * NC + j];
                float box[4];
                box_decode(ROI_W, deltas->data + row * 4 * NC + 4 * j, props[b] + 4 * i, 1, box);
                box_clip(box, 1, ft->in_h, ft->in_w);
                if (!(s > cf->box_score_thresh)) continue;
                if (!(box[2] - box[0] >= 1e-2f && box[3] - box[1] >= 1e-2f)) continue;
                memcpy(bx + 4 * m2, box, sizeof box);
                sc[m2] = s;
                cl[m2] = (int32_t)j;
                m2++;
            }
        }
        off += n;
        int32_t *keep = arena_alloc(&c->step, (m2 ? m2 : 1) * sizeof(int32_t));
        size_t nk = box_batched_nms(bx, sc, cl, m2, cf->box_nms, keep);
        if (nk > (size_t)cf->box_detections) nk = (size_t)cf->box_detections;
        out[b].n = (int)nk;
        out[b].boxes = arena_alloc(&c->step, (nk ? nk : 1) * 4 * sizeof(float));
        out[b].scores = arena_alloc(&c->step, (nk ? nk : 1) * sizeof(float));
        for (size_t q = 0; q < nk; q++) {
            memcpy(out[b].boxes + 4 * q, bx + 4 * (size_t)keep[q], 4 * sizeof(float));
            out[b].scores[q] = sc[keep[q]];
        }
    }
    ctx_set_grad(c, prev);
}
