/* features.c — what the frozen backbone sees (whole images or lesion crops cut from the prepared
 * images) and the feature cache.
 *
 * Cache file (<run>/features/<model>/<dataset>.<unit>.<size>[.clahe].<hash>.h5):
 *   /features (N, D) float32   pooled backbone features of every item, in item order
 *   /sample   (N) int64        sample index in the prepared file
 *   /box      (N) int64        global box index (-1: whole image)
 *   attribute `key`: model fingerprint (spec, weight file size and mtime), prepared file (path,
 *   size, mtime) and every preprocessing parameter.  A file whose key differs is recomputed, so a
 *   retrained checkpoint or a re-prepared dataset never reuses stale features. */
#include "bench/bench.h"
#include "engine/train.h"
#include <hdf5.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int bench_items(const Prepared *p, int unit, BenchItems *it, Err *e) {
    memset(it, 0, sizeof *it);
    int per_box = unit == BENCH_UNIT_CROP && p->n_boxes > 0;
    it->precut = unit == BENCH_UNIT_CROP && p->n_boxes == 0;
    it->n = per_box ? p->n_boxes : p->n;
    if (it->n == 0) return err_set(e, "%s: no %s", p->path, per_box ? "lesion boxes" : "images");
    it->sample = malloc(it->n * sizeof(int64_t));
    it->box = malloc(it->n * sizeof(int64_t));
    it->split = malloc(it->n);
    size_t k = 0;
    for (size_t i = 0; i < p->n; i++) {
        if (!per_box) {
            it->sample[k] = (int64_t)i;
            it->box[k] = -1;
            it->split[k++] = p->split[i];
            continue;
        }
        for (int64_t b = p->box_offset[i]; b < p->box_offset[i + 1]; b++) {
            it->sample[k] = (int64_t)i;
            it->box[k] = b;
            it->split[k++] = p->split[i];
        }
    }
    return 0;
}

int32_t bench_item_label(const Prepared *p, const BenchItems *it, size_t i, int col) {
    int64_t b = it->box[i];
    int32_t v = b >= 0 ? p->boxes[b].values[col] : -1;
    return v >= 0 ? v : prep_label(p, (size_t)it->sample[i], col);
}

void bench_items_free(BenchItems *it) {
    free(it->sample);
    free(it->box);
    free(it->split);
    memset(it, 0, sizeof *it);
}

/* side of the square crop around a box, in prepared pixels */
static int crop_side(const PrepBox *b, const BenchPreproc *pp) {
    float bw = b->x1 - b->x0, bh = b->y1 - b->y0;
    float side = fmaxf(bw, bh) * (1.0f + 2.0f * pp->crop_margin);
    int L = (int)ceilf(side);
    return L < pp->crop_min ? pp->crop_min : L;
}

size_t bench_item_work_floats(const Prepared *p, const BenchPreproc *pp) {
    int big = p->w > p->h ? p->w : p->h;
    size_t L = (size_t)ceilf((float)big * (1.0f + 2.0f * pp->crop_margin)) + 2;
    if (L < (size_t)pp->crop_min) L = (size_t)pp->crop_min;
    return L * L + 2 * (size_t)pp->size * (size_t)pp->size;
}

int bench_item_pixels(const Prepared *p, const BenchItems *it, size_t i, const BenchPreproc *pp, float *img,
                      float *work, size_t work_n, AugWork *aw, float *out, Err *e) {
    const int W = p->w, H = p->h, S = pp->size;
    const size_t SS = (size_t)S * S;
    if (prep_read_image_f32(p, (size_t)it->sample[i], img, e)) return 1;   // img: (H, W) in [0, 1]
    const float *region = img;
    int rw = W, rh = H;
    float *x, *tmp;   // (S, S) each
    if (it->box[i] >= 0) {
        const PrepBox *b = &p->boxes[it->box[i]];
        int L = crop_side(b, pp);
        if ((size_t)L * L + 2 * SS > work_n) return err_set(e, "%s: box %lld is larger than the crop buffer", p->path, (long long)it->box[i]);
        float *sq = work;   // (L, L), zero outside the image
        int ox = (int)floorf(0.5f * (b->x0 + b->x1) - 0.5f * (float)L);
        int oy = (int)floorf(0.5f * (b->y0 + b->y1) - 0.5f * (float)L);
        for (int y = 0; y < L; y++) {
            int sy = oy + y;
            float *row = sq + (size_t)y * L;
            if (sy < 0 || sy >= H) {
                memset(row, 0, (size_t)L * sizeof(float));
                continue;
            }
            for (int xx = 0; xx < L; xx++) {
                int sx = ox + xx;
                row[xx] = sx >= 0 && sx < W ? img[(size_t)sy * W + sx] : 0.0f;
            }
        }
        region = sq;
        rw = rh = L;
        x = work + (size_t)L * L;
    } else {
        x = work;
    }
    tmp = x + SS;
    if (rw == S && rh == S) memcpy(x, region, SS * sizeof(float));
    else resize_f32(region, rw, rh, x, S, S, RESIZE_BILINEAR);
    if (pp->clahe) {
        if (clahe_f32(x, S, S, tmp, &pp->clahe_cfg, aw, e)) return 1;
        float *t = x;
        x = tmp;
        tmp = t;
    }
    float inv = 1.0f / pp->std;
    for (int c = 0; c < pp->in_chans; c++) {
        float *o = out + (size_t)c * SS;
        for (size_t k = 0; k < SS; k++) o[k] = (x[k] - pp->mean) * inv;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* cache */

static void cache_key(char *key, size_t n, const BenchModel *m, const Prepared *p, const BenchItems *it,
                      const BenchPreproc *pp) {
    struct stat st;
    long long bytes = 0, sec = 0, nsec = 0;
    if (stat(p->path, &st) == 0) {
        bytes = (long long)st.st_size;
        sec = (long long)st.st_mtim.tv_sec;
        nsec = (long long)st.st_mtim.tv_nsec;
    }
    snprintf(key, n,
             "v1|model=%s|data=%s bytes=%lld mtime=%lld.%09lld|items=%zu precut=%d|size=%d chans=%d mean=%.6g std=%.6g|"
             "clahe=%d clip=%.4g tiles=%dx%d bins=%d|margin=%.4g min=%d",
             m->fingerprint, p->path, bytes, sec, nsec, it->n, it->precut, pp->size, pp->in_chans, pp->mean, pp->std,
             pp->clahe, pp->clahe ? pp->clahe_cfg.clip_limit : 0, pp->clahe ? pp->clahe_cfg.tiles_x : 0,
             pp->clahe ? pp->clahe_cfg.tiles_y : 0, pp->clahe ? pp->clahe_cfg.nbins : 0, pp->crop_margin, pp->crop_min);
}

typedef struct H5Quiet {
    H5E_auto2_t fn;
    void *data;
} H5Quiet;

static H5Quiet quiet_on(void) {
    H5Quiet q;
    H5Eget_auto2(H5E_DEFAULT, &q.fn, &q.data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return q;
}

static void quiet_off(H5Quiet q) { H5Eset_auto2(H5E_DEFAULT, q.fn, q.data); }

/* 0 and *feat filled when the file exists with this key and shape */
static int cache_read(const char *path, const char *key, size_t n, size_t d, float **feat) {
    if (access(path, R_OK) != 0) return 1;
    H5Quiet q = quiet_on();
    int rc = 1;
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), a = -1, ty = -1, ds = -1, sp = -1;
    if (f < 0) goto out;
    if ((a = H5Aopen(f, "key", H5P_DEFAULT)) < 0 || (ty = H5Aget_type(a)) < 0) goto out;
    size_t len = H5Tget_size(ty);
    if (len != strlen(key) + 1) goto out;
    char *stored = malloc(len);
    if (H5Aread(a, ty, stored) < 0 || memcmp(stored, key, len) != 0) {
        free(stored);
        goto out;
    }
    free(stored);
    if ((ds = H5Dopen2(f, "features", H5P_DEFAULT)) < 0 || (sp = H5Dget_space(ds)) < 0) goto out;
    hsize_t dims[2];
    if (H5Sget_simple_extent_ndims(sp) != 2 || H5Sget_simple_extent_dims(sp, dims, NULL) < 0 || dims[0] != n || dims[1] != d)
        goto out;
    *feat = malloc(n * d * sizeof(float) + 1);
    if (H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, *feat) < 0) {
        free(*feat);
        *feat = NULL;
        goto out;
    }
    rc = 0;
out:
    if (sp >= 0) H5Sclose(sp);
    if (ds >= 0) H5Dclose(ds);
    if (ty >= 0) H5Tclose(ty);
    if (a >= 0) H5Aclose(a);
    if (f >= 0) H5Fclose(f);
    quiet_off(q);
    return rc;
}

static int write_ds(hid_t f, const char *name, hid_t type, hid_t mem, const void *x, int nd, const hsize_t *dims) {
    hid_t sp = H5Screate_simple(nd, dims, NULL);
    hid_t ds = H5Dcreate2(f, name, type, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = ds >= 0 ? H5Dwrite(ds, mem, H5S_ALL, H5S_ALL, H5P_DEFAULT, x) : -1;
    if (ds >= 0) H5Dclose(ds);
    H5Sclose(sp);
    return rc < 0;
}

static int write_attr(hid_t f, const char *name, const char *v) {
    hid_t ty = H5Tcopy(H5T_C_S1);
    H5Tset_size(ty, strlen(v) + 1);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(f, name, ty, sp, H5P_DEFAULT, H5P_DEFAULT);
    herr_t rc = a >= 0 ? H5Awrite(a, ty, v) : -1;
    if (a >= 0) H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(ty);
    return rc < 0;
}

static int cache_write(const char *path, const char *key, const float *feat, size_t n, size_t d, const BenchItems *it,
                       const BenchModel *m, Err *e) {
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp.%d", path, (int)getpid());
    H5Quiet q = quiet_on();
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    int bad = f < 0;
    if (!bad) {
        hsize_t d2[2] = {n, d}, d1[1] = {n};
        bad |= write_ds(f, "features", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, feat, 2, d2);
        bad |= write_ds(f, "sample", H5T_STD_I64LE, H5T_NATIVE_INT64, it->sample, 1, d1);
        bad |= write_ds(f, "box", H5T_STD_I64LE, H5T_NATIVE_INT64, it->box, 1, d1);
        bad |= write_attr(f, "key", key);
        bad |= write_attr(f, "model", m->desc);
        bad |= H5Fclose(f) < 0;
    }
    quiet_off(q);
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return err_set(e, "%s: cannot write the feature cache", path);
    }
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* extraction */

int bench_features(Ctx *c, const BenchModel *m, const Prepared *p, const BenchItems *it, const BenchPreproc *pp,
                   int batch, const char *cache_path, float **feat, int *cached, int quiet, Err *e) {
    char key[2048];
    cache_key(key, sizeof key, m, p, it, pp);
    const size_t D = (size_t)m->feat_dim, n = it->n;
    *cached = 0;
    *feat = NULL;
    if (cache_path && cache_read(cache_path, key, n, D, feat) == 0) {
        *cached = 1;
        return 0;
    }
    const size_t SS = (size_t)pp->size * pp->size, per = (size_t)pp->in_chans * SS;
    const int B = batch > 0 ? batch : 16;
    const int nt = omp_get_max_threads();
    const size_t work_n = bench_item_work_floats(p, pp), img_n = (size_t)p->w * p->h;
    float *F = malloc(n * D * sizeof(float) + 1);   // (n, D)
    float *x = malloc((size_t)B * per * sizeof(float));   // (B, C, S, S)
    float *img = malloc((size_t)nt * img_n * sizeof(float));   // per thread (H, W)
    float *work = malloc((size_t)nt * work_n * sizeof(float));
    AugWork *aw = calloc((size_t)nt, sizeof(AugWork));
    Err *errs = calloc((size_t)nt, sizeof(Err));
    int rc = 1;
    if (!F || !x || !img || !work || !aw || !errs) {
        err_set(e, "out of memory extracting features of %s", p->path);
        goto out;
    }
    double t0 = wall_seconds(), last = t0;
    for (size_t b0 = 0; b0 < n; b0 += (size_t)B) {
        int nb = (int)(n - b0 < (size_t)B ? n - b0 : (size_t)B);
        int failed = 0;
#pragma omp parallel for schedule(static) reduction(| : failed)
        for (int j = 0; j < nb; j++) {
            int t = omp_get_thread_num();
            if (bench_item_pixels(p, it, b0 + (size_t)j, pp, img + (size_t)t * img_n, work + (size_t)t * work_n, work_n,
                                  &aw[t], x + (size_t)j * per, &errs[t]))
                failed = 1;
        }
        if (failed) {
            for (int t = 0; t < nt; t++)
                if (errs[t].msg[0]) {
                    *e = errs[t];
                    break;
                }
            goto out;
        }
        bench_model_forward(c, m, x, nb, F + b0 * D);
        double now = wall_seconds();
        if (!quiet && (now - last > 1.0 || b0 + (size_t)nb == n)) {
            fprintf(stderr, "\r[bench]   features %s: %zu/%zu items (%.1f items/s)   ", m->name, b0 + (size_t)nb, n,
                    (double)(b0 + (size_t)nb) / (now - t0 + 1e-9));
            last = now;
        }
    }
    if (!quiet) fprintf(stderr, "\r%80s\r", "");
    for (size_t i = 0; i < n * D; i++)
        if (!isfinite(F[i])) {
            err_set(e, "%s: non-finite feature for item %zu of %s", m->name, i / D, p->path);
            goto out;
        }
    if (cache_path && cache_write(cache_path, key, F, n, D, it, m, e)) goto out;
    *feat = F;
    F = NULL;
    rc = 0;
out:
    free(F);
    free(x);
    free(img);
    free(work);
    if (aw)
        for (int t = 0; t < nt; t++) augwork_free(&aw[t]);
    free(aw);
    free(errs);
    return rc;
}
