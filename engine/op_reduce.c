/* op_reduce.c — sum, mean and max over one dim (keepdim as PyTorch), sum and mean of everything.
 *
 * Sums run through reduce_sum_strided (op_elementwise.c): strided inputs are read in place and
 * every output is accumulated in double in a fixed order, so results are identical for any
 * thread count.  sum_all/mean_all add fixed-size blocks in double and then the block sums in
 * order, for the same reason.
 */
#include "engine.h"

#define PAR_MIN ((size_t)32768)
#define SUM_BLOCK ((size_t)4096)  /* elements per partial sum of sum_all */
#define MAX_CHUNK ((size_t)1024)  /* inner positions per work item of max */

static int reduce_dim(Ctx *c, const char *op, const Tensor *x, int dim) {
    int d = dim < 0 ? dim + x->ndim : dim;
    if (d < 0 || d >= x->ndim) {
        char b[64];
        ctx_fail(c, "%s: dim %d is out of range for %s", op, dim, tensor_shape_str(x, b, sizeof b));
    }
    return d;
}

/* Output shape of a reduction over `dim`.  A 1-D input reduced without keepdim gives (1) rather
 * than PyTorch's 0-dim tensor: the engine has no 0-dim tensors. */
static int reduced_shape(const Tensor *x, int dim, int keepdim, size_t *shape) {
    int nd = 0;
    for (int d = 0; d < x->ndim; d++) {
        if (d == dim) {
            if (keepdim) shape[nd++] = 1;
        } else shape[nd++] = x->shape[d];
    }
    if (nd == 0) shape[nd++] = 1;
    return nd;
}

/* x viewed as (outer, len, inner) around `dim` */
static void split_dims(const Tensor *x, int dim, size_t *outer, size_t *len, size_t *inner) {
    *outer = 1;
    *inner = 1;
    for (int d = 0; d < dim; d++) *outer *= x->shape[d];
    for (int d = dim + 1; d < x->ndim; d++) *inner *= x->shape[d];
    *len = x->shape[dim];
}

/* ------------------------------------------------------------------------------------------ */
/* sum, mean over one dim */

/* gx[o, k, i] += scale * g[o, i] */
static void sum_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0];
    if (!x->requires_grad) return;
    float *gx = tensor_grad(c, x);     // (outer, len, inner)
    const float *g = n->out->grad;     // (outer, inner)
    float scale = n->f[0];
    size_t outer, len, inner;
    split_dims(x, (int)n->i[0], &outer, &len, &inner);
    size_t rows = outer * len;
#pragma omp parallel for schedule(static) if (x->numel >= PAR_MIN)
    for (size_t r = 0; r < rows; r++) {
        const float *gr = g + (r / len) * inner;
        float *d = gx + r * inner;
        for (size_t i = 0; i < inner; i++) d[i] += scale * gr[i];
    }
}

static Tensor *sum_op(Ctx *c, const char *name, Tensor *x, int dim, int keepdim, int mean) {
    dim = reduce_dim(c, name, x, dim);
    size_t shape[VT_MAX_DIMS];
    int nd = reduced_shape(x, dim, keepdim, shape);
    Tensor *out = tensor_zeros(c, nd, shape);
    /* out addressed in x's index space: contiguous strides of the keepdim shape, 0 along dim */
    ptrdiff_t ds[VT_MAX_DIMS], s = 1;
    for (int d = x->ndim - 1; d >= 0; d--) {
        ds[d] = d == dim ? 0 : s;
        if (d != dim) s *= (ptrdiff_t)x->shape[d];
    }
    float scale = mean ? 1.0f / (float)x->shape[dim] : 1.0f;
    reduce_sum_strided(x->ndim, x->shape, x->data, x->stride, out->data, ds, scale);
    Node *n = op_record(c, name + 3, sum_backward, out, &x, 1);
    if (n) {
        n->i[0] = dim;
        n->f[0] = scale;
    }
    return out;
}

Tensor *op_sum(Ctx *c, Tensor *x, int dim, int keepdim) { return sum_op(c, "op_sum", x, dim, keepdim, 0); }
Tensor *op_mean(Ctx *c, Tensor *x, int dim, int keepdim) { return sum_op(c, "op_mean", x, dim, keepdim, 1); }

/* ------------------------------------------------------------------------------------------ */
/* max over one dim; the gradient goes to the first argmax (ties) or the first NaN */

static void max_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0];
    if (!x->requires_grad) return;
    float *gx = tensor_grad(c, x);            // (outer, len, inner)
    const float *g = n->out->grad;            // (outer, inner)
    const int32_t *arg = n->saved;            // (outer, inner)
    size_t outer, len, inner;
    split_dims(x, (int)n->i[0], &outer, &len, &inner);
    size_t m = outer * inner;
    /* each output sends to its own input element: no two writes collide */
#pragma omp parallel for schedule(static) if (m >= PAR_MIN)
    for (size_t j = 0; j < m; j++) {
        size_t o = j / inner, i = j % inner;
        gx[(o * len + (size_t)arg[j]) * inner + i] += g[j];
    }
}

Tensor *op_max(Ctx *c, Tensor *x, int dim, int keepdim) {
    dim = reduce_dim(c, "op_max", x, dim);
    if (x->shape[dim] == 0) {
        char b[64];
        ctx_fail(c, "op_max: dim %d of %s is empty", dim, tensor_shape_str(x, b, sizeof b));
    }
    if ((uint64_t)x->shape[dim] > INT32_MAX) ctx_fail(c, "op_max: dim %d is too long for int32 argmax", dim);
    x = op_contiguous(c, x);
    size_t shape[VT_MAX_DIMS];
    int nd = reduced_shape(x, dim, keepdim, shape);
    Tensor *out = tensor_new(c, nd, shape);
    size_t outer, len, inner;
    split_dims(x, dim, &outer, &len, &inner);
    size_t nout = outer * inner;
    int32_t *arg = arena_alloc(&c->step, (nout ? nout : 1) * sizeof(int32_t));  // (outer, inner)
    const float *xs = x->data;  // (outer, len, inner)
    float *ys = out->data;      // (outer, inner)
    /* Rows of x are scanned in order keeping a running max: a strict `>` keeps the first argmax;
     * a NaN wins once and then stays (max propagates NaN, as in PyTorch). */
    if (inner == 1) {  /* max over the last dim: one contiguous scan per output */
#pragma omp parallel for schedule(static) if (x->numel >= PAR_MIN)
        for (size_t o = 0; o < outer; o++) {
            const float *row = xs + o * len;
            float best = row[0];
            size_t at = 0;
            for (size_t k = 1; k < len; k++) {
                float v = row[k];
                if (v > best || (v != v && best == best)) {
                    best = v;
                    at = k;
                }
            }
            ys[o] = best;
            arg[o] = (int32_t)at;
        }
    } else {  /* a running max per inner position, in chunks of whole rows */
        size_t nchunk = (inner + MAX_CHUNK - 1) / MAX_CHUNK;
        size_t work = outer * nchunk;
#pragma omp parallel for schedule(static) if (x->numel >= PAR_MIN)
        for (size_t w = 0; w < work; w++) {
            size_t o = w / nchunk, i0 = (w % nchunk) * MAX_CHUNK;
            size_t cnt = inner - i0 < MAX_CHUNK ? inner - i0 : MAX_CHUNK;
            float *y = ys + o * inner + i0;
            int32_t *a = arg + o * inner + i0;
            const float *xo = xs + o * len * inner + i0;
            for (size_t i = 0; i < cnt; i++) {
                y[i] = xo[i];
                a[i] = 0;
            }
            for (size_t k = 1; k < len; k++) {
                const float *row = xo + k * inner;
                for (size_t i = 0; i < cnt; i++) {
                    float v = row[i];
                    if (v > y[i] || (v != v && y[i] == y[i])) {
                        y[i] = v;
                        a[i] = (int32_t)k;
                    }
                }
            }
        }
    }
    Node *n = op_record(c, "max", max_backward, out, &x, 1);
    if (n) {
        n->i[0] = dim;
        n->saved = arg;
    }
    return out;
}

/* ------------------------------------------------------------------------------------------ */
/* sum and mean of every element -> (1) */

static void sum_all_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0];
    if (!x->requires_grad) return;
    float *gx = tensor_grad(c, x);
    const float gv = n->out->grad[0] * n->f[0];
    size_t len = x->numel;
#pragma omp parallel for schedule(static) if (len >= PAR_MIN)
    for (size_t i = 0; i < len; i++) gx[i] += gv;
}

static Tensor *sum_all_op(Ctx *c, const char *name, Tensor *x, int mean) {
    x = op_contiguous(c, x);
    size_t len = x->numel;
    size_t nblk = (len + SUM_BLOCK - 1) / SUM_BLOCK;
    double *part = arena_alloc(&c->step, (nblk ? nblk : 1) * sizeof(double));  // (nblk)
    const float *xs = x->data;
#pragma omp parallel for schedule(static) if (len >= PAR_MIN)
    for (size_t b = 0; b < nblk; b++) {
        size_t end = (b + 1) * SUM_BLOCK < len ? (b + 1) * SUM_BLOCK : len;
        /* 8 interleaved double sums, combined in a fixed order: vectorises, stays deterministic */
        double s8[8] = {0};
        size_t i = b * SUM_BLOCK;
        for (; i + 8 <= end; i += 8)
            for (int j = 0; j < 8; j++) s8[j] += xs[i + j];
        double s = 0;
        for (; i < end; i++) s += xs[i];
        part[b] = s + (((s8[0] + s8[1]) + (s8[2] + s8[3])) + ((s8[4] + s8[5]) + (s8[6] + s8[7])));
    }
    double total = 0;
    for (size_t b = 0; b < nblk; b++) total += part[b];
    float scale = mean ? 1.0f / (float)len : 1.0f;
    Tensor *out = tensor_new_(c, 1);
    out->data[0] = (float)(mean ? total / (double)len : total);
    Node *n = op_record(c, name, sum_all_backward, out, &x, 1);
    if (n) n->f[0] = scale;
    return out;
}

Tensor *op_sum_all(Ctx *c, Tensor *x) { return sum_all_op(c, "sum_all", x, 0); }
Tensor *op_mean_all(Ctx *c, Tensor *x) { return sum_all_op(c, "mean_all", x, 1); }
