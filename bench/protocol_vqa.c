/* protocol_vqa.c — the VQA protocol (recipe.md §3.3): MammoVQA image-level JSON, one question topic
 * per task; a ViLT-style fusion transformer (nn/fusion.c) over the question's word tokens and the
 * frozen backbone's image tokens, trained from scratch with CE (single answer) or sigmoid-BCE
 * (the multi-label "Abnormality" topic).
 *
 * The task's file is MammoVQA-Image-Train.json; Eval and Bench (test) are found next to it and
 * the images at <folder>/<Path>.  The image tokens do not depend on the head, so they are computed
 * once per image and cached for the run. */
#include "bench/bench.h"
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ------------------------------------------------------------------------------------------ */
/* a small JSON reader for MammoVQA's {"id": {"Key": "text" | ["text", ...], ...}, ...} */


typedef struct Json {
    const char *s, *start, *end, *file;
    Err *e;
} Json;

static void ws(Json *j) {
    while (j->s < j->end && isspace((unsigned char)*j->s)) j->s++;
}

static int jfail(Json *j, const char *what) {
    return err_set(j->e, "%s: JSON: %s at byte %ld", j->file, what, (long)(j->s - j->start));
}

/* string into out (truncated to n - 1 bytes); \uXXXX outside ASCII becomes '?' */
static int jstring(Json *j, char *out, size_t n) {
    ws(j);
    if (j->s >= j->end || *j->s != '"') return jfail(j, "expected a string");
    j->s++;
    size_t k = 0;
    while (j->s < j->end && *j->s != '"') {
        char ch = *j->s++;
        if (ch == '\\') {
            if (j->s >= j->end) break;
            char esc = *j->s++;
            ch = esc == 'n' ? '\n' : esc == 't' ? '\t' : esc == 'r' ? '\r' : esc == 'b' ? '\b' : esc == 'f' ? '\f' : esc;
            if (esc == 'u') {
                if (j->end - j->s < 4) return jfail(j, "truncated \\u escape");
                char hex[5] = {j->s[0], j->s[1], j->s[2], j->s[3], 0};
                long v = strtol(hex, NULL, 16);
                ch = v < 128 ? (char)v : '?';
                j->s += 4;
            }
        }
        if (out && k + 1 < n) out[k++] = ch;
    }
    if (j->s >= j->end) return jfail(j, "unterminated string");
    j->s++;
    if (out) out[k] = 0;
    return 0;
}

static int jskip(Json *j, int depth);

static int jskip_container(Json *j, char close, int depth) {
    j->s++;
    ws(j);
    if (j->s < j->end && *j->s == close) {
        j->s++;
        return 0;
    }
    for (;;) {
        if (close == '}') {
            if (jstring(j, NULL, 0)) return 1;
            ws(j);
            if (j->s >= j->end || *j->s != ':') return jfail(j, "expected ':'");
            j->s++;
        }
        if (jskip(j, depth + 1)) return 1;
        ws(j);
        if (j->s < j->end && *j->s == ',') {
            j->s++;
            continue;
        }
        if (j->s < j->end && *j->s == close) {
            j->s++;
            return 0;
        }
        return jfail(j, close == '}' ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int jskip(Json *j, int depth) {
    ws(j);
    if (depth > 64) return jfail(j, "nested too deeply");
    if (j->s >= j->end) return jfail(j, "unexpected end");
    if (*j->s == '"') return jstring(j, NULL, 0);
    if (*j->s == '{') return jskip_container(j, '}', depth);
    if (*j->s == '[') return jskip_container(j, ']', depth);
    const char *st = j->s;   /* number, true, false, null */
    while (j->s < j->end && (isalnum((unsigned char)*j->s) || *j->s == '-' || *j->s == '+' || *j->s == '.')) j->s++;
    return j->s == st ? jfail(j, "unexpected character") : 0;
}

/* one record object: the keys MammoVQA uses, others skipped */
static int jrecord(Json *j, VqaRec *r) {
    memset(r, 0, sizeof *r);
    ws(j);
    if (j->s >= j->end || *j->s != '{') return jfail(j, "expected a record object");
    j->s++;
    ws(j);
    if (j->s < j->end && *j->s == '}') {
        j->s++;
        return 0;
    }
    for (;;) {
        char key[64];
        if (jstring(j, key, sizeof key)) return 1;
        ws(j);
        if (j->s >= j->end || *j->s != ':') return jfail(j, "expected ':'");
        j->s++;
        ws(j);
        if (!strcmp(key, "Path")) {
            if (jstring(j, r->path, sizeof r->path)) return 1;
        } else if (!strcmp(key, "Question topic")) {
            if (jstring(j, r->topic, sizeof r->topic)) return 1;
        } else if (!strcmp(key, "Question")) {
            if (jstring(j, r->question, sizeof r->question)) return 1;
        } else if (!strcmp(key, "Answer") && j->s < j->end && *j->s == '"') {
            if (jstring(j, r->answers[0], BENCH_NAME_LEN)) return 1;
            r->n_answers = 1;
        } else if (!strcmp(key, "Answer") && j->s < j->end && *j->s == '[') {
            j->s++;
            ws(j);
            while (j->s < j->end && *j->s != ']') {
                char tmp[BENCH_NAME_LEN];
                if (jstring(j, tmp, sizeof tmp)) return 1;
                if (r->n_answers < BENCH_MAX_CLASSES) snprintf(r->answers[r->n_answers++], BENCH_NAME_LEN, "%s", tmp);
                ws(j);
                if (j->s < j->end && *j->s == ',') j->s++, ws(j);
            }
            if (j->s >= j->end) return jfail(j, "unterminated answer list");
            j->s++;
        } else if (jskip(j, 1)) {
            return 1;
        }
        ws(j);
        if (j->s < j->end && *j->s == ',') {
            j->s++;
            continue;
        }
        if (j->s < j->end && *j->s == '}') {
            j->s++;
            return 0;
        }
        return jfail(j, "expected ',' or '}' in a record");
    }
}

int bench_vqa_parse(const char *buf, size_t len, const char *name, VqaRec **out, size_t *n_out, Err *e) {
    *out = NULL;
    *n_out = 0;
    Json j = {.s = buf, .start = buf, .end = buf + len, .file = name, .e = e};
    VqaRec *recs = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    ws(&j);
    if (j.s >= j.end || *j.s != '{') rc = jfail(&j, "expected '{' (MammoVQA: an object of records)");
    else j.s++;
    ws(&j);
    if (!rc && j.s < j.end && *j.s == '}') j.s++;
    else
        while (!rc) {
            if (jstring(&j, NULL, 0)) {
                rc = 1;
                break;
            }
            ws(&j);
            if (j.s >= j.end || *j.s != ':') {
                rc = jfail(&j, "expected ':'");
                break;
            }
            j.s++;
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                recs = xrealloc(recs, cap * sizeof(VqaRec));
            }
            if (jrecord(&j, &recs[n])) {
                rc = 1;
                break;
            }
            n++;
            ws(&j);
            if (j.s < j.end && *j.s == ',') {
                j.s++;
                ws(&j);
                continue;
            }
            if (j.s < j.end && *j.s == '}') break;
            rc = jfail(&j, "expected ',' or '}' between records");
        }
    if (rc) {
        free(recs);
        return 1;
    }
    *out = recs;
    *n_out = n;
    return 0;
}

static int read_json(const char *path, VqaRec **out, size_t *n_out, Err *e) {
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(e, "%s: cannot open", path);
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    if (len > (1L << 30)) {   /* MammoVQA's largest split is ~30 MB */
        fclose(f);
        return err_set(e, "%s: %ld bytes, larger than the 1 GiB a question file may have", path, len);
    }
    char *buf = xmalloc((size_t)(len > 0 ? len : 0) + 1);
    size_t got = len > 0 ? fread(buf, 1, (size_t)len, f) : 0;
    fclose(f);
    if (len < 0 || got != (size_t)len) {
        free(buf);
        return err_set(e, "%s: read error", path);
    }
    int rc = bench_vqa_parse(buf, got, path, out, n_out, e);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------------------------------ */
/* questions -> word ids: lower-case alphanumeric words; ids 0 [PAD], 1 [UNK], 2.. the train words */

typedef struct Vocab {
    char (*w)[32];
    int n, cap;
} Vocab;

static int vocab_find(const Vocab *v, const char *w) {
    for (int i = 0; i < v->n; i++)
        if (!strcmp(v->w[i], w)) return i + 2;
    return 1;
}

/* ids (max_words) padded with 0; grow: add unseen words to the vocabulary */
static void tokenize(Vocab *v, const char *q, int max_words, int grow, int32_t *ids) {
    int k = 0;
    for (int i = 0; i < max_words; i++) ids[i] = 0;
    const char *s = q;
    while (*s && k < max_words) {
        while (*s && !isalnum((unsigned char)*s)) s++;
        if (!*s) break;
        char w[32];
        int l = 0;
        while (*s && isalnum((unsigned char)*s)) {
            if (l < 31) w[l++] = (char)tolower((unsigned char)*s);
            s++;
        }
        w[l] = 0;
        int id = vocab_find(v, w);
        if (id == 1 && grow) {
            if (v->n == v->cap) {
                v->cap = v->cap ? 2 * v->cap : 64;
                v->w = xrealloc(v->w, (size_t)v->cap * sizeof *v->w);
            }
            snprintf(v->w[v->n++], 32, "%s", w);
            id = v->n + 1;
        }
        ids[k++] = id;
    }
}

/* ------------------------------------------------------------------------------------------ */

typedef struct VqaItem {
    int split;
    int img;                   /* index into the image cache */
    int32_t y;                 /* single answer: class, -1 none */
    uint8_t Y[BENCH_MAX_CLASSES];
} VqaItem;

static int class_of(const BenchTask *t, const char *ans) {
    for (int c = 0; c < t->n_classes; c++)
        if (!strcasecmp(t->classes[c], ans)) return c;
    return -1;
}

int bench_proto_vqa(Ctx *c, const BenchModel *m, const BenchTask *t, const BenchDenseArgs *a, BenchResult *r, Err *e) {
    const BenchSettings *st = a->s;
    const int S = m->size, C = t->n_classes, L = st->vqa.max_words, B = st->vqa.batch;
    if (t->n_datasets != 1) return err_set(e, "task %s: a VQA task reads one MammoVQA folder", t->id);
    char train_path[1024], dir[1024];
    if (t->file[0][0] == '/') snprintf(train_path, sizeof train_path, "%s", t->file[0]);
    else snprintf(train_path, sizeof train_path, "%s/%s", a->data_root, t->file[0]);
    snprintf(dir, sizeof dir, "%s", train_path);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0;
    else snprintf(dir, sizeof dir, ".");
    static const char *files[3] = {"MammoVQA-Image-Train.json", "MammoVQA-Image-Eval.json", "MammoVQA-Image-Bench.json"};

    /* ---- records of the task's topic, images, word ids ---- */
    VqaItem *items = NULL;
    int32_t *ids = NULL;
    size_t n = 0, cap = 0;
    char (*paths)[256] = NULL;
    int n_img = 0, cap_img = 0;
    Vocab voc = {0};
    int rc = 0;
    for (int sp = 0; sp < 3 && !rc; sp++) {
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", dir, files[sp]);
        VqaRec *recs = NULL;
        size_t nr = 0;
        if (read_json(p, &recs, &nr, e)) {
            rc = 1;
            break;
        }
        for (size_t i = 0; i < nr; i++) {
            const VqaRec *q = &recs[i];
            if (strcasecmp(q->topic, t->label)) continue;
            if (n == cap) {
                cap = cap ? 2 * cap : 1024;
                items = xrealloc(items, cap * sizeof(VqaItem));
                ids = xrealloc(ids, cap * (size_t)L * sizeof(int32_t));
            }
            VqaItem *it = &items[n];
            memset(it, 0, sizeof *it);
            it->split = sp;
            it->y = -1;
            int any = 0;
            for (int k = 0; k < q->n_answers; k++) {
                int cl = class_of(t, q->answers[k]);
                if (cl < 0) continue;
                any = 1;
                it->Y[cl] = 1;
                if (!t->multilabel) it->y = cl;
            }
            if (!any || (!t->multilabel && q->n_answers != 1)) continue;   /* an answer outside the task's classes */
            int found = -1;   /* images repeat over topics, rarely within one: linear search from the end */
            for (int k = n_img - 1; k >= 0 && k >= n_img - 64; k--)
                if (!strcmp(paths[k], q->path)) found = k;
            if (found < 0) {
                if (n_img == cap_img) {
                    cap_img = cap_img ? 2 * cap_img : 1024;
                    paths = xrealloc(paths, (size_t)cap_img * sizeof *paths);
                }
                snprintf(paths[n_img], 256, "%s", q->path);
                found = n_img++;
            }
            it->img = found;
            tokenize(&voc, q->question, L, sp == 0, ids + n * (size_t)L);
            r->n_split[sp]++;
            n++;
        }
        free(recs);
    }
    size_t ntr = r->n_split[0], nte = r->n_split[2];
    if (!rc && (ntr == 0 || nte == 0))
        rc = err_set(e, "%s: topic '%s': %zu train and %zu test questions with an answer among the task's classes", dir,
                     t->label, ntr, nte);

    /* ---- the fusion model; image tokens once per image ---- */
    BackboneDims bd;
    bench_model_dims(m, &bd);
    FusionConfig fc = {.dim = st->vqa.dim, .depth = st->vqa.depth, .heads = st->vqa.heads, .mlp_ratio = 4,
                       .fuse_ch = st->vqa.dim < 256 ? st->vqa.dim : 256, .vocab = voc.n + 2, .max_words = L,
                       .n_answers = C, .ln_eps = 1e-6f};
    ParamStore ps;
    params_init(&ps);
    FusionModel fm;
    memset(&fm, 0, sizeof fm);
    float *tok = NULL;   // (n_img, N, img_in)
    size_t N = 0, D = 0;
    if (!rc) {
        fusion_declare(&fm, &fc, &bd, S, S, &ps, "vqa");
        params_alloc(&ps);
        Rng ri;
        rng_init(&ri, a->head_seed);
        fusion_init(&fm, &ri);
        /* image tokens in batches of input.batch images */
        const int IB = st->batch;
        const size_t per = (size_t)m->in_chans * S * S;
        float *raw = NULL, *gray = xmalloc((size_t)S * S * sizeof(float)), *x = xmalloc((size_t)IB * per * sizeof(float));
        size_t raw_n = 0;
        for (int i0 = 0; i0 < n_img && !rc; i0 += IB) {
            const int nb = n_img - i0 < IB ? n_img - i0 : IB;
            for (int b = 0; b < nb && !rc; b++) {
                const char *ph = paths[i0 + b];
                char p[1400];
                snprintf(p, sizeof p, "%s/%s", dir, ph[0] == '/' ? ph + 1 : ph);
                Image im;
                if (image_load(p, &im, e)) {
                    rc = 1;
                    break;
                }
                size_t hw = (size_t)im.w * im.h;
                if (hw > raw_n) raw = xrealloc(raw, (raw_n = hw) * sizeof(float));
                const float inv = 1.0f / (float)image_maxval(&im);
                for (size_t k = 0; k < hw; k++) raw[k] = im.px[k] * inv;
                resize_f32(raw, im.w, im.h, gray, S, S, RESIZE_BILINEAR);
                image_free(&im);
                for (size_t k = 0; k < (size_t)S * S; k++) gray[k] = (gray[k] - st->mean) / st->std;
                bench_dense_input(gray, S, m->in_chans, 0, 0, x + (size_t)b * per);
            }
            if (rc) break;
            ctx_step_begin(c);
            int g = ctx_set_grad(c, 0);
            Tensor *xt = tensor_from(c, 4, TSHAPE((size_t)nb, (size_t)m->in_chans, (size_t)S, (size_t)S), x);
            BackboneMaps f = bench_model_maps(c, m, xt);
            Tensor *tk = fusion_image_tokens(c, &fm, &f);                  // (nb, N, img_in)
            ctx_set_grad(c, g);
            if (!tok) {
                N = tk->shape[1];
                D = tk->shape[2];
                tok = xmalloc((size_t)n_img * N * D * sizeof(float));
            }
            tensor_copy_to(tk, tok + (size_t)i0 * N * D);
        }
        free(raw);
        free(gray);
        free(x);
    }

    /* ---- training ---- */
    uint32_t *train = xmalloc((n + 1) * sizeof(uint32_t)), *test = xmalloc((n + 1) * sizeof(uint32_t));
    size_t a_tr = 0, a_te = 0;
    for (size_t i = 0; i < n; i++) {
        if (items[i].split == PREP_SPLIT_TRAIN) train[a_tr++] = (uint32_t)i;
        if (items[i].split == PREP_SPLIT_TEST) test[a_te++] = (uint32_t)i;
    }
    /* z-score each token channel with the train images' statistics, as the linear probes do
     * (linear.standardize): eval-mode maps of a random-init EfficientNet are ~1e-14 and would
     * never move the adapter otherwise; an affine map of the tokens, so capacity is unchanged */
    if (!rc && tok) {
        uint8_t *is_train = xcalloc((size_t)n_img + 1, 1);
        for (size_t k = 0; k < a_tr; k++) is_train[items[train[k]].img] = 1;
        double *mu = xcalloc(D, sizeof(double)), *var = xcalloc(D, sizeof(double));
        double cnt = 0;
        for (int i = 0; i < n_img; i++) {
            if (!is_train[i]) continue;
            for (size_t t = 0; t < N; t++) {
                const float *v = tok + ((size_t)i * N + t) * D;
                for (size_t d = 0; d < D; d++) mu[d] += v[d];
            }
            cnt += (double)N;
        }
        for (size_t d = 0; d < D; d++) mu[d] /= cnt > 0 ? cnt : 1;
        double mean_var = 0;
        for (int i = 0; i < n_img; i++) {
            if (!is_train[i]) continue;
            for (size_t t = 0; t < N; t++) {
                const float *v = tok + ((size_t)i * N + t) * D;
                for (size_t d = 0; d < D; d++) var[d] += (v[d] - mu[d]) * (v[d] - mu[d]);
            }
        }
        for (size_t d = 0; d < D; d++) mean_var += (var[d] /= cnt > 0 ? cnt : 1) / (double)D;
        for (size_t d = 0; d < D; d++) var[d] = 1.0 / sqrt(var[d] + 1e-6 * mean_var + 1e-30);
        for (size_t q = 0; q < (size_t)n_img * N; q++)
            for (size_t d = 0; d < D; d++) tok[q * D + d] = (float)((tok[q * D + d] - mu[d]) * var[d]);
        free(is_train);
        free(mu);
        free(var);
    }
    OptimConfig oc = optim_adamw_default();
    oc.weight_decay = 0;
    Rng rng;
    rng_init(&rng, a->head_seed ^ 0x5157u);
    int32_t *bids = xmalloc((size_t)B * L * sizeof(int32_t)), *by = xmalloc((size_t)B * sizeof(int32_t));
    float *bimg = xmalloc((size_t)B * (N ? N * D : 1) * sizeof(float)), *bY = xmalloc((size_t)B * C * sizeof(float));
    const long steps = st->vqa.steps;
    double loss_first = 0, loss_last = 0;
    for (long it = 0; it < steps && !rc; it++) {
        ctx_step_begin(c);
        for (int b = 0; b < B; b++) {
            const size_t q = train[rng_below(&rng, (uint32_t)ntr)];
            memcpy(bids + (size_t)b * L, ids + q * (size_t)L, (size_t)L * sizeof(int32_t));
            memcpy(bimg + (size_t)b * N * D, tok + (size_t)items[q].img * N * D, N * D * sizeof(float));
            by[b] = items[q].y;
            for (int k = 0; k < C; k++) bY[(size_t)b * C + k] = items[q].Y[k];
        }
        Tensor *img = tensor_from(c, 3, TSHAPE((size_t)B, N, D), bimg);
        c->training = 1;
        Tensor *logits = fusion_forward(c, &fm, bids, L, img);            // (B, C)
        Tensor *loss = t->multilabel ? loss_bce_logits(c, logits, tensor_from(c, 2, TSHAPE((size_t)B, (size_t)C), bY), NULL)
                                     : loss_cross_entropy(c, logits, by, 0.0f);
        params_zero_grad(&ps);
        backward(c, loss);
        optim_step(&ps, &oc, it + 1, bench_dense_lr(it, steps, st->vqa.lr), 0.0);
        c->training = 0;
        long win = steps < 20 ? 1 : steps / 20;
        if (it < win) loss_first += loss->data[0] / (double)win;
        if (it >= steps - win) loss_last += loss->data[0] / (double)win;
    }

    /* ---- test ---- */
    if (!rc) {
        float *score = xmalloc((nte * (size_t)C + 1) * sizeof(float));
        int32_t *yte = xmalloc((nte + 1) * sizeof(int32_t));
        uint8_t *Yte = xmalloc(nte * (size_t)C + 1);
        for (size_t k0 = 0; k0 < nte; k0 += (size_t)B) {
            const int nb = (int)(nte - k0 < (size_t)B ? nte - k0 : (size_t)B);
            ctx_step_begin(c);
            for (int b = 0; b < nb; b++) {
                const size_t q = test[k0 + b];
                memcpy(bids + (size_t)b * L, ids + q * (size_t)L, (size_t)L * sizeof(int32_t));
                memcpy(bimg + (size_t)b * N * D, tok + (size_t)items[q].img * N * D, N * D * sizeof(float));
                yte[k0 + b] = items[q].y;
                memcpy(Yte + (k0 + b) * (size_t)C, items[q].Y, (size_t)C);
            }
            int g = ctx_set_grad(c, 0);
            Tensor *lg = fusion_forward(c, &fm, bids, L, tensor_from(c, 3, TSHAPE((size_t)nb, N, D), bimg));
            Tensor *pr = t->multilabel ? op_sigmoid(c, lg) : op_softmax(c, lg);
            ctx_set_grad(c, g);
            memcpy(score + k0 * (size_t)C, pr->data, (size_t)nb * C * sizeof(float));
        }
        rc = t->multilabel ? bench_eval_multilabel(Yte, score, nte, C, st, a->boot_seed, "", &r->metrics, e)
                           : bench_eval_classification(yte, score, nte, C, st, a->boot_seed, "", &r->metrics, e);
        if (!rc)
            snprintf(r->detail, sizeof r->detail,
                     "vilt: fusion %d x %d (dim %d), %zu image tokens of %zu (z-scored), vocabulary %d words, %ld steps x %d, loss %.3f "
                     "-> %.3f; %d images; ",
                     fc.depth, fc.heads, fc.dim, N, D, voc.n, steps, B, loss_first, loss_last, n_img);
        free(score);
        free(yte);
        free(Yte);
    }
    free(bids);
    free(by);
    free(bimg);
    free(bY);
    free(train);
    free(test);
    free(tok);
    params_free(&ps);
    free(items);
    free(ids);
    free(paths);
    free(voc.w);
    return rc;
}
