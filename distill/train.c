/* train.c — stage 2: the EfficientNet student with supervised heads and relational distillation
 * from the stage-1 teacher, as pretraining/stage2/main.py of the official code (losses and their
 * weights in distill.h).  The loop machinery (progress line, JSONL, checkpoints, exact resume,
 * NaN guard) is engine/train.h's; this file holds the config, the model, the teacher signal and
 * the step. */
#include "distill/distill.h"
#include "data/data.h"
#include "engine/train.h"
#include "ssl/ssl.h"
#include <hdf5.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* config */

const CfgSpec DISTILL_KEYS[] = {
    {"student.arch", CFG_STR, "efficientnet-b0", "efficientnet-b0 .. efficientnet-b7 (lukemelas; b5 in the paper)"},
    {"student.image_size", CFG_INT, "224", "input size (512 in the paper)"},
    {"student.static_padding_size", CFG_INT, "0", "TF-SAME padding computed for this size (0: the variant's native "
                                                  "resolution, as lukemelas / Mammo-CLIP)"},
    {"student.drop_connect", CFG_FLOAT, "0.2", "drop-connect rate of the last block (scaled by block index)"},
    {"student.dropout", CFG_FLOAT, "0.0", "dropout on the pooled feature before the heads"},
    {"student.train_mode", CFG_BOOL, "true", "false: eval mode (BN running statistics, no dropout / drop-connect)"},
    {"student.sync_bn", CFG_BOOL, "false", "mpirun: batch norm with the global batch's statistics (SyncBatchNorm); "
                                           "false: each rank's own shard (DDP's default)"},
    {"student.init", CFG_STR, "", "HDF5 state dict with lukemelas names to start from (e.g. converted ImageNet "
                                  "weights, or a distill checkpoint); empty: random init"},
    {"heads.names", CFG_LIST, "[birads, density]", "supervised heads (state-dict names heads.<name>)"},
    {"heads.labels", CFG_LIST, "[birads, density]", "their label columns in the prepared file, or findings:<class>"},
    {"heads.classes", CFG_LIST, "['1 2 3 4 5', 'A B C D']",
     "per head: the source classes kept, in output order, space-separated; a|b merges; '' = all"},
    {"heads.weights", CFG_LIST, "[1.0, 1.0]", "per-head weight inside the supervised term"},
    {"teacher.source", CFG_STR, "features", "features (a versa extract file) | online (run the stage-1 teacher)"},
    {"teacher.features", CFG_STR, "", "versa extract output for data.prepared (teacher.source: features)"},
    {"teacher.feature", CFG_STR, "gap", "gap | cls | concat (cls + dino + ibot bottlenecks)"},
    {"teacher.checkpoint", CFG_STR, "", "stage-1 checkpoint (teacher.source: online)"},
    {"teacher.model", CFG_STR, "teacher", "teacher | student: which stage-1 network (online)"},
    {"teacher.image_size", CFG_INT, "0", "online teacher input size (0: its global crop size)"},
    {"loss.kd_weight", CFG_FLOAT, "1.0", "lambda1: relational KL distillation (0: supervised only)"},
    {"loss.supervised_weight", CFG_FLOAT, "10.0", "lambda2: sum of the heads' cross-entropies"},
    {"loss.contrastive_weight", CFG_FLOAT, "1.0", "relation 'contrastive' term (0: off)"},
    {"loss.contrastive", CFG_STR, "released", "released (two passes, target from pass 2) | label_aware"},
    {"loss.contrastive_temp", CFG_FLOAT, "0.07", "temperature of the relation term"},
    {"loss.contrastive_normalize", CFG_BOOL, "false", "L2-normalise features in the relation term (not in "
                                                      "the published code)"},
    {"loss.label_mix", CFG_FLOAT, "0.5", "label_aware: teacher share of the soft target"},
    {"loss.second_view", CFG_STR, "same", "released pass 2 input: same (the released quirk) | augmented"},
    {"loss.second_view_size", CFG_INT, "0", "augmented view size (0: student.image_size; 224 in transform2)"},
    {"loss.second_view_scale", CFG_LIST, "[0.8, 1.0]", "augmented view RandomResizedCrop scale"},
    {"loss.align_weight", CFG_FLOAT, "0.0", "direct feature alignment (beyond the paper; 0: off)"},
    {"loss.align", CFG_STR, "cosine", "cosine | mse (projector output vs teacher feature)"},
    {"data.prepared", CFG_STR, "", "prepared HDF5 dataset"},
    {"data.split", CFG_STR, "train", "split trained on: train | val | test | all"},
    {"data.rrc_scale", CFG_LIST, "[]", "RandomResizedCrop scale (empty: whole image, as transform1)"},
    {"data.hflip", CFG_FLOAT, "0.0", "horizontal flip probability"},
    {"data.mean", CFG_FLOAT, "0.3089", "normalisation mean (all channels)"},
    {"data.std", CFG_FLOAT, "0.2505", "normalisation std"},
    {"data.num_workers", CFG_INT, "2", "loader threads"},
    {"data.on_bad_image", CFG_STR, "fail", "unreadable image: fail | skip"},
    {"train.batch_size", CFG_INT, "28", "images per rank per step"},
    {"train.epochs", CFG_INT, "30", "epochs over the training split"},
    {"train.max_steps", CFG_INT, "0", "stop after this many steps (0: epochs)"},
    {"train.seed", CFG_INT, "0", "seed of initialisation, data order and augmentation"},
    {"train.output_dir", CFG_STR, "runs/distill", "checkpoint.h5 and metrics.jsonl go here"},
    {"train.checkpoint_every", CFG_INT, "500", "steps between checkpoints"},
    {"train.log_every", CFG_INT, "10", "steps between progress lines"},
    {"train.on_nan", CFG_STR, "stop", "non-finite loss: stop | skip (skip the batch and log it)"},
    {"optim.kind", CFG_STR, "adam", "adam (coupled L2, torch.optim.Adam) | adamw"},
    {"optim.lr", CFG_FLOAT, "1e-4", "learning rate"},
    {"optim.weight_decay", CFG_FLOAT, "0.0", "weight decay (not on biases and norms)"},
    {"optim.schedule", CFG_STR, "constant", "constant | cosine"},
    {"optim.warmup_steps", CFG_INT, "0", "linear warm-up from 0"},
    {"optim.min_lr", CFG_FLOAT, "0.0", "final learning rate of the cosine schedule"},
    {"optim.clip_grad", CFG_FLOAT, "0.0", "clip the global gradient norm (0: off)"},
    {"optim.beta1", CFG_FLOAT, "0.9", "Adam beta1"},
    {"optim.beta2", CFG_FLOAT, "0.999", "Adam beta2"},
    {"optim.eps", CFG_FLOAT, "1e-8", "Adam eps"},
    {"probe.checkpoint", CFG_STR, "", "--probe: student checkpoint ('' = random init from student.*, train.seed)"},
    {"probe.tasks", CFG_LIST, "[]", "--probe: label columns or findings:<class> to probe"},
    {"probe.train_split", CFG_STR, "train", "--probe: split the probes are fitted on"},
    {"probe.test_split", CFG_STR, "test", "--probe: split they are scored on"},
    {"probe.k", CFG_INT, "10", "--probe: neighbours of the k-NN classifier"},
    {"probe.l2", CFG_FLOAT, "1e-2", "--probe: L2 penalty of the logistic regression"},
    {"probe.batch", CFG_INT, "16", "--probe: images per forward pass"},
    {"probe.output", CFG_STR, "", "--probe: JSON results file"},
};
const size_t DISTILL_N_KEYS = sizeof DISTILL_KEYS / sizeof DISTILL_KEYS[0];

static int split_of(const char *s, const char *key, int *out, Err *e) {
    if (!strcmp(s, "all")) {
        *out = -1;
        return 0;
    }
    int v = prep_split_parse(s);
    if (v < 0) return err_set(e, "%s: '%s' is not train, val, test or all", key, s);
    *out = v;
    return 0;
}

static int one_of(const char *v, const char *key, const char *a, const char *b, int *out, Err *e) {
    if (!strcmp(v, a)) *out = 0;
    else if (!strcmp(v, b)) *out = 1;
    else return err_set(e, "%s: '%s' is not %s or %s", key, v, a, b);
    return 0;
}

int distill_config_from(const Config *cfg, DistillConfig *d, Err *e) {
    memset(d, 0, sizeof(*d));
    e->msg[0] = 0;
    const char *arch = cfg_get_str(cfg, "student.arch", "efficientnet-b0");
    snprintf(d->arch, sizeof d->arch, "%s", arch);
    if (effnet_config(arch, &d->net)) return err_set(e, "student.arch: unknown architecture '%s' (efficientnet-b0 .. b7)", arch);
    d->image_size = (int)cfg_get_int(cfg, "student.image_size", 224, e);
    long sp = cfg_get_int(cfg, "student.static_padding_size", 0, e);
    if (sp > 0) d->net.static_size = (int)sp;
    d->net.drop_connect = (float)cfg_get_float(cfg, "student.drop_connect", 0.2, e);
    d->head_dropout = (float)cfg_get_float(cfg, "student.dropout", 0.0, e);
    d->train_mode = cfg_get_bool(cfg, "student.train_mode", 1, e);
    d->sync_bn = cfg_get_bool(cfg, "student.sync_bn", 0, e);
    d->init_path = cfg_get_str(cfg, "student.init", "");
    /* heads: parallel lists */
    size_t nh = cfg_has(cfg, "heads.names") ? cfg_list_len(cfg, "heads.names") : 0;
    if (nh > DISTILL_MAX_HEADS) return err_set(e, "heads.names: %zu heads, at most %d", nh, DISTILL_MAX_HEADS);
    const char *lists[3] = {"heads.labels", "heads.classes", "heads.weights"};
    for (int k = 0; k < 3; k++)
        if (nh && (!cfg_has(cfg, lists[k]) || cfg_list_len(cfg, lists[k]) != nh))
            return err_set(e, "%s: expected %zu entries, one per heads.names entry", lists[k], nh);
    d->n_heads = (int)nh;
    for (size_t h = 0; h < nh; h++) {
        DistillHead *hd = &d->heads[h];
        memset(hd, 0, sizeof(*hd));
        const char *nm = cfg_list_item(cfg, "heads.names", h), *lb = cfg_list_item(cfg, "heads.labels", h);
        const char *cl = cfg_list_item(cfg, "heads.classes", h), *w = cfg_list_item(cfg, "heads.weights", h);
        if (!nm[0] || strlen(nm) >= sizeof hd->name || strpbrk(nm, ". /"))
            return err_set(e, "heads.names: '%s' is not a plain name (no dots, spaces or slashes)", nm);
        for (size_t k = 0; k < h; k++)
            if (!strcmp(d->heads[k].name, nm)) return err_set(e, "heads.names: '%s' appears twice", nm);
        snprintf(hd->name, sizeof hd->name, "%s", nm);
        snprintf(hd->label, sizeof hd->label, "%s", lb);
        if (strlen(cl) >= sizeof hd->classes) return err_set(e, "heads.classes: entry %zu is too long", h);
        snprintf(hd->classes, sizeof hd->classes, "%s", strcmp(cl, "~") && strcmp(cl, "null") ? cl : "");
        char *end;
        hd->weight = strtof(w, &end);
        if (*end || end == w) return err_set(e, "heads.weights: '%s' is not a number", w);
        hd->finding = -1;
    }
    if (one_of(cfg_get_str(cfg, "teacher.source", "features"), "teacher.source", "features", "online", &d->teacher_source, e)) return 1;
    const char *tf = cfg_get_str(cfg, "teacher.feature", "gap");
    if (!strcmp(tf, "gap")) d->teacher_feature = TFEAT_GAP;
    else if (!strcmp(tf, "cls")) d->teacher_feature = TFEAT_CLS;
    else if (!strcmp(tf, "concat")) d->teacher_feature = TFEAT_CONCAT;
    else return err_set(e, "teacher.feature: '%s' is not gap, cls or concat", tf);
    d->features_path = cfg_get_str(cfg, "teacher.features", "");
    d->teacher_ckpt = cfg_get_str(cfg, "teacher.checkpoint", "");
    d->teacher_model = cfg_get_str(cfg, "teacher.model", "teacher");
    if (strcmp(d->teacher_model, "teacher") && strcmp(d->teacher_model, "student"))
        return err_set(e, "teacher.model: '%s' is not teacher or student", d->teacher_model);
    d->teacher_size = (int)cfg_get_int(cfg, "teacher.image_size", 0, e);
    d->w_kd = (float)cfg_get_float(cfg, "loss.kd_weight", 1.0, e);
    d->w_sup = (float)cfg_get_float(cfg, "loss.supervised_weight", 10.0, e);
    d->w_con = (float)cfg_get_float(cfg, "loss.contrastive_weight", 1.0, e);
    if (one_of(cfg_get_str(cfg, "loss.contrastive", "released"), "loss.contrastive", "released", "label_aware", &d->con_variant, e)) return 1;
    d->con_temp = (float)cfg_get_float(cfg, "loss.contrastive_temp", 0.07, e);
    d->con_normalize = cfg_get_bool(cfg, "loss.contrastive_normalize", 0, e);
    d->label_mix = (float)cfg_get_float(cfg, "loss.label_mix", 0.5, e);
    if (one_of(cfg_get_str(cfg, "loss.second_view", "same"), "loss.second_view", "same", "augmented", &d->second_view_aug, e)) return 1;
    d->second_view_size = (int)cfg_get_int(cfg, "loss.second_view_size", 0, e);
    double sc[2];
    if (cfg_get_floats(cfg, "loss.second_view_scale", sc, 2, e) != 2)
        return e->msg[0] ? 1 : err_set(e, "loss.second_view_scale: expected two numbers");
    d->second_view_scale[0] = (float)sc[0];
    d->second_view_scale[1] = (float)sc[1];
    d->w_align = (float)cfg_get_float(cfg, "loss.align_weight", 0.0, e);
    if (one_of(cfg_get_str(cfg, "loss.align", "cosine"), "loss.align", "cosine", "mse", &d->align_mode, e)) return 1;
    d->prepared = cfg_get_str(cfg, "data.prepared", "");
    if (split_of(cfg_get_str(cfg, "data.split", "train"), "data.split", &d->split, e)) return 1;
    size_t nr = cfg_has(cfg, "data.rrc_scale") ? cfg_list_len(cfg, "data.rrc_scale") : 0;
    if (nr == 2) {
        if (cfg_get_floats(cfg, "data.rrc_scale", sc, 2, e) != 2) return 1;
        d->rrc_scale[0] = (float)sc[0];
        d->rrc_scale[1] = (float)sc[1];
    } else if (nr != 0) {
        return err_set(e, "data.rrc_scale: expected [] or two numbers");
    }
    d->hflip = (float)cfg_get_float(cfg, "data.hflip", 0.0, e);
    d->mean = (float)cfg_get_float(cfg, "data.mean", 0.3089, e);
    d->std = (float)cfg_get_float(cfg, "data.std", 0.2505, e);
    d->n_workers = (int)cfg_get_int(cfg, "data.num_workers", 2, e);
    if (one_of(cfg_get_str(cfg, "data.on_bad_image", "fail"), "data.on_bad_image", "fail", "skip", &d->skip_bad_images, e)) return 1;
    d->batch = (int)cfg_get_int(cfg, "train.batch_size", 28, e);
    d->epochs = cfg_get_int(cfg, "train.epochs", 30, e);
    d->max_steps = cfg_get_int(cfg, "train.max_steps", 0, e);
    d->seed = (uint64_t)cfg_get_int(cfg, "train.seed", 0, e);
    d->out_dir = cfg_get_str(cfg, "train.output_dir", "runs/distill");
    d->ckpt_every = cfg_get_int(cfg, "train.checkpoint_every", 500, e);
    d->log_every = cfg_get_int(cfg, "train.log_every", 10, e);
    if (one_of(cfg_get_str(cfg, "train.on_nan", "stop"), "train.on_nan", "stop", "skip", &d->nan_skip, e)) return 1;
    if (one_of(cfg_get_str(cfg, "optim.kind", "adam"), "optim.kind", "adam", "adamw", &d->adamw, e)) return 1;
    d->lr = cfg_get_float(cfg, "optim.lr", 1e-4, e);
    d->wd = cfg_get_float(cfg, "optim.weight_decay", 0.0, e);
    if (one_of(cfg_get_str(cfg, "optim.schedule", "constant"), "optim.schedule", "constant", "cosine", &d->schedule, e)) return 1;
    d->warmup = cfg_get_int(cfg, "optim.warmup_steps", 0, e);
    d->min_lr = cfg_get_float(cfg, "optim.min_lr", 0.0, e);
    d->clip = cfg_get_float(cfg, "optim.clip_grad", 0.0, e);
    d->beta1 = cfg_get_float(cfg, "optim.beta1", 0.9, e);
    d->beta2 = cfg_get_float(cfg, "optim.beta2", 0.999, e);
    d->eps = cfg_get_float(cfg, "optim.eps", 1e-8, e);
    d->probe_ckpt = cfg_get_str(cfg, "probe.checkpoint", "");
    if (split_of(cfg_get_str(cfg, "probe.train_split", "train"), "probe.train_split", &d->probe_train_split, e)) return 1;
    if (split_of(cfg_get_str(cfg, "probe.test_split", "test"), "probe.test_split", &d->probe_test_split, e)) return 1;
    d->probe_k = (int)cfg_get_int(cfg, "probe.k", 10, e);
    d->probe_l2 = cfg_get_float(cfg, "probe.l2", 1e-2, e);
    d->probe_batch = (int)cfg_get_int(cfg, "probe.batch", 16, e);
    d->probe_out = cfg_get_str(cfg, "probe.output", "");
    if (e->msg[0]) return 1;
    if (d->image_size < 8) return err_set(e, "student.image_size: %d is too small (>= 8)", d->image_size);
    if (d->batch < 2) return err_set(e, "train.batch_size: %d, the batch relations need at least 2 images", d->batch);
    if (d->epochs < 1) return err_set(e, "train.epochs: must be >= 1");
    if (!(d->con_temp > 0)) return err_set(e, "loss.contrastive_temp: must be > 0");
    if (d->label_mix < 0 || d->label_mix > 1) return err_set(e, "loss.label_mix: %g is not in [0, 1]", (double)d->label_mix);
    if (!(d->head_dropout >= 0 && d->head_dropout < 1)) return err_set(e, "student.dropout: must be in [0, 1)");
    if (d->second_view_scale[0] <= 0 || d->second_view_scale[0] > d->second_view_scale[1] || d->second_view_scale[1] > 1)
        return err_set(e, "loss.second_view_scale: expected 0 < lo <= hi <= 1");
    if (d->con_variant == CON_LABEL_AWARE && d->w_con > 0 && d->n_heads == 0)
        return err_set(e, "loss.contrastive: label_aware needs supervised heads (heads.names)");
    if (d->probe_k < 1) return err_set(e, "probe.k: must be >= 1");
    return 0;
}

/* Which teacher dims the run needs: 0 when no loss reads the teacher. */
static int needs_teacher(const DistillConfig *d) {
    return d->w_kd > 0 || d->w_align > 0 || (d->w_con > 0 && d->con_variant == CON_LABEL_AWARE);
}

/* Heads against the prepared file: label column (or finding) and the class map. */
static int resolve_heads(DistillConfig *d, const Prepared *p, Err *e) {
    for (int h = 0; h < d->n_heads; h++) {
        DistillHead *hd = &d->heads[h];
        for (int k = 0; k < 64; k++) hd->src_to_cls[k] = -1;
        if (!strncmp(hd->label, "findings:", 9)) {
            const char *fname = hd->label + 9;
            hd->finding = -1;
            for (int f = 0; f < p->n_findings; f++)
                if (!strcmp(p->finding_names[f], fname)) hd->finding = f;
            if (hd->finding < 0) return err_set(e, "heads.labels: %s has no finding class '%s'", p->path, fname);
            if (hd->classes[0]) return err_set(e, "heads.classes: head '%s' is a binary finding head; give ''", hd->name);
            hd->n_classes = 2;
            continue;
        }
        hd->col = prep_label_col(p, hd->label);
        if (hd->col < 0) return err_set(e, "heads.labels: %s has no label column '%s'", p->path, hd->label);
        const int nsrc = p->n_classes[hd->col];
        if (!hd->classes[0]) {
            hd->n_classes = nsrc;
            for (int k = 0; k < nsrc; k++) hd->src_to_cls[k] = k;
            continue;
        }
        char buf[256];
        snprintf(buf, sizeof buf, "%s", hd->classes);
        int n = 0;
        for (char *s1 = NULL, *tok = strtok_r(buf, " ", &s1); tok; tok = strtok_r(NULL, " ", &s1), n++) {
            for (char *s2 = NULL, *nm = strtok_r(tok, "|", &s2); nm; nm = strtok_r(NULL, "|", &s2)) {
                int k = -1;
                for (int j = 0; j < nsrc; j++)
                    if (!strcmp(p->class_names[hd->col][j], nm)) k = j;
                if (k < 0) return err_set(e, "heads.classes: head '%s': '%s' is not a class of %s:%s", hd->name, nm, p->path, hd->label);
                if (hd->src_to_cls[k] >= 0) return err_set(e, "heads.classes: head '%s': class '%s' given twice", hd->name, nm);
                hd->src_to_cls[k] = n;
            }
        }
        if (n < 2) return err_set(e, "heads.classes: head '%s' has %d class(es), needs at least 2", hd->name, n);
        hd->n_classes = n;
    }
    return 0;
}

/* mapped label of head h for batch row j (-1: missing or dropped by the class map) */
static int32_t head_label(const DistillHead *hd, const Batch *b, int n_labels, int n_findings, int j) {
    if (hd->finding >= 0) return b->findings ? b->findings[(size_t)j * n_findings + hd->finding] != 0 : -1;
    int32_t v = b->labels[(size_t)j * n_labels + hd->col];
    return v >= 0 && v < 64 ? hd->src_to_cls[v] : -1;
}

/* ------------------------------------------------------------------------------------------ */
/* model */

void distill_model_declare(DistillModel *m, const DistillConfig *d, ParamStore *ps, int teacher_dim) {
    memset(m, 0, sizeof(*m));
    EffNetConfig nc = d->net;
    nc.num_classes = 0;   /* no _fc: the Mammo-CLIP / VersaMammo encoder */
    effnet_declare(&m->backbone, &nc, ps, "");
    m->n_heads = d->n_heads;
    m->head_dropout = d->head_dropout;
    for (int h = 0; h < d->n_heads; h++)
        linear_declare(&m->heads[h], ps, "heads", d->heads[h].name, m->backbone.feat_dim, d->heads[h].n_classes, 1);
    if (teacher_dim > 0) {
        linear_declare(&m->projector, ps, "", "projector", m->backbone.feat_dim, teacher_dim, 1);
        m->has_projector = 1;
    }
}

void distill_model_init(DistillModel *m, Rng *r) {
    effnet_init(&m->backbone, r);
    for (int h = 0; h < m->n_heads; h++) init_torch_default_linear(&m->heads[h], r);
    if (m->has_projector) init_torch_default_linear(&m->projector, r);
}

DistillOut distill_model_forward(Ctx *c, const DistillModel *m, Tensor *x) {
    DistillOut o;
    memset(&o, 0, sizeof o);
    EffNetOut eo = effnet_forward(c, &m->backbone, x);
    o.feat = eo.pooled;                                           /* (B, feat_dim) */
    Tensor *h = m->head_dropout > 0 ? op_dropout(c, o.feat, m->head_dropout) : o.feat;
    for (int k = 0; k < m->n_heads; k++) o.logits[k] = linear_forward(c, &m->heads[k], h);
    if (m->has_projector) o.proj = linear_forward(c, &m->projector, o.feat);
    return o;
}

/* Copies the lukemelas-named backbone tensors (values and BN buffers) of an HDF5 file into m's
 * backbone; other tensors of the file (heads, projector, _fc) are ignored. */
static int load_backbone(const char *path, const DistillModel *m, ParamStore *dst, Err *e) {
    ParamStore tmp;
    params_init(&tmp);
    tmp.values_only = 1;
    EffNet bb;
    effnet_declare(&bb, &m->backbone.cfg, &tmp, "");
    params_alloc(&tmp);
    CkptStore st = {.prefix = "", .ps = &tmp, .partial = 1};
    int rc = ckpt_load_stores(path, &st, 1, NULL, NULL, 0, NULL, 0, e);
    if (rc == 0) {
        for (size_t i = 0; i < tmp.n; i++) {
            Param *p = params_find(dst, tmp.p[i].name);
            if (!p || p->t->numel != tmp.p[i].t->numel) {
                rc = err_set(e, "%s: backbone tensor '%s' does not match the student", path, tmp.p[i].name);
                break;
            }
            memcpy(p->t->data, tmp.p[i].t->data, p->t->numel * sizeof(float));
        }
    }
    params_free(&tmp);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* teacher features file */

static float *read_2d(hid_t f, const char *name, size_t n_expected, size_t *n, size_t *d, Err *e, const char *path) {
    hid_t ds = H5Dopen2(f, name, H5P_DEFAULT);
    if (ds < 0) {
        err_set(e, "%s: missing dataset '/%s' (not a versa extract file?)", path, name);
        return NULL;
    }
    hid_t sp = H5Dget_space(ds);
    hsize_t dims[2] = {0, 1};
    int nd = H5Sget_simple_extent_ndims(sp);
    if (nd < 1 || nd > 2) {
        H5Sclose(sp);
        H5Dclose(ds);
        err_set(e, "%s: '/%s' has %d dims, expected 1 or 2", path, name, nd);
        return NULL;
    }
    H5Sget_simple_extent_dims(sp, dims, NULL);
    H5Sclose(sp);
    *n = dims[0];
    *d = nd == 2 ? dims[1] : 1;
    /* sizes from the file, checked before allocating (n * d could overflow): the row count must
     * be the prepared file's (itself at most 2^24), a feature at most 2^16 wide */
    if (*n != n_expected || *d == 0 || *d > ((size_t)1 << 16)) {
        H5Dclose(ds);
        if (*n != n_expected)
            err_set(e, "%s: '/%s' has %zu rows but the prepared file has %zu samples (features of another dataset?)", path,
                    name, *n, n_expected);
        else if (*d == 0) err_set(e, "%s: '/%s' has no values per row", path, name);   /* found by fuzz_features */
        else err_set(e, "%s: '/%s' has %zu values per row (at most 65536)", path, name, *d);
        return NULL;
    }
    float *x = malloc((*n * *d + 1) * sizeof(float));
    if (!x || H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) < 0) {
        free(x);
        H5Dclose(ds);
        err_set(e, "%s: cannot read '/%s'", path, name);
        return NULL;
    }
    H5Dclose(ds);
    return x;
}

int teacher_features_load(const char *path, int which, size_t n_expected, TeacherFeatures *tf, Err *e) {
    memset(tf, 0, sizeof(*tf));
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) return err_set(e, "%s: cannot open (not an HDF5 file, or missing)", path);
    const char *names[3] = {which == TFEAT_GAP ? "gap" : "cls", "dino_bottleneck", "ibot_bottleneck"};
    int nparts = which == TFEAT_CONCAT ? (H5Lexists(f, "ibot_bottleneck", H5P_DEFAULT) > 0 ? 3 : 2) : 1;
    float *part[3] = {NULL, NULL, NULL}, *sample = NULL;
    size_t pn[3], pd[3], sn, sd;
    int rc = 1;
    for (int k = 0; k < nparts; k++)
        if (!(part[k] = read_2d(f, names[k], n_expected, &pn[k], &pd[k], e, path))) goto out;
    if (!(sample = read_2d(f, "sample", n_expected, &sn, &sd, e, path))) goto out;
    for (int k = 0; k < nparts; k++)
        if (pn[k] != n_expected) {
            err_set(e, "%s: '/%s' has %zu rows but the prepared file has %zu samples (features of another dataset?)", path,
                    names[k], pn[k], n_expected);
            goto out;
        }
    if (sn != n_expected || sd != 1) {
        if (sn != n_expected) err_set(e, "%s: '/sample' has %zu rows, expected %zu", path, sn, n_expected);
        else err_set(e, "%s: '/sample' has %zu values per row, expected one sample index", path, sd);
        goto out;
    }
    tf->n = n_expected;
    for (int k = 0; k < nparts; k++) tf->dim += pd[k];
    tf->x = malloc((tf->n * tf->dim + 1) * sizeof(float));
    uint8_t *seen = calloc(tf->n + 1, 1);
    if (!tf->x || !seen) {
        free(seen);
        err_set(e, "%s: out of memory for %zu x %zu teacher features", path, tf->n, tf->dim);
        goto out;
    }
    /* row r of the file is prepared sample `sample[r]`: store features by sample index */
    for (size_t r = 0; r < tf->n; r++) {
        float s = sample[r];
        /* range first: converting a negative, NaN or huge float to size_t is undefined (fuzz_features) */
        size_t i = s >= 0.0f && s < (float)tf->n ? (size_t)s : tf->n;
        if (i >= tf->n || (float)i != s || seen[i]) {
            free(seen);
            err_set(e, "%s: '/sample' row %zu: %g is not a new sample index below %zu", path, r, (double)s, tf->n);
            goto out;
        }
        seen[i] = 1;
        float *dst = tf->x + i * tf->dim;
        for (int k = 0; k < nparts; k++) {
            memcpy(dst, part[k] + r * pd[k], pd[k] * sizeof(float));
            dst += pd[k];
        }
    }
    free(seen);
    for (size_t i = 0; i < tf->n * tf->dim; i++)
        if (!isfinite(tf->x[i])) {
            err_set(e, "%s: non-finite teacher feature (sample %zu)", path, i / tf->dim);
            goto out;
        }
    rc = 0;
out:
    for (int k = 0; k < 3; k++) free(part[k]);
    free(sample);
    H5Fclose(f);
    if (rc) teacher_features_free(tf);
    return rc;
}

void teacher_features_free(TeacherFeatures *tf) {
    free(tf->x);
    memset(tf, 0, sizeof(*tf));
}

/* ------------------------------------------------------------------------------------------ */
/* online teacher: the stage-1 ViT in no-grad eval mode on the student's batch */

typedef struct OnlineTeacher {
    SslConfig s;
    SslModel m;
    ParamStore ps;
    int size, dim, loaded;
    float mean[3], std[3];
} OnlineTeacher;

static int online_teacher_open(OnlineTeacher *ot, const DistillConfig *d, Err *e) {
    memset(ot, 0, sizeof(*ot));
    if (!d->teacher_ckpt[0]) return err_set(e, "teacher.checkpoint: required with teacher.source: online");
    if (ssl_load_model(d->teacher_ckpt, d->teacher_model, &ot->s, &ot->m, &ot->ps, e)) return 1;
    ot->loaded = 1;
    ot->size = d->teacher_size > 0 ? d->teacher_size : ot->s.global_size;
    if (ot->size % ot->s.vit.patch)
        return err_set(e, "teacher.image_size: %d is not a multiple of the teacher's patch size %d", ot->size, ot->s.vit.patch);
    const int C = ot->s.vit.embed_dim;
    ot->dim = d->teacher_feature == TFEAT_CONCAT ? C + ot->s.dino_bottleneck + (ot->s.ibot_separate ? ot->s.ibot_bottleneck : 0) : C;
    MultiCropConfig mc = multicrop_default();   /* the normalisation the teacher was trained with */
    memcpy(ot->mean, mc.mean, sizeof ot->mean);
    memcpy(ot->std, mc.std, sizeof ot->std);
    return 0;
}

static void online_teacher_close(OnlineTeacher *ot) {
    if (!ot->loaded) return;
    ssl_model_free(&ot->m);
    params_free(&ot->ps);
    ot->loaded = 0;
}

/* Teacher features (B, dim) of the student's input x (B, 3, H, W) into out: undo the student's
 * normalisation, apply the teacher's, resize bilinearly to the teacher's size; as extract.c. */
static void online_teacher_features(Ctx *c, OnlineTeacher *ot, const DistillConfig *d, Tensor *x, float *out) {
    int prev_grad = ctx_set_grad(c, 0), prev_train = c->training;
    c->training = 0;
    const size_t B = x->shape[0], C = x->shape[1], HW = x->shape[2] * x->shape[3];
    Tensor *xt = tensor_new(c, 4, x->shape);
    for (size_t b = 0; b < B; b++)
        for (size_t ch = 0; ch < C; ch++) {
            const float *s = x->data + (b * C + ch) * HW;
            float *o = xt->data + (b * C + ch) * HW;
            const float a = d->std / ot->std[ch], k = (d->mean - ot->mean[ch]) / ot->std[ch];
            for (size_t i = 0; i < HW; i++) o[i] = s[i] * a + k;
        }
    if ((int)x->shape[2] != ot->size || (int)x->shape[3] != ot->size) xt = op_resize_bilinear(c, xt, ot->size, ot->size);
    ViTOut vo = vit_forward(c, &ot->m.backbone, xt, NULL);
    const size_t E = (size_t)ot->s.vit.embed_dim, D = (size_t)ot->dim;
    Tensor *zd = NULL, *zi = NULL;
    if (d->teacher_feature == TFEAT_CONCAT) {
        dino_head_forward(c, &ot->m.dino_head, vo.cls, &zd);
        if (ot->s.ibot_separate) dino_head_forward(c, &ot->m.ibot_head, vo.pooled, &zi);
    }
    for (size_t b = 0; b < B; b++) {
        float *o = out + b * D;
        const Tensor *first = d->teacher_feature == TFEAT_GAP ? vo.pooled : vo.cls;
        memcpy(o, first->data + b * E, E * sizeof(float));
        if (zd) {
            size_t bd = zd->shape[1];
            memcpy(o + E, zd->data + b * bd, bd * sizeof(float));
            if (zi) memcpy(o + E + bd, zi->data + b * zi->shape[1], zi->shape[1] * sizeof(float));
        }
    }
    ctx_set_grad(c, prev_grad);
    c->training = prev_train;
}

/* ------------------------------------------------------------------------------------------ */
/* data parallelism: gather rows for the batch relations */

/* (B, D) on each rank -> (world * B, D) in rank order.  Every rank then evaluates the same
 * relational loss; its backward keeps this rank's rows, times world because
 * dist_allreduce_grads averages the ranks' gradients (the sum over ranks is the true one). */
static void gather_rows_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0];
    if (!x->requires_grad) return;
    const size_t rows = x->shape[0], D = x->shape[1];
    const long rank = n->i[0];
    const float world = n->f[0];
    float *dx = tensor_grad(c, x);
    const float *g = n->out->grad + (size_t)rank * rows * D;
    for (size_t k = 0; k < rows * D; k++) dx[k] += world * g[k];
}

static Tensor *gather_rows(Ctx *c, Tensor *x) {
    if (c->world == 1) return x;
    x = op_contiguous(c, x);
    const size_t rows = x->shape[0], D = x->shape[1];
    Tensor *out = tensor_new_(c, rows * (size_t)c->world, D);
    dist_allgather(c, x->data, rows * D * sizeof(float), out->data);
    Node *n = op_record(c, "gather_rows", gather_rows_backward, out, &x, 1);
    if (n) {
        n->i[0] = c->rank;
        n->f[0] = (float)c->world;
    }
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* the second augmented view (loss.second_view: augmented): a RandomResizedCrop + flip of the
 * first view, drawn for the global batch so the result does not depend on the world size */

static void second_view(Ctx *c, const DistillConfig *d, const float *x, size_t B, size_t C, int H, int W, int S,
                        AugWork *ws, float *out) {
    const float ratio[2] = {3.0f / 4.0f, 4.0f / 3.0f};
    for (size_t g = 0; g < B * (size_t)c->world; g++) {
        CropBox box = rrc_params(&c->rng, W, H, d->second_view_scale, ratio);
        int flip = rng_uniform(&c->rng) < 0.5f;
        if (g / B != (size_t)c->rank) continue;
        size_t b = g % B;
        for (size_t ch = 0; ch < C; ch++) {
            float *o = out + (b * C + ch) * (size_t)S * S;
            resize_crop_bicubic(x + (b * C + ch) * (size_t)H * W, W, H, box, o, S, S, ws);
            if (flip) hflip_f32(o, S, S);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* the run */

typedef struct StepStats {
    double total, kd, con, align;
    double ce[DISTILL_MAX_HEADS], acc[DISTILL_MAX_HEADS];
} StepStats;

static int argmax_row(const float *x, int n) {
    int k = 0;
    for (int j = 1; j < n; j++)
        if (x[j] > x[k]) k = j;
    return k;
}

int distill_train(const Config *cfg, int resume, Ctx *c, TrainRunResult *res, Err *e) {
    DistillConfig d;
    if (distill_config_from(cfg, &d, e)) return 1;
    if (!d.prepared[0]) return err_set(e, "data.prepared: no prepared dataset given (e.g. data.prepared=out/vindr.h5)");
    CorpusSource src = {d.prepared, 1.0f};
    Corpus corpus;
    if (corpus_open(&corpus, &src, 1, e)) return 1;
    const Prepared *P = &corpus.src[0];

    int rc = 1;
    ParamStore ps;
    params_init(&ps);
    DistillModel model;
    memset(&model, 0, sizeof model);
    TeacherFeatures tf = {0};
    OnlineTeacher ot;
    memset(&ot, 0, sizeof ot);
    Loader *loader = NULL;
    char *yaml = NULL;
    AugWork ws = {0};
    TrainLoop t = {0};
    if (resolve_heads(&d, P, e)) goto done;

    /* teacher signal (before the loader: HDF5 is not used from two threads at once) */
    int tdim = 0;
    if (needs_teacher(&d)) {
        if (d.teacher_source == TEACHER_FEATURES) {
            if (!d.features_path[0]) {
                err_set(e, "teacher.features: required (a `versa extract` file for %s), or set teacher.source: online",
                        d.prepared);
                goto done;
            }
            if (teacher_features_load(d.features_path, d.teacher_feature, P->n, &tf, e)) goto done;
            tdim = (int)tf.dim;
        } else {
            if (online_teacher_open(&ot, &d, e)) goto done;
            tdim = ot.dim;
        }
    }

    /* student */
    distill_model_declare(&model, &d, &ps, d.w_align > 0 ? tdim : 0);
    params_alloc(&ps);
    {
        Rng init_rng;
        rng_init(&init_rng, d.seed);
        distill_model_init(&model, &init_rng);
    }
    if (d.init_path[0] && load_backbone(d.init_path, &model, &ps, e)) goto done;
    for (size_t i = 0; i < ps.n; i++)   /* no decay on biases and norm parameters */
        ps.p[i].wd_mult = ps.p[i].t->ndim <= 1 ? 0.0f : 1.0f;
    dist_broadcast_params(c, &ps);

    /* the loader: per-epoch batches first, to size the run and find the resume position */
    LoaderConfig lc = loader_config_default(LOADER_PLAIN);
    lc.batch_size = d.batch;
    lc.split = d.split;
    lc.shuffle = 1;
    lc.drop_last = 1;   /* equal batches on every rank (the relation gather needs them) */
    lc.seed = d.seed;
    lc.rank = c->rank;
    lc.world = c->world;
    lc.n_workers = d.n_workers;
    lc.channels = 3;
    lc.on_error = d.skip_bad_images ? LOADER_SKIP : LOADER_FAIL;
    lc.plain.out_h = lc.plain.out_w = d.image_size;
    lc.plain.rrc_scale[0] = d.rrc_scale[0];
    lc.plain.rrc_scale[1] = d.rrc_scale[1];
    lc.plain.hflip_p = d.hflip;
    for (int k = 0; k < 3; k++) {
        lc.plain.mean[k] = d.mean;
        lc.plain.std[k] = d.std;
    }
    long per_epoch;
    {
        Loader *probe = NULL;
        if (loader_open(&probe, &corpus, &lc, e)) goto done;
        per_epoch = loader_batches_per_epoch(probe);
        loader_close(probe);
    }
    if (per_epoch < 1) {
        err_set(e, "%s: fewer '%s' images than one global batch (%d x %d ranks)", d.prepared,
                d.split < 0 ? "all" : prep_split_name(d.split), d.batch, c->world);
        goto done;
    }
    /* schedules run over the configured epochs; train.max_steps only stops early (so a run cut
     * short and resumed sees the learning rates of the uninterrupted one) */
    const long sched_total = d.epochs * per_epoch;
    long total = sched_total;
    if (d.max_steps > 0 && d.max_steps < total) total = d.max_steps;

    yaml = cfg_to_yaml(cfg);
    Rng train_rng;
    rng_init(&train_rng, d.seed ^ 0xd15711ULL);
    CkptStore stores[1] = {{.prefix = "", .ps = &ps, .with_optim = 1}};
    t = (TrainLoop){.name = "distill", .out_dir = d.out_dir, .total_steps = total, .ckpt_every = d.ckpt_every,
                    .log_every = d.log_every, .nan_policy = d.nan_skip ? TRAIN_NAN_SKIP : TRAIN_NAN_STOP, .ctx = c,
                    .stores = stores, .n_stores = 1, .config_text = yaml, .rng = &train_rng,
                    .quiet = res ? res->quiet : 0};
    if (train_begin(&t, resume, e)) goto done;
    c->rng = train_rng;
    lc.start_epoch = t.step / per_epoch;
    lc.start_index = t.step % per_epoch;
    if (loader_open(&loader, &corpus, &lc, e)) goto done;

    const int n_labels = loader_n_labels(loader), n_findings = loader_n_findings(loader);
    const int H = d.n_heads;
    const size_t B = (size_t)d.batch, W = (size_t)c->world, GB = B * W;
    const int two_pass = d.w_con > 0 && d.con_variant == CON_RELEASED;
    const int S2 = d.second_view_size > 0 ? d.second_view_size : d.image_size;
    /* per-step host buffers (sized once) */
    float *tfeat = malloc((GB * (size_t)(tdim > 0 ? tdim : 1)) * sizeof(float));   // (GB, tdim) global
    int32_t *lab = malloc((B * (size_t)(H > 0 ? H : 1)) * sizeof(int32_t));        // (B, H) this rank
    int32_t *glab = malloc((GB * (size_t)(H > 0 ? H : 1)) * sizeof(int32_t));      // (GB, H) gathered
    float *T = malloc(GB * GB * sizeof(float));                                    // (GB, GB) soft target
    float *x2 = two_pass && d.second_view_aug ? malloc(B * 3 * (size_t)S2 * S2 * sizeof(float)) : NULL;
    int32_t *tgt = malloc(B * sizeof(int32_t));                                    // (B) one head's labels
    float *buf_saved = d.nan_skip ? malloc((ps.n_buf + 1) * sizeof(float)) : NULL;  // (n_buf) BN buffers
    float *local_t = malloc((B * (size_t)(tdim > 0 ? tdim : 1)) * sizeof(float));  // (B, tdim)
    if (!tfeat || !lab || !glab || !T || !tgt || !local_t || (two_pass && d.second_view_aug && !x2)) {
        err_set(e, "distill: out of memory for the step buffers");
        goto step_free;
    }

    OptimConfig oc = optim_adamw_default();
    oc.kind = d.adamw ? OPTIM_ADAMW : OPTIM_ADAM;
    oc.lr = d.lr;
    oc.weight_decay = d.wd;
    oc.beta1 = d.beta1;
    oc.beta2 = d.beta2;
    oc.eps = d.eps;
    const double final_lr = d.schedule == OPT_SCHED_COSINE ? d.min_lr : d.lr;
    int first_step = 1;   /* of this call (a resumed run reports from where it resumed) */
    while (t.step < t.total_steps) {
        const long it = t.step;
        const double lr = sched_cosine(it, sched_total, d.lr, final_lr, d.warmup, 0.0);
        const Batch *bt;
        if (loader_next(loader, &bt, e)) goto step_free;
        if ((size_t)bt->n != B) {   /* drop_last: never, unless the loader changes */
            err_set(e, "distill: step %ld: batch of %d images, expected %zu", it + 1, bt->n, B);
            goto step_free;
        }
        ctx_step_begin(c);
        params_zero_grad(&ps);
        if (buf_saved) memcpy(buf_saved, ps.buf, ps.n_buf * sizeof(float));
        const size_t Hh = (size_t)d.image_size;
        if (train_inject_nan_step() == it + 1) bt->image[0] = NAN;   /* test-only (engine/train.h) */
        Tensor *x = tensor_wrap(c, bt->image, 4, TSHAPE(B, 3, Hh, Hh));
        /* labels mapped through the class maps; gathered for the label-aware targets */
        for (size_t j = 0; j < B; j++)
            for (int h = 0; h < H; h++) lab[j * (size_t)H + (size_t)h] = head_label(&d.heads[h], bt, n_labels, n_findings, (int)j);
        /* teacher rows of this rank, then of the global batch */
        if (tdim > 0) {
            if (d.teacher_source == TEACHER_FEATURES) {
                for (size_t j = 0; j < B; j++)
                    memcpy(local_t + j * (size_t)tdim, tf.x + (size_t)bt->sample[j] * (size_t)tdim, (size_t)tdim * sizeof(float));
            } else {
                online_teacher_features(c, &ot, &d, x, local_t);
            }
            if (W > 1) dist_allgather(c, local_t, B * (size_t)tdim * sizeof(float), tfeat);
            else memcpy(tfeat, local_t, B * (size_t)tdim * sizeof(float));
        }
        /* labelled rows per head over all ranks, for the global mean of each cross-entropy */
        double cnt[DISTILL_MAX_HEADS + 1] = {0};
        for (int h = 0; h < H; h++)
            for (size_t j = 0; j < B; j++) cnt[h] += lab[j * (size_t)H + (size_t)h] >= 0;
        double local_cnt[DISTILL_MAX_HEADS + 1];
        memcpy(local_cnt, cnt, sizeof cnt);
        if (W > 1 && H > 0) dist_allreduce_sum_double(c, cnt, (size_t)H);

        /* ---- forward ---- */
        const int prev_train = c->training, prev_sync = c->sync_bn;
        c->training = d.train_mode;
        c->sync_bn = d.sync_bn;
        DistillOut o1 = distill_model_forward(c, &model, x), o2 = o1;
        if (two_pass) {
            Tensor *xl = x;   /* released quirk Q3: the "low-res" input is the same image */
            if (d.second_view_aug) {
                second_view(c, &d, bt->image, B, 3, (int)Hh, (int)Hh, S2, &ws, x2);
                xl = tensor_wrap(c, x2, 4, TSHAPE(B, 3, (size_t)S2, (size_t)S2));
            }
            o2 = distill_model_forward(c, &model, xl);
        }
        c->training = prev_train;
        c->sync_bn = prev_sync;
        StepStats st;
        memset(&st, 0, sizeof st);
        Tensor *total_t = NULL;
#define ADD_TERM(term, w)                                                                  \
    do {                                                                                   \
        Tensor *s_ = op_scale(c, (term), (w));                                             \
        total_t = total_t ? op_add(c, total_t, s_) : s_;                                   \
    } while (0)
        Tensor *f = gather_rows(c, o1.feat);
        if (d.w_kd > 0) {
            Tensor *l = rkd_kl_loss(c, f, tfeat, (size_t)tdim);
            st.kd = l->data[0];
            ADD_TERM(l, d.w_kd);
        }
        if (d.w_con > 0) {
            Tensor *fa = f, *fb = NULL;
            if (d.con_normalize) fa = op_l2_normalize(c, fa, 1e-12f);
            if (d.con_variant == CON_RELEASED) {
                fb = gather_rows(c, o2.feat);
                if (d.con_normalize) fb = op_l2_normalize(c, fb, 1e-12f);
            } else {
                if (W > 1) dist_allgather(c, lab, B * (size_t)H * sizeof(int32_t), glab);
                else memcpy(glab, lab, B * (size_t)H * sizeof(int32_t));
                float *g = arena_alloc(&c->step, GB * (size_t)tdim * sizeof(float));   // (GB, tdim)
                memcpy(g, tfeat, GB * (size_t)tdim * sizeof(float));
                if (d.con_normalize) l2_normalize_rows(g, GB, (size_t)tdim);
                relation_label_targets(g, GB, (size_t)tdim, glab, H, d.con_temp, d.label_mix, T);
            }
            Tensor *l = relation_ce_loss(c, fa, fb, fb ? NULL : T, d.con_temp);
            st.con = l->data[0];
            ADD_TERM(l, d.w_con);
        }
        if (d.w_align > 0) {
            Tensor *l = feature_align_loss(c, gather_rows(c, o1.proj), tfeat, d.align_mode);
            st.align = l->data[0];
            ADD_TERM(l, d.w_align);
        }
        /* supervised heads on the last pass (the released code's CE uses pass 2) */
        double sums[2 * DISTILL_MAX_HEADS] = {0};   /* per head: CE * local count, correct rows */
        for (int h = 0; h < H && d.w_sup > 0; h++) {
            const DistillHead *hd = &d.heads[h];
            for (size_t j = 0; j < B; j++) tgt[j] = lab[j * (size_t)H + (size_t)h];
            if (cnt[h] == 0) continue;
            Tensor *logits = o2.logits[h];
            Tensor *l = loss_cross_entropy(c, logits, tgt, 0.0f);
            sums[2 * h] = (double)l->data[0] * local_cnt[h];
            for (size_t j = 0; j < B; j++)
                if (tgt[j] >= 0) sums[2 * h + 1] += argmax_row(logits->data + j * (size_t)hd->n_classes, hd->n_classes) == tgt[j];
            /* this rank's share of the global mean (1 on one rank) */
            float share = W > 1 ? (float)(local_cnt[h] * (double)W / cnt[h]) : 1.0f;
            ADD_TERM(l, d.w_sup * hd->weight * share);
        }
#undef ADD_TERM
        if (W > 1 && H > 0) dist_allreduce_sum_double(c, sums, 2 * (size_t)H);
        double sup = 0;
        for (int h = 0; h < H; h++) {
            st.ce[h] = cnt[h] > 0 ? sums[2 * h] / cnt[h] : 0.0;
            st.acc[h] = cnt[h] > 0 ? sums[2 * h + 1] / cnt[h] : 0.0;
            sup += d.heads[h].weight * st.ce[h];
        }
        st.total = d.w_kd * st.kd + d.w_con * st.con + d.w_align * st.align + d.w_sup * sup;
        if (total_t && isfinite(st.total)) backward(c, total_t);

        /* ---- gradients over ranks, metrics, NaN guard, update ---- */
        dist_allreduce_grads(c, &ps);
        /* BN: local batch statistics (or the global ones, student.sync_bn); the running buffers
         * are averaged over ranks every step (with sync_bn they are already equal) */
        if (W > 1) dist_allreduce_mean(c, ps.buf, ps.n_buf);
        /* the norm before clipping; NaN/Inf here stops (or skips) the step like a bad loss */
        const double gnorm = d.clip > 0 ? clip_grad_norm(&ps, d.clip) : grad_global_norm(&ps);
        Metric m[7 + 2 * DISTILL_MAX_HEADS];
        char mnames[2 * DISTILL_MAX_HEADS][64];
        int nm = 0;
        m[nm++] = (Metric){"loss", st.total};
        m[nm++] = (Metric){"kd", st.kd};
        m[nm++] = (Metric){"con", st.con};
        if (d.w_align > 0) m[nm++] = (Metric){"align", st.align};
        for (int h = 0; h < H; h++) {
            snprintf(mnames[2 * h], 64, "ce_%s", d.heads[h].name);
            snprintf(mnames[2 * h + 1], 64, "acc_%s", d.heads[h].name);
            m[nm++] = (Metric){mnames[2 * h], st.ce[h]};
            m[nm++] = (Metric){mnames[2 * h + 1], st.acc[h]};
        }
        m[nm++] = (Metric){"grad_norm", gnorm};
        m[nm++] = (Metric){"lr", lr};
        if (d.skip_bad_images) m[nm++] = (Metric){"bad_images", (double)bt->n_skipped};   /* replaced so far */
        const char *bad = NULL;
        if (train_metrics_bad(&t, m, nm, &bad)) {
            if (d.nan_skip) {
                /* the forward already moved the BN running statistics: put them back */
                memcpy(ps.buf, buf_saved, ps.n_buf * sizeof(float));
                train_skip_step(&t, m, nm);
                train_rng = c->rng;
                continue;
            }
            err_set(e, "distill: step %ld: %s is not finite (loss %g, kd %g, con %g, grad norm %g); stopping, the last "
                       "checkpoint is kept", it + 1, bad, st.total, st.kd, st.con, gnorm);
            goto step_free;
        }
        optim_step(&ps, &oc, it + 1, lr, d.wd);
        train_rng = c->rng;
        if (train_end_step(&t, m, nm, (double)GB, e)) goto step_free;
        if (res) {
            if (first_step) res->first_loss = st.total;
            res->last_loss = st.total;
        }
        first_step = 0;
    }
    if (train_finish(&t, e)) goto step_free;
    if (res) {
        res->steps = t.step;
        res->seconds = wall_seconds() - t.t_begin;
        res->images = t.images_total;
    }
    rc = 0;
step_free:
    free(tfeat);
    free(lab);
    free(glab);
    free(T);
    free(x2);
    free(tgt);
    free(local_t);
    free(buf_saved);
done:
    if (t.metrics) fclose(t.metrics);
    loader_close(loader);
    augwork_free(&ws);
    free(yaml);
    teacher_features_free(&tf);
    online_teacher_close(&ot);
    params_free(&ps);
    corpus_close(&corpus);
    return rc;
}
