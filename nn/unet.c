/* unet.c — the segmentation decoders of the benchmark (recipe.md §3.3) on a frozen backbone's
 * maps: a UNet on an EfficientNet's stage outputs and a TransUNet "cup" (progressive upsampling)
 * on a ViT's patch-token map; plus the BackboneDims / BackboneMaps helpers every head uses. */
#include "nn/nn.h"
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* backbone shapes and maps */

void backbone_dims_effnet(const EffNet *m, BackboneDims *d) {
    memset(d, 0, sizeof *d);
    d->kind = BACKBONE_CNN;
    d->stage_ch[0] = m->conv_stem.out;
    d->stage_stride[0] = m->conv_stem.stride;
    int stride = m->conv_stem.stride;
    for (int s = 0; s < 7; s++) {
        int first = s == 0 ? 0 : m->stage_end[s - 1];
        stride *= m->blocks[first].stride;
        d->stage_ch[s + 1] = m->blocks[m->stage_end[s] - 1].out;
        d->stage_stride[s + 1] = stride;
    }
}

void backbone_dims_vit(const ViT *m, BackboneDims *d) {
    memset(d, 0, sizeof *d);
    d->kind = BACKBONE_VIT;
    d->embed_dim = m->cfg.embed_dim;
    d->patch = m->cfg.patch;
}

BackboneMaps backbone_maps_effnet(const EffNetOut *o, int in_h, int in_w) {
    BackboneMaps f;
    memset(&f, 0, sizeof f);
    f.kind = BACKBONE_CNN;
    for (int s = 0; s < 8; s++) f.stages[s] = o->stages[s];
    f.in_h = in_h;
    f.in_w = in_w;
    return f;
}

BackboneMaps backbone_maps_vit(Ctx *c, const ViTOut *o, int in_h, int in_w) {
    BackboneMaps f;
    memset(&f, 0, sizeof f);
    f.kind = BACKBONE_VIT;
    const size_t B = o->patch->shape[0], C = o->patch->shape[2];
    Tensor *t = op_transpose(c, o->patch, 1, 2);                           /* (B, C, N) view */
    t = op_contiguous(c, t);
    f.patch = op_reshape_(c, t, B, C, (size_t)o->gh, (size_t)o->gw);      /* (B, C, gh, gw) */
    f.in_h = in_h;
    f.in_w = in_w;
    return f;
}

/* ------------------------------------------------------------------------------------------ */
/* conv3x3 - BN - ReLU */

static void cbr_declare(ConvBnRelu *l, ParamStore *ps, const char *prefix, const char *name, int in, int out) {
    char k[160];
    nn_join(k, sizeof k, prefix, name);
    conv2d_declare(&l->conv, ps, k, "0", in, out, 3, 1, 1, 0);
    batchnorm_declare(&l->bn, ps, k, "1", out, 0.1f, 1e-5f);   /* nn.BatchNorm2d defaults */
}

static void cbr_init(ConvBnRelu *l, Rng *r) {
    init_torch_default_conv(&l->conv, r);
    batchnorm_reset(&l->bn);
}

static Tensor *cbr_forward(Ctx *c, const ConvBnRelu *l, Tensor *x) {
    return op_relu(c, batchnorm_forward(c, &l->bn, conv2d_forward(c, &l->conv, x)));
}

static void block_declare(SegBlock *b, ParamStore *ps, const char *prefix, const char *name, int in, int mid, int out,
                          int skip) {
    char k[160];
    nn_join(k, sizeof k, prefix, name);
    b->in = in;
    b->mid = mid;
    b->out = out;
    b->skip = skip;
    cbr_declare(&b->c1, ps, k, "conv1", in, mid);
    cbr_declare(&b->c2, ps, k, "conv2", mid, out);
}

static Tensor *block_forward(Ctx *c, const SegBlock *b, Tensor *x) {
    return cbr_forward(c, &b->c2, cbr_forward(c, &b->c1, x));
}

static int scaled(int ch, float width) {
    int v = (int)(ch * width + 0.5f);
    return v < 4 ? 4 : v;
}

/* ------------------------------------------------------------------------------------------ */

void seg_decoder_declare(SegDecoder *d, const BackboneDims *bd, float width, ParamStore *ps, const char *prefix) {
    memset(d, 0, sizeof *d);
    d->kind = bd->kind;
    if (width <= 0) width = 1.0f;
    char k[160];
    if (bd->kind == BACKBONE_CNN) {
        const int *ch = bd->stage_ch;   /* c0 (stem) .. c7 */
        /* d8 on maxpool(enc7), then d7 .. d1 each after concatenating enc7 .. enc1 */
        int out = scaled(ch[7], width);
        block_declare(&d->blocks[0], ps, prefix, "d8", ch[7], scaled(ch[7], width) / 2, out, -1);
        int prev = out;
        for (int s = 7; s >= 1; s--) {
            char name[24];
            snprintf(name, sizeof name, "d%d", s);
            int o = scaled(ch[s - 1], width);
            block_declare(&d->blocks[8 - s], ps, prefix, name, prev + ch[s], o / 2 > 0 ? o / 2 : 1, o, s);
            prev = o;
        }
        d->n_blocks = 8;
        conv2d_declare(&d->head, ps, prefix, "final", prev, 1, 1, 1, 1, 1);
    } else {
        /* TransUNet DecoderCup: conv_more to 512, four x2 blocks 256, 128, 64, 16 */
        static const int cup[4] = {256, 128, 64, 16};
        int more = scaled(512, width);
        cbr_declare(&d->more, ps, prefix, "conv_more", bd->embed_dim, more);
        int prev = more;
        for (int i = 0; i < 4; i++) {
            char name[32];
            snprintf(name, sizeof name, "blocks.%d", i);
            int o = scaled(cup[i], width);
            block_declare(&d->blocks[i], ps, prefix, name, prev, o, o, -1);
            prev = o;
        }
        d->n_blocks = 4;
        nn_join(k, sizeof k, prefix, "segmentation_head");
        conv2d_declare(&d->head, ps, k, "0", prev, 1, 3, 1, 1, 1);
    }
}

void seg_decoder_init(SegDecoder *d, Rng *r) {
    for (int i = 0; i < d->n_blocks; i++) {
        cbr_init(&d->blocks[i].c1, r);
        cbr_init(&d->blocks[i].c2, r);
    }
    if (d->kind == BACKBONE_VIT) cbr_init(&d->more, r);
    init_torch_default_conv(&d->head, r);
}

Tensor *seg_decoder_forward(Ctx *c, const SegDecoder *d, const BackboneMaps *f) {
    Tensor *h;
    if (d->kind == BACKBONE_CNN) {
        if (f->kind != BACKBONE_CNN || !f->stages[7]) ctx_fail(c, "seg_decoder_forward: CNN decoder needs stage maps");
        /* maxpool 2x2 of the deepest map (floor for odd sizes, as nn.MaxPool2d(2)): the d8 input */
        Tensor *e7 = f->stages[7];
        h = e7->shape[2] >= 2 && e7->shape[3] >= 2 ? op_max_pool2d(c, e7, 2, 2, 0) : e7;
        h = block_forward(c, &d->blocks[0], h);                               /* (B, out8, h7/2, w7/2) */
        for (int i = 1; i < d->n_blocks; i++) {
            const SegBlock *b = &d->blocks[i];
            Tensor *skip = f->stages[b->skip];                                 /* (B, c_s, H_s, W_s) */
            if ((size_t)b->in != h->shape[1] + skip->shape[1]) {
                char b1[64], b2[64];
                ctx_fail(c, "seg_decoder_forward: block d%d expects %d channels, got %s + skip %s", b->skip, b->in,
                         tensor_shape_str(h, b1, sizeof b1), tensor_shape_str(skip, b2, sizeof b2));
            }
            if (h->shape[2] != skip->shape[2] || h->shape[3] != skip->shape[3])
                h = op_resize_bilinear(c, h, (int)skip->shape[2], (int)skip->shape[3]);
            Tensor *cat[2] = {h, skip};
            h = block_forward(c, b, op_concat(c, cat, 2, 1));
        }
        h = conv2d_forward(c, &d->head, h);                                   /* (B, 1, H1, W1) */
    } else {
        if (f->kind != BACKBONE_VIT || !f->patch) ctx_fail(c, "seg_decoder_forward: ViT decoder needs a patch map");
        h = cbr_forward(c, &d->more, f->patch);                               /* (B, 512, gh, gw) */
        for (int i = 0; i < d->n_blocks; i++) {
            h = op_resize_bilinear(c, h, 2 * (int)h->shape[2], 2 * (int)h->shape[3]);
            h = block_forward(c, &d->blocks[i], h);
        }
        h = conv2d_forward(c, &d->head, h);                                   /* (B, 1, 16 gh, 16 gw) */
    }
    if ((int)h->shape[2] != f->in_h || (int)h->shape[3] != f->in_w) h = op_resize_bilinear(c, h, f->in_h, f->in_w);
    return h;
}
