/* perf_conv.c — op_conv2d throughput at EfficientNet-B0 shapes, batch 16 (NCHW, float32).
 *
 * For each layer: forward alone (grad mode off) and forward + backward through the tape, as
 * milliseconds and GFLOP/s.  FLOPs are the useful multiply-adds of the convolution, 2 per MAC:
 * forward 2*N*OC*OH*OW*(C/groups)*KH*KW; backward the same once for dW and once for dX (the stem
 * has no dX: its input is the image).  Best of --reps runs after one warm-up.
 *
 * Lines starting with "RESULT" are for bench/run.sh:  RESULT conv <layer>_<metric> <value>.
 * Usage: perf_conv [--reps R] [--batch N] [--only NAME_SUBSTRING] [--cpu]   (threads: VERSA_THREADS / OMP_NUM_THREADS)
 */
#include "engine/engine.h"
#include "bench/perf/perf_common.h"
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* wall clock, or with --cpu the process CPU time divided by the thread count: on a machine
 * shared with other jobs that estimates the uncontended time (run with OMP_WAIT_POLICY=PASSIVE
 * so threads waiting at barriers do not count).  --cpu reads low for layers of a few ms: the
 * process clock adds the other threads' time only at scheduler ticks (perf_engine.c time_calls) */
static int g_cpu_clock, g_threads = 1;
static double now(void) {
    return g_cpu_clock ? perf_clock(CLOCK_PROCESS_CPUTIME_ID) / g_threads : perf_clock(CLOCK_MONOTONIC);
}

typedef struct Layer {
    const char *name;
    int C, H, W, OC, K, stride, groups;
    int x_grad;     /* does the input need a gradient (not for the stem) */
    const char *what;
} Layer;

/* EfficientNet-B0 (TF-"SAME" padding): stem, the depthwise convs of stages 2 and 3, and the
 * pointwise expand / project / head convs */
static const Layer LAYERS[] = {
    {"stem_k3s2", 3, 224, 224, 32, 3, 2, 1, 0, "stem 3x3 s2, 3 -> 32 @224"},
    {"dw_k3s1_96", 96, 112, 112, 96, 3, 1, 96, 1, "depthwise 3x3 s1, 96 @112"},
    {"dw_k3s2_96", 96, 112, 112, 96, 3, 2, 96, 1, "depthwise 3x3 s2, 96 @112 (stage 2)"},
    {"dw_k5s1_240", 240, 28, 28, 240, 5, 1, 240, 1, "depthwise 5x5 s1, 240 @28 (stage 3)"},
    {"dw_k5s2_144", 144, 56, 56, 144, 5, 2, 144, 1, "depthwise 5x5 s2, 144 @56 (stage 3)"},
    {"pw_expand_24_144", 24, 56, 56, 144, 1, 1, 1, 1, "1x1 expand 24 -> 144 @56"},
    {"pw_project_144_24", 144, 56, 56, 24, 1, 1, 1, 1, "1x1 project 144 -> 24 @56"},
    {"pw_expand_80_480", 80, 14, 14, 480, 1, 1, 1, 1, "1x1 expand 80 -> 480 @14"},
    {"pw_head_320_1280", 320, 7, 7, 1280, 1, 1, 1, 1, "1x1 head 320 -> 1280 @7"},
};

int main(int argc, char **argv) {
    int reps = 5, N = 16;
    const char *only = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) N = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "--cpu")) g_cpu_clock = 1;
        else {
            fprintf(stderr, "usage: %s [--reps R] [--batch N] [--only NAME_SUBSTRING] [--cpu]\n", argv[0]);
            return 2;
        }
    }
    if (reps < 1 || N < 1) {
        fprintf(stderr, "perf_conv: --reps and --batch must be positive\n");
        return 2;
    }
    int nt = engine_threads_init();
    g_threads = nt;
    printf("perf_conv: op_conv2d at EfficientNet-B0 shapes, batch %d, %s, %s\n", N, engine_blas_info(),
           g_cpu_clock ? "CPU time / threads" : "wall time");
    printf("RESULT conv threads %d\n", nt);
    printf("%-20s %-38s %9s %9s %9s %9s %9s\n", "layer", "", "fwd_ms", "fwd_GF/s", "f+b_ms", "f+b_GF/s", "bwd_GF/s");

    Ctx c;
    ctx_init(&c, 1);
    Rng r;
    rng_init(&r, 7);
    double total_flops = 0, total_s = 0;
    for (size_t li = 0; li < sizeof LAYERS / sizeof *LAYERS; li++) {
        const Layer *L = &LAYERS[li];
        if (only && !strstr(L->name, only)) continue;
        size_t xn = (size_t)N * L->C * L->H * L->W, wn = (size_t)L->OC * (L->C / L->groups) * L->K * L->K;
        float *xd = malloc(xn * sizeof(float)), *wd = malloc(wn * sizeof(float));
        rng_fill_uniform(&r, xd, xn, -1, 1);
        rng_fill_uniform(&r, wd, wn, -0.1f, 0.1f);
        Conv2dArgs a = conv2d_args_same(L->H, L->W, L->K, L->K, L->stride, 1, L->groups);
        size_t OH = (size_t)(L->H + L->stride - 1) / L->stride, OW = (size_t)(L->W + L->stride - 1) / L->stride;
        size_t yn = (size_t)N * L->OC * OH * OW;
        float *dy = malloc(yn * sizeof(float));
        rng_fill_uniform(&r, dy, yn, -1, 1);
        double fwd_flops = 2.0 * N * L->OC * OH * OW * (double)(L->C / L->groups) * L->K * L->K;
        double bwd_flops = fwd_flops * (L->x_grad ? 2 : 1);

        double best_f = 1e30, best_fb = 1e30;
        for (int rep = 0; rep <= reps; rep++) {   /* rep 0 warms the arena and the caches */
            /* forward only */
            ctx_step_begin(&c);
            int prev = ctx_set_grad(&c, 0);
            Tensor *x = tensor_wrap(&c, xd, 4, TSHAPE((size_t)N, (size_t)L->C, (size_t)L->H, (size_t)L->W));
            Tensor *w = tensor_wrap(&c, wd, 4, TSHAPE((size_t)L->OC, (size_t)(L->C / L->groups), (size_t)L->K,
                                                     (size_t)L->K));
            double t0 = now();
            Tensor *y = op_conv2d(&c, x, w, NULL, a);
            double t1 = now();
            ctx_set_grad(&c, prev);
            if (y->numel != yn) {
                fprintf(stderr, "perf_conv: %s: unexpected output size\n", L->name);
                return 1;
            }
            /* forward + backward */
            ctx_step_begin(&c);
            x = tensor_wrap(&c, xd, 4, TSHAPE((size_t)N, (size_t)L->C, (size_t)L->H, (size_t)L->W));
            w = tensor_wrap(&c, wd, 4, TSHAPE((size_t)L->OC, (size_t)(L->C / L->groups), (size_t)L->K, (size_t)L->K));
            x->requires_grad = (uint8_t)L->x_grad;
            w->requires_grad = 1;
            double t2 = now();
            y = op_conv2d(&c, x, w, NULL, a);
            backward_from(&c, y, dy);
            double t3 = now();
            if (rep > 0) {
                if (t1 - t0 < best_f) best_f = t1 - t0;
                if (t3 - t2 < best_fb) best_fb = t3 - t2;
            }
        }
        double bwd_s = best_fb - best_f;
        printf("%-20s %-38s %9.2f %9.1f %9.2f %9.1f %9.1f\n", L->name, L->what, 1e3 * best_f, fwd_flops / best_f / 1e9,
               1e3 * best_fb, (fwd_flops + bwd_flops) / best_fb / 1e9, bwd_s > 0 ? bwd_flops / bwd_s / 1e9 : 0.0);
        printf("RESULT conv %s_fwd_ms %.3f\n", L->name, 1e3 * best_f);
        printf("RESULT conv %s_fwdbwd_ms %.3f\n", L->name, 1e3 * best_fb);
        printf("RESULT conv %s_fwdbwd_gflops %.2f\n", L->name, (fwd_flops + bwd_flops) / best_fb / 1e9);
        total_flops += fwd_flops + bwd_flops;
        total_s += best_fb;
        free(xd), free(wd), free(dy);
    }
    printf("all layers: forward+backward %.1f GFLOP/s\n", total_flops / total_s / 1e9);
    printf("RESULT conv all_fwdbwd_gflops %.2f\n", total_flops / total_s / 1e9);
    ctx_free(&c);
    return 0;
}
