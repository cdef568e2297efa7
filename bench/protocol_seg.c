/* protocol_seg.c — the segmentation protocol (recipe.md §3.3): a UNet decoder (EfficientNet) or
 * TransUNet-style cup decoder (ViT) on the frozen backbone, BCE + Dice (smooth 1e-6), H/V flips,
 * per-image Dice and IoU at threshold 0.5 with the logits resized bilinearly to the mask's size. */
#include "bench/bench.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

void bench_dice_iou(const uint8_t *pred, const uint8_t *gt, size_t n, double *dice, double *iou) {
    size_t inter = 0, sp = 0, sg = 0;
    for (size_t i = 0; i < n; i++) {
        inter += pred[i] && gt[i];
        sp += pred[i] != 0;
        sg += gt[i] != 0;
    }
    size_t uni = sp + sg - inter;
    *dice = sp + sg ? 2.0 * (double)inter / (double)(sp + sg) : 1.0;
    *iou = uni ? (double)inter / (double)uni : 1.0;
}

typedef struct SegItem {
    uint8_t split;
    int h, w;            /* the mask's (prepared) size */
    float *img;          // (S, S) normalised gray
    float *mask;         // (S, S) target at input size (bilinear, in [0, 1])
    uint8_t *full;       // (h, w) test items: the mask at its own size
} SegItem;

typedef struct SegSet {
    SegItem *it;
    size_t n, cap;
} SegSet;

static void segset_free(SegSet *s) {
    for (size_t i = 0; i < s->n; i++) {
        free(s->it[i].img);
        free(s->it[i].mask);
        free(s->it[i].full);
    }
    free(s->it);
    memset(s, 0, sizeof *s);
}

/* images whose mask is annotated and not empty and, when the file has finding classes, with a
 * box of one of the task's classes (the paper segments the mass images; the mask is the file's
 * union over the image's ROIs) */
static int load_file(const BenchTask *t, const char *path, int S, const BenchSettings *st, SegSet *set, Err *e) {
    Prepared p;
    if (prep_open(&p, path, e)) return 1;
    int rc = 0;
    if (p.masks < 0 || !p.mask_present) {
        prep_close(&p);
        return err_set(e, "%s: no masks (/masks) for a segmentation task", path);
    }
    int map[PREP_MAX_FINDINGS], none = -1;
    uint32_t cmask[PREP_MAX_FINDINGS];
    if (p.n_findings > 0 && bench_class_map(t, path, p.finding_names, p.n_findings, map, cmask, &none, e)) {
        prep_close(&p);
        return 1;
    }
    const size_t HW = (size_t)p.h * p.w;
    float *raw = malloc(HW * sizeof(float)), *mf = malloc(HW * sizeof(float));
    uint8_t *m8 = malloc(HW);
    for (size_t i = 0; i < p.n && !rc; i++) {
        if (!p.mask_present[i] || p.split[i] > PREP_SPLIT_TEST) continue;
        if (p.n_findings > 0 && p.n_boxes > 0) {
            int of_task = 0;
            const PrepBox *bx = prep_sample_boxes(&p, i);
            for (size_t k = 0; k < prep_n_boxes(&p, i); k++)
                of_task |= bx[k].label >= 0 && bx[k].label < p.n_findings && map[bx[k].label] >= 0;
            if (!of_task) continue;
        }
        if (prep_read_mask(&p, i, m8, e)) {
            rc = 1;
            break;
        }
        size_t on = 0;
        for (size_t k = 0; k < HW; k++) on += m8[k] != 0;
        if (!on) continue;
        if (set->n == set->cap) {
            set->cap = set->cap ? 2 * set->cap : 256;
            set->it = realloc(set->it, set->cap * sizeof(SegItem));
        }
        SegItem *it = &set->it[set->n];
        memset(it, 0, sizeof *it);
        it->split = p.split[i];
        it->h = p.h;
        it->w = p.w;
        it->img = malloc((size_t)S * S * sizeof(float));
        it->mask = malloc((size_t)S * S * sizeof(float));
        set->n++;
        if (bench_dense_image(&p, i, S, st->mean, st->std, raw, it->img, e)) {
            rc = 1;
            break;
        }
        for (size_t k = 0; k < HW; k++) mf[k] = m8[k] ? 1.0f : 0.0f;
        resize_f32(mf, p.w, p.h, it->mask, S, S, RESIZE_BILINEAR);
        if (it->split == PREP_SPLIT_TEST) {
            it->full = malloc(HW);
            for (size_t k = 0; k < HW; k++) it->full[k] = m8[k] != 0;
        }
    }
    free(raw);
    free(mf);
    free(m8);
    prep_close(&p);
    return rc;
}

/* bootstrap statistic: weighted means of per-image Dice and IoU */
typedef struct SegStat {
    const double *dice, *iou;
} SegStat;

static void seg_stat(const void *ud, const uint32_t *w, size_t n, double *out) {
    const SegStat *s = ud;
    double sd = 0, si = 0, sw = 0;
    for (size_t i = 0; i < n; i++) {
        double wi = w ? (double)w[i] : 1.0;
        sd += wi * s->dice[i];
        si += wi * s->iou[i];
        sw += wi;
    }
    out[0] = sw > 0 ? sd / sw : NAN;
    out[1] = sw > 0 ? si / sw : NAN;
}

/* a (S, S) 0/1 map from the per-pixel values > thr */
static void binarize(const float *v, size_t n, float thr, uint8_t *out) {
    for (size_t i = 0; i < n; i++) out[i] = v[i] > thr;
}

int bench_proto_segmentation(Ctx *c, const BenchModel *m, const BenchTask *t, const BenchDenseArgs *a, BenchResult *r,
                             Err *e) {
    const BenchSettings *st = a->s;
    const int S = m->size, B = st->seg.batch;
    const size_t SS = (size_t)S * S;
    SegSet set = {0};
    int rc = 0;
    for (int k = 0; k < t->n_datasets && !rc; k++) {
        char path[1024];
        bench_task_file(t, k, a->data_root, path, sizeof path);
        rc = load_file(t, path, S, st, &set, e);
    }
    if (rc) {
        segset_free(&set);
        return 1;
    }
    uint32_t *train = malloc((set.n + 1) * sizeof(uint32_t)), *test = malloc((set.n + 1) * sizeof(uint32_t));
    size_t ntr = 0, nte = 0;
    for (size_t i = 0; i < set.n; i++) {
        r->n_split[set.it[i].split]++;
        if (set.it[i].split == PREP_SPLIT_TRAIN) train[ntr++] = (uint32_t)i;
        if (set.it[i].split == PREP_SPLIT_TEST) test[nte++] = (uint32_t)i;
    }
    if (ntr == 0 || nte == 0) {
        free(train);
        free(test);
        segset_free(&set);
        return err_set(e, "segmentation needs train and test images with a mask (train %zu, test %zu)", ntr, nte);
    }

    /* ---- the decoder, trained on the frozen backbone ---- */
    BackboneDims bd;
    bench_model_dims(m, &bd);
    ParamStore ps;
    params_init(&ps);
    SegDecoder dec;
    seg_decoder_declare(&dec, &bd, st->seg.width, &ps, "decoder");
    params_alloc(&ps);
    Rng rng;
    rng_init(&rng, a->head_seed);
    seg_decoder_init(&dec, &rng);
    OptimConfig oc = optim_adamw_default();
    oc.weight_decay = 0;
    float *x = malloc((size_t)B * m->in_chans * SS * sizeof(float));   // (B, in_chans, S, S)
    float *y = malloc((size_t)B * SS * sizeof(float));                  // (B, 1, S, S)
    double loss_first = 0, loss_last = 0;
    const long steps = st->seg.steps;
    for (long it = 0; it < steps; it++) {
        ctx_step_begin(c);
        for (int b = 0; b < B; b++) {
            const SegItem *s = &set.it[train[rng_below(&rng, (uint32_t)ntr)]];
            int fh = rng_uniform(&rng) < 0.5f, fv = rng_uniform(&rng) < 0.5f;
            bench_dense_input(s->img, S, m->in_chans, fh, fv, x + (size_t)b * m->in_chans * SS);
            bench_dense_input(s->mask, S, 1, fh, fv, y + (size_t)b * SS);
        }
        Tensor *xt = tensor_from(c, 4, TSHAPE((size_t)B, (size_t)m->in_chans, (size_t)S, (size_t)S), x);
        BackboneMaps f = bench_model_maps(c, m, xt);
        c->training = 1;
        Tensor *logits = seg_decoder_forward(c, &dec, &f);                 // (B, 1, S, S)
        Tensor *yt = tensor_from(c, 4, TSHAPE((size_t)B, 1, (size_t)S, (size_t)S), y);
        Tensor *loss = op_add(c, loss_bce_logits(c, logits, yt, NULL), loss_soft_dice(c, op_sigmoid(c, logits), yt, 1e-6f));
        params_zero_grad(&ps);
        backward(c, loss);
        optim_step(&ps, &oc, it + 1, bench_dense_lr(it, steps, st->seg.lr), 0.0);
        c->training = 0;
        long win = steps < 20 ? 1 : steps / 20;
        if (it < win) loss_first += loss->data[0] / (double)win;
        if (it >= steps - win) loss_last += loss->data[0] / (double)win;
    }

    /* ---- test: per-image Dice / IoU at the mask's size ---- */
    double *dice = malloc(nte * sizeof(double)), *iou = malloc(nte * sizeof(double));
    const int n_sheet = st->sheet_n < (int)nte ? st->sheet_n : (int)nte;
    uint8_t *sheet_gt = calloc((size_t)n_sheet * SS + 1, 1), *sheet_pred = calloc((size_t)n_sheet * SS + 1, 1);
    float *sheet_img = malloc(((size_t)n_sheet * SS + 1) * sizeof(float));
    size_t maxhw = 0;
    for (size_t k = 0; k < nte; k++) {
        size_t hw = (size_t)set.it[test[k]].h * set.it[test[k]].w;
        maxhw = hw > maxhw ? hw : maxhw;
    }
    float *up = malloc(maxhw * sizeof(float));
    uint8_t *pb = malloc(maxhw);
    /* how much the decoder calls foreground: all-background predictions (Dice 0) are told apart
     * from misplaced ones in the detail */
    double fg_pred = 0, fg_gt = 0, p_max = -INFINITY;   /* p_max: the largest test logit */
    for (size_t k0 = 0; k0 < nte; k0 += (size_t)B) {
        const int nb = (int)(nte - k0 < (size_t)B ? nte - k0 : (size_t)B);
        ctx_step_begin(c);
        for (int b = 0; b < nb; b++)
            bench_dense_input(set.it[test[k0 + b]].img, S, m->in_chans, 0, 0, x + (size_t)b * m->in_chans * SS);
        Tensor *xt = tensor_from(c, 4, TSHAPE((size_t)nb, (size_t)m->in_chans, (size_t)S, (size_t)S), x);
        int g = ctx_set_grad(c, 0);
        BackboneMaps f = bench_model_maps(c, m, xt);
        Tensor *logits = seg_decoder_forward(c, &dec, &f);
        ctx_set_grad(c, g);
        for (int b = 0; b < nb; b++) {
            const SegItem *s = &set.it[test[k0 + b]];
            const float *lg = logits->data + (size_t)b * SS;
            resize_f32(lg, S, S, up, s->w, s->h, RESIZE_BILINEAR);
            const size_t hw = (size_t)s->h * s->w;
            binarize(up, hw, 0.0f, pb);                                   // sigmoid > 0.5
            bench_dice_iou(pb, s->full, hw, &dice[k0 + b], &iou[k0 + b]);
            size_t on_p = 0, on_g = 0;
            for (size_t q = 0; q < hw; q++) {
                on_p += pb[q];
                on_g += s->full[q];
                p_max = up[q] > p_max ? up[q] : p_max;
            }
            fg_pred += (double)on_p / (double)hw / (double)nte;
            fg_gt += (double)on_g / (double)hw / (double)nte;
            if ((int)(k0 + b) < n_sheet) {
                size_t j = k0 + b;
                for (size_t q = 0; q < SS; q++) sheet_img[j * SS + q] = s->img[q] * st->std + st->mean;
                binarize(s->mask, SS, 0.5f, sheet_gt + j * SS);
                binarize(lg, SS, 0.0f, sheet_pred + j * SS);
            }
        }
    }
    free(up);
    free(pb);
    SegStat ss = {dice, iou};
    BenchCI ci[2];
    double *boot;
    rc = bench_bootstrap(seg_stat, &ss, nte, 2, st->boot_n, a->boot_seed, st->boot_level, ci, &boot);
    if (!rc) {
        static const char *const names[2] = {"dice", "iou"};
        bench_metrics_add(&r->metrics, NULL, names, 2, ci, boot, st->boot_n);
        free(boot);
        snprintf(r->detail, sizeof r->detail,
                 "unet: %s decoder (width %g), %ld steps x %d images, loss %.3f -> %.3f; test images with a mask: %zu, "
                 "foreground %.2f%% of pixels, predicted %.2f%% (max probability %.2f); ",
                 bd.kind == BACKBONE_VIT ? "cup" : "UNet", st->seg.width, steps, B, loss_first, loss_last, nte,
                 100.0 * fg_gt, 100.0 * fg_pred, 1.0 / (1.0 + exp(-p_max)));
    } else {
        err_set(e, "bootstrap failed");
    }
    if (!rc && n_sheet > 0 && a->out_dir) {
        char dir[1024], png[1400];
        snprintf(dir, sizeof dir, "%s/sheets", a->out_dir);
        snprintf(png, sizeof png, "%s/%s.%s.png", dir, t->id, m->name);
        BenchSheetTile *tiles = calloc((size_t)n_sheet, sizeof(BenchSheetTile));
        for (int j = 0; j < n_sheet; j++) {
            tiles[j].img = sheet_img + (size_t)j * SS;
            tiles[j].gt_mask = sheet_gt + (size_t)j * SS;
            tiles[j].pred_mask = sheet_pred + (size_t)j * SS;
        }
        Err se = {0};
        if (make_dirs(dir, &se) || bench_contact_sheet(tiles, n_sheet, S, 4, png, &se))
            snprintf(r->detail + strlen(r->detail), sizeof r->detail - strlen(r->detail), "sheet not written: %s; ", se.msg);
        free(tiles);
    }
    free(sheet_gt);
    free(sheet_pred);
    free(sheet_img);
    free(dice);
    free(iou);
    free(x);
    free(y);
    params_free(&ps);
    free(train);
    free(test);
    segset_free(&set);
    return rc;
}
