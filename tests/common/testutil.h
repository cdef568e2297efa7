/* testutil.h — shared helpers for the C tests: finite-difference gradient checks and the
 * PyTorch reference files written by tests/ref/ scripts.  Include after <cmocka.h>'s prerequisites
 * (stdarg.h, stddef.h, setjmp.h, stdint.h). */
#ifndef VERSA_TESTUTIL_H
#define VERSA_TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include "engine/engine.h"

/* ---- finite-difference gradient check ----
 * Inputs are made with values uniform in [lo, hi].  With `transposed`, the input the op sees is
 * a transposed (non-contiguous) view of a base tensor of the swapped shape, and the check is made
 * against the base, so gradients through strided views are covered too.  `no_grad` inputs are
 * constants.  The scalar checked is L = sum(out * R) with a fixed random R, in double. */
typedef struct GcInput {
    int ndim;
    size_t shape[VT_MAX_DIMS];
    float lo, hi;
    int transposed;   /* transpose the last two dims */
    int no_grad;
} GcInput;

typedef Tensor *(*GcFn)(Ctx *c, Tensor **in, void *ud);

typedef struct GcOpts {
    double h;      /* finite-difference step (default 1e-2) */
    double atol;   /* |analytic - numeric| <= atol + rtol * max(|a|, |n|) (defaults 2e-3, 2e-2) */
    double rtol;
    int training;  /* ctx->training during the check (default 0) */
    uint64_t seed;
} GcOpts;

/* Runs the check; fails the current cmocka test with the op name, input, element and both
 * values on the first violation.  Returns the worst |a - n| / (atol + rtol*max) seen (< 1). */
double gradcheck(const char *what, GcFn f, const GcInput *in, int n_in, void *ud, GcOpts o);

#define GC_IN(nd, ...) ((GcInput){.ndim = (nd), .shape = {__VA_ARGS__}, .lo = -1.0f, .hi = 1.0f})

/* ---- PyTorch reference files (HDF5, one dataset per named array) ---- */
typedef struct RefFile RefFile;
RefFile *ref_open(const char *name);     /* tests/ref/data/<name>.h5; fails the test if absent */
/* Returns a malloc'd float copy of dataset `key` (any numeric type); n (and shape) filled. */
float *ref_get(RefFile *r, const char *key, size_t *n, int *ndim, size_t *shape);
int ref_has(RefFile *r, const char *key);
void ref_close(RefFile *r);

/* One array of a reference group ("group/name"), with its shape; free(a.v) when done. */
typedef struct RefArr {
    float *v;
    size_t n;
    int ndim;
    size_t shape[16];
} RefArr;
RefArr ref_arr(RefFile *r, const char *group, const char *name);
/* A tensor holding a copy of the array (or of dataset group/name), requires_grad as given. */
Tensor *ref_arr_tensor(Ctx *c, const RefArr *a, int requires_grad);
Tensor *ref_tensor_at(Ctx *c, RefFile *r, const char *group, const char *name, int requires_grad);
/* Asserts |got - ref| <= atol_frac * max|ref| + rtol * |ref|, prints and returns the measured
 * max error / max|ref| (the numbers quoted in the reports). */
double ref_check(const char *what, const float *got, const RefArr *ref, double atol_frac, double rtol);
/* ref_check of a (n values) against dataset group/name with atol_frac = rtol = rel, so near-zero
 * outputs of a sum of O(1) terms are judged on the scale of the terms; when `shape_of` is given
 * its shape must equal the dataset's.  Silent (returns the error for the caller's summary). */
double ref_compare(RefFile *r, const char *group, const char *name, const Tensor *shape_of, const float *a,
                   size_t n, double rel);

/* Asserts |a - b| <= atol + rtol * |b| elementwise; reports the worst element. */
void assert_close(const char *what, const float *a, const float *b, size_t n, double atol, double rtol);
/* Max |a-b| / max(|b|) over the arrays */
double max_rel_err(const float *a, const float *b, size_t n);

/* Run a cmocka test group and return its status, with a line naming the program. */
#define RUN_GROUP(tests) cmocka_run_group_tests_name(__FILE__, tests, NULL, NULL)

#endif
