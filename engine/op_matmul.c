/* op_matmul.c — batched matrix products on cblas_sgemm: op_matmul and op_linear.
 *
 * Both ops reduce to one plan: a batch of logical products C_i (M, N) = A_i (M, K) · B_i (K, N)
 * where every operand is a BLAS matrix (pointer, transpose flag, leading dimension).  A strided
 * view whose last two dims are transposed is just a transposed operand, so op_transpose costs
 * nothing here; only views BLAS cannot express (no unit stride in either of the last two dims)
 * are copied, through op_contiguous so their gradients still flow.
 *
 *   forward   C  = A · B              (op_linear: B = Wᵀ, so x·Wᵀ is an NT product)
 *   backward  dA += dC · Bᵀ           (op_linear: dX = dY · W, NN)
 *             dB += Aᵀ · dC           (op_linear: written into dW (OUT, IN) as dYᵀ · X, TN)
 *
 * Threading: one big sgemm (threaded by OpenBLAS) whenever the batch flattens into the rows of a
 * single product (B broadcast and A's rows evenly spaced); otherwise an OpenMP static loop over
 * batches with single-threaded sgemm inside (the OpenMP build of OpenBLAS runs single-threaded
 * inside a parallel region).  Batch reductions (dB of a broadcast B, the bias gradient) run in a
 * fixed order and no float is accumulated atomically, so a run is bitwise reproducible at a given
 * thread count.  Across thread counts, the OpenMP-over-batches path is bitwise identical too, but
 * a product threaded by OpenBLAS itself is not: OpenBLAS splits M and N by the thread count and
 * its edge tiles round differently (~1 ulp).  A fixed, thread-count-independent split of our own
 * measured 15% slower on the ViT shapes, so we keep OpenBLAS's.
 */
#include "engine.h"
#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <string.h>

/* A logical (rows, cols) matrix: element (r, c) is p[r*ld + c], or p[c*ld + r] when transposed. */
typedef struct Mat {
    float *p;
    int tr;       /* 1: stored as the transpose (cols, rows) */
    size_t ld;
} Mat;

static Mat mat_t(Mat m) {   /* the transpose is the same memory with the flag flipped */
    m.tr = !m.tr;
    return m;
}

/* C (M, N) = alpha * A (M, K) · B (K, N) + beta * C.  A transposed destination is handled as
 * Cᵀ = Bᵀ · Aᵀ, so gradients can be written straight into buffers of either orientation. */
static void gemm(size_t M, size_t N, size_t K, float alpha, Mat A, Mat B, float beta, Mat C) {
    if (M == 0 || N == 0) return;
    if (C.tr) {
        gemm(N, M, K, alpha, mat_t(B), mat_t(A), beta, mat_t(C));
        return;
    }
    if (K == 0) {   /* empty sum: C = beta * C (BLAS would do the same, but be explicit) */
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++) C.p[i * C.ld + j] = beta == 0.0f ? 0.0f : beta * C.p[i * C.ld + j];
        return;
    }
    cblas_sgemm(CblasRowMajor, A.tr ? CblasTrans : CblasNoTrans, B.tr ? CblasTrans : CblasNoTrans, (int)M, (int)N,
                (int)K, alpha, A.p, (int)A.ld, B.p, (int)B.ld, beta, C.p, (int)C.ld);
}

/* Express the last two dims of t (rows, cols) as a BLAS matrix; 0 when the strides do not allow
 * it (no unit stride in either dim).  Size-1 dims have meaningless strides and are ignored. */
static int mat_of(const Tensor *t, size_t rows, size_t cols, ptrdiff_t s_row, ptrdiff_t s_col, Mat *m) {
    *m = (Mat){t->data, 0, 1};
    if ((cols <= 1 || s_col == 1) && (rows <= 1 || s_row >= (ptrdiff_t)cols)) {
        m->tr = 0;
        m->ld = rows <= 1 ? (cols ? cols : 1) : (size_t)s_row;
    } else if ((rows <= 1 || s_row == 1) && (cols <= 1 || s_col >= (ptrdiff_t)rows)) {
        m->tr = 1;
        m->ld = cols <= 1 ? (rows ? rows : 1) : (size_t)s_col;
    } else return 0;
    return m->ld <= INT_MAX;
}

/* ---------------------------------------------------------------------------------------- */
/* the plan shared by op_matmul and op_linear */

typedef struct MmPlan {
    size_t M, N, K;
    size_t nbatch;                  /* product of A's batch dims */
    int nbd;                        /* number of batch dims (of A and of the output) */
    size_t bshape[VT_MAX_DIMS];     /* (nbd) batch shape */
    ptrdiff_t a_bs[VT_MAX_DIMS];    /* (nbd) element strides of A's batches */
    ptrdiff_t b_bs[VT_MAX_DIMS];    /* (nbd) element strides of B's batches, 0 = broadcast */
    ptrdiff_t gb_bs[VT_MAX_DIMS];   /* (nbd) strides of B's batches in B's contiguous gradient */
    size_t nbatch_b;                /* number of distinct B matrices */
    Mat A, B;                       /* batch 0 */
    Mat gB;                         /* B's gradient buffer for batch 0 (pointer set in backward) */
    int a_flat;                     /* A's batches stack into one (nbatch*M, K) NoTrans matrix */
} MmPlan;

static ptrdiff_t batch_offset(const MmPlan *p, const ptrdiff_t *bs, size_t i) {
    ptrdiff_t off = 0;
    for (int d = p->nbd - 1; d >= 0; d--) {
        off += (ptrdiff_t)(i % p->bshape[d]) * bs[d];
        i /= p->bshape[d];
    }
    return off;
}

static Mat mat_at(Mat m, ptrdiff_t off) {
    m.p += off;
    return m;
}

/* Can A's rows over all batches be read as one (nbatch*M, K) matrix with leading dim A.ld? */
static int plan_a_flat(const MmPlan *p) {
    if (p->A.tr) return 0;
    ptrdiff_t expect = (ptrdiff_t)(p->M * p->A.ld);  /* the stride the innermost batch dim needs */
    for (int d = p->nbd - 1; d >= 0; d--) {
        if (p->bshape[d] != 1 && p->a_bs[d] != expect) return 0;
        expect *= (ptrdiff_t)p->bshape[d];
    }
    return 1;
}

/* Batches run in an OpenMP loop (single-threaded sgemm each) unless there are too few of them to
 * balance over the threads and each is big enough for OpenBLAS's own threading to pay off. */
static int plan_parallel_batches(const MmPlan *p) {
    int nt = omp_get_max_threads();
    if (p->nbatch < 2 || nt < 2) return 0;
    double flops = 2.0 * (double)p->M * (double)p->N * (double)p->K;
    return p->nbatch % (size_t)nt == 0 || p->nbatch >= 4 * (size_t)nt || flops < 4e6;
}

/* C (nbatch, M, N) contiguous = A · B (+ C when beta = 1) */
static void plan_forward(const MmPlan *p, float *C, float beta) {
    size_t MN = p->M * p->N;
    if (p->nbatch_b == 1 && p->a_flat) {
        gemm(p->nbatch * p->M, p->N, p->K, 1.0f, p->A, p->B, beta, (Mat){C, 0, p->N});
    } else if (plan_parallel_batches(p)) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < p->nbatch; i++)
            gemm(p->M, p->N, p->K, 1.0f, mat_at(p->A, batch_offset(p, p->a_bs, i)),
                 mat_at(p->B, batch_offset(p, p->b_bs, i)), beta, (Mat){C + i * MN, 0, p->N});
    } else {
        for (size_t i = 0; i < p->nbatch; i++)
            gemm(p->M, p->N, p->K, 1.0f, mat_at(p->A, batch_offset(p, p->a_bs, i)),
                 mat_at(p->B, batch_offset(p, p->b_bs, i)), beta, (Mat){C + i * MN, 0, p->N});
    }
}

/* dA (nbatch, M, K) contiguous += dC · Bᵀ */
static void plan_backward_a(const MmPlan *p, const float *dC, float *dA) {
    size_t MN = p->M * p->N, MK = p->M * p->K;
    Mat gC = {(float *)dC, 0, p->N};
    if (p->nbatch_b == 1) {
        /* gradient buffers are contiguous, so the batch always stacks into rows here */
        gemm(p->nbatch * p->M, p->K, p->N, 1.0f, gC, mat_t(p->B), 1.0f, (Mat){dA, 0, p->K});
    } else if (plan_parallel_batches(p)) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < p->nbatch; i++)
            gemm(p->M, p->K, p->N, 1.0f, mat_at(gC, (ptrdiff_t)(i * MN)), mat_t(mat_at(p->B, batch_offset(p, p->b_bs, i))),
                 1.0f, (Mat){dA + i * MK, 0, p->K});
    } else {
        for (size_t i = 0; i < p->nbatch; i++)
            gemm(p->M, p->K, p->N, 1.0f, mat_at(gC, (ptrdiff_t)(i * MN)), mat_t(mat_at(p->B, batch_offset(p, p->b_bs, i))),
                 1.0f, (Mat){dA + i * MK, 0, p->K});
    }
}

/* dB += Aᵀ · dC, into p->gB (B's gradient buffer, either orientation) */
static void plan_backward_b(const MmPlan *p, const float *dC) {
    size_t MN = p->M * p->N;
    Mat gC = {(float *)dC, 0, p->N};
    if (p->nbatch_b == 1 && p->a_flat) {
        /* the sum over batches becomes part of the K loop of one product */
        gemm(p->K, p->N, p->nbatch * p->M, 1.0f, mat_t(p->A), gC, 1.0f, p->gB);
    } else if (p->nbatch_b == p->nbatch && plan_parallel_batches(p)) {
#pragma omp parallel for schedule(static)
        for (size_t i = 0; i < p->nbatch; i++)
            gemm(p->K, p->N, p->M, 1.0f, mat_t(mat_at(p->A, batch_offset(p, p->a_bs, i))), mat_at(gC, (ptrdiff_t)(i * MN)),
                 1.0f, mat_at(p->gB, batch_offset(p, p->gb_bs, i)));
    } else {
        /* broadcast B: batches sharing a gradient accumulate one after another, in batch order */
        for (size_t i = 0; i < p->nbatch; i++)
            gemm(p->K, p->N, p->M, 1.0f, mat_t(mat_at(p->A, batch_offset(p, p->a_bs, i))), mat_at(gC, (ptrdiff_t)(i * MN)),
                 1.0f, mat_at(p->gB, batch_offset(p, p->gb_bs, i)));
    }
}

/* ---------------------------------------------------------------------------------------- */
/* op_matmul: (..., M, K) @ (..., K, N) */

/* Fills the plan for a @ b; a and b are already BLAS-expressible (see matmul_operand). */
static void matmul_plan(Ctx *c, const Tensor *a, const Tensor *b, MmPlan *p) {
    char sa[64], sb[64];
    if (a->ndim < 2 || b->ndim < 2 || b->ndim > a->ndim)
        ctx_fail(c, "op_matmul: shapes %s and %s: need a (..., M, K) and b (K, N) or (..., K, N) with no more dims than a",
                 tensor_shape_str(a, sa, sizeof sa), tensor_shape_str(b, sb, sizeof sb));
    memset(p, 0, sizeof(*p));
    int na = a->ndim, nb = b->ndim;
    p->M = a->shape[na - 2];
    p->K = a->shape[na - 1];
    p->N = b->shape[nb - 1];
    if (b->shape[nb - 2] != p->K)
        ctx_fail(c, "op_matmul: shapes %s and %s: inner dims %zu and %zu differ", tensor_shape_str(a, sa, sizeof sa),
                 tensor_shape_str(b, sb, sizeof sb), p->K, b->shape[nb - 2]);
    p->nbd = na - 2;
    p->nbatch = 1;
    p->nbatch_b = 1;
    ptrdiff_t gstride = (ptrdiff_t)(p->K * p->N);
    for (int d = p->nbd - 1; d >= 0; d--) {
        int db = d - (na - nb);   /* b's dims align to the right */
        p->bshape[d] = a->shape[d];
        p->a_bs[d] = a->stride[d];
        p->nbatch *= a->shape[d];
        if (db >= 0 && b->shape[db] == a->shape[d] && b->shape[db] != 1) {
            p->b_bs[d] = b->stride[db];
            p->gb_bs[d] = gstride;
            gstride *= (ptrdiff_t)b->shape[db];
            p->nbatch_b *= b->shape[db];
        } else if (db < 0 || b->shape[db] == 1) {
            p->b_bs[d] = p->gb_bs[d] = 0;   /* broadcast */
        } else {
            ctx_fail(c, "op_matmul: shapes %s and %s: batch dims do not broadcast", tensor_shape_str(a, sa, sizeof sa),
                     tensor_shape_str(b, sb, sizeof sb));
        }
    }
    if (p->M > INT_MAX || p->N > INT_MAX || p->K > INT_MAX || p->nbatch * p->M > INT_MAX)
        ctx_fail(c, "op_matmul: shapes %s and %s are too large for BLAS int sizes", tensor_shape_str(a, sa, sizeof sa),
                 tensor_shape_str(b, sb, sizeof sb));
    mat_of(a, p->M, p->K, a->stride[na - 2], a->stride[na - 1], &p->A);
    mat_of(b, p->K, p->N, b->stride[nb - 2], b->stride[nb - 1], &p->B);
    p->gB = (Mat){NULL, 0, p->N};
    p->a_flat = plan_a_flat(p);
}

/* x itself when its last two dims are a BLAS matrix, else a contiguous copy (with gradient) */
static Tensor *matmul_operand(Ctx *c, Tensor *x) {
    Mat m;
    if (x->ndim < 2) return x;   /* matmul_plan reports the shape error */
    if (mat_of(x, x->shape[x->ndim - 2], x->shape[x->ndim - 1], x->stride[x->ndim - 2], x->stride[x->ndim - 1], &m))
        return x;
    return op_contiguous(c, x);
}

static void matmul_backward(Ctx *c, Node *n) {
    Tensor *a = n->in[0], *b = n->in[1];
    MmPlan p;
    matmul_plan(c, a, b, &p);
    const float *dC = n->out->grad;   // (..., M, N)
    if (a->requires_grad) plan_backward_a(&p, dC, tensor_grad(c, a));
    if (b->requires_grad) {
        p.gB.p = tensor_grad(c, b);   // (..., K, N), contiguous
        plan_backward_b(&p, dC);
    }
}

Tensor *op_matmul(Ctx *c, Tensor *a, Tensor *b) {
    a = matmul_operand(c, a);
    b = matmul_operand(c, b);
    MmPlan p;
    matmul_plan(c, a, b, &p);
    size_t shape[VT_MAX_DIMS];
    for (int d = 0; d < p.nbd; d++) shape[d] = p.bshape[d];
    shape[p.nbd] = p.M;
    shape[p.nbd + 1] = p.N;
    Tensor *out = tensor_new(c, p.nbd + 2, shape);   // (..., M, N)
    plan_forward(&p, out->data, 0.0f);
    Tensor *in[2] = {a, b};
    op_record(c, "matmul", matmul_backward, out, in, 2);
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* op_linear: x (..., IN) · Wᵀ + bias, W in PyTorch's (OUT, IN) layout */

/* x's dims as batch dims + (M, IN): the last two dims of x, or (1, IN) for a vector */
static void linear_plan(Ctx *c, const Tensor *x, const Tensor *w, MmPlan *p) {
    char sx[64], sw[64];
    if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[1])
        ctx_fail(c, "op_linear: x %s and weight %s: need x (..., IN) and weight (OUT, IN)",
                 tensor_shape_str(x, sx, sizeof sx), tensor_shape_str(w, sw, sizeof sw));
    memset(p, 0, sizeof(*p));
    int nx = x->ndim;
    p->K = w->shape[1];
    p->N = w->shape[0];
    p->M = nx >= 2 ? x->shape[nx - 2] : 1;
    p->nbd = nx >= 2 ? nx - 2 : 0;
    p->nbatch = 1;
    p->nbatch_b = 1;
    for (int d = 0; d < p->nbd; d++) {
        p->bshape[d] = x->shape[d];
        p->a_bs[d] = x->stride[d];
        p->nbatch *= x->shape[d];
    }
    if (p->K > INT_MAX || p->N > INT_MAX || p->nbatch * p->M > INT_MAX)
        ctx_fail(c, "op_linear: x %s and weight %s are too large for BLAS int sizes", tensor_shape_str(x, sx, sizeof sx),
                 tensor_shape_str(w, sw, sizeof sw));
    mat_of(x, p->M, p->K, nx >= 2 ? x->stride[nx - 2] : 0, x->stride[nx - 1], &p->A);
    Mat wm;   /* W (OUT, IN); the product needs B = Wᵀ (IN, OUT) */
    mat_of(w, p->N, p->K, w->stride[0], w->stride[1], &wm);
    p->B = mat_t(wm);
    p->gB = (Mat){NULL, 1, p->K};   /* dW is (OUT, IN) contiguous: the transpose of dB (IN, OUT) */
    p->a_flat = plan_a_flat(p);
}

static Tensor *linear_operand(Ctx *c, Tensor *x) {
    Mat m;
    int n = x->ndim;
    if (n < 1) return x;
    if (mat_of(x, n >= 2 ? x->shape[n - 2] : 1, x->shape[n - 1], n >= 2 ? x->stride[n - 2] : 0, x->stride[n - 1], &m))
        return x;
    return op_contiguous(c, x);
}

static void linear_backward(Ctx *c, Node *n) {
    Tensor *x = n->in[0], *w = n->in[1], *bias = n->in[2];
    MmPlan p;
    linear_plan(c, x, w, &p);
    const float *dY = n->out->grad;   // (R, OUT), R = nbatch * M rows
    if (x->requires_grad) plan_backward_a(&p, dY, tensor_grad(c, x));
    if (w->requires_grad) {
        p.gB.p = tensor_grad(c, w);   // (OUT, IN)
        plan_backward_b(&p, dY);
    }
    if (bias && bias->requires_grad) {
        /* column sums over rows; threads split the columns so every sum runs in row order */
        float *db = tensor_grad(c, bias);   // (OUT)
        size_t R = p.nbatch * p.M, OUT = p.N;
        int nt = omp_get_max_threads();
        size_t chunk = (OUT + (size_t)nt - 1) / (size_t)nt;
        chunk = chunk ? (chunk + 15) & ~(size_t)15 : 16;   /* whole cache lines per thread */
#pragma omp parallel for schedule(static)
        for (size_t j0 = 0; j0 < OUT; j0 += chunk) {
            size_t j1 = j0 + chunk < OUT ? j0 + chunk : OUT;
            for (size_t r = 0; r < R; r++) {
                const float *row = dY + r * OUT;
                for (size_t j = j0; j < j1; j++) db[j] += row[j];
            }
        }
    }
}

Tensor *op_linear(Ctx *c, Tensor *x, Tensor *w, Tensor *b) {
    char sw[64], sb[64];
    if (b && (b->ndim != 1 || w->ndim != 2 || b->shape[0] != w->shape[0]))
        ctx_fail(c, "op_linear: bias %s does not match weight %s (OUT, IN)", tensor_shape_str(b, sb, sizeof sb),
                 tensor_shape_str(w, sw, sizeof sw));
    x = linear_operand(c, x);
    w = matmul_operand(c, w);
    if (b) b = op_contiguous(c, b);
    MmPlan p;
    linear_plan(c, x, w, &p);
    size_t shape[VT_MAX_DIMS];
    for (int d = 0; d < x->ndim - 1; d++) shape[d] = x->shape[d];
    shape[x->ndim - 1] = p.N;
    Tensor *out = tensor_new(c, x->ndim, shape);   // (..., OUT)
    size_t R = p.nbatch * p.M;
    if (b) {
        /* start every row at the bias and let sgemm accumulate onto it (beta = 1) */
#pragma omp parallel for schedule(static)
        for (size_t r = 0; r < R; r++) memcpy(out->data + r * p.N, b->data, p.N * sizeof(float));
    }
    plan_forward(&p, out->data, b ? 1.0f : 0.0f);
    Tensor *in[3] = {x, w, b};
    op_record(c, "linear", linear_backward, out, in, b ? 3 : 2);
    return out;
}
