/* protocol_det.c — the detection protocol (recipe.md §3.3): Faster R-CNN + FPN (nn/detect.c) on
 * the frozen backbone, one "lesion" class, H/V flips; the paper's mean best IoU and the field's
 * AP@0.5 and FROC sensitivities, with bootstrap CIs over test images. */
#include "bench/bench.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* metrics */

typedef struct DetRef {
    float score;
    uint32_t img, k;
} DetRef;

static int cmp_det(const void *pa, const void *pb) {
    const DetRef *a = pa, *b = pb;
    if (a->score != b->score) return a->score > b->score ? -1 : 1;
    if (a->img != b->img) return a->img < b->img ? -1 : 1;
    return a->k < b->k ? -1 : a->k > b->k;
}

/* the paper's per-image value: mean over GT boxes of the best IoU with a detection of score >= 0.5
 * surviving NMS 0.5 (0 when there is none) */
static double image_mean_best_iou(const BenchDetImage *im) {
    int32_t *keep = malloc(((size_t)im->n_det + 1) * sizeof(int32_t));
    float *bx = malloc(((size_t)im->n_det + 1) * 4 * sizeof(float)), *sc = malloc(((size_t)im->n_det + 1) * sizeof(float));
    size_t m = 0;
    for (int i = 0; i < im->n_det; i++)
        if (im->scores[i] >= 0.5f) {
            memcpy(bx + 4 * m, im->boxes + 4 * (size_t)i, 4 * sizeof(float));
            sc[m++] = im->scores[i];
        }
    size_t nk = box_nms(bx, sc, m, 0.5f, keep);
    double s = 0;
    for (int g = 0; g < im->n_gt; g++) {
        float best = 0, iou;
        for (size_t k = 0; k < nk; k++) {
            box_iou_matrix(im->gt + 4 * (size_t)g, 1, bx + 4 * (size_t)keep[k], 1, &iou);
            best = iou > best ? iou : best;
        }
        s += best;
    }
    free(keep);
    free(bx);
    free(sc);
    return im->n_gt ? s / im->n_gt : 0.0;
}

void bench_det_metrics(const BenchDetImage *im, size_t n, const uint32_t *w, double out[5]) {
    /* paper: mean over images with GT of the per-image mean best IoU */
    double s = 0, sw = 0, n_gt = 0, n_img = 0;
    size_t n_det = 0;
    for (size_t i = 0; i < n; i++) {
        double wi = w ? (double)w[i] : 1.0;
        n_img += wi;
        if (wi == 0) continue;
        n_det += (size_t)im[i].n_det;
        if (im[i].n_gt == 0) continue;
        s += wi * image_mean_best_iou(&im[i]);
        sw += wi;
        n_gt += wi * im[i].n_gt;
    }
    out[0] = sw > 0 ? s / sw : NAN;
    /* AP@0.5 and FROC: every detection of the (weighted) images by decreasing score; a detection is
     * a true positive when its best-IoU GT box in its image has IoU >= 0.5 and is not yet taken
     * (VOC's greedy rule) */
    DetRef *d = malloc((n_det + 1) * sizeof(DetRef));
    size_t nd = 0, max_gt = 1;
    for (size_t i = 0; i < n; i++) {
        if (w && w[i] == 0) continue;
        max_gt = (size_t)im[i].n_gt > max_gt ? (size_t)im[i].n_gt : max_gt;
        for (int k = 0; k < im[i].n_det; k++) d[nd++] = (DetRef){im[i].scores[k], (uint32_t)i, (uint32_t)k};
    }
    qsort(d, nd, sizeof(DetRef), cmp_det);
    /* taken[i][g]: GT g of image i already matched */
    size_t *off = malloc((n + 1) * sizeof(size_t));
    off[0] = 0;
    for (size_t i = 0; i < n; i++) off[i + 1] = off[i] + (size_t)im[i].n_gt;
    uint8_t *taken = calloc(off[n] + 1, 1);
    double tp = 0, fp = 0, ap = 0, prev_recall = 0;
    double *prec = malloc((nd + 1) * sizeof(double)), *rec = malloc((nd + 1) * sizeof(double));
    double *fpi = malloc((nd + 1) * sizeof(double));
    for (size_t q = 0; q < nd; q++) {
        const BenchDetImage *m = &im[d[q].img];
        double wi = w ? (double)w[d[q].img] : 1.0;
        float best = 0;
        int bg = -1;
        for (int g = 0; g < m->n_gt; g++) {
            float iou;
            box_iou_matrix(m->boxes + 4 * (size_t)d[q].k, 1, m->gt + 4 * (size_t)g, 1, &iou);
            if (iou > best) best = iou, bg = g;
        }
        if (bg >= 0 && best >= 0.5f && !taken[off[d[q].img] + (size_t)bg]) {
            taken[off[d[q].img] + (size_t)bg] = 1;
            tp += wi;
        } else {
            fp += wi;
        }
        prec[q] = tp / (tp + fp);
        rec[q] = n_gt > 0 ? tp / n_gt : 0;
        fpi[q] = n_img > 0 ? fp / n_img : 0;
    }
    /* all-point interpolation: precision made monotone from the right */
    for (size_t q = nd; q-- > 1;) prec[q - 1] = prec[q - 1] > prec[q] ? prec[q - 1] : prec[q];
    for (size_t q = 0; q < nd; q++) {
        ap += (rec[q] - prev_recall) * prec[q];
        prev_recall = rec[q];
    }
    out[1] = n_gt > 0 ? ap : NAN;
    static const double rates[3] = {0.5, 1.0, 2.0};
    for (int k = 0; k < 3; k++) {
        double best = 0;
        for (size_t q = 0; q < nd; q++)   /* thresholds at each score; ties of score end together */
            if (fpi[q] <= rates[k] && (q + 1 == nd || d[q + 1].score != d[q].score)) best = rec[q] > best ? rec[q] : best;
        out[2 + k] = n_gt > 0 ? best : NAN;
    }
    free(d);
    free(off);
    free(taken);
    free(prec);
    free(rec);
    free(fpi);
}

/* ------------------------------------------------------------------------------------------ */
/* data */

typedef struct DetItem {
    uint8_t split;
    float sx, sy;        /* prepared pixels per input pixel */
    float *img;          // (S, S)
    float *gt;           // (n_gt, 4) input pixels
    int n_gt;
} DetItem;

typedef struct DetSet {
    DetItem *it;
    size_t n, cap;
} DetSet;

static void detset_free(DetSet *s) {
    for (size_t i = 0; i < s->n; i++) {
        free(s->it[i].img);
        free(s->it[i].gt);
    }
    free(s->it);
    memset(s, 0, sizeof *s);
}

static int load_file(const BenchTask *t, const char *path, int S, const BenchSettings *st, DetSet *set, Err *e) {
    Prepared p;
    if (prep_open(&p, path, e)) return 1;
    int map[PREP_MAX_FINDINGS], none = -1;
    uint32_t mask[PREP_MAX_FINDINGS];
    int rc = 0;
    if (p.n_findings > 0 && bench_class_map(t, path, p.finding_names, p.n_findings, map, mask, &none, e)) rc = 1;
    float *raw = malloc((size_t)p.h * p.w * sizeof(float));
    const float sx = (float)S / (float)p.w, sy = (float)S / (float)p.h;
    for (size_t i = 0; i < p.n && !rc; i++) {
        if (p.split[i] > PREP_SPLIT_TEST) continue;
        if (set->n == set->cap) {
            set->cap = set->cap ? 2 * set->cap : 256;
            set->it = realloc(set->it, set->cap * sizeof(DetItem));
        }
        DetItem *it = &set->it[set->n++];
        memset(it, 0, sizeof *it);
        it->split = p.split[i];
        it->sx = 1.0f / sx;
        it->sy = 1.0f / sy;
        it->img = malloc((size_t)S * S * sizeof(float));
        const size_t nb = prep_n_boxes(&p, i);
        const PrepBox *bx = prep_sample_boxes(&p, i);
        it->gt = malloc((nb + 1) * 4 * sizeof(float));
        for (size_t k = 0; k < nb; k++) {
            int lb = bx[k].label;
            if (p.n_findings > 0 && (lb < 0 || lb >= p.n_findings || map[lb] < 0)) continue;
            float *g = it->gt + 4 * (size_t)it->n_gt++;
            g[0] = bx[k].x0 * sx;
            g[1] = bx[k].y0 * sy;
            g[2] = bx[k].x1 * sx;
            g[3] = bx[k].y1 * sy;
        }
        rc = bench_dense_image(&p, i, S, st->mean, st->std, raw, it->img, e);
    }
    free(raw);
    prep_close(&p);
    return rc;
}

static void flip_boxes(const float *in, int n, int S, int fh, int fv, float *out) {
    for (int k = 0; k < n; k++) {
        const float *a = in + 4 * k;
        float *b = out + 4 * k;
        b[0] = fh ? S - a[2] : a[0];
        b[2] = fh ? S - a[0] : a[2];
        b[1] = fv ? S - a[3] : a[1];
        b[3] = fv ? S - a[1] : a[3];
    }
}

/* where a zero comes from: the detections' count and best score, and how well the boxes cover the
 * GT regardless of score (mean best IoU over all detections, recall at IoU 0.5) */
typedef struct DetDiag {
    double det_per_image, max_score, any_best_iou, any_recall50;
} DetDiag;

static DetDiag det_diagnostics(const BenchDetImage *im, size_t n) {
    DetDiag d = {0, 0, 0, 0};
    size_t n_gt = 0;
    for (size_t i = 0; i < n; i++) {
        d.det_per_image += (double)im[i].n_det / (double)(n ? n : 1);
        for (int k = 0; k < im[i].n_det; k++) d.max_score = im[i].scores[k] > d.max_score ? im[i].scores[k] : d.max_score;
        for (int g = 0; g < im[i].n_gt; g++) {
            float best = 0, iou;
            for (int k = 0; k < im[i].n_det; k++) {
                box_iou_matrix(im[i].gt + 4 * (size_t)g, 1, im[i].boxes + 4 * (size_t)k, 1, &iou);
                best = iou > best ? iou : best;
            }
            d.any_best_iou += best;
            d.any_recall50 += best >= 0.5f;
            n_gt++;
        }
    }
    d.any_best_iou /= (double)(n_gt ? n_gt : 1);
    d.any_recall50 /= (double)(n_gt ? n_gt : 1);
    return d;
}

typedef struct DetStat {
    const BenchDetImage *im;
} DetStat;

static void det_stat(const void *ud, const uint32_t *w, size_t n, double *out) {
    bench_det_metrics(((const DetStat *)ud)->im, n, w, out);
}

int bench_proto_detection(Ctx *c, const BenchModel *m, const BenchTask *t, const BenchDenseArgs *a, BenchResult *r,
                          Err *e) {
    const BenchSettings *st = a->s;
    const int S = m->size, B = st->det.batch;
    const size_t SS = (size_t)S * S;
    DetSet set = {0};
    int rc = 0;
    for (int k = 0; k < t->n_datasets && !rc; k++) {
        char path[1024];
        bench_task_file(t, k, a->data_root, path, sizeof path);
        rc = load_file(t, path, S, st, &set, e);
    }
    if (rc) {
        detset_free(&set);
        return 1;
    }
    uint32_t *train = malloc((set.n + 1) * sizeof(uint32_t)), *test = malloc((set.n + 1) * sizeof(uint32_t));
    size_t ntr = 0, nte = 0, gt_train = 0, gt_test = 0;
    for (size_t i = 0; i < set.n; i++) {
        r->n_split[set.it[i].split]++;
        /* training uses the images with a box (as the published detection splits); the test keeps
         * every image so that false positives on normal images count in AP and FROC */
        if (set.it[i].split == PREP_SPLIT_TRAIN && set.it[i].n_gt) train[ntr++] = (uint32_t)i, gt_train += (size_t)set.it[i].n_gt;
        if (set.it[i].split == PREP_SPLIT_TEST) test[nte++] = (uint32_t)i, gt_test += (size_t)set.it[i].n_gt;
    }
    if (gt_train == 0 || gt_test == 0) {
        free(train);
        free(test);
        detset_free(&set);
        return err_set(e, "detection needs boxes of the task's classes in train and test (train %zu, test %zu)", gt_train,
                       gt_test);
    }

    /* ---- the detector on the frozen backbone ---- */
    BackboneDims bd;
    bench_model_dims(m, &bd);
    DetConfig cfg = det_config_default();
    cfg.fpn_ch = st->det.fpn_ch;
    cfg.rep_size = st->det.rep_size;
    cfg.train_fpn = st->det.train_fpn;
    cfg.n_sizes = st->det.n_sizes;
    for (int i = 0; i < cfg.n_sizes; i++) cfg.sizes[i] = st->det.sizes[i];
    cfg.box_batch = st->det.box_batch;
    cfg.rpn_batch = st->det.rpn_batch;
    cfg.rpn_pre_nms_train = cfg.rpn_post_nms_train = st->det.proposals;
    cfg.rpn_pre_nms_test = cfg.rpn_post_nms_test = (st->det.proposals + 1) / 2;
    ParamStore ps;
    params_init(&ps);
    FasterRCNN det;
    det_declare(&det, &cfg, &bd, &ps, "");
    params_alloc(&ps);
    Rng rng;
    rng_init(&rng, a->head_seed);
    det_init(&det, &rng);
    OptimConfig oc = optim_adamw_default();
    oc.weight_decay = 0;
    float *x = malloc((size_t)B * m->in_chans * SS * sizeof(float));   // (B, in_chans, S, S)
    size_t max_gt = 1;
    for (size_t i = 0; i < set.n; i++) max_gt = (size_t)set.it[i].n_gt > max_gt ? (size_t)set.it[i].n_gt : max_gt;
    float *gtb = malloc((size_t)B * max_gt * 4 * sizeof(float));        // (B, max_gt, 4) flipped boxes
    DetTarget *tg = malloc((size_t)B * sizeof(DetTarget));
    const long steps = st->det.steps;
    double loss_first = 0, loss_last = 0;
    for (long it = 0; it < steps; it++) {
        ctx_step_begin(c);
        for (int b = 0; b < B; b++) {
            const DetItem *s = &set.it[train[rng_below(&rng, (uint32_t)ntr)]];
            int fh = rng_uniform(&rng) < 0.5f, fv = rng_uniform(&rng) < 0.5f;
            bench_dense_input(s->img, S, m->in_chans, fh, fv, x + (size_t)b * m->in_chans * SS);
            flip_boxes(s->gt, s->n_gt, S, fh, fv, gtb + (size_t)b * max_gt * 4);
            tg[b].boxes = gtb + (size_t)b * max_gt * 4;
            tg[b].n = s->n_gt;
        }
        Tensor *xt = tensor_from(c, 4, TSHAPE((size_t)B, (size_t)m->in_chans, (size_t)S, (size_t)S), x);
        BackboneMaps f = bench_model_maps(c, m, xt);
        c->training = 1;
        DetFeatures ft = det_fpn_forward(c, &det, &f);
        DetLosses L = det_forward_train(c, &det, &ft, tg, &rng);
        params_zero_grad(&ps);
        backward(c, L.total);
        optim_step(&ps, &oc, it + 1, bench_dense_lr(it, steps, st->det.lr), 0.0);
        c->training = 0;
        long win = steps < 20 ? 1 : steps / 20;
        if (it < win) loss_first += L.total->data[0] / (double)win;
        if (it >= steps - win) loss_last += L.total->data[0] / (double)win;
    }

    /* ---- test: detections in prepared pixels ---- */
    BenchDetImage *im = calloc(nte + 1, sizeof(BenchDetImage));
    float **dbox = calloc(nte + 1, sizeof(float *)), **dsc = calloc(nte + 1, sizeof(float *)), **gtp = calloc(nte + 1, sizeof(float *));
    const int n_sheet = st->sheet_n < (int)nte ? st->sheet_n : (int)nte;
    BenchSheetTile *tiles = calloc((size_t)n_sheet + 1, sizeof(BenchSheetTile));
    float *sheet_img = malloc(((size_t)n_sheet * SS + 1) * sizeof(float));
    float **sheet_pred = calloc((size_t)n_sheet + 1, sizeof(float *));
    /* the sheet shows test images with a box first */
    uint32_t *order = malloc((nte + 1) * sizeof(uint32_t));
    size_t no = 0;
    for (size_t k = 0; k < nte; k++)
        if (set.it[test[k]].n_gt) order[no++] = (uint32_t)k;
    for (size_t k = 0; k < nte; k++)
        if (!set.it[test[k]].n_gt) order[no++] = (uint32_t)k;
    int32_t *keep = NULL;
    for (size_t k0 = 0; k0 < nte; k0 += (size_t)B) {
        const int nb = (int)(nte - k0 < (size_t)B ? nte - k0 : (size_t)B);
        ctx_step_begin(c);
        for (int b = 0; b < nb; b++)
            bench_dense_input(set.it[test[k0 + b]].img, S, m->in_chans, 0, 0, x + (size_t)b * m->in_chans * SS);
        Tensor *xt = tensor_from(c, 4, TSHAPE((size_t)nb, (size_t)m->in_chans, (size_t)S, (size_t)S), x);
        int g = ctx_set_grad(c, 0);
        BackboneMaps f = bench_model_maps(c, m, xt);
        DetFeatures ft = det_fpn_forward(c, &det, &f);
        Detections *dd = arena_alloc(&c->step, (size_t)nb * sizeof(Detections));
        det_detect(c, &det, &ft, dd);
        ctx_set_grad(c, g);
        for (int b = 0; b < nb; b++) {
            const size_t k = k0 + (size_t)b;
            const DetItem *s = &set.it[test[k]];
            const int n = dd[b].n;
            dbox[k] = malloc(((size_t)n + 1) * 4 * sizeof(float));
            dsc[k] = malloc(((size_t)n + 1) * sizeof(float));
            gtp[k] = malloc(((size_t)s->n_gt + 1) * 4 * sizeof(float));
            for (int q = 0; q < n; q++) {
                dbox[k][4 * q + 0] = dd[b].boxes[4 * q + 0] * s->sx;
                dbox[k][4 * q + 1] = dd[b].boxes[4 * q + 1] * s->sy;
                dbox[k][4 * q + 2] = dd[b].boxes[4 * q + 2] * s->sx;
                dbox[k][4 * q + 3] = dd[b].boxes[4 * q + 3] * s->sy;
                dsc[k][q] = dd[b].scores[q];
            }
            for (int q = 0; q < s->n_gt; q++) {
                gtp[k][4 * q + 0] = s->gt[4 * q + 0] * s->sx;
                gtp[k][4 * q + 1] = s->gt[4 * q + 1] * s->sy;
                gtp[k][4 * q + 2] = s->gt[4 * q + 2] * s->sx;
                gtp[k][4 * q + 3] = s->gt[4 * q + 3] * s->sy;
            }
            im[k] = (BenchDetImage){.n_det = n, .n_gt = s->n_gt, .boxes = dbox[k], .scores = dsc[k], .gt = gtp[k]};
            for (int j = 0; j < n_sheet; j++) {
                if (order[j] != k) continue;
                /* the paper's view of the prediction: score >= 0.5, NMS 0.5, input pixels */
                float *pb = malloc(((size_t)n + 1) * 4 * sizeof(float)), *ps_ = malloc(((size_t)n + 1) * sizeof(float));
                keep = realloc(keep, ((size_t)n + 1) * sizeof(int32_t));
                size_t mm = 0;
                for (int q = 0; q < n; q++)
                    if (dd[b].scores[q] >= 0.5f) {
                        memcpy(pb + 4 * mm, dd[b].boxes + 4 * q, 4 * sizeof(float));
                        ps_[mm++] = dd[b].scores[q];
                    }
                size_t nk = box_nms(pb, ps_, mm, 0.5f, keep);
                sheet_pred[j] = malloc((nk + 1) * 4 * sizeof(float));
                for (size_t q = 0; q < nk; q++) memcpy(sheet_pred[j] + 4 * q, pb + 4 * (size_t)keep[q], 4 * sizeof(float));
                free(pb);
                free(ps_);
                for (size_t q = 0; q < SS; q++) sheet_img[(size_t)j * SS + q] = s->img[q] * st->std + st->mean;
                tiles[j] = (BenchSheetTile){.img = sheet_img + (size_t)j * SS, .gt_boxes = s->gt, .n_gt = s->n_gt,
                                            .pred_boxes = sheet_pred[j], .n_pred = (int)nk};
            }
        }
    }
    free(keep);
    DetStat ds = {im};
    BenchCI ci[5];
    double *boot;
    rc = bench_bootstrap(det_stat, &ds, nte, 5, st->boot_n, a->boot_seed, st->boot_level, ci, &boot);
    if (rc) err_set(e, "bootstrap failed");
    if (!rc) {
        static const char *const names[5] = {"mean_iou", "map50", "froc_0.5", "froc_1", "froc_2"};
        bench_metrics_add(&r->metrics, NULL, names, 5, ci, boot, st->boot_n);
        free(boot);
        DetDiag dg = det_diagnostics(im, nte);
        snprintf(r->detail, sizeof r->detail,
                 "faster_rcnn: FPN %d ch (%s), anchors %d sizes, %ld steps x %d images, loss %.3f -> %.3f; "
                 "train: %zu images with a box; test: %zu images, %zu boxes, %.1f detections per image (max score %.2f), "
                 "at any score: mean best IoU %.3f, recall@0.5 %.3f; ",
                 cfg.fpn_ch, cfg.train_fpn ? "trained" : "frozen", cfg.n_sizes, steps, B, loss_first, loss_last, ntr, nte, gt_test,
                 dg.det_per_image, dg.max_score, dg.any_best_iou, dg.any_recall50);
    }
    if (!rc && n_sheet > 0 && a->out_dir) {
        char dir[1024], png[1400];
        snprintf(dir, sizeof dir, "%s/sheets", a->out_dir);
        snprintf(png, sizeof png, "%s/%s.%s.png", dir, t->id, m->name);
        Err se = {0};
        if (make_dirs(dir, &se) || bench_contact_sheet(tiles, n_sheet, S, 4, png, &se))
            snprintf(r->detail + strlen(r->detail), sizeof r->detail - strlen(r->detail), "sheet not written: %s; ", se.msg);
    }
    for (size_t k = 0; k < nte; k++) {
        free(dbox[k]);
        free(dsc[k]);
        free(gtp[k]);
    }
    for (int j = 0; j < n_sheet; j++) free(sheet_pred[j]);
    free(sheet_pred);
    free(sheet_img);
    free(tiles);
    free(order);
    free(dbox);
    free(dsc);
    free(gtp);
    free(im);
    free(x);
    free(gtb);
    free(tg);
    params_free(&ps);
    free(train);
    free(test);
    detset_free(&set);
    return rc;
}
