/* test_dist.c — the MPI layer (engine/dist.c).
 *
 * Run normally, this program is a cmocka test suite.  The multi-rank tests start
 * `timeout 60 mpirun -np 2 <this binary>` with VERSA_DIST_SCENARIO naming a worker scenario; the
 * workers check their results against closed-form values (integers, so sums and halves are exact
 * in float and the comparison is ==), print "rank R: ok <scenario>" or "rank R: FAIL ...", and the
 * parent asserts on the exit status, those lines and the time taken.  The launch uses shared
 * memory only (pml ob1, btl self,vader), so nothing touches the network; without mpirun on the
 * machine those tests are skipped. */
#include "tests/common/testutil.h"
#include "tests/common/spawn.h"
#include <math.h>
#include <mpi.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>


#define SCENARIO_ENV "VERSA_DIST_SCENARIO"

/* ---------------------------------------------------------------------------------------- */
/* workers (one process per rank under mpirun) */

static int w_rank;              /* for messages */
static const char *w_scenario;  /* the scenario running */
static int w_fails;             /* failed checks in this process */

/* Integers in [-32768, 32767] that differ between neighbouring elements and between ranks (any
 * 65536 consecutive elements of one rank are all different): a misplaced, missing or doubly
 * reduced element changes the expected sum, and sums of a few ranks stay exact in float. */
static float val(size_t i, int r) {
    return (float)(long)((i * 7919u + (size_t)r * 104729u + 13u) % 65536u) - 32768.0f;
}

static void wfail(const char *what, size_t i, double got, double want) {
    if (w_fails++ < 20)
        printf("rank %d: FAIL %s: %s [%zu]: got %.9g, expected %.9g\n", w_rank, w_scenario, what, i, got, want);
}

/* exact comparison; reports the first mismatch and how many there were */
static void wexpect(const char *what, const float *got, const float *want, size_t n) {
    size_t bad = 0, first = 0;
    for (size_t i = 0; i < n; i++)
        if (got[i] != want[i] && bad++ == 0) first = i;
    if (bad) {
        wfail(what, first, got[first], want[first]);
        printf("rank %d:      %s: %s: %zu of %zu elements differ\n", w_rank, w_scenario, what, bad, n);
    }
}

static float *wmalloc(size_t n) {
    float *p = malloc(n * sizeof(float));
    if (!p) {
        printf("rank %d: out of memory\n", w_rank);
        exit(2);
    }
    return p;
}

/* sum / mean of val over ranks, the way dist_allreduce_{sum,mean} must produce them */
static void expect_reduced(Ctx *c, const char *what, float *x, size_t n, int mean) {
    float *want = wmalloc(n);
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (int r = 0; r < c->world; r++) s += val(i, r);
        want[i] = mean ? (float)s * (float)(1.0 / c->world) : (float)s;
    }
    wexpect(what, x, want, n);
    free(want);
}

static uint64_t hash_bits(const float *x, size_t n) {
    uint64_t h = 14695981039346656037ull;
    const unsigned char *b = (const unsigned char *)x;
    for (size_t i = 0; i < n * sizeof(float); i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static void scenario_collectives(Ctx *c) {
    /* small sum */
    size_t n = 1000;
    float *x = wmalloc(n);
    for (size_t i = 0; i < n; i++) x[i] = val(i, c->rank);
    dist_allreduce_sum(c, x, n);
    expect_reduced(c, "allreduce_sum n=1000", x, n, 0);
    free(x);

    /* an 8 MB block, mean (one MPI call) */
    n = ((size_t)2 << 20) + 3;
    x = wmalloc(n);
    for (size_t i = 0; i < n; i++) x[i] = val(i, c->rank);
    dist_allreduce_mean(c, x, n);
    expect_reduced(c, "allreduce_mean 8 MB", x, n, 1);

    /* through the chunk loop: 3 calls of 100003 and a remainder of 17 */
    n = 300026;
    size_t prev = dist_set_chunk(100003);
    for (size_t i = 0; i < n; i++) x[i] = val(i, c->rank);
    dist_allreduce_sum(c, x, n);
    expect_reduced(c, "allreduce_sum of 300026 in chunks of 100003", x, n, 0);

    /* chunked broadcast from the last rank */
    int root = c->world - 1;
    for (size_t i = 0; i < n; i++) x[i] = val(i, c->rank);
    dist_broadcast(c, x, n, root);
    float *want = wmalloc(n);
    for (size_t i = 0; i < n; i++) want[i] = val(i, root);
    wexpect("broadcast of 300026 from the last rank in chunks", x, want, n);
    dist_set_chunk(prev);

    /* determinism: non-integer data, reduced twice, gives the same bits on every rank and run */
    Rng rng;
    rng_init(&rng, 1234 + (uint64_t)c->rank);
    rng_fill_normal(&rng, want, n, 0.0f, 1.0f);
    memcpy(x, want, n * sizeof(float));
    dist_allreduce_mean(c, x, n);
    uint64_t h[2] = {hash_bits(x, n), 0};
    memcpy(x, want, n * sizeof(float));
    dist_allreduce_mean(c, x, n);
    h[1] = hash_bits(x, n);
    if (h[0] != h[1]) wfail("allreduce_mean of random data: bits differ between two calls", 0, 0, 1);
    uint64_t *hs = malloc((size_t)c->world * sizeof h);
    dist_allgather(c, h, sizeof h, hs);
    for (int r = 0; r < c->world; r++)
        if (hs[2 * r] != h[0]) wfail("allreduce_mean of random data: bits differ from rank", (size_t)r, 0, 0);
    free(hs);
    if (c->world == 2) {
        /* two addends have one rounding whatever the order: (x0 + x1) * 0.5 exactly */
        float *x0 = wmalloc(n), *x1 = wmalloc(n);
        rng_init(&rng, 1234);
        rng_fill_normal(&rng, x0, n, 0.0f, 1.0f);
        rng_init(&rng, 1235);
        rng_fill_normal(&rng, x1, n, 0.0f, 1.0f);
        for (size_t i = 0; i < n; i++) x0[i] = (x0[i] + x1[i]) * 0.5f;
        wexpect("allreduce_mean of random data = (x0 + x1) * 0.5", x, x0, n);
        free(x0);
        free(x1);
    }
    free(want);
    free(x);

    /* doubles: sum and max */
    double d[3] = {c->rank + 0.5, 1e10 * c->rank, -(double)c->rank};
    dist_allreduce_sum_double(c, d, 3);
    double W = c->world, tri = W * (W - 1) / 2;
    if (d[0] != tri + 0.5 * W) wfail("allreduce_sum_double", 0, d[0], tri + 0.5 * W);
    if (d[1] != 1e10 * tri) wfail("allreduce_sum_double", 1, d[1], 1e10 * tri);
    if (d[2] != -tri) wfail("allreduce_sum_double", 2, d[2], -tri);
    double m[2] = {c->rank, -(double)c->rank};
    dist_allreduce_max_double(c, m, 2);
    if (m[0] != W - 1) wfail("allreduce_max_double", 0, m[0], W - 1);
    if (m[1] != 0) wfail("allreduce_max_double", 1, m[1], 0);

    /* allgather of two ints per rank */
    int mine[2] = {10 * c->rank + 1, -c->rank};
    int *all = malloc((size_t)c->world * sizeof mine);
    dist_allgather(c, mine, sizeof mine, all);
    for (int r = 0; r < c->world; r++)
        if (all[2 * r] != 10 * r + 1 || all[2 * r + 1] != -r) wfail("allgather", (size_t)r, all[2 * r], 10 * r + 1);
    free(all);
    dist_barrier(c);
}

/* w (3, 1000), b (7), big (300000): 1.2 MB blocks with alignment gaps; bn.running_var buffer */
static void declare_store(ParamStore *ps, int extra) {
    params_init(ps);
    param_(ps, "w", 3, 1000);
    param_(ps, "b", 7);
    param_(ps, "big", 300000);
    buffer_(ps, "bn.running_var", 5);
    if (extra) param_(ps, "extra", 3);
    params_alloc(ps);
}

/* a value per (tensor element, rank); gaps between tensors stay 0 */
static void fill_block(ParamStore *ps, int kind, float *block, int r, float rank_offset) {
    for (size_t k = 0; k < ps->n; k++) {
        Param *p = &ps->p[k];
        if (p->kind != kind) continue;
        for (size_t i = 0; i < p->t->numel; i++) block[p->offset + i] = val(p->offset + i, 0) + rank_offset * r;
    }
}

static void scenario_params(Ctx *c) {
    ParamStore ps;
    declare_store(&ps, 0);
    size_t nt = ps.n_train, nb = ps.n_buf;

    /* replicas differ by 0.25 per rank in values and 0.5 in buffers: the check must see a spread
     * of exactly 0.5*(world-1) */
    fill_block(&ps, PARAM_TRAINABLE, ps.data, c->rank, 0.25f);
    fill_block(&ps, PARAM_BUFFER, ps.buf, c->rank, 0.5f);
    for (size_t i = 0; i < nt; i++) ps.m[i] = (float)(c->rank + 1);
    double spread = dist_check_params_equal(c, &ps);
    if (spread != 0.5 * (c->world - 1)) wfail("check_params_equal before broadcast", 0, spread, 0.5 * (c->world - 1));

    dist_broadcast_params(c, &ps);
    float *want = wmalloc(nt);
    memset(want, 0, nt * sizeof(float));
    fill_block(&ps, PARAM_TRAINABLE, want, 0, 0.0f);
    wexpect("broadcast_params: values equal rank 0's", ps.data, want, nt);
    float wantb[64] = {0};
    fill_block(&ps, PARAM_BUFFER, wantb, 0, 0.0f);
    wexpect("broadcast_params: buffers equal rank 0's", ps.buf, wantb, nb);
    for (size_t i = 0; i < nt; i++)
        if (ps.m[i] != (float)(c->rank + 1)) {
            wfail("broadcast_params: moments must stay local", i, ps.m[i], c->rank + 1);
            break;
        }
    spread = dist_check_params_equal(c, &ps);
    if (spread != 0.0) wfail("check_params_equal after broadcast", 0, spread, 0.0);

    /* per-rank gradients -> their mean over ranks, gaps still zero */
    for (size_t k = 0; k < ps.n; k++) {
        Param *p = &ps.p[k];
        if (p->kind != PARAM_TRAINABLE) continue;
        for (size_t i = 0; i < p->t->numel; i++) ps.grad[p->offset + i] = val(p->offset + i, c->rank);
    }
    dist_allreduce_grads(c, &ps);
    memset(want, 0, nt * sizeof(float));
    for (size_t k = 0; k < ps.n; k++) {
        Param *p = &ps.p[k];
        if (p->kind != PARAM_TRAINABLE) continue;
        for (size_t i = 0; i < p->t->numel; i++) {
            double s = 0;
            for (int r = 0; r < c->world; r++) s += val(p->offset + i, r);
            want[p->offset + i] = (float)s * (float)(1.0 / c->world);
        }
    }
    wexpect("allreduce_grads: mean of the ranks' gradient blocks", ps.grad, want, nt);

    /* one replica drifts by one ulp in one element: the check reports exactly that ulp */
    float *drift = &ps.data[ps.p[2].offset + 12345];
    double ulp = (double)nextafterf(*drift, INFINITY) - (double)*drift;
    if (c->rank == c->world - 1) *drift = nextafterf(*drift, INFINITY);
    spread = dist_check_params_equal(c, &ps);
    if (spread != (c->world > 1 ? ulp : 0.0))
        wfail("check_params_equal sees a one-ulp drift in one element", 0, spread, c->world > 1 ? ulp : 0.0);
    free(want);
    params_free(&ps);
}

/* rank 1 fails while rank 0 waits in a barrier it would never leave */
static void scenario_abort(Ctx *c) {
    if (c->rank == 1) dist_abort(c, "injected failure at step %d", 7);
    dist_barrier(c);
    printf("rank %d: passed the barrier\n", c->rank);
}

/* rank 1 expects fewer floats than rank 0 broadcasts: MPI reports a truncation */
static void scenario_mpi_error(Ctx *c) {
    float x[64] = {0};
    dist_broadcast(c, x, c->rank == 0 ? 64 : 16, 0);
    dist_barrier(c);
    printf("rank %d: passed the barrier\n", c->rank);
}

/* rank 1 declares one more tensor than rank 0 */
static void scenario_layout(Ctx *c) {
    ParamStore ps;
    declare_store(&ps, c->rank == 1);
    dist_broadcast_params(c, &ps);
    printf("rank %d: broadcast a mismatched store\n", c->rank);
    params_free(&ps);
}

/* launched without mpirun and VERSA_MPI=1: a singleton MPI world */
static void scenario_singleton(Ctx *c) {
    int init = 0;
    MPI_Initialized(&init);
    if (!init) wfail("VERSA_MPI=1: MPI_Initialized", 0, init, 1);
    if (c->world != 1 || c->rank != 0) wfail("VERSA_MPI=1 singleton world", 0, c->world, 1);
    float x[3] = {1, 2, 3};
    dist_allreduce_mean(c, x, 3);
    if (x[0] != 1 || x[1] != 2 || x[2] != 3) wfail("singleton allreduce", 0, x[0], 1);
}

/* launched without mpirun: dist_abort is exit(1) with the rank-0 message */
static void scenario_abort_nompi(Ctx *c) {
    dist_abort(c, "plain failure %s", "without MPI");
}

static double seconds(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

typedef struct Scenario {
    const char *name;
    void (*fn)(Ctx *c);
} Scenario;

static const Scenario SCENARIOS[] = {
    {"collectives", scenario_collectives}, {"params", scenario_params},       {"abort", scenario_abort},
    {"mpi_error", scenario_mpi_error},     {"layout", scenario_layout},       {"singleton", scenario_singleton},
    {"abort_nompi", scenario_abort_nompi},
};

/* `list` is comma-separated scenario names, run in order in one MPI job; each ends with
 * "rank R: ok <name> (world W)" on every rank once all ranks passed it */
static int worker_main(const char *list, int *argc, char ***argv) {
    Ctx c;
    ctx_init(&c, 1);
    engine_threads_init();
    dist_init(&c, argc, argv);
    w_rank = c.rank;
    double total_fails = 0;
    char name[64];
    while (*list) {
        size_t len = strcspn(list, ",");
        snprintf(name, sizeof name, "%.*s", (int)(len < sizeof name ? len : sizeof name - 1), list);
        list += len + (list[len] == ',');
        w_scenario = name;
        int before = w_fails;
        double t0 = seconds();
        const Scenario *sc = NULL;
        for (size_t k = 0; k < sizeof SCENARIOS / sizeof SCENARIOS[0]; k++)
            if (!strcmp(SCENARIOS[k].name, name)) sc = &SCENARIOS[k];
        if (sc) sc->fn(&c);
        else wfail("unknown scenario", 0, 0, 0);
        /* success only once every rank has passed */
        double fails = w_fails - before;
        dist_allreduce_sum_double(&c, &fails, 1);
        if (fails == 0) printf("rank %d: ok %s (world %d) in %.2f s\n", c.rank, name, c.world, seconds() - t0);
        fflush(stdout);
        total_fails += fails;
    }
    dist_finalize();
    ctx_free(&c);
    return total_fails == 0 ? 0 : 1;
}

/* ---------------------------------------------------------------------------------------- */
/* launching workers */

typedef struct Run {
    int status;        /* exit code; 128 + signal when killed; 124 = `timeout` fired */
    double secs;
    char out[1 << 16]; /* stdout + stderr of mpirun and every rank */
} Run;

static char g_exe[4096];

/* Runs this binary as a worker (under `mpirun -np 2` when mpi), with a clean MPI environment. */
static void run_self(Run *r, const char *scenario, int mpi, const char *extra_env) {
    char scen[128];
    snprintf(scen, sizeof scen, SCENARIO_ENV "=%s", scenario);
    const char *env[] = {scen, extra_env, NULL};
    char *argv[] = {g_exe, NULL};
    SpawnResult sr = spawn_capture(argv, mpi ? 2 : 0, 60, env, r->out, sizeof r->out);
    r->status = sr.status;
    r->secs = sr.secs;
    print_message("    [%s%s] exit %d in %.2f s\n", mpi ? "mpirun -np 2: " : "", scenario, r->status, r->secs);
}

static void show(const Run *r) { print_message("---- worker output ----\n%s---- end ----\n", r->out); }

static void expect_in(const Run *r, const char *needle) {
    if (!strstr(r->out, needle)) {
        show(r);
        fail_msg("expected \"%s\" in the worker output", needle);
    }
}

static void expect_not_in(const Run *r, const char *needle) {
    if (strstr(r->out, needle)) {
        show(r);
        fail_msg("did not expect \"%s\" in the worker output", needle);
    }
}

static void need_mpirun(void) {
    if (!spawn_in_path("mpirun")) {
        print_message("    mpirun not found in PATH (Debian: openmpi-bin): skipping the 2-rank test\n");
        skip();
    }
}

static Run *run_new(void) {
    Run *r = calloc(1, sizeof(Run));
    assert_non_null(r);
    return r;
}

/* The passing 2-rank scenarios share one MPI job (start-up is most of the cost); each test then
 * checks its own lines: both ranks report ok and no check of that scenario failed. */
static Run g_ok_run;
static int g_ok_ran;

static void expect_ok(const char *scenario) {
    need_mpirun();
    if (!g_ok_ran) {
        run_self(&g_ok_run, "collectives,params", 1, NULL);
        g_ok_ran = 1;
    }
    const Run *r = &g_ok_run;
    char line[128];
    snprintf(line, sizeof line, "FAIL %s:", scenario);
    expect_not_in(r, line);
    for (int rank = 0; rank < 2; rank++) {
        snprintf(line, sizeof line, "rank %d: ok %s (world 2)", rank, scenario);
        expect_in(r, line);
    }
    if (r->status != 0) {
        show(r);
        fail_msg("mpirun: exit status %d", r->status);
    }
}

/* a failing run: non-zero exit well before the 60 s timeout, with the message (and `also`) */
static void run_fails(const char *scenario, const char *message, const char *also, const char *never) {
    need_mpirun();
    Run *r = run_new();
    run_self(r, scenario, 1, NULL);
    if (r->status == 0 || r->status == 124 || r->secs > 30.0) {
        show(r);
        fail_msg("mpirun %s: exit status %d after %.1f s (want non-zero, no timeout, < 30 s)", scenario, r->status, r->secs);
    }
    expect_in(r, message);
    if (also) expect_in(r, also);
    expect_not_in(r, never);
    free(r);
}

/* ---------------------------------------------------------------------------------------- */
/* tests */

static void unset_mpi_env(void) {
    unsetenv("OMPI_COMM_WORLD_SIZE");
    unsetenv("PMIX_RANK");
    unsetenv("PMI_RANK");
    unsetenv("VERSA_MPI");
}

/* no mpirun: world of one, MPI never initialised, every collective leaves data alone */
static void test_without_mpirun_is_noop(void **state) {
    (void)state;
    unset_mpi_env();
    Ctx c;
    ctx_init(&c, 1);
    c.rank = 5;
    c.world = 7;
    dist_init(&c, NULL, NULL);
    int init = 1;
    MPI_Initialized(&init);
    assert_int_equal(init, 0);
    assert_int_equal(c.rank, 0);
    assert_int_equal(c.world, 1);
    assert_true(dist_is_root(&c));

    float x[5] = {1.5f, -2.0f, 3.25f, 0.0f, 1e30f};
    const float x0[5] = {1.5f, -2.0f, 3.25f, 0.0f, 1e30f};
    dist_allreduce_sum(&c, x, 5);
    dist_allreduce_mean(&c, x, 5);
    dist_broadcast(&c, x, 5, 0);
    dist_barrier(&c);
    assert_memory_equal(x, x0, sizeof x);
    double d[2] = {0.5, -3.0};
    dist_allreduce_sum_double(&c, d, 2);
    dist_allreduce_max_double(&c, d, 2);
    assert_true(d[0] == 0.5 && d[1] == -3.0);
    int g[2] = {3, 4}, all[2] = {0, 0};
    dist_allgather(&c, g, sizeof g, all);
    assert_int_equal(all[0], 3);
    assert_int_equal(all[1], 4);

    ParamStore ps;
    declare_store(&ps, 0);
    fill_block(&ps, PARAM_TRAINABLE, ps.data, 0, 0.0f);
    for (size_t i = 0; i < ps.n_train; i++) ps.grad[i] = (float)i;
    dist_broadcast_params(&c, &ps);
    dist_allreduce_grads(&c, &ps);
    for (size_t i = 0; i < ps.n_train; i += 997) assert_true(ps.grad[i] == (float)i);
    assert_true(dist_check_params_equal(&c, &ps) == 0.0);
    ps.buf[2] = NAN;
    assert_true(isnan(dist_check_params_equal(&c, &ps)));

    /* misuse still fails cleanly in a world of one (longjmp instead of exit in tests) */
    jmp_buf jb;
    c.fail_jmp = &jb;
    if (setjmp(jb) == 0) {
        dist_broadcast(&c, x, 5, 1);
        fail_msg("dist_broadcast with root 1 in a world of 1 did not fail");
    }
    assert_string_equal(c.fail_msg, "rank 0: dist_broadcast: root 1 outside a world of 1");
    c.fail_jmp = NULL;

    MPI_Initialized(&init);
    assert_int_equal(init, 0);   /* nothing above started MPI */
    dist_finalize();             /* and this is a no-op */
    MPI_Initialized(&init);
    assert_int_equal(init, 0);
    params_free(&ps);
    ctx_free(&c);
}

/* without mpirun, dist_abort is "versa: rank 0: ..." and exit status 1 */
static void test_abort_without_mpirun(void **state) {
    (void)state;
    Run *r = run_new();
    run_self(r, "abort_nompi", 0, NULL);
    if (r->status != 1) show(r);
    assert_int_equal(r->status, 1);
    expect_in(r, "versa: rank 0: plain failure without MPI\n");
    expect_not_in(r, "MPI_ABORT");
    free(r);
}

/* VERSA_MPI=1 initialises MPI without mpirun (a singleton world); VERSA_MPI=0 overrides mpirun */
static void test_versa_mpi_env(void **state) {
    (void)state;
    need_mpirun();
    Run *r = run_new();
    run_self(r, "singleton", 0, "VERSA_MPI=1");
    if (r->status != 0) show(r);
    assert_int_equal(r->status, 0);
    expect_in(r, "rank 0: ok singleton (world 1)");
    free(r);
    /* under mpirun with VERSA_MPI=0 each process is its own world of one */
    r = run_new();
    run_self(r, "params", 1, "VERSA_MPI=0");
    if (r->status != 0) show(r);
    assert_int_equal(r->status, 0);
    const char *first = strstr(r->out, "rank 0: ok params (world 1)");
    assert_non_null(first);
    assert_non_null(strstr(first + 1, "rank 0: ok params (world 1)"));
    free(r);
}

/* sum of 1000 floats, mean of 8 MB in one call, sum of 300026 in 4 chunks, chunked broadcast
 * from rank 1, identical bits across ranks and calls, double sum / max, allgather */
static void test_collectives_2_ranks(void **state) {
    (void)state;
    expect_ok("collectives");
}

/* broadcast of values + buffers from rank 0, moments untouched, averaged gradient block,
 * replica check before (0.5) / after (0) / after a one-ulp drift (> 0) */
static void test_params_2_ranks(void **state) {
    (void)state;
    expect_ok("params");
}

/* one rank's dist_abort ends the job through MPI_Abort (rank 0 is blocked in a barrier) */
static void test_abort_brings_job_down(void **state) {
    (void)state;
    /* (Open MPI 4.1.4's "MPI_ABORT was invoked" banner is not asserted: mpirun's show_help
     * sometimes loses it under load) */
    run_fails("abort", "versa: rank 1: injected failure at step 7\n", NULL, "passed the barrier");
}

/* an MPI error is returned, turned into dist_abort with MPI's error string */
static void test_mpi_error_aborts(void **state) {
    (void)state;
    run_fails("mpi_error", "versa: rank 1: dist_broadcast: MPI_Bcast failed: MPI_ERR_TRUNCATE", NULL,
              "passed the barrier");
}

/* different parameter layouts are caught before any block is exchanged */
static void test_layout_mismatch_aborts(void **state) {
    (void)state;
    run_fails("layout",
              "versa: rank 1: dist_broadcast_params: parameter layout differs from rank 0 (rank 0: 4 tensors, "
              "303024 trainable + 16 buffer floats",
              NULL, "broadcast a mismatched store");
}

int main(int argc, char **argv) {
    const char *scenario = getenv(SCENARIO_ENV);
    if (scenario) return worker_main(scenario, &argc, &argv);

    ssize_t n = readlink("/proc/self/exe", g_exe, sizeof g_exe - 1);
    if (n <= 0) {
        fprintf(stderr, "test_dist: cannot read /proc/self/exe\n");
        return 1;
    }
    g_exe[n] = '\0';
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_without_mpirun_is_noop), cmocka_unit_test(test_abort_without_mpirun),
        cmocka_unit_test(test_versa_mpi_env),          cmocka_unit_test(test_collectives_2_ranks),
        cmocka_unit_test(test_params_2_ranks),         cmocka_unit_test(test_abort_brings_job_down),
        cmocka_unit_test(test_mpi_error_aborts),       cmocka_unit_test(test_layout_mismatch_aborts),
    };
    return RUN_GROUP(tests);
}
