/*
 * distill.h — stage 2: the EfficientNet student trained with supervised heads plus relational
 * knowledge distillation from the stage-1 teacher (recipe.md §2), and a frozen-feature probe.
 *
 * ---- losses (distill/losses.c), fused forward + backward kernels recorded on the tape ----
 * Notation: f (B, D) student pooled features, t (B, Dt) teacher features, ^ = L2-normalised
 * (F.normalize, eps 1e-12), softmax / log_softmax row-wise, B = the (global) batch.
 *   rkd_kl_loss         the released "KL" term:  G_t = t^ t^T, G_s = f^ f^T (temperature 1),
 *                       L = F.kl_div(log_softmax(G_t), softmax(G_s), 'batchmean')
 *                         = (1/B) sum_i KL(softmax(G_s)_i || softmax(G_t)_i).
 *                       Note the direction: the *student* distribution is kl_div's target
 *                       argument.  Gradient flows into f only (teacher features are constants).
 *   relation_ce_loss    the "contrastive" relation term  L = -(1/B) sum_ij T_ij P_ij with
 *                       P = log_softmax(f f^T / tau).  Two published targets:
 *                         released (2025-12-24): T = softmax(f_low f_low^T / tau) from the
 *                           second forward pass, no normalisation and NO stop-gradient, so the
 *                           gradient reaches both f and f_low;
 *                         label-aware (commit c23978e): T a constant from
 *                           relation_label_targets().
 *   relation_label_targets  T = mix * softmax(g g^T / tau) + (1 - mix) * mean_s Y_s, with
 *                       Y_s[i, j] = 1[y_si = y_sj] / sum_j 1[y_si = y_sj] for each label set s
 *                       (mix 0.5 and s in {BI-RADS, density} in the published variant).
 *                       Missing labels (-1): a sample with a missing label s neither matches
 *                       nor is matched under s; row i averages only the sets where y_si is
 *                       known, and a row with no known label is the teacher softmax alone.
 *   feature_align_loss  beyond the paper: projector output p (B, Dt) against t:
 *                       cosine  L = mean_i (1 - p^_i . t^_i);  mse  L = mean((p - t)^2).
 * Supervised heads use the engine's loss_cross_entropy (rows with label -1 ignored).
 *
 * ---- the trainer (distill/train.c) ----
 * Student: lukemelas EfficientNet (nn.h) without _fc, a Linear head per supervised task on the
 * global-average-pooled feature (optional dropout before the heads), an optional projector
 * for feature alignment.  Teacher signal: rows of a `versa extract` file (gap | cls | concat =
 * cls + dino_bottleneck + ibot_bottleneck, the released "1408-d con" feature for ViT-B), or
 * the stage-1 teacher run online in no-grad eval mode (teacher.source: online).  One step:
 *   pass 1: (heads_1, f) = student(x);  pass 2 (released contrastive only): (heads_2, f_low) =
 *   student(x_low), where x_low = x itself (the released quirk Q3: both passes see the same
 *   image and differ only by dropout / drop-connect / BN) or, with loss.second_view: augmented,
 *   a random resized crop + flip of x;
 *   L = w_con * L_con(f, f_low | T) + w_kd * L_KL(f, t) + w_sup * sum_h w_h CE_h(heads_last)
 *     + w_align * L_align(projector(f), t)
 *   where heads_last are the outputs of the last pass (the released code's CE uses pass 2).
 *
 * Checkpoint <train.output_dir>/checkpoint.h5 holds the student only, with Adam moments, the
 * RNG and the config.  Backbone tensors are at the root under their lukemelas names
 * (`_conv_stem.weight`, `_blocks.0._depthwise_conv.weight`, ..., `_bn1.running_var`), heads
 * under `heads.<name>.weight|bias`, the projector under `projector.weight|bias`.  In PyTorch:
 *     sd = {k: torch.as_tensor(np.asarray(f[k][()])) for k in f if isinstance(f[k], h5py.Dataset)
 *           and not k.startswith(("heads.", "projector."))}
 *     model = EfficientNet.from_name("efficientnet-b5"); del model._fc   # or Mammo-CLIP's
 *     model.load_state_dict(sd, strict=True)                              # efficientnet_custom
 *
 * Data parallelism (mpirun -np R): each rank loads its shard of the global batch.  The batch
 * relations are computed on the global batch, as the released DataParallel code computes them on
 * the gathered outputs: student features, teacher features and labels are all-gathered (rank
 * order = the order a 1-rank run with the global batch would see), every rank evaluates the same
 * B x B losses, and the gather's backward hands each rank its own rows (times R, because
 * dist_allreduce_grads averages).  Cross-entropies are weighted by each rank's share of the
 * labelled rows, so the averaged gradient is the global mean.
 * Batch norm: by default LOCAL batch statistics (each rank normalises with its own shard's
 * mean/variance, as DataParallel / DDP without SyncBatchNorm); with student.sync_bn: true the
 * statistics of the global batch (op_batchnorm_sync: per-channel moments all-gathered in the
 * forward, sum(dy) and sum(dy*xhat) in the backward), so R ranks x B/R reproduce 1 rank x B in
 * train mode too.  The running buffers are averaged over ranks after
 * every step (one all-reduce of the small buffer block), so all replicas and the checkpoint
 * written by rank 0 hold the same running statistics, and resume is exact for any world size.
 * (The batch relations themselves are global, see above; with a per-rank batch of 7 for the
 * paper's 28 on 4 ranks, BN sees 7 images, as the released DataParallel run did per GPU.)
 * With student.train_mode: false the student runs in eval mode (running statistics, no dropout
 * or drop-connect); then R ranks with batch B/R reproduce one rank with batch B up to float
 * summation order (tests/e2e/test_distill.c checks this).
 *
 * ---- the probe (distill/probe.c) ----
 * Frozen-feature evaluation of a student checkpoint (or a random initialisation): pooled features
 * of the train and test splits in eval mode, then per task a cosine k-NN classifier (votes
 * weighted by inverse train class frequency), retrieval top-1 (the nearest train image has the
 * query's label) and a class-balanced, L2-regularised multinomial logistic regression on
 * standardised features; balanced accuracy (over the classes present) on the test split.  Tasks are
 * label columns of the prepared file, or "findings:<class>" (binary).  `versa distill --probe`.
 */
#ifndef VERSA_DISTILL_H
#define VERSA_DISTILL_H

#include "engine/engine.h"
#include "engine/train.h"   /* TrainRunResult */
#include "nn/nn.h"

/* ------------------------------------------------------------------------------------------ */
/* losses */

/* f: (B, D) student features (grad); t: (B, Dt) teacher features, row-major constants. */
Tensor *rkd_kl_loss(Ctx *c, Tensor *f, const float *t, size_t Dt);
/* f: (B, D).  Target from f_low (B, D) (released variant: gradient into both) when f_low is
 * non-NULL, else the constant (B, B) `target` (rows need not sum to 1; copied). */
Tensor *relation_ce_loss(Ctx *c, Tensor *f, Tensor *f_low, const float *target, float temp);
/* g: (B, Dg) teacher features; labels: (B, n_sets) row-major, -1 = missing; T: (B, B) out. */
void relation_label_targets(const float *g, size_t B, size_t Dg, const int32_t *labels, int n_sets, float temp,
                            float mix, float *T);
enum { ALIGN_COSINE = 0, ALIGN_MSE = 1 };
/* p: (B, Dt) projected student features (grad); t: (B, Dt) constants. */
Tensor *feature_align_loss(Ctx *c, Tensor *p, const float *t, int mode);
/* rows of x (n, d) scaled to unit L2 norm (x / max(||x||, 1e-12)), in place */
void l2_normalize_rows(float *x, size_t n, size_t d);

/* ------------------------------------------------------------------------------------------ */
/* configuration */

#define DISTILL_MAX_HEADS 8

enum { TEACHER_FEATURES = 0, TEACHER_ONLINE = 1 };
enum { TFEAT_GAP = 0, TFEAT_CLS = 1, TFEAT_CONCAT = 2 };
enum { CON_RELEASED = 0, CON_LABEL_AWARE = 1 };
enum { OPT_SCHED_CONSTANT = 0, OPT_SCHED_COSINE = 1 };

/* One supervised head: a prepared label column (or "findings:<class>", binary) mapped to the
 * head's classes.  src_to_cls[k] = head class of source class k, -1 = ignored (dropped). */
typedef struct DistillHead {
    char name[48];           /* state-dict name: heads.<name>.weight */
    char label[64];          /* column in the prepared file */
    char classes[256];       /* the config's class map text ("" = identity) */
    float weight;
    int n_classes;
    int finding;             /* >= 0: binary head from /findings column `finding` */
    int col;                 /* label column (when finding < 0) */
    int32_t src_to_cls[64];
} DistillHead;

typedef struct DistillConfig {
    EffNetConfig net;
    char arch[32];
    int image_size;
    float head_dropout;
    int train_mode;                  /* 0: student in eval mode */
    int sync_bn;                     /* 1: synchronised batch norm over MPI ranks */
    const char *init_path;           /* "" or an HDF5 state dict with lukemelas names */
    int n_heads;
    DistillHead heads[DISTILL_MAX_HEADS];
    /* teacher */
    int teacher_source, teacher_feature;
    const char *features_path, *teacher_ckpt, *teacher_model;
    int teacher_size;
    /* losses */
    float w_kd, w_sup, w_con, w_align;
    int con_variant, con_normalize, second_view_aug, second_view_size;
    float con_temp, label_mix, second_view_scale[2];
    int align_mode;
    /* data */
    const char *prepared;
    int split;
    float rrc_scale[2], hflip, mean, std;
    int n_workers, skip_bad_images;
    /* loop */
    int batch;                       /* per rank */
    long epochs, max_steps;
    uint64_t seed;
    const char *out_dir;
    long ckpt_every, log_every;
    int nan_skip;
    /* optimiser */
    int adamw, schedule;
    double lr, wd, min_lr, clip, beta1, beta2, eps;
    long warmup;
    /* probe */
    const char *probe_ckpt, *probe_out;
    int probe_k, probe_train_split, probe_test_split, probe_batch;
    double probe_l2;
} DistillConfig;

extern const CfgSpec DISTILL_KEYS[];
extern const size_t DISTILL_N_KEYS;
int distill_config_from(const Config *cfg, DistillConfig *d, Err *e);

/* ------------------------------------------------------------------------------------------ */
/* model */

typedef struct DistillModel {
    EffNet backbone;                   /* lukemelas names at the root */
    int n_heads;
    Linear heads[DISTILL_MAX_HEADS];   /* heads.<name> */
    Linear projector;                  /* projector (feature alignment only) */
    int has_projector;
    float head_dropout;
} DistillModel;

typedef struct DistillOut {
    Tensor *feat;                      /* (B, feat_dim) pooled, pre-dropout */
    Tensor *logits[DISTILL_MAX_HEADS]; /* (B, n_classes) */
    Tensor *proj;                      /* (B, Dt) or NULL */
} DistillOut;

/* teacher_dim > 0 adds the projector (feature alignment) */
void distill_model_declare(DistillModel *m, const DistillConfig *d, ParamStore *ps, int teacher_dim);
void distill_model_init(DistillModel *m, Rng *r);
DistillOut distill_model_forward(Ctx *c, const DistillModel *m, Tensor *x);

/* ------------------------------------------------------------------------------------------ */
/* teacher features file (`versa extract` output), loaded whole: row i = prepared sample i */

typedef struct TeacherFeatures {
    float *x;        /* (n, dim) */
    size_t n, dim;
} TeacherFeatures;

/* which: TFEAT_*; n_expected: the prepared file's sample count (checked). */
int teacher_features_load(const char *path, int which, size_t n_expected, TeacherFeatures *tf, Err *e);
void teacher_features_free(TeacherFeatures *tf);

/* ------------------------------------------------------------------------------------------ */
/* runs */

/* config -> data -> teacher -> student -> loop -> checkpoints; `resume` continues exactly from
 * <train.output_dir>/checkpoint.h5. */
int distill_train(const Config *cfg, int resume, Ctx *c, TrainRunResult *res, Err *e);

#define PROBE_MAX_TASKS 8
typedef struct ProbeTask {
    char name[64];
    int n_classes;
    long n_train, n_test;              /* samples with a label */
    double knn_bacc, top1, logreg_bacc;
    double chance;                     /* balanced accuracy by chance: 1 / classes in the test set */
    double top1_chance;                /* top-1 of a random neighbour: sum_k p_train(k) p_test(k) */
} ProbeTask;

typedef struct ProbeResult {
    int n_tasks;
    ProbeTask task[PROBE_MAX_TASKS];
    double seconds;
} ProbeResult;

/* Frozen-feature probe of probe.checkpoint (a distill checkpoint; "" = random init from
 * student.* and train.seed) on probe.tasks; writes probe.output (JSON) when set. */
int distill_probe(const Config *cfg, Ctx *c, ProbeResult *r, Err *e);

#endif
