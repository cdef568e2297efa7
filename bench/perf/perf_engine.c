/* perf_engine.c — how fast is the engine on this machine, and how close to the hardware?
 *
 *   1. which BLAS and which OpenBLAS kernel core run (engine_blas_info)
 *   2. the FMA peak: an FMA loop at the build's vector width (AVX-512 or AVX2) per thread, on 1
 *      thread and on all threads at once
 *   3. raw cblas_sgemm at the ViT-S shapes (forward NT, dX NN, dW TN) as GFLOP/s and % of peak,
 *      next to op_linear forward+backward at the same shapes through the engine
 *   4. a training step (forward + backward, no optimizer) of a 12-layer, 384-wide, 6-head
 *      pre-norm transformer over 197 tokens, batch 8, built from engine ops: images/s, GFLOP/s,
 *      the share of the step spent inside sgemm and sgemm's rate there vs standalone, peak RSS,
 *      and a per-op breakdown of one step.
 *
 * Time inside sgemm is measured by interposing cblas_sgemm in this program (the engine is linked
 * statically, so its calls bind here first) and forwarding to OpenBLAS through dlsym(RTLD_NEXT).
 *
 * Every time is taken twice: wall clock, and CPU time of the process (of the calling thread for
 * sgemm calls inside OpenMP regions).  On a machine shared with other processes the wall clock
 * measures the load as much as the code; "core" rates divide work by CPU-seconds / threads, i.e.
 * the rate the code would have with its threads' cores to itself, which stays comparable between
 * runs made at different moments (both sides use OMP_WAIT_POLICY=PASSIVE, so waiting threads sleep
 * instead of burning CPU time).  Each is the best of the repetitions, separately.
 *
 * Lines starting with "RESULT" are read by bench/run.sh to build the table next to PyTorch's.
 * Usage: perf_engine [--passes P] [--steps S] [--batch B]   (threads: VERSA_THREADS / OMP_NUM_THREADS)
 */
#include "engine/engine.h"
#include "bench/perf/perf_common.h"
#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

static double now(void) { return perf_clock(CLOCK_MONOTONIC); }
static double thread_cpu_now(void) { return perf_clock(CLOCK_THREAD_CPUTIME_ID); }
static int g_nt = 1;
/* GFLOP/s by the wall clock and with the threads' cores to ourselves */
static double gf_wall(double flops, PerfTm t) { return flops / t.wall / 1e9; }
static double gf_core(double flops, PerfTm t) { return flops / (t.cpu / g_nt) / 1e9; }

/* ---------------------------------------------------------------------------------------- */
/* cblas_sgemm interposer: time and flops of every sgemm the engine makes */

#define MAX_THREADS 256
typedef struct SgemmStats {
    double wall_s, cpu_s, flops;   /* calls outside parallel regions (OpenBLAS threads them) */
    struct { double s, cpu_s, flops; char pad[40]; } thr[MAX_THREADS];   /* calls inside them */
    long calls;
} SgemmStats;
static SgemmStats g_sg;
static int g_sg_on;

typedef void (*SgemmFn)(OPENBLAS_CONST enum CBLAS_ORDER, OPENBLAS_CONST enum CBLAS_TRANSPOSE,
                        OPENBLAS_CONST enum CBLAS_TRANSPOSE, OPENBLAS_CONST blasint, OPENBLAS_CONST blasint,
                        OPENBLAS_CONST blasint, OPENBLAS_CONST float, OPENBLAS_CONST float *, OPENBLAS_CONST blasint,
                        OPENBLAS_CONST float *, OPENBLAS_CONST blasint, OPENBLAS_CONST float, float *,
                        OPENBLAS_CONST blasint);
static SgemmFn g_real_sgemm;

void cblas_sgemm(OPENBLAS_CONST enum CBLAS_ORDER Order, OPENBLAS_CONST enum CBLAS_TRANSPOSE TransA,
                 OPENBLAS_CONST enum CBLAS_TRANSPOSE TransB, OPENBLAS_CONST blasint M, OPENBLAS_CONST blasint N,
                 OPENBLAS_CONST blasint K, OPENBLAS_CONST float alpha, OPENBLAS_CONST float *A,
                 OPENBLAS_CONST blasint lda, OPENBLAS_CONST float *B, OPENBLAS_CONST blasint ldb,
                 OPENBLAS_CONST float beta, float *C, OPENBLAS_CONST blasint ldc) {
    if (!g_sg_on) {
        g_real_sgemm(Order, TransA, TransB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    double fl = 2.0 * M * N * K;
    if (omp_in_parallel()) {   /* single-threaded here: this thread's CPU time */
        double t0 = now(), c0 = thread_cpu_now();
        g_real_sgemm(Order, TransA, TransB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        int t = omp_get_thread_num();
        g_sg.thr[t].cpu_s += thread_cpu_now() - c0;
        g_sg.thr[t].s += now() - t0;
        g_sg.thr[t].flops += fl;
    } else {                   /* threaded by OpenBLAS: the process's CPU time */
        PerfTm t0 = perf_now();
        g_real_sgemm(Order, TransA, TransB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        PerfTm dt = perf_since(t0);
        g_sg.wall_s += dt.wall;
        g_sg.cpu_s += dt.cpu;
        g_sg.flops += fl;
    }
#pragma omp atomic
    g_sg.calls++;
}

static void sgemm_stats_reset(void) { memset(&g_sg, 0, sizeof g_sg); }

/* time inside sgemm (calls in parallel regions: thread time / threads) and the flops done there */
static PerfTm sgemm_stats_total(double *flops) {
    double ts = 0, tc = 0, tf = 0;
    for (int t = 0; t < MAX_THREADS; t++) {
        ts += g_sg.thr[t].s;
        tc += g_sg.thr[t].cpu_s;
        tf += g_sg.thr[t].flops;
    }
    *flops = g_sg.flops + tf;
    return (PerfTm){g_sg.wall_s + ts / g_nt, g_sg.cpu_s + tc};
}

/* ---------------------------------------------------------------------------------------- */
/* FMA peak */

/* The widest FMA the build targets: x86-64-v4 (AVX-512) builds would otherwise report a peak
 * half of what OpenBLAS's SkylakeX kernels reach. */
#if defined(__AVX512F__)
typedef __m512 FmaVec;
#define FMA_WIDTH 16
#define FMA_ISA "AVX-512"
#define fma_set1 _mm512_set1_ps
#define fma_madd _mm512_fmadd_ps
#define fma_add _mm512_add_ps
#define fma_store _mm512_storeu_ps
#elif defined(__AVX2__) && defined(__FMA__)
typedef __m256 FmaVec;
#define FMA_WIDTH 8
#define FMA_ISA "AVX2"
#define fma_set1 _mm256_set1_ps
#define fma_madd _mm256_fmadd_ps
#define fma_add _mm256_add_ps
#define fma_store _mm256_storeu_ps
#endif

#ifdef FMA_WIDTH
/* 12 independent chains of FMAs cover the FMA latency on both pipes; the empty asm keeps every
 * chain in a register (an array would be spilled to the stack).  Returns flops. */
static double fma_loop(long iters) {
    FmaVec a0 = fma_set1(1.00f), a1 = fma_set1(1.01f), a2 = fma_set1(1.02f), a3 = fma_set1(1.03f);
    FmaVec a4 = fma_set1(1.04f), a5 = fma_set1(1.05f), a6 = fma_set1(1.06f), a7 = fma_set1(1.07f);
    FmaVec a8 = fma_set1(1.08f), a9 = fma_set1(1.09f), a10 = fma_set1(1.10f), a11 = fma_set1(1.11f);
    const FmaVec m = fma_set1(0.999999f), b = fma_set1(1e-7f);
    for (long i = 0; i < iters; i++) {
        a0 = fma_madd(a0, m, b);
        a1 = fma_madd(a1, m, b);
        a2 = fma_madd(a2, m, b);
        a3 = fma_madd(a3, m, b);
        a4 = fma_madd(a4, m, b);
        a5 = fma_madd(a5, m, b);
        a6 = fma_madd(a6, m, b);
        a7 = fma_madd(a7, m, b);
        a8 = fma_madd(a8, m, b);
        a9 = fma_madd(a9, m, b);
        a10 = fma_madd(a10, m, b);
        a11 = fma_madd(a11, m, b);
        __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7),
                         "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
    }
    FmaVec acc = fma_add(fma_add(fma_add(a0, a1), fma_add(a2, a3)), fma_add(fma_add(a4, a5), fma_add(a6, a7)));
    acc = fma_add(acc, fma_add(fma_add(a8, a9), fma_add(a10, a11)));
    float s[FMA_WIDTH];
    fma_store(s, acc);
    volatile float sink = s[0];
    (void)sink;
    return (double)iters * 12 * FMA_WIDTH * 2;
}
#else
#define FMA_WIDTH 0
#define FMA_ISA "no FMA in this build"
static double fma_loop(long iters) {
    (void)iters;
    return 0;
}
#endif

/* GFLOP/s of `threads` copies of the loop running at once, best of 5: by the wall clock, and
 * as the sum of each thread's flops / its own CPU time (the peak with the cores to ourselves) */
static void fma_peak(int threads, double *wall_gf, double *core_gf) {
    const long iters = 20000000;
    *wall_gf = *core_gf = 0;
    for (int rep = 0; rep < 5; rep++) {
        double flops = 0, core = 0, t0 = now();
#pragma omp parallel num_threads(threads) reduction(+ : flops, core)
        {
            double c0 = thread_cpu_now();
            double f = fma_loop(iters);
            flops += f;
            core += f / (thread_cpu_now() - c0);
        }
        double dt = now() - t0;
        if (flops / dt / 1e9 > *wall_gf) *wall_gf = flops / dt / 1e9;
        if (core / 1e9 > *core_gf) *core_gf = core / 1e9;
    }
}

/* ---------------------------------------------------------------------------------------- */
/* raw sgemm at the model's shapes */

typedef struct Shape {
    const char *what;
    int M, N, K, ta, tb;
} Shape;

/* Best of `reps` batches of calls of fn(arg), after a warm-up call, as the time of one call.
 * A batch lasts >= 0.1 s: the process CPU clock adds other threads' run time only at scheduler
 * ticks (4 ms here), so a call of a few ms alone reads too little CPU time and a "core" rate above
 * the FMA peak. */
static PerfTm time_calls(void (*fn)(void *), void *arg, int reps) {
    fn(arg);   /* warm-up: the first call pays page faults and thread start-up */
    PerfTm t0 = perf_now();
    fn(arg);
    double one = perf_since(t0).wall;
    long n = one > 0.1 ? 1 : (long)ceil(0.1 / fmax(one, 1e-6));
    PerfTm best = PERF_TM_WORST;
    for (int i = 0; i < reps; i++) {
        t0 = perf_now();
        for (long j = 0; j < n; j++) fn(arg);
        PerfTm t = perf_since(t0);
        perf_best(&best, (PerfTm){t.wall / (double)n, t.cpu / (double)n});
    }
    return best;
}

typedef struct SgemmCall {
    const Shape *s;
    const float *A, *B;
    float *C;
} SgemmCall;

static void sgemm_call(void *arg) {
    const SgemmCall *a = arg;
    const Shape *s = a->s;
    g_real_sgemm(CblasRowMajor, s->ta ? CblasTrans : CblasNoTrans, s->tb ? CblasTrans : CblasNoTrans, s->M, s->N,
                 s->K, 1.0f, a->A, s->ta ? s->M : s->K, a->B, s->tb ? s->K : s->N, 0.0f, a->C, s->N);
}

static PerfTm time_sgemm(const Shape *s, int reps) {
    float *A = malloc(sizeof(float) * (size_t)s->M * s->K), *B = malloc(sizeof(float) * (size_t)s->K * s->N);
    float *C = malloc(sizeof(float) * (size_t)s->M * s->N);
    Rng r;
    rng_init(&r, 1);
    rng_fill_uniform(&r, A, (size_t)s->M * s->K, -1, 1);
    rng_fill_uniform(&r, B, (size_t)s->K * s->N, -1, 1);
    PerfTm best = time_calls(sgemm_call, &(SgemmCall){s, A, B, C}, reps);
    free(A);
    free(B);
    free(C);
    return best;
}

/* op_linear forward + backward (dX, dW, db) for x (R, IN), w (OUT, IN); the inputs are filled
 * once, so a call times the op, its backward and a fresh step arena only */
typedef struct LinearCall {
    Ctx *c;
    int R, IN, OUT;
    float *x_data, *x_grad, *w_data, *w_grad, *b_data, *b_grad, *gy;
} LinearCall;

static void linear_call(void *arg) {
    const LinearCall *a = arg;
    Ctx *c = a->c;
    ctx_step_begin(c);
    Tensor *x = tensor_wrap(c, a->x_data, 2, TSHAPE((size_t)a->R, (size_t)a->IN));
    Tensor *w = tensor_wrap(c, a->w_data, 2, TSHAPE((size_t)a->OUT, (size_t)a->IN));
    Tensor *b = tensor_wrap(c, a->b_data, 1, TSHAPE((size_t)a->OUT));
    x->requires_grad = w->requires_grad = b->requires_grad = 1;
    x->grad = a->x_grad;
    w->grad = a->w_grad;
    b->grad = a->b_grad;
    backward_from(c, op_linear(c, x, w, b), a->gy);
}

static PerfTm time_linear(Ctx *c, int R, int IN, int OUT, int reps) {
    size_t nx = (size_t)R * IN, nw = (size_t)OUT * IN, ny = (size_t)R * OUT;
    LinearCall a = {c, R, IN, OUT, malloc(sizeof(float) * nx), calloc(nx, sizeof(float)), malloc(sizeof(float) * nw),
                    calloc(nw, sizeof(float)), calloc((size_t)OUT, sizeof(float)), calloc((size_t)OUT, sizeof(float)),
                    malloc(sizeof(float) * ny)};
    Rng r;
    rng_init(&r, 2);
    rng_fill_uniform(&r, a.x_data, nx, -1, 1);
    rng_fill_uniform(&r, a.w_data, nw, -0.1f, 0.1f);
    for (size_t k = 0; k < ny; k++) a.gy[k] = 1e-3f;
    PerfTm best = time_calls(linear_call, &a, reps);
    free(a.x_data);
    free(a.x_grad);
    free(a.w_data);
    free(a.w_grad);
    free(a.b_data);
    free(a.b_grad);
    free(a.gy);
    return best;
}

/* op_attention forward + backward on qkv (B, T, 3C) */
typedef struct AttentionCall {
    Ctx *c;
    int B, T, C, H;
    float *qkv_data, *qkv_grad, *gy;
} AttentionCall;

static void attention_call(void *arg) {
    const AttentionCall *a = arg;
    ctx_step_begin(a->c);
    Tensor *qkv = tensor_wrap(a->c, a->qkv_data, 3, TSHAPE((size_t)a->B, (size_t)a->T, 3 * (size_t)a->C));
    qkv->requires_grad = 1;
    qkv->grad = a->qkv_grad;
    backward_from(a->c, op_attention(a->c, qkv, a->H), a->gy);
}

static PerfTm time_attention(Ctx *c, int B, int T, int C, int H, int reps) {
    size_t nqkv = (size_t)B * T * 3 * C, ny = (size_t)B * T * C;
    AttentionCall a = {c, B, T, C, H, malloc(sizeof(float) * nqkv), calloc(nqkv, sizeof(float)),
                       malloc(sizeof(float) * ny)};
    Rng r;
    rng_init(&r, 4);
    rng_fill_normal(&r, a.qkv_data, nqkv, 0, 1);
    for (size_t k = 0; k < ny; k++) a.gy[k] = 1e-3f;
    PerfTm best = time_calls(attention_call, &a, reps);
    free(a.qkv_data);
    free(a.qkv_grad);
    free(a.gy);
    return best;
}

/* ---------------------------------------------------------------------------------------- */
/* the transformer */

typedef struct Block {
    Tensor *n1w, *n1b, *qkv_w, *qkv_b, *proj_w, *proj_b, *n2w, *n2b, *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} Block;

typedef struct Model {
    int L, C, H, T, B;
    ParamStore ps;
    Block blk[32];
    Tensor *nw, *nb;
} Model;

static void model_init(Model *m, int L, int C, int H, int T, int B) {
    m->L = L, m->C = C, m->H = H, m->T = T, m->B = B;
    params_init(&m->ps);
    size_t c = (size_t)C;
    char name[96];
#define P(field, ...) (snprintf(name, sizeof name, "blocks.%d." field, l), param_(&m->ps, name, __VA_ARGS__))
    for (int l = 0; l < L; l++) {
        Block *b = &m->blk[l];
        b->n1w = P("norm1.weight", c);
        b->n1b = P("norm1.bias", c);
        b->qkv_w = P("attn.qkv.weight", 3 * c, c);
        b->qkv_b = P("attn.qkv.bias", 3 * c);
        b->proj_w = P("attn.proj.weight", c, c);
        b->proj_b = P("attn.proj.bias", c);
        b->n2w = P("norm2.weight", c);
        b->n2b = P("norm2.bias", c);
        b->fc1_w = P("mlp.fc1.weight", 4 * c, c);
        b->fc1_b = P("mlp.fc1.bias", 4 * c);
        b->fc2_w = P("mlp.fc2.weight", c, 4 * c);
        b->fc2_b = P("mlp.fc2.bias", c);
    }
#undef P
    m->nw = param_(&m->ps, "norm.weight", c);
    m->nb = param_(&m->ps, "norm.bias", c);
    params_alloc(&m->ps);
    Rng r;
    rng_init(&r, 0);
    for (size_t k = 0; k < m->ps.n; k++) {
        Tensor *t = m->ps.p[k].t;
        const char *nm = m->ps.p[k].name;
        if (strstr(nm, "norm") && strstr(nm, "weight")) {
            for (size_t i = 0; i < t->numel; i++) t->data[i] = 1.0f;
        } else if (strstr(nm, "weight")) rng_fill_trunc_normal(&r, t->data, t->numel, 0.02f);
        else memset(t->data, 0, t->numel * sizeof(float));
    }
}

static PerfOps *g_prof;   /* per-op wall times, filled when profiling */
static double g_t_last;

static void prof_mark(const char *name) {   /* charge the time since the last mark to `name` */
    if (!g_prof) return;
    double t = now();
    int k = perf_ops_row(g_prof, name);
    if (k >= 0) g_prof->fwd[k] += t - g_t_last;
    g_t_last = t;
}

static Tensor *model_forward(Ctx *c, Model *m, Tensor *x) {
    g_t_last = now();
    for (int l = 0; l < m->L; l++) {
        Block *b = &m->blk[l];
        Tensor *h = op_layernorm(c, x, b->n1w, b->n1b, 1e-6f);
        prof_mark("layernorm");
        Tensor *qkv = op_linear(c, h, b->qkv_w, b->qkv_b);   // (B, T, 3C)
        prof_mark("linear");
        Tensor *a = op_attention(c, qkv, m->H);              // (B, T, C)
        prof_mark("attention");
        a = op_linear(c, a, b->proj_w, b->proj_b);
        prof_mark("linear");
        x = op_add(c, x, a);
        prof_mark("add");
        h = op_layernorm(c, x, b->n2w, b->n2b, 1e-6f);
        prof_mark("layernorm");
        h = op_linear(c, h, b->fc1_w, b->fc1_b);             // (B, T, 4C)
        prof_mark("linear");
        h = op_gelu(c, h);
        prof_mark("gelu");
        h = op_linear(c, h, b->fc2_w, b->fc2_b);
        prof_mark("linear");
        x = op_add(c, x, h);
        prof_mark("add");
    }
    Tensor *y = op_layernorm(c, x, m->nw, m->nb, 1e-6f);
    prof_mark("layernorm");
    return y;
}

/* backward_from, with each node's time charged to its op when profiling */
static void charge_backward_node(void *arg, const Node *n, double seconds) { perf_ops_backward(arg, n->op, seconds); }

static void timed_backward(Ctx *c, Tensor *out, const float *g) {
    c->backward_node_hook = g_prof ? charge_backward_node : NULL;
    c->backward_node_hook_arg = g_prof;
    backward_from(c, out, g);
    c->backward_node_hook = NULL;
}

static size_t g_arena_after_forward;   /* step arena bytes in use when backward starts */

static PerfTm train_step(Ctx *c, Model *m, const float *x_data, const float *g) {
    PerfTm t0 = perf_now();
    ctx_step_begin(c);
    params_zero_grad(&m->ps);
    Tensor *x = tensor_wrap(c, (float *)x_data, 3, TSHAPE((size_t)m->B, (size_t)m->T, (size_t)m->C));
    Tensor *y = model_forward(c, m, x);
    g_arena_after_forward = c->step.used;
    timed_backward(c, y, g);
    return perf_since(t0);
}

/* flops of one forward (products only: linears and attention's two matmuls) */
static double model_forward_flops(const Model *m) {
    double R = (double)m->B * m->T, C = m->C, T = m->T;
    return m->L * (2.0 * R * 12 * C * C + 4.0 * m->B * T * T * C);
}

/* ---------------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    int passes = 3, steps = 3, B = 8;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--passes")) passes = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) B = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: %s [--passes P] [--steps S] [--batch B]\n", argv[0]);
            return 2;
        }
    }
    g_real_sgemm = (SgemmFn)dlsym(RTLD_NEXT, "cblas_sgemm");
    if (!g_real_sgemm) {
        fprintf(stderr, "perf_engine: cannot find OpenBLAS's cblas_sgemm: %s\n", dlerror());
        return 1;
    }
    int nt = engine_threads_init();
    g_nt = nt;
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("== engine: %s\n", engine_blas_info());
    printf("   OPENBLAS_CORETYPE=%s, OMP_WAIT_POLICY=%s\n", coretype ? coretype : "(unset)",
           getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "(unset)");
    printf("   rates: \"wall\" by the clock; \"core\" = work / (CPU-seconds / %d threads), the rate with the\n"
           "   cores to ourselves (the machine may be shared); best of the repetitions for each\n", nt);
    printf("RESULT engine blas %s\n", engine_blas_info());
    printf("RESULT engine threads %d\n", nt);

    /* 2. FMA peak */
    double pk1_wall, pk1_core, pk_wall, pk_core;
    fma_peak(1, &pk1_wall, &pk1_core);
    fma_peak(nt, &pk_wall, &pk_core);
    printf("\n== FMA peak (%s, 12 chains of %d-wide FMA), GFLOP/s: 1 thread %.1f core / %.1f wall; "
           "%d threads %.1f core / %.1f wall\n", FMA_ISA, FMA_WIDTH, pk1_core, pk1_wall, nt, pk_core, pk_wall);
    printf("RESULT engine peak_gflops %.1f\n", pk_core);
    const double peak = pk_core;

    /* 3. sgemm at the model's shapes: R = B*T rows; the product C = A·B as M x N x K */
    int R = B * 197;
    const Shape shapes[] = {
        {"fwd qkv   x·Wᵀ", R, 1152, 384, 0, 1}, {"fwd proj  x·Wᵀ", R, 384, 384, 0, 1},
        {"fwd fc1   x·Wᵀ", R, 1536, 384, 0, 1}, {"fwd fc2   x·Wᵀ", R, 384, 1536, 0, 1},
        {"dX  qkv   dY·W", R, 384, 1152, 0, 0}, {"dX  proj  dY·W", R, 384, 384, 0, 0},
        {"dX  fc1   dY·W", R, 384, 1536, 0, 0}, {"dX  fc2   dY·W", R, 1536, 384, 0, 0},
        {"dW  qkv   dYᵀ·X", 1152, 384, R, 1, 0}, {"dW  proj  dYᵀ·X", 384, 384, R, 1, 0},
        {"dW  fc1   dYᵀ·X", 1536, 384, R, 1, 0}, {"dW  fc2   dYᵀ·X", 384, 1536, R, 1, 0},
    };
    enum { N_SHAPES = sizeof shapes / sizeof shapes[0] };
    PerfTm sg_t[N_SHAPES];
    printf("\n== cblas_sgemm at ViT-S shapes (R = %d rows), best of 5\n", R);
    printf("   %-18s %16s  %13s  %13s\n", "product", "M x N x K", "GFLOP/s core", "GFLOP/s wall");
    double sum_fl = 0;
    PerfTm sum_t = {0, 0};
    for (int k = 0; k < N_SHAPES; k++) {
        const Shape *s = &shapes[k];
        double fl = 2.0 * s->M * s->N * s->K;
        sg_t[k] = time_sgemm(s, 5);
        sum_fl += fl;
        sum_t.wall += sg_t[k].wall;
        sum_t.cpu += sg_t[k].cpu;
        printf("   %-18s %5d x%5d x%5d  %6.1f %5.1f%%  %6.1f\n", s->what, s->M, s->N, s->K, gf_core(fl, sg_t[k]),
               100 * gf_core(fl, sg_t[k]) / peak, gf_wall(fl, sg_t[k]));
    }
    /* flop-weighted over the 12 products: what one layer's products average */
    double sg_core = gf_core(sum_fl, sum_t);
    printf("   %-37s %6.1f %5.1f%%  %6.1f\n", "all 12 (flop-weighted)", sg_core, 100 * sg_core / peak,
           gf_wall(sum_fl, sum_t));
    printf("RESULT engine sgemm_gflops %.1f\n", sg_core);

    Ctx c;
    ctx_init(&c, 1);
    c.nthreads = nt;
    printf("\n== op_linear forward + backward (its 3 products + bias) vs raw sgemm of the same 3 products, "
           "best of 5\n");
    const int lin[4][2] = {{384, 1152}, {384, 384}, {384, 1536}, {1536, 384}};
    const char *lin_name[4] = {"qkv", "proj", "fc1", "fc2"};
    double lin_fl = 0;
    PerfTm lin_t = {0, 0}, raw_t = {0, 0};
    for (int k = 0; k < 4; k++) {
        PerfTm t = time_linear(&c, R, lin[k][0], lin[k][1], 5), raw = {0, 0};
        for (int j = 0; j < 3; j++) {   /* shapes k, k+4, k+8: this layer's forward, dX and dW */
            raw.wall += sg_t[k + 4 * j].wall;
            raw.cpu += sg_t[k + 4 * j].cpu;
        }
        double fl = 3 * 2.0 * R * lin[k][0] * lin[k][1];
        lin_fl += fl;
        lin_t.wall += t.wall;
        lin_t.cpu += t.cpu;
        raw_t.wall += raw.wall;
        raw_t.cpu += raw.cpu;
        printf("   linear %-5s %4d -> %4d: %6.1f GFLOP/s core = %5.1f%% of raw sgemm; wall %6.1f = %5.1f%%\n",
               lin_name[k], lin[k][0], lin[k][1], gf_core(fl, t), 100 * raw.cpu / t.cpu, gf_wall(fl, t),
               100 * raw.wall / t.wall);
    }
    printf("   all four:              %6.1f GFLOP/s core = %5.1f%% of raw sgemm; wall %6.1f = %5.1f%%\n",
           gf_core(lin_fl, lin_t), 100 * raw_t.cpu / lin_t.cpu, gf_wall(lin_fl, lin_t), 100 * raw_t.wall / lin_t.wall);
    printf("RESULT engine linear_gflops %.1f\n", gf_core(lin_fl, lin_t));
    printf("RESULT engine linear_gflops_wall %.1f\n", gf_wall(lin_fl, lin_t));
    printf("RESULT engine linear_vs_sgemm_pct %.1f\n", 100 * raw_t.cpu / lin_t.cpu);

    /* attention: forward QKᵀ and PV, backward four more products: 12 B T² C flops */
    PerfTm at = time_attention(&c, B, 197, 384, 6, 5);
    double at_fl = 12.0 * B * 197 * 197 * 384;
    printf("\n== op_attention (B=%d, T=197, C=384, 6 heads) forward + backward, best of 5: %.1f GFLOP/s core, "
           "%.1f wall\n", B, gf_core(at_fl, at), gf_wall(at_fl, at));
    printf("RESULT engine attention_gflops %.1f\n", gf_core(at_fl, at));
    printf("RESULT engine attention_gflops_wall %.1f\n", gf_wall(at_fl, at));

    /* 4. training step */
    const int L = 12, C = 384, H = 6, T = 197;
    Model m;
    model_init(&m, L, C, H, T, B);
    size_t nx = (size_t)B * T * C;
    float *x = malloc(nx * sizeof(float)), *g = malloc(nx * sizeof(float));
    Rng r;
    rng_init(&r, 3);
    rng_fill_normal(&r, x, nx, 0, 1);
    for (size_t i = 0; i < nx; i++) g[i] = 1.0f / (float)nx;   /* d(mean(out)) */
    double fwd_fl = model_forward_flops(&m), step_fl = 3 * fwd_fl;
    printf("\n== training step: %d layers, C=%d, %d heads, T=%d, batch %d, %.1fM params; forward + backward, "
           "no optimizer\n", L, C, H, T, B, m.ps.n_train / 1e6);
    printf("   %.1f GFLOP per step (products only: 3 x %.1f forward)\n", step_fl / 1e9, fwd_fl / 1e9);
    train_step(&c, &m, x, g);   /* warm-up: grows the arena and the tape */
    PerfTm best = PERF_TM_WORST, best_sg = PERF_TM_WORST;
    double best_sg_fl = 0;
    for (int p = 0; p < passes; p++) {
        sgemm_stats_reset();
        g_sg_on = 1;
        PerfTm t = {0, 0};
        for (int s = 0; s < steps; s++) {
            PerfTm ts = train_step(&c, &m, x, g);
            t.wall += ts.wall / steps;
            t.cpu += ts.cpu / steps;
        }
        g_sg_on = 0;
        double sg_fl;
        PerfTm sg = sgemm_stats_total(&sg_fl);
        printf("   pass %d: %.3f s/step wall, %.3f CPU-s/step, %.2f images/s wall\n", p + 1, t.wall, t.cpu,
               B / t.wall);
        if (t.cpu < best.cpu) {   /* the sgemm split of the pass that used the least CPU */
            best_sg = (PerfTm){sg.wall / steps, sg.cpu / steps};
            best_sg_fl = sg_fl / steps;
        }
        perf_best(&best, t);
    }
    double core_step = best.cpu / nt;   /* seconds per step with the cores to ourselves */
    double sg_step_core = gf_core(best_sg_fl, best_sg);
    printf("   best: %.3f s/step wall = %.2f images/s; %.3f CPU-s/step = %.2f images/s core\n", best.wall,
           B / best.wall, best.cpu, B / core_step);
    printf("   achieved %.1f GFLOP/s core (%.1f%% of FMA peak), %.1f wall\n", gf_core(step_fl, best),
           100 * gf_core(step_fl, best) / peak, gf_wall(step_fl, best));
    printf("   in sgemm: %.1f%% of the step's CPU time, at %.1f GFLOP/s core = %.1f%% of the standalone rate (%.1f)\n",
           100 * best_sg.cpu / best.cpu, sg_step_core, 100 * sg_step_core / sg_core, sg_core);
    printf("   step arena: %.0f MB after forward, %.0f MB peak (activation gradients stay until the step ends); "
           "peak RSS %.0f MB\n", g_arena_after_forward / 1e6, c.step.peak / 1e6, perf_peak_rss_mb());
    printf("RESULT engine step_s %.4f\n", best.wall);
    printf("RESULT engine step_cpu_s %.4f\n", best.cpu);
    printf("RESULT engine images_per_s %.2f\n", B / best.wall);
    printf("RESULT engine images_per_s_core %.2f\n", B / core_step);
    printf("RESULT engine step_gflops %.1f\n", gf_core(step_fl, best));
    printf("RESULT engine sgemm_share_pct %.1f\n", 100 * best_sg.cpu / best.cpu);
    printf("RESULT engine sgemm_in_step_pct %.1f\n", 100 * sg_step_core / sg_core);
    printf("RESULT engine peak_rss_mb %.0f\n", perf_peak_rss_mb());

    /* per-op breakdown of one more step (timing each op adds a little overhead) */
    PerfOps prof = {0};
    g_prof = &prof;
    PerfTm tp = train_step(&c, &m, x, g);
    g_prof = NULL;
    printf("\n== per-op wall time of one step (%.3f s, profiled)\n   %-12s %9s %9s %7s\n", tp.wall, "op", "fwd ms",
           "bwd ms", "share");
    for (int k = 0; k < prof.n; k++)
        printf("   %-12s %9.1f %9.1f %6.1f%%\n", prof.name[k], 1e3 * prof.fwd[k], 1e3 * prof.bwd[k],
               100 * (prof.fwd[k] + prof.bwd[k]) / tp.wall);

    free(x);
    free(g);
    params_free(&m.ps);
    ctx_free(&c);
    return 0;
}
