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
 * Usage: perf_pretrain [--batch B] [--local N] [--k K] [--passes P] [--steps S]
 *        (threads: VERSA_THREADS / OMP_NUM_THREADS)
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
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--passes")) passes = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) B = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--local")) n_local = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--k")) K = atoi(argv[i + 1]);
        else {
            fprintf(stderr, "usage: %s [--batch B] [--local N] [--k K] [--passes P] [--steps S]\n", argv[0]);
            return 2;
        }
    }
    int nt = engine_threads_init();
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("== engine pretrain: %s; OPENBLAS_CORETYPE=%s, OMP_WAIT_POLICY=%s\n", engine_blas_info(),
           coretype ? coretype : "(unset)", getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "(unset)");

    static Bench b;
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
    if (rc || ssl_config_from(&cfg, &b.s, &e)) {
        fprintf(stderr, "perf_pretrain: %s\n", e.msg);
        return 1;
    }

    ctx_init(&b.c, 1);
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
    params_copy(&b.tps, &b.sps);
    b.st.dino_center = calloc((size_t)K, sizeof(float));
    b.st.ibot_center = calloc((size_t)K, sizeof(float));
    b.oc = optim_adamw_default();
    b.oc.lr = 1e-4;
    b.oc.weight_decay = 0.04;

    const size_t G = 224, L = 96, N = (G / 16) * (G / 16);
    size_t ng = 2 * (size_t)B * 3 * G * G, nl = (size_t)n_local * B * 3 * L * L;
    b.batch.B = B;
    b.batch.global = malloc(ng * sizeof(float));
    b.batch.local = malloc((nl ? nl : 1) * sizeof(float));
    b.batch.masks = malloc(2 * (size_t)B * N);
    rng_fill_normal(&r, b.batch.global, ng, 0.0f, 1.0f);
    rng_fill_normal(&r, b.batch.local, nl, 0.0f, 1.0f);
    size_t M = make_masks(b.batch.masks, (size_t)B, N);
    printf("   ViT-Ti/16 + DINO head + iBOT head (K = %d), batch %d: 2 x %zu + %d x %zu crops, %zu masked tokens;"
           " %.2fM student parameters, %d threads\n", K, B, G, n_local, L, M, b.sps.n_train / 1e6, nt);

    PerfTm best = perf_run("pretrain", bench_step, &b, passes, steps, (double)B);
    printf("   losses: dino %.4f ibot %.4f koleo %.4f\n", b.last.dino, b.last.ibot, b.last.koleo);
    printf("   best: %.3f s/step wall = %.2f images/s; %.3f CPU-s/step = %.2f images/s core; step arena peak %.0f MB;"
           " peak RSS %.0f MB\n", best.wall, B / best.wall, best.cpu, B / (best.cpu / nt), b.c.step.peak / 1e6,
           perf_peak_rss_mb());
    perf_results("engine", "pretrain", best, (double)B, nt);

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
    return 0;
}
