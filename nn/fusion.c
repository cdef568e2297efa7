/*
 * fusion.c — the VQA model of the benchmark: a ViLT-style single-stream transformer over
 * question words and image tokens, trained from scratch on a frozen backbone (recipe.md §3.3).
 *
 *   image  CNN: stages enc3, enc4, enc6, enc7 bilinearly resized to enc6's grid, concatenated,
 *          1x1 conv -> fuse_ch (the paper's multi-scale fusion); ViT: the patch tokens.  Then the
 *          paper's replacement of ViLT's patch embedding: 1x1 conv -> fuse_ch, GELU, 1x1 conv ->
 *          dim.  (1x1 convs on a grid are Linear layers on its tokens.)  + position + type 1.
 *   text   [CLS] + word embeddings (ids from a whitespace vocabulary) + positions, LayerNorm
 *          (BERT embeddings), + type 0.
 *   body   pre-norm transformer blocks (ViT blocks: LayerNorm, fused attention, MLP with GELU),
 *          final LayerNorm; the answer head reads the [CLS] token.
 * Deviation from the paper: ViLT-B/32 pre-trained (768 wide, 12 blocks) is replaced by a small
 * transformer trained from scratch, as the benchmark trains every head on CPU.
 */
#include "nn/nn.h"
#include <string.h>

static const int FUSE_STAGES[4] = {3, 4, 6, 7};

void fusion_declare(FusionModel *m, FusionConfig *cfg, const BackboneDims *bd, int in_h, int in_w, ParamStore *ps,
                    const char *prefix) {
    memset(m, 0, sizeof *m);
    if (cfg->depth > FUSION_MAX_DEPTH) cfg->depth = FUSION_MAX_DEPTH;
    if (cfg->ln_eps <= 0) cfg->ln_eps = 1e-6f;
    if (cfg->mlp_ratio <= 0) cfg->mlp_ratio = 4.0f;
    m->kind = bd->kind;
    const int D = cfg->dim, Fc = cfg->fuse_ch;
    char k[160];
    if (bd->kind == BACKBONE_CNN) {
        m->n_fuse = 4;
        int sum = 0;
        for (int i = 0; i < 4; i++) {
            m->fuse_stage[i] = FUSE_STAGES[i];
            sum += bd->stage_ch[FUSE_STAGES[i]];
        }
        m->img_in = sum;
        linear_declare(&m->fuse, ps, prefix, "fuse", sum, Fc, 1);
        linear_declare(&m->adapt1, ps, prefix, "adapt.0", Fc, Fc, 1);
        if (cfg->img_tokens <= 0) {
            int s6 = bd->stage_stride[6] > 0 ? bd->stage_stride[6] : 32;
            cfg->img_tokens = ((in_h + s6 - 1) / s6) * ((in_w + s6 - 1) / s6);
        }
    } else {
        m->img_in = bd->embed_dim;
        linear_declare(&m->adapt1, ps, prefix, "adapt.0", bd->embed_dim, Fc, 1);
        if (cfg->img_tokens <= 0) cfg->img_tokens = (in_h / bd->patch) * (in_w / bd->patch);
    }
    linear_declare(&m->adapt2, ps, prefix, "adapt.2", Fc, D, 1);
    m->word_embed = param_(ps, nn_join(k, sizeof k, prefix, "word_embeddings.weight"), (size_t)cfg->vocab, (size_t)D);
    m->text_pos = param_(ps, nn_join(k, sizeof k, prefix, "text_pos_embed"), (size_t)(1 + cfg->max_words), (size_t)D);
    m->img_pos = param_(ps, nn_join(k, sizeof k, prefix, "img_pos_embed"), (size_t)cfg->img_tokens, (size_t)D);
    m->type_embed = param_(ps, nn_join(k, sizeof k, prefix, "token_type_embeddings.weight"), 2, (size_t)D);
    m->cls_token = param_(ps, nn_join(k, sizeof k, prefix, "cls_token"), 1, (size_t)D);
    layernorm_declare(&m->text_norm, ps, prefix, "text_norm", D, cfg->ln_eps);
    const int hidden = (int)(D * cfg->mlp_ratio);
    for (int i = 0; i < cfg->depth; i++) {
        char b[64];
        snprintf(b, sizeof b, "blocks.%d", i);
        char bp[160];
        nn_join(bp, sizeof bp, prefix, b);
        ViTBlock *bl = &m->blocks[i];
        layernorm_declare(&bl->norm1, ps, bp, "norm1", D, cfg->ln_eps);
        linear_declare(&bl->qkv, ps, bp, "attn.qkv", D, 3 * D, 1);
        linear_declare(&bl->proj, ps, bp, "attn.proj", D, D, 1);
        layernorm_declare(&bl->norm2, ps, bp, "norm2", D, cfg->ln_eps);
        linear_declare(&bl->fc1, ps, bp, "mlp.fc1", D, hidden, 1);
        linear_declare(&bl->fc2, ps, bp, "mlp.fc2", hidden, D, 1);
    }
    layernorm_declare(&m->norm, ps, prefix, "norm", D, cfg->ln_eps);
    linear_declare(&m->head, ps, prefix, "head", D, cfg->n_answers, 1);
    m->cfg = *cfg;
}

static void init_linear_vit(Linear *l, Rng *r) {
    if (!l->w) return;
    init_trunc_normal(l->w, r, 0.02f);
    if (l->b) init_constant(l->b, 0.0f);
}

static void init_ln(LayerNorm *l) {
    init_constant(l->w, 1.0f);
    init_constant(l->b, 0.0f);
}

void fusion_init(FusionModel *m, Rng *r) {
    /* the fusion and adapter layers are nn.Conv2d 1x1 in the paper: PyTorch's default init (a
     * 0.02 normal on both adapter layers would leave the image path with vanishing gradients) */
    if (m->fuse.w) init_torch_default_linear(&m->fuse, r);
    init_torch_default_linear(&m->adapt1, r);
    init_linear_vit(&m->adapt2, r);
    init_trunc_normal(m->word_embed, r, 0.02f);
    init_trunc_normal(m->text_pos, r, 0.02f);
    init_trunc_normal(m->img_pos, r, 0.02f);
    init_trunc_normal(m->type_embed, r, 0.02f);
    init_trunc_normal(m->cls_token, r, 0.02f);
    init_ln(&m->text_norm);
    for (int i = 0; i < m->cfg.depth; i++) {
        ViTBlock *b = &m->blocks[i];
        init_ln(&b->norm1);
        init_ln(&b->norm2);
        init_linear_vit(&b->qkv, r);
        init_linear_vit(&b->proj, r);
        init_linear_vit(&b->fc1, r);
        init_linear_vit(&b->fc2, r);
    }
    init_ln(&m->norm);
    init_linear_vit(&m->head, r);
}

Tensor *fusion_image_tokens(Ctx *c, const FusionModel *m, const BackboneMaps *f) {
    Tensor *g;   /* (B, C, h, w) grid */
    if (m->kind == BACKBONE_CNN) {
        if (f->kind != BACKBONE_CNN) ctx_fail(c, "fusion_image_tokens: CNN fusion needs stage maps");
        Tensor *ref = f->stages[m->fuse_stage[2]];
        const int h = (int)ref->shape[2], w = (int)ref->shape[3];
        Tensor *parts[4];
        for (int i = 0; i < m->n_fuse; i++) {
            Tensor *s = f->stages[m->fuse_stage[i]];
            parts[i] = (int)s->shape[2] == h && (int)s->shape[3] == w ? s : op_resize_bilinear(c, s, h, w);
        }
        g = op_concat(c, parts, m->n_fuse, 1);
    } else {
        if (f->kind != BACKBONE_VIT || !f->patch) ctx_fail(c, "fusion_image_tokens: ViT fusion needs a patch map");
        g = f->patch;
    }
    const size_t B = g->shape[0], C = g->shape[1], N = g->shape[2] * g->shape[3];
    Tensor *t = op_reshape_(c, op_contiguous(c, g), B, C, N);
    return op_contiguous(c, op_transpose(c, t, 1, 2));                 /* (B, N, C) */
}

static Tensor *fusion_block_forward(Ctx *c, const ViTBlock *b, Tensor *x, int heads) {
    /* x: (B, T, D), pre-norm as the ViT blocks of nn/vit.c (no LayerScale, no drop-path) */
    Tensor *h = layernorm_forward(c, &b->norm1, x);
    h = linear_forward(c, &b->qkv, h);            /* (B, T, 3D) */
    h = op_attention(c, h, heads);                /* (B, T, D) */
    x = op_add(c, x, linear_forward(c, &b->proj, h));
    h = layernorm_forward(c, &b->norm2, x);
    h = op_gelu(c, linear_forward(c, &b->fc1, h));  /* (B, T, hidden) */
    return op_add(c, x, linear_forward(c, &b->fc2, h));
}

Tensor *fusion_forward(Ctx *c, const FusionModel *m, const int32_t *ids, int L, Tensor *img) {
    const FusionConfig *cf = &m->cfg;
    char b1[64];
    if (img->ndim != 3 || img->shape[1] != (size_t)cf->img_tokens || img->shape[2] != (size_t)m->img_in)
        ctx_fail(c, "fusion_forward: image tokens %s are not (B, %d, %d)", tensor_shape_str(img, b1, sizeof b1),
                 cf->img_tokens, m->img_in);
    if (L < 0 || L > cf->max_words) ctx_fail(c, "fusion_forward: %d words (at most %d)", L, cf->max_words);
    const size_t B = img->shape[0], D = (size_t)cf->dim, Lz = (size_t)L;

    /* image tokens -> (B, N, D) */
    Tensor *v = img;
    if (m->kind == BACKBONE_CNN) v = linear_forward(c, &m->fuse, v);
    v = op_gelu(c, linear_forward(c, &m->adapt1, v));
    v = linear_forward(c, &m->adapt2, v);
    v = op_add(c, v, m->img_pos);
    v = op_add(c, v, op_slice(c, m->type_embed, 0, 1, 2));

    /* text: [CLS] + words, positions, LayerNorm, type 0 -> (B, 1+L, D) */
    Tensor *cls = op_add(c, tensor_zeros_(c, B, 1, D), m->cls_token);
    Tensor *txt = cls;
    if (L > 0) {
        Tensor *w = op_embedding(c, m->word_embed, ids, B * Lz);      /* (B*L, D) */
        Tensor *parts[2] = {cls, op_reshape_(c, w, B, Lz, D)};
        txt = op_concat(c, parts, 2, 1);
    }
    txt = op_add(c, txt, op_slice(c, m->text_pos, 0, 0, 1 + Lz));
    txt = layernorm_forward(c, &m->text_norm, txt);
    txt = op_add(c, txt, op_slice(c, m->type_embed, 0, 0, 1));

    Tensor *parts[2] = {txt, v};
    Tensor *x = op_concat(c, parts, 2, 1);                           /* (B, 1+L+N, D) */
    for (int i = 0; i < cf->depth; i++) x = fusion_block_forward(c, &m->blocks[i], x, cf->heads);
    x = layernorm_forward(c, &m->norm, x);
    Tensor *h = op_reshape_(c, op_contiguous(c, op_slice(c, x, 1, 0, 1)), B, D);   /* [CLS] (B, D) */
    return linear_forward(c, &m->head, h);                           /* (B, n_answers) */
}
