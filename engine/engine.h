/*
 * engine.h — the tensor engine of versamammo.c: tensors and views, arenas, the autograd tape,
 * ops with hand-written backward kernels, losses, parameter blocks, optimizers, schedules, RNG,
 * checkpoints and threads.  Everything above this layer (nn/, data/, ssl/, distill/, bench/)
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
/* Seeds d(loss)=1 (loss must have one element) and runs every recorded node in reverse. */
void backward(Ctx *c, Tensor *loss);
/* Same walk, seeded with d(out) = grad_out (out->numel floats); used by gradient checks. */
void backward_from(Ctx *c, Tensor *out, const float *grad_out);

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
    size_t n_train, n_buf;
    int allocated;
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
void params_set_frozen(ParamStore *ps, const char *prefix, int frozen);  /* by name prefix */
void params_copy(ParamStore *dst, const ParamStore *src);  /* same layout: values + buffers */
/* EMA: dst = m * dst + (1 - m) * src over the trainable block (buffers copied). */
void params_ema(ParamStore *dst, const ParamStore *src, float m);

/* ------------------------------------------------------------------------------------------ */
/* Optimizers and schedules (engine/optim.c) */

typedef struct OptimConfig {
    int kind;            /* OPTIM_ADAMW, OPTIM_SGD */
    float lr, weight_decay;
    float beta1, beta2, eps;     /* AdamW */
    float momentum;              /* SGD */
    int nesterov;
} OptimConfig;
enum { OPTIM_ADAMW = 0, OPTIM_SGD = 1, OPTIM_ADAM = 2 };  /* ADAM: coupled L2, as torch.optim.Adam */

OptimConfig optim_adamw_default(void);     /* lr 1e-3, betas (0.9, 0.999), eps 1e-8, wd 0.01 */
/* One update with the given lr and weight decay (schedules applied by the caller);
 * `step` is 1-based for bias correction.  Frozen params are skipped. */
void optim_step(ParamStore *ps, const OptimConfig *cfg, long step, float lr, float wd);
double grad_global_norm(const ParamStore *ps);
/* Clip by global norm; returns the norm before clipping. */
double clip_grad_norm(ParamStore *ps, double max_norm);
void clip_grad_per_param(ParamStore *ps, double max_norm);

/* Schedules: plain functions of the step */
double sched_cosine(long step, long total, double base, double final, long warmup, double warmup_start);
double sched_linear(long step, long total, double start, double end);
double sched_constant(long step, double value);

/* ------------------------------------------------------------------------------------------ */
/* Checkpoints in HDF5 (engine/checkpoint.c).  One dataset per tensor named by its state_dict
 * key; optimizer moments under "optim/m/<key>", "optim/v/<key>"; extra float arrays under
 * "state/<name>"; scalar attributes on the root ("step", "rng_seed", "rng_counter", "config").
 * Saving writes to "<path>.tmp", fsyncs and renames. */

typedef struct CkptExtra {
    const char *name;    /* "state/<name>" */
    float *data;
    size_t n;
} CkptExtra;

typedef struct CkptMeta {
    long step;
    Rng rng;
    const char *config_text;   /* saved as an attribute (may be NULL) */
} CkptMeta;

int ckpt_save(const char *path, const ParamStore *ps, int with_optim, const CkptMeta *meta,
              const CkptExtra *extra, int n_extra, Err *e);
/* Loads every tensor of ps by name; reports all missing names and shape mismatches in one
 * message.  `prefix` (may be "") is prepended to each name when looking it up. */
int ckpt_load(const char *path, ParamStore *ps, const char *prefix, int with_optim,
              CkptMeta *meta_out, char *config_out, size_t config_cap,
              CkptExtra *extra, int n_extra, Err *e);

#endif
