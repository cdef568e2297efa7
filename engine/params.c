/* params.c — named parameters in flat blocks.
 *
 * A model declares every tensor first (name, kind, shape); `params_alloc` then lays them out in
 * one block per role — values, gradients, AdamW first and second moments — plus one block for
 * buffers (BatchNorm running statistics).  Each Tensor's data/grad point into those blocks, so
 * zero-grad, the optimizer, an EMA update, a checkpoint and an MPI all-reduce are one loop each.
 *
 * Every tensor starts on a 64-byte boundary (its offset is rounded up to 16 floats).  The gaps
 * are zero in every block and stay zero: their gradient is never written, so no optimizer moves
 * them, and they add nothing to a gradient norm. */
#include "engine.h"
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define PARAM_ALIGN_FLOATS 16   /* 64 bytes */

/* Programmer errors only (declaring after alloc, duplicate names): the model code is wrong. */
__attribute__((format(printf, 1, 2), noreturn)) static void params_die(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "versa: ");
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static float *block_alloc(size_t n) {
    if (n == 0) return NULL;
    void *p = NULL;
    if (posix_memalign(&p, 64, n * sizeof(float)) != 0) {
        fprintf(stderr, "versa: out of memory allocating a parameter block of %zu floats\n", n);
        exit(1);
    }
    memset(p, 0, n * sizeof(float));
    return p;
}

void params_init(ParamStore *ps) {
    memset(ps, 0, sizeof(*ps));
    arena_init(&ps->meta, (size_t)64 << 10);
}

void params_free(ParamStore *ps) {
    free(ps->p);
    free(ps->data);
    free(ps->grad);
    free(ps->m);
    free(ps->v);
    free(ps->buf);
    arena_free(&ps->meta);
    memset(ps, 0, sizeof(*ps));
}

Tensor *param_declare(ParamStore *ps, const char *name, int kind, int ndim, const size_t *shape) {
    if (ps->allocated) params_die("param_declare: '%s' declared after params_alloc", name);
    if (strlen(name) >= sizeof(ps->p[0].name)) params_die("param_declare: name '%s' is too long", name);
    if (ndim < 0 || ndim > VT_MAX_DIMS) params_die("param_declare: '%s' has too many dims", name);
    if (kind != PARAM_TRAINABLE && kind != PARAM_BUFFER) params_die("param_declare: '%s': bad kind", name);
    /* state_dict keys are unique; a duplicate would silently alias two modules */
    if (params_find(ps, name)) params_die("param_declare: '%s' declared twice", name);
    if (ps->n == ps->cap) {
        size_t cap = ps->cap ? 2 * ps->cap : 64;
        Param *np = realloc(ps->p, cap * sizeof(Param));
        if (!np) params_die("out of memory declaring '%s'", name);
        ps->p = np;
        ps->cap = cap;
    }
    Param *p = &ps->p[ps->n++];
    memset(p, 0, sizeof(*p));
    snprintf(p->name, sizeof p->name, "%s", name);
    p->kind = kind;
    p->lr_mult = 1.0f;
    p->wd_mult = 1.0f;

    /* the header lives in the meta arena, so its address survives growth of ps->p */
    Tensor *t = arena_calloc(&ps->meta, sizeof(Tensor));
    size_t len = strlen(name) + 1;
    char *tname = arena_alloc(&ps->meta, len);
    memcpy(tname, name, len);
    t->name = tname;
    t->ndim = ndim;
    t->numel = 1;
    for (int d = 0; d < ndim; d++) {
        t->shape[d] = shape[d];
        t->numel *= shape[d];
    }
    ptrdiff_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        t->stride[d] = s;
        s *= (ptrdiff_t)shape[d];
    }
    p->t = t;
    return t;
}

void params_alloc(ParamStore *ps) {
    if (ps->allocated) params_die("params_alloc: called twice");
    size_t n_train = 0, n_buf = 0;
    for (size_t k = 0; k < ps->n; k++) {
        Param *p = &ps->p[k];
        size_t *cursor = p->kind == PARAM_TRAINABLE ? &n_train : &n_buf;
        p->offset = *cursor;
        *cursor += (p->t->numel + PARAM_ALIGN_FLOATS - 1) / PARAM_ALIGN_FLOATS * PARAM_ALIGN_FLOATS;
    }
    ps->n_train = n_train;
    ps->n_buf = n_buf;
    ps->data = block_alloc(n_train);
    ps->buf = block_alloc(n_buf);
    if (!ps->values_only) {
        ps->grad = block_alloc(n_train);
        ps->m = block_alloc(n_train);
        ps->v = block_alloc(n_train);
    }
    for (size_t k = 0; k < ps->n; k++) {
        Param *p = &ps->p[k];
        Tensor *t = p->t;
        if (p->kind == PARAM_TRAINABLE) {
            t->data = ps->data + p->offset;
            t->grad = ps->values_only ? NULL : ps->grad + p->offset;
            t->is_param = 1;
            t->requires_grad = (!p->frozen && !ps->values_only) ? 1 : 0;
        } else {
            t->data = ps->buf + p->offset;
            t->grad = NULL;
            t->is_param = 0;
            t->requires_grad = 0;
        }
    }
    ps->allocated = 1;
}

Param *params_find(ParamStore *ps, const char *name) {
    for (size_t k = 0; k < ps->n; k++)
        if (!strcmp(ps->p[k].name, name)) return &ps->p[k];
    return NULL;
}

void params_zero_grad(ParamStore *ps) {
    if (!ps->grad) return;
    float *g = ps->grad;  // (n_train)
    long n = (long)ps->n_train;
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) g[i] = 0.0f;
}

int params_set_frozen(ParamStore *ps, const char *prefix, int frozen) {
    size_t plen = strlen(prefix);
    int count = 0;
    for (size_t k = 0; k < ps->n; k++) {
        Param *p = &ps->p[k];
        if (p->kind != PARAM_TRAINABLE || strncmp(p->name, prefix, plen) != 0) continue;
        p->frozen = frozen ? 1 : 0;
        count++;
        if (!ps->allocated) continue;
        p->t->requires_grad = (!p->frozen && !ps->values_only) ? 1 : 0;
        /* a stale gradient would otherwise count in the next global norm */
        if (p->frozen && ps->grad) memset(ps->grad + p->offset, 0, p->t->numel * sizeof(float));
    }
    return count;
}

/* Same names, kinds and shapes in the same order; anything else is a programmer error. */
static void check_same_layout(const ParamStore *dst, const ParamStore *src, const char *who) {
    if (!dst->allocated || !src->allocated) params_die("%s: both stores must be allocated", who);
    if (dst->n != src->n || dst->n_train != src->n_train || dst->n_buf != src->n_buf)
        params_die("%s: the two stores have different layouts", who);
    for (size_t k = 0; k < dst->n; k++) {
        const Param *a = &dst->p[k], *b = &src->p[k];
        if (a->kind != b->kind || a->offset != b->offset || a->t->numel != b->t->numel)
            params_die("%s: parameter '%s' differs between the two stores", who, a->name);
    }
}

void params_copy(ParamStore *dst, const ParamStore *src) {
    check_same_layout(dst, src, "params_copy");
    if (dst->n_train) memcpy(dst->data, src->data, dst->n_train * sizeof(float));
    if (dst->n_buf) memcpy(dst->buf, src->buf, dst->n_buf * sizeof(float));
}

void params_ema(ParamStore *dst, const ParamStore *src, float m) {
    check_same_layout(dst, src, "params_ema");
    float *t = dst->data;        // (n_train) teacher
    const float *s = src->data;  // (n_train) student
    float one_minus_m = 1.0f - m;
    long n = (long)dst->n_train;
    /* elementwise, so the result does not depend on how the loop is split over threads */
    #pragma omp parallel for schedule(static)
    for (long i = 0; i < n; i++) t[i] = t[i] * m + one_minus_m * s[i];
    if (dst->n_buf) memcpy(dst->buf, src->buf, dst->n_buf * sizeof(float));
}
