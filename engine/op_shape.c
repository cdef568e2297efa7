/* op_shape.c — ops that move elements: concat, split, index_select/embedding, where, masked_fill.
 *
 * Outputs are contiguous copies (a split piece can go straight into a GEMM).  Strided inputs
 * are made contiguous first except in `where`, which reads a and b through broadcast strides.
 * Index and mask arrays are copied into the step arena, since backward runs after the caller may
 * have reused its buffers.
 */
#include "engine.h"
#include <string.h>

#define PAR_MIN ((size_t)32768)
#define GATHER_CHUNK ((size_t)1024)  /* columns per work item of index_select's backward */

static void split_dims(const size_t *shape, int ndim, int dim, size_t *outer, size_t *inner) {
    *outer = 1;
    *inner = 1;
    for (int d = 0; d < dim; d++) *outer *= shape[d];
    for (int d = dim + 1; d < ndim; d++) *inner *= shape[d];
}

static int norm_dim(Ctx *c, const char *op, const Tensor *x, int dim) {
    int d = dim < 0 ? dim + x->ndim : dim;
    if (d < 0 || d >= x->ndim) {
        char b[64];
        ctx_fail(c, "%s: dim %d is out of range for %s", op, dim, tensor_shape_str(x, b, sizeof b));
    }
    return d;
}

/* ------------------------------------------------------------------------------------------ */
/* concat */

typedef struct ConcatSaved {
    Tensor **xs;     // (n) contiguous inputs
    size_t *start;   // (n) offset of input k inside one output row of (shape[dim] * inner)
    int n;
} ConcatSaved;

static void concat_backward(Ctx *c, Node *nd) {
    const ConcatSaved *s = nd->saved;
    const Tensor *out = nd->out;
    int dim = (int)nd->i[0];
    size_t outer, inner;
    split_dims(out->shape, out->ndim, dim, &outer, &inner);
    size_t row = out->shape[dim] * inner;
    const float *g = out->grad;  // (outer, row)
    /* inputs one after another: the same tensor may appear twice in the list */
    for (int k = 0; k < s->n; k++) {
        Tensor *x = s->xs[k];
        if (!x->requires_grad) continue;
        float *gx = tensor_grad(c, x);  // (outer, lk)
        size_t lk = x->shape[dim] * inner;
#pragma omp parallel for schedule(static) if (outer * lk >= PAR_MIN)
        for (size_t o = 0; o < outer; o++) {
            const float *src = g + o * row + s->start[k];
            float *dst = gx + o * lk;
            for (size_t i = 0; i < lk; i++) dst[i] += src[i];
        }
    }
}

Tensor *op_concat(Ctx *c, Tensor *const *xs, int n, int dim) {
    if (n < 1) ctx_fail(c, "op_concat: no inputs");
    dim = norm_dim(c, "op_concat", xs[0], dim);
    size_t shape[VT_MAX_DIMS];
    memcpy(shape, xs[0]->shape, sizeof shape);
    shape[dim] = 0;
    for (int k = 0; k < n; k++) {
        const Tensor *x = xs[k];
        int ok = x->ndim == xs[0]->ndim;
        for (int d = 0; ok && d < x->ndim; d++)
            if (d != dim && x->shape[d] != xs[0]->shape[d]) ok = 0;
        if (!ok) {
            char b0[64], bk[64];
            ctx_fail(c, "op_concat: input %d has shape %s but input 0 has %s (all dims but %d must match)", k,
                     tensor_shape_str(x, bk, sizeof bk), tensor_shape_str(xs[0], b0, sizeof b0), dim);
        }
        shape[dim] += x->shape[dim];
    }
    Tensor *out = tensor_new(c, xs[0]->ndim, shape);
    ConcatSaved *s = arena_alloc(&c->step, sizeof(ConcatSaved));
    s->n = n;
    s->xs = arena_alloc(&c->step, (size_t)n * sizeof(Tensor *));
    s->start = arena_alloc(&c->step, (size_t)n * sizeof(size_t));
    size_t outer, inner;
    split_dims(shape, out->ndim, dim, &outer, &inner);
    size_t row = shape[dim] * inner, at = 0;
    for (int k = 0; k < n; k++) {
        s->xs[k] = op_contiguous(c, xs[k]);
        s->start[k] = at;
        at += xs[k]->shape[dim] * inner;
    }
    size_t work = outer * (size_t)n;
#pragma omp parallel for schedule(static) if (out->numel >= PAR_MIN)
    for (size_t w = 0; w < work; w++) {
        size_t o = w / (size_t)n, k = w % (size_t)n;
        size_t lk = s->xs[k]->shape[dim] * inner;
        memcpy(out->data + o * row + s->start[k], s->xs[k]->data + o * lk, lk * sizeof(float));
    }
    /* A node holds at most NODE_MAX_IN inputs, but a concat may have more (multi-crop batches):
     * the full list lives in `saved`, and the node lists enough of the inputs that need a
     * gradient for op_record to see that one is needed. */
    Tensor *rec[NODE_MAX_IN] = {0};
    int nrec = 0;
    for (int k = 0; k < n && nrec < NODE_MAX_IN; k++)
        if (s->xs[k]->requires_grad) rec[nrec++] = s->xs[k];
    Node *nd = op_record(c, "concat", concat_backward, out, rec, nrec);
    if (nd) {
        nd->saved = s;
        nd->i[0] = dim;
    }
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* split: one contiguous copy per piece, each its own node */

static void split_backward(Ctx *c, Node *nd) {
    Tensor *x = nd->in[0], *y = nd->out;
    if (!x->requires_grad) return;
    int dim = (int)nd->i[0];
    size_t start = (size_t)nd->i[1];
    size_t outer, inner;
    split_dims(x->shape, x->ndim, dim, &outer, &inner);
    size_t xrow = x->shape[dim] * inner, yrow = y->shape[dim] * inner;
    float *gx = tensor_grad(c, x);  // (outer, xrow)
    const float *g = y->grad;       // (outer, yrow)
#pragma omp parallel for schedule(static) if (y->numel >= PAR_MIN)
    for (size_t o = 0; o < outer; o++) {
        float *dst = gx + o * xrow + start * inner;
        const float *src = g + o * yrow;
        for (size_t i = 0; i < yrow; i++) dst[i] += src[i];
    }
}

void op_split(Ctx *c, Tensor *x, int dim, const size_t *sizes, int n, Tensor **out) {
    dim = norm_dim(c, "op_split", x, dim);
    size_t total = 0;
    for (int k = 0; k < n; k++) total += sizes[k];
    if (n < 1 || total != x->shape[dim]) {
        char b[64];
        ctx_fail(c, "op_split: %d sizes adding up to %zu do not cover dim %d of %s", n, total, dim,
                 tensor_shape_str(x, b, sizeof b));
    }
    x = op_contiguous(c, x);
    size_t outer, inner;
    split_dims(x->shape, x->ndim, dim, &outer, &inner);
    size_t xrow = x->shape[dim] * inner, start = 0;
    for (int k = 0; k < n; k++) {
        size_t shape[VT_MAX_DIMS];
        memcpy(shape, x->shape, sizeof shape);
        shape[dim] = sizes[k];
        Tensor *y = tensor_new(c, x->ndim, shape);
        size_t yrow = sizes[k] * inner;
#pragma omp parallel for schedule(static) if (y->numel >= PAR_MIN)
        for (size_t o = 0; o < outer; o++)
            memcpy(y->data + o * yrow, x->data + o * xrow + start * inner, yrow * sizeof(float));
        Node *nd = op_record(c, "split", split_backward, y, &x, 1);
        if (nd) {
            nd->i[0] = dim;
            nd->i[1] = (long)start;
        }
        out[k] = y;
        start += sizes[k];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* index_select / embedding: out[o, j, :] = x[o, idx[j], :] */

static void gather_backward(Ctx *c, Node *nd) {
    Tensor *x = nd->in[0], *y = nd->out;
    if (!x->requires_grad) return;
    int dim = (int)nd->i[0];
    const int32_t *idx = nd->saved;  // (n)
    size_t n = y->shape[dim], len = x->shape[dim];
    size_t outer, inner;
    split_dims(x->shape, x->ndim, dim, &outer, &inner);
    float *gx = tensor_grad(c, x);  // (outer, len, inner)
    const float *g = y->grad;       // (outer, n, inner)
    /* Repeated indices add into one row, so work is split by (outer, column chunk): each work item
     * owns its columns of gx and walks j in order, which keeps the sums deterministic. */
    size_t nchunk = (inner + GATHER_CHUNK - 1) / GATHER_CHUNK;
    size_t work = outer * nchunk;
#pragma omp parallel for schedule(static) if (y->numel >= PAR_MIN)
    for (size_t w = 0; w < work; w++) {
        size_t o = w / nchunk, i0 = (w % nchunk) * GATHER_CHUNK;
        size_t cnt = inner - i0 < GATHER_CHUNK ? inner - i0 : GATHER_CHUNK;
        for (size_t j = 0; j < n; j++) {
            float *dst = gx + (o * len + (size_t)idx[j]) * inner + i0;
            const float *src = g + (o * n + j) * inner + i0;
            for (size_t i = 0; i < cnt; i++) dst[i] += src[i];
        }
    }
}

static Tensor *gather(Ctx *c, const char *name, Tensor *x, int dim, const int32_t *idx, size_t n) {
    dim = norm_dim(c, name, x, dim);
    size_t len = x->shape[dim];
    for (size_t j = 0; j < n; j++) {
        if (idx[j] < 0 || (size_t)idx[j] >= len) {
            char b[64];
            ctx_fail(c, "%s: index %d (position %zu) is out of range for dim %d of %s", name, idx[j], j, dim,
                     tensor_shape_str(x, b, sizeof b));
        }
    }
    x = op_contiguous(c, x);
    int32_t *saved = arena_alloc(&c->step, (n ? n : 1) * sizeof(int32_t));  // (n)
    if (n) memcpy(saved, idx, n * sizeof(int32_t));
    size_t shape[VT_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[dim] = n;
    Tensor *out = tensor_new(c, x->ndim, shape);
    size_t outer, inner;
    split_dims(x->shape, x->ndim, dim, &outer, &inner);
    size_t rows = outer * n;
#pragma omp parallel for schedule(static) if (out->numel >= PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        size_t o = r / n, j = r % n;
        memcpy(out->data + r * inner, x->data + (o * len + (size_t)saved[j]) * inner, inner * sizeof(float));
    }
    Node *nd = op_record(c, name + 3, gather_backward, out, &x, 1);
    if (nd) {
        nd->saved = saved;
        nd->i[0] = dim;
    }
    return out;
}

Tensor *op_index_select(Ctx *c, Tensor *x, int dim, const int32_t *idx, size_t n) {
    return gather(c, "op_index_select", x, dim, idx, n);
}

Tensor *op_embedding(Ctx *c, Tensor *table, const int32_t *ids, size_t n) {
    if (table->ndim != 2) {
        char b[64];
        ctx_fail(c, "op_embedding: table must be (V, D), got %s", tensor_shape_str(table, b, sizeof b));
    }
    return gather(c, "op_embedding", table, 0, ids, n);
}

/* ------------------------------------------------------------------------------------------ */
/* where(mask, a, b): mask, a and b broadcast to one output shape */

typedef struct WhereSaved {
    const uint8_t *mask;              // (mask shape)
    ptrdiff_t ms[VT_MAX_DIMS];        /* mask strides in the output's index space */
} WhereSaved;

/* dst[i] = m[i] ? p[i] : q[i] over `shape`, dst contiguous, the others by strides */
static void where_loop(int nd, const size_t *shape, size_t numel, float *dst, const uint8_t *m,
                       const ptrdiff_t *ms, const float *p, const ptrdiff_t *ps, const float *q,
                       const ptrdiff_t *qs) {
    size_t inner = shape[nd - 1], rows = inner ? numel / inner : 0;
    ptrdiff_t mi = ms[nd - 1], pi = ps[nd - 1], qi = qs[nd - 1];
#pragma omp parallel for schedule(static) if (numel >= PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        ptrdiff_t mo = 0, po = 0, qo = 0;
        size_t t = r;
        for (int d = nd - 2; d >= 0; d--) {
            size_t i = t % shape[d];
            t /= shape[d];
            mo += (ptrdiff_t)i * ms[d];
            po += (ptrdiff_t)i * ps[d];
            qo += (ptrdiff_t)i * qs[d];
        }
        float *o = dst + r * inner;
        for (size_t i = 0; i < inner; i++)
            o[i] = m[mo + (ptrdiff_t)i * mi] ? p[po + (ptrdiff_t)i * pi] : q[qo + (ptrdiff_t)i * qi];
    }
}

static void where_backward(Ctx *c, Node *nd) {
    Tensor *out = nd->out;
    const WhereSaved *s = nd->saved;
    static const float zero = 0.0f;
    ptrdiff_t so[VT_MAX_DIMS], sz[VT_MAX_DIMS] = {0}, t = 1;
    for (int d = out->ndim - 1; d >= 0; d--) {
        so[d] = t;
        t *= (ptrdiff_t)out->shape[d];
    }
    float *tmp = ctx_scratch(c, out->numel);  // (out shape)
    for (int k = 0; k < 2; k++) {
        Tensor *x = nd->in[k];
        if (!x->requires_grad) continue;
        /* a's gradient is g where the mask is set, b's where it is not; both summed back over
         * their broadcast dims */
        if (k == 0) where_loop(out->ndim, out->shape, out->numel, tmp, s->mask, s->ms, out->grad, so, &zero, sz);
        else where_loop(out->ndim, out->shape, out->numel, tmp, s->mask, s->ms, &zero, sz, out->grad, so);
        ptrdiff_t cx[VT_MAX_DIMS], sx[VT_MAX_DIMS];
        t = 1;
        for (int d = x->ndim - 1; d >= 0; d--) {
            cx[d] = t;
            t *= (ptrdiff_t)x->shape[d];
        }
        broadcast_strides(out->ndim, out->shape, x->ndim, x->shape, cx, sx);
        reduce_sum_strided(out->ndim, out->shape, tmp, so, tensor_grad(c, x), sx, 1.0f);
    }
    ctx_scratch_release(c, tmp, out->numel);
}

Tensor *op_where(Ctx *c, const uint8_t *mask, int mask_ndim, const size_t *mask_shape, Tensor *a, Tensor *b) {
    size_t ab[VT_MAX_DIMS] = {0}, shape[VT_MAX_DIMS] = {0};
    int nab = 0, nd = 0;
    if (mask_ndim < 0 || mask_ndim > VT_MAX_DIMS ||
        !broadcast_shape(a->ndim, a->shape, b->ndim, b->shape, &nab, ab) ||
        !broadcast_shape(nab, ab, mask_ndim, mask_shape, &nd, shape)) {
        char sa[64], sb[64], sm[64];
        Tensor mt = {.ndim = mask_ndim < 0 ? 0 : mask_ndim > VT_MAX_DIMS ? VT_MAX_DIMS : mask_ndim};
        for (int d = 0; d < mt.ndim; d++) mt.shape[d] = mask_shape[d];
        ctx_fail(c, "op_where: mask %s, a %s and b %s do not broadcast", tensor_shape_str(&mt, sm, sizeof sm),
                 tensor_shape_str(a, sa, sizeof sa), tensor_shape_str(b, sb, sizeof sb));
    }
    if (nd == 0) {  /* everything 0-dim: the engine has no 0-dim outputs */
        nd = 1;
        shape[0] = 1;
    }
    Tensor *out = tensor_new(c, nd, shape);
    WhereSaved *s = arena_alloc(&c->step, sizeof(WhereSaved));
    size_t mn = 1;
    ptrdiff_t mc[VT_MAX_DIMS];
    for (int d = mask_ndim - 1; d >= 0; d--) {
        mc[d] = (ptrdiff_t)mn;
        mn *= mask_shape[d];
    }
    uint8_t *m = arena_alloc(&c->step, mn ? mn : 1);  // (mask shape)
    if (mn) memcpy(m, mask, mn);
    s->mask = m;
    broadcast_strides(nd, shape, mask_ndim, mask_shape, mc, s->ms);
    ptrdiff_t sa[VT_MAX_DIMS], sb[VT_MAX_DIMS];
    broadcast_strides(nd, shape, a->ndim, a->shape, a->stride, sa);
    broadcast_strides(nd, shape, b->ndim, b->shape, b->stride, sb);
    where_loop(nd, shape, out->numel, out->data, m, s->ms, a->data, sa, b->data, sb);
    Tensor *in[2] = {a, b};
    Node *n = op_record(c, "where", where_backward, out, in, 2);
    if (n) n->saved = s;
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* masked_fill: out = mask ? value : x, mask in x's element order */

static void masked_fill_backward(Ctx *c, Node *nd) {
    Tensor *x = nd->in[0];
    if (!x->requires_grad) return;
    float *gx = tensor_grad(c, x);
    const float *g = nd->out->grad;
    const uint8_t *m = nd->saved;  // (numel)
    size_t len = x->numel;
#pragma omp parallel for schedule(static) if (len >= PAR_MIN)
    for (size_t i = 0; i < len; i++) gx[i] += m[i] ? 0.0f : g[i];
}

Tensor *op_masked_fill(Ctx *c, Tensor *x, const uint8_t *mask, float value) {
    x = op_contiguous(c, x);
    size_t len = x->numel;
    uint8_t *m = arena_alloc(&c->step, len ? len : 1);  // (numel)
    if (len) memcpy(m, mask, len);
    Tensor *out = tensor_new(c, x->ndim, x->shape);
    const float *xs = x->data;
    float *ys = out->data;
#pragma omp parallel for schedule(static) if (len >= PAR_MIN)
    for (size_t i = 0; i < len; i++) ys[i] = m[i] ? value : xs[i];
    Node *n = op_record(c, "masked_fill", masked_fill_backward, out, &x, 1);
    if (n) n->saved = m;
    return out;
}
