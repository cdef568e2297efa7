/* tensor.c — the context, tensor headers, free views, the tape and backward. */
#include "engine.h"
#include "train.h"   /* wall_seconds */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------- */
/* errors */

int err_set(Err *e, const char *fmt, ...) {
    if (e) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(e->msg, sizeof e->msg, fmt, ap);
        va_end(ap);
    }
    return 1;
}

static void out_of_memory(size_t n) {
    fprintf(stderr, "versa: out of memory (%zu bytes)\n", n);
    exit(1);
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) out_of_memory(n);
    return q;
}

void *xmalloc(size_t n) { return xrealloc(NULL, n); }

void *xcalloc(size_t count, size_t size) {
    if (size && count > SIZE_MAX / size) out_of_memory(SIZE_MAX);
    void *q = calloc(count ? count : 1, size ? size : 1);
    if (!q) out_of_memory(count * size);
    return q;
}

void ctx_fail(Ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->fail_msg, sizeof c->fail_msg, fmt, ap);
    va_end(ap);
    if (c->fail_jmp) longjmp(*c->fail_jmp, 1);
    fprintf(stderr, "versa: %s\n", c->fail_msg);
    exit(1);
}

/* ---------------------------------------------------------------------------------------- */
/* context */

void ctx_init(Ctx *c, uint64_t seed) {
    memset(c, 0, sizeof(*c));
    arena_init(&c->step, (size_t)64 << 20);
    c->grad_enabled = 1;
    c->training = 1;
    rng_init(&c->rng, seed);
    c->nthreads = 1;
    c->world = 1;
}

void ctx_free(Ctx *c) {
    arena_free(&c->step);
    free(c->tape);
    c->tape = NULL;
    c->tape_len = c->tape_cap = 0;
}

void ctx_step_begin(Ctx *c) {
    arena_reset(&c->step);
    c->tape_len = 0;
    c->grad_free = NULL;
}

int ctx_set_grad(Ctx *c, int enabled) {
    int prev = c->grad_enabled;
    c->grad_enabled = enabled;
    return prev;
}

/* ---------------------------------------------------------------------------------------- */
/* tensors */

static void set_contiguous_strides(Tensor *t) {
    ptrdiff_t s = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        t->stride[d] = s;
        s *= (ptrdiff_t)t->shape[d];
    }
}

static Tensor *header_new(Ctx *c, int ndim, const size_t *shape) {
    if (ndim < 0 || ndim > VT_MAX_DIMS) ctx_fail(c, "tensor: %d dims (at most %d)", ndim, VT_MAX_DIMS);
    Tensor *t = arena_calloc(&c->step, sizeof(Tensor));
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->numel *= shape[d];
    }
    set_contiguous_strides(t);
    return t;
}

Tensor *tensor_new(Ctx *c, int ndim, const size_t *shape) {
    Tensor *t = header_new(c, ndim, shape);
    t->data = arena_alloc(&c->step, t->numel * sizeof(float));
    return t;
}

Tensor *tensor_zeros(Ctx *c, int ndim, const size_t *shape) {
    Tensor *t = header_new(c, ndim, shape);
    t->data = arena_calloc(&c->step, t->numel * sizeof(float));
    return t;
}

Tensor *tensor_from(Ctx *c, int ndim, const size_t *shape, const float *src) {
    Tensor *t = tensor_new(c, ndim, shape);
    memcpy(t->data, src, t->numel * sizeof(float));
    return t;
}

Tensor *tensor_wrap(Ctx *c, float *data, int ndim, const size_t *shape) {
    Tensor *t = header_new(c, ndim, shape);
    t->data = data;
    return t;
}

int tensor_is_contiguous(const Tensor *t) {
    ptrdiff_t s = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != s) return 0;
        s *= (ptrdiff_t)t->shape[d];
    }
    return 1;
}

size_t tensor_offset(const Tensor *t, const size_t *idx) {
    ptrdiff_t off = 0;
    for (int d = 0; d < t->ndim; d++) off += (ptrdiff_t)idx[d] * t->stride[d];
    return (size_t)off;
}

float tensor_get(const Tensor *t, const size_t *idx) {
    return t->data[tensor_offset(t, idx)];
}

void tensor_copy_to(const Tensor *t, float *dst) {
    if (tensor_is_contiguous(t)) {
        memcpy(dst, t->data, t->numel * sizeof(float));
        return;
    }
    /* odometer over the index space; the innermost dim is a strided run */
    size_t idx[VT_MAX_DIMS] = {0};
    int nd = t->ndim;
    size_t inner = nd ? t->shape[nd - 1] : 1;
    ptrdiff_t is = nd ? t->stride[nd - 1] : 1;
    size_t outer = inner ? t->numel / inner : 0;
    for (size_t o = 0; o < outer; o++) {
        const float *src = t->data + tensor_offset(t, idx);
        for (size_t i = 0; i < inner; i++) dst[i] = src[(ptrdiff_t)i * is];
        dst += inner;
        for (int d = nd - 2; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

/* dst (strided like t) += src (contiguous in t's shape) */
static void strided_accumulate(const Tensor *t, float *base, const float *src) {
    size_t idx[VT_MAX_DIMS] = {0};
    int nd = t->ndim;
    size_t inner = nd ? t->shape[nd - 1] : 1;
    ptrdiff_t is = nd ? t->stride[nd - 1] : 1;
    size_t outer = inner ? t->numel / inner : 0;
    for (size_t o = 0; o < outer; o++) {
        float *dst = base + tensor_offset(t, idx);
        for (size_t i = 0; i < inner; i++) dst[(ptrdiff_t)i * is] += src[i];
        src += inner;
        for (int d = nd - 2; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
}

const char *tensor_shape_str(const Tensor *t, char *buf, size_t n) {
    size_t k = 0;
    k += (size_t)snprintf(buf + k, n - k, "(");
    for (int d = 0; d < t->ndim && k < n; d++)
        k += (size_t)snprintf(buf + k, n - k, d ? ",%zu" : "%zu", t->shape[d]);
    if (k < n) snprintf(buf + k, n - k, ")");
    return buf;
}

/* Released gradient buffers form a list threaded through the buffers themselves (every arena
 * allocation has room for this header), so recycling needs no memory of its own.  Each keeps
 * the capacity it was allocated with, in floats. */
typedef struct GradFree {
    struct GradFree *next;
    size_t cap;
} GradFree;

/* Best fit among released buffers of at least n floats, wasting at most a quarter: the shapes of
 * a network repeat, so most requests find an exact match. */
static float *grad_reuse(Ctx *c, size_t n) {
    GradFree **best = NULL;
    for (GradFree **p = (GradFree **)&c->grad_free; *p; p = &(*p)->next) {
        size_t cap = (*p)->cap;
        if (cap >= n && cap <= n + n / 4 + 16 && (!best || cap < (*best)->cap)) {
            best = p;
            if (cap == n) break;
        }
    }
    if (!best) return NULL;
    GradFree *g = *best;
    *best = g->next;
    return (float *)g;
}

static void grad_release(Ctx *c, Tensor *t) {
    ctx_scratch_release(c, t->grad, t->numel);
    t->grad = NULL;
}

float *ctx_scratch(Ctx *c, size_t n) {
    float *p = grad_reuse(c, n);
    return p ? p : arena_alloc(&c->step, (n ? n : 1) * sizeof(float));
}

void ctx_scratch_release(Ctx *c, float *p, size_t n) {
    GradFree *g = (GradFree *)p;
    g->cap = n < 16 ? 16 : n;   /* arena allocations are whole 64-byte lines */
    g->next = c->grad_free;
    c->grad_free = g;
}

void ctx_scratch_forget_since(Ctx *c, ArenaMark m) {
    GradFree **p = (GradFree **)&c->grad_free;
    while (*p) {
        if (arena_since_mark(&c->step, m, *p)) *p = (*p)->next;
        else p = &(*p)->next;
    }
}

float *tensor_grad(Ctx *c, Tensor *t) {
    if (!t->grad) {
        float *g = grad_reuse(c, t->numel);
        if (g) memset(g, 0, t->numel * sizeof(float));
        else g = arena_calloc(&c->step, t->numel * sizeof(float));
        t->grad = g;
    }
    return t->grad;
}

/* ---------------------------------------------------------------------------------------- */
/* tape */

int op_needs_grad(Ctx *c, Tensor *const *in, int n_in) {
    if (!c->grad_enabled) return 0;
    for (int i = 0; i < n_in; i++)
        if (in[i] && in[i]->requires_grad) return 1;
    return 0;
}

Node *op_record(Ctx *c, const char *op, BackwardFn bw, Tensor *out, Tensor *const *in, int n_in) {
    if (!op_needs_grad(c, in, n_in)) return NULL;
    if (n_in > NODE_MAX_IN) ctx_fail(c, "%s: %d inputs (at most %d)", op, n_in, NODE_MAX_IN);
    if (c->tape_len == c->tape_cap) {
        size_t cap = c->tape_cap ? 2 * c->tape_cap : 1024;
        Node *t = realloc(c->tape, cap * sizeof(Node));
        if (!t) ctx_fail(c, "out of memory growing the tape to %zu nodes", cap);
        c->tape = t;
        c->tape_cap = cap;
    }
    Node *n = &c->tape[c->tape_len++];
    memset(n, 0, sizeof(*n));
    n->op = op;
    n->backward = bw;
    n->out = out;
    n->n_in = n_in;
    for (int i = 0; i < n_in; i++) n->in[i] = in[i];
    out->requires_grad = 1;
    return n;
}

void backward(Ctx *c, Tensor *loss) {
    if (loss->numel != 1) {
        char b[64];
        ctx_fail(c, "backward: loss must have one element, got shape %s", tensor_shape_str(loss, b, sizeof b));
    }
    if (!loss->requires_grad) ctx_fail(c, "backward: the loss does not depend on anything that needs a gradient");
    static const float one = 1.0f;
    backward_from(c, loss, &one);
}

void backward_from(Ctx *c, Tensor *out, const float *grad_out) {
    float *g = tensor_grad(c, out);
    for (size_t i = 0; i < out->numel; i++) g[i] += grad_out[i];
    backward_tape(c, 0, out, 1);
}

void backward_tape(Ctx *c, size_t t0, const Tensor *keep, int report) {
    for (size_t k = c->tape_len; k-- > t0;) {
        Node *n = &c->tape[k];
        Tensor *o = n->out;           /* op_checkpoint's backward may grow (move) the tape */
        if (!o->grad) continue;       /* nothing downstream used this output */
        if (report && c->backward_node_hook) {
            double s0 = wall_seconds();
            n->backward(c, n);
            c->backward_node_hook(c->backward_node_hook_arg, &c->tape[k],   /* the tape may have moved */
                                  wall_seconds() - s0);
        } else {
            n->backward(c, n);
        }
        /* Every consumer of n->out comes later on the tape and has run, and n was its only
         * reader: recycle the buffer.  This keeps the activation gradients alive at once to
         * those of the layers in flight, not all of them. */
        if (o != keep && !o->is_param) grad_release(c, o);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* views */

static Tensor *view_header(Ctx *c, const Tensor *x) {
    Tensor *t = arena_alloc(&c->step, sizeof(Tensor));
    *t = *x;
    t->grad = NULL;
    t->requires_grad = 0;
    t->is_param = 0;
    t->name = NULL;
    return t;
}

/* A view's gradient is contiguous in the view's shape; give it back to the input, which may
 * itself be strided relative to the view (permute/slice) or identical in order (reshape). */
static void view_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *y = n->out;
    if (!x->requires_grad) return;
    float *gx = tensor_grad(c, x);
    /* Build a tensor over gx that indexes like y indexes x->data: same shape and strides as y,
     * data offset by (y->data - x->data).  Gradient buffers are contiguous in x's shape, so
     * this is exact when x is contiguous; for a strided x we map through x's strides. */
    if (tensor_is_contiguous(x)) {
        Tensor tmp = *y;
        ptrdiff_t off = y->data - x->data;
        strided_accumulate(&tmp, gx + off, y->grad);
    } else {
        /* x strided (view of a view): translate y's strides into x-contiguous strides.  Only
         * permute/slice/reshape-of-contiguous produce views, and reshape requires a contiguous
         * input, so y's strides are a permutation/subset of x's; map each y dim by stride. */
        ctx_fail(c, "%s: backward through a view of a non-contiguous view is not supported", n->op);
    }
}

Tensor *op_reshape(Ctx *c, Tensor *x, int ndim, const size_t *shape) {
    size_t sh[VT_MAX_DIMS];
    size_t known = 1;
    int infer = -1;
    if (ndim < 1 || ndim > VT_MAX_DIMS) ctx_fail(c, "op_reshape: %d dims", ndim);
    for (int d = 0; d < ndim; d++) {
        sh[d] = shape[d];
        if (shape[d] == (size_t)-1) {
            if (infer >= 0) ctx_fail(c, "op_reshape: more than one inferred dim");
            infer = d;
        } else known *= shape[d];
    }
    if (infer >= 0) sh[infer] = known ? x->numel / known : 0;
    size_t n = 1;
    for (int d = 0; d < ndim; d++) n *= sh[d];
    if (n != x->numel) {
        char b[64];
        ctx_fail(c, "op_reshape: cannot reshape %s (%zu elements) to %zu elements", tensor_shape_str(x, b, sizeof b),
                 x->numel, n);
    }
    if (!tensor_is_contiguous(x)) x = op_contiguous(c, x);
    Tensor *y = view_header(c, x);
    y->ndim = ndim;
    for (int d = 0; d < ndim; d++) y->shape[d] = sh[d];
    set_contiguous_strides(y);
    op_record(c, "reshape", view_backward, y, &x, 1);
    return y;
}

Tensor *op_permute(Ctx *c, Tensor *x, const int *perm) {
    int seen[VT_MAX_DIMS] = {0};
    for (int d = 0; d < x->ndim; d++) {
        if (perm[d] < 0 || perm[d] >= x->ndim || seen[perm[d]]++)
            ctx_fail(c, "op_permute: invalid permutation for %d dims", x->ndim);
    }
    Tensor *y = view_header(c, x);
    for (int d = 0; d < x->ndim; d++) {
        y->shape[d] = x->shape[perm[d]];
        y->stride[d] = x->stride[perm[d]];
    }
    if (!tensor_is_contiguous(x)) {
        /* keep views one level deep so backward is a plain strided scatter */
        Tensor *xc = op_contiguous(c, x);
        return op_permute(c, xc, perm);
    }
    op_record(c, "permute", view_backward, y, &x, 1);
    return y;
}

Tensor *op_transpose(Ctx *c, Tensor *x, int d0, int d1) {
    int perm[VT_MAX_DIMS];
    if (d0 < 0) d0 += x->ndim;
    if (d1 < 0) d1 += x->ndim;
    if (d0 < 0 || d1 < 0 || d0 >= x->ndim || d1 >= x->ndim) ctx_fail(c, "op_transpose: dims out of range");
    for (int d = 0; d < x->ndim; d++) perm[d] = d;
    perm[d0] = d1;
    perm[d1] = d0;
    return op_permute(c, x, perm);
}

Tensor *op_slice(Ctx *c, Tensor *x, int dim, size_t start, size_t end) {
    if (dim < 0) dim += x->ndim;
    if (dim < 0 || dim >= x->ndim || start > end || end > x->shape[dim]) {
        char b[64];
        ctx_fail(c, "op_slice: [%zu, %zu) on dim %d of %s is out of range", start, end, dim,
                 tensor_shape_str(x, b, sizeof b));
    }
    if (!tensor_is_contiguous(x)) x = op_contiguous(c, x);
    Tensor *y = view_header(c, x);
    y->shape[dim] = end - start;
    y->data = x->data + (ptrdiff_t)start * x->stride[dim];
    y->numel = x->numel / (x->shape[dim] ? x->shape[dim] : 1) * (end - start);
    if (x->shape[dim] == 0) y->numel = 0;
    op_record(c, "slice", view_backward, y, &x, 1);
    return y;
}

static void contiguous_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0];
    float *gx = tensor_grad(c, x);
    const float *gy = n->out->grad;
    for (size_t i = 0; i < x->numel; i++) gx[i] += gy[i];
}

Tensor *op_contiguous(Ctx *c, Tensor *x) {
    if (tensor_is_contiguous(x)) return x;
    Tensor *y = tensor_new(c, x->ndim, x->shape);
    tensor_copy_to(x, y->data);
    /* x is a strided view: its gradient is contiguous in its own shape, so the copy's gradient
     * maps element for element */
    op_record(c, "contiguous", contiguous_backward, y, &x, 1);
    return y;
}
