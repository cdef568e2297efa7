/* op_checkpoint.c — activation recomputation: keep a segment's input, not its activations, and
 * rerun the segment in backward (torch.utils.checkpoint with use_reentrant semantics).
 *
 * Forward (grad mode): fn runs with recording off inside an arena mark; its output is copied to
 * a tensor allocated before the mark and everything else goes back to the arena.  One node is
 * recorded with x as its input; it saves fn, arg and the RNG state fn started from.
 * Backward: the same fn runs again with recording on, from the saved RNG state, appending its
 * nodes after the current end of the tape (a sub-tape); d(y) seeds the rerun's output and
 * backward_from's walk (backward_tape) runs the sub-tape in reverse, adding into x's and the
 * parameters' gradients; then the sub-tape is dropped and the rerun's memory released. */
#include "engine.h"
#include <string.h>

typedef struct CheckpointSaved {
    SegmentFn fn;
    const void *arg;
    Rng rng;              /* c->rng before the forward run: the rerun draws the same numbers */
} CheckpointSaved;

/* Inputs of the sub-tape [t0, tape_len) that come from outside it, need a gradient and have no
 * buffer yet (a non-parameter leaf the segment reads): their buffers must not be allocated in
 * the memory the rerun gives back.  Returns how many were found (up to max) in ext. */
static int missing_outside_grads(Ctx *c, size_t t0, Tensor **ext, int max) {
    int n = 0;
    for (size_t k = t0; k < c->tape_len; k++)
        for (int i = 0; i < c->tape[k].n_in; i++) {
            Tensor *t = c->tape[k].in[i];
            if (!t || !t->requires_grad || t->is_param || t->grad) continue;
            int inside = 0;
            for (size_t j = t0; j < k && !inside; j++) inside = c->tape[j].out == t;
            for (int j = 0; j < n && !inside; j++) inside = ext[j] == t;
            if (!inside && n < max) ext[n++] = t;
        }
    return n;
}

static void checkpoint_backward(Ctx *c, Node *n) {
    /* the rerun appends to the tape, which may move it: read the node first */
    const CheckpointSaved *sv = n->saved;
    Tensor *x = n->in[0], *out = n->out;
    const float *gout = out->grad;                       /* (x's shape) */
    tensor_grad(c, x);                                   /* before the mark: it must outlive it */
    const size_t t0 = c->tape_len;
    const Rng rng_now = c->rng;
    Tensor *y = NULL;
    ArenaMark mk;
    for (int pass = 0; pass < 2; pass++) {
        mk = arena_mark(&c->step);
        c->rng = sv->rng;
        int prev = ctx_set_grad(c, 1);
        y = sv->fn(c, x, sv->arg);
        ctx_set_grad(c, prev);
        c->rng = rng_now;
        Tensor *ext[16];
        int n_ext = missing_outside_grads(c, t0, ext, 16);
        if (n_ext == 0) break;
        /* rare (parameters and x already have buffers): allocate the leaves' gradients below a
         * new mark and run the segment again */
        if (pass == 1) ctx_fail(c, "op_checkpoint: more than 16 leaf inputs without gradient buffers");
        c->tape_len = t0;
        ctx_scratch_forget_since(c, mk);
        arena_release(&c->step, mk);
        for (int i = 0; i < n_ext; i++) tensor_grad(c, ext[i]);
    }
    if (y->requires_grad) {
        float *gy = tensor_grad(c, y);
        for (size_t i = 0; i < y->numel; i++) gy[i] += gout[i];
        backward_tape(c, t0, NULL, 0);
    }
    c->tape_len = t0;
    ctx_scratch_forget_since(c, mk);
    arena_release(&c->step, mk);
}

Tensor *op_checkpoint(Ctx *c, SegmentFn fn, Tensor *x, const void *arg) {
    if (!op_needs_grad(c, &x, 1)) return fn(c, x, arg);
    Tensor *out = tensor_new(c, x->ndim, x->shape);       /* (x's shape) */
    CheckpointSaved *sv = arena_alloc(&c->step, sizeof *sv);
    sv->fn = fn;
    sv->arg = arg;
    sv->rng = c->rng;
    ArenaMark mk = arena_mark(&c->step);
    int prev = ctx_set_grad(c, 0);
    Tensor *y = fn(c, x, arg);
    ctx_set_grad(c, prev);
    if (y->ndim != x->ndim || memcmp(y->shape, x->shape, sizeof(size_t) * (size_t)x->ndim)) {
        char b1[64], b2[64];
        ctx_fail(c, "op_checkpoint: the segment maps %s to %s (it must keep the shape)", tensor_shape_str(x, b1, sizeof b1),
                 tensor_shape_str(y, b2, sizeof b2));
    }
    tensor_copy_to(y, out->data);
    arena_release(&c->step, mk);
    Node *n = op_record(c, "checkpoint", checkpoint_backward, out, &x, 1);
    n->saved = sv;
    return out;
}
