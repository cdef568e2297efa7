/* testutil.c — gradient checks and reference files for the tests. */
#include "testutil.h"
#include <hdf5.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double weighted_sum(const Tensor *out, const double *R) {
    float *tmp = malloc(out->numel * sizeof(float) + 1);
    tensor_copy_to(out, tmp);
    double s = 0;
    for (size_t i = 0; i < out->numel; i++) s += (double)tmp[i] * R[i];
    free(tmp);
    return s;
}

typedef struct GcState {
    float **base;      /* base buffers, one per input */
    size_t *base_n;
    const GcInput *in;
    int n_in;
} GcState;

/* wrap the base buffers as (possibly transposed-view) inputs */
static void make_inputs(Ctx *c, GcState *s, Tensor **ts, Tensor **bases) {
    for (int k = 0; k < s->n_in; k++) {
        const GcInput *gi = &s->in[k];
        size_t sh[VT_MAX_DIMS];
        memcpy(sh, gi->shape, sizeof sh);
        if (gi->transposed && gi->ndim >= 2) {
            size_t t = sh[gi->ndim - 1];
            sh[gi->ndim - 1] = sh[gi->ndim - 2];
            sh[gi->ndim - 2] = t;
        }
        Tensor *b = tensor_wrap(c, s->base[k], gi->ndim, sh);
        b->requires_grad = gi->no_grad ? 0 : 1;
        bases[k] = b;
        ts[k] = (gi->transposed && gi->ndim >= 2) ? op_transpose(c, b, gi->ndim - 2, gi->ndim - 1) : b;
    }
}

double gradcheck(const char *what, GcFn f, const GcInput *in, int n_in, void *ud, GcOpts o) {
    if (o.h == 0) o.h = 1e-2;
    if (o.atol == 0) o.atol = 2e-3;
    if (o.rtol == 0) o.rtol = 2e-2;
    if (o.seed == 0) o.seed = 1234;
    Ctx c;
    ctx_init(&c, o.seed);
    c.training = o.training;
    GcState s = {.in = in, .n_in = n_in};
    s.base = calloc((size_t)n_in, sizeof(float *));
    s.base_n = calloc((size_t)n_in, sizeof(size_t));
    Rng r;
    rng_init(&r, o.seed ^ 0xabcdefULL);
    for (int k = 0; k < n_in; k++) {
        size_t n = 1;
        for (int d = 0; d < in[k].ndim; d++) n *= in[k].shape[d];
        s.base_n[k] = n;
        s.base[k] = malloc(n * sizeof(float) + 4);
        rng_fill_uniform(&r, s.base[k], n, in[k].lo, in[k].hi);
    }
    Tensor *ts[8], *bases[8];

    /* analytic */
    ctx_step_begin(&c);
    rng_init(&c.rng, o.seed);
    make_inputs(&c, &s, ts, bases);
    Tensor *out = f(&c, ts, ud);
    size_t nout = out->numel;
    double *R = malloc(nout * sizeof(double));
    float *Rf = malloc(nout * sizeof(float));
    for (size_t i = 0; i < nout; i++) {
        Rf[i] = rng_uniform(&r) * 2.0f - 1.0f;
        R[i] = Rf[i];
    }
    if (!out->requires_grad) fail_msg("%s: output does not require grad (was anything recorded?)", what);
    backward_from(&c, out, Rf);
    float **ga = calloc((size_t)n_in, sizeof(float *));
    for (int k = 0; k < n_in; k++) {
        if (in[k].no_grad) continue;
        ga[k] = malloc(s.base_n[k] * sizeof(float) + 4);
        if (bases[k]->grad) memcpy(ga[k], bases[k]->grad, s.base_n[k] * sizeof(float));
        else memset(ga[k], 0, s.base_n[k] * sizeof(float));
    }

    /* numeric, in a no-grad context */
    double worst = 0;
    for (int k = 0; k < n_in; k++) {
        if (in[k].no_grad) continue;
        for (size_t i = 0; i < s.base_n[k]; i++) {
            float x0 = s.base[k][i];
            double lp, lm;
            s.base[k][i] = x0 + (float)o.h;
            ctx_step_begin(&c);
            rng_init(&c.rng, o.seed);
            make_inputs(&c, &s, ts, bases);
            lp = weighted_sum(f(&c, ts, ud), R);
            s.base[k][i] = x0 - (float)o.h;
            ctx_step_begin(&c);
            rng_init(&c.rng, o.seed);
            make_inputs(&c, &s, ts, bases);
            lm = weighted_sum(f(&c, ts, ud), R);
            s.base[k][i] = x0;
            double hp = (double)(x0 + (float)o.h) - (double)x0, hm = (double)x0 - (double)(x0 - (float)o.h);
            double num = (lp - lm) / (hp + hm);
            double a = ga[k][i];
            double tol = o.atol + o.rtol * fmax(fabs(a), fabs(num));
            double ratio = fabs(a - num) / tol;
            if (ratio > worst) worst = ratio;
            if (ratio > 1.0) {
                fail_msg("%s: input %d element %zu: analytic %.6g vs numeric %.6g (tol %.3g)", what, k, i, a, num,
                         tol);
            }
        }
    }
    for (int k = 0; k < n_in; k++) {
        free(s.base[k]);
        free(ga[k]);
    }
    free(ga);
    free(s.base);
    free(s.base_n);
    free(R);
    free(Rf);
    ctx_free(&c);
    return worst;
}

/* ------------------------------------------------------------------------------------------ */

struct RefFile {
    hid_t f;
    char path[512];
};

RefFile *ref_open(const char *name) {
    RefFile *r = calloc(1, sizeof(*r));
    const char *dir = getenv("VERSA_REF_DIR");
    snprintf(r->path, sizeof r->path, "%s/%s.h5", dir ? dir : "tests/ref/data", name);
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    r->f = H5Fopen(r->path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (r->f < 0) fail_msg("reference file %s missing (regenerate with tests/ref/README.md)", r->path);
    return r;
}

int ref_has(RefFile *r, const char *key) {
    return H5Lexists(r->f, key, H5P_DEFAULT) > 0;
}

float *ref_get(RefFile *r, const char *key, size_t *n, int *ndim, size_t *shape) {
    if (!ref_has(r, key)) fail_msg("%s: no dataset '%s'", r->path, key);
    hid_t d = H5Dopen2(r->f, key, H5P_DEFAULT);
    hid_t sp = H5Dget_space(d);
    int nd = H5Sget_simple_extent_ndims(sp);
    hsize_t dims[16];
    H5Sget_simple_extent_dims(sp, dims, NULL);
    size_t count = 1;
    for (int i = 0; i < nd; i++) {
        count *= dims[i];
        if (shape) shape[i] = dims[i];
    }
    float *buf = malloc(count * sizeof(float) + 4);
    H5Dread(d, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, buf);
    H5Sclose(sp);
    H5Dclose(d);
    if (n) *n = count;
    if (ndim) *ndim = nd;
    return buf;
}

RefArr ref_arr(RefFile *r, const char *group, const char *name) {
    char key[256];
    snprintf(key, sizeof key, "%s/%s", group, name);
    RefArr a = {0};
    a.v = ref_get(r, key, &a.n, &a.ndim, a.shape);
    return a;
}

Tensor *ref_arr_tensor(Ctx *c, const RefArr *a, int requires_grad) {
    Tensor *t = tensor_from(c, a->ndim, a->shape, a->v);
    t->requires_grad = (uint8_t)requires_grad;
    return t;
}

Tensor *ref_tensor_at(Ctx *c, RefFile *r, const char *group, const char *name, int requires_grad) {
    RefArr a = ref_arr(r, group, name);
    Tensor *t = ref_arr_tensor(c, &a, requires_grad);
    free(a.v);
    return t;
}

static double max_abs_value(const float *v, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)v[i]));
    return m;
}

double ref_check(const char *what, const float *got, const RefArr *ref, double atol_frac, double rtol) {
    double err = max_rel_err(got, ref->v, ref->n);
    printf("    %-34s max err / max|ref| = %.2e\n", what, err);
    assert_close(what, got, ref->v, ref->n, atol_frac * max_abs_value(ref->v, ref->n) + 1e-30, rtol);
    return err;
}

double ref_compare(RefFile *r, const char *group, const char *name, const Tensor *shape_of, const float *a,
                   size_t n, double rel) {
    RefArr b = ref_arr(r, group, name);
    assert_int_equal(b.n, n);
    if (shape_of) {
        assert_int_equal(b.ndim, shape_of->ndim);
        for (int d = 0; d < b.ndim; d++) assert_int_equal(b.shape[d], shape_of->shape[d]);
    }
    char what[300];
    snprintf(what, sizeof what, "%s %s", group, name);
    assert_close(what, a, b.v, n, rel * max_abs_value(b.v, n), rel);
    double e = max_rel_err(a, b.v, n);
    free(b.v);
    return e;
}

void ref_close(RefFile *r) {
    if (!r) return;
    H5Fclose(r->f);
    free(r);
}

double max_rel_err(const float *a, const float *b, size_t n) {
    double md = 0, mb = 0;
    for (size_t i = 0; i < n; i++) {
        md = fmax(md, fabs((double)a[i] - b[i]));
        mb = fmax(mb, fabs((double)b[i]));
    }
    return mb > 0 ? md / mb : md;
}

void assert_close(const char *what, const float *a, const float *b, size_t n, double atol, double rtol) {
    size_t worst_i = 0;
    double worst = -1;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        double tol = atol + rtol * fabs((double)b[i]);
        double ratio = d / tol;
        if (!(ratio <= worst) || worst < 0) {
            if (isnan(ratio) || ratio > worst) {
                worst = isnan(ratio) ? INFINITY : ratio;
                worst_i = i;
            }
        }
    }
    if (worst > 1.0)
        fail_msg("%s: element %zu: got %.7g, expected %.7g (atol %.1e rtol %.1e)", what, worst_i, a[worst_i],
                 b[worst_i], atol, rtol);
}
