/*
 * ssl.h — stage 1: DINOv2-style self-supervised training of the ViT teacher.
 *
 * Losses (ssl/losses.c), each a fused forward + backward kernel recorded on the tape:
 *   dino_loss   cross-entropy between teacher CLS targets and student CLS logits over all
 *               (student crop, teacher crop) pairs of different crops;
 *   ibot_loss   the same cross-entropy on masked patch tokens, weighted 1/n_masked per image;
 *   koleo_loss  Kozachenko-Leonenko entropy regulariser on L2-normalised CLS features.
 * Teacher targets (no gradient): softmax centering with an EMA center, or Sinkhorn-Knopp.
 */
#ifndef VERSA_SSL_H
#define VERSA_SSL_H

#include "engine/engine.h"
#include "engine/train.h"   /* TrainRunResult */

/* ---- teacher targets ---- */
/* out[n, k] = softmax((t[n, k] - center[k]) / temp) over k.  t, out: (N, K). */
void dino_softmax_center(const float *t, const float *center, size_t N, size_t K, float temp, float *out);
/* Column sums of t (N, K) into sum (K), in double; the trainer all-reduces them over ranks. */
void dino_batch_sum(const float *t, size_t N, size_t K, double *sum);
/* center = m * center + (1 - m) * sum / n_total  (DINOv2's delayed update, applied by the caller
 * after the targets of this step were computed). */
void dino_center_apply(float *center, const double *sum, size_t K, double n_total, float momentum);
/* Sinkhorn-Knopp targets (DINOv2): Q = exp(t / temp) normalised `iters` times so each
 * prototype gets 1/K of the mass and each of the `n_total` samples (all ranks) 1/n_total; rows
 * of out sum to 1.  Uses dist_allreduce_sum when c->world > 1.  t, out: (N, K). */
void sinkhorn_knopp(Ctx *c, const float *t, size_t N, size_t K, float temp, int iters, double n_total, float *out);

/* ---- collapse monitors (nats; ln K = uniform) ---- */
/* Mean entropy of the rows of probabilities p (N, K) into *row, entropy of their mean
 * distribution into *marginal.  Low *row with high *marginal is healthy; both at ln K is the
 * uniform collapse, both near 0 the one-prototype collapse.  Scratch from the step arena. */
void prob_entropy(Ctx *c, const float *p, size_t N, size_t K, double *row, double *marginal);
/* Mean entropy of softmax(s / temp) over the rows of logits s (N, K). */
double softmax_entropy(Ctx *c, const float *s, size_t N, size_t K, float temp);

/* ---- losses ---- */
/* s: (S * B, K) student logits, crop-major (crop v of image b is row v * B + b); the first
 * n_teacher_crops student crops are the global crops the teacher saw.  t: (T * B, K) teacher
 * probabilities, same order.  Returns sum over pairs (v, g), v != g, of mean_b CE(t_g, s_v),
 * divided by the number of pairs, as DINO/DINOv2 (n_loss_terms). */
Tensor *dino_loss(Ctx *c, Tensor *s, const float *t, int n_student_crops, int n_teacher_crops, float student_temp);
/* s, t: (M, K) masked-token logits and teacher probabilities; w: (M) weights (1 / n_masked of the
 * token's image).  Returns -sum_i w_i sum_k t_ik log_softmax(s_i / temp)_k / n_images. */
Tensor *ibot_loss(Ctx *c, Tensor *s, const float *t, const float *w, size_t n_images, float student_temp);
/* x: (B, D).  -mean_i log(||x^_i - x^_nn(i) + eps|| + eps), x^ = x / max(||x||, eps), eps = 1e-8,
 * nearest neighbour by the largest dot product (not differentiated), as DINOv2's KoLeoLoss. */
Tensor *koleo_loss(Ctx *c, Tensor *x);

/* ------------------------------------------------------------------------------------------ */
/* The pretraining run (ssl/pretrain.c) */

#include "nn/nn.h"

typedef struct SslConfig {
    ViTConfig vit;
    float dino_w, koleo_w, ibot_w, ibot_sample_p, ibot_ratio[2];
    int dino_k, dino_bottleneck, dino_hidden, dino_nlayers;
    int ibot_separate, ibot_k, ibot_bottleneck, ibot_hidden, ibot_nlayers;
    int batch;                    /* per rank */
    long epoch_len, epochs, total_iters, stop_iters;
    uint64_t seed;
    const char *out_dir;
    int n_workers, sinkhorn, nan_skip, skip_bad_images;
    long ckpt_every, log_every;
    float global_scale[2], local_scale[2];
    int n_local, global_size, local_size, blur_quirk;
    float jitter_p, brightness, contrast, gamma, solarize_p, blur_p[3];   /* augmentation strengths */
    double global_batch, base_lr, lr_override, min_lr;
    int lr_rule;                  /* 0 none, 1 sqrt_wrt_1024, 2 linear_wrt_256 */
    long warmup_epochs, freeze_last_epochs, ttemp_warmup_epochs;
    double wd, wd_end, clip, beta1, beta2, mom, mom_end, ttemp0, ttemp;
    float patch_embed_lr_mult, layerwise_decay;
} SslConfig;

extern const CfgSpec PRETRAIN_KEYS[];
extern const size_t PRETRAIN_N_KEYS;
int ssl_config_from(const Config *cfg, SslConfig *s, Err *e);

#include "data/data.h"
/* The multi-crop loader a config describes (crops, augmentation, iBOT masks; rank 0 of 1). */
LoaderConfig ssl_loader_config(const SslConfig *s);

/* Student and teacher have this shape; names: backbone.*, dino_head.*, ibot_head.* */
typedef struct SslModel {
    ViT backbone;
    DinoHead dino_head, ibot_head;
    int separate_ibot;
} SslModel;

void ssl_model_declare(SslModel *m, const SslConfig *s, ParamStore *ps);
void ssl_model_init(SslModel *m, Rng *r);
void ssl_model_free(SslModel *m);

typedef struct SslSchedules {
    double lr, wd, momentum, teacher_temp, last_layer_lr;
} SslSchedules;
SslSchedules ssl_schedules(const SslConfig *s, long it, int world);

typedef struct SslState {
    float *dino_center;   /* (K) */
    float *ibot_center;   /* (K of the iBOT head) */
} SslState;

typedef struct SslBatch {
    int B;
    float *global;        /* (2, B, C, G, G) */
    float *local;         /* (n_local, B, C, L, L) */
    uint8_t *masks;       /* (2B, N) or NULL */
} SslBatch;

typedef struct SslLosses {
    double total, dino, ibot, koleo, n_masked;
    /* collapse monitors of the DINO head, this rank's batch: mean entropy of the teacher targets'
     * rows, entropy of their batch mean, mean entropy of the student's softmax (all crops) */
    double t_entropy, t_marginal, s_entropy;
} SslLosses;

int ssl_forward_backward(Ctx *c, const SslConfig *s, SslModel *student, SslModel *teacher, SslState *st,
                         const SslBatch *b, double teacher_temp, SslLosses *out);

/* The whole run: config -> corpus -> loader -> models -> loop -> checkpoints.  With `resume`
 * continues from <train.output_dir>/checkpoint.h5 exactly. */
int ssl_pretrain(const Config *cfg, int resume, Ctx *c, TrainRunResult *res, Err *e);

/* A stage-1 model from a checkpoint: its config is read from the file; `which` is "teacher" or
 * "student".  The store is values-only (inference). */
int ssl_load_model(const char *ckpt, const char *which, SslConfig *s, SslModel *m, ParamStore *ps, Err *e);

/* `versa extract` (ssl/extract.c): features of every sample of a prepared file, to HDF5:
 * /cls, /gap (N, C), /dino_bottleneck, /ibot_bottleneck (N, bottleneck), /sample (N). */
typedef struct SslExtractOpts {
    const char *checkpoint, *which, *prepared, *out;
    int image_size;       /* 0: the global crop size of pretraining */
    int batch;
    int quiet;
} SslExtractOpts;
int ssl_extract(const SslExtractOpts *o, Ctx *c, Err *e);

#endif
