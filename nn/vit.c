/* vit.c — the DINOv2 Vision Transformer: patch embedding, CLS/register/mask tokens, bicubic
 * position-embedding interpolation, pre-norm blocks with LayerScale and drop-path, final norm.
 * Parameter names are DINOv2's state_dict keys (block_chunks = 0). */
#include "nn/nn.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

int vit_config(const char *arch, int patch, int img_size, ViTConfig *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    if (!strcmp(arch, "vit_tiny")) { cfg->embed_dim = 192; cfg->depth = 12; cfg->heads = 3; }
    else if (!strcmp(arch, "vit_small")) { cfg->embed_dim = 384; cfg->depth = 12; cfg->heads = 6; }
    else if (!strcmp(arch, "vit_base")) { cfg->embed_dim = 768; cfg->depth = 12; cfg->heads = 12; }
    else if (!strcmp(arch, "vit_large")) { cfg->embed_dim = 1024; cfg->depth = 24; cfg->heads = 16; }
    else return 1;
    cfg->patch = patch;
    cfg->img_size = img_size;
    cfg->in_chans = 3;
    cfg->mlp_ratio = 4.0f;
    cfg->layerscale = 1e-5f;
    cfg->ln_eps = 1e-6f;
    cfg->interpolate_offset = 0.1f;
    return 0;
}

void vit_declare(ViT *m, const ViTConfig *cfg, ParamStore *ps, const char *prefix) {
    memset(m, 0, sizeof(*m));
    m->cfg = *cfg;
    const size_t C = (size_t)cfg->embed_dim;
    const int M = cfg->img_size / cfg->patch;
    const int hidden = (int)(cfg->embed_dim * cfg->mlp_ratio);
    char k[160];
    m->cls_token = param_(ps, nn_join(k, sizeof k, prefix, "cls_token"), 1, 1, C);
    m->pos_embed = param_(ps, nn_join(k, sizeof k, prefix, "pos_embed"), 1, (size_t)(1 + M * M), C);
    if (cfg->n_registers > 0)
        m->register_tokens = param_(ps, nn_join(k, sizeof k, prefix, "register_tokens"), 1, (size_t)cfg->n_registers, C);
    m->mask_token = param_(ps, nn_join(k, sizeof k, prefix, "mask_token"), 1, C);
    char pe[128];
    conv2d_declare(&m->patch_embed, ps, nn_join(pe, sizeof pe, prefix, "patch_embed"), "proj", cfg->in_chans,
                   cfg->embed_dim, cfg->patch, cfg->patch, 1, 1);
    m->patch_embed.pad = 0;   /* non-overlapping patches */
    m->blocks = calloc((size_t)cfg->depth, sizeof(ViTBlock));
    for (int i = 0; i < cfg->depth; i++) {
        ViTBlock *b = &m->blocks[i];
        char bp[128], sub[128];
        snprintf(sub, sizeof sub, "blocks.%d", i);
        nn_join(bp, sizeof bp, prefix, sub);
        layernorm_declare(&b->norm1, ps, bp, "norm1", cfg->embed_dim, cfg->ln_eps);
        linear_declare(&b->qkv, ps, bp, "attn.qkv", cfg->embed_dim, 3 * cfg->embed_dim, 1);
        linear_declare(&b->proj, ps, bp, "attn.proj", cfg->embed_dim, cfg->embed_dim, 1);
        if (cfg->layerscale > 0) b->ls1 = param_(ps, nn_join(k, sizeof k, bp, "ls1.gamma"), C);
        layernorm_declare(&b->norm2, ps, bp, "norm2", cfg->embed_dim, cfg->ln_eps);
        linear_declare(&b->fc1, ps, bp, "mlp.fc1", cfg->embed_dim, hidden, 1);
        linear_declare(&b->fc2, ps, bp, "mlp.fc2", hidden, cfg->embed_dim, 1);
        if (cfg->layerscale > 0) b->ls2 = param_(ps, nn_join(k, sizeof k, bp, "ls2.gamma"), C);
    }
    layernorm_declare(&m->norm, ps, prefix, "norm", cfg->embed_dim, cfg->ln_eps);
}

void vit_free(ViT *m) {
    free(m->blocks);
    m->blocks = NULL;
}

/* DINOv2 init_weights: pos_embed trunc_normal(0.02), cls/register tokens N(0, 1e-6), mask token 0,
 * Linear trunc_normal(0.02) with zero bias (timm init), LayerNorm (1, 0), LayerScale constant,
 * patch-embedding conv with PyTorch's default init. */
void vit_init(ViT *m, Rng *r) {
    init_trunc_normal(m->pos_embed, r, 0.02f);
    rng_fill_normal(r, m->cls_token->data, m->cls_token->numel, 0.0f, 1e-6f);
    if (m->register_tokens) rng_fill_normal(r, m->register_tokens->data, m->register_tokens->numel, 0.0f, 1e-6f);
    init_constant(m->mask_token, 0.0f);
    init_torch_default_conv(&m->patch_embed, r);
    for (int i = 0; i < m->cfg.depth; i++) {
        ViTBlock *b = &m->blocks[i];
        Linear *ls[4] = {&b->qkv, &b->proj, &b->fc1, &b->fc2};
        for (int j = 0; j < 4; j++) {
            init_trunc_normal(ls[j]->w, r, 0.02f);
            init_constant(ls[j]->b, 0.0f);
        }
        LayerNorm *ns[2] = {&b->norm1, &b->norm2};
        for (int j = 0; j < 2; j++) {
            init_constant(ns[j]->w, 1.0f);
            init_constant(ns[j]->b, 0.0f);
        }
        if (b->ls1) init_constant(b->ls1, m->cfg.layerscale);
        if (b->ls2) init_constant(b->ls2, m->cfg.layerscale);
    }
    init_constant(m->norm.w, 1.0f);
    init_constant(m->norm.b, 0.0f);
}

Tensor *vit_pos_embed(Ctx *c, const ViT *m, int gh, int gw) {
    const int M = m->cfg.img_size / m->cfg.patch;
    const size_t C = (size_t)m->cfg.embed_dim;
    if (gh == M && gw == M) return m->pos_embed;
    Tensor *cls_pos = op_slice(c, m->pos_embed, 1, 0, 1);                       /* (1, 1, C) */
    Tensor *grid = op_slice(c, m->pos_embed, 1, 1, (size_t)(1 + M * M));       /* (1, M*M, C) */
    grid = op_reshape_(c, grid, 1, (size_t)M, (size_t)M, C);
    grid = op_contiguous(c, op_permute(c, grid, (int[]){0, 3, 1, 2}));           /* (1, C, M, M) */
    Tensor *rs;
    if (m->cfg.interpolate_offset > 0) {
        double sh = ((double)gh + m->cfg.interpolate_offset) / M;
        double sw = ((double)gw + m->cfg.interpolate_offset) / M;
        rs = op_resize_bicubic_scale(c, grid, gh, gw, sh, sw);
    } else {
        rs = op_resize_bicubic(c, grid, gh, gw);
    }
    rs = op_contiguous(c, op_permute(c, rs, (int[]){0, 2, 3, 1}));               /* (1, gh, gw, C) */
    rs = op_reshape_(c, rs, 1, (size_t)(gh * gw), C);
    Tensor *parts[2] = {cls_pos, rs};
    return op_concat(c, parts, 2, 1);                                            /* (1, 1+gh*gw, C) */
}

static Tensor *vit_block_forward(Ctx *c, const ViTBlock *b, Tensor *x, int heads, float drop_path) {
    /* x: (B, T, C) */
    Tensor *h = layernorm_forward(c, &b->norm1, x);
    h = linear_forward(c, &b->qkv, h);           /* (B, T, 3C) */
    h = op_attention(c, h, heads);               /* (B, T, C) */
    h = linear_forward(c, &b->proj, h);
    if (b->ls1) h = op_mul(c, h, b->ls1);
    if (drop_path > 0) h = op_drop_path(c, h, drop_path);
    x = op_add(c, x, h);
    h = layernorm_forward(c, &b->norm2, x);
    h = op_gelu(c, linear_forward(c, &b->fc1, h));  /* (B, T, 4C) */
    h = linear_forward(c, &b->fc2, h);
    if (b->ls2) h = op_mul(c, h, b->ls2);
    if (drop_path > 0) h = op_drop_path(c, h, drop_path);
    return op_add(c, x, h);
}

/* op_checkpoint segment: one block (the argument lives in the step arena until backward) */
typedef struct BlockArg {
    const ViTBlock *b;
    int heads;
    float drop_path;
} BlockArg;

static Tensor *vit_block_segment(Ctx *c, Tensor *x, const void *arg) {
    const BlockArg *a = arg;
    return vit_block_forward(c, a->b, x, a->heads, a->drop_path);
}

ViTOut vit_forward(Ctx *c, const ViT *m, Tensor *x, const uint8_t *masks) {
    const ViTConfig *cfg = &m->cfg;
    char b1[64];
    if (x->ndim != 4 || x->shape[1] != (size_t)cfg->in_chans || x->shape[2] % (size_t)cfg->patch ||
        x->shape[3] % (size_t)cfg->patch)
        ctx_fail(c, "vit_forward: input %s is not (B, %d, H, W) with H, W multiples of %d",
                 tensor_shape_str(x, b1, sizeof b1), cfg->in_chans, cfg->patch);
    const size_t B = x->shape[0], C = (size_t)cfg->embed_dim;
    const int gh = (int)x->shape[2] / cfg->patch, gw = (int)x->shape[3] / cfg->patch;
    const size_t N = (size_t)gh * (size_t)gw;

    Tensor *t = conv2d_forward(c, &m->patch_embed, x);             /* (B, C, gh, gw) */
    t = op_reshape_(c, t, B, C, N);
    t = op_transpose(c, t, 1, 2);                                   /* (B, N, C) strided view */
    if (masks) {
        /* where(mask, mask_token, x) as keep*x + (1-keep)*token: exact for 0/1 weights */
        Tensor *keep = tensor_new_(c, B, N, 1);
        Tensor *drop = tensor_new_(c, B, N, 1);
        for (size_t i = 0; i < B * N; i++) {
            keep->data[i] = masks[i] ? 0.0f : 1.0f;
            drop->data[i] = masks[i] ? 1.0f : 0.0f;
        }
        t = op_add(c, op_mul(c, t, keep), op_mul(c, drop, m->mask_token));
    }
    Tensor *cls = op_add(c, tensor_zeros_(c, B, 1, C), m->cls_token);   /* expand to (B, 1, C) */
    Tensor *parts[3] = {cls, t, NULL};
    t = op_concat(c, parts, 2, 1);                                  /* (B, 1+N, C) */
    t = op_add(c, t, vit_pos_embed(c, m, gh, gw));
    if (m->register_tokens) {
        const size_t R = (size_t)cfg->n_registers;
        Tensor *reg = op_add(c, tensor_zeros_(c, B, R, C), m->register_tokens);
        Tensor *p3[3] = {op_slice(c, t, 1, 0, 1), reg, op_slice(c, t, 1, 1, 1 + N)};
        t = op_concat(c, p3, 3, 1);                                 /* (B, 1+R+N, C) */
    }
    for (int i = 0; i < cfg->depth; i++) {
        if (c->grad_enabled && cfg->grad_checkpointing) {
            /* keep the block's input only; its activations are recomputed in backward */
            BlockArg *a = arena_alloc(&c->step, sizeof *a);
            *a = (BlockArg){&m->blocks[i], cfg->heads, cfg->drop_path};
            t = op_checkpoint(c, vit_block_segment, t, a);
            continue;
        }
        if (c->grad_enabled) {
            t = vit_block_forward(c, &m->blocks[i], t, cfg->heads, cfg->drop_path);
            continue;
        }
        /* no grad (inference, the EMA teacher): nothing is recorded, so a block's intermediates
         * are dead once its output exists; copy the output out and give the rest back */
        Tensor *next = tensor_new(c, t->ndim, t->shape);        /* (B, T, C) */
        ArenaMark mk = arena_mark(&c->step);
        tensor_copy_to(vit_block_forward(c, &m->blocks[i], t, cfg->heads, cfg->drop_path), next->data);
        arena_release(&c->step, mk);
        t = next;
    }
    t = layernorm_forward(c, &m->norm, t);

    const size_t R = (size_t)cfg->n_registers, T = 1 + R + N;
    ViTOut o;
    o.gh = gh;
    o.gw = gw;
    o.cls = op_reshape_(c, op_slice(c, t, 1, 0, 1), B, C);
    o.patch = op_contiguous(c, op_slice(c, t, 1, 1 + R, T));       /* (B, N, C) */
    o.pooled = op_mean(c, o.patch, 1, 0);                           /* (B, C) */
    return o;
}

/* DINOv2 get_params_groups_with_decay: no weight decay for biases, anything named *norm* and
 * LayerScale gammas; layer-wise LR decay by block index; a separate patch-embedding LR factor. */
void vit_set_param_groups(ParamStore *ps, const char *prefix, float patch_embed_lr_mult, float layer_decay,
                          int depth) {
    size_t plen = strlen(prefix);
    for (size_t i = 0; i < ps->n; i++) {
        Param *p = &ps->p[i];
        if (p->kind != PARAM_TRAINABLE || strncmp(p->name, prefix, plen) != 0) continue;
        const char *name = p->name;
        size_t len = strlen(name);
        int layer_id = depth + 1;
        if (strstr(name, "pos_embed") || strstr(name, "patch_embed") || strstr(name, "mask_token") ||
            strstr(name, "cls_token") || strstr(name, "register_tokens"))
            layer_id = 0;
        else if (strstr(name, "blocks.")) layer_id = atoi(strstr(name, "blocks.") + 7) + 1;
        p->lr_mult = powf(layer_decay, (float)(depth + 1 - layer_id));
        p->wd_mult = 1.0f;
        if ((len >= 5 && !strcmp(name + len - 5, ".bias")) || strstr(name, "norm") || strstr(name, "gamma"))
            p->wd_mult = 0.0f;
        if (strstr(name, "patch_embed")) p->lr_mult *= patch_embed_lr_mult;
    }
}
