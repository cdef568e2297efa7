/* checkpoint.c — HDF5 checkpoints that PyTorch can read.
 *
 * Layout (one file):
 *   /<prefix><key>            float32, the tensor's shape; key = the PyTorch state_dict key, so
 *                             `{k: torch.from_numpy(np.array(f[k]))}` feeds load_state_dict
 *   /optim/m/<prefix><key>    AdamW first moment (SGD: momentum buffer)
 *   /optim/v/<prefix><key>    AdamW second moment
 *   /state/<name>             extra float arrays (DINO centers, data position, ...)
 *   attributes on /           versa_format, step, rng_seed, rng_counter, rng_buf, rng_buf_left,
 *                             config (variable-length UTF-8 text)
 *
 * Saving is atomic: the file is assembled in memory (see build_image for why), written to
 * "<path>.tmp.<pid>", fsync'ed and renamed over <path>, then the directory is fsync'ed.  Any
 * failure (disk full, unwritable folder, a bad name) removes the temporary file and leaves the
 * previous checkpoint as it was.
 *
 * HDF5 prints its own error stack by default; every entry point silences it and restores the
 * caller's setting on the way out, so a user sees one line naming the file and the problem. */
#include "engine.h"
#include <hdf5.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CKPT_FORMAT 1
#define NAME_MAX_LEN 256   /* "optim/m/" + prefix + a 96-byte key fits */
#define CKPT_MAX_CONFIG ((size_t)1 << 24)   /* a saved config is a few KB; refuse absurd sizes */

/* ---------------------------------------------------------------------------------------- */
/* HDF5 error printing off for the duration of a call */

typedef struct H5Quiet {
    H5E_auto2_t func;
    void *data;
} H5Quiet;

static H5Quiet h5_quiet(void) {
    H5Quiet q;
    H5Eget_auto2(H5E_DEFAULT, &q.func, &q.data);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    return q;
}

static void h5_restore(H5Quiet q) {
    H5Eset_auto2(H5E_DEFAULT, q.func, q.data);
}

static const char *store_prefix(const CkptStore *s) {
    return s->prefix ? s->prefix : "";
}

static const char *shape_str(int ndim, const size_t *shape, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "(");
    for (int d = 0; d < ndim && k < n; d++) k += (size_t)snprintf(buf + k, n - k, d ? ",%zu" : "%zu", shape[d]);
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

/* ---------------------------------------------------------------------------------------- */
/* writing */

static int write_f32(hid_t loc, const char *name, const float *data, int ndim, const size_t *shape) {
    hsize_t dims[VT_MAX_DIMS];
    for (int d = 0; d < ndim; d++) dims[d] = shape[d];
    hid_t sp = ndim == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(ndim, dims, NULL);
    if (sp < 0) return 1;
    hid_t ds = H5Dcreate2(loc, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    int bad = ds < 0;
    if (!bad) bad = H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0;
    if (ds >= 0) bad |= H5Dclose(ds) < 0;
    H5Sclose(sp);
    return bad;
}

static int write_attr(hid_t loc, const char *name, hid_t file_type, hid_t mem_type, size_t n, const void *v) {
    hsize_t dim = n;
    hid_t sp = n == 1 ? H5Screate(H5S_SCALAR) : H5Screate_simple(1, &dim, NULL);
    if (sp < 0) return 1;
    hid_t a = H5Acreate2(loc, name, file_type, sp, H5P_DEFAULT, H5P_DEFAULT);
    int bad = a < 0;
    if (!bad) bad = H5Awrite(a, mem_type, v) < 0;
    if (a >= 0) bad |= H5Aclose(a) < 0;
    H5Sclose(sp);
    return bad;
}

/* variable-length strings live in the global heap, so long configs do not hit the 64 KB limit of
 * attributes stored in the object header; h5py reads them back as str */
static int write_attr_text(hid_t loc, const char *name, const char *text) {
    hid_t t = H5Tcopy(H5T_C_S1);
    H5Tset_size(t, H5T_VARIABLE);
    H5Tset_cset(t, H5T_CSET_UTF8);
    int bad = write_attr(loc, name, t, t, 1, &text);
    H5Tclose(t);
    return bad;
}

static int fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return 1;
    int bad = fsync(fd) != 0;
    close(fd);
    return bad;
}

static void dir_of(const char *path, char *dir, size_t n) {
    const char *slash = strrchr(path, '/');
    if (!slash) snprintf(dir, n, ".");
    else if (slash == path) snprintf(dir, n, "/");
    else snprintf(dir, n, "%.*s", (int)(slash - path), path);
}

/* Writes every tensor, moment, extra and attribute into an open file; fills e on failure. */
static int write_contents(hid_t f, const char *path, const CkptStore *stores, int n_stores, const CkptMeta *meta,
                          const CkptExtra *extra, int n_extra, Err *e) {
    char key[NAME_MAX_LEN];
    int any_optim = 0;
    for (int s = 0; s < n_stores; s++) any_optim |= stores[s].with_optim;
    hid_t g_optim = -1, g_m = -1, g_v = -1, g_state = -1;
    int bad = 0;
    if (any_optim) {
        g_optim = H5Gcreate2(f, "optim", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        g_m = g_optim >= 0 ? H5Gcreate2(g_optim, "m", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
        g_v = g_optim >= 0 ? H5Gcreate2(g_optim, "v", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT) : -1;
        if (g_m < 0 || g_v < 0) {
            bad = err_set(e, "%s: cannot create the optimizer group", path);
            goto done;
        }
    }
    for (int s = 0; s < n_stores && !bad; s++) {
        const ParamStore *ps = stores[s].ps;
        for (size_t k = 0; k < ps->n && !bad; k++) {
            const Param *p = &ps->p[k];
            const Tensor *t = p->t;
            snprintf(key, sizeof key, "%s%s", store_prefix(&stores[s]), p->name);
            if (write_f32(f, key, t->data, t->ndim, t->shape)) {
                bad = err_set(e, "%s: cannot write tensor '%s' (out of memory, or a duplicate name?)", path, key);
                break;
            }
            if (stores[s].with_optim && p->kind == PARAM_TRAINABLE &&
                (write_f32(g_m, key, ps->m + p->offset, t->ndim, t->shape) ||
                 write_f32(g_v, key, ps->v + p->offset, t->ndim, t->shape)))
                bad = err_set(e, "%s: cannot write the optimizer state of '%s'", path, key);
        }
    }
    if (bad) goto done;
    if (n_extra > 0) {
        g_state = H5Gcreate2(f, "state", H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        if (g_state < 0) {
            bad = err_set(e, "%s: cannot create the state group", path);
            goto done;
        }
        for (int i = 0; i < n_extra && !bad; i++) {
            size_t n = extra[i].n;
            if (write_f32(g_state, extra[i].name, extra[i].data, 1, &n))
                bad = err_set(e, "%s: cannot write state array '%s'", path, extra[i].name);
        }
        if (bad) goto done;
    }
    int32_t format = CKPT_FORMAT;
    bad = write_attr(f, "versa_format", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &format);
    if (meta && !bad) {
        int64_t step = meta->step;
        uint64_t seed = meta->rng.seed, counter = meta->rng.counter;
        int32_t left = meta->rng.buf_left;
        bad = write_attr(f, "step", H5T_STD_I64LE, H5T_NATIVE_INT64, 1, &step) ||
              write_attr(f, "rng_seed", H5T_STD_U64LE, H5T_NATIVE_UINT64, 1, &seed) ||
              write_attr(f, "rng_counter", H5T_STD_U64LE, H5T_NATIVE_UINT64, 1, &counter) ||
              write_attr(f, "rng_buf", H5T_STD_U32LE, H5T_NATIVE_UINT32, 4, meta->rng.buf) ||
              write_attr(f, "rng_buf_left", H5T_STD_I32LE, H5T_NATIVE_INT32, 1, &left) ||
              (meta->config_text && write_attr_text(f, "config", meta->config_text));
    }
    if (bad) err_set(e, "%s: cannot write the checkpoint attributes", path);
done:
    if (g_state >= 0) H5Gclose(g_state);
    if (g_v >= 0) H5Gclose(g_v);
    if (g_m >= 0) H5Gclose(g_m);
    if (g_optim >= 0) H5Gclose(g_optim);
    return bad;
}

/* Names become HDF5 link names: a '/' would silently create groups, so it is refused up front. */
static int check_names(const char *path, const CkptStore *stores, int n_stores, const CkptExtra *extra,
                       int n_extra, Err *e) {
    for (int s = 0; s < n_stores; s++) {
        const ParamStore *ps = stores[s].ps;
        if (!ps || !ps->allocated) return err_set(e, "%s: store %d is not allocated", path, s);
        if (strchr(store_prefix(&stores[s]), '/'))
            return err_set(e, "%s: prefix '%s' contains '/'", path, store_prefix(&stores[s]));
        if (stores[s].with_optim && !ps->m)
            return err_set(e, "%s: store %d has no optimizer state to save", path, s);
        for (size_t k = 0; k < ps->n; k++)
            if (strchr(ps->p[k].name, '/'))
                return err_set(e, "%s: tensor name '%s' contains '/'", path, ps->p[k].name);
    }
    for (int i = 0; i < n_extra; i++)
        if (!extra[i].name || !extra[i].name[0] || strchr(extra[i].name, '/'))
            return err_set(e, "%s: bad state array name '%s'", path, extra[i].name ? extra[i].name : "(null)");
    return 0;
}

/* An upper estimate of the file size, so the in-memory image is one allocation: every array, plus
 * a few KB of object header and name per dataset, plus the superblock, groups and attributes. */
static size_t image_estimate(const CkptStore *stores, int n_stores, const CkptExtra *extra, int n_extra) {
    size_t floats = 0, datasets = 0;
    for (int s = 0; s < n_stores; s++) {
        const ParamStore *ps = stores[s].ps;
        for (size_t k = 0; k < ps->n; k++) {
            size_t copies = stores[s].with_optim && ps->p[k].kind == PARAM_TRAINABLE ? 3 : 1;
            floats += ps->p[k].t->numel * copies;
            datasets += copies;
        }
    }
    for (int i = 0; i < n_extra; i++) floats += extra[i].n;
    datasets += (size_t)n_extra;
    return floats * sizeof(float) + datasets * 4096 + ((size_t)1 << 20);
}

/* The core driver's buffer, handed to us through HDF5's file-image callbacks so the finished
 * image can be written without a second copy: the free at H5Fclose is deferred to us. */
typedef struct ImageBuf {
    void *mem;
    int keep;   /* set just before the final H5Fclose: its free is deferred to us */
} ImageBuf;

static void *image_malloc(size_t size, H5FD_file_image_op_t op, void *udata) {
    (void)op;
    ImageBuf *b = udata;
    return b->mem = malloc(size);
}

static void *image_memcpy(void *dst, const void *src, size_t size, H5FD_file_image_op_t op, void *udata) {
    (void)op;
    (void)udata;
    return memcpy(dst, src, size);
}

static void *image_realloc(void *ptr, size_t size, H5FD_file_image_op_t op, void *udata) {
    (void)op;
    ImageBuf *b = udata;
    void *p = realloc(ptr, size);
    if (p) b->mem = p;
    return p;
}

static herr_t image_free(void *ptr, H5FD_file_image_op_t op, void *udata) {
    (void)op;
    ImageBuf *b = udata;
    if (b->keep && ptr == b->mem) return 0;   /* the finished image: the caller writes, then frees it */
    if (ptr == b->mem) b->mem = NULL;
    free(ptr);
    return 0;
}

static void *image_udata_copy(void *udata) {
    return udata;
}

static herr_t image_udata_free(void *udata) {
    (void)udata;
    return 0;
}

/* Builds the whole file in memory with HDF5's core driver and returns it (malloc'd, *size bytes).
 * HDF5 1.10 cannot recover from a failed write to disk: the H5Fclose that follows fails and
 * leaves a file id behind, and the next H5Fclose or the library's exit handler then crashes (a
 * "disk full" became a segfault at exit).  Writing the image with our own write() loop keeps
 * every I/O error ours to report; the cost is the image in memory while it is written. */
static void *build_image(const char *path, const char *tmp, const CkptStore *stores, int n_stores,
                         const CkptMeta *meta, const CkptExtra *extra, int n_extra, size_t *size, Err *e) {
    size_t increment = image_estimate(stores, n_stores, extra, n_extra);
    ImageBuf buf = {NULL, 0};
    H5FD_file_image_callbacks_t cb = {image_malloc,   image_memcpy,     image_realloc, image_free,
                                      image_udata_copy, image_udata_free, &buf};
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0 || H5Pset_fapl_core(fapl, increment, 0 /* no backing store */) < 0 ||
        H5Pset_file_image_callbacks(fapl, &cb) < 0) {
        if (fapl >= 0) H5Pclose(fapl);
        err_set(e, "%s: cannot set up the HDF5 in-memory driver", path);
        return NULL;
    }
    /* The core driver first reads an existing file of that name into memory, so the image is
     * named after the temporary file, which the caller has just removed (never the checkpoint:
     * that would read the whole previous checkpoint). */
    hid_t f = H5Fcreate(tmp, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) {
        free(buf.mem);
        err_set(e, "%s: cannot create the HDF5 image (out of memory?)", path);
        return NULL;
    }
    int bad = write_contents(f, path, stores, n_stores, meta, extra, n_extra, e);
    if (!bad && H5Fflush(f, H5F_SCOPE_GLOBAL) < 0) bad = err_set(e, "%s: cannot flush the HDF5 image", path);
    ssize_t n = bad ? -1 : H5Fget_file_image(f, NULL, 0);   /* the size only: no copy */
    if (!bad && n <= 0) bad = err_set(e, "%s: cannot size the HDF5 image", path);
    buf.keep = !bad;
    if (H5Fclose(f) < 0 && !bad) bad = err_set(e, "%s: cannot finish the HDF5 image", path);   /* memory only */
    if (bad || !buf.mem) {
        if (!bad) err_set(e, "%s: the HDF5 image is empty", path);
        free(buf.mem);
        return NULL;
    }
    *size = (size_t)n;
    return buf.mem;
}

static int write_all(int fd, const char *buf, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, buf, n > ((size_t)1 << 30) ? ((size_t)1 << 30) : n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return 1;
        }
        buf += w;
        n -= (size_t)w;
    }
    return 0;
}

int ckpt_save_stores(const char *path, const CkptStore *stores, int n_stores, const CkptMeta *meta,
                     const CkptExtra *extra, int n_extra, Err *e) {
    if (check_names(path, stores, n_stores, extra, n_extra, e)) return 1;
    char tmp[PATH_MAX], dir[PATH_MAX];
    if ((size_t)snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= sizeof tmp)
        return err_set(e, "%s: path too long", path);

    unlink(tmp);   /* a leftover of an earlier process with our pid: garbage */
    H5Quiet q = h5_quiet();
    size_t size = 0;
    void *image = build_image(path, tmp, stores, n_stores, meta, extra, n_extra, &size, e);
    h5_restore(q);
    if (!image) return 1;

    int bad = 0;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        bad = err_set(e, "%s: cannot create %s: %s", path, tmp, strerror(errno));
    } else {
        if (write_all(fd, image, size)) bad = err_set(e, "%s: cannot write %s: %s", path, tmp, strerror(errno));
        /* only once the data is on disk may the rename make it the checkpoint */
        else if (fsync(fd) != 0) bad = err_set(e, "%s: cannot fsync %s: %s", path, tmp, strerror(errno));
        if (close(fd) != 0 && !bad) bad = err_set(e, "%s: cannot close %s: %s", path, tmp, strerror(errno));
        if (!bad && rename(tmp, path) != 0)
            bad = err_set(e, "%s: cannot rename %s over it: %s", path, tmp, strerror(errno));
        if (bad) unlink(tmp);
    }
    free(image);
    if (bad) return 1;
    /* make the rename itself durable; failing here leaves a complete file, so only report */
    dir_of(path, dir, sizeof dir);
    if (fsync_dir(dir)) return err_set(e, "%s: cannot fsync directory %s: %s", path, dir, strerror(errno));
    return 0;
}

int ckpt_save(const char *path, const ParamStore *ps, int with_optim, const CkptMeta *meta, const CkptExtra *extra,
              int n_extra, Err *e) {
    CkptStore s = {.prefix = "", .ps = (ParamStore *)ps, .with_optim = with_optim};
    return ckpt_save_stores(path, &s, 1, meta, extra, n_extra, e);
}

/* ---------------------------------------------------------------------------------------- */
/* reading */

/* Problems found while validating, kept per category so one message can report them all. */
enum { PB_MISSING, PB_SHAPE, PB_UNEXPECTED, PB_N };
typedef struct Problems {
    char first[PB_N][3][192];   /* the first three of each kind, for the message */
    size_t count[PB_N];
} Problems;

static void problem(Problems *pb, int kind, const char *text) {
    if (pb->count[kind] < 3) {
        char *dst = pb->first[kind][pb->count[kind]];
        size_t n = strlen(text), cap = sizeof pb->first[kind][0];
        if (n >= cap) n = cap - 1;   /* a message, so a long name may be cut */
        memcpy(dst, text, n);
        dst[n] = 0;
    }
    pb->count[kind]++;
}

static void problems_message(const Problems *pb, const char *path, Err *e) {
    static const char *what[PB_N] = {"missing", "with a different shape", "unexpected"};
    char msg[sizeof e->msg];
    size_t k = (size_t)snprintf(msg, sizeof msg, "%s: checkpoint does not match the model:", path);
    int first_kind = 1;
    for (int t = 0; t < PB_N; t++) {
        if (!pb->count[t] || k >= sizeof msg) continue;
        k += (size_t)snprintf(msg + k, sizeof msg - k, "%s %zu %s (", first_kind ? "" : ";", pb->count[t], what[t]);
        first_kind = 0;
        size_t shown = pb->count[t] < 3 ? pb->count[t] : 3;
        for (size_t i = 0; i < shown && k < sizeof msg; i++)
            k += (size_t)snprintf(msg + k, sizeof msg - k, "%s%s", i ? ", " : "", pb->first[t][i]);
        if (k < sizeof msg)
            k += (size_t)snprintf(msg + k, sizeof msg - k, pb->count[t] > shown ? ", ...)" : ")");
    }
    err_set(e, "%s", msg);
}

/* Returns 1 and fills shape/ndim when `name` is a dataset of loc; 0 otherwise. */
static int dataset_shape(hid_t loc, const char *name, int *ndim, size_t *shape) {
    if (H5Lexists(loc, name, H5P_DEFAULT) <= 0) return 0;
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return 0;
    hid_t sp = H5Dget_space(ds);
    int nd = sp >= 0 ? H5Sget_simple_extent_ndims(sp) : -1;
    int ok = nd >= 0 && nd <= VT_MAX_DIMS;
    if (ok) {
        hsize_t dims[VT_MAX_DIMS];
        H5Sget_simple_extent_dims(sp, dims, NULL);
        for (int d = 0; d < nd; d++) shape[d] = dims[d];
        *ndim = nd;
    } else {
        *ndim = nd;  /* a rank the engine cannot hold still counts as a shape mismatch */
    }
    if (sp >= 0) H5Sclose(sp);
    H5Dclose(ds);
    return 1;
}

static int same_shape(int nd_a, const size_t *a, int nd_b, const size_t *b) {
    if (nd_a != nd_b) return 0;
    for (int d = 0; d < nd_a; d++)
        if (a[d] != b[d]) return 0;
    return 1;
}

/* `where` is "" for the tensor itself, "optim/m/" or "optim/v/" for its moments */
static void check_tensor(hid_t loc, const char *where, const char *key, const Tensor *t, Problems *pb) {
    int nd;
    size_t shape[VT_MAX_DIMS];
    char text[NAME_MAX_LEN + 2 * 96 + 32], fs[96], ms[96];
    if (!dataset_shape(loc, key, &nd, shape)) {
        snprintf(text, sizeof text, "%s%s", where, key);
        problem(pb, PB_MISSING, text);
    } else if (!same_shape(nd, shape, t->ndim, t->shape)) {
        if (nd < 0 || nd > VT_MAX_DIMS) snprintf(fs, sizeof fs, "(%d dims)", nd);
        else shape_str(nd, shape, fs, sizeof fs);
        shape_str(t->ndim, t->shape, ms, sizeof ms);
        snprintf(text, sizeof text, "%s%s: file %s vs model %s", where, key, fs, ms);
        problem(pb, PB_SHAPE, text);
    }
}

typedef struct UnexpectedScan {
    const CkptStore *stores;
    int n_stores;
    Problems *pb;
} UnexpectedScan;

/* A root dataset belongs to the store with the longest matching prefix; a strict store reports
 * any dataset it owns but does not declare (load_state_dict(strict=True)'s unexpected keys). */
static herr_t scan_root(hid_t loc, const char *name, const H5L_info_t *info, void *ud) {
    (void)info;
    UnexpectedScan *sc = ud;
    int owner = -1;
    size_t best = 0;
    for (int s = 0; s < sc->n_stores; s++) {
        const char *pre = store_prefix(&sc->stores[s]);
        size_t len = strlen(pre);
        if (strncmp(name, pre, len) == 0 && (owner < 0 || len > best)) {
            owner = s;
            best = len;
        }
    }
    if (owner < 0 || sc->stores[owner].partial) return 0;
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);   /* groups (optim, state) are not tensors */
    if (ds < 0) return 0;
    H5Dclose(ds);
    if (!params_find(sc->stores[owner].ps, name + best)) problem(sc->pb, PB_UNEXPECTED, name);
    return 0;
}

static int read_f32(hid_t loc, const char *name, float *dst) {
    hid_t ds = H5Dopen2(loc, name, H5P_DEFAULT);
    if (ds < 0) return 1;
    int bad = H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, dst) < 0;
    H5Dclose(ds);
    return bad;
}

/* Number of values an attribute holds (-1 on error). */
static hssize_t attr_count(hid_t a) {
    hid_t sp = H5Aget_space(a);
    hssize_t n = sp >= 0 ? H5Sget_simple_extent_npoints(sp) : -1;
    if (sp >= 0) H5Sclose(sp);
    return n;
}

/* Reads an attribute of exactly n values into v (H5Aread writes every value the file has, so
 * the count is checked first). */
static int read_attr(hid_t f, const char *name, hid_t mem_type, void *v, hssize_t n) {
    if (H5Aexists(f, name) <= 0) return 1;
    hid_t a = H5Aopen(f, name, H5P_DEFAULT);
    if (a < 0) return 1;
    int bad = attr_count(a) != n || H5Aread(a, mem_type, v) < 0;
    H5Aclose(a);
    return bad;
}

/* The "config" attribute as a malloc'd string ("" when absent); NULL when it cannot be read. */
static char *read_config_attr(hid_t f) {
    if (H5Aexists(f, "config") <= 0) return strdup("");
    hid_t a = H5Aopen(f, "config", H5P_DEFAULT);
    if (a < 0) return NULL;
    hid_t ft = H5Aget_type(a);
    char *out = NULL;
    if (ft >= 0 && H5Tget_class(ft) == H5T_STRING && attr_count(a) == 1 && H5Tget_size(ft) <= CKPT_MAX_CONFIG) {
        hid_t mt = H5Tcopy(H5T_C_S1);
        H5Tset_cset(mt, H5Tget_cset(ft));   /* HDF5 does not convert between ASCII and UTF-8 */
        if (H5Tis_variable_str(ft) > 0) {
            char *s = NULL;
            H5Tset_size(mt, H5T_VARIABLE);
            if (H5Aread(a, mt, &s) >= 0 && s) {
                out = strdup(s);
                H5free_memory(s);
            }
        } else {
            size_t n = H5Tget_size(ft);
            H5Tset_size(mt, n + 1);   /* room for the terminator HDF5 adds */
            out = calloc(1, n + 2);
            if (out && H5Aread(a, mt, out) < 0) {
                free(out);
                out = NULL;
            }
        }
        H5Tclose(mt);
    }
    if (ft >= 0) H5Tclose(ft);
    H5Aclose(a);
    return out;
}

static hid_t open_checkpoint(const char *path, Err *e) {
    struct stat st;
    if (stat(path, &st) != 0) {
        err_set(e, "%s: cannot open checkpoint: %s", path, strerror(errno));
        return -1;
    }
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (f < 0) err_set(e, "%s: not a readable HDF5 checkpoint (truncated or corrupt file?)", path);
    return f;
}

int ckpt_load_stores(const char *path, const CkptStore *stores, int n_stores, CkptMeta *meta_out, char *config_out,
                     size_t config_cap, CkptExtra *extra, int n_extra, Err *e) {
    H5Quiet q = h5_quiet();
    char key[NAME_MAX_LEN];
    char *config = NULL;
    int bad = 0, want_optim = 0;
    Problems pb;
    int64_t step = 0;
    uint64_t seed = 0, counter = 0;
    uint32_t rbuf[4] = {0};
    int32_t left = 0;
    hid_t f = open_checkpoint(path, e), g_m = -1, g_v = -1, g_state = -1;
    if (f < 0) {
        h5_restore(q);
        return 1;
    }
    for (int s = 0; s < n_stores && !bad; s++) {
        if (!stores[s].ps || !stores[s].ps->allocated) bad = err_set(e, "%s: store %d is not allocated", path, s);
        else if (stores[s].with_optim && !stores[s].ps->m)
            bad = err_set(e, "%s: store %d has no optimizer state to load into", path, s);
    }
    if (bad) goto done;

    /* validate everything before touching the model */
    memset(&pb, 0, sizeof pb);
    for (int s = 0; s < n_stores; s++) want_optim |= stores[s].with_optim;
    if (want_optim) {
        g_m = H5Lexists(f, "optim", H5P_DEFAULT) > 0 && H5Lexists(f, "optim/m", H5P_DEFAULT) > 0
                  ? H5Gopen2(f, "optim/m", H5P_DEFAULT) : -1;
        g_v = H5Lexists(f, "optim", H5P_DEFAULT) > 0 && H5Lexists(f, "optim/v", H5P_DEFAULT) > 0
                  ? H5Gopen2(f, "optim/v", H5P_DEFAULT) : -1;
        if (g_m < 0 || g_v < 0) {
            bad = err_set(e, "%s: no optimizer state in this checkpoint (saved without it?)", path);
            goto done;
        }
    }
    for (int s = 0; s < n_stores; s++) {
        const ParamStore *ps = stores[s].ps;
        for (size_t k = 0; k < ps->n; k++) {
            const Param *p = &ps->p[k];
            snprintf(key, sizeof key, "%s%s", store_prefix(&stores[s]), p->name);
            check_tensor(f, "", key, p->t, &pb);
            if (stores[s].with_optim && p->kind == PARAM_TRAINABLE) {
                check_tensor(g_m, "optim/m/", key, p->t, &pb);
                check_tensor(g_v, "optim/v/", key, p->t, &pb);
            }
        }
    }
    UnexpectedScan sc = {stores, n_stores, &pb};
    H5Literate(f, H5_INDEX_NAME, H5_ITER_INC, NULL, scan_root, &sc);
    if (pb.count[PB_MISSING] || pb.count[PB_SHAPE] || pb.count[PB_UNEXPECTED]) {
        problems_message(&pb, path, e);
        bad = 1;
        goto done;
    }
    if (n_extra > 0) {
        g_state = H5Lexists(f, "state", H5P_DEFAULT) > 0 ? H5Gopen2(f, "state", H5P_DEFAULT) : -1;
        for (int i = 0; i < n_extra && !bad; i++) {
            int nd;
            size_t shape[VT_MAX_DIMS];
            if (g_state < 0 || !dataset_shape(g_state, extra[i].name, &nd, shape))
                bad = err_set(e, "%s: missing state array '%s'", path, extra[i].name);
            else if (nd != 1 || shape[0] != extra[i].n)
                bad = err_set(e, "%s: state array '%s' has %zu values, expected %zu", path, extra[i].name,
                              nd == 1 ? shape[0] : 0, extra[i].n);
        }
        if (bad) goto done;
    }
    if (meta_out) {
        if (read_attr(f, "step", H5T_NATIVE_INT64, &step, 1) || read_attr(f, "rng_seed", H5T_NATIVE_UINT64, &seed, 1) ||
            read_attr(f, "rng_counter", H5T_NATIVE_UINT64, &counter, 1)) {
            bad = err_set(e, "%s: missing training state (step, rng_seed, rng_counter): not a training checkpoint",
                          path);
            goto done;
        }
        /* older writers stored (seed, counter) only: resume at the next 128-bit block */
        if (read_attr(f, "rng_buf", H5T_NATIVE_UINT32, rbuf, 4) || read_attr(f, "rng_buf_left", H5T_NATIVE_INT32, &left, 1) ||
            left < 0 || left > 4)
            left = 0;
    }
    if (config_out) {
        config = read_config_attr(f);
        if (!config) {
            bad = err_set(e, "%s: cannot read the config attribute", path);
            goto done;
        }
        if (strlen(config) + 1 > config_cap) {
            bad = err_set(e, "%s: config text (%zu bytes) does not fit in %zu bytes", path, strlen(config), config_cap);
            goto done;
        }
    }

    /* everything matches: read */
    for (int s = 0; s < n_stores && !bad; s++) {
        ParamStore *ps = stores[s].ps;
        for (size_t k = 0; k < ps->n && !bad; k++) {
            Param *p = &ps->p[k];
            snprintf(key, sizeof key, "%s%s", store_prefix(&stores[s]), p->name);
            if (read_f32(f, key, p->t->data)) bad = err_set(e, "%s: cannot read tensor '%s' (corrupt file?)", path, key);
            else if (stores[s].with_optim && p->kind == PARAM_TRAINABLE &&
                     (read_f32(g_m, key, ps->m + p->offset) || read_f32(g_v, key, ps->v + p->offset)))
                bad = err_set(e, "%s: cannot read the optimizer state of '%s' (corrupt file?)", path, key);
        }
    }
    for (int i = 0; i < n_extra && !bad; i++)
        if (read_f32(g_state, extra[i].name, extra[i].data))
            bad = err_set(e, "%s: cannot read state array '%s' (corrupt file?)", path, extra[i].name);
    if (!bad && meta_out) {
        meta_out->step = (long)step;
        rng_init(&meta_out->rng, seed);
        meta_out->rng.counter = counter;
        memcpy(meta_out->rng.buf, rbuf, sizeof rbuf);
        meta_out->rng.buf_left = left;
        meta_out->config_text = NULL;
    }
    if (config && !bad) memcpy(config_out, config, strlen(config) + 1);
done:
    free(config);
    if (g_state >= 0) H5Gclose(g_state);
    if (g_m >= 0) H5Gclose(g_m);
    if (g_v >= 0) H5Gclose(g_v);
    H5Fclose(f);
    h5_restore(q);
    return bad;
}

int ckpt_load(const char *path, ParamStore *ps, const char *prefix, int with_optim, CkptMeta *meta_out,
              char *config_out, size_t config_cap, CkptExtra *extra, int n_extra, Err *e) {
    CkptStore s = {.prefix = prefix, .ps = ps, .with_optim = with_optim};
    return ckpt_load_stores(path, &s, 1, meta_out, config_out, config_cap, extra, n_extra, e);
}

char *ckpt_read_config(const char *path, Err *e) {
    H5Quiet q = h5_quiet();
    hid_t f = open_checkpoint(path, e);
    char *config = NULL;
    if (f >= 0) {
        config = read_config_attr(f);
        if (!config) err_set(e, "%s: cannot read the config attribute", path);
        H5Fclose(f);
    }
    h5_restore(q);
    return config;
}
