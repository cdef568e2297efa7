/* dense.c — what the part-2 protocols (segmentation, detection, VQA) share: the backbone's
 * multi-scale maps for a BenchModel, image loading at the model's input size, flips, the head
 * learning-rate schedule. */
#include "bench/bench.h"
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

void bench_task_file(const BenchTask *t, int k, const char *data_root, char *path, size_t n) {
    if (t->file[k][0] == '/') snprintf(path, n, "%s", t->file[k]);
    else snprintf(path, n, "%s/%s", data_root, t->file[k]);
}

static const ViT *model_vit(const BenchModel *m) { return m->is_ssl ? &m->ssl.backbone : &m->vit; }

void bench_model_dims(const BenchModel *m, BackboneDims *d) {
    if (m->kind == BENCH_VIT) backbone_dims_vit(model_vit(m), d);
    else backbone_dims_effnet(&m->effnet, d);
}

BackboneMaps bench_model_maps(Ctx *c, const BenchModel *m, Tensor *x) {
    int prev = ctx_set_grad(c, 0), training = c->training;
    c->training = 0;
    const int H = (int)x->shape[2], W = (int)x->shape[3];
    BackboneMaps f;
    if (m->kind == BENCH_VIT) {
        ViTOut o = vit_forward(c, model_vit(m), x, NULL);
        f = backbone_maps_vit(c, &o, H, W);
    } else {
        EffNetOut o = effnet_forward(c, &m->effnet, x);
        f = backbone_maps_effnet(&o, H, W);
    }
    c->training = training;
    ctx_set_grad(c, prev);
    return f;
}

int bench_dense_image(const Prepared *p, size_t i, int S, float mean, float std, float *raw, float *out, Err *e) {
    if (prep_read_image_f32(p, i, raw, e)) return 1;          // raw: (h, w) in [0, 1]
    if (p->w == S && p->h == S) memcpy(out, raw, (size_t)S * S * sizeof(float));
    else resize_f32(raw, p->w, p->h, out, S, S, RESIZE_BILINEAR);
    const float inv = 1.0f / std;
    for (size_t k = 0; k < (size_t)S * S; k++) out[k] = (out[k] - mean) * inv;
    return 0;
}

void bench_dense_input(const float *gray, int S, int in_chans, int flip_h, int flip_v, float *x) {
    for (int y = 0; y < S; y++) {
        const float *row = gray + (size_t)(flip_v ? S - 1 - y : y) * S;
        float *dst = x + (size_t)y * S;
        for (int xx = 0; xx < S; xx++) dst[xx] = row[flip_h ? S - 1 - xx : xx];
    }
    for (int ch = 1; ch < in_chans; ch++) memcpy(x + (size_t)ch * S * S, x, (size_t)S * S * sizeof(float));
}

double bench_dense_lr(long step, long steps, double lr) {
    long warm = steps / 20;
    return sched_cosine(step, steps, lr, 0.0, warm, 0.0);
}
