/* dist.c — data-parallel training over MPI: start-up, collectives on flat float blocks, the
 * ParamStore helpers (broadcast at start, gradient average per step, replica check) and a
 * job-wide abort.
 *
 * The design follows engine-anchors.md B.4 (llm.c's MPI bootstrap + Horovod's CPU path):
 *   - MPI is optional at run time.  A plain `versa ...` or a test never calls MPI_Init, so it pays
 *     no start-up and opens no sockets; only an mpirun launch (or VERSA_MPI=1) initialises it.
 *   - MPI_THREAD_FUNNELED: OpenMP regions never call MPI, the main thread calls it between them.
 *   - Errors come back as return codes (MPI_ERRORS_RETURN on COMM_WORLD) and are turned into
 *     dist_abort, whose MPI_Abort kills every rank.  The default handler would also kill the job,
 *     but with MPI's message only; here the message names the rank and the call.
 *   - Messages longer than one chunk (1 GiB) are sent as several calls, so a >INT_MAX-element
 *     block works and no single message comes near the 2 GiB sizes where MPI libraries have had
 *     overflow bugs.  A ViT-B gradient block (344 MB) is one call.
 *
 * Determinism: with a fixed configuration, Open MPI's coll/tuned picks the all-reduce algorithm
 * (recursive doubling, ring, Rabenseifner, ...) from the world size and the message size only, and
 * each algorithm combines the ranks' contributions in a fixed grouping; a rank either receives
 * finished segments or performs the same additions with the operands swapped (float addition is
 * commutative).  So for a fixed world size and chunk size the summed gradient is the same bits on
 * every rank and in every run, which is what keeps the replicas identical without re-broadcasting
 * parameters.  dist_check_params_equal verifies it in debug runs. */
#include "engine.h"
#include <limits.h>
#include <math.h>
#include <mpi.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

/* MPI's state is per process, not per Ctx, so the chunk size lives here; everything else is
 * asked from MPI (MPI_Initialized / MPI_Finalized may be called at any time and start nothing). */
static size_t g_chunk = (size_t)1 << 28;   /* floats per MPI call */

/* ---------------------------------------------------------------------------------------- */
/* state and failure */

static int mpi_up(void) {
    int init = 0, fin = 0;
    MPI_Initialized(&init);
    if (!init) return 0;
    MPI_Finalized(&fin);
    return !fin;
}

void dist_abort(Ctx *c, const char *fmt, ...) {
    char msg[480];   /* leaves room for "rank N: " in c->fail_msg */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int up = mpi_up();
    int rank = c ? c->rank : 0;
    if (up && !c) MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (!up && c && c->fail_jmp) {
        snprintf(c->fail_msg, sizeof c->fail_msg, "rank %d: %s", rank, msg);
        longjmp(*c->fail_jmp, 1);
    }
    /* one write per line, so lines of different ranks do not interleave in mpirun's output */
    char line[600];
    snprintf(line, sizeof line, "versa: rank %d: %s\n", rank, msg);
    fputs(line, stderr);
    fflush(stderr);
    fflush(stdout);
    if (up) MPI_Abort(MPI_COMM_WORLD, 1);
    exit(1);
}

/* A failed MPI call (errors are returned, not fatal) -> dist_abort with MPI's own text. */
static void mpi_check(Ctx *c, int rc, const char *what) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) snprintf(text, sizeof text, "error code %d", rc);
    dist_abort(c, "%s failed: %s", what, text);
}

/* ---------------------------------------------------------------------------------------- */
/* start-up */

/* Launched by mpirun?  Open MPI sets OMPI_COMM_WORLD_SIZE and PMIX_RANK; MPICH / Slurm's PMI
 * set PMI_RANK.  VERSA_MPI=1 forces MPI on (a singleton world of one), VERSA_MPI=0 off. */
static int launched_by_mpi(void) {
    const char *force = getenv("VERSA_MPI");
    if (force && *force) return strcmp(force, "0") != 0;
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_RANK");
}

void dist_init(Ctx *c, int *argc, char ***argv) {
    c->rank = 0;
    c->world = 1;
    if (!mpi_up()) {
        if (!launched_by_mpi()) return;
        int provided = 0;
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
        if (rc != MPI_SUCCESS) {
            fprintf(stderr, "versa: MPI_Init_thread failed (code %d)\n", rc);
            exit(1);
        }
        MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        MPI_Comm_rank(MPI_COMM_WORLD, &c->rank);
        if (provided < MPI_THREAD_FUNNELED)
            dist_abort(c, "MPI provides thread level %d, FUNNELED (%d) is needed", provided, MPI_THREAD_FUNNELED);
    }
    /* a second Ctx in a process where MPI is already up just reads rank and size */
    mpi_check(c, MPI_Comm_rank(MPI_COMM_WORLD, &c->rank), "MPI_Comm_rank");
    mpi_check(c, MPI_Comm_size(MPI_COMM_WORLD, &c->world), "MPI_Comm_size");
}

void dist_finalize(void) {
    if (mpi_up()) MPI_Finalize();
}

int dist_is_root(const Ctx *c) { return c->rank == 0; }

size_t dist_set_chunk(size_t n) {
    size_t prev = g_chunk;
    if (n < 1) n = 1;
    if (n > (size_t)INT_MAX) n = (size_t)INT_MAX;
    g_chunk = n;
    return prev;
}

/* ---------------------------------------------------------------------------------------- */
/* collectives */

/* MPI counts are int: one call per chunk of at most g_chunk floats' worth of bytes. */
static void allreduce_chunked(Ctx *c, void *x, size_t n, size_t elem, MPI_Datatype type, MPI_Op op,
                              const char *what) {
    char *p = x;
    size_t chunk = g_chunk * sizeof(float) / elem;
    if (chunk == 0) chunk = 1;
    for (size_t off = 0; off < n; off += chunk) {
        size_t len = n - off < chunk ? n - off : chunk;
        mpi_check(c, MPI_Allreduce(MPI_IN_PLACE, p + off * elem, (int)len, type, op, MPI_COMM_WORLD), what);
    }
}

void dist_allreduce_sum(Ctx *c, float *x, size_t n) {
    if (c->world == 1 || n == 0) return;
    allreduce_chunked(c, x, n, sizeof(float), MPI_FLOAT, MPI_SUM, "dist_allreduce_sum: MPI_Allreduce");
}

void dist_allreduce_mean(Ctx *c, float *x, size_t n) {
    if (c->world == 1 || n == 0) return;
    allreduce_chunked(c, x, n, sizeof(float), MPI_FLOAT, MPI_SUM, "dist_allreduce_mean: MPI_Allreduce");
    /* Horovod's postscale: one multiply, exact for power-of-two worlds; elementwise, so the
     * result does not depend on the thread count */
    const float scale = (float)(1.0 / c->world);
    #pragma omp parallel for schedule(static) if (n >= ((size_t)1 << 16))
    for (size_t i = 0; i < n; i++) x[i] *= scale;
}

void dist_allreduce_sum_double(Ctx *c, double *x, size_t n) {
    if (c->world == 1 || n == 0) return;
    allreduce_chunked(c, x, n, sizeof(double), MPI_DOUBLE, MPI_SUM, "dist_allreduce_sum_double: MPI_Allreduce");
}

void dist_allreduce_max_double(Ctx *c, double *x, size_t n) {
    if (c->world == 1 || n == 0) return;
    allreduce_chunked(c, x, n, sizeof(double), MPI_DOUBLE, MPI_MAX, "dist_allreduce_max_double: MPI_Allreduce");
}

void dist_broadcast(Ctx *c, float *x, size_t n, int root) {
    if (root < 0 || root >= c->world)
        dist_abort(c, "dist_broadcast: root %d outside a world of %d", root, c->world);
    if (c->world == 1 || n == 0) return;
    for (size_t off = 0; off < n; off += g_chunk) {
        size_t len = n - off < g_chunk ? n - off : g_chunk;
        mpi_check(c, MPI_Bcast(x + off, (int)len, MPI_FLOAT, root, MPI_COMM_WORLD), "dist_broadcast: MPI_Bcast");
    }
}

void dist_barrier(Ctx *c) {
    if (c->world == 1) return;
    mpi_check(c, MPI_Barrier(MPI_COMM_WORLD), "dist_barrier: MPI_Barrier");
}

void dist_allgather(Ctx *c, const void *send, size_t bytes, void *recv) {
    if (c->world == 1) {
        memmove(recv, send, bytes);
        return;
    }
    if (bytes > (size_t)INT_MAX / (size_t)c->world)
        dist_abort(c, "dist_allgather: %zu bytes per rank is too large (small arrays only)", bytes);
    mpi_check(c, MPI_Allgather(send, (int)bytes, MPI_BYTE, recv, (int)bytes, MPI_BYTE, MPI_COMM_WORLD),
              "dist_allgather: MPI_Allgather");
}

/* ---------------------------------------------------------------------------------------- */
/* ParamStore helpers */

/* What must agree across ranks before whole blocks are exchanged: sizes, plus a hash of every
 * tensor's name, kind, shape and offset (FNV-1a 64). */
typedef struct Layout {
    uint64_t n_tensors, n_train, n_buf, has_grad, hash;
} Layout;

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 1099511628211ull;
    return h;
}

static Layout layout_of(const ParamStore *ps) {
    Layout l = {ps->n, ps->n_train, ps->n_buf, ps->grad != NULL, 14695981039346656037ull};
    for (size_t k = 0; k < ps->n; k++) {
        const Param *p = &ps->p[k];
        l.hash = fnv(l.hash, p->name, strlen(p->name) + 1);
        l.hash = fnv(l.hash, &p->kind, sizeof p->kind);
        l.hash = fnv(l.hash, &p->t->ndim, sizeof p->t->ndim);
        l.hash = fnv(l.hash, p->t->shape, (size_t)p->t->ndim * sizeof(size_t));
        l.hash = fnv(l.hash, &p->offset, sizeof p->offset);
    }
    return l;
}

/* Every rank whose layout differs from rank 0's aborts with both layouts; the others then wait
 * in the next collective until MPI_Abort ends the job. */
static void check_layout(Ctx *c, const ParamStore *ps, const char *what) {
    if (!ps->allocated) dist_abort(c, "%s: parameter store not allocated (call params_alloc first)", what);
    if (c->world == 1) return;
    Layout mine = layout_of(ps);
    Layout *all = malloc((size_t)c->world * sizeof(Layout));
    if (!all) dist_abort(c, "%s: out of memory", what);
    dist_allgather(c, &mine, sizeof mine, all);
    const Layout *r0 = &all[0];
    if (memcmp(&mine, r0, sizeof mine) != 0)
        dist_abort(c,
                   "%s: parameter layout differs from rank 0 (rank 0: %llu tensors, %llu trainable + %llu "
                   "buffer floats, hash %016llx; rank %d: %llu tensors, %llu + %llu floats, hash %016llx)",
                   what, (unsigned long long)r0->n_tensors, (unsigned long long)r0->n_train,
                   (unsigned long long)r0->n_buf, (unsigned long long)r0->hash, c->rank,
                   (unsigned long long)mine.n_tensors, (unsigned long long)mine.n_train,
                   (unsigned long long)mine.n_buf, (unsigned long long)mine.hash);
    free(all);
}

void dist_broadcast_params(Ctx *c, ParamStore *ps) {
    check_layout(c, ps, "dist_broadcast_params");
    /* the moments are not sent: zero at start, and a resumed run loads them from the same
     * checkpoint on every rank */
    dist_broadcast(c, ps->data, ps->n_train, 0);
    dist_broadcast(c, ps->buf, ps->n_buf, 0);
}

void dist_allreduce_grads(Ctx *c, ParamStore *ps) {
    if (!ps->grad && ps->n_train > 0)
        dist_abort(c, "dist_allreduce_grads: store has no gradient block (values_only)");
    /* frozen tensors and the alignment gaps hold zeros on every rank and stay zero */
    dist_allreduce_mean(c, ps->grad, ps->n_train);
}

/* spread of one block: per chunk, one MAX all-reduce of [x, -x] gives max and -min together */
static double block_spread(Ctx *c, const float *x, size_t n, float *tmp, size_t chunk) {
    double worst = 0.0;
    for (size_t off = 0; off < n; off += chunk) {
        size_t len = n - off < chunk ? n - off : chunk;
        for (size_t i = 0; i < len; i++) {
            tmp[i] = x[off + i];
            tmp[len + i] = -x[off + i];
        }
        mpi_check(c, MPI_Allreduce(MPI_IN_PLACE, tmp, (int)(2 * len), MPI_FLOAT, MPI_MAX, MPI_COMM_WORLD),
                  "dist_check_params_equal: MPI_Allreduce");
        for (size_t i = 0; i < len; i++) {
            double d = (double)tmp[i] + (double)tmp[len + i];   /* max - min */
            if (d > worst) worst = d;
        }
    }
    return worst;
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

double dist_check_params_equal(Ctx *c, const ParamStore *ps) {
    check_layout(c, ps, "dist_check_params_equal");
    /* MPI_MAX on NaN depends on operand order, so non-finite values are reported, not compared */
    double bad = !(all_finite(ps->data, ps->n_train) && all_finite(ps->buf, ps->n_buf));
    dist_allreduce_max_double(c, &bad, 1);
    if (bad != 0.0) return NAN;
    if (c->world == 1) return 0.0;
    size_t chunk = (size_t)1 << 20;
    if (chunk > g_chunk / 2) chunk = g_chunk / 2 ? g_chunk / 2 : 1;
    float *tmp = malloc(2 * chunk * sizeof(float));   /* (2, chunk): x | -x */
    if (!tmp) dist_abort(c, "dist_check_params_equal: out of memory");
    double a = block_spread(c, ps->data, ps->n_train, tmp, chunk);
    double b = block_spread(c, ps->buf, ps->n_buf, tmp, chunk);
    free(tmp);
    return a > b ? a : b;
}
