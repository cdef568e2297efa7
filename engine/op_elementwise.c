/* op_elementwise.c — add/sub/mul/div with NumPy/PyTorch broadcasting, scalar ops, bias add, and
 * the broadcasting kernels the other op files share (broadcast_shape, broadcast_strides,
 * reduce_sum_strided).
 *
 * Every binary op is one strided loop over the output's index space: each operand carries its
 * own strides in that space (0 along the dims it is broadcast over, its real strides otherwise,
 * so strided views are read in place).  Dims are merged wherever every operand allows it, which
 * turns the common cases into fast flat loops: same-shape contiguous inputs become one run,
 * (B,T,C) + (C) becomes a (B*T, C) loop whose inner run is contiguous against a fixed row.
 * Backward forms each input's full-size gradient and sums it back to the input's shape with
 * reduce_sum_strided, which sums in double in a fixed order (deterministic for any thread count).
 */
#include "engine.h"
#include "simd.h"
#include <string.h>

/* below this many elements a parallel region costs more than it saves */
#define PAR_MIN ((size_t)32768)
/* long rows are cut into chunks of this many elements so one flat run still splits over threads */
#define ROW_CHUNK ((size_t)8192)
/* reductions whose innermost dim is kept sum up to this many neighbouring outputs together
 * (double accumulators on the stack), so the source is read as sequential runs */
#define RED_BLOCK 1024

static void contig_strides(int nd, const size_t *shape, ptrdiff_t *st) {
    ptrdiff_t s = 1;
    for (int d = nd - 1; d >= 0; d--) {
        st[d] = s;
        s *= (ptrdiff_t)shape[d];
    }
}

static size_t shape_numel(int nd, const size_t *shape) {
    size_t n = 1;
    for (int d = 0; d < nd; d++) n *= shape[d];
    return n;
}

/* ------------------------------------------------------------------------------------------ */
/* Loop geometry: an index space shared by up to GEOM_OPS operands, each with its own strides. */

#define GEOM_OPS 3
typedef struct Geom {
    int ndim, nop;
    size_t shape[VT_MAX_DIMS];
    ptrdiff_t st[GEOM_OPS][VT_MAX_DIMS];
} Geom;

/* Drops size-1 dims (no operand moves along them) and merges dim d into d-1 wherever every
 * operand steps through both as a single run.  Leaves at least one dim. */
static void geom_coalesce(Geom *g) {
    int nd = 0;
    for (int d = 0; d < g->ndim; d++) {
        if (g->shape[d] == 1) continue;
        g->shape[nd] = g->shape[d];
        for (int k = 0; k < g->nop; k++) g->st[k][nd] = g->st[k][d];
        nd++;
    }
    if (nd == 0) {
        g->ndim = 1;
        g->shape[0] = 1;
        for (int k = 0; k < g->nop; k++) g->st[k][0] = 0;
        return;
    }
    int m = 0;
    for (int d = 1; d < nd; d++) {
        int merge = 1;
        for (int k = 0; k < g->nop; k++)
            if (g->st[k][m] != g->st[k][d] * (ptrdiff_t)g->shape[d]) merge = 0;
        if (merge) {
            g->shape[m] *= g->shape[d];
            for (int k = 0; k < g->nop; k++) g->st[k][m] = g->st[k][d];
        } else {
            m++;
            g->shape[m] = g->shape[d];
            for (int k = 0; k < g->nop; k++) g->st[k][m] = g->st[k][d];
        }
    }
    g->ndim = m + 1;
}

/* Element offsets of every operand at the start of `row` (an index over all dims but the last). */
static void geom_row_offsets(const Geom *g, size_t row, ptrdiff_t *off) {
    for (int k = 0; k < g->nop; k++) off[k] = 0;
    for (int d = g->ndim - 2; d >= 0; d--) {
        size_t i = row % g->shape[d];
        row /= g->shape[d];
        for (int k = 0; k < g->nop; k++) off[k] += (ptrdiff_t)i * g->st[k][d];
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Shared broadcasting kernels (declared in engine.h) */

int broadcast_shape(int na, const size_t *sa, int nb, const size_t *sb, int *nd_out, size_t *out) {
    int n = na > nb ? na : nb;
    for (int d = 0; d < n; d++) {
        int da = d - (n - na), db = d - (n - nb);
        size_t x = da >= 0 ? sa[da] : 1, y = db >= 0 ? sb[db] : 1;
        if (x != y && x != 1 && y != 1) return 0;
        out[d] = x == 1 ? y : x;
    }
    *nd_out = n;
    return 1;
}

void broadcast_strides(int ondim, const size_t *oshape, int nd, const size_t *shape,
                       const ptrdiff_t *stride, ptrdiff_t *out) {
    for (int d = 0; d < ondim; d++) {
        int k = d - (ondim - nd);
        out[d] = (k >= 0 && shape[k] == oshape[d] && shape[k] != 1) ? stride[k] : 0;
    }
}

/* dst += scale * src where no dim is reduced: one strided axpy, long rows cut into chunks */
static void add_strided(const Geom *g, const float *src, float *dst, float scale) {
    size_t inner = g->shape[g->ndim - 1];
    size_t numel = shape_numel(g->ndim, g->shape);
    size_t rows = numel / inner, nchunk = (inner + ROW_CHUNK - 1) / ROW_CHUNK;
    ptrdiff_t ds = g->st[0][g->ndim - 1], ss = g->st[1][g->ndim - 1];
    size_t work = rows * nchunk;
#pragma omp parallel for schedule(static) if (numel >= PAR_MIN)
    for (size_t w = 0; w < work; w++) {
        size_t r = w / nchunk, c0 = (w % nchunk) * ROW_CHUNK;
        size_t len = inner - c0 < ROW_CHUNK ? inner - c0 : ROW_CHUNK;
        ptrdiff_t off[GEOM_OPS];
        geom_row_offsets(g, r, off);
        float *d = dst + off[0] + (ptrdiff_t)c0 * ds;
        const float *s = src + off[1] + (ptrdiff_t)c0 * ss;
        if (ds == 1 && ss == 1) {
            for (size_t i = 0; i < len; i++) d[i] += scale * s[i];
        } else {
            for (size_t i = 0; i < len; i++) d[(ptrdiff_t)i * ds] += scale * s[(ptrdiff_t)i * ss];
        }
    }
}

void reduce_sum_strided(int ndim, const size_t *shape, const float *src, const ptrdiff_t *src_stride,
                        float *dst, const ptrdiff_t *dst_stride, float scale) {
    Geom g = {.ndim = ndim, .nop = 2};
    for (int d = 0; d < ndim; d++) {
        g.shape[d] = shape[d];
        g.st[0][d] = dst_stride[d];
        g.st[1][d] = src_stride[d];
    }
    if (shape_numel(ndim, shape) == 0) return;  /* empty sums add nothing */
    geom_coalesce(&g);
    size_t numel = shape_numel(g.ndim, g.shape);

    /* kept dims (dst moves along them) and reduced dims (dst stride 0) */
    int kd[VT_MAX_DIMS], rd[VT_MAX_DIMS], nk = 0, nr = 0;
    size_t nred = 1;
    for (int d = 0; d < g.ndim; d++) {
        if (g.st[0][d] == 0 && g.shape[d] > 1) {
            rd[nr++] = d;
            nred *= g.shape[d];
        } else kd[nk++] = d;
    }
    if (nr == 0) {
        add_strided(&g, src, dst, scale);
        return;
    }
    const ptrdiff_t *ds = g.st[0], *ss = g.st[1];
    int L = g.ndim - 1;

    if (ds[L] != 0) {
        /* innermost dim kept (bias gradients, sums over a middle dim): a work item sums a whole
         * row of up to RED_BLOCK outputs, each reduced position adding one sequential run of the
         * source.  Streaming whole rows is several times faster than cutting them into narrow
         * column blocks for more parallelism; the sum is memory-bound anyway. */
        size_t nL = g.shape[L];
        size_t nouter = 1;
        for (int q = 0; q < nk - 1; q++) nouter *= g.shape[kd[q]];
        size_t nblk = (nL + RED_BLOCK - 1) / RED_BLOCK;
        size_t work = nouter * nblk;
#pragma omp parallel for schedule(static) if (numel >= PAR_MIN)
        for (size_t w = 0; w < work; w++) {
            size_t o = w / nblk, j0 = (w % nblk) * RED_BLOCK;
            size_t len = nL - j0 < RED_BLOCK ? nL - j0 : RED_BLOCK;
            ptrdiff_t doff = 0, soff = 0;
            for (int q = nk - 2; q >= 0; q--) {
                size_t i = o % g.shape[kd[q]];
                o /= g.shape[kd[q]];
                doff += (ptrdiff_t)i * ds[kd[q]];
                soff += (ptrdiff_t)i * ss[kd[q]];
            }
            double acc[RED_BLOCK];  // (len) partial sums of this block of outputs
            for (size_t j = 0; j < len; j++) acc[j] = 0;
            const float *s0 = src + soff + (ptrdiff_t)j0 * ss[L];
            size_t idx[VT_MAX_DIMS] = {0};
            ptrdiff_t roff = 0;
            for (size_t r = 0; r < nred; r++) {
                const float *s = s0 + roff;
                if (ss[L] == 1) {
                    for (size_t j = 0; j < len; j++) acc[j] += s[j];
                } else {
                    for (size_t j = 0; j < len; j++) acc[j] += s[(ptrdiff_t)j * ss[L]];
                }
                for (int q = nr - 1; q >= 0; q--) {  /* odometer over the reduced dims */
                    roff += ss[rd[q]];
                    if (++idx[q] < g.shape[rd[q]]) break;
                    roff -= ss[rd[q]] * (ptrdiff_t)g.shape[rd[q]];
                    idx[q] = 0;
                }
            }
            float *d = dst + doff + (ptrdiff_t)j0 * ds[L];
            for (size_t j = 0; j < len; j++) d[(ptrdiff_t)j * ds[L]] += (float)(scale * acc[j]);
        }
    } else {
        /* innermost dim reduced: each output sums runs along it, outer reduced dims by odometer */
        size_t nout = 1;
        for (int q = 0; q < nk; q++) nout *= g.shape[kd[q]];
        size_t nL = g.shape[L];
        ptrdiff_t sL = ss[L];
        size_t nrow = nred / nL;  /* positions of the reduced dims other than L */
#pragma omp parallel for schedule(static) if (numel >= PAR_MIN)
        for (size_t o = 0; o < nout; o++) {
            size_t t = o;
            ptrdiff_t doff = 0, soff = 0;
            for (int q = nk - 1; q >= 0; q--) {
                size_t i = t % g.shape[kd[q]];
                t /= g.shape[kd[q]];
                doff += (ptrdiff_t)i * ds[kd[q]];
                soff += (ptrdiff_t)i * ss[kd[q]];
            }
            double acc = 0;
            size_t idx[VT_MAX_DIMS] = {0};
            ptrdiff_t roff = 0;
            for (size_t r = 0; r < nrow; r++) {
                const float *s = src + soff + roff;
                if (sL == 1) {  /* 4 interleaved sums: no serial add chain, fixed order */
                    double a4[4] = {0, 0, 0, 0};
                    size_t j = 0;
                    for (; j + 4 <= nL; j += 4)
                        for (int q = 0; q < 4; q++) a4[q] += s[j + q];
                    for (; j < nL; j++) acc += s[j];
                    acc += (a4[0] + a4[1]) + (a4[2] + a4[3]);
                } else {
                    for (size_t j = 0; j < nL; j++) acc += s[(ptrdiff_t)j * sL];
                }
                for (int q = nr - 2; q >= 0; q--) {
                    roff += ss[rd[q]];
                    if (++idx[q] < g.shape[rd[q]]) break;
                    roff -= ss[rd[q]] * (ptrdiff_t)g.shape[rd[q]];
                    idx[q] = 0;
                }
            }
            dst[doff] += (float)(scale * acc);
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Binary kernel */

enum { BIN_ADD, BIN_SUB, BIN_MUL, BIN_DIV };

/* o[i] = x OP y (or += with acc), specialised on the operands' inner strides: 1 (a run), 0 (a
 * broadcast scalar) or anything (a strided view). */
#define ROW_LOOP(EXPR, XV, YV)                                                                     \
    do {                                                                                           \
        if (acc) {                                                                                 \
            for (size_t i = 0; i < n; i++) {                                                       \
                const float x = (XV), y = (YV);                                                    \
                o[i] += (EXPR);                                                                    \
            }                                                                                      \
        } else {                                                                                   \
            for (size_t i = 0; i < n; i++) {                                                       \
                const float x = (XV), y = (YV);                                                    \
                o[i] = (EXPR);                                                                     \
            }                                                                                      \
        }                                                                                          \
    } while (0)

#define ROW_STRIDES(EXPR)                                                                          \
    do {                                                                                           \
        if (sa == 1 && sb == 1) ROW_LOOP(EXPR, a[i], b[i]);                                        \
        else if (sa == 1 && sb == 0) {                                                             \
            const float bv = b[0];                                                                 \
            ROW_LOOP(EXPR, a[i], bv);                                                              \
        } else if (sa == 0 && sb == 1) {                                                           \
            const float av = a[0];                                                                 \
            ROW_LOOP(EXPR, av, b[i]);                                                              \
        } else ROW_LOOP(EXPR, a[(ptrdiff_t)i * sa], b[(ptrdiff_t)i * sb]);                         \
    } while (0)

static void binary_row(int op, int acc, float *o, const float *a, ptrdiff_t sa, const float *b,
                       ptrdiff_t sb, size_t n) {
    switch (op) {
    case BIN_ADD: ROW_STRIDES(x + y); break;
    case BIN_SUB: ROW_STRIDES(x - y); break;
    case BIN_MUL: ROW_STRIDES(x * y); break;
    default: ROW_STRIDES(x / y); break;
    }
}

/* o = a OP b over `shape` (o += a OP b with acc).  o is contiguous in `shape`; a and b are read
 * through their strides in that index space (0 = broadcast). */
static void binary_apply(int op, int acc, int ndim, const size_t *shape, float *o, const float *a,
                         const ptrdiff_t *sa, const float *b, const ptrdiff_t *sb) {
    Geom g = {.ndim = ndim, .nop = 3};
    contig_strides(ndim, shape, g.st[0]);
    for (int d = 0; d < ndim; d++) {
        g.shape[d] = shape[d];
        g.st[1][d] = sa[d];
        g.st[2][d] = sb[d];
    }
    size_t numel = shape_numel(ndim, shape);
    if (numel == 0) return;
    geom_coalesce(&g);
    /* o is contiguous, so its innermost remaining dim has stride 1 */
    size_t inner = g.shape[g.ndim - 1], rows = numel / inner;
    size_t nchunk = (inner + ROW_CHUNK - 1) / ROW_CHUNK;
    ptrdiff_t ia = g.st[1][g.ndim - 1], ib = g.st[2][g.ndim - 1];
    size_t work = rows * nchunk;
#pragma omp parallel for schedule(static) if (numel >= PAR_MIN)
    for (size_t w = 0; w < work; w++) {
        size_t r = w / nchunk, c0 = (w % nchunk) * ROW_CHUNK;
        size_t len = inner - c0 < ROW_CHUNK ? inner - c0 : ROW_CHUNK;
        ptrdiff_t off[GEOM_OPS];
        geom_row_offsets(&g, r, off);
        binary_row(op, acc, o + off[0] + c0, a + off[1] + (ptrdiff_t)c0 * ia, ia,
                   b + off[2] + (ptrdiff_t)c0 * ib, ib, len);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* add, sub, mul, div */

static const char *const bin_name[] = {"op_add", "op_sub", "op_mul", "op_div"};

/* strides of x's gradient buffer (contiguous in x's shape) in out's index space */
static void grad_strides(const Tensor *out, const Tensor *x, ptrdiff_t *st) {
    ptrdiff_t cx[VT_MAX_DIMS];
    contig_strides(x->ndim, x->shape, cx);
    broadcast_strides(out->ndim, out->shape, x->ndim, x->shape, cx, st);
}

/* gx += scale * src, src (out's shape, contiguous) summed over x's broadcast dims */
static void grad_reduce(const Tensor *out, const Tensor *x, float *gx, const float *src, float scale) {
    ptrdiff_t so[VT_MAX_DIMS], sx[VT_MAX_DIMS];
    contig_strides(out->ndim, out->shape, so);
    grad_strides(out, x, sx);
    reduce_sum_strided(out->ndim, out->shape, src, so, gx, sx, scale);
}

static void add_backward(Ctx *c, Node *n) {
    Tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    float sign_b = n->f[0];  /* +1 for add, -1 for sub */
    if (a->requires_grad) grad_reduce(out, a, tensor_grad(c, a), out->grad, 1.0f);
    if (b->requires_grad) grad_reduce(out, b, tensor_grad(c, b), out->grad, sign_b);
}

/* How x broadcasts against out, for the fused product-reductions of mul_backward: 1 when x is
 * out's leading dims followed by ones (a per-channel gate (N, C, 1, 1) on (N, C, H, W)): gx[r] sums
 * a contiguous run of `inner`; 2 when x is out's trailing dims (LayerScale (C) on (B, T, C)): gx[j]
 * sums a column; 0 otherwise.  *inner = elements of out per element of x (case 1) or x's numel. */
static int bcast_kind(const Tensor *out, const Tensor *x, size_t *inner) {
    int nd = out->ndim, off = nd - x->ndim;
    if (off < 0 || x->numel == 0) return 0;
    int k = nd;   /* case 1: dims [0, k) match, [k, nd) are 1 in x */
    while (k > 0 && k - 1 >= off && x->shape[k - 1 - off] == 1 && out->shape[k - 1] != 1) k--;
    int lead = off == 0;
    for (int d = 0; d < k && lead; d++) lead = x->shape[d - off] == out->shape[d];
    if (lead && k < nd) {
        *inner = out->numel / x->numel;
        return 1;
    }
    int d0 = off;   /* case 2: x's leading dims are 1, the rest match out's trailing dims */
    while (d0 < nd && x->shape[d0 - off] == 1) d0++;
    for (int d = d0; d < nd; d++)
        if (x->shape[d - off] != out->shape[d]) return 0;
    *inner = x->numel;
    return 2;
}

/* gx += reduce(g * y) without a full-size temporary, for the two broadcasts above; y contiguous in
 * out's shape.  Each gx element is one sum in double in a fixed order (any thread count). */
static int grad_mul_reduce(const Tensor *out, const Tensor *y, const Tensor *x, float *gx) {
    size_t inner;
    int kind = bcast_kind(out, x, &inner);
    if (!kind || y->numel != out->numel || !tensor_is_contiguous(y)) return 0;
    const float *g = out->grad, *yv = y->data;
    size_t n = out->numel;
    if (kind == 1) {
        size_t rows = x->numel;   // gx (rows); g, y (rows, inner)
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t r = 0; r < rows; r++) gx[r] += (float)simd_dot_f64(g + r * inner, yv + r * inner, inner);
    } else {
        size_t cols = inner, rows = n / cols;   // gx (cols); g, y (rows, cols)
        const size_t CB = 64;
        size_t nblk = (cols + CB - 1) / CB;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t b = 0; b < nblk; b++) {
            size_t j0 = b * CB, len = cols - j0 < CB ? cols - j0 : CB;
            double acc[64] = {0};   // (len) column sums, rows in order
            for (size_t r = 0; r < rows; r++) {
                const float *gr = g + r * cols + j0, *yr = yv + r * cols + j0;
                for (size_t j = 0; j < len; j++) acc[j] += (double)gr[j] * yr[j];
            }
            for (size_t j = 0; j < len; j++) gx[j0 + j] += (float)acc[j];
        }
    }
    return 1;
}

/* gx += reduce(g OP y), y read through its data strides; fused when x is not broadcast */
static void grad_times(Ctx *c, int op, const Tensor *out, Tensor *x, const Tensor *y) {
    ptrdiff_t so[VT_MAX_DIMS], sy[VT_MAX_DIMS];
    contig_strides(out->ndim, out->shape, so);
    broadcast_strides(out->ndim, out->shape, y->ndim, y->shape, y->stride, sy);
    float *gx = tensor_grad(c, x);
    if (x->numel == out->numel) {  /* x not broadcast: its gradient is laid out like out's */
        binary_apply(op, 1, out->ndim, out->shape, gx, out->grad, so, y->data, sy);
        return;
    }
    if (op == BIN_MUL && grad_mul_reduce(out, y, x, gx)) return;
    float *tmp = ctx_scratch(c, out->numel);  // (out shape)
    binary_apply(op, 0, out->ndim, out->shape, tmp, out->grad, so, y->data, sy);
    grad_reduce(out, x, gx, tmp, 1.0f);
    ctx_scratch_release(c, tmp, out->numel);
}

static void mul_backward(Ctx *c, Node *n) {
    Tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    if (a->requires_grad) grad_times(c, BIN_MUL, out, a, b);  /* da = g * b */
    if (b->requires_grad) grad_times(c, BIN_MUL, out, b, a);  /* db = g * a */
}

static void div_backward(Ctx *c, Node *n) {
    Tensor *a = n->in[0], *b = n->in[1], *out = n->out;
    if (a->requires_grad) grad_times(c, BIN_DIV, out, a, b);  /* da = g / b */
    if (b->requires_grad) {
        /* db = -g * a / b^2, formed as ((g * a) / b) / b in out's shape, then summed back */
        ptrdiff_t so[VT_MAX_DIMS], sa[VT_MAX_DIMS], sb[VT_MAX_DIMS];
        contig_strides(out->ndim, out->shape, so);
        broadcast_strides(out->ndim, out->shape, a->ndim, a->shape, a->stride, sa);
        broadcast_strides(out->ndim, out->shape, b->ndim, b->shape, b->stride, sb);
        float *tmp = ctx_scratch(c, out->numel);  // (out shape)
        binary_apply(BIN_MUL, 0, out->ndim, out->shape, tmp, out->grad, so, a->data, sa);
        binary_apply(BIN_DIV, 0, out->ndim, out->shape, tmp, tmp, so, b->data, sb);
        binary_apply(BIN_DIV, 0, out->ndim, out->shape, tmp, tmp, so, b->data, sb);
        grad_reduce(out, b, tensor_grad(c, b), tmp, -1.0f);
        ctx_scratch_release(c, tmp, out->numel);
    }
}

static Tensor *binary_op(Ctx *c, int op, Tensor *a, Tensor *b) {
    int nd = 0;
    size_t shape[VT_MAX_DIMS] = {0};
    if (!broadcast_shape(a->ndim, a->shape, b->ndim, b->shape, &nd, shape)) {
        char sa[64], sb[64];
        ctx_fail(c, "%s: shapes %s and %s do not broadcast", bin_name[op], tensor_shape_str(a, sa, sizeof sa),
                 tensor_shape_str(b, sb, sizeof sb));
    }
    Tensor *out = tensor_new(c, nd, shape);
    ptrdiff_t sa[VT_MAX_DIMS], sb[VT_MAX_DIMS];
    broadcast_strides(nd, shape, a->ndim, a->shape, a->stride, sa);
    broadcast_strides(nd, shape, b->ndim, b->shape, b->stride, sb);
    binary_apply(op, 0, nd, shape, out->data, a->data, sa, b->data, sb);

    static const BackwardFn bw[] = {add_backward, add_backward, mul_backward, div_backward};
    Tensor *in[2] = {a, b};
    Node *n = op_record(c, bin_name[op] + 3, bw[op], out, in, 2);
    if (n) n->f[0] = op == BIN_SUB ? -1.0f : 1.0f;
    return out;
}

Tensor *op_add(Ctx *c, Tensor *a, Tensor *b) { return binary_op(c, BIN_ADD, a, b); }
Tensor *op_sub(Ctx *c, Tensor *a, Tensor *b) { return binary_op(c, BIN_SUB, a, b); }
Tensor *op_mul(Ctx *c, Tensor *a, Tensor *b) { return binary_op(c, BIN_MUL, a, b); }
Tensor *op_div(Ctx *c, Tensor *a, Tensor *b) { return binary_op(c, BIN_DIV, a, b); }

/* ------------------------------------------------------------------------------------------ */
/* scalar ops: the scalar is an operand of stride 0, so strided x is read in place */

static void scale_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *out = n->out;
    if (!x->requires_grad) return;
    float s = n->f[0];  /* 1 for add_scalar */
    ptrdiff_t so[VT_MAX_DIMS], zero[VT_MAX_DIMS] = {0};
    contig_strides(out->ndim, out->shape, so);
    binary_apply(BIN_MUL, 1, out->ndim, out->shape, tensor_grad(c, x), out->grad, so, &s, zero);
}

static Tensor *scalar_op(Ctx *c, int op, Tensor *x, float s, const char *name) {
    Tensor *out = tensor_new(c, x->ndim, x->shape);
    ptrdiff_t zero[VT_MAX_DIMS] = {0};
    binary_apply(op, 0, x->ndim, x->shape, out->data, x->data, x->stride, &s, zero);
    Node *n = op_record(c, name, scale_backward, out, &x, 1);
    if (n) n->f[0] = op == BIN_MUL ? s : 1.0f;
    return out;
}

Tensor *op_scale(Ctx *c, Tensor *x, float s) { return scalar_op(c, BIN_MUL, x, s, "scale"); }
Tensor *op_add_scalar(Ctx *c, Tensor *x, float s) { return scalar_op(c, BIN_ADD, x, s, "add_scalar"); }

/* ------------------------------------------------------------------------------------------ */
/* bias add: b (shape[dim]) broadcast along every other dim, e.g. a conv bias over (N, C, H, W) */

static void bias_add_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *b = n->in[1], *out = n->out;
    int dim = (int)n->i[0];
    ptrdiff_t so[VT_MAX_DIMS];
    contig_strides(out->ndim, out->shape, so);
    if (x->requires_grad) reduce_sum_strided(out->ndim, out->shape, out->grad, so, tensor_grad(c, x), so, 1.0f);
    if (b->requires_grad) {
        ptrdiff_t sb[VT_MAX_DIMS] = {0};
        sb[dim] = 1;  /* b's gradient is contiguous */
        reduce_sum_strided(out->ndim, out->shape, out->grad, so, tensor_grad(c, b), sb, 1.0f);
    }
}

Tensor *op_bias_add(Ctx *c, Tensor *x, Tensor *b, int dim) {
    char sx[64], sbs[64];
    if (dim < 0) dim += x->ndim;
    if (dim < 0 || dim >= x->ndim)
        ctx_fail(c, "op_bias_add: dim %d is out of range for %s", dim, tensor_shape_str(x, sx, sizeof sx));
    if (b->ndim != 1 || b->shape[0] != x->shape[dim])
        ctx_fail(c, "op_bias_add: bias %s does not match dim %d of %s", tensor_shape_str(b, sbs, sizeof sbs), dim,
                 tensor_shape_str(x, sx, sizeof sx));
    Tensor *out = tensor_new(c, x->ndim, x->shape);
    ptrdiff_t sb[VT_MAX_DIMS] = {0};
    sb[dim] = b->stride[0];
    binary_apply(BIN_ADD, 0, x->ndim, x->shape, out->data, x->data, x->stride, b->data, sb);
    Tensor *in[2] = {x, b};
    Node *n = op_record(c, "bias_add", bias_add_backward, out, in, 2);
    if (n) n->i[0] = dim;
    return out;
}
