/* ops_ref.h — helpers shared by the test_ops_*.c programs: `f_twice` (an op applied twice to
 * the same inputs, so a backward that assigns instead of adding is caught) and the runner of the
 * PyTorch reference cases of tests/ref/data/ops_elementwise.h5 (written by
 * tests/ref/ops_elementwise.py).  Include after testutil.h.
 *
 * Each case: inputs x0, x1, ... (with t<i> = 1 the op sees x<i> transposed in its last two dims,
 * a strided view), outputs out (or out0, out1, ...) and loss weights w (w0, ...), reference
 * gradients g<i> of loss = sum(out * w) with respect to the stored x<i>. */
#ifndef VERSA_TEST_OPS_REF_H
#define VERSA_TEST_OPS_REF_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* f(in) + f(in): every input reaches the output twice, so its gradient must be the sum of two
 * backward calls; a kernel that assigns (=) instead of adding (+=) fails the gradcheck. */
typedef struct Twice {
    GcFn f;
    void *ud;
} Twice;

static inline Tensor *f_twice(Ctx *c, Tensor **in, void *ud) {
    const Twice *t = ud;
    return op_add(c, t->f(c, in, t->ud), t->f(c, in, t->ud));
}

#define REF_FILE "ops_elementwise"
#define REF_MAX_IN 8
#define REF_MAX_OUT 8

/* Builds the op's outputs from the case's inputs; arguments are read from the case group.
 * Returns the number of outputs written to `out`. */
typedef int (*RefOpFn)(Ctx *c, Tensor **x, int nx, RefFile *r, const char *grp, Tensor **out);

typedef struct RefTol {
    double out_atol, out_rtol;    /* |got - ref| <= atol + rtol * |ref| for outputs */
    double grad_atol, grad_rtol;  /* and for input gradients */
} RefTol;

/* Outputs: 1e-5 relative as the brief asks; the atol covers outputs near zero (x - y with x ~ y). */
#define REF_TOL_DEFAULT ((RefTol){1e-6, 1e-5, 1e-6, 1e-5})

static inline float *ref_case_get(RefFile *r, const char *grp, const char *key, size_t *n, int *nd, size_t *shape) {
    char path[160];
    snprintf(path, sizeof path, "%s/%s", grp, key);
    return ref_get(r, path, n, nd, shape);
}

static inline int ref_case_has(RefFile *r, const char *grp, const char *key) {
    char path[160];
    snprintf(path, sizeof path, "%s/%s", grp, key);
    return ref_has(r, path);
}

static inline double ref_case_scalar(RefFile *r, const char *grp, const char *key) {
    float *v = ref_case_get(r, grp, key, NULL, NULL, NULL);
    double x = v[0];
    free(v);
    return x;
}

/* int32 / uint8 datasets come back as floats (exact for these small values) */
static inline int32_t *ref_case_ints(RefFile *r, const char *grp, const char *key, size_t *n) {
    float *v = ref_case_get(r, grp, key, n, NULL, NULL);
    int32_t *o = malloc(*n * sizeof(int32_t) + 4);
    for (size_t i = 0; i < *n; i++) o[i] = (int32_t)lrintf(v[i]);
    free(v);
    return o;
}

static inline uint8_t *ref_case_mask(RefFile *r, const char *grp, const char *key, size_t *n, int *nd, size_t *shape) {
    float *v = ref_case_get(r, grp, key, n, nd, shape);
    uint8_t *o = malloc(*n + 1);
    for (size_t i = 0; i < *n; i++) o[i] = v[i] != 0.0f;
    free(v);
    return o;
}

/* Runs every case of `op`; asserts outputs and gradients within `tol` and prints the worst
 * relative errors (max |got - ref| / max |ref|) so they can be reported. */
static inline void run_ref_op(const char *op, RefOpFn fn, RefTol tol) {
    RefFile *r = ref_open(REF_FILE);
    char grp[64], what[128], key[16];
    int ncase = (int)ref_case_scalar(r, op, "n");
    double worst_out = 0, worst_grad = 0;
    for (int k = 0; k < ncase; k++) {
        snprintf(grp, sizeof grp, "%s/%d", op, k);
        Ctx c;
        ctx_init(&c, 1);
        c.training = 0;
        Tensor *base[REF_MAX_IN], *x[REF_MAX_IN], *out[REF_MAX_OUT];
        int nx = 0;
        for (; nx < REF_MAX_IN; nx++) {
            snprintf(key, sizeof key, "x%d", nx);
            if (!ref_case_has(r, grp, key)) break;
            int nd;
            size_t n, shape[VT_MAX_DIMS];
            float *v = ref_case_get(r, grp, key, &n, &nd, shape);
            base[nx] = tensor_from(&c, nd, shape, v);
            free(v);
            snprintf(key, sizeof key, "g%d", nx);
            base[nx]->requires_grad = (uint8_t)ref_case_has(r, grp, key);
            snprintf(key, sizeof key, "t%d", nx);
            int tr = ref_case_has(r, grp, key) && ref_case_scalar(r, grp, key) != 0;
            x[nx] = tr ? op_transpose(&c, base[nx], nd - 2, nd - 1) : base[nx];
            if (tr) assert_false(tensor_is_contiguous(x[nx]));
        }
        int nout = fn(&c, x, nx, r, grp, out);
        assert_true(nout >= 1 && nout <= REF_MAX_OUT);
        /* outputs, then seed d(loss)/d(out_j) = w_j on every output and run the tape once */
        float *w0 = NULL;
        for (int j = 0; j < nout; j++) {
            size_t n;
            snprintf(key, sizeof key, nout == 1 ? "out" : "out%d", j);
            float *ref = ref_case_get(r, grp, key, &n, NULL, NULL);
            snprintf(what, sizeof what, "%s case %d %s", op, k, key);
            if (n != out[j]->numel) fail_msg("%s: %zu elements, reference has %zu", what, out[j]->numel, n);
            float *got = malloc(n * sizeof(float) + 4);
            tensor_copy_to(out[j], got);
            assert_close(what, got, ref, n, tol.out_atol, tol.out_rtol);
            worst_out = fmax(worst_out, max_rel_err(got, ref, n));
            free(got);
            free(ref);
            snprintf(key, sizeof key, nout == 1 ? "w" : "w%d", j);
            float *w = ref_case_get(r, grp, key, &n, NULL, NULL);
            if (!out[j]->requires_grad) fail_msg("%s case %d: output %d does not require grad", op, k, j);
            if (j == 0) {
                w0 = w;
                continue;
            }
            float *g = tensor_grad(&c, out[j]);
            for (size_t i = 0; i < n; i++) g[i] += w[i];
            free(w);
        }
        backward_from(&c, out[0], w0);
        free(w0);
        for (int i = 0; i < nx; i++) {
            if (!base[i]->requires_grad) continue;
            size_t n;
            snprintf(key, sizeof key, "g%d", i);
            float *ref = ref_case_get(r, grp, key, &n, NULL, NULL);
            assert_int_equal(n, base[i]->numel);
            float *got = calloc(n + 1, sizeof(float));
            if (base[i]->grad) memcpy(got, base[i]->grad, n * sizeof(float));
            snprintf(what, sizeof what, "%s case %d grad of x%d", op, k, i);
            assert_close(what, got, ref, n, tol.grad_atol, tol.grad_rtol);
            worst_grad = fmax(worst_grad, max_rel_err(got, ref, n));
            free(got);
            free(ref);
        }
        ctx_free(&c);
    }
    printf("[ ref      ] %-12s %2d cases  max rel err: out %.2e  grad %.2e\n", op, ncase, worst_out, worst_grad);
    ref_close(r);
}

#endif
