/* pretrain.c — stage 1: the DINOv2 meta-architecture (student and EMA teacher, each a ViT
 * backbone with a DINO head and an iBOT head) and its training loop.
 *
 * One step, as DINOv2's SSLMetaArch.forward_backward:
 *   teacher (no grad, eval): global crops -> CLS -> DINO head -> centered softmax (or
 *     Sinkhorn-Knopp) targets; masked patch tokens -> iBOT head -> targets
 *   student: global crops with iBOT masks and local crops -> CLS -> DINO head (all crops);
 *     masked patch tokens -> iBOT head
 *   loss = w_dino * dino_loss + w_koleo * sum over the 2 global chunks of koleo_loss(CLS)
 *        + w_ibot * ibot_loss
 *   backward, gradient all-reduce over ranks, per-module gradient clipping, AdamW with
 *   per-parameter LR/WD multipliers, EMA teacher update, center updates. */
#include "ssl/ssl.h"
#include "data/data.h"
#include "engine/train.h"
#include "nn/nn.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* config */

const CfgSpec PRETRAIN_KEYS[] = {
    {"student.arch", CFG_STR, "vit_tiny", "vit_tiny | vit_small | vit_base | vit_large"},
    {"student.patch_size", CFG_INT, "16", "patch size (14 in DINOv2 / VersaMammo)"},
    {"student.drop_path_rate", CFG_FLOAT, "0.0", "stochastic depth, uniform over blocks"},
    {"student.layerscale", CFG_FLOAT, "1e-5", "LayerScale init (0 disables LayerScale)"},
    {"student.num_register_tokens", CFG_INT, "0", "register tokens"},
    {"student.grad_checkpointing", CFG_BOOL, "false", "recompute each ViT block in backward: less memory per image, ~1/3 more compute"},
    {"dino.loss_weight", CFG_FLOAT, "1.0", "weight of the DINO CLS loss"},
    {"dino.head_n_prototypes", CFG_INT, "4096", "K of the DINO head (65536 / 131072 in the papers)"},
    {"dino.head_bottleneck_dim", CFG_INT, "256", "DINO head bottleneck (384 in VersaMammo)"},
    {"dino.head_hidden_dim", CFG_INT, "2048", "DINO head MLP width"},
    {"dino.head_nlayers", CFG_INT, "3", "DINO head MLP layers"},
    {"dino.koleo_loss_weight", CFG_FLOAT, "0.1", "weight of the KoLeo regulariser"},
    {"ibot.loss_weight", CFG_FLOAT, "1.0", "weight of the iBOT masked-patch loss"},
    {"ibot.mask_sample_probability", CFG_FLOAT, "0.5", "fraction of global crops that get masks"},
    {"ibot.mask_ratio_min_max", CFG_LIST, "[0.1, 0.5]", "range of masked-patch ratios"},
    {"ibot.separate_head", CFG_BOOL, "true", "iBOT head separate from the DINO head"},
    {"ibot.head_n_prototypes", CFG_INT, "4096", "K of the iBOT head"},
    {"ibot.head_bottleneck_dim", CFG_INT, "256", "iBOT head bottleneck"},
    {"ibot.head_hidden_dim", CFG_INT, "2048", "iBOT head MLP width"},
    {"ibot.head_nlayers", CFG_INT, "3", "iBOT head MLP layers"},
    {"train.batch_size_per_gpu", CFG_INT, "32", "images per rank per step"},
    {"train.OFFICIAL_EPOCH_LENGTH", CFG_INT, "1250", "iterations per 'epoch' (schedules count in these)"},
    {"train.seed", CFG_INT, "0", "seed of initialisation, crops and masks"},
    {"train.output_dir", CFG_STR, "runs/pretrain", "checkpoint.h5 and metrics.jsonl go here"},
    {"train.num_workers", CFG_INT, "2", "loader threads"},
    {"train.centering", CFG_STR, "centering", "teacher targets: centering | sinkhorn_knopp"},
    {"train.checkpoint_every", CFG_INT, "100", "iterations between checkpoints"},
    {"train.log_every", CFG_INT, "10", "iterations between progress lines"},
    {"train.max_iterations", CFG_INT, "0", "stop after this many iterations (0: epochs * epoch length)"},
    {"train.on_nan", CFG_STR, "stop", "non-finite loss: stop | skip (skip the batch and log it)"},
    {"data.on_bad_image", CFG_STR, "fail", "unreadable image: fail | skip"},
    {"data.sources", CFG_LIST, "[]", "prepared HDF5 files of the pretraining corpus"},
    {"data.weights", CFG_LIST, "", "per-source sampling weights (default 1 each)"},
    {"crops.global_crops_scale", CFG_LIST, "[0.32, 1.0]", "RandomResizedCrop scale of the 2 global crops"},
    {"crops.local_crops_number", CFG_INT, "8", "local crops per image"},
    {"crops.local_crops_scale", CFG_LIST, "[0.05, 0.32]", "RandomResizedCrop scale of local crops"},
    {"crops.global_crops_size", CFG_INT, "224", "global crop size (pixels)"},
    {"crops.local_crops_size", CFG_INT, "96", "local crop size (pixels)"},
    {"crops.blur_dinov2_quirk", CFG_BOOL, "false", "apply blur with 1 - p like upstream DINOv2 (VersaMammo quirk Q9)"},
    {"crops.color_jitter_p", CFG_FLOAT, "0.8", "probability of the brightness/contrast jitter"},
    {"crops.brightness", CFG_FLOAT, "0.4", "brightness jitter: factor ~ U(1 - b, 1 + b)"},
    {"crops.contrast", CFG_FLOAT, "0.4", "contrast jitter: factor ~ U(1 - c, 1 + c)"},
    {"crops.gamma", CFG_FLOAT, "0", "display-gamma jitter (not DINOv2): x^g, ln g ~ U(-gamma, gamma); 0 = off"},
    {"crops.blur_p", CFG_LIST, "[1.0, 0.1, 0.5]", "Gaussian blur probability: global crop 1, global crop 2, local crops"},
    {"crops.solarize_p", CFG_FLOAT, "0.2", "solarize probability (second global crop)"},
    {"optim.epochs", CFG_INT, "100", "epochs of OFFICIAL_EPOCH_LENGTH iterations"},
    {"optim.base_lr", CFG_FLOAT, "0.004", "learning rate before batch-size scaling"},
    {"optim.lr", CFG_FLOAT, NULL, "peak learning rate; overrides base_lr * scaling when set"},
    {"optim.scaling_rule", CFG_STR, "sqrt_wrt_1024", "sqrt_wrt_1024 | linear_wrt_256 | none"},
    {"optim.min_lr", CFG_FLOAT, "1e-6", "final learning rate of the cosine schedule"},
    {"optim.warmup_epochs", CFG_INT, "10", "linear LR warm-up"},
    {"optim.weight_decay", CFG_FLOAT, "0.04", "initial weight decay (cosine schedule)"},
    {"optim.weight_decay_end", CFG_FLOAT, "0.4", "final weight decay"},
    {"optim.clip_grad", CFG_FLOAT, "3.0", "clip each module's gradient norm (backbone, heads); 0 off"},
    {"optim.freeze_last_layer_epochs", CFG_INT, "1", "prototype layer LR 0 for this many epochs"},
    {"optim.patch_embed_lr_mult", CFG_FLOAT, "0.2", "LR multiplier of the patch embedding"},
    {"optim.layerwise_decay", CFG_FLOAT, "0.9", "layer-wise LR decay (1.0 off)"},
    {"optim.adamw_beta1", CFG_FLOAT, "0.9", "AdamW beta1"},
    {"optim.adamw_beta2", CFG_FLOAT, "0.999", "AdamW beta2"},
    {"teacher.momentum_teacher", CFG_FLOAT, "0.992", "EMA momentum at the start (cosine to final)"},
    {"teacher.final_momentum_teacher", CFG_FLOAT, "1.0", "EMA momentum at the end"},
    {"teacher.warmup_teacher_temp", CFG_FLOAT, "0.04", "teacher temperature at the start"},
    {"teacher.teacher_temp", CFG_FLOAT, "0.07", "teacher temperature after warm-up"},
    {"teacher.warmup_teacher_temp_epochs", CFG_INT, "30", "linear teacher-temperature warm-up"},
};
const size_t PRETRAIN_N_KEYS = sizeof PRETRAIN_KEYS / sizeof PRETRAIN_KEYS[0];

static int get_pair(const Config *cfg, const char *key, float out[2], Err *e) {
    double v[2];
    if (cfg_get_floats(cfg, key, v, 2, e) != 2) return e->msg[0] ? 1 : err_set(e, "%s: expected two numbers", key);
    out[0] = (float)v[0];
    out[1] = (float)v[1];
    return 0;
}

int ssl_config_from(const Config *cfg, SslConfig *s, Err *e) {
    memset(s, 0, sizeof(*s));
    e->msg[0] = 0;
    const char *arch = cfg_get_str(cfg, "student.arch", "vit_tiny");
    int patch = (int)cfg_get_int(cfg, "student.patch_size", 16, e);
    int gsize = (int)cfg_get_int(cfg, "crops.global_crops_size", 224, e);
    if (vit_config(arch, patch, gsize, &s->vit)) return err_set(e, "student.arch: unknown architecture '%s'", arch);
    s->vit.drop_path = (float)cfg_get_float(cfg, "student.drop_path_rate", 0.0, e);
    s->vit.layerscale = (float)cfg_get_float(cfg, "student.layerscale", 1e-5, e);
    s->vit.n_registers = (int)cfg_get_int(cfg, "student.num_register_tokens", 0, e);
    s->vit.grad_checkpointing = cfg_get_bool(cfg, "student.grad_checkpointing", 0, e);
    s->dino_w = (float)cfg_get_float(cfg, "dino.loss_weight", 1.0, e);
    s->dino_k = (int)cfg_get_int(cfg, "dino.head_n_prototypes", 4096, e);
    s->dino_bottleneck = (int)cfg_get_int(cfg, "dino.head_bottleneck_dim", 256, e);
    s->dino_hidden = (int)cfg_get_int(cfg, "dino.head_hidden_dim", 2048, e);
    s->dino_nlayers = (int)cfg_get_int(cfg, "dino.head_nlayers", 3, e);
    s->koleo_w = (float)cfg_get_float(cfg, "dino.koleo_loss_weight", 0.1, e);
    s->ibot_w = (float)cfg_get_float(cfg, "ibot.loss_weight", 1.0, e);
    s->ibot_sample_p = (float)cfg_get_float(cfg, "ibot.mask_sample_probability", 0.5, e);
    if (get_pair(cfg, "ibot.mask_ratio_min_max", s->ibot_ratio, e)) return 1;
    s->ibot_separate = cfg_get_bool(cfg, "ibot.separate_head", 1, e);
    s->ibot_k = (int)cfg_get_int(cfg, "ibot.head_n_prototypes", 4096, e);
    s->ibot_bottleneck = (int)cfg_get_int(cfg, "ibot.head_bottleneck_dim", 256, e);
    s->ibot_hidden = (int)cfg_get_int(cfg, "ibot.head_hidden_dim", 2048, e);
    s->ibot_nlayers = (int)cfg_get_int(cfg, "ibot.head_nlayers", 3, e);
    s->batch = (int)cfg_get_int(cfg, "train.batch_size_per_gpu", 32, e);
    s->epoch_len = cfg_get_int(cfg, "train.OFFICIAL_EPOCH_LENGTH", 1250, e);
    s->seed = (uint64_t)cfg_get_int(cfg, "train.seed", 0, e);
    s->out_dir = cfg_get_str(cfg, "train.output_dir", "runs/pretrain");
    s->n_workers = (int)cfg_get_int(cfg, "train.num_workers", 2, e);
    const char *cent = cfg_get_str(cfg, "train.centering", "centering");
    if (!strcmp(cent, "centering")) s->sinkhorn = 0;
    else if (!strcmp(cent, "sinkhorn_knopp")) s->sinkhorn = 1;
    else return err_set(e, "train.centering: '%s' is not centering or sinkhorn_knopp", cent);
    s->ckpt_every = cfg_get_int(cfg, "train.checkpoint_every", 100, e);
    s->log_every = cfg_get_int(cfg, "train.log_every", 10, e);
    const char *on_nan = cfg_get_str(cfg, "train.on_nan", "stop");
    if (strcmp(on_nan, "stop") && strcmp(on_nan, "skip")) return err_set(e, "train.on_nan: '%s' is not stop or skip", on_nan);
    s->nan_skip = !strcmp(on_nan, "skip");
    const char *on_bad = cfg_get_str(cfg, "data.on_bad_image", "fail");
    if (strcmp(on_bad, "fail") && strcmp(on_bad, "skip"))
        return err_set(e, "data.on_bad_image: '%s' is not fail or skip", on_bad);
    s->skip_bad_images = !strcmp(on_bad, "skip");
    if (get_pair(cfg, "crops.global_crops_scale", s->global_scale, e)) return 1;
    if (get_pair(cfg, "crops.local_crops_scale", s->local_scale, e)) return 1;
    s->n_local = (int)cfg_get_int(cfg, "crops.local_crops_number", 8, e);
    s->global_size = gsize;
    s->local_size = (int)cfg_get_int(cfg, "crops.local_crops_size", 96, e);
    s->blur_quirk = cfg_get_bool(cfg, "crops.blur_dinov2_quirk", 0, e);
    s->jitter_p = (float)cfg_get_float(cfg, "crops.color_jitter_p", 0.8, e);
    s->brightness = (float)cfg_get_float(cfg, "crops.brightness", 0.4, e);
    s->contrast = (float)cfg_get_float(cfg, "crops.contrast", 0.4, e);
    s->gamma = (float)cfg_get_float(cfg, "crops.gamma", 0.0, e);
    s->solarize_p = (float)cfg_get_float(cfg, "crops.solarize_p", 0.2, e);
    {
        double bp[3] = {1.0, 0.1, 0.5};
        if (cfg_has(cfg, "crops.blur_p") && cfg_get_floats(cfg, "crops.blur_p", bp, 3, e) != 3)
            return e->msg[0] ? 1 : err_set(e, "crops.blur_p: expected three probabilities");
        for (int i = 0; i < 3; i++) s->blur_p[i] = (float)bp[i];
    }
    s->epochs = cfg_get_int(cfg, "optim.epochs", 100, e);
    long max_it = cfg_get_int(cfg, "train.max_iterations", 0, e);
    s->total_iters = s->epochs * s->epoch_len;
    s->stop_iters = max_it > 0 && max_it < s->total_iters ? max_it : s->total_iters;
    double base_lr = cfg_get_float(cfg, "optim.base_lr", 0.004, e);
    const char *rule = cfg_get_str(cfg, "optim.scaling_rule", "sqrt_wrt_1024");
    s->global_batch = (double)s->batch;   /* times world size, applied by the trainer */
    s->base_lr = base_lr;
    if (!strcmp(rule, "sqrt_wrt_1024")) s->lr_rule = 1;
    else if (!strcmp(rule, "linear_wrt_256")) s->lr_rule = 2;
    else if (!strcmp(rule, "none")) s->lr_rule = 0;
    else return err_set(e, "optim.scaling_rule: '%s' is not sqrt_wrt_1024, linear_wrt_256 or none", rule);
    s->lr_override = cfg_has(cfg, "optim.lr") ? cfg_get_float(cfg, "optim.lr", 0, e) : -1;
    s->min_lr = cfg_get_float(cfg, "optim.min_lr", 1e-6, e);
    s->warmup_epochs = cfg_get_int(cfg, "optim.warmup_epochs", 10, e);
    s->wd = cfg_get_float(cfg, "optim.weight_decay", 0.04, e);
    s->wd_end = cfg_get_float(cfg, "optim.weight_decay_end", 0.4, e);
    s->clip = cfg_get_float(cfg, "optim.clip_grad", 3.0, e);
    s->freeze_last_epochs = cfg_get_int(cfg, "optim.freeze_last_layer_epochs", 1, e);
    s->patch_embed_lr_mult = (float)cfg_get_float(cfg, "optim.patch_embed_lr_mult", 0.2, e);
    s->layerwise_decay = (float)cfg_get_float(cfg, "optim.layerwise_decay", 0.9, e);
    s->beta1 = cfg_get_float(cfg, "optim.adamw_beta1", 0.9, e);
    s->beta2 = cfg_get_float(cfg, "optim.adamw_beta2", 0.999, e);
    s->mom = cfg_get_float(cfg, "teacher.momentum_teacher", 0.992, e);
    s->mom_end = cfg_get_float(cfg, "teacher.final_momentum_teacher", 1.0, e);
    s->ttemp0 = cfg_get_float(cfg, "teacher.warmup_teacher_temp", 0.04, e);
    s->ttemp = cfg_get_float(cfg, "teacher.teacher_temp", 0.07, e);
    s->ttemp_warmup_epochs = cfg_get_int(cfg, "teacher.warmup_teacher_temp_epochs", 30, e);
    if (e->msg[0]) return 1;
    /* sizes from the config are checked before anything divides by or allocates with them */
    if (patch < 1 || patch > 64) return err_set(e, "student.patch_size: %d is not in 1..64", patch);
    if (s->global_size < patch || s->global_size > 4096)
        return err_set(e, "crops.global_crops_size: %d is not in %d..4096", s->global_size, patch);
    if (s->n_local < 0 || s->n_local > 64) return err_set(e, "crops.local_crops_number: %d is not in 0..64", s->n_local);
    if (s->n_local > 0 && (s->local_size < patch || s->local_size > 4096))
        return err_set(e, "crops.local_crops_size: %d is not in %d..4096", s->local_size, patch);
    if (s->dino_k < 1 || s->ibot_k < 1 || s->dino_bottleneck < 1 || s->ibot_bottleneck < 1 || s->dino_hidden < 1 ||
        s->ibot_hidden < 1 || s->dino_nlayers < 1 || s->ibot_nlayers < 1 || s->dino_k > (1 << 20) || s->ibot_k > (1 << 20))
        return err_set(e, "dino./ibot.head_*: prototypes, widths and layers must be >= 1 (prototypes <= 2^20)");
    if (s->vit.n_registers < 0 || s->vit.n_registers > 64)
        return err_set(e, "student.num_register_tokens: %d is not in 0..64", s->vit.n_registers);
    if (s->batch < 2 && s->koleo_w > 0)
        return err_set(e, "train.batch_size_per_gpu: %d, KoLeo needs at least 2 images (or dino.koleo_loss_weight=0)", s->batch);
    if (s->global_size % patch) return err_set(e, "crops.global_crops_size: %d is not a multiple of the patch size %d", s->global_size, patch);
    if (s->n_local > 0 && s->local_size % patch)
        return err_set(e, "crops.local_crops_size: %d is not a multiple of the patch size %d", s->local_size, patch);
    if (s->epoch_len < 1 || s->epochs < 1) return err_set(e, "optim.epochs and train.OFFICIAL_EPOCH_LENGTH must be >= 1");
    const struct {
        const char *key;
        float v;
    } aug[7] = {{"crops.color_jitter_p", s->jitter_p}, {"crops.solarize_p", s->solarize_p}, {"crops.blur_p[0]", s->blur_p[0]},
                {"crops.blur_p[1]", s->blur_p[1]},     {"crops.blur_p[2]", s->blur_p[2]}, {"crops.brightness", s->brightness},
                {"crops.contrast", s->contrast}};
    for (int i = 0; i < 7; i++)   /* probabilities, and jitter strengths (a factor 1 - b must stay >= 0) */
        if (!(aug[i].v >= 0.0f && aug[i].v <= 1.0f)) return err_set(e, "%s: %g is not in [0, 1]", aug[i].key, (double)aug[i].v);
    if (!(s->gamma >= 0.0f && s->gamma <= AUG_MAX_GAMMA))
        return err_set(e, "crops.gamma: %g is not in [0, %g]", (double)s->gamma, (double)AUG_MAX_GAMMA);
    return 0;
}

/* The multi-crop loader of a pretraining config (rank 0 of 1, the train split of every source --
 * loader_config_default; the trainer sets the rank). */
LoaderConfig ssl_loader_config(const SslConfig *s) {
    LoaderConfig lc = loader_config_default(LOADER_MULTICROP);
    lc.batch_size = s->batch;
    lc.seed = s->seed;
    lc.n_workers = s->n_workers;
    lc.channels = s->vit.in_chans;
    lc.crops.global_size = s->global_size;
    lc.crops.local_size = s->local_size;
    lc.crops.n_local = s->n_local;
    lc.crops.blur_dinov2_quirk = s->blur_quirk;
    lc.crops.jitter_p = s->jitter_p;
    lc.crops.brightness = s->brightness;
    lc.crops.contrast = s->contrast;
    lc.crops.gamma = s->gamma;
    lc.crops.solarize_p = s->solarize_p;
    memcpy(lc.crops.blur_p, s->blur_p, sizeof s->blur_p);
    memcpy(lc.crops.global_scale, s->global_scale, sizeof s->global_scale);
    memcpy(lc.crops.local_scale, s->local_scale, sizeof s->local_scale);
    lc.patch_size = s->vit.patch;
    lc.masks = mask_default(s->global_size / s->vit.patch, s->global_size / s->vit.patch);
    lc.masks.ratio_min = s->ibot_ratio[0];
    lc.masks.ratio_max = s->ibot_ratio[1];
    lc.masks.sample_prob = s->ibot_sample_p;
    lc.ibot = s->ibot_w > 0;
    return lc;
}

/* ------------------------------------------------------------------------------------------ */
/* the meta-architecture */

void ssl_model_declare(SslModel *m, const SslConfig *s, ParamStore *ps) {
    memset(m, 0, sizeof(*m));
    vit_declare(&m->backbone, &s->vit, ps, "backbone");
    const int C = s->vit.embed_dim;
    dino_head_declare(&m->dino_head, ps, "dino_head", C, s->dino_hidden, s->dino_bottleneck, s->dino_k, s->dino_nlayers);
    m->separate_ibot = s->ibot_separate;
    if (s->ibot_separate)
        dino_head_declare(&m->ibot_head, ps, "ibot_head", C, s->ibot_hidden, s->ibot_bottleneck, s->ibot_k, s->ibot_nlayers);
}

void ssl_model_init(SslModel *m, Rng *r) {
    vit_init(&m->backbone, r);
    dino_head_init(&m->dino_head, r);
    if (m->separate_ibot) dino_head_init(&m->ibot_head, r);
}

void ssl_model_free(SslModel *m) {
    vit_free(&m->backbone);
}

static const DinoHead *ibot_head_of(const SslModel *m) {
    return m->separate_ibot ? &m->ibot_head : &m->dino_head;
}

/* Schedules at iteration `it` (0-based), as DINOv2's build_schedulers. */
SslSchedules ssl_schedules(const SslConfig *s, long it, int world) {
    SslSchedules v;
    double gb = (double)s->batch * world;
    double peak = s->lr_override > 0 ? s->lr_override
                  : s->lr_rule == 1   ? s->base_lr * sqrt(gb / 1024.0)
                  : s->lr_rule == 2   ? s->base_lr * gb / 256.0
                                      : s->base_lr;
    const long T = s->total_iters, E = s->epoch_len;
    v.lr = sched_cosine(it, T, peak, s->min_lr, s->warmup_epochs * E, 0.0);
    v.wd = sched_cosine(it, T, s->wd, s->wd_end, 0, 0.0);
    v.momentum = sched_cosine(it, T, s->mom, s->mom_end, 0, 0.0);
    long tw = s->ttemp_warmup_epochs * E;
    v.teacher_temp = it < tw ? sched_linear(it, tw, s->ttemp0, s->ttemp) : s->ttemp;
    v.last_layer_lr = it < s->freeze_last_epochs * E ? 0.0 : v.lr;
    return v;
}

/* Per-module global-norm clipping, as DINOv2's clip_grad over the student's submodules. */
static double clip_module(ParamStore *ps, const char *prefix, double max_norm) {
    size_t plen = strlen(prefix);
    double sq = 0;
    for (size_t i = 0; i < ps->n; i++) {
        Param *p = &ps->p[i];
        if (p->kind != PARAM_TRAINABLE || p->frozen || strncmp(p->name, prefix, plen)) continue;
        const float *g = ps->grad + p->offset;
        double s = 0;
        for (size_t k = 0; k < p->t->numel; k++) s += (double)g[k] * g[k];
        sq += s;
    }
    double norm = sqrt(sq);
    if (max_norm > 0 && isfinite(norm) && norm > max_norm) {
        float scale = (float)(max_norm / (norm + 1e-6));
        for (size_t i = 0; i < ps->n; i++) {
            Param *p = &ps->p[i];
            if (p->kind != PARAM_TRAINABLE || p->frozen || strncmp(p->name, prefix, plen)) continue;
            float *g = ps->grad + p->offset;
            for (size_t k = 0; k < p->t->numel; k++) g[k] *= scale;
        }
    }
    return norm;
}

/* Row indices of the masked patches of (2B, N) masks and their 1/n_masked(image) weights. */
static size_t masked_rows(const uint8_t *masks, size_t n_img, size_t N, int32_t *idx, float *w) {
    size_t m = 0;
    for (size_t i = 0; i < n_img; i++) {
        size_t cnt = 0;
        for (size_t j = 0; j < N; j++) cnt += masks[i * N + j] != 0;
        for (size_t j = 0; j < N; j++)
            if (masks[i * N + j]) {
                idx[m] = (int32_t)(i * N + j);
                w[m] = 1.0f / (float)cnt;
                m++;
            }
    }
    return m;
}

/* One forward/backward of the meta-architecture.  Fills the loss values; gradients accumulate
 * in the student's flat block.  `st` holds the centers (updated here). */
int ssl_forward_backward(Ctx *c, const SslConfig *s, SslModel *student, SslModel *teacher, SslState *st,
                         const SslBatch *b, double teacher_temp, SslLosses *out) {
    const size_t B = (size_t)b->B, C = (size_t)s->vit.embed_dim;
    const size_t G = (size_t)s->global_size, L = (size_t)s->local_size, NL = (size_t)s->n_local;
    const size_t gh = G / (size_t)s->vit.patch, N = gh * gh;
    const size_t KD = (size_t)s->dino_k, KI = (size_t)(s->ibot_separate ? s->ibot_k : s->dino_k);
    Tensor *glob = tensor_wrap(c, b->global, 4, TSHAPE(2 * B, (size_t)s->vit.in_chans, G, G));
    Tensor *loc = NL ? tensor_wrap(c, b->local, 4, TSHAPE(NL * B, (size_t)s->vit.in_chans, L, L)) : NULL;

    int32_t *midx = arena_alloc(&c->step, (2 * B * N + 1) * sizeof(int32_t));
    float *mw = arena_alloc(&c->step, (2 * B * N + 1) * sizeof(float));
    const int use_ibot = s->ibot_w > 0 && b->masks != NULL;
    size_t M = use_ibot ? masked_rows(b->masks, 2 * B, N, midx, mw) : 0;

    /* ---- teacher: targets, no gradient, eval mode ---- */
    int prev_grad = ctx_set_grad(c, 0), prev_train = c->training;
    c->training = 0;
    ViTOut to = vit_forward(c, &teacher->backbone, glob, NULL);
    Tensor *t_logits = dino_head_forward(c, &teacher->dino_head, to.cls, NULL);        /* (2B, KD) */
    float *t_dino = arena_alloc(&c->step, 2 * B * KD * sizeof(float));
    double *colsum = arena_alloc(&c->step, (KD > KI ? KD : KI) * sizeof(double));
    if (s->sinkhorn) {
        sinkhorn_knopp(c, t_logits->data, 2 * B, KD, (float)teacher_temp, 3, (double)(2 * B) * c->world, t_dino);
    } else {
        dino_softmax_center(t_logits->data, st->dino_center, 2 * B, KD, (float)teacher_temp, t_dino);
        dino_batch_sum(t_logits->data, 2 * B, KD, colsum);
        if (c->world > 1) dist_allreduce_sum_double(c, colsum, KD);
        dino_center_apply(st->dino_center, colsum, KD, (double)(2 * B) * c->world, 0.9f);
    }
    float *t_ibot = NULL;
    if (M > 0) {
        Tensor *tp = op_reshape_(c, to.patch, 2 * B * N, C);
        Tensor *tm = op_index_select(c, tp, 0, midx, M);                                  /* (M, C) */
        Tensor *ti = dino_head_forward(c, ibot_head_of(teacher), tm, NULL);                /* (M, KI) */
        t_ibot = arena_alloc(&c->step, M * KI * sizeof(float));
        if (s->sinkhorn) {
            double n_masked = (double)M;
            if (c->world > 1) dist_allreduce_sum_double(c, &n_masked, 1);
            sinkhorn_knopp(c, ti->data, M, KI, (float)teacher_temp, 3, n_masked, t_ibot);
        } else {
            /* DINOv2's iBOT center moves towards the mean of the masked tokens' logits, averaged
             * over ranks as per-rank means (reduce_center_update on a (1, M, K) tensor). */
            dino_softmax_center(ti->data, st->ibot_center, M, KI, (float)teacher_temp, t_ibot);
            dino_batch_sum(ti->data, M, KI, colsum);
            for (size_t k = 0; k < KI; k++) colsum[k] /= (double)M;   /* this rank's token mean */
            if (c->world > 1) dist_allreduce_sum_double(c, colsum, KI);
            dino_center_apply(st->ibot_center, colsum, KI, (double)c->world, 0.9f);
        }
    }
    ctx_set_grad(c, prev_grad);
    c->training = prev_train;

    /* ---- student ---- */
    ViTOut sg = vit_forward(c, &student->backbone, glob, use_ibot ? b->masks : NULL);
    Tensor *cls_all = sg.cls;                                                              /* (2B, C) */
    if (NL) {
        ViTOut sl = vit_forward(c, &student->backbone, loc, NULL);
        Tensor *parts[2] = {sg.cls, sl.cls};
        cls_all = op_concat(c, parts, 2, 0);                                               /* ((2+NL)B, C) */
    }
    Tensor *s_logits = dino_head_forward(c, &student->dino_head, cls_all, NULL);
    Tensor *l_dino = dino_loss(c, s_logits, t_dino, 2 + (int)NL, 2, 0.1f);
    Tensor *total = op_scale(c, l_dino, s->dino_w);
    Tensor *l_koleo = NULL, *l_ibot = NULL;
    if (s->koleo_w > 0) {
        l_koleo = op_add(c, koleo_loss(c, op_slice(c, sg.cls, 0, 0, B)), koleo_loss(c, op_slice(c, sg.cls, 0, B, 2 * B)));
        total = op_add(c, total, op_scale(c, l_koleo, s->koleo_w));
    }
    if (M > 0) {
        Tensor *sp = op_reshape_(c, sg.patch, 2 * B * N, C);
        Tensor *sm = op_index_select(c, sp, 0, midx, M);
        Tensor *si = dino_head_forward(c, ibot_head_of(student), sm, NULL);
        l_ibot = ibot_loss(c, si, t_ibot, mw, 2 * B, 0.1f);
        total = op_add(c, total, op_scale(c, l_ibot, s->ibot_w));
    }
    out->dino = l_dino->data[0];
    out->koleo = l_koleo ? l_koleo->data[0] : 0.0;
    out->ibot = l_ibot ? l_ibot->data[0] : 0.0;
    out->total = total->data[0];
    out->n_masked = (double)M;
    prob_entropy(c, t_dino, 2 * B, KD, &out->t_entropy, &out->t_marginal);
    if (tensor_is_contiguous(s_logits)) out->s_entropy = softmax_entropy(c, s_logits->data, s_logits->shape[0], KD, 0.1f);
    else out->s_entropy = NAN;
    if (isfinite(out->total)) backward(c, total);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* the loop */

int ssl_pretrain(const Config *cfg, int resume, Ctx *c, TrainRunResult *res, Err *e) {
    SslConfig s;
    if (ssl_config_from(cfg, &s, e)) return 1;
    CorpusSource src[CORPUS_MAX_SOURCES];
    int n_src = 0;
    if (corpus_sources_from_config(cfg, "data", src, CORPUS_MAX_SOURCES, &n_src, e)) return 1;
    if (n_src == 0) return err_set(e, "data.sources: no prepared dataset given (e.g. data.sources=[out/vindr.h5])");
    Corpus corpus;
    if (corpus_open(&corpus, src, n_src, e)) return 1;

    /* models: student (trained) and teacher (EMA, values only) with identical layouts */
    ParamStore sps, tps;
    params_init(&sps);
    params_init(&tps);
    tps.values_only = 1;
    SslModel student, teacher;
    ssl_model_declare(&student, &s, &sps);
    ssl_model_declare(&teacher, &s, &tps);
    params_alloc(&sps);
    params_alloc(&tps);
    Rng init_rng;
    rng_init(&init_rng, s.seed);
    ssl_model_init(&student, &init_rng);
    vit_set_param_groups(&sps, "backbone", s.patch_embed_lr_mult, s.layerwise_decay, s.vit.depth);
    for (size_t i = 0; i < sps.n; i++) {       /* heads: decay like DINOv2 (bias / norm exempt) */
        Param *p = &sps.p[i];
        size_t len = strlen(p->name);
        if (!strncmp(p->name, "backbone", 8)) continue;
        p->wd_mult = (len >= 5 && !strcmp(p->name + len - 5, ".bias")) ? 0.0f : 1.0f;
    }
    params_set_frozen(&sps, "dino_head.last_layer.weight_g", 1);   /* g fixed at 1 */
    if (s.ibot_separate) params_set_frozen(&sps, "ibot_head.last_layer.weight_g", 1);
    dist_broadcast_params(c, &sps);
    params_copy(&tps, &sps);

    SslState st;
    st.dino_center = calloc((size_t)s.dino_k, sizeof(float));
    st.ibot_center = calloc((size_t)(s.ibot_separate ? s.ibot_k : s.dino_k), sizeof(float));
    CkptStore stores[2] = {{.prefix = "student.", .ps = &sps, .with_optim = 1}, {.prefix = "teacher.", .ps = &tps}};
    CkptExtra extra[2] = {{"dino_center", st.dino_center, (size_t)s.dino_k},
                          {"ibot_center", st.ibot_center, (size_t)(s.ibot_separate ? s.ibot_k : s.dino_k)}};
    char *yaml = cfg_to_yaml(cfg);
    Rng train_rng;
    rng_init(&train_rng, s.seed ^ 0x5eedULL);
    TrainLoop t = {.name = "pretrain", .out_dir = s.out_dir, .total_steps = s.stop_iters,
                   .ckpt_every = s.ckpt_every, .log_every = s.log_every,
                   .nan_policy = s.nan_skip ? TRAIN_NAN_SKIP : TRAIN_NAN_STOP, .ctx = c, .stores = stores,
                   .n_stores = 2, .extra = extra, .n_extra = 2, .config_text = yaml, .rng = &train_rng,
                   .quiet = res ? res->quiet : 0};
    int rc = 1;
    Loader *loader = NULL;
    float *center_save = NULL;   /* the centers before a step (train.on_nan=skip restores them) */
    if (train_begin(&t, resume, e)) goto done;
    c->rng = train_rng;

    /* the loader continues at the position of the resumed step */
    LoaderConfig lc = ssl_loader_config(&s);
    lc.rank = c->rank;
    lc.world = c->world;
    lc.on_error = s.skip_bad_images ? LOADER_SKIP : LOADER_FAIL;
    {
        /* position = steps done: batches per epoch come from a probe loader */
        Loader *probe = NULL;
        if (loader_open(&probe, &corpus, &lc, e)) goto done;
        long per_epoch = loader_batches_per_epoch(probe);
        loader_close(probe);
        if (per_epoch < 1) {
            err_set(e, "data.sources: fewer training images than one global batch (%d x %d ranks)", s.batch, c->world);
            goto done;
        }
        lc.start_epoch = t.step / per_epoch;
        lc.start_index = t.step % per_epoch;
    }
    if (loader_open(&loader, &corpus, &lc, e)) goto done;

    OptimConfig oc = optim_adamw_default();
    oc.beta1 = s.beta1;
    oc.beta2 = s.beta2;
    const long nan_step = train_inject_nan_step();   /* test-only (engine/train.h) */
    /* the forward pass moves the teacher centers before the loss is known: a skipped step must
     * put them back, or one bad batch poisons every later target */
    const size_t kd = (size_t)s.dino_k, ki = (size_t)(s.ibot_separate ? s.ibot_k : s.dino_k);
    if (s.nan_skip) center_save = malloc((kd + ki) * sizeof(float));
    if (s.nan_skip && !center_save) {
        err_set(e, "pretrain: out of memory");
        goto done;
    }
    while (t.step < t.total_steps) {
        const long it = t.step;
        SslSchedules sv = ssl_schedules(&s, it, c->world);
        const Batch *bt;
        if (loader_next(loader, &bt, e)) goto done;
        ctx_step_begin(c);
        params_zero_grad(&sps);
        SslBatch sb = {.B = bt->n, .global = bt->global, .local = bt->local, .masks = bt->ibot_masks};
        if (it + 1 == nan_step) sb.global[0] = NAN;
        if (center_save) {
            memcpy(center_save, st.dino_center, kd * sizeof(float));
            memcpy(center_save + kd, st.ibot_center, ki * sizeof(float));
        }
        SslLosses L;
        ssl_forward_backward(c, &s, &student, &teacher, &st, &sb, sv.teacher_temp, &L);
        /* bad_images: unreadable samples replaced so far (data.on_bad_image=skip), logged */
        Metric m[] = {{"loss", L.total}, {"dino", L.dino}, {"ibot", L.ibot},      {"koleo", L.koleo},
                      {"lr", sv.lr},     {"wd", sv.wd},     {"momentum", sv.momentum}, {"teacher_temp", sv.teacher_temp},
                      {"t_entropy", L.t_entropy}, {"t_marginal", L.t_marginal}, {"s_entropy", L.s_entropy},
                      {"bad_images", (double)bt->n_skipped}};
        const int nm = (int)(sizeof m / sizeof m[0]) - (s.skip_bad_images ? 0 : 1);
        const char *bad;
        if (s.nan_skip && train_metrics_bad(&t, m, nm, &bad)) {
            memcpy(st.dino_center, center_save, kd * sizeof(float));
            memcpy(st.ibot_center, center_save + kd, ki * sizeof(float));
            train_skip_step(&t, m, nm);
            continue;
        }
        if (!isfinite(L.total)) {
            err_set(e, "pretrain: step %ld: loss is not finite (dino %g, ibot %g, koleo %g); stopping, the last checkpoint is kept",
                    it + 1, L.dino, L.ibot, L.koleo);
            goto done;
        }
        dist_allreduce_grads(c, &sps);
        clip_module(&sps, "backbone", s.clip);
        clip_module(&sps, "dino_head", s.clip);
        if (s.ibot_separate) clip_module(&sps, "ibot_head", s.clip);
        /* the prototype layer's LR is 0 during the first epoch(s) (DINOv2's last_layer_lr) */
        for (size_t i = 0; i < sps.n; i++)
            if (strstr(sps.p[i].name, "last_layer")) sps.p[i].lr_mult = sv.lr > 0 ? (float)(sv.last_layer_lr / sv.lr) : 0.0f;
        optim_step(&sps, &oc, it + 1, sv.lr, sv.wd);
        params_ema(&tps, &sps, (float)sv.momentum);
        train_rng = c->rng;
        double images = (double)bt->n * c->world;
        if (train_end_step(&t, m, nm, images, e)) goto done;
        if (res) {
            if (it == 0) res->first_loss = L.total;
            res->last_loss = L.total;
        }
    }
    if (train_finish(&t, e)) goto done;
    if (res) {
        res->steps = t.step;
        res->seconds = wall_seconds() - t.t_begin;
        res->images = t.images_total;
    }
    rc = 0;
done:
    if (t.metrics) fclose(t.metrics);
    loader_close(loader);
    free(center_save);
    free(yaml);
    free(st.dino_center);
    free(st.ibot_center);
    ssl_model_free(&student);
    ssl_model_free(&teacher);
    params_free(&sps);
    params_free(&tps);
    corpus_close(&corpus);
    return rc;
}
