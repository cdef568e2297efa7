/* perf_models.c — training and inference throughput of the project's real models on the engine,
 * the same work as bench/perf/perf_models_torch.py does in PyTorch:
 *
 *   vit_s_train       ViT-S/16 at 224, batch 8: forward + backward + AdamW step
 *   vit_ti_train      ViT-Ti/16 at 224, batch 16: forward + backward + AdamW step
 *   effnet_b0_train   EfficientNet-B0 at 224, batch 16 (BN in training mode): fwd + bwd + AdamW
 *   vit_s_infer       ViT-S/16 at 224, batch 32: forward only, no gradients, eval mode
 *   student_224       the stage-2 student step (distill/train.c): EfficientNet-B0 at 224, batch 16,
 *   student_512       and at 512, batch 4 — distill_model_forward (BI-RADS 5-way and density 4-way
 *                     heads on the pooled feature), both cross-entropies + the relational KD term
 *                     against fixed (B, 384) teacher features, backward, Adam (lr 1e-4) as the paper
 *
 * The training cases put a 1000-way linear classifier on the feature (the ViT's final-norm CLS
 * token, the CNN's pooled head feature) and train with cross-entropy against fixed random labels,
 * so a step is exactly: model forward, head, loss, backward through everything, one AdamW update
 * of every parameter.  Drop-path / drop-connect are 0 on both sides (the PyTorch mirror of
 * tests/ref/models.py has no drop-connect); the ViT has LayerScale as DINOv2.
 *
 * One case per process, so peak RSS is that case's.  Lines starting with "RESULT" are read by
 * bench/run_models.sh.
 *
 * Usage: perf_models CASE [--batch B] [--passes P] [--steps S] [--profile]
 *        (threads: VERSA_THREADS / OMP_NUM_THREADS; --profile: then one step timed per phase and
 *        per backward op, training cases only)
 */
#include "engine/engine.h"
#include "nn/nn.h"
#include "distill/distill.h"
#include "bench/perf/perf_common.h"
#include <omp.h>

typedef struct Bench {
    Ctx c;
    ParamStore ps;
    int kind;               /* 0: ViT, 1: EfficientNet, 2: the stage-2 student */
    int train;
    ViT vit;
    EffNet eff;
    DistillModel student;
    Linear head;
    size_t B, H, W;
    float *x;               /* (B, 3, H, W) input */
    int32_t *labels;        /* (B) */
    int32_t *labels2;       /* (B) density labels (student) */
    float *teacher;         /* (B, STUDENT_TDIM) teacher features (student) */
    OptimConfig oc;
    long step;
} Bench;

#define STUDENT_TDIM 384   /* a ViT-S teacher's feature */

/* forward + the training loss of one step (both backbones: a 1000-way head and cross-entropy;
 * the student: its two heads' cross-entropies + relational KD, weights 1) */
static Tensor *bench_loss(Bench *b, Tensor *x) {
    Ctx *c = &b->c;
    if (b->kind == 2) {
        DistillOut o = distill_model_forward(c, &b->student, x);
        Tensor *l = op_add(c, loss_cross_entropy(c, o.logits[0], b->labels, 0.0f),
                           loss_cross_entropy(c, o.logits[1], b->labels2, 0.0f));
        return op_add(c, l, rkd_kl_loss(c, o.feat, b->teacher, STUDENT_TDIM));
    }
    Tensor *feat = b->kind == 0 ? vit_forward(c, &b->vit, x, NULL).cls : effnet_forward(c, &b->eff, x).pooled;
    Tensor *logits = linear_forward(c, &b->head, feat);          /* (B, 1000) */
    return loss_cross_entropy(c, logits, b->labels, 0.0f);
}

/* charged to its op by backward()'s node hook; the three kinds of conv have very different kernels */
static void charge_backward_node(void *arg, const Node *n, double seconds) {
    const char *op = n->op;
    if (!strcmp(op, "conv2d")) {
        const Tensor *w = n->in[1];
        op = w->shape[1] == 1 && w->shape[0] > 1 ? "conv2d depthwise"
             : w->shape[2] * w->shape[3] == 1    ? "conv2d 1x1"
                                                 : "conv2d";
    }
    perf_ops_backward(arg, op, seconds);
}

static void profiled_backward(Ctx *c, Tensor *loss, PerfOps *p) {
    c->backward_node_hook = charge_backward_node;
    c->backward_node_hook_arg = p;
    backward(c, loss);
    c->backward_node_hook = NULL;
}

/* --profile: one more step with its phases and every backward node timed (wall clock) */
static void bench_profile(Bench *b) {
    Ctx *c = &b->c;
    PerfOps bw = {0};
    double t0 = perf_clock(CLOCK_MONOTONIC);
    ctx_step_begin(c);
    params_zero_grad(&b->ps);
    Tensor *x = tensor_wrap(c, b->x, 4, TSHAPE(b->B, 3, b->H, b->W));
    Tensor *loss = bench_loss(b, x);
    double t1 = perf_clock(CLOCK_MONOTONIC);
    profiled_backward(c, loss, &bw);
    double t2 = perf_clock(CLOCK_MONOTONIC);
    optim_step(&b->ps, &b->oc, ++b->step, b->oc.lr, b->oc.weight_decay);
    double t3 = perf_clock(CLOCK_MONOTONIC);
    printf("\n== profile of one step (wall): forward %.0f ms, backward %.0f ms, optimizer %.0f ms; %zu tape nodes\n",
           1e3 * (t1 - t0), 1e3 * (t2 - t1), 1e3 * (t3 - t2), c->tape_len);
    printf("   backward by op:\n");
    for (int k = 0; k < bw.n; k++)
        printf("   %-18s %5ld nodes %8.1f ms %5.1f%%\n", bw.name[k], bw.bwd_nodes[k], 1e3 * bw.bwd[k],
               100 * bw.bwd[k] / (t2 - t1));
}

static void bench_step(void *arg) {
    Bench *b = arg;
    Ctx *c = &b->c;
    ctx_step_begin(c);
    Tensor *x = tensor_wrap(c, b->x, 4, TSHAPE(b->B, 3, b->H, b->W));
    if (!b->train) {
        if (b->kind == 0) (void)vit_forward(c, &b->vit, x, NULL);
        else (void)effnet_forward(c, &b->eff, x);
        return;
    }
    params_zero_grad(&b->ps);
    backward(c, bench_loss(b, x));
    optim_step(&b->ps, &b->oc, ++b->step, b->oc.lr, b->oc.weight_decay);
}

int main(int argc, char **argv) {
    const char *usage = "usage: perf_models vit_s_train|vit_ti_train|effnet_b0_train|vit_s_infer|student_224|student_512 "
                        "[--batch B] [--passes P] [--steps S] [--profile]\n";
    if (argc < 2) {
        fputs(usage, stderr);
        return 2;
    }
    const char *name = argv[1];
    int passes = 3, steps = 2, batch = 0, profile = 0;
    for (int i = 2; i < argc; i += 2) {
        if (!strcmp(argv[i], "--profile")) {
            profile = 1;
            i--;
            continue;
        }
        if (i + 1 >= argc) {
            fputs(usage, stderr);
            return 2;
        }
        if (!strcmp(argv[i], "--passes")) passes = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--steps")) steps = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--batch")) batch = atoi(argv[i + 1]);
        else {
            fputs(usage, stderr);
            return 2;
        }
    }
    static Bench b;
    const char *arch = NULL;
    if (!strcmp(name, "vit_s_train")) arch = "vit_small", b.train = 1, b.B = 8;
    else if (!strcmp(name, "vit_ti_train")) arch = "vit_tiny", b.train = 1, b.B = 16;
    else if (!strcmp(name, "vit_s_infer")) arch = "vit_small", b.train = 0, b.B = 32;
    else if (!strcmp(name, "effnet_b0_train")) b.kind = 1, b.train = 1, b.B = 16;
    else if (!strcmp(name, "student_224")) b.kind = 2, b.train = 1, b.B = 16, b.H = 224;
    else if (!strcmp(name, "student_512")) b.kind = 2, b.train = 1, b.B = 4, b.H = 512;
    else {
        fputs(usage, stderr);
        return 2;
    }
    if (batch > 0) b.B = (size_t)batch;
    if (!b.H) b.H = 224;
    b.W = b.H;

    int nt = engine_threads_init();
    const char *coretype = getenv("OPENBLAS_CORETYPE");
    printf("== engine %s: %s; OPENBLAS_CORETYPE=%s, OMP_WAIT_POLICY=%s\n", name, engine_blas_info(),
           coretype ? coretype : "(unset)", getenv("OMP_WAIT_POLICY") ? getenv("OMP_WAIT_POLICY") : "(unset)");
    ctx_init(&b.c, 1);
    b.c.nthreads = nt;
    params_init(&b.ps);
    b.ps.values_only = !b.train;
    Rng r;
    rng_init(&r, 0);
    int feat_dim = 0;
    if (b.kind == 0) {
        ViTConfig vc;
        vit_config(arch, 16, 224, &vc);
        vit_declare(&b.vit, &vc, &b.ps, "");
        feat_dim = vc.embed_dim;
    } else if (b.kind == 1) {
        EffNetConfig ec;
        effnet_config("efficientnet-b0", &ec);
        ec.drop_connect = 0.0f;
        effnet_declare(&b.eff, &ec, &b.ps, "");
        feat_dim = b.eff.feat_dim;
    } else if (b.kind == 2) {
        DistillConfig d;   /* only the fields distill_model_declare reads */
        memset(&d, 0, sizeof d);
        effnet_config("efficientnet-b0", &d.net);
        /* SAME padding sized for the native 224 as distill's default (the same pads at 512) */
        d.net.drop_connect = 0.0f;
        d.n_heads = 2;
        snprintf(d.heads[0].name, sizeof d.heads[0].name, "birads");
        d.heads[0].n_classes = 5;
        snprintf(d.heads[1].name, sizeof d.heads[1].name, "density");
        d.heads[1].n_classes = 4;
        distill_model_declare(&b.student, &d, &b.ps, 0);
        feat_dim = 0;
    }
    if (b.train && b.kind != 2) linear_declare(&b.head, &b.ps, "", "head", feat_dim, 1000, 1);
    params_alloc(&b.ps);
    if (b.kind == 0) vit_init(&b.vit, &r);
    else if (b.kind == 1) effnet_init(&b.eff, &r);
    else distill_model_init(&b.student, &r);
    if (b.train && b.kind != 2) init_torch_default_linear(&b.head, &r);
    b.c.training = b.train;
    ctx_set_grad(&b.c, b.train);
    b.oc = optim_adamw_default();
    b.oc.lr = 1e-4;
    b.oc.weight_decay = 0.05;
    if (b.kind == 2) {   /* the paper's stage 2: Adam 1e-4, no weight decay */
        b.oc.kind = OPTIM_ADAM;
        b.oc.weight_decay = 0.0;
    }

    size_t nx = b.B * 3 * b.H * b.W;
    b.x = malloc(nx * sizeof(float));
    b.labels = malloc(b.B * sizeof(int32_t));
    rng_fill_normal(&r, b.x, nx, 0.0f, 1.0f);
    for (size_t i = 0; i < b.B; i++) b.labels[i] = (int32_t)rng_below(&r, b.kind == 2 ? 5 : 1000);
    if (b.kind == 2) {
        b.labels2 = malloc(b.B * sizeof(int32_t));
        b.teacher = malloc(b.B * STUDENT_TDIM * sizeof(float));
        for (size_t i = 0; i < b.B; i++) b.labels2[i] = (int32_t)rng_below(&r, 4);
        rng_fill_normal(&r, b.teacher, b.B * STUDENT_TDIM, 0.0f, 1.0f);
    }
    const char *what = !b.train ? "forward, no grad, eval" : b.kind == 2 ? "forward + backward + Adam" : "forward + backward + AdamW";
    printf("   %s, batch %zu at %zux%zu, %.2fM parameters, %d threads\n", what, b.B, b.H, b.W, b.ps.n_train / 1e6, nt);

    PerfTm best = perf_run(name, bench_step, &b, passes, steps, (double)b.B);
    printf("   best: %.3f s/step wall = %.2f images/s; %.3f CPU-s/step = %.2f images/s core; step arena peak %.0f MB;"
           " peak RSS %.0f MB\n", best.wall, b.B / best.wall, best.cpu, b.B / (best.cpu / nt), b.c.step.peak / 1e6,
           perf_peak_rss_mb());
    perf_results("engine", name, best, (double)b.B, nt);
    if (profile && b.train) bench_profile(&b);

    free(b.x);
    free(b.labels);
    free(b.labels2);
    free(b.teacher);
    if (b.kind == 0) vit_free(&b.vit);
    params_free(&b.ps);
    ctx_free(&b.c);
    return 0;
}
