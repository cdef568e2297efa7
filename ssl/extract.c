/* extract.c — `versa extract`: a stage-1 checkpoint's teacher (or student) run over a prepared
 * dataset, writing per-image features to HDF5 — the input of stage 2 and of retrieval.
 *
 * Output (every sample of the prepared file, in its order):
 *   /cls              (N, C)  final-norm CLS token
 *   /gap              (N, C)  mean of the final-norm patch tokens (the paper's downstream feature)
 *   /dino_bottleneck  (N, Bd) L2-normalised DINO-head bottleneck
 *   /ibot_bottleneck  (N, Bi) the iBOT head (separate head only) applied to the mean patch token
 *   /sample           (N)     index into the prepared file
 *   attributes: prepared, checkpoint, model ("teacher"/"student"), image_size, arch */
#include "ssl/ssl.h"
#include "data/data.h"
#include "engine/train.h"
#include <hdf5.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int ssl_load_model(const char *ckpt, const char *which, SslConfig *s, SslModel *m, ParamStore *ps, Err *e) {
    char *yaml = ckpt_read_config(ckpt, e);
    if (!yaml) return 1;
    Config cfg;
    cfg_init(&cfg);
    int rc = 1;
    if (cfg_declare(&cfg, PRETRAIN_KEYS, PRETRAIN_N_KEYS, e) || cfg_load_string(&cfg, yaml, ckpt, e) ||
        ssl_config_from(&cfg, s, e))
        goto out;
    params_init(ps);
    ps->values_only = 1;
    ssl_model_declare(m, s, ps);
    params_alloc(ps);
    char prefix[32];
    snprintf(prefix, sizeof prefix, "%s.", which);
    CkptStore st = {.prefix = prefix, .ps = ps};
    if (ckpt_load_stores(ckpt, &st, 1, NULL, NULL, 0, NULL, 0, e)) {
        ssl_model_free(m);
        params_free(ps);
        goto out;
    }
    rc = 0;
out:
    cfg_free(&cfg);
    free(yaml);
    return rc;
}

static int write_2d(hid_t f, const char *name, const float *x, size_t n, size_t d) {
    hsize_t dims[2] = {n, d};
    hid_t sp = H5Screate_simple(d ? 2 : 1, dims, NULL);
    hid_t ds = H5Dcreate2(f, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = ds >= 0 ? H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) : -1;
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    return rc < 0;
}

static void write_attr_str(hid_t f, const char *name, const char *v) {
    hid_t ty = H5Tcopy(H5T_C_S1);
    H5Tset_size(ty, strlen(v) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, ty, sp, H5P_DEFAULT, H5P_DEFAULT);
    H5Awrite(a, ty, v);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(ty);
}

int ssl_extract(const SslExtractOpts *o, Ctx *c, Err *e) {
    SslConfig s;
    SslModel m;
    ParamStore ps;
    if (ssl_load_model(o->checkpoint, o->which, &s, &m, &ps, e)) return 1;
    int size = o->image_size > 0 ? o->image_size : s.global_size;
    if (size % s.vit.patch) {
        ssl_model_free(&m);
        params_free(&ps);
        return err_set(e, "extract: image size %d is not a multiple of the patch size %d", size, s.vit.patch);
    }
    CorpusSource src = {o->prepared, 1.0f};
    Corpus corpus;
    if (corpus_open(&corpus, &src, 1, e)) {
        ssl_model_free(&m);
        params_free(&ps);
        return 1;
    }
    const size_t N = corpus.src[0].n, C = (size_t)s.vit.embed_dim;
    const size_t Bd = (size_t)s.dino_bottleneck, Bi = s.ibot_separate ? (size_t)s.ibot_bottleneck : 0;
    float *cls = malloc(N * C * sizeof(float)), *gap = malloc(N * C * sizeof(float));
    float *bd = malloc(N * Bd * sizeof(float)), *bi = malloc((N * Bi + 1) * sizeof(float));
    float *sample = malloc(N * sizeof(float));
    LoaderConfig lc = loader_config_default(LOADER_PLAIN);
    lc.batch_size = o->batch > 0 ? o->batch : 32;
    lc.n_workers = 2;
    lc.channels = s.vit.in_chans;
    lc.plain.out_h = lc.plain.out_w = size;
    MultiCropConfig mc = multicrop_default();   /* the normalisation pretraining used */
    memcpy(lc.plain.mean, mc.mean, sizeof mc.mean);
    memcpy(lc.plain.std, mc.std, sizeof mc.std);
    Loader *L = NULL;
    int rc = 1;
    if (!cls || !gap || !bd || !bi || !sample) {   /* N comes from the prepared file */
        err_set(e, "%s: out of memory for the features of %zu images", o->prepared, N);
        goto done;
    }
    if (loader_open(&L, &corpus, &lc, e)) goto done;
    ctx_set_grad(c, 0);
    c->training = 0;
    size_t done_n = 0;
    double t0 = wall_seconds();
    while (done_n < N) {
        const Batch *b;
        if (loader_next(L, &b, e)) goto done;
        ctx_step_begin(c);
        const size_t B = (size_t)b->n;
        Tensor *x = tensor_wrap(c, b->image, 4, TSHAPE(B, (size_t)s.vit.in_chans, (size_t)size, (size_t)size));
        ViTOut vo = vit_forward(c, &m.backbone, x, NULL);
        Tensor *zd, *zi = NULL;
        dino_head_forward(c, &m.dino_head, vo.cls, &zd);
        /* the iBOT head is trained on patch tokens: apply it to their mean */
        if (Bi) dino_head_forward(c, &m.ibot_head, vo.pooled, &zi);
        for (size_t j = 0; j < B; j++) {
            size_t i = (size_t)b->sample[j];
            memcpy(cls + i * C, vo.cls->data + j * C, C * sizeof(float));
            memcpy(gap + i * C, vo.pooled->data + j * C, C * sizeof(float));
            memcpy(bd + i * Bd, zd->data + j * Bd, Bd * sizeof(float));
            if (Bi) memcpy(bi + i * Bi, zi->data + j * Bi, Bi * sizeof(float));
            sample[i] = (float)i;
        }
        done_n += B;
        if (!o->quiet)
            fprintf(stderr, "\r[extract] %zu/%zu images (%.1f img/s)", done_n, N, (double)done_n / (wall_seconds() - t0 + 1e-9));
    }
    if (!o->quiet) fprintf(stderr, "\n");
    /* write atomically */
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", o->out, (int)getpid());
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (f < 0) {
        err_set(e, "%s: cannot create", o->out);
        goto done;
    }
    int bad = write_2d(f, "cls", cls, N, C) || write_2d(f, "gap", gap, N, C) || write_2d(f, "dino_bottleneck", bd, N, Bd) ||
              (Bi && write_2d(f, "ibot_bottleneck", bi, N, Bi)) || write_2d(f, "sample", sample, N, 0);
    write_attr_str(f, "prepared", o->prepared);
    write_attr_str(f, "checkpoint", o->checkpoint);
    write_attr_str(f, "model", o->which);
    char buf[32];
    snprintf(buf, sizeof buf, "%d", size);
    write_attr_str(f, "image_size", buf);
    if (H5Fclose(f) < 0 || bad || rename(tmp, o->out) != 0) {
        unlink(tmp);
        err_set(e, "%s: write failed", o->out);
        goto done;
    }
    rc = 0;
done:
    loader_close(L);
    corpus_close(&corpus);
    free(cls);
    free(gap);
    free(bd);
    free(bi);
    free(sample);
    ssl_model_free(&m);
    params_free(&ps);
    return rc;
}
