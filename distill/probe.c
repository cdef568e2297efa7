/* probe.c — frozen-feature probes of a student (`versa distill --probe`): the pooled features of
 * every image in eval mode, then per task a cosine k-NN classifier, retrieval top-1 and a
 * class-balanced multinomial logistic regression, scored by balanced accuracy on the test split.
 * Small and deterministic on purpose: it is the stage-2 evidence (bench/distill_evidence.sh)
 * until the benchmark harness exists, not the benchmark. */
#include "distill/distill.h"
#include "data/data.h"
#include "engine/train.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The student's config: from the checkpoint when there is one (so the probe builds the network
 * that was trained), else the probe's own. */
static int student_config(const Config *probe_cfg, const char *ckpt, DistillConfig *d, Err *e) {
    if (!ckpt[0]) return distill_config_from(probe_cfg, d, e);
    char *yaml = ckpt_read_config(ckpt, e);
    if (!yaml) return 1;
    Config cc;
    cfg_init(&cc);
    int rc = cfg_declare(&cc, DISTILL_KEYS, DISTILL_N_KEYS, e) || cfg_load_string(&cc, yaml, ckpt, e) ||
             distill_config_from(&cc, d, e);
    /* the strings of d point into cc: keep only the numeric student settings */
    DistillConfig own;
    if (!rc) rc = distill_config_from(probe_cfg, &own, e);
    if (!rc) {
        EffNetConfig net = d->net;
        int size = d->image_size;
        float mean = d->mean, std = d->std;
        char arch[sizeof d->arch];
        memcpy(arch, d->arch, sizeof arch);
        *d = own;
        memcpy(d->arch, arch, sizeof arch);
        d->net = net;
        d->image_size = size;
        d->mean = mean;
        d->std = std;
    }
    cfg_free(&cc);
    free(yaml);
    return rc;
}

/* pooled features (n, F) of every sample of the prepared file, in sample order */
static int extract_features(Ctx *c, const DistillConfig *d, const DistillModel *m, Corpus *corpus, float *feat, Err *e) {
    LoaderConfig lc = loader_config_default(LOADER_PLAIN);
    lc.batch_size = d->probe_batch;
    lc.n_workers = d->n_workers;
    lc.channels = 3;
    lc.plain.out_h = lc.plain.out_w = d->image_size;
    for (int k = 0; k < 3; k++) {
        lc.plain.mean[k] = d->mean;
        lc.plain.std[k] = d->std;
    }
    Loader *L = NULL;
    if (loader_open(&L, corpus, &lc, e)) return 1;
    const size_t N = corpus->src[0].n, F = (size_t)m->backbone.feat_dim;
    int prev_grad = ctx_set_grad(c, 0), prev_train = c->training;
    c->training = 0;
    size_t done = 0;
    int rc = 0;
    while (done < N) {
        const Batch *b;
        if (loader_next(L, &b, e)) {
            rc = 1;
            break;
        }
        ctx_step_begin(c);
        const size_t B = (size_t)b->n, S = (size_t)d->image_size;
        Tensor *x = tensor_wrap(c, b->image, 4, TSHAPE(B, 3, S, S));
        EffNetOut o = effnet_forward(c, &m->backbone, x);
        for (size_t j = 0; j < B; j++) memcpy(feat + (size_t)b->sample[j] * F, o.pooled->data + j * F, F * sizeof(float));
        done += B;
    }
    ctx_set_grad(c, prev_grad);
    c->training = prev_train;
    loader_close(L);
    return rc;
}

/* balanced accuracy: mean over classes present in y of the recall */
static double balanced_accuracy(const int *y, const int *pred, size_t n, int C) {
    double rec = 0;
    int present = 0;
    for (int k = 0; k < C; k++) {
        size_t tot = 0, hit = 0;
        for (size_t i = 0; i < n; i++)
            if (y[i] == k) {
                tot++;
                hit += pred[i] == k;
            }
        if (tot) {
            rec += (double)hit / (double)tot;
            present++;
        }
    }
    return present ? rec / present : 0.0;
}

/* cosine k-NN with class-balanced votes (each neighbour counts 1 / its class's train frequency,
 * so a rare class is not outvoted by prevalence alone; ties to the larger similarity sum) and
 * retrieval top-1 (the nearest train image has the query's label) */
static void knn(const float *tr, const int *ytr, size_t ntr, const float *te, const int *yte, size_t nte, size_t F, int C,
                int k, double *bacc, double *top1) {
    int *pred = malloc(nte * sizeof(int));
    size_t hits1 = 0;
    double inv_freq[64] = {0};
    for (size_t i = 0; i < ntr; i++) inv_freq[ytr[i]] += 1;
    for (int c2 = 0; c2 < C; c2++) inv_freq[c2] = inv_freq[c2] > 0 ? 1.0 / inv_freq[c2] : 0;
    if ((size_t)k > ntr) k = (int)ntr;
#pragma omp parallel for schedule(static) reduction(+ : hits1)
    for (size_t q = 0; q < nte; q++) {
        float best_s[64];
        int best_y[64];
        int kk = k < 64 ? k : 64, nb = 0;
        for (size_t i = 0; i < ntr; i++) {
            double s = 0;
            for (size_t f = 0; f < F; f++) s += (double)te[q * F + f] * tr[i * F + f];
            /* insert into the sorted top-kk list */
            if (nb < kk || s > best_s[nb - 1]) {
                int pos = nb < kk ? nb++ : kk - 1;
                while (pos > 0 && best_s[pos - 1] < s) {
                    best_s[pos] = best_s[pos - 1];
                    best_y[pos] = best_y[pos - 1];
                    pos--;
                }
                best_s[pos] = (float)s;
                best_y[pos] = ytr[i];
            }
        }
        double votes[64] = {0}, simsum[64] = {0};
        for (int j = 0; j < nb; j++) {
            votes[best_y[j]] += inv_freq[best_y[j]];
            simsum[best_y[j]] += best_s[j];
        }
        int p = 0;
        for (int c2 = 1; c2 < C; c2++)
            if (votes[c2] > votes[p] || (votes[c2] == votes[p] && simsum[c2] > simsum[p])) p = c2;
        pred[q] = p;
        hits1 += nb > 0 && best_y[0] == yte[q];
    }
    *bacc = balanced_accuracy(yte, pred, nte, C);
    *top1 = nte ? (double)hits1 / (double)nte : 0;
    free(pred);
}

/* Class-balanced multinomial logistic regression on standardised features (train statistics),
 * L2 penalty l2/2 ||W||^2, full-batch Adam in double for a fixed number of iterations. */
static double logreg(const float *tr, const int *ytr, size_t ntr, const float *te, const int *yte, size_t nte, size_t F,
                     int C, double l2) {
    double *mu = calloc(F, sizeof(double)), *sd = calloc(F, sizeof(double));
    for (size_t i = 0; i < ntr; i++)
        for (size_t f = 0; f < F; f++) mu[f] += tr[i * F + f];
    for (size_t f = 0; f < F; f++) mu[f] /= (double)ntr;
    for (size_t i = 0; i < ntr; i++)
        for (size_t f = 0; f < F; f++) sd[f] += (tr[i * F + f] - mu[f]) * (tr[i * F + f] - mu[f]);
    for (size_t f = 0; f < F; f++) sd[f] = sqrt(sd[f] / (double)ntr) + 1e-6;
    double cw[64] = {0};
    for (size_t i = 0; i < ntr; i++) cw[ytr[i]] += 1;
    int present = 0;
    for (int k = 0; k < C; k++) present += cw[k] > 0;
    for (int k = 0; k < C; k++) cw[k] = cw[k] > 0 ? (double)ntr / (present * cw[k]) : 0;
    const size_t P = (size_t)C * (F + 1);
    double *w = calloc(P, sizeof(double)), *g = calloc(P, sizeof(double));
    double *m1 = calloc(P, sizeof(double)), *m2 = calloc(P, sizeof(double));
    double *z = malloc(ntr * (size_t)C * sizeof(double));
    const int iters = 300;
    const double lr = 0.01, b1 = 0.9, b2 = 0.999;
    for (int it = 1; it <= iters; it++) {
        memset(g, 0, P * sizeof(double));
        for (size_t i = 0; i < ntr; i++) {
            double *zi = z + i * (size_t)C, mx = -INFINITY, s = 0;
            for (int k = 0; k < C; k++) {
                const double *wk = w + (size_t)k * (F + 1);
                double a = wk[F];
                for (size_t f = 0; f < F; f++) a += wk[f] * (tr[i * F + f] - mu[f]) / sd[f];
                zi[k] = a;
                mx = fmax(mx, a);
            }
            for (int k = 0; k < C; k++) s += (zi[k] = exp(zi[k] - mx));
            const double wi = cw[ytr[i]] / (double)ntr;
            for (int k = 0; k < C; k++) {
                double dz = wi * (zi[k] / s - (k == ytr[i]));
                double *gk = g + (size_t)k * (F + 1);
                for (size_t f = 0; f < F; f++) gk[f] += dz * (tr[i * F + f] - mu[f]) / sd[f];
                gk[F] += dz;
            }
        }
        for (size_t p = 0; p < P; p++) {
            double gp = g[p] + ((p % (F + 1)) != F ? l2 * w[p] : 0.0);
            m1[p] = b1 * m1[p] + (1 - b1) * gp;
            m2[p] = b2 * m2[p] + (1 - b2) * gp * gp;
            double mh = m1[p] / (1 - pow(b1, it)), vh = m2[p] / (1 - pow(b2, it));
            w[p] -= lr * mh / (sqrt(vh) + 1e-8);
        }
    }
    int *pred = malloc((nte + 1) * sizeof(int));
    for (size_t q = 0; q < nte; q++) {
        int best = 0;
        double bv = -INFINITY;
        for (int k = 0; k < C; k++) {
            const double *wk = w + (size_t)k * (F + 1);
            double a = wk[F];
            for (size_t f = 0; f < F; f++) a += wk[f] * (te[q * F + f] - mu[f]) / sd[f];
            if (a > bv) {
                bv = a;
                best = k;
            }
        }
        pred[q] = best;
    }
    double bacc = balanced_accuracy(yte, pred, nte, C);
    free(mu); free(sd); free(w); free(g); free(m1); free(m2); free(z); free(pred);
    return bacc;
}

/* labels of task `name` for every sample (-1 = none); returns the class count or -1 */
static int task_labels(const Prepared *p, const char *name, int *y, Err *e) {
    if (!strncmp(name, "findings:", 9)) {
        int fcol = -1;
        for (int f = 0; f < p->n_findings; f++)
            if (!strcmp(p->finding_names[f], name + 9)) fcol = f;
        if (fcol < 0) return err_set(e, "probe.tasks: %s has no finding class '%s'", p->path, name + 9), -1;
        for (size_t i = 0; i < p->n; i++) y[i] = p->findings[i * (size_t)p->n_findings + (size_t)fcol] != 0;
        return 2;
    }
    int col = prep_label_col(p, name);
    if (col < 0) return err_set(e, "probe.tasks: %s has no label column '%s'", p->path, name), -1;
    if (p->n_classes[col] > 64) return err_set(e, "probe.tasks: '%s' has more than 64 classes", name), -1;
    for (size_t i = 0; i < p->n; i++) y[i] = prep_label(p, i, col);
    return p->n_classes[col];
}

int distill_probe(const Config *cfg, Ctx *c, ProbeResult *r, Err *e) {
    memset(r, 0, sizeof(*r));
    double t0 = wall_seconds();
    const char *ckpt = cfg_get_str(cfg, "probe.checkpoint", "");
    DistillConfig d;
    if (student_config(cfg, ckpt, &d, e)) return 1;
    if (!d.prepared[0]) return err_set(e, "data.prepared: no prepared dataset given");
    size_t n_tasks = cfg_has(cfg, "probe.tasks") ? cfg_list_len(cfg, "probe.tasks") : 0;
    if (n_tasks == 0) return err_set(e, "probe.tasks: no task given (e.g. probe.tasks=[pathology, findings:Mass])");
    if (n_tasks > PROBE_MAX_TASKS) return err_set(e, "probe.tasks: at most %d tasks", PROBE_MAX_TASKS);
    CorpusSource src = {d.prepared, 1.0f};
    Corpus corpus;
    if (corpus_open(&corpus, &src, 1, e)) return 1;
    const Prepared *P = &corpus.src[0];
    const size_t N = P->n;
    ParamStore ps;
    params_init(&ps);
    ps.values_only = 1;
    DistillModel m;
    d.n_heads = 0;
    distill_model_declare(&m, &d, &ps, 0);
    params_alloc(&ps);
    Rng init_rng;
    rng_init(&init_rng, d.seed);
    distill_model_init(&m, &init_rng);
    const size_t F = (size_t)m.backbone.feat_dim;
    float *feat = malloc(N * F * sizeof(float)), *tr = NULL, *te = NULL;
    int *y = malloc(N * sizeof(int)), *ytr = malloc(N * sizeof(int)), *yte = malloc(N * sizeof(int));
    int rc = 1;
    if (ckpt[0]) {
        CkptStore st = {.prefix = "", .ps = &ps, .partial = 1};
        if (ckpt_load_stores(ckpt, &st, 1, NULL, NULL, 0, NULL, 0, e)) goto done;
    }
    if (extract_features(c, &d, &m, &corpus, feat, e)) goto done;
    l2_normalize_rows(feat, N, F);   /* k-NN is cosine; the regression standardises anyway */
    tr = malloc(N * F * sizeof(float));
    te = malloc(N * F * sizeof(float));
    for (size_t k = 0; k < n_tasks; k++) {
        ProbeTask *pt = &r->task[r->n_tasks];
        const char *name = cfg_list_item(cfg, "probe.tasks", k);
        snprintf(pt->name, sizeof pt->name, "%s", name);
        int C = task_labels(P, name, y, e);
        if (C < 0) goto done;
        size_t ntr = 0, nte = 0;
        for (size_t i = 0; i < N; i++) {
            if (y[i] < 0) continue;
            if ((int)P->split[i] == d.probe_train_split || d.probe_train_split < 0) {
                memcpy(tr + ntr * F, feat + i * F, F * sizeof(float));
                ytr[ntr++] = y[i];
            } else if ((int)P->split[i] == d.probe_test_split || d.probe_test_split < 0) {
                memcpy(te + nte * F, feat + i * F, F * sizeof(float));
                yte[nte++] = y[i];
            }
        }
        if (ntr < 2 || nte < 1) {
            err_set(e, "probe.tasks: '%s' has %zu labelled train and %zu test images in %s", name, ntr, nte, d.prepared);
            goto done;
        }
        int present = 0;
        for (int cl = 0; cl < C; cl++) {
            int any = 0;
            for (size_t i = 0; i < nte && !any; i++) any = yte[i] == cl;
            present += any;
        }
        pt->n_classes = C;
        pt->n_train = (long)ntr;
        pt->n_test = (long)nte;
        pt->chance = present ? 1.0 / present : 0;
        pt->top1_chance = 0;
        for (int cl = 0; cl < C; cl++) {
            double ptr = 0, pte = 0;
            for (size_t i = 0; i < ntr; i++) ptr += ytr[i] == cl;
            for (size_t i = 0; i < nte; i++) pte += yte[i] == cl;
            pt->top1_chance += (ptr / (double)ntr) * (pte / (double)nte);
        }
        knn(tr, ytr, ntr, te, yte, nte, F, C, d.probe_k, &pt->knn_bacc, &pt->top1);
        pt->logreg_bacc = logreg(tr, ytr, ntr, te, yte, nte, F, C, d.probe_l2);
        r->n_tasks++;
    }
    r->seconds = wall_seconds() - t0;
    if (d.probe_out[0]) {
        FILE *f = fopen(d.probe_out, "w");
        if (!f) {
            err_set(e, "probe.output: %s: cannot write", d.probe_out);
            goto done;
        }
        fprintf(f, "{\"checkpoint\": \"%s\", \"arch\": \"%s\", \"image_size\": %d, \"tasks\": [", ckpt, d.arch, d.image_size);
        for (int i = 0; i < r->n_tasks; i++) {
            const ProbeTask *pt = &r->task[i];
            fprintf(f, "%s\n  {\"task\": \"%s\", \"classes\": %d, \"train\": %ld, \"test\": %ld, \"knn_bacc\": %.6f, "
                       "\"top1\": %.6f, \"logreg_bacc\": %.6f, \"chance\": %.6f, \"top1_chance\": %.6f}",
                    i ? "," : "", pt->name, pt->n_classes, pt->n_train, pt->n_test, pt->knn_bacc, pt->top1, pt->logreg_bacc,
                    pt->chance, pt->top1_chance);
        }
        fprintf(f, "\n]}\n");
        fclose(f);
    }
    rc = 0;
done:
    free(feat);
    free(tr);
    free(te);
    free(y);
    free(ytr);
    free(yte);
    params_free(&ps);
    corpus_close(&corpus);
    return rc;
}
