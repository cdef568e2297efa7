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
    int grad_checkpointing;   /* training: recompute each block in backward (op_checkpoint) */
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


/* ------------------------------------------------------------------------------------------ */
/* Dense and multimodal heads on a frozen backbone (benchmark part 2, recipe.md §3.3):
 * the UNet / TransUNet-cup segmentation decoder (nn/unet.c), Faster R-CNN + FPN (nn/detect.c) and
 * the ViLT-style fusion transformer for VQA (nn/fusion.c).  Each head reads what the backbone
 * produced through BackboneMaps and declares its own parameters (PyTorch-like names under a
 * prefix) in the caller's ParamStore. */

enum { BACKBONE_CNN = 0, BACKBONE_VIT = 1 };

/* The backbone's shapes, known before any forward pass (for declaring heads). */
typedef struct BackboneDims {
    int kind;                /* BACKBONE_CNN / BACKBONE_VIT */
    int stage_ch[8];         /* CNN: channels of the stem and the 7 stage outputs */
    int stage_stride[8];     /* CNN: their strides (2, 2, 4, 8, 16, 16, 32, 32 for lukemelas) */
    int embed_dim, patch;    /* ViT */
} BackboneDims;

/* What one backbone forward hands to a head. */
typedef struct BackboneMaps {
    int kind;
    Tensor *stages[8];       /* CNN: EffNetOut.stages, (B, stage_ch[s], H_s, W_s) */
    Tensor *patch;           /* ViT: (B, embed_dim, gh, gw) patch-token map */
    int in_h, in_w;          /* the input image size */
} BackboneMaps;

void backbone_dims_effnet(const EffNet *m, BackboneDims *d);
void backbone_dims_vit(const ViT *m, BackboneDims *d);
BackboneMaps backbone_maps_effnet(const EffNetOut *o, int in_h, int in_w);
/* ViTOut.patch (B, N, C) -> (B, C, gh, gw) */
BackboneMaps backbone_maps_vit(Ctx *c, const ViTOut *o, int in_h, int in_w);

/* (conv3x3 no bias - BatchNorm - ReLU), the building block of both decoders */
typedef struct ConvBnRelu {
    Conv2d conv;
    BatchNorm2d bn;
} ConvBnRelu;

typedef struct SegBlock {    /* (conv3x3-BN-ReLU) x 2: in -> mid -> out */
    ConvBnRelu c1, c2;
    int in, mid, out;
    int skip;                /* CNN: stage index concatenated before the block, -1 none */
} SegBlock;

#define SEG_MAX_BLOCKS 9
/* CNN (UNet as the paper's B5 decoder, recipe.md §3.3; the plan follows the encoder's channels
 * c0..c7 so it scales to any variant): d8 (c7 -> c7/2 -> c7) on maxpool2(enc7), then for
 * k = 7..1: bilinear upsample to enc_k's size, concat enc_k, block (out_{k+1} + c_k -> c_{k-1}/2
 * -> c_{k-1}); final 1x1 conv c0 -> 1, bilinear to the input size.  B5 gives exactly the paper's
 * (512,256,512) (1024,152,304) ... (48,24,48).
 * ViT (TransUNet DecoderCup): conv3x3-BN-ReLU C -> 512, then 4 x (upsample x2, block) with
 * out 256, 128, 64, 16 (mid = out), conv3x3 16 -> 1, bilinear to the input size.
 * `width` scales every decoder channel count (1 = the paper's plan). */
typedef struct SegDecoder {
    int kind;
    int n_blocks;
    SegBlock blocks[SEG_MAX_BLOCKS];   /* CNN: d8, d7, ..., d1; ViT: the 4 cup blocks */
    ConvBnRelu more;                   /* ViT: conv_more */
    Conv2d head;                       /* -> 1 channel (bias) */
} SegDecoder;

void seg_decoder_declare(SegDecoder *d, const BackboneDims *bd, float width, ParamStore *ps, const char *prefix);
void seg_decoder_init(SegDecoder *d, Rng *r);       /* PyTorch default conv init, BN 1/0 */
/* logits (B, 1, in_h, in_w); BN uses batch statistics when c->training */
Tensor *seg_decoder_forward(Ctx *c, const SegDecoder *d, const BackboneMaps *f);

/* ---- detection: Faster R-CNN + FPN as torchvision 0.14 (fasterrcnn_resnet50_fpn's heads) ---- */

/* Boxes are (x0, y0, x1, y1) floats in input pixels, rows of 4. */
/* iou (na, nb), torchvision box_iou: area = (x1-x0)*(y1-y0), inter / union */
void box_iou_matrix(const float *a, size_t na, const float *b, size_t nb, float *iou);
/* torchvision nms: indices of kept boxes by decreasing score (ties: lower index first); a box is
 * suppressed by a kept one when IoU > thresh.  keep: n entries.  Returns the count. */
size_t box_nms(const float *boxes, const float *scores, size_t n, float thresh, int32_t *keep);
/* batched_nms: NMS within each group (level or class) independently, merged by decreasing score */
size_t box_batched_nms(const float *boxes, const float *scores, const int32_t *group, size_t n, float thresh,
                       int32_t *keep);
/* torchvision BoxCoder(weights): encode gt boxes relative to ref boxes -> deltas (dx, dy, dw, dh);
 * decode deltas on ref boxes (dw, dh clamped at log(1000/16)) -> boxes.  n rows each. */
void box_encode(const float w[4], const float *gt, const float *ref, size_t n, float *deltas);
void box_decode(const float w[4], const float *deltas, const float *ref, size_t n, float *boxes);
void box_clip(float *boxes, size_t n, int h, int w);
/* torchvision AnchorGenerator for one level: cell anchors round(+-(w, h)/2) with w = size /
 * sqrt(ratio), h = size * sqrt(ratio), ratio-major, shifted by (x, y) * stride over the grid
 * (row-major cells, anchors innermost).  out: (grid_h * grid_w * n_sizes * n_ratios, 4). */
size_t anchors_grid(const float *sizes, int n_sizes, const float *ratios, int n_ratios, int grid_h, int grid_w,
                    int stride_h, int stride_w, float *out);
/* torchvision Matcher on iou (G, P): matches[p] = best gt, or -1 below `low`, -2 in [low, high);
 * allow_low_quality restores each gt's best-IoU predictions to their best gt. */
enum { MATCH_BELOW = -1, MATCH_BETWEEN = -2 };
void box_match(const float *iou, size_t G, size_t P, float high, float low, int allow_low_quality, int32_t *matches);
/* BalancedPositiveNegativeSampler: labels >= 1 positive, 0 negative, < 0 ignored; draws
 * min(batch * pos_frac, #pos) positives and fills up to `batch` with negatives (random, seeded).
 * pos/neg get the chosen indices; returns #pos + #neg. */
size_t sample_pos_neg(const int32_t *labels, size_t n, int batch, float pos_frac, Rng *r, int32_t *pos,
                      size_t *n_pos, int32_t *neg, size_t *n_neg);

#define DET_MAX_ANCHOR 8
typedef struct DetConfig {
    int fpn_ch;                    /* 256 */
    int train_fpn;                 /* 0: FPN (and the ViT projection) frozen at random init, as the
                                      paper's lp runs (quirk Q5); 1: trained with the heads */
    int n_sizes, n_ratios;
    float sizes[DET_MAX_ANCHOR];   /* 32, 64, 128 on every level (the paper's config) */
    float ratios[DET_MAX_ANCHOR];  /* 0.5, 1, 2 */
    float rpn_fg_iou, rpn_bg_iou;  /* 0.7, 0.3 */
    int rpn_batch;                 /* anchors sampled per image: 256 */
    float rpn_pos_frac;            /* 0.5 */
    int rpn_pre_nms_train, rpn_post_nms_train;   /* 2000, 2000 (pre: per level, post: per image) */
    int rpn_pre_nms_test, rpn_post_nms_test;     /* 1000, 1000 */
    float rpn_nms;                 /* 0.7 */
    float box_fg_iou, box_bg_iou;  /* 0.5, 0.5 */
    int box_batch;                 /* RoIs sampled per image: 512 */
    float box_pos_frac;            /* 0.25 */
    float box_score_thresh;        /* 0.05 */
    float box_nms;                 /* 0.5 */
    int box_detections;            /* 100 per image */
    int roi_size, sampling_ratio;  /* 7, 2 */
    int rep_size;                  /* TwoMLPHead width: 1024 */
    int n_classes;                 /* 2: background, lesion */
} DetConfig;

DetConfig det_config_default(void);

typedef struct FasterRCNN {
    DetConfig cfg;
    int kind;                  /* BACKBONE_CNN / BACKBONE_VIT */
    int tap_stage[4];          /* CNN: stage feeding FPN level 0..3 (last stage of stride 4..32) */
    Conv2d vit_proj;           /* ViT: 1x1 embed_dim -> fpn_ch */
    Conv2d fpn_inner[4], fpn_layer[4];    /* lateral 1x1, output 3x3 (bias) */
    Conv2d rpn_conv, rpn_cls, rpn_bbox;   /* 3x3 + ReLU, 1x1 -> A, 1x1 -> 4A */
    Linear fc6, fc7, cls_score, bbox_pred;
    int A;                     /* anchors per location */
} FasterRCNN;

/* names: fpn.inner_blocks.i / fpn.layer_blocks.i / fpn.vit_proj (frozen unless train_fpn),
 * rpn.head.conv / cls_logits / bbox_pred, roi_heads.box_head.fc6 / fc7,
 * roi_heads.box_predictor.cls_score / bbox_pred */
void det_declare(FasterRCNN *m, const DetConfig *cfg, const BackboneDims *bd, ParamStore *ps, const char *prefix);
/* FPN kaiming_uniform(a=1) / bias 0; RPN normal(0.01) / 0; box head nn.Linear default */
void det_init(FasterRCNN *m, Rng *r);

/* FPN levels: strides 4, 8, 16, 32 and the max-pooled 64, (B, fpn_ch, H_l, W_l) */
typedef struct DetFeatures {
    Tensor *lv[5];
    int in_h, in_w;
} DetFeatures;
DetFeatures det_fpn_forward(Ctx *c, const FasterRCNN *m, const BackboneMaps *f);

typedef struct DetTarget {
    const float *boxes;        /* (n, 4) ground truth, input pixels */
    int n;
} DetTarget;

typedef struct DetLosses {
    Tensor *rpn_objectness, *rpn_box, *classifier, *box_reg;   /* (1) each */
    Tensor *total;                                              /* their sum */
    int n_rpn_pos, n_roi_pos;                                   /* sampled positives (whole batch) */
} DetLosses;

/* Training step losses (torchvision's four, summed in total); rng draws the samplers. */
DetLosses det_forward_train(Ctx *c, const FasterRCNN *m, const DetFeatures *ft, const DetTarget *tg, Rng *rng);

typedef struct Detections {
    int n;
    float *boxes;              /* (n, 4) */
    float *scores;             /* (n) lesion probability, decreasing */
} Detections;
/* Inference (no gradient): RPN proposals, box head, per-class decode, score > box_score_thresh,
 * NMS box_nms, top box_detections.  out (B): arrays in the step arena. */
void det_detect(Ctx *c, const FasterRCNN *m, const DetFeatures *ft, Detections *out);

/* ---- VQA: ViLT-style fusion transformer, trained from scratch ---- */

#define FUSION_MAX_DEPTH 12
typedef struct FusionConfig {
    int dim, depth, heads;     /* transformer width / blocks / heads */
    float mlp_ratio;           /* 4 */
    int fuse_ch;               /* 256: width of the multi-scale fusion and the adapter */
    int vocab;                 /* word ids 0..vocab-1 (0 = [PAD], 1 = [UNK]) */
    int max_words;             /* question tokens kept (ViLT: 40) */
    int img_tokens;            /* image tokens (grid cells) the position embedding covers */
    int n_answers;
    float ln_eps;              /* 1e-6 */
} FusionConfig;

typedef struct FusionModel {
    FusionConfig cfg;
    int kind;
    int n_fuse, fuse_stage[4]; /* CNN: stages enc3, enc4, enc6, enc7 resized to enc6's grid */
    int img_in;                /* channels of one image token before the adapter */
    Linear fuse;               /* CNN: concat -> fuse_ch (a 1x1 conv on the grid) */
    Linear adapt1, adapt2;     /* 1x1 conv -> fuse_ch, GELU, 1x1 conv -> dim */
    Tensor *word_embed;        /* (vocab, dim) */
    Tensor *text_pos;          /* (1 + max_words, dim): [CLS] and the words */
    Tensor *img_pos;           /* (img_tokens, dim) */
    Tensor *type_embed;        /* (2, dim): text, image */
    Tensor *cls_token;         /* (1, dim) */
    LayerNorm text_norm;
    ViTBlock blocks[FUSION_MAX_DEPTH];
    LayerNorm norm;
    Linear head;               /* dim -> n_answers, on the final [CLS] */
} FusionModel;

/* img_tokens is filled in from the backbone and the input size when 0 */
void fusion_declare(FusionModel *m, FusionConfig *cfg, const BackboneDims *bd, int in_h, int in_w, ParamStore *ps,
                    const char *prefix);
/* transformer and embeddings ViT-style (trunc_normal 0.02, LN 1/0); fusion and adapter 1x1 convs
 * PyTorch's Conv2d default */
void fusion_init(FusionModel *m, Rng *r);
/* Parameter-free part of the image path: (B, N, img_in) tokens from the backbone maps (CNN: the
 * fused stages bilinearly resized to enc6's grid and concatenated; ViT: the patch tokens).  A
 * frozen backbone's tokens can be computed once per image and cached. */
Tensor *fusion_image_tokens(Ctx *c, const FusionModel *m, const BackboneMaps *f);
/* ids (B, L) word ids (L <= max_words, [PAD] = 0 fills short questions), img (B, N, img_in) ->
 * logits (B, n_answers) */
Tensor *fusion_forward(Ctx *c, const FusionModel *m, const int32_t *ids, int L, Tensor *img);

#endif
