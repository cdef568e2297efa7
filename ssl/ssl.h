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

#endif
