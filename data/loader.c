/*
 * loader.c — threaded, sharded, resumable batch loader over a corpus of prepared files.
 *
 * Work is handed out per sample: item = g * B + j is sample j of global batch g (g = epoch *
 * batches_per_epoch + t).  Workers take items in order under one mutex, build the sample outside
 * it straight into the batch's slot, and the consumer waits for its slot to be complete.  A ring
 * of prefetch + 1 slots bounds the work in flight (one slot is the batch the caller holds).
 * Because a sample's output depends only on (seed, epoch, position), the batches are the same
 * for any number of workers.
 */
#include "data/loader.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

typedef struct Slot {
    Batch b;
    long g;             /* global batch number held, -1 = none */
    int done;           /* items finished (of B) */
    int failed;
    Err err;
    long skipped;       /* unreadable samples replaced in this batch */
    size_t box_cap;     /* boxes the slot can hold */
} Slot;

typedef struct Worker {
    struct Loader *L;
    AugWork ws;
    float *img;         /* (H, W) */
    float *tmp;         /* (max(H*W, oh*ow)) */
    float *tmp2;        /* (oh*ow) */
    uint8_t *mask;      /* (H, W) */
    pthread_t th;
} Worker;

typedef struct Plan {
    long epoch;         /* -1 = empty */
    uint32_t *src;      /* (E) corpus source */
    uint32_t *q;        /* (E) index into that source's selection */
} Plan;

struct Loader {
    const Corpus *c;
    LoaderConfig cfg;
    int B, C;
    int G, Ls, NL;      /* multicrop sizes */
    int oh, ow;         /* plain output size */
    int grid;           /* iBOT patches per global crop */
    int h, w;           /* prepared size */
    /* selection per source */
    uint32_t *sel[CORPUS_MAX_SOURCES];
    size_t n_sel[CORPUS_MAX_SOURCES];
    long count[CORPUS_MAX_SOURCES];  /* positions per epoch from each source */
    long E, nb, full_steps, rem;
    int n_labels, n_findings;
    int label_map[CORPUS_MAX_SOURCES][PREP_MAX_LABELS];
    int find_map[CORPUS_MAX_SOURCES][PREP_MAX_FINDINGS];
    size_t max_boxes;   /* per sample over the corpus */
    Rng root, sample_root, mask_root;
    Plan plan[2];
    /* queue state (under mu) */
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    long next_item, next_out, free_from;
    int stop;
    long n_skipped;     /* over the batches handed out (consumer side only) */
    Slot *slots;
    int K;
    Worker *workers;
    int n_workers;      /* threads started */
    Worker sync_worker; /* n_workers == 0 */
};

LoaderConfig loader_config_default(LoaderMode mode) {
    LoaderConfig c = {0};
    c.mode = mode;
    c.batch_size = 32;
    c.split = PREP_SPLIT_TRAIN;
    c.shuffle = 1;
    c.drop_last = 1;
    c.seed = 0;
    c.rank = 0;
    c.world = 1;
    c.n_workers = 2;
    c.prefetch = 4;
    c.channels = 3;
    c.on_error = LOADER_FAIL;
    c.crops = multicrop_default();
    c.patch_size = 14;
    c.masks = mask_default(16, 16);
    c.ibot = mode == LOADER_MULTICROP;
    c.plain = (PlainConfig){.rrc_ratio = {3.0f / 4.0f, 4.0f / 3.0f},
                            .clahe_cfg = clahe_default(),
                            .mean = {0.5f, 0.5f, 0.5f},
                            .std = {0.5f, 0.5f, 0.5f}};
    if (mode == LOADER_PLAIN) {
        c.shuffle = 0;
        c.drop_last = 0;
        c.split = -1;
    }
    return c;
}

/* ------------------------------------------------------------------------------------------ */
/* epoch plans */

static void build_plan(Loader *L, long epoch, Plan *pl) {
    Rng er = rng_fork(&L->root, 0x100000000ULL + (uint64_t)epoch);
    long pos = 0;
    for (int s = 0; s < L->c->n; s++) {
        size_t ns = L->n_sel[s];
        uint32_t *perm = malloc((ns ? ns : 1) * sizeof *perm);
        if (!perm) {   /* the same size as sel[s], allocated at open: practically unreachable */
            fprintf(stderr, "loader: out of memory building the plan of epoch %ld\n", epoch);
            abort();
        }
        long need = L->count[s];
        for (long cycle = 0; need > 0; cycle++) {
            for (size_t k = 0; k < ns; k++) perm[k] = (uint32_t)k;
            if (L->cfg.shuffle) {
                Rng pr = rng_fork(&er, ((uint64_t)s << 32) + (uint64_t)cycle);
                rng_shuffle(&pr, perm, ns);
            }
            long take = need < (long)ns ? need : (long)ns;
            for (long k = 0; k < take; k++, pos++) {
                pl->src[pos] = (uint32_t)s;
                pl->q[pos] = perm[k];
            }
            need -= take;
        }
        free(perm);
    }
    if (L->cfg.shuffle && L->c->n > 1) {
        /* interleave the sources: one more seeded shuffle of the whole list */
        Rng sr = rng_fork(&er, 0xFFFFFFFFFFFFULL);
        for (long i = L->E; i > 1; i--) {
            long j = (long)rng_below(&sr, (uint32_t)i);
            uint32_t t = pl->src[i - 1];
            pl->src[i - 1] = pl->src[j];
            pl->src[j] = t;
            t = pl->q[i - 1];
            pl->q[i - 1] = pl->q[j];
            pl->q[j] = t;
        }
    }
    pl->epoch = epoch;
}

static Plan *get_plan(Loader *L, long epoch) {   /* under mu */
    Plan *pl = &L->plan[epoch & 1];
    if (pl->epoch != epoch) build_plan(L, epoch, pl);
    return pl;
}

/* first position and size of batch t (this rank) */
static void batch_span(const Loader *L, long t, long *start, int *n) {
    long B = L->B, W = L->cfg.world, r = L->cfg.rank;
    if (t < L->full_steps) {
        *start = (t * W + r) * B;
        *n = (int)B;
    } else {
        long base = L->full_steps * W * B;
        long a = r * L->rem / W, b = (r + 1) * L->rem / W;
        *start = base + a;
        *n = (int)(b - a);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* one sample */

typedef struct Item {
    long g, epoch, t;
    int j, n;
    long p;             /* position in the epoch */
    uint32_t s, q;      /* source, selection index */
} Item;

static int read_sample(Loader *L, Worker *wk, uint32_t s, uint32_t *q, size_t *idx, long *skipped, Err *e) {
    const Prepared *P = &L->c->src[s];
    size_t ns = L->n_sel[s];
    for (size_t k = 0; k < (L->cfg.on_error == LOADER_SKIP ? ns : 1); k++) {
        uint32_t qq = (uint32_t)((*q + k) % ns);
        size_t i = L->sel[s][qq];
        Err e1;
        int bad = prep_read_image_f32(P, i, wk->img, &e1);
        if (!bad && L->cfg.mode == LOADER_PLAIN && L->cfg.with_masks) bad = prep_read_mask(P, i, wk->mask, &e1);
        if (!bad) {
            *q = qq;
            *idx = i;
            return 0;
        }
        if (L->cfg.on_error != LOADER_SKIP) {
            *e = e1;
            return 1;
        }
        (*skipped)++;
    }
    return err_set(e, "%s: no readable sample left in the selection", P->path);
}

static void fill_labels(Loader *L, Slot *sl, int j, uint32_t s, size_t i) {
    const Prepared *P = &L->c->src[s];
    for (int k = 0; k < L->n_labels; k++) {
        int col = L->label_map[s][k];
        sl->b.labels[(size_t)j * L->n_labels + k] = col >= 0 ? prep_label(P, i, col) : -1;
    }
    for (int k = 0; k < L->n_findings; k++) {
        int col = L->find_map[s][k];
        sl->b.findings[(size_t)j * L->n_findings + k] = col >= 0 ? P->findings[i * P->n_findings + col] : 0;
    }
    sl->b.source[j] = (int32_t)s;
    sl->b.sample[j] = (int64_t)i;
}

static void make_multicrop(Loader *L, Worker *wk, Slot *sl, int j, Rng *r) {
    size_t C = (size_t)L->C, B = (size_t)L->B;
    size_t gsz = C * L->G * L->G, lsz = C * L->Ls * L->Ls;
    float *gp[2], *lp[AUG_MAX_LOCAL];
    for (int k = 0; k < 2; k++) gp[k] = sl->b.global + ((size_t)k * B + j) * gsz;
    for (int k = 0; k < L->NL; k++) lp[k] = sl->b.local + ((size_t)k * B + j) * lsz;
    multicrop(wk->img, L->w, L->h, &L->cfg.crops, r, gp, lp, NULL, &wk->ws);
}

/* Plain view: [RandomResizedCrop] -> resize -> flips -> [CLAHE] -> normalise; the mask and the
 * boxes follow the geometry. */
static int make_plain(Loader *L, Worker *wk, Slot *sl, int j, Rng *r, uint32_t s, size_t i, Err *e) {
    const PlainConfig *pc = &L->cfg.plain;
    int W = L->w, H = L->h, ow = L->ow, oh = L->oh;
    size_t npx = (size_t)ow * oh;
    CropBox cb = {0, 0, W, H};
    if (pc->rrc_scale[1] > 0.0f) cb = rrc_params(r, W, H, pc->rrc_scale, pc->rrc_ratio);
    int hf = rng_uniform(r) < pc->hflip_p;
    int vf = rng_uniform(r) < pc->vflip_p;
    float *x = wk->tmp2;   // (oh, ow)
    int whole = cb.x == 0 && cb.y == 0 && cb.w == W && cb.h == H;
    const float *region = wk->img;
    if (!whole) {
        for (int y = 0; y < cb.h; y++) memcpy(wk->tmp + (size_t)y * cb.w, wk->img + (size_t)(cb.y + y) * W + cb.x, (size_t)cb.w * sizeof(float));
        region = wk->tmp;
    }
    if (cb.w == ow && cb.h == oh) memcpy(x, region, npx * sizeof(float));
    else resize_f32(region, cb.w, cb.h, x, ow, oh, RESIZE_BILINEAR);
    if (hf) hflip_f32(x, ow, oh);
    if (vf) vflip_f32(x, ow, oh);
    if (L->cfg.with_masks) {
        /* nearest resize of the 0/1 mask through floats (tmp holds the region) */
        for (int y = 0; y < cb.h; y++)
            for (int xx = 0; xx < cb.w; xx++) wk->tmp[(size_t)y * cb.w + xx] = wk->mask[(size_t)(cb.y + y) * W + cb.x + xx];
        float *m = wk->img;   /* the image is no longer needed: reuse it for (oh, ow) */
        if (cb.w == ow && cb.h == oh) memcpy(m, wk->tmp, npx * sizeof(float));
        else resize_f32(wk->tmp, cb.w, cb.h, m, ow, oh, RESIZE_NEAREST);
        if (hf) hflip_f32(m, ow, oh);
        if (vf) vflip_f32(m, ow, oh);
        uint8_t *seg = sl->b.seg + (size_t)j * npx;
        for (size_t k = 0; k < npx; k++) seg[k] = m[k] > 0.5f;
    }
    if (L->cfg.with_boxes) {
        /* boxes are written at offset j * max_boxes; loader_next compacts them */
        const Prepared *P = &L->c->src[s];
        const PrepBox *bx = prep_sample_boxes(P, i);
        size_t nbx = prep_n_boxes(P, i), kept = 0;
        PrepBox *out = sl->b.boxes + (size_t)j * L->max_boxes;
        float sx = (float)ow / cb.w, sy = (float)oh / cb.h;
        for (size_t k = 0; k < nbx; k++) {
            PrepBox b = bx[k];
            b.x0 = fminf(fmaxf((b.x0 - cb.x) * sx, 0.0f), (float)ow);
            b.x1 = fminf(fmaxf((b.x1 - cb.x) * sx, 0.0f), (float)ow);
            b.y0 = fminf(fmaxf((b.y0 - cb.y) * sy, 0.0f), (float)oh);
            b.y1 = fminf(fmaxf((b.y1 - cb.y) * sy, 0.0f), (float)oh);
            if (b.x1 <= b.x0 || b.y1 <= b.y0) continue;   /* cropped away */
            if (hf) {
                float t = b.x0;
                b.x0 = (float)ow - b.x1;
                b.x1 = (float)ow - t;
            }
            if (vf) {
                float t = b.y0;
                b.y0 = (float)oh - b.y1;
                b.y1 = (float)oh - t;
            }
            out[kept++] = b;
        }
        sl->b.box_offset[j + 1] = (int32_t)kept;   /* count for now */
    }
    if (pc->clahe) {
        if (clahe_f32(x, ow, oh, wk->tmp, &pc->clahe_cfg, &wk->ws, e)) return 1;
        memcpy(x, wk->tmp, npx * sizeof(float));
    }
    for (int c = 0; c < L->C; c++) {
        float m = pc->mean[c], inv = 1.0f / pc->std[c];
        float *o = sl->b.image + ((size_t)j * L->C + c) * npx;
        for (size_t k = 0; k < npx; k++) o[k] = (x[k] - m) * inv;
    }
    return 0;
}

static int process_item(Loader *L, Worker *wk, const Item *it, Slot *sl, long *skipped, Err *e) {
    uint32_t q = it->q;
    size_t i = 0;
    if (read_sample(L, wk, it->s, &q, &i, skipped, e)) return 1;
    Rng r = rng_fork(&L->sample_root, (uint64_t)it->epoch * (uint64_t)L->E + (uint64_t)it->p);
    fill_labels(L, sl, it->j, it->s, i);
    if (L->cfg.mode == LOADER_MULTICROP) {
        make_multicrop(L, wk, sl, it->j, &r);
        return 0;
    }
    return make_plain(L, wk, sl, it->j, &r, it->s, i, e);
}

/* Takes the next item (under mu): fills *it and initialises its slot when it is the first. */
static Slot *take_item(Loader *L, Item *it) {
    long item = L->next_item++;
    long g = item / L->B;
    it->g = g;
    it->j = (int)(item % L->B);
    it->epoch = g / L->nb;
    it->t = g % L->nb;
    long start;
    batch_span(L, it->t, &start, &it->n);
    Slot *sl = &L->slots[g % L->K];
    if (sl->g != g) {
        sl->g = g;
        sl->done = 0;
        sl->failed = 0;
        sl->skipped = 0;
        sl->b.n = it->n;
        sl->b.epoch = it->epoch;
        sl->b.index = it->t;
    }
    if (it->j < it->n) {
        Plan *pl = get_plan(L, it->epoch);
        it->p = start + it->j;
        it->s = pl->src[it->p];
        it->q = pl->q[it->p];
    }
    return sl;
}

static void finish_item(Loader *L, Slot *sl, int failed, const Err *e, long skipped) {   /* under mu */
    if (failed && !sl->failed) {
        sl->failed = 1;
        sl->err = *e;
    }
    sl->skipped += skipped;
    if (++sl->done == L->B) pthread_cond_broadcast(&L->cv_done);
}

static void *worker_main(void *arg) {
    Worker *wk = arg;
    Loader *L = wk->L;
    pthread_mutex_lock(&L->mu);
    for (;;) {
        while (!L->stop && L->next_item / L->B >= L->free_from + L->K) pthread_cond_wait(&L->cv_work, &L->mu);
        if (L->stop) break;
        Item it;
        Slot *sl = take_item(L, &it);
        if (it.j >= it.n) {
            finish_item(L, sl, 0, NULL, 0);
            continue;
        }
        pthread_mutex_unlock(&L->mu);
        Err e;
        long skipped = 0;
        int bad = process_item(L, wk, &it, sl, &skipped, &e);
        pthread_mutex_lock(&L->mu);
        finish_item(L, sl, bad, &e, skipped);
    }
    pthread_mutex_unlock(&L->mu);
    return NULL;
}

/* ------------------------------------------------------------------------------------------ */
/* open / next / close */

static int worker_init(Loader *L, Worker *wk) {
    wk->L = L;
    size_t hw = (size_t)L->h * L->w, o = (size_t)L->oh * L->ow;
    size_t big = hw > o ? hw : o;
    wk->img = malloc(big * sizeof(float));
    wk->tmp = malloc(big * sizeof(float));
    wk->tmp2 = malloc((o ? o : 1) * sizeof(float));
    wk->mask = malloc(hw);
    return !wk->img || !wk->tmp || !wk->tmp2 || !wk->mask;
}

static void worker_free(Worker *wk) {
    free(wk->img);
    free(wk->tmp);
    free(wk->tmp2);
    free(wk->mask);
    augwork_free(&wk->ws);
}

static int slot_alloc(Loader *L, Slot *sl) {
    size_t B = (size_t)L->B, C = (size_t)L->C;
    Batch *b = &sl->b;
    sl->g = -1;
    b->labels = calloc(B * (L->n_labels ? L->n_labels : 1), sizeof *b->labels);
    b->findings = calloc(B * (L->n_findings ? L->n_findings : 1), 1);
    b->source = calloc(B, sizeof *b->source);
    b->sample = calloc(B, sizeof *b->sample);
    int bad = !b->labels || !b->findings || !b->source || !b->sample;
    if (L->cfg.mode == LOADER_MULTICROP) {
        b->global = malloc(2 * B * C * L->G * L->G * sizeof(float));
        b->local = malloc((L->NL ? L->NL : 1) * B * C * L->Ls * L->Ls * sizeof(float));
        b->ibot_masks = calloc(2 * B * (size_t)(L->grid ? L->grid : 1), 1);
        bad |= !b->global || !b->local || !b->ibot_masks;
    } else {
        size_t o = (size_t)L->oh * L->ow;
        b->image = malloc(B * C * o * sizeof(float));
        bad |= !b->image;
        if (L->cfg.with_masks) {
            b->seg = malloc(B * o);
            bad |= !b->seg;
        }
        if (L->cfg.with_boxes) {
            sl->box_cap = B * (L->max_boxes ? L->max_boxes : 1);
            b->boxes = malloc(sl->box_cap * sizeof *b->boxes);
            b->box_offset = calloc(B + 1, sizeof *b->box_offset);
            bad |= !b->boxes || !b->box_offset;
        }
    }
    return bad;
}

static void slot_free(Slot *sl) {
    Batch *b = &sl->b;
    free(b->labels);
    free(b->findings);
    free(b->source);
    free(b->sample);
    free(b->global);
    free(b->local);
    free(b->ibot_masks);
    free(b->image);
    free(b->seg);
    free(b->boxes);
    free(b->box_offset);
}

static int validate(const Corpus *c, const LoaderConfig *cfg, Err *e) {
    if (!c || c->n < 1) return err_set(e, "loader: empty corpus");
    if (cfg->batch_size < 1) return err_set(e, "loader: batch_size %d must be >= 1", cfg->batch_size);
    if (cfg->world < 1 || cfg->rank < 0 || cfg->rank >= cfg->world)
        return err_set(e, "loader: rank %d / world %d invalid", cfg->rank, cfg->world);
    if (cfg->n_workers < 0 || cfg->n_workers > 256) return err_set(e, "loader: n_workers %d not in 0..256", cfg->n_workers);
    if (cfg->prefetch < 1) return err_set(e, "loader: prefetch %d must be >= 1", cfg->prefetch);
    if (cfg->channels != 1 && cfg->channels != 3) return err_set(e, "loader: channels %d must be 1 or 3", cfg->channels);
    if (cfg->split < -1 || cfg->split > 2) return err_set(e, "loader: split %d invalid", cfg->split);
    if (cfg->start_epoch < 0 || cfg->start_index < 0) return err_set(e, "loader: negative start position");
    if (cfg->mode == LOADER_MULTICROP) {
        MultiCropConfig mc = cfg->crops;
        mc.channels = cfg->channels;
        if (multicrop_validate(&mc, e)) return 1;
        if (cfg->ibot && (cfg->patch_size < 1 || cfg->crops.global_size % cfg->patch_size != 0))
            return err_set(e, "loader: crops.global_crops_size %d is not a multiple of student.patch_size %d",
                           cfg->crops.global_size, cfg->patch_size);
        if (cfg->ibot && !(cfg->masks.ratio_min >= 0 && cfg->masks.ratio_min <= cfg->masks.ratio_max && cfg->masks.ratio_max <= 1))
            return err_set(e, "ibot.mask_ratio_min_max: (%g, %g) invalid", (double)cfg->masks.ratio_min, (double)cfg->masks.ratio_max);
    } else {
        const PlainConfig *p = &cfg->plain;
        if (p->out_h < 0 || p->out_w < 0 || p->out_h > 8192 || p->out_w > 8192)
            return err_set(e, "loader: plain size %dx%d invalid", p->out_w, p->out_h);
        for (int k = 0; k < cfg->channels; k++)
            if (!(p->std[k] > 0)) return err_set(e, "loader: plain std[%d] must be > 0", k);
        if (p->rrc_scale[1] > 0 && !(p->rrc_scale[0] > 0 && p->rrc_scale[0] <= p->rrc_scale[1] && p->rrc_scale[1] <= 1 &&
                                     p->rrc_ratio[0] > 0 && p->rrc_ratio[0] <= p->rrc_ratio[1]))
            return err_set(e, "loader: plain RandomResizedCrop scale/ratio invalid");
    }
    return 0;
}

int loader_open(Loader **out, const Corpus *c, const LoaderConfig *cfg, Err *e) {
    *out = NULL;
    if (validate(c, cfg, e)) return 1;
    Loader *L = calloc(1, sizeof *L);
    pthread_mutex_init(&L->mu, NULL);
    pthread_cond_init(&L->cv_work, NULL);
    pthread_cond_init(&L->cv_done, NULL);
    L->c = c;
    L->cfg = *cfg;
    L->cfg.crops.channels = cfg->channels;
    L->B = cfg->batch_size;
    L->C = cfg->channels;
    L->h = c->h;
    L->w = c->w;
    L->plan[0].epoch = L->plan[1].epoch = -1;
    if (cfg->mode == LOADER_MULTICROP) {
        L->G = cfg->crops.global_size;
        L->Ls = cfg->crops.local_size;
        L->NL = cfg->crops.n_local;
        if (cfg->ibot) {
            int gs = cfg->crops.global_size / cfg->patch_size;
            L->cfg.masks.grid_h = L->cfg.masks.grid_w = gs;
            L->grid = gs * gs;
        }
    } else {
        L->oh = cfg->plain.out_h ? cfg->plain.out_h : c->h;
        L->ow = cfg->plain.out_w ? cfg->plain.out_w : c->w;
    }
    /* selection and label maps (by name against source 0) */
    const Prepared *P0 = &c->src[0];
    L->n_labels = P0->n_labels;
    L->n_findings = P0->n_findings;
    long total = 0;
    for (int s = 0; s < c->n; s++) {
        const Prepared *P = &c->src[s];
        L->sel[s] = malloc((P->n ? P->n : 1) * sizeof(uint32_t));
        if (!L->sel[s]) {   /* n comes from the file */
            err_set(e, "loader: out of memory for the %zu samples of %s", P->n, P->path);
            loader_close(L);
            return 1;
        }
        for (size_t i = 0; i < P->n; i++)
            if (cfg->split < 0 || P->split[i] == cfg->split) L->sel[s][L->n_sel[s]++] = (uint32_t)i;
        total += (long)L->n_sel[s];
        for (int k = 0; k < L->n_labels; k++) L->label_map[s][k] = prep_label_col(P, P0->label_names[k]);
        for (int k = 0; k < L->n_findings; k++) {
            L->find_map[s][k] = -1;
            for (int m = 0; m < P->n_findings; m++)
                if (strcmp(P->finding_names[m], P0->finding_names[k]) == 0) L->find_map[s][k] = m;
        }
        for (size_t i = 0; i < P->n; i++)
            if (prep_n_boxes(P, i) > L->max_boxes) L->max_boxes = prep_n_boxes(P, i);
        if (L->n_sel[s] == 0 && c->n > 1) {
            err_set(e, "loader: %s has no '%s' samples", P->path, prep_split_name(cfg->split));
            loader_close(L);
            return 1;
        }
    }
    L->E = cfg->epoch_size > 0 ? cfg->epoch_size : total;
    if (total == 0 || L->E > 0xFFFFFFFFL) {
        err_set(e, "loader: %s: %ld samples selected (split '%s')", P0->path, total, cfg->split < 0 ? "all" : prep_split_name(cfg->split));
        loader_close(L);
        return 1;
    }
    /* per-source counts: largest remainders */
    double wsum = 0;
    for (int s = 0; s < c->n; s++) wsum += c->n > 1 ? c->weight[s] : 1.0;
    long assigned = 0;
    double frac[CORPUS_MAX_SOURCES];
    for (int s = 0; s < c->n; s++) {
        double exact = (double)L->E * (c->n > 1 ? c->weight[s] : 1.0) / wsum;
        L->count[s] = (long)floor(exact);
        frac[s] = exact - (double)L->count[s];
        assigned += L->count[s];
    }
    for (; assigned < L->E; assigned++) {
        int best = 0;
        for (int s = 1; s < c->n; s++)
            if (frac[s] > frac[best]) best = s;
        L->count[best]++;
        frac[best] = -1.0;
    }
    long step = (long)L->B * cfg->world;
    L->full_steps = L->E / step;
    L->rem = cfg->drop_last ? 0 : L->E - L->full_steps * step;
    L->nb = L->full_steps + (L->rem > 0);
    if (L->nb == 0) {
        err_set(e, "loader: epoch of %ld samples is smaller than world %d x batch %d (drop_last)", L->E, cfg->world, L->B);
        loader_close(L);
        return 1;
    }
    for (int k = 0; k < 2; k++) {
        L->plan[k].src = malloc((size_t)L->E * sizeof(uint32_t));
        L->plan[k].q = malloc((size_t)L->E * sizeof(uint32_t));
        if (!L->plan[k].src || !L->plan[k].q) {
            err_set(e, "loader: out of memory for an epoch of %ld samples", L->E);
            loader_close(L);
            return 1;
        }
    }
    rng_init(&L->root, cfg->seed);
    L->sample_root = rng_fork(&L->root, 1);
    L->mask_root = rng_fork(&L->root, 2);
    /* queue */
    L->K = cfg->n_workers > 0 ? cfg->prefetch + 1 : 1;
    L->slots = calloc((size_t)L->K, sizeof *L->slots);
    for (int k = 0; k < L->K; k++)
        if (slot_alloc(L, &L->slots[k])) {
            err_set(e, "loader: out of memory for %d batch slots", L->K);
            loader_close(L);
            return 1;
        }
    long g0 = cfg->start_epoch * L->nb + cfg->start_index;
    L->next_item = g0 * L->B;
    L->next_out = L->free_from = g0;
    if (cfg->n_workers == 0) {
        if (worker_init(L, &L->sync_worker)) {
            err_set(e, "loader: out of memory");
            loader_close(L);
            return 1;
        }
    } else {
        L->workers = calloc((size_t)cfg->n_workers, sizeof *L->workers);
        for (int k = 0; k < cfg->n_workers; k++) {
            if (worker_init(L, &L->workers[k]) || pthread_create(&L->workers[k].th, NULL, worker_main, &L->workers[k])) {
                err_set(e, "loader: cannot start worker %d", k);
                worker_free(&L->workers[k]);
                loader_close(L);
                return 1;
            }
            L->n_workers = k + 1;
        }
    }
    *out = L;
    return 0;
}

/* Turn per-sample box counts (written at offset j * max_boxes) into a compact list. */
static void compact_boxes(Loader *L, Batch *b) {
    int32_t off = 0;
    for (int j = 0; j < b->n; j++) {
        int32_t cnt = b->box_offset[j + 1];
        memmove(b->boxes + off, b->boxes + (size_t)j * L->max_boxes, (size_t)cnt * sizeof *b->boxes);
        b->box_offset[j] = off;
        off += cnt;
    }
    b->box_offset[b->n] = off;
    for (int j = b->n + 1; j <= L->B; j++) b->box_offset[j] = off;
}

int loader_next(Loader *L, const Batch **out, Err *e) {
    *out = NULL;
    long g;
    Slot *sl;
    if (L->n_workers == 0) {
        g = L->next_out;
        pthread_mutex_lock(&L->mu);
        L->free_from = g;
        for (int j = 0; j < L->B; j++) {
            Item it;
            sl = take_item(L, &it);
            int bad = 0;
            long skipped = 0;
            Err e1;
            if (it.j < it.n) bad = process_item(L, &L->sync_worker, &it, sl, &skipped, &e1);
            finish_item(L, sl, bad, &e1, skipped);
        }
        pthread_mutex_unlock(&L->mu);
    } else {
        pthread_mutex_lock(&L->mu);
        g = L->next_out;
        /* release the batch the caller held: its slot may be refilled */
        L->free_from = g;
        pthread_cond_broadcast(&L->cv_work);
        sl = &L->slots[g % L->K];
        while (!(sl->g == g && sl->done == L->B)) pthread_cond_wait(&L->cv_done, &L->mu);
        pthread_mutex_unlock(&L->mu);
    }
    sl = &L->slots[g % L->K];
    L->next_out = g + 1;
    /* counted when handed out, so the count is the same for any number of workers */
    L->n_skipped += sl->skipped;
    sl->b.n_skipped = L->n_skipped;
    if (sl->failed) {
        *e = sl->err;
        return 1;
    }
    Batch *b = &sl->b;
    if (L->cfg.mode == LOADER_MULTICROP && L->cfg.ibot) {
        uint64_t stream = ((uint64_t)b->epoch * (uint64_t)L->nb + (uint64_t)b->index) * (uint64_t)L->cfg.world + (uint64_t)L->cfg.rank;
        Rng mr = rng_fork(&L->mask_root, stream);
        /* the n real samples' global crops are rows k*B + j; a short tail batch masks 2n crops */
        b->mask_upperbound = mask_collate(&mr, &L->cfg.masks, 2 * L->B, b->ibot_masks);
    }
    if (L->cfg.mode == LOADER_PLAIN && L->cfg.with_boxes) compact_boxes(L, b);
    *out = b;
    return 0;
}

void loader_position(const Loader *L, long *epoch, long *index) {
    *epoch = L->next_out / L->nb;
    *index = L->next_out % L->nb;
}

long loader_batches_per_epoch(const Loader *L) { return L->nb; }
long loader_epoch_size(const Loader *L) { return L->E; }
int loader_n_labels(const Loader *L) { return L->n_labels; }
int loader_n_findings(const Loader *L) { return L->n_findings; }

void loader_close(Loader *L) {
    if (!L) return;
    if (L->n_workers > 0) {
        pthread_mutex_lock(&L->mu);
        L->stop = 1;
        pthread_cond_broadcast(&L->cv_work);
        pthread_mutex_unlock(&L->mu);
        for (int k = 0; k < L->n_workers; k++) pthread_join(L->workers[k].th, NULL);
    }
    if (L->workers)
        for (int k = 0; k < L->n_workers; k++) worker_free(&L->workers[k]);
    free(L->workers);
    worker_free(&L->sync_worker);
    if (L->slots)
        for (int k = 0; k < L->K; k++) slot_free(&L->slots[k]);
    free(L->slots);
    for (int k = 0; k < 2; k++) {
        free(L->plan[k].src);
        free(L->plan[k].q);
    }
    for (int s = 0; s < CORPUS_MAX_SOURCES; s++) free(L->sel[s]);
    pthread_mutex_destroy(&L->mu);
    pthread_cond_destroy(&L->cv_work);
    pthread_cond_destroy(&L->cv_done);
    free(L);
}
