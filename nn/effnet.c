/* effnet.c — EfficientNet B0–B7 with the structure and state_dict names of lukemelas
 * EfficientNet-PyTorch (the implementation the Mammo-CLIP and VersaMammo weights load into):
 * TF-"SAME" padding computed statically for the native resolution, BN eps 1e-3 / momentum 0.01,
 * MBConv blocks with squeeze-excitation and drop-connect scaled by block index. */
#include "nn/nn.h"
#include <math.h>
#include <string.h>

/* (kernel, stride, expand, in, out, repeats) of the seven B0 stages, all with SE ratio 0.25 */
static const int B0_STAGES[7][6] = {
    {3, 1, 1, 32, 16, 1},  {3, 2, 6, 16, 24, 2},  {5, 2, 6, 24, 40, 2},   {3, 2, 6, 40, 80, 3},
    {5, 1, 6, 80, 112, 3}, {5, 2, 6, 112, 192, 4}, {3, 1, 6, 192, 320, 1},
};
/* width, depth, resolution, dropout (efficientnet_params) */
static const float VARIANTS[8][4] = {
    {1.0f, 1.0f, 224, 0.2f}, {1.0f, 1.1f, 240, 0.2f}, {1.1f, 1.2f, 260, 0.3f}, {1.2f, 1.4f, 300, 0.3f},
    {1.4f, 1.8f, 380, 0.4f}, {1.6f, 2.2f, 456, 0.4f}, {1.8f, 2.6f, 528, 0.5f}, {2.0f, 3.1f, 600, 0.5f},
};

int effnet_config(const char *name, EffNetConfig *cfg) {
    const char *v = strrchr(name, 'b');
    if (!v || v[1] < '0' || v[1] > '7' || v[2] != '\0') return 1;
    int i = v[1] - '0';
    memset(cfg, 0, sizeof(*cfg));
    cfg->variant = i;
    cfg->width = VARIANTS[i][0];
    cfg->depth = VARIANTS[i][1];
    cfg->resolution = (int)VARIANTS[i][2];
    cfg->dropout = VARIANTS[i][3];
    cfg->drop_connect = 0.2f;
    cfg->bn_momentum = 0.01f;
    cfg->bn_eps = 1e-3f;
    cfg->pad_mode = PAD_SAME_STATIC;
    cfg->static_size = cfg->resolution;
    cfg->in_chans = 3;
    return 0;
}

/* round_filters: multiply by width, round to a multiple of 8, never more than 10% down */
static int round_filters(int filters, float width) {
    const int divisor = 8;
    float f = (float)filters * width;
    int nf = (int)(f + divisor / 2.0f) / divisor * divisor;
    if (nf < divisor) nf = divisor;
    if ((float)nf < 0.9f * f) nf += divisor;
    return nf;
}

static int round_repeats(int r, float depth) {
    return (int)ceil((double)depth * r);
}

static void set_padding(Conv2d *cv, const EffNetConfig *cfg, int size) {
    cv->pad_mode = cfg->pad_mode;
    cv->static_h = cv->static_w = size;
}

void effnet_declare(EffNet *m, const EffNetConfig *cfg, ParamStore *ps, const char *prefix) {
    memset(m, 0, sizeof(*m));
    m->cfg = *cfg;
    const float mom = cfg->bn_momentum, eps = cfg->bn_eps;
    int size = cfg->static_size > 0 ? cfg->static_size : cfg->resolution;
    int stem = round_filters(32, cfg->width);
    conv2d_declare(&m->conv_stem, ps, prefix, "_conv_stem", cfg->in_chans, stem, 3, 2, 1, 0);
    set_padding(&m->conv_stem, cfg, size);
    batchnorm_declare(&m->bn0, ps, prefix, "_bn0", stem, mom, eps);
    size = (size + 1) / 2;

    int total = 0;
    for (int s = 0; s < 7; s++) total += round_repeats(B0_STAGES[s][5], cfg->depth);
    int idx = 0, last_out = stem;
    for (int s = 0; s < 7; s++) {
        int k = B0_STAGES[s][0], stride = B0_STAGES[s][1], e = B0_STAGES[s][2];
        int in = round_filters(B0_STAGES[s][3], cfg->width), out = round_filters(B0_STAGES[s][4], cfg->width);
        int reps = round_repeats(B0_STAGES[s][5], cfg->depth);
        for (int r = 0; r < reps; r++, idx++) {
            MBConv *b = &m->blocks[idx];
            char bp[128], sub[64];
            snprintf(sub, sizeof sub, "_blocks.%d", idx);
            nn_join(bp, sizeof bp, prefix, sub);
            b->in = r == 0 ? in : out;
            b->out = out;
            b->stride = r == 0 ? stride : 1;
            b->k = k;
            b->expand = e;
            b->mid = b->in * e;
            b->se_ch = (int)(b->in * 0.25f) > 1 ? (int)(b->in * 0.25f) : 1;
            b->has_skip = b->stride == 1 && b->in == b->out;
            b->drop_connect = cfg->drop_connect * (float)idx / (float)total;
            if (e != 1) {
                conv2d_declare(&b->expand_conv, ps, bp, "_expand_conv", b->in, b->mid, 1, 1, 1, 0);
                set_padding(&b->expand_conv, cfg, size);
                batchnorm_declare(&b->bn0, ps, bp, "_bn0", b->mid, mom, eps);
            }
            conv2d_declare(&b->depthwise_conv, ps, bp, "_depthwise_conv", b->mid, b->mid, k, b->stride, b->mid, 0);
            set_padding(&b->depthwise_conv, cfg, size);
            batchnorm_declare(&b->bn1, ps, bp, "_bn1", b->mid, mom, eps);
            size = (size + b->stride - 1) / b->stride;
            conv2d_declare(&b->se_reduce, ps, bp, "_se_reduce", b->mid, b->se_ch, 1, 1, 1, 1);
            conv2d_declare(&b->se_expand, ps, bp, "_se_expand", b->se_ch, b->mid, 1, 1, 1, 1);
            conv2d_declare(&b->project_conv, ps, bp, "_project_conv", b->mid, b->out, 1, 1, 1, 0);
            set_padding(&b->project_conv, cfg, size);
            batchnorm_declare(&b->bn2, ps, bp, "_bn2", b->out, mom, eps);
        }
        m->stage_end[s] = idx;
        last_out = out;
    }
    m->n_blocks = idx;
    int head = round_filters(1280, cfg->width);
    conv2d_declare(&m->conv_head, ps, prefix, "_conv_head", last_out, head, 1, 1, 1, 0);
    set_padding(&m->conv_head, cfg, size);
    batchnorm_declare(&m->bn1, ps, prefix, "_bn1", head, mom, eps);
    m->feat_dim = head;
    if (cfg->num_classes > 0) linear_declare(&m->fc, ps, prefix, "_fc", head, cfg->num_classes, 1);
}

/* TF/torchvision init: conv N(0, sqrt(2 / fan_out)), fan_out = out * k * k; BN (1, 0);
 * classifier U(+-1/sqrt(out)). */
static void conv_init_fan_out(Conv2d *cv, Rng *r) {
    float std = sqrtf(2.0f / (float)(cv->out * cv->k * cv->k));
    rng_fill_normal(r, cv->w->data, cv->w->numel, 0.0f, std);
    if (cv->b) init_constant(cv->b, 0.0f);
}

void effnet_init(EffNet *m, Rng *r) {
    conv_init_fan_out(&m->conv_stem, r);
    batchnorm_reset(&m->bn0);
    for (int i = 0; i < m->n_blocks; i++) {
        MBConv *b = &m->blocks[i];
        if (b->expand != 1) {
            conv_init_fan_out(&b->expand_conv, r);
            batchnorm_reset(&b->bn0);
        }
        conv_init_fan_out(&b->depthwise_conv, r);
        batchnorm_reset(&b->bn1);
        conv_init_fan_out(&b->se_reduce, r);
        conv_init_fan_out(&b->se_expand, r);
        conv_init_fan_out(&b->project_conv, r);
        batchnorm_reset(&b->bn2);
    }
    conv_init_fan_out(&m->conv_head, r);
    batchnorm_reset(&m->bn1);
    if (m->cfg.num_classes > 0) {
        float bound = 1.0f / sqrtf((float)m->cfg.num_classes);
        init_uniform(m->fc.w, r, bound);
        init_constant(m->fc.b, 0.0f);
    }
}

/* 1x1 convolution on a (N, C) vector: a linear layer over the conv's (out, in, 1, 1) weight */
static Tensor *conv1x1_vec(Ctx *c, const Conv2d *cv, Tensor *x) {
    Tensor *w = op_reshape_(c, cv->w, (size_t)cv->out, (size_t)cv->in);
    return op_linear(c, x, w, cv->b);
}

/* silu(bn(x)) as one engine op: the BN output is not stored for backward (the same numbers as
 * op_silu(batchnorm_forward(...)), one full activation less per pair) */
static Tensor *bn_silu(Ctx *c, const BatchNorm2d *l, Tensor *x) {
    if (c->training && c->grad_enabled) l->num_batches_tracked->data[0] += 1.0f;
    return op_batchnorm_silu(c, x, l->w, l->b, l->running_mean->data, l->running_var->data, l->momentum, l->eps);
}

static Tensor *mbconv_forward(Ctx *c, const MBConv *b, Tensor *x) {
    /* x: (N, in, H, W) */
    Tensor *h = x;
    if (b->expand != 1) h = bn_silu(c, &b->bn0, conv2d_forward(c, &b->expand_conv, h));
    h = bn_silu(c, &b->bn1, conv2d_forward(c, &b->depthwise_conv, h));  /* (N, mid, H', W') */
    /* squeeze-excitation: per-channel gate from the pooled feature */
    Tensor *s = op_global_avg_pool(c, h);                       /* (N, mid) */
    s = op_silu(c, conv1x1_vec(c, &b->se_reduce, s));           /* (N, se) */
    s = op_sigmoid(c, conv1x1_vec(c, &b->se_expand, s));        /* (N, mid) */
    s = op_reshape_(c, s, s->shape[0], s->shape[1], 1, 1);
    h = op_mul(c, h, s);
    h = batchnorm_forward(c, &b->bn2, conv2d_forward(c, &b->project_conv, h));  /* (N, out, H', W') */
    if (b->has_skip) {
        if (b->drop_connect > 0) h = op_drop_path(c, h, b->drop_connect);
        h = op_add(c, h, x);
    }
    return h;
}

EffNetOut effnet_forward(Ctx *c, const EffNet *m, Tensor *x) {
    EffNetOut o;
    memset(&o, 0, sizeof o);
    char b1[64];
    if (x->ndim != 4 || x->shape[1] != (size_t)m->cfg.in_chans)
        ctx_fail(c, "effnet_forward: input %s is not (B, %d, H, W)", tensor_shape_str(x, b1, sizeof b1),
                 m->cfg.in_chans);
    const size_t in_h = x->shape[2];
    Tensor *h = bn_silu(c, &m->bn0, conv2d_forward(c, &m->conv_stem, x));
    o.stages[0] = h;
    int blk = 0;
    for (int s = 0; s < 7; s++) {
        for (; blk < m->stage_end[s]; blk++) h = mbconv_forward(c, &m->blocks[blk], h);
        o.stages[s + 1] = h;
    }
    /* taps: the last stage output at each stride 2, 4, 8, 16, 32 */
    for (int s = 0; s < 8; s++) {
        size_t stride = (in_h + o.stages[s]->shape[2] - 1) / o.stages[s]->shape[2];
        int t = stride <= 2 ? 0 : stride <= 4 ? 1 : stride <= 8 ? 2 : stride <= 16 ? 3 : 4;
        o.taps[t] = o.stages[s];
    }
    h = bn_silu(c, &m->bn1, conv2d_forward(c, &m->conv_head, h));
    o.pooled = op_global_avg_pool(c, h);                        /* (B, feat_dim) */
    if (m->cfg.num_classes > 0) {
        Tensor *d = m->cfg.dropout > 0 ? op_dropout(c, o.pooled, m->cfg.dropout) : o.pooled;
        o.logits = linear_forward(c, &m->fc, d);
    }
    return o;
}
