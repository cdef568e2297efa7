/*
 * engine.h — the tensor engine of versamammo.c: tensors and views, arenas, the autograd tape,
 * ops with hand-written backward kernels, losses, parameter blocks, optimizers, schedules, RNG,
 * checkpoints, configs and threads.  Everything above this layer (nn/, data/, ssl/, distill/, bench/)
 * builds on this one header.
 *
 * The model in one paragraph (llm.c's memory model + ggml's tape):
 *   - Parameters, their gradients and optimizer state live in flat blocks owned by a ParamStore,
 *     so zero-grad, an optimizer step, a checkpoint and a gradient all-reduce are one loop each.
 *   - Activations live in the step arena of a Ctx; `ctx_step_begin` resets it, so the hot loop
 *     never mallocs once the arena has grown to the size one step needs.
 *   - Every op_* call computes its output eagerly and, when grad mode is on and an input needs a
 *     gradient, records a Node on the tape.  `backward(ctx, loss)` replays the tape in reverse;
 *     each backward kernel *adds* into its inputs' gradients, so a tensor used twice gets the sum.
 *
 * Layout: shape[ndim-1] is innermost (PyTorch/NCHW convention).  Strides are in elements.
 * Gradient buffers are always contiguous in `shape`, even for strided views.
 */
#ifndef VERSA_ENGINE_H
#define VERSA_ENGINE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <setjmp.h>

#define VT_MAX_DIMS 5

/* ------------------------------------------------------------------------------------------ */
/* Errors                                                                                      */

/* Functions that can fail on user input return a nonzero int and fill an Err with one line,
 * e.g. "checkpoint.h5: missing tensor 'blocks.0.norm1.weight'". */
typedef struct Err {
    char msg[512];
} Err;

int err_set(Err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3))); /* returns 1 */

/* Allocation for bookkeeping whose size is already validated (tables, row lists, buffers sized
 * from checked headers): out of memory prints "versa: out of memory (N bytes)" and exits with
 * status 1 instead of returning NULL to a caller that would crash on it. */
void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);

/* Levenshtein distance of a and b if it is at most max, else max + 1; strings over 255 bytes
 * count as far (for "did you mean"
 * suggestions: engine/config.c) */
size_t edit_distance_within(const char *a, const char *b, size_t max);

/* mkdir -p: 0, or 1 with "<folder>: cannot create folder: <reason>" (engine/fs.c) */
int make_dirs(const char *path, Err *e);

/* ------------------------------------------------------------------------------------------ */
/* Arena: chained bump allocator, 64-byte aligned.  `arena_reset` keeps every chunk, so once a
 * step has run the arena never calls malloc again. */

typedef struct ArenaChunk ArenaChunk;
typedef struct Arena {
    ArenaChunk *head;     /* first chunk */
    ArenaChunk *cur;      /* chunk being filled */
    size_t chunk_bytes;   /* default size of a new chunk */
    size_t used, peak;    /* bytes handed out since reset; high-water mark */
} Arena;

void arena_init(Arena *a, size_t chunk_bytes);
void *arena_alloc(Arena *a, size_t bytes);        /* uninitialised, 64-byte aligned */
void *arena_calloc(Arena *a, size_t bytes);       /* zeroed */
void arena_reset(Arena *a);
void arena_free(Arena *a);
/* Scoped reuse: everything allocated after a mark is given back by arena_release (the chunks
 * stay).  For forward passes that record nothing (no-grad inference): only memory no live tensor
 * or tape node refers to may be released. */
typedef struct ArenaMark {
    ArenaChunk *chunk;    /* chunk being filled at the mark (NULL: nothing allocated yet) */
    size_t off, used;
} ArenaMark;
ArenaMark arena_mark(const Arena *a);
void arena_release(Arena *a, ArenaMark m);
/* 1 when p points into memory handed out after mark m (what arena_release(a, m) gives back) */
int arena_since_mark(const Arena *a, ArenaMark m, const void *p);

/* ------------------------------------------------------------------------------------------ */
/* RNG: Philox4x32-10, counter based.  The whole state is (seed, counter), saved in checkpoints,
 * so a resumed run draws exactly the numbers the uninterrupted run would have drawn. */

typedef struct Rng {
    uint64_t seed;
    uint64_t counter;   /* number of 128-bit blocks consumed */
    uint32_t buf[4];
    int buf_left;       /* unread words in buf (taken from the end) */
} Rng;

void rng_init(Rng *r, uint64_t seed);
Rng rng_fork(const Rng *r, uint64_t stream);    /* independent generator for a sub-stream */
uint32_t rng_u32(Rng *r);
float rng_uniform(Rng *r);                      /* [0, 1) */
float rng_normal(Rng *r);                       /* N(0, 1) */
uint32_t rng_below(Rng *r, uint32_t n);         /* uniform in [0, n) */
void rng_fill_uniform(Rng *r, float *x, size_t n, float lo, float hi);
void rng_fill_normal(Rng *r, float *x, size_t n, float mean, float std);
void rng_fill_trunc_normal(Rng *r, float *x, size_t n, float std); /* clipped at +-2 std */
void rng_shuffle(Rng *r, uint32_t *idx, size_t n);

/* ------------------------------------------------------------------------------------------ */
/* Tensors */

typedef struct Tensor {
    float *data;                      /* first element; a view points inside its base */
    float *grad;                      /* contiguous, `numel` floats; NULL until needed */
    size_t shape[VT_MAX_DIMS];
    ptrdiff_t stride[VT_MAX_DIMS];    /* in elements */
    int ndim;
    size_t numel;
    uint8_t requires_grad;            /* a gradient must flow into this tensor */
    uint8_t is_param;                 /* lives in a ParamStore; grad points into its flat block */
    const char *name;                 /* parameter name (state_dict key) or NULL */
} Tensor;

/* ------------------------------------------------------------------------------------------ */
/* Context: arenas, tape, grad mode, RNG, threads, distributed rank.  No other global state. */

typedef struct Ctx Ctx;
typedef struct Node Node;
typedef void (*BackwardFn)(Ctx *c, Node *n);

#define NODE_MAX_IN 4
struct Node {
    const char *op;              /* op name for messages */
    BackwardFn backward;
    Tensor *out;
    Tensor *in[NODE_MAX_IN];
    int n_in;
    void *saved;                 /* op-specific saved state, in the step arena */
    float f[6];                  /* small scalar arguments */
    long i[8];                   /* small integer arguments */
};

struct Ctx {
    Arena step;                  /* activations, tape-saved state, activation grads */
    Node *tape;                  /* grows in the first step only */
    size_t tape_len, tape_cap;
    int grad_enabled;            /* 0 inside no_grad sections */
    int training;                /* dropout / drop-path / batch-norm batch statistics */
    Rng rng;                     /* dropout, drop-path */
    int nthreads;
    int rank, world;             /* MPI rank and size (0, 1 without MPI) */
    jmp_buf *fail_jmp;           /* tests: ctx_fail longjmps here instead of exiting */
    char fail_msg[512];
    /* activation-gradient buffers that backward has finished with (their tensor's node ran),
     * reused by tensor_grad for later gradients of the same step; emptied by ctx_step_begin */
    void *grad_free;
    int sync_bn;                 /* training-mode batch norm uses the global batch's statistics
                                  * over all MPI ranks (op_batchnorm_sync); 0: each rank's own */
    /* profilers (bench/perf): called by backward_from after each node's backward with its wall
     * time, so a profile times the real backward (buffer recycling included); NULL: off */
    void (*backward_node_hook)(void *arg, const Node *n, double seconds);
    void *backward_node_hook_arg;
};

void ctx_init(Ctx *c, uint64_t seed);
void ctx_free(Ctx *c);
void ctx_step_begin(Ctx *c);     /* reset the step arena and the tape */
int ctx_set_grad(Ctx *c, int enabled);   /* returns the previous mode */
/* Programmer or shape error inside an op: one line on stderr, exit 1 (or longjmp in tests). */
void ctx_fail(Ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* Threads: VERSA_THREADS, else OMP_NUM_THREADS, else the core count.  Sets OpenMP (which the
 * OpenMP build of OpenBLAS shares). */
int engine_threads_init(void);
const char *engine_blas_info(void);  /* e.g. "OpenBLAS 0.3.21 SkylakeX, OpenMP, 2 threads" */
/* OpenBLAS picks its kernels from the CPU model; a model it does not know (a virtual machine's
 * "Intel Xeon Processor") gets the generic Prescott (SSE3) kernels: on such a VM with AVX-512,
 * one-thread sgemm at 768^3 ran at 23 GFLOP/s against 135 with SkylakeX's (one-thread ViT-Ti
 * pretraining over its first 50 iterations: 5.9 vs 21 img/s).  engine_blas_better_core: the OPENBLAS_CORETYPE value this
 * CPU deserves when `core` is weaker than it (SkylakeX with AVX-512F, else Haswell or Zen with
 * AVX2), NULL when `core` is already one of those or the CPU has neither.
 * engine_blas_advice: a one-line note naming OPENBLAS_CORETYPE when the running library is on a
 * weaker core and the variable is unset (a value the user set is respected), else NULL. */
const char *engine_blas_better_core(const char *core, int has_avx2, int has_avx512f, int is_amd);
const char *engine_blas_advice(void);

/* ---- creating tensors (step arena unless noted) ---- */
Tensor *tensor_new(Ctx *c, int ndim, const size_t *shape);          /* uninitialised */
Tensor *tensor_zeros(Ctx *c, int ndim, const size_t *shape);
Tensor *tensor_from(Ctx *c, int ndim, const size_t *shape, const float *src); /* copies */
Tensor *tensor_wrap(Ctx *c, float *data, int ndim, const size_t *shape);    /* no copy */
#define TSHAPE(...) ((const size_t[]){__VA_ARGS__})
#define TNDIM(...) ((int)(sizeof((size_t[]){__VA_ARGS__}) / sizeof(size_t)))
#define tensor_new_(c, ...) tensor_new((c), TNDIM(__VA_ARGS__), TSHAPE(__VA_ARGS__))
#define tensor_zeros_(c, ...) tensor_zeros((c), TNDIM(__VA_ARGS__), TSHAPE(__VA_ARGS__))

int tensor_is_contiguous(const Tensor *t);
size_t tensor_offset(const Tensor *t, const size_t *idx);   /* element offset of an index */
float tensor_get(const Tensor *t, const size_t *idx);
void tensor_copy_to(const Tensor *t, float *dst);           /* gather into a contiguous buffer */
const char *tensor_shape_str(const Tensor *t, char *buf, size_t n); /* "(2,3,4)" */
float *tensor_grad(Ctx *c, Tensor *t);   /* the gradient buffer, allocated zeroed on first use */
/* Scratch for backward kernels: n floats (uninitialised) from the buffers backward has recycled
 * when one fits, else from the step arena.  Hand it back with ctx_scratch_release (same n) when
 * the kernel is done with it.  Backward only: a no-grad forward may give arena memory back with
 * arena_release, which must not leave any of it on the recycled list. */
float *ctx_scratch(Ctx *c, size_t n);
void ctx_scratch_release(Ctx *c, float *p, size_t n);
/* Drops recycled buffers that lie after mark m from the list, before arena_release(&c->step, m)
 * (op_checkpoint's backward releases the memory of its recomputed segment). */
void ctx_scratch_forget_since(Ctx *c, ArenaMark m);

/* ---- views: free, share data; recorded on the tape so gradients flow ---- */
Tensor *op_reshape(Ctx *c, Tensor *x, int ndim, const size_t *shape); /* contiguous x only; one
                                                          dim may be (size_t)-1 to infer it */
#define op_reshape_(c, x, ...) op_reshape((c), (x), TNDIM(__VA_ARGS__), TSHAPE(__VA_ARGS__))
Tensor *op_permute(Ctx *c, Tensor *x, const int *perm);
Tensor *op_transpose(Ctx *c, Tensor *x, int d0, int d1);
Tensor *op_slice(Ctx *c, Tensor *x, int dim, size_t start, size_t end); /* [start, end) */
Tensor *op_contiguous(Ctx *c, Tensor *x);   /* x itself when already contiguous, else a copy */

/* ---- node recording, for op implementations ---- */
int op_needs_grad(Ctx *c, Tensor *const *in, int n_in);
/* Marks out->requires_grad and appends a node when any input needs a gradient and grad mode is
 * on; returns the node (to fill saved/f/i) or NULL when nothing is recorded. */
Node *op_record(Ctx *c, const char *op, BackwardFn bw, Tensor *out, Tensor *const *in, int n_in);

/* ---- autograd ---- */
/* Seeds d(loss)=1 (loss must have one element) and runs every recorded node in reverse.  Once a
 * node has run, its output's gradient is complete and used by nothing else: the buffer is
 * recycled for later gradients (out->grad becomes NULL), so the gradients of leaves, parameters
 * and the seed tensor are the ones to read after backward, not those of intermediate outputs. */
void backward(Ctx *c, Tensor *loss);
/* Same walk, seeded with d(out) = grad_out (out->numel floats); used by gradient checks. */
void backward_from(Ctx *c, Tensor *out, const float *grad_out);
/* The walk itself, for the nodes at tape[t0..tape_len) once their outputs' gradients are seeded:
 * each node with a gradient on its output runs, then that buffer is recycled (except keep's and
 * the parameters').  report: call c->backward_node_hook per node (backward_from: 1; a checkpoint's
 * sub-tape: 0, its node is timed as a whole by the outer walk). */
void backward_tape(Ctx *c, size_t t0, const Tensor *keep, int report);

/* Activation recomputation ("gradient checkpointing", engine/op_checkpoint.c).
 * y = op_checkpoint(c, fn, x, arg) returns fn(c, x, arg), but runs fn without recording, keeps
 * only x and y, and gives fn's intermediates back to the arena at once.  Its backward reruns fn
 * with the same c->rng state (drop-path draws the same masks) on a sub-tape, backpropagates
 * d(y) through it into x and into every parameter fn reads, then releases the rerun's memory:
 * per segment, the memory held until backward is its input instead of all its activations,
 * for one extra forward of the segment.  fn must map x to a tensor of x's shape (a transformer
 * block), depend only on x, arg, parameters and c->rng, and compute the same numbers with and
 * without grad mode.  Without grad mode, or when x needs no gradient, it is plain fn(c, x, arg). */
typedef Tensor *(*SegmentFn)(Ctx *c, Tensor *x, const void *arg);
Tensor *op_checkpoint(Ctx *c, SegmentFn fn, Tensor *x, const void *arg);

/* ------------------------------------------------------------------------------------------ */
/* Ops.  Each op: forward here, backward kernel beside it, a finite-difference check in
 * tests/engine/, and a PyTorch reference in tests/ref/.  Inputs may be strided views unless the
 * comment says "contiguous" (then op_contiguous is applied internally). */

/* linear algebra (engine/op_matmul.c) */
Tensor *op_matmul(Ctx *c, Tensor *a, Tensor *b);   /* (..., M, K) @ (..., K, N); batch dims of b
                                                      broadcast (b may be 2-D) */
Tensor *op_linear(Ctx *c, Tensor *x, Tensor *w, Tensor *b); /* x (..., IN), w (OUT, IN), b (OUT)
                                                               or NULL -> (..., OUT) */

/* elementwise with broadcasting (engine/op_elementwise.c) */
Tensor *op_add(Ctx *c, Tensor *a, Tensor *b);
Tensor *op_sub(Ctx *c, Tensor *a, Tensor *b);
Tensor *op_mul(Ctx *c, Tensor *a, Tensor *b);
Tensor *op_div(Ctx *c, Tensor *a, Tensor *b);
Tensor *op_scale(Ctx *c, Tensor *x, float s);          /* s * x */
Tensor *op_add_scalar(Ctx *c, Tensor *x, float s);     /* x + s */
Tensor *op_bias_add(Ctx *c, Tensor *x, Tensor *b, int dim); /* b (shape[dim]) added along dim */

/* activations (engine/op_activation.c) */
Tensor *op_gelu(Ctx *c, Tensor *x);        /* exact erf form */
Tensor *op_silu(Ctx *c, Tensor *x);
Tensor *op_sigmoid(Ctx *c, Tensor *x);
Tensor *op_relu(Ctx *c, Tensor *x);
Tensor *op_tanh(Ctx *c, Tensor *x);
Tensor *op_exp(Ctx *c, Tensor *x);
Tensor *op_log(Ctx *c, Tensor *x);
Tensor *op_sqrt(Ctx *c, Tensor *x);
Tensor *op_dropout(Ctx *c, Tensor *x, float p);        /* identity unless c->training */
Tensor *op_drop_path(Ctx *c, Tensor *x, float p);      /* per sample (dim 0); identity in eval */

/* reductions (engine/op_reduce.c); keepdim semantics: the reduced dim is kept with size 1 */
Tensor *op_sum(Ctx *c, Tensor *x, int dim, int keepdim);
Tensor *op_mean(Ctx *c, Tensor *x, int dim, int keepdim);
Tensor *op_max(Ctx *c, Tensor *x, int dim, int keepdim);  /* gradient to the first argmax */
Tensor *op_sum_all(Ctx *c, Tensor *x);                    /* -> (1) */
Tensor *op_mean_all(Ctx *c, Tensor *x);                   /* -> (1) */

/* Broadcasting kernels shared by op implementations (engine/op_elementwise.c).
 * broadcast_shape: NumPy rules (dims right-aligned, 1 stretches); returns 0 if a and b clash.
 * broadcast_strides: strides of an operand (nd, shape, stride) in an output index space
 *   (ondim, oshape), 0 along the dims it is broadcast over.
 * reduce_sum_strided: dst += scale * src summed over every dim where dst_stride is 0; src and
 *   dst are addressed by their strides in one index space `shape`.  Each dst element is summed
 *   in double in a fixed order, so the result does not depend on the thread count. */
int broadcast_shape(int na, const size_t *sa, int nb, const size_t *sb, int *nd_out, size_t *out);
void broadcast_strides(int ondim, const size_t *oshape, int nd, const size_t *shape,
                       const ptrdiff_t *stride, ptrdiff_t *out);
void reduce_sum_strided(int ndim, const size_t *shape, const float *src, const ptrdiff_t *src_stride,
                        float *dst, const ptrdiff_t *dst_stride, float scale);

/* normalisation (engine/op_norm.c) */
Tensor *op_softmax(Ctx *c, Tensor *x);        /* over the last dim, max-subtracted */
Tensor *op_log_softmax(Ctx *c, Tensor *x);    /* over the last dim */
Tensor *op_layernorm(Ctx *c, Tensor *x, Tensor *w, Tensor *b, float eps); /* last dim; w,b may be NULL */
Tensor *op_l2_normalize(Ctx *c, Tensor *x, float eps); /* last dim, x / max(||x||, eps) */
/* batch norm over dim 1 of (N, C, ...): training uses batch statistics and updates the running
 * buffers (running = (1-momentum)*running + momentum*batch, unbiased var, PyTorch convention);
 * eval uses the running buffers. */
Tensor *op_batchnorm(Ctx *c, Tensor *x, Tensor *w, Tensor *b, float *running_mean,
                     float *running_var, float momentum, float eps);
/* silu(op_batchnorm(...)) as one op that does not store the BN output (the same numbers to an ulp) */
Tensor *op_batchnorm_silu(Ctx *c, Tensor *x, Tensor *w, Tensor *b, float *running_mean,
                          float *running_var, float momentum, float eps);
/* the same over all MPI ranks (SyncBatchNorm; engine/op_batchnorm_sync.c): op_batchnorm calls it
 * when c->sync_bn && c->training && c->world > 1 */
Tensor *op_batchnorm_sync(Ctx *c, Tensor *x, Tensor *w, Tensor *b, float *running_mean,
                          float *running_var, float momentum, float eps);

/* convolution and pooling, NCHW (engine/op_conv.c, engine/op_pool.c) */
typedef struct Conv2dArgs {
    int stride_h, stride_w;
    int pad_top, pad_bottom, pad_left, pad_right;  /* explicit, so TF "SAME" can be asymmetric */
    int dil_h, dil_w;
    int groups;
} Conv2dArgs;
/* PyTorch-style symmetric padding */
Conv2dArgs conv2d_args(int stride, int pad, int dilation, int groups);
/* TF "SAME": output = ceil(in / stride); the odd pixel of padding goes bottom/right */
Conv2dArgs conv2d_args_same(int in_h, int in_w, int kh, int kw, int stride, int dilation, int groups);
Tensor *op_conv2d(Ctx *c, Tensor *x, Tensor *w, Tensor *b, Conv2dArgs a); /* w (OC, IC/groups, KH, KW) */
Tensor *op_max_pool2d(Ctx *c, Tensor *x, int k, int stride, int pad);
Tensor *op_avg_pool2d(Ctx *c, Tensor *x, int k, int stride, int pad); /* count_include_pad=1 */
Tensor *op_global_avg_pool(Ctx *c, Tensor *x);   /* (N, C, H, W) -> (N, C) */

/* resampling (engine/op_resize.c), NCHW */
Tensor *op_resize_bilinear(Ctx *c, Tensor *x, int out_h, int out_w); /* align_corners=False */
Tensor *op_resize_bicubic(Ctx *c, Tensor *x, int out_h, int out_w);  /* A=-0.75, align_corners=False */
Tensor *op_resize_nearest(Ctx *c, Tensor *x, int out_h, int out_w);
/* Bicubic with an explicit scale factor, as F.interpolate(scale_factor=s) without recomputing
 * it: src = (dst + 0.5) / s - 0.5.  DINOv2 interpolates position embeddings this way. */
Tensor *op_resize_bicubic_scale(Ctx *c, Tensor *x, int out_h, int out_w, double scale_h, double scale_w);
/* RoIAlign as torchvision.ops.roi_align (engine/op_roi_align.c): x (N, C, H, W), rois (K, 5) rows
 * (batch index, x0, y0, x1, y1) in image pixels (read during the call only) -> (K, C, out_h, out_w).
 * Gradient to x only.  sampling_ratio <= 0: adaptive ceil(roi size / out); aligned 0 as Faster R-CNN. */
Tensor *op_roi_align(Ctx *c, Tensor *x, const float *rois, size_t K, int out_h, int out_w, float spatial_scale,
                     int sampling_ratio, int aligned);

/* structure (engine/op_shape.c) */
Tensor *op_concat(Ctx *c, Tensor *const *xs, int n, int dim);
void op_split(Ctx *c, Tensor *x, int dim, const size_t *sizes, int n, Tensor **out);
Tensor *op_index_select(Ctx *c, Tensor *x, int dim, const int32_t *idx, size_t n);
Tensor *op_embedding(Ctx *c, Tensor *table, const int32_t *ids, size_t n); /* (V, D) -> (n, D) */
/* where(mask, a, b): mask has x's shape or broadcasts to it (1 = take a) */
Tensor *op_where(Ctx *c, const uint8_t *mask, int mask_ndim, const size_t *mask_shape,
                 Tensor *a, Tensor *b);
Tensor *op_masked_fill(Ctx *c, Tensor *x, const uint8_t *mask, float value); /* mask: x's numel */

/* attention (engine/op_attention.c): fused multi-head self-attention core.
 * qkv (B, T, 3*C) laid out [q | k | v] with heads contiguous inside each -> (B, T, C).
 * Training keeps the (B, H, T, T) probabilities for backward; no-grad mode works one head at a
 * time with one (T, T) buffer per thread. */
Tensor *op_attention(Ctx *c, Tensor *qkv, int n_heads);

/* losses (engine/loss.c); each returns a (1) tensor */
#define LOSS_IGNORE_INDEX (-100)
Tensor *loss_cross_entropy(Ctx *c, Tensor *logits, const int32_t *target, float label_smoothing);
                                 /* logits (N, K); target < 0 ignored; mean over kept rows */
Tensor *loss_cross_entropy_soft(Ctx *c, Tensor *logits, Tensor *target_probs); /* mean over rows */
Tensor *loss_bce_logits(Ctx *c, Tensor *logits, Tensor *target, const float *weight); /* mean */
Tensor *loss_mse(Ctx *c, Tensor *a, Tensor *b);
Tensor *loss_smooth_l1(Ctx *c, Tensor *a, Tensor *b, float beta);
Tensor *loss_kl_div(Ctx *c, Tensor *log_p, Tensor *log_q); /* sum q*(log q - log p) / N rows:
                                               PyTorch kl_div(log_p, log_q, 'batchmean', log_target) */
Tensor *loss_soft_dice(Ctx *c, Tensor *probs, Tensor *target, float smooth); /* 1 - mean dice per sample */

/* ------------------------------------------------------------------------------------------ */
/* Parameters: named tensors in flat blocks (engine/params.c).  Declare everything, then
 * `params_alloc` once; data pointers are valid from then on. */

enum { PARAM_TRAINABLE = 0, PARAM_BUFFER = 1 };   /* buffers: BN running stats (no grad, no opt) */

typedef struct Param {
    Tensor *t;
    char name[96];       /* PyTorch state_dict key */
    int kind;            /* PARAM_TRAINABLE or PARAM_BUFFER */
    float lr_mult;       /* per-group multipliers (default 1) */
    float wd_mult;       /* 0 for biases, norms, LayerScale, tokens */
    int frozen;          /* no update (and no gradient) while set */
    size_t offset;       /* into data/grad/m/v (trainable) or into buf (buffer) */
} Param;

typedef struct ParamStore {
    Param *p;
    size_t n, cap;
    float *data;  /* (n_train) trainable values */
    float *grad;  /* (n_train) */
    float *m, *v; /* (n_train) optimizer moments, allocated with the block */
    float *buf;   /* (n_buf) non-trainable buffers */
    size_t n_train, n_buf;   /* each tensor starts 64-byte aligned; the zero gaps are counted */
    int allocated;
    int values_only; /* set before params_alloc for stores that never train (EMA teacher, frozen
                        backbone): no grad/m/v blocks, no tensor requires grad */
    Arena meta;   /* Tensor headers */
} ParamStore;

void params_init(ParamStore *ps);
void params_free(ParamStore *ps);
Tensor *param_declare(ParamStore *ps, const char *name, int kind, int ndim, const size_t *shape);
#define param_(ps, name, ...) param_declare((ps), (name), PARAM_TRAINABLE, TNDIM(__VA_ARGS__), TSHAPE(__VA_ARGS__))
#define buffer_(ps, name, ...) param_declare((ps), (name), PARAM_BUFFER, TNDIM(__VA_ARGS__), TSHAPE(__VA_ARGS__))
void params_alloc(ParamStore *ps);
Param *params_find(ParamStore *ps, const char *name);
void params_zero_grad(ParamStore *ps);
/* By name prefix ("" = all); frozen tensors stop requiring grad and their gradient is zeroed.
 * Returns how many trainable tensors matched, so a mistyped prefix can be caught. */
int params_set_frozen(ParamStore *ps, const char *prefix, int frozen);
void params_copy(ParamStore *dst, const ParamStore *src);  /* same layout: values + buffers */
/* EMA: dst = m * dst + (1 - m) * src over the trainable block (buffers copied). */
void params_ema(ParamStore *dst, const ParamStore *src, float m);

/* ------------------------------------------------------------------------------------------ */
/* Optimizers and schedules (engine/optim.c) */

typedef struct OptimConfig {
    int kind;            /* OPTIM_ADAMW, OPTIM_SGD, OPTIM_ADAM */
    double lr, weight_decay;     /* base values; the caller's schedules pass the current ones */
    double beta1, beta2, eps;    /* Adam(W); double like PyTorch's Python floats */
    double momentum;             /* SGD */
    int nesterov;
} OptimConfig;
enum { OPTIM_ADAMW = 0, OPTIM_SGD = 1, OPTIM_ADAM = 2 };  /* ADAM: coupled L2, as torch.optim.Adam */

OptimConfig optim_adamw_default(void);     /* lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 0.01 */
/* One update with the given lr and weight decay (schedules applied by the caller);
 * `step` is 1-based for bias correction.  Frozen params are skipped (no decay, no moment update:
 * torch's grad=None).  Each tensor uses lr*lr_mult and wd*wd_mult, like a torch param group:
 * ADAMW p *= 1 - lr*wd then Adam; ADAM grad += wd*p; SGD (dampening 0) grad += wd*p, momentum
 * buffer in m, nesterov optional — each matches torch.optim 1.13 to float32 rounding. */
void optim_step(ParamStore *ps, const OptimConfig *cfg, long step, double lr, double wd);
/* L2 norm of the whole gradient block, summed in double over a fixed chunking (same result for
 * any thread count). */
double grad_global_norm(const ParamStore *ps);
/* torch.nn.utils.clip_grad_norm_: grads *= max_norm / (norm + 1e-6) when that is < 1.  Returns
 * the norm before clipping; a NaN/Inf norm is returned and the gradients are left alone. */
double clip_grad_norm(ParamStore *ps, double max_norm);
/* DINO utils.clip_gradients: the same rule on each tensor's own gradient norm. */
void clip_grad_per_param(ParamStore *ps, double max_norm);

/* Schedules: plain functions of the 0-based step.
 * sched_cosine = DINO's cosine_scheduler per step: np.linspace(warmup_start, base, warmup) over
 *   the first `warmup` steps, then final + 0.5*(base-final)*(1+cos(pi*i/(total-warmup))),
 *   i = step - warmup; `final` from step `total` on.
 * sched_linear = np.linspace(start, end, total)[step]; `end` from step total-1 on. */
double sched_cosine(long step, long total, double base, double final, long warmup, double warmup_start);
double sched_linear(long step, long total, double start, double end);
double sched_constant(long step, double value);

/* ------------------------------------------------------------------------------------------ */
/* Checkpoints in HDF5 (engine/checkpoint.c).  One float32 dataset per tensor at the root, named
 * <prefix><state_dict key> (dots and all), so h5py + torch.from_numpy + load_state_dict(strict=True)
 * works; optimizer moments under "optim/m/<name>", "optim/v/<name>"; extra float arrays under
 * "state/<name>"; root attributes "versa_format", "step", "rng_seed", "rng_counter", "rng_buf",
 * "rng_buf_left" (the Rng exactly, buffered words included) and "config" (text).
 * Saving builds the file in memory (a transient copy), writes "<path>.tmp.<pid>", fsyncs, renames
 * over <path> and fsyncs the folder; on any failure the temporary file is removed and the
 * previous checkpoint is left intact.
 * Loading first validates every name and shape and reports all problems in one Err (the first few
 * names of each kind + counts), then reads; a missing, truncated or corrupt file is an Err naming
 * it.  HDF5's own error printing is silenced inside these calls. */

typedef struct CkptExtra {
    const char *name;    /* "state/<name>" */
    float *data;
    size_t n;
} CkptExtra;

typedef struct CkptMeta {
    long step;
    Rng rng;
    const char *config_text;   /* saved as an attribute (may be NULL); loading sets it to NULL */
} CkptMeta;

/* Several parameter stores in one file (stage 1: student and teacher).  A root dataset belongs to
 * the store with the longest matching prefix; on load, a dataset a store owns but does not declare
 * is "unexpected" (PyTorch's strict=True) unless the store is `partial`. */
typedef struct CkptStore {
    const char *prefix;   /* prepended to every name, e.g. "teacher." (NULL or "" for none) */
    ParamStore *ps;
    int with_optim;       /* also save / load the moments m, v */
    int partial;          /* load: ignore tensors under prefix that ps does not declare */
} CkptStore;

int ckpt_save_stores(const char *path, const CkptStore *stores, int n_stores, const CkptMeta *meta,
                     const CkptExtra *extra, int n_extra, Err *e);
/* meta_out (may be NULL: then step/RNG need not be in the file), config_out (may be NULL; the
 * text must fit in config_cap bytes), extra arrays must exist with exactly their n values. */
int ckpt_load_stores(const char *path, const CkptStore *stores, int n_stores, CkptMeta *meta_out,
                     char *config_out, size_t config_cap, CkptExtra *extra, int n_extra, Err *e);
/* One store without prefix. */
int ckpt_save(const char *path, const ParamStore *ps, int with_optim, const CkptMeta *meta,
              const CkptExtra *extra, int n_extra, Err *e);
/* One store; `prefix` (may be "") is prepended to each name when looking it up; strict. */
int ckpt_load(const char *path, ParamStore *ps, const char *prefix, int with_optim,
              CkptMeta *meta_out, char *config_out, size_t config_cap,
              CkptExtra *extra, int n_extra, Err *e);
/* The saved config text, malloc'd ("" when none was saved); NULL + Err on failure.  A resumed
 * run reads it first to rebuild the models, then calls ckpt_load. */
char *ckpt_read_config(const char *path, Err *e);

/* ------------------------------------------------------------------------------------------ */
/* Configuration (engine/config.c): a YAML file flattened to dotted keys, command-line overrides,
 * typed getters.  `student: {arch: vit_small}` is the key "student.arch"; a list of plain values
 * stays one entry (text "[0.32, 1.0]"; items via cfg_list_len / cfg_list_item / cfg_get_floats).
 *
 *   Config cfg; Err e = {0};
 *   cfg_init(&cfg);
 *   cfg_declare(&cfg, PRETRAIN_KEYS, n, &e);      known keys + defaults + help (optional; once
 *                                                 declared, files and overrides cannot add keys)
 *   cfg_parse_args(&cfg, argc, argv, &e);         [CONFIG.yaml] [key=value ...]; "+key=v" adds a key
 *   double lr = cfg_get_float(&cfg, "optim.lr", 1e-3, &e);
 *   ...                                           getters keep the first error (sticky Err):
 *   if (e.msg[0]) fail;                           check once after reading every key
 *   char *yaml = cfg_to_yaml(&cfg);               the tree rebuilt from the keys, for checkpoints
 *
 * Messages name the file or the command line that set the value, e.g.
 * "configs/x.yaml: unknown key 'optim.lrr' (did you mean 'optim.lr'?)",
 * "command line: optim.lr: expected a number, got 'abc'".  YAML null (~, null, empty) reads as
 * "not set": getters return their default. */

typedef enum { CFG_STR = 0, CFG_FLOAT, CFG_INT, CFG_BOOL, CFG_LIST } CfgType;

typedef struct CfgSpec {        /* one known key of a subcommand */
    const char *key;            /* "optim.lr" */
    CfgType type;               /* checked when a file or override sets the key */
    const char *def;            /* default as YAML text: "1e-3", "[0.32, 1.0]", "" or NULL = null */
    const char *help;           /* one line for --help */
} CfgSpec;

typedef struct CfgEntry {
    char *key;                  /* dotted */
    char *value;                /* scalar text, or the flow text of a list */
    char **items;               /* list items (is_list) */
    size_t n_items;
    int is_list, is_null;
    int origin;                 /* index into Config.origins: file, "command line", "defaults" */
    unsigned stamp;             /* which load set it (duplicate keys in one file are an error) */
    const CfgSpec *spec;        /* declared spec, or NULL */
} CfgEntry;

typedef struct CfgSlot {       /* hash index over keys and their dotted prefixes ("a", "a.b") */
    uint32_t hash, len;         /* of the text: the first len bytes of e[entry].key */
    uint32_t entry;             /* index into Config.e, + 1 (0: empty slot) */
    uint32_t is_prefix;         /* a map ("optim" of "optim.lr"), not a key */
} CfgSlot;

typedef struct Config {
    CfgEntry *e;                /* in insertion order (the order of the file / the spec) */
    size_t n, cap;
    CfgSlot *slots;             /* open addressing, a power of two, at most half full */
    size_t n_slots, used_slots;
    char **origins;
    size_t n_origins;
    int declared;               /* cfg_declare was called: the key set is closed */
    unsigned stamp;
    char name[256];             /* the config file, for messages ("config" before one is loaded) */
} Config;

void cfg_init(Config *cfg);
void cfg_free(Config *cfg);
int cfg_declare(Config *cfg, const CfgSpec *spec, size_t n, Err *e);  /* spec must outlive cfg */
int cfg_load_file(Config *cfg, const char *path, Err *e);    /* merges; later files win */
int cfg_load_string(Config *cfg, const char *yaml, const char *origin, Err *e);
/* "key=value" (the key must exist unless allow_new) or "+key=value" (adds); "[a, b]" is a list */
int cfg_override(Config *cfg, const char *assignment, int allow_new, Err *e);
/* argv after the subcommand: at most one *.yaml / *.yml file (loaded first), then key=value
 * overrides in order; anything else is an error */
int cfg_parse_args(Config *cfg, int argc, char **argv, Err *e);
int cfg_set(Config *cfg, const char *key, const char *value, Err *e);  /* program-side, may add */
int cfg_has(const Config *cfg, const char *key);            /* present and not null */
const char *cfg_get(const Config *cfg, const char *key);    /* raw text, NULL if absent/null */
/* Typed getters: def when the key is absent or null.  In a declared config, reading an
 * undeclared key is a programming error (message + abort). */
const char *cfg_get_str(const Config *cfg, const char *key, const char *def);
double cfg_get_float(const Config *cfg, const char *key, double def, Err *e);
long cfg_get_int(const Config *cfg, const char *key, long def, Err *e);
int cfg_get_bool(const Config *cfg, const char *key, int def, Err *e);  /* true/false/yes/no/on/off/1/0 */
size_t cfg_list_len(const Config *cfg, const char *key);    /* a scalar is a list of one */
const char *cfg_list_item(const Config *cfg, const char *key, size_t i);
size_t cfg_get_floats(const Config *cfg, const char *key, double *out, size_t max, Err *e);
char *cfg_to_yaml(const Config *cfg);                       /* malloc'd; loads back to the same table */
void cfg_print_help(const CfgSpec *spec, size_t n, FILE *out);  /* "  key  type default  help" */

/* ------------------------------------------------------------------------------------------ */
/* Distributed (MPI) data parallelism (engine/dist.c).
 *
 * One process per replica, launched by mpirun.  Every rank holds the whole model and its own
 * shard of the batch; per step the flat gradient block is averaged in one all-reduce (Horovod's
 * AVERAGE: MPI_SUM, then * 1/world).  At start, values and buffers are broadcast from rank 0;
 * from then on identical averaged gradients + an identical optimizer keep the replicas
 * bit-identical, so an EMA teacher needs no communication.
 *
 *   dist_init(&c, &argc, &argv);                  first thing in main
 *   dist_broadcast_params(&c, &student);          after init / checkpoint load
 *   step: backward; dist_allreduce_grads(&c, &student); clip_grad_norm; optim_step
 *   if (dist_is_root(&c)) { log; checkpoint }
 *   dist_finalize();
 * Sharding the data and seeding augmentations per rank (seed + rank) is the caller's part.
 *
 * Without mpirun nothing touches MPI: MPI is initialised only when the environment shows an
 * mpirun launch (OMPI_COMM_WORLD_SIZE, PMIX_RANK or PMI_RANK) or VERSA_MPI=1 (VERSA_MPI=0 keeps
 * it off even under mpirun).  Otherwise rank 0, world 1, and every collective is a no-op.
 * Threads: MPI_THREAD_FUNNELED, so call dist_* from the main thread, never inside an OpenMP
 * parallel region.  Collectives must be called by every rank in the same order with the same n.
 * Determinism: for a fixed world size and message size Open MPI picks a fixed algorithm and
 * summation order, and every rank ends with the same bits.
 * Errors: MPI errors are returned (MPI_ERRORS_RETURN), not fatal inside MPI; a failed call
 * becomes dist_abort with MPI's error string, which takes the whole job down. */

void dist_init(Ctx *c, int *argc, char ***argv);   /* argc/argv may be NULL */
void dist_finalize(void);                          /* no-op when MPI was not initialised */
int dist_is_root(const Ctx *c);                    /* rank 0: logs, checkpoints */
/* "versa: rank R: <message>" on stderr, then MPI_Abort(MPI_COMM_WORLD, 1) when MPI is up (one
 * rank's error ends the job instead of hanging the others), else exit(1) (or longjmp to
 * c->fail_jmp in tests, like ctx_fail).  c may be NULL. */
void dist_abort(Ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));

/* In-place collectives over MPI_COMM_WORLD; n is unlimited (sent in chunks of dist_set_chunk). */
void dist_allreduce_sum(Ctx *c, float *x, size_t n);
void dist_allreduce_mean(Ctx *c, float *x, size_t n);            /* sum, then * (1/world) */
void dist_allreduce_sum_double(Ctx *c, double *x, size_t n);     /* loss sums, norms, counts */
void dist_allreduce_max_double(Ctx *c, double *x, size_t n);     /* e.g. "any rank saw a NaN" */
void dist_broadcast(Ctx *c, float *x, size_t n, int root);
void dist_barrier(Ctx *c);
/* recv (world * bytes) gets each rank's `bytes` of send in rank order; small arrays only */
void dist_allgather(Ctx *c, const void *send, size_t bytes, void *recv);
/* Largest message per MPI call, in floats (doubles: half as many); default 2^28 floats = 1 GiB,
 * clear of int counts and of the 2 GiB sizes where MPI libraries have had overflow bugs.  Returns
 * the previous value.  Changing it changes the reduction order (tests use small chunks). */
size_t dist_set_chunk(size_t n);

/* ParamStore helpers.  broadcast_params and check_params_equal first check that the layout
 * (names, kinds, shapes, offsets) is the same on every rank: a mismatch aborts naming the rank
 * and both layouts, instead of a truncated broadcast.  allreduce_grads (per step) trusts it. */
void dist_broadcast_params(Ctx *c, ParamStore *ps);   /* values + buffers from rank 0 (not m, v) */
void dist_allreduce_grads(Ctx *c, ParamStore *ps);    /* grad block = mean over ranks, one call */
/* Debug: max over elements of (max over ranks - min over ranks) of values and buffers; 0 when
 * the replicas agree, NaN when any rank holds a non-finite value.  Same on every rank. */
double dist_check_params_equal(Ctx *c, const ParamStore *ps);

#endif
