/*
 * nn.h — parameterised layers and whole models on top of the engine: linear, norms, conv + BN,
 * the DINOv2 Vision Transformer (teacher), the lukemelas EfficientNet B0–B7 (student), the
 * DINO/iBOT projection head and simple task heads.
 *
 * Every parameter is declared in a ParamStore under its PyTorch state_dict key (DINOv2 names for
 * the ViT, lukemelas EfficientNet-PyTorch names for the CNN), so an HDF5 checkpoint of a store
 * loads into the reference PyTorch module with load_state_dict(strict=True).
 *
 * Usage: X_declare(&m, &cfg, ps, "prefix") for every module, params_alloc(ps), X_init(&m, rng),
 * then X_forward(ctx, &m, ...) once per step.
 */
#ifndef VERSA_NN_H
#define VERSA_NN_H

#include "engine/engine.h"

/* ------------------------------------------------------------------------------------------ */
/* Layers */

typedef struct Linear {
    Tensor *w;   /* (out, in) */
    Tensor *b;   /* (out) or NULL */
    int in, out;
} Linear;

typedef struct LayerNorm {
    Tensor *w, *b;  /* (dim) */
    float eps;
} LayerNorm;

enum { PAD_SYMMETRIC = 0, PAD_SAME_STATIC = 1, PAD_SAME_DYNAMIC = 2 };

typedef struct Conv2d {
    Tensor *w;   /* (out, in/groups, k, k) */
    Tensor *b;   /* (out) or NULL */
    int in, out, k, stride, groups;
    int pad_mode;          /* PAD_SYMMETRIC: `pad` each side (torchvision); SAME: TF "SAME" */
    int pad;               /* PAD_SYMMETRIC padding, k/2 unless set */
    int static_h, static_w;/* PAD_SAME_STATIC: the input size the padding was computed for */
} Conv2d;

typedef struct BatchNorm2d {
    Tensor *w, *b;                       /* (C) affine */
    Tensor *running_mean, *running_var;  /* (C) buffers */
    Tensor *num_batches_tracked;         /* () buffer, kept for state_dict parity */
    float momentum, eps;                 /* PyTorch convention: weight of the new batch */
} BatchNorm2d;

/* `name` is joined to prefix with a dot: ("blocks.0", "norm1") -> "blocks.0.norm1.weight" */
void linear_declare(Linear *l, ParamStore *ps, const char *prefix, const char *name, int in, int out, int bias);
void layernorm_declare(LayerNorm *l, ParamStore *ps, const char *prefix, const char *name, int dim, float eps);
void conv2d_declare(Conv2d *l, ParamStore *ps, const char *prefix, const char *name, int in, int out, int k,
                    int stride, int groups, int bias);
void batchnorm_declare(BatchNorm2d *l, ParamStore *ps, const char *prefix, const char *name, int ch,
                       float momentum, float eps);

Tensor *linear_forward(Ctx *c, const Linear *l, Tensor *x);
Tensor *layernorm_forward(Ctx *c, const LayerNorm *l, Tensor *x);
Tensor *conv2d_forward(Ctx *c, const Conv2d *l, Tensor *x);
Tensor *batchnorm_forward(Ctx *c, const BatchNorm2d *l, Tensor *x);

/* Initialisers (after params_alloc) */
void init_trunc_normal(Tensor *t, Rng *r, float std);
void init_constant(Tensor *t, float v);
void init_uniform(Tensor *t, Rng *r, float bound);
void init_torch_default_linear(Linear *l, Rng *r);   /* PyTorch nn.Linear default */
void init_torch_default_conv(Conv2d *l, Rng *r);     /* PyTorch nn.Conv2d default */
void batchnorm_reset(BatchNorm2d *l);                /* w=1 b=0 mean=0 var=1 */

/* Name helper: prefix + "." + name (or name alone when prefix is empty) */
const char *nn_join(char *buf, size_t n, const char *prefix, const char *name);

/* ------------------------------------------------------------------------------------------ */
/* Vision Transformer, DINOv2 flavour */

typedef struct ViTConfig {
    int img_size;        /* size the position embedding is built for (224 in DINOv2) */
    int patch;           /* 14 or 16 */
    int in_chans;        /* 3 */
    int embed_dim, depth, heads;
    float mlp_ratio;     /* 4 */
    int n_registers;     /* 0 */
    float layerscale;    /* LayerScale init (1e-5); 0 disables LayerScale */
    float drop_path;     /* uniform over blocks, as DINOv2 (drop_path_uniform) */
    float ln_eps;        /* 1e-6 */
    float interpolate_offset; /* 0.1, as DINOv2: pos-embed scale factor (grid + offset) / M */
} ViTConfig;

/* "vit_tiny" (192/12/3), "vit_small" (384/12/6), "vit_base" (768/12/12), "vit_large" (1024/24/16);
 * returns 0 and fills cfg, or 1 for an unknown name */
int vit_config(const char *arch, int patch, int img_size, ViTConfig *cfg);

typedef struct ViTBlock {
    LayerNorm norm1, norm2;
    Linear qkv, proj, fc1, fc2;
    Tensor *ls1, *ls2;   /* (C) LayerScale gamma, NULL when disabled */
} ViTBlock;

typedef struct ViT {
    ViTConfig cfg;
    Conv2d patch_embed;
    Tensor *cls_token;       /* (1, 1, C) */
    Tensor *pos_embed;       /* (1, 1 + M*M, C) */
    Tensor *mask_token;      /* (1, C) */
    Tensor *register_tokens; /* (1, R, C) or NULL */
    ViTBlock *blocks;        /* depth */
    LayerNorm norm;
} ViT;

typedef struct ViTOut {
    Tensor *cls;     /* (B, C) final-norm CLS token */
    Tensor *patch;   /* (B, N, C) final-norm patch tokens, row-major grid gh x gw */
    Tensor *pooled;  /* (B, C) mean of `patch` (the paper's downstream feature) */
    int gh, gw;
} ViTOut;

void vit_declare(ViT *m, const ViTConfig *cfg, ParamStore *ps, const char *prefix);
void vit_init(ViT *m, Rng *r);
void vit_free(ViT *m);
/* x (B, in_chans, H, W) with H, W multiples of the patch; masks (B, N) 1 = replace the patch
 * token by mask_token (iBOT) or NULL. */
ViTOut vit_forward(Ctx *c, const ViT *m, Tensor *x, const uint8_t *masks);
/* Position embedding for a gh x gw grid, bicubic-interpolated as DINOv2 does: (1, 1+gh*gw, C) */
Tensor *vit_pos_embed(Ctx *c, const ViT *m, int gh, int gw);
/* Weight-decay groups as DINOv2: no decay for biases, norms, LayerScale, tokens, pos-embed */
void vit_set_param_groups(ParamStore *ps, const char *prefix, float patch_embed_lr_mult, float layer_decay,
                          int depth);

/* ------------------------------------------------------------------------------------------ */
/* EfficientNet, lukemelas EfficientNet-PyTorch structure and names */

typedef struct EffNetConfig {
    int variant;             /* 0..7 */
    float width, depth;      /* coefficients */
    int resolution;          /* native input size; also the static-SAME padding size */
    float dropout;           /* before the classifier */
    float drop_connect;      /* 0.2, scaled by block index / block count */
    float bn_momentum, bn_eps;   /* PyTorch convention: 0.01, 1e-3 */
    int pad_mode;            /* PAD_SAME_STATIC (lukemelas), PAD_SAME_DYNAMIC, PAD_SYMMETRIC */
    int static_size;         /* input size for static padding (default: resolution) */
    int in_chans;            /* 3 */
    int num_classes;         /* 0: no _fc (as Mammo-CLIP / VersaMammo) */
} EffNetConfig;

int effnet_config(const char *name, EffNetConfig *cfg);   /* "efficientnet-b0".."b7" or "b0".. */

typedef struct MBConv {
    int in, out, mid, k, stride, expand, se_ch;
    int has_skip;
    float drop_connect;
    Conv2d expand_conv; BatchNorm2d bn0;      /* when expand != 1 */
    Conv2d depthwise_conv; BatchNorm2d bn1;
    Conv2d se_reduce, se_expand;
    Conv2d project_conv; BatchNorm2d bn2;
} MBConv;

#define EFFNET_MAX_BLOCKS 64
typedef struct EffNet {
    EffNetConfig cfg;
    Conv2d conv_stem; BatchNorm2d bn0;
    MBConv blocks[EFFNET_MAX_BLOCKS];
    int n_blocks;
    int stage_end[7];        /* index one past the last block of each stage */
    Conv2d conv_head; BatchNorm2d bn1;
    Linear fc;               /* when num_classes > 0 */
    int feat_dim;            /* channels of the pooled feature (1280 * width, rounded) */
} EffNet;

typedef struct EffNetOut {
    Tensor *pooled;          /* (B, feat_dim) global-average-pooled head feature (pre-dropout) */
    Tensor *logits;          /* (B, num_classes) or NULL */
    Tensor *taps[5];         /* strides 2, 4, 8, 16, 32: last feature map at each stride */
    Tensor *stages[8];       /* stem + the 7 stage outputs */
} EffNetOut;

void effnet_declare(EffNet *m, const EffNetConfig *cfg, ParamStore *ps, const char *prefix);
void effnet_init(EffNet *m, Rng *r);
EffNetOut effnet_forward(Ctx *c, const EffNet *m, Tensor *x);

/* ------------------------------------------------------------------------------------------ */
/* Heads */

/* DINO / iBOT projection head: MLP (in -> hidden -> hidden -> bottleneck, GELU) -> L2 normalise
 * -> weight-normalised linear to K prototypes without bias (weight_g fixed at 1).
 * Names as DINOv2's DINOHead: mlp.0, mlp.2, mlp.4, last_layer.weight_g, last_layer.weight_v. */
typedef struct DinoHead {
    Linear l0, l1, l2;       /* mlp.0, mlp.2, mlp.4 */
    Tensor *weight_g;        /* (K, 1), frozen at 1 */
    Tensor *weight_v;        /* (K, bottleneck) */
    int in, hidden, bottleneck, K, nlayers;
} DinoHead;

void dino_head_declare(DinoHead *h, ParamStore *ps, const char *prefix, int in, int hidden, int bottleneck, int K,
                       int nlayers);
void dino_head_init(DinoHead *h, Rng *r);
/* Returns logits (N, K); *bottleneck_out (N, bottleneck), the normalised bottleneck, if non-NULL */
Tensor *dino_head_forward(Ctx *c, const DinoHead *h, Tensor *x, Tensor **bottleneck_out);

#endif
