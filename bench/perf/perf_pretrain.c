/* perf_pretrain.c — one stage-1 DINOv2 step of the engine, as ssl_pretrain runs it, on random
 * crops: the same work as bench/perf/perf_pretrain_torch.py in PyTorch.
 *
 * Model: ViT-Ti/16 (LayerScale, no drop-path) with a DINO head and a separate iBOT head, each
 * 192 -> 2048 -> 2048 -> 256 -> K = 4096 prototypes.  One step:
 *   teacher (no grad, eval): 2 global crops -> CLS -> DINO head -> centered softmax targets;
 *     masked patch tokens -> iBOT head -> centered softmax targets
 *   student: 2 global crops (iBOT masks) and N local crops -> CLS of all crops -> DINO head;
 *     masked patch tokens -> iBOT head
 *   loss = DINO + 0.1 KoLeo (per global crop) + iBOT; backward (ssl_forward_backward)
 *   global gradient-norm clip at 3, AdamW over the student, EMA of the teacher (m = 0.992).
 * The masks are a fixed pattern both programs compute (odd images masked, ratio 0.1..0.5 across
 * the batch), so both sides run exactly the same number of masked tokens through the iBOT heads.
 *
 * One image = its 2 global + N local crops: images/s = batch / step time.
 * Lines starting with "RESULT" are read by bench/run_models.sh.
 *
 * Usage: perf_pretrain [--batch B] [--local N] [--k K] [--passes P] [--steps S] [--set KEY=VALUE ...]
 *        (threads: VERSA_THREADS / OMP_NUM_THREADS)
 * --set overrides any pretraining key (e.g. the paper's ViT-B/14 setting, docs/evidence-stage1.md);
 * --passes 0 runs one step and reports memory only (step arena high-water mark, peak RSS).
 * Under mpirun (-np R) the global batch B is split over the ranks (B/R each, B divisible by R),
 * the gradients are all-reduced every step as ssl_pretrain does, and rank 0 reports images/s
 * of the global batch; CPU time is rank 0's process (each rank runs the same work) and peak RSS
 * is rank 0's.  bench/run_pretrain.sh compares 2 ranks x 1 thread with 1 rank x 2 threads.
 */
#include "engine/engine.h"
#include "nn/nn.h"
#include "ssl/ssl.h"
#include "bench/perf/perf_common.h"
#include <omp.h>

typedef struct Bench {
    Ctx c;
    SslConfig s;
    ParamStore sps, tps;
    SslModel student, teacher;
    SslState st;
    SslBatch batch;
    OptimConfig oc;
    long step;
    SslLosses last;
} Bench;

static void bench_step(void *arg) {
    Bench *b = arg;
    ctx_step_begin(&b->c);
    params_zero_grad(&b->sps);
    ssl_forward_backward(&b->c, &b->s, &b->student, &b->teacher, &b->st, &b->batch, 0.04, &b->last);
    dist_allreduce_grads(&b->c, &b->sps);   /* no-op with one rank */
    clip_grad_norm(&b->sps, 3.0);
    optim_step(&b->sps, &b->oc, ++b->step, b->oc.lr, b->oc.weight_decay);
    params_ema(&b->tps, &b->sps, 0.992f);
}

/* The iBOT mask pattern shared with perf_pretrain_torch.py: image i of the 2B global crops is
 * masked when i is odd, with n = floor(N * (0.1 + 0.4 * (i/2) / (B-1))) patches; patch j is masked
 * when (37 j + 11 i) mod N < n (37 is prime to N = 196, so exactly n patches). */
static size_t make_masks(uint8_t *masks, size_t B, size_t N) {
    size_t total = 0;
    for (size_t i = 0; i < 2 * B; i++) {
        double ratio = 0.1 + 0.4 * (double)(i / 2) / (double)(B > 1 ? B - 1 : 1);
        size_t n = (i % 2) ? (size_t)((double)N * ratio) : 0;
        for (size_t j = 0; j < N; j++) {
            masks[i * N + j] = (37 * j + 11 * i) % N < n;
            total += masks[i * N + j];
        }
    }
    return total;
}

int main(int argc, char **argv) {
    int passes = 3, steps = 2, B = 16, n_local = 4, K = 4096;
    const char *sets[16];
    int nsets = 0;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--passes")) passes = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--local")) n_local = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--k")) K = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--set") && nsets < 16) sets[nsets++] = argv[i + 1];
        else {
            fprintf(stderr, "usage: %s [--batch B] [--local N] [--k K] [--passes P] [--steps S] [--set KEY=VALUE ...]\n",
                    argv[0]);
            return 2;
        }
    }
    static Bench b;
    ctx_init(&b.c, 1);
    dist_init(&b.c, &argc, &argv);
    const int root = dist_is_root(&b.c), W = b.c.world;
    if (B % W) dist_abort(&b.c, "perf_pretrain: --batch %d is not divisible by %d ranks", B, W);
    const int Bg = B;   /* global batch: images per step over all ranks */
    B /= W;
    if (!root && !freopen("/dev/null", "w", stdout)) dist_abort(&b.c, "perf_pretrain: cannot silence rank %d", b.c.rank);
    int nt = engine_threads_init();
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("== engine pretrain: %s; OPENBLAS_CORETYPE=%s, OMP_WAIT_POLICY=%s\n", engine_blas_info(),
           coretype ? coretype : "(unset)", getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "(unset)");

    Config cfg;
    Err e = {0};
    cfg_init(&cfg);
    char kv[12][64];
    int nkv = 0;
    snprintf(kv[nkv++], 64, "student.arch=vit_tiny");
    snprintf(kv[nkv++], 64, "student.patch_size=16");
    snprintf(kv[nkv++], 64, "crops.global_crops_size=224");
    snprintf(kv[nkv++], 64, "crops.local_crops_size=96");
    snprintf(kv[nkv++], 64, "crops.local_crops_number=%d", n_local);
    snprintf(kv[nkv++], 64, "train.batch_size_per_gpu=%d", B);
    snprintf(kv[nkv++], 64, "dino.head_n_prototypes=%d", K);
    snprintf(kv[nkv++], 64, "ibot.head_n_prototypes=%d", K);
    snprintf(kv[nkv++], 64, "ibot.separate_head=true");
    int rc = cfg_declare(&cfg, PRETRAIN_KEYS, PRETRAIN_N_KEYS, &e);
    for (int i = 0; i < nkv && !rc; i++) rc = cfg_override(&cfg, kv[i], 0, &e);
    for (int i = 0; i < nsets && !rc; i++) rc = cfg_override(&cfg, sets[i], 0, &e);   /* e.g. the paper config */
    if (rc || ssl_config_from(&cfg, &b.s, &e)) {
        fprintf(stderr, "perf_pretrain: %s\n", e.msg);
        return 1;
    }

    b.c.nthreads = nt;
    params_init(&b.sps);
    params_init(&b.tps);
    b.tps.values_only = 1;
    ssl_model_declare(&b.student, &b.s, &b.sps);
    ssl_model_declare(&b.teacher, &b.s, &b.tps);
    params_alloc(&b.sps);
    params_alloc(&b.tps);
    Rng r;
    rng_init(&r, 0);
    ssl_model_init(&b.student, &r);
    params_set_frozen(&b.sps, "dino_head.last_layer.weight_g", 1);
    params_set_frozen(&b.sps, "ibot_head.last_layer.weight_g", 1);
    dist_broadcast_params(&b.c, &b.sps);
    params_copy(&b.tps, &b.sps);
    b.st.dino_center = calloc((size_t)b.s.dino_k, sizeof(float));
    b.st.ibot_center = calloc((size_t)b.s.ibot_k, sizeof(float));
    b.oc = optim_adamw_default();
    b.oc.lr = 1e-4;
    b.oc.weight_decay = 0.04;

    n_local = b.s.n_local;
    K = b.s.dino_k;
    const size_t G = (size_t)b.s.global_size, L = (size_t)b.s.local_size, P = (size_t)b.s.vit.patch;
    const size_t N = (G / P) * (G / P);
    size_t ng = 2 * (size_t)B * 3 * G * G, nl = (size_t)n_local * B * 3 * L * L;
    b.batch.B = B;
    b.batch.global = malloc(ng * sizeof(float));
    b.batch.local = malloc((nl ? nl : 1) * sizeof(float));
    b.batch.masks = malloc(2 * (size_t)B * N);
    rng_init(&r, 1 + (uint64_t)b.c.rank);   /* each rank its own shard of random crops */
    rng_fill_normal(&r, b.batch.global, ng, 0.0f, 1.0f);
    rng_fill_normal(&r, b.batch.local, nl, 0.0f, 1.0f);
    size_t M = make_masks(b.batch.masks, (size_t)B, N);
    printf("   ViT (C = %d, depth %d, patch %zu) + DINO head + iBOT head (K = %d), batch %d (%d rank(s) x %d):"
           " 2 x %zu + %d x %zu crops, %zu masked tokens per rank; %.2fM student parameters, %d threads per rank\n",
           b.s.vit.embed_dim, b.s.vit.depth, P, K, Bg, W, B, G, n_local, L, M, b.sps.n_train / 1e6, nt);

    if (passes == 0) {
        /* memory only: one step (the arena and the tape grow to their size in the first step) */
        PerfTm t0 = perf_now();
        bench_step(&b);
        PerfTm t = perf_since(t0);
        printf("   one step: %.1f s wall, %.1f CPU-s; losses: dino %.4f ibot %.4f koleo %.4f\n", t.wall, t.cpu, b.last.dino,
               b.last.ibot, b.last.koleo);
        printf("   memory: %.2fM student parameters; step arena peak %.0f MB; peak RSS %.0f MB (rank 0)\n",
               b.sps.n_train / 1e6, b.c.step.peak / 1e6, perf_peak_rss_mb());
        printf("RESULT engine pretrain_mem_arena_mb %.0f\nRESULT engine pretrain_mem_peak_rss_mb %.0f\n", b.c.step.peak / 1e6,
               perf_peak_rss_mb());
        goto out;
    }
    PerfTm best = perf_run("pretrain", bench_step, &b, passes, steps, (double)Bg);
    printf("   losses: dino %.4f ibot %.4f koleo %.4f\n", b.last.dino, b.last.ibot, b.last.koleo);
    /* CPU time of the whole job: every rank's process time, summed (rank 0 reports) */
    double cpu_all = best.cpu;
    dist_allreduce_sum_double(&b.c, &cpu_all, 1);
    best.cpu = cpu_all;
    const int nt_all = nt * W;
    printf("   best: %.3f s/step wall = %.2f images/s; %.3f CPU-s/step (all ranks) = %.2f images/s core;"
           " step arena peak %.0f MB; peak RSS %.0f MB (rank 0)\n", best.wall, Bg / best.wall, best.cpu,
           Bg / (best.cpu / nt_all), b.c.step.peak / 1e6, perf_peak_rss_mb());
    perf_results("engine", W > 1 ? "pretrain_mpi" : "pretrain", best, (double)Bg, nt_all);

out:
    free(b.batch.global);
    free(b.batch.local);
    free(b.batch.masks);
    free(b.st.dino_center);
    free(b.st.ibot_center);
    ssl_model_free(&b.student);
    ssl_model_free(&b.teacher);
    params_free(&b.sps);
    params_free(&b.tps);
    ctx_free(&b.c);
    cfg_free(&cfg);
    dist_finalize();
    return 0;
}
