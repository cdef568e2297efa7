/* test_syncbn.c — synchronised batch norm (engine/op_batchnorm_sync.c, student.sync_bn):
 *   1. on one rank it is op_batchnorm in training mode (forward, running buffers, gradients;
 *      op_batchnorm itself is checked against PyTorch in tests/engine/test_ops_norm.c) and it
 *      passes a finite-difference gradient check (also on a transposed input);
 *   2. under `mpirun -np 2` (this binary re-run as the worker): each rank holds half the batch,
 *      with shards of different means so local statistics would be far off; the sync op's output,
 *      input gradients, summed affine gradients and running buffers equal op_batchnorm on the
 *      whole batch on one rank, and plain local-statistics BN does not.
 * Without mpirun the 2-rank case is skipped. */
#include "tests/common/testutil.h"
#include "tests/common/spawn.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define WORKER_ENV "VERSA_SYNCBN_WORKER"
#define NB 6
#define NC 5
#define NS 7   /* spatial values per plane (a 1 x 7 "image") */

static char g_exe[4096];

/* x (NB, NC, 1, NS): row n of the batch is offset by 3 * (n >= NB / 2), so the two halves (the
 * two ranks' shards) have very different means; g (same shape): the upstream gradient */
static void make_data(float *x, float *g, float *w, float *b) {
    Rng r;
    rng_init(&r, 42);
    for (size_t n = 0; n < NB; n++)
        for (size_t i = 0; i < NC * NS; i++) {
            x[n * NC * NS + i] = 2.0f * rng_uniform(&r) - 1.0f + (n >= NB / 2 ? 3.0f : 0.0f);
            g[n * NC * NS + i] = 2.0f * rng_uniform(&r) - 1.0f;
        }
    for (size_t ch = 0; ch < NC; ch++) {
        w[ch] = 0.5f + rng_uniform(&r);
        b[ch] = rng_uniform(&r) - 0.5f;
    }
}

typedef struct BnResult {
    float y[NB * NC * NS], dx[NB * NC * NS], dw[NC], db[NC], rm[NC], rv[NC];
} BnResult;

/* rows [r0, r0 + nb) through op_batchnorm (sync or not, as c says); L = sum(y * g) */
static void run_bn(Ctx *c, int sync_call, size_t r0, size_t nb, BnResult *o) {
    float x[NB * NC * NS], g[NB * NC * NS], w[NC], b[NC];
    make_data(x, g, w, b);
    ctx_step_begin(c);
    c->training = 1;
    Tensor *xt = tensor_from(c, 4, TSHAPE(nb, NC, 1, NS), x + r0 * NC * NS);
    Tensor *wt = tensor_from(c, 1, TSHAPE(NC), w), *bt = tensor_from(c, 1, TSHAPE(NC), b);
    xt->requires_grad = wt->requires_grad = bt->requires_grad = 1;
    for (size_t ch = 0; ch < NC; ch++) {
        o->rm[ch] = 0.0f;
        o->rv[ch] = 1.0f;
    }
    Tensor *y = sync_call ? op_batchnorm_sync(c, xt, wt, bt, o->rm, o->rv, 0.1f, 1e-5f)
                          : op_batchnorm(c, xt, wt, bt, o->rm, o->rv, 0.1f, 1e-5f);
    Tensor *gt = tensor_from(c, 4, TSHAPE(nb, NC, 1, NS), g + r0 * NC * NS);
    Tensor *l = op_sum_all(c, op_mul(c, y, gt));
    backward(c, l);
    memcpy(o->y, y->data, nb * NC * NS * sizeof(float));
    memcpy(o->dx, xt->grad, nb * NC * NS * sizeof(float));
    memcpy(o->dw, wt->grad, NC * sizeof(float));
    memcpy(o->db, bt->grad, NC * sizeof(float));
}

static double max_diff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

/* ---- 1 rank ---- */

static void test_one_rank_is_batchnorm(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 0);
    BnResult *a = calloc(1, sizeof *a), *s = calloc(1, sizeof *s);
    run_bn(&c, 0, 0, NB, a);
    run_bn(&c, 1, 0, NB, s);
    const size_t n = NB * NC * NS;
    double dy = max_diff(a->y, s->y, n), ddx = max_diff(a->dx, s->dx, n), dw = max_diff(a->dw, s->dw, NC),
           db = max_diff(a->db, s->db, NC), drm = max_diff(a->rm, s->rm, NC), drv = max_diff(a->rv, s->rv, NC);
    print_message("    sync op on 1 rank vs op_batchnorm: y %.2g dx %.2g dw %.2g db %.2g running mean %.2g var %.2g\n", dy, ddx,
                  dw, db, drm, drv);
    assert_true(dy < 1e-5 && ddx < 1e-5 && dw < 1e-4 && db < 1e-4 && drm < 1e-6 && drv < 1e-5);
    assert_true(max_diff(a->dx, (float[NB * NC * NS]){0}, n) > 0.1);   /* non-trivial gradients */
    free(a);
    free(s);
    ctx_free(&c);
}

static Tensor *gc_syncbn(Ctx *c, Tensor **in, void *ud) {
    (void)ud;
    int prev = c->training;
    c->training = 1;
    Tensor *y = op_batchnorm_sync(c, in[0], in[1], in[2], NULL, NULL, 0.1f, 1e-5f);
    c->training = prev;
    return y;
}

static void test_gradcheck(void **st) {
    (void)st;
    GcInput in[3] = {GC_IN(4, 4, 3, 2, 5), GC_IN(1, 3), GC_IN(1, 3)};
    GcOpts o = {.h = 1e-2, .atol = 2e-3, .rtol = 2e-2, .training = 1, .seed = 3};
    double w1 = gradcheck("op_batchnorm_sync (4,3,2,5)", gc_syncbn, in, 3, NULL, o);
    in[0].transposed = 1;
    double w2 = gradcheck("op_batchnorm_sync transposed", gc_syncbn, in, 3, NULL, o);
    print_message("    gradcheck worst err/tol: %.3f, transposed input %.3f\n", w1, w2);
}

/* ---- 2 ranks ---- */

static int worker_main(int *argc, char ***argv) {
    Ctx c;
    ctx_init(&c, 0);
    dist_init(&c, argc, argv);
    if (c.world != 2) {
        printf("rank %d: FAIL world %d, expected 2\n", c.rank, c.world);
        dist_finalize();
        return 1;
    }
    const size_t half = NB / 2, r0 = (size_t)c.rank * half, n = half * NC * NS, off = r0 * NC * NS;
    Ctx ref;
    ctx_init(&ref, 0);   /* world 1: the whole batch through op_batchnorm */
    BnResult *full = calloc(1, sizeof *full), *syn = calloc(1, sizeof *syn), *loc = calloc(1, sizeof *loc);
    run_bn(&ref, 0, 0, NB, full);
    c.sync_bn = 1;
    run_bn(&c, 0, r0, half, syn);   /* op_batchnorm dispatches to the sync op */
    c.sync_bn = 0;
    run_bn(&c, 0, r0, half, loc);   /* local statistics */
    /* affine gradients: every rank holds its rows' sum; the sum over ranks is the whole batch's */
    float sums[4 * NC];
    memcpy(sums, syn->dw, NC * sizeof(float));
    memcpy(sums + NC, syn->db, NC * sizeof(float));
    memcpy(sums + 2 * NC, loc->dw, NC * sizeof(float));
    memcpy(sums + 3 * NC, loc->db, NC * sizeof(float));
    dist_allreduce_sum(&c, sums, 4 * NC);
    double e_y = max_diff(syn->y, full->y + off, n), e_dx = max_diff(syn->dx, full->dx + off, n);
    double e_dw = fmax(max_diff(sums, full->dw, NC), max_diff(sums + NC, full->db, NC));
    double e_run = fmax(max_diff(syn->rm, full->rm, NC), max_diff(syn->rv, full->rv, NC));
    double l_y = max_diff(loc->y, full->y + off, n), l_dx = max_diff(loc->dx, full->dx + off, n);
    double l_run = fmax(max_diff(loc->rm, full->rm, NC), max_diff(loc->rv, full->rv, NC));
    int ok = e_y < 1e-5 && e_dx < 1e-5 && e_dw < 1e-4 && e_run < 1e-5 && l_y > 0.1 && l_dx > 0.1 && l_run > 0.1;
    printf("rank %d: %s sync y %.3g dx %.3g dw/db %.3g running %.3g | local y %.3g dx %.3g running %.3g\n", c.rank,
           ok ? "ok" : "FAIL", e_y, e_dx, e_dw, e_run, l_y, l_dx, l_run);
    free(full);
    free(syn);
    free(loc);
    ctx_free(&ref);
    ctx_free(&c);
    dist_finalize();
    return ok ? 0 : 1;
}

static void test_two_ranks(void **st) {
    (void)st;
    if (!spawn_in_path("mpirun")) {
        print_message("    mpirun not found: skipping the 2-rank test\n");
        skip();
    }
    char out[1 << 13];
    char *argv[] = {g_exe, NULL};
    const char *env[] = {WORKER_ENV "=1", NULL};
    SpawnResult r = spawn_capture(argv, 2, 60, env, out, sizeof out);
    int status = r.status;
    print_message("%s", out);
    if (status != 0 || !strstr(out, "rank 0: ok") || !strstr(out, "rank 1: ok"))
        fail_msg("mpirun -np 2 failed (status %d):\n%s", status, out);
}

int main(int argc, char **argv) {
    if (getenv(WORKER_ENV)) return worker_main(&argc, &argv);
    ssize_t n = readlink("/proc/self/exe", g_exe, sizeof g_exe - 1);
    if (n <= 0) return 1;
    g_exe[n] = 0;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_rank_is_batchnorm),
        cmocka_unit_test(test_gradcheck),
        cmocka_unit_test(test_two_ranks),
    };
    return cmocka_run_group_tests_name(__FILE__, tests, NULL, NULL);
}
