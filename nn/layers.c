/* layers.c — parameter declaration and forward of the basic layers; initialisers. */
#include "nn/nn.h"
#include <math.h>
#include <string.h>

const char *nn_join(char *buf, size_t n, const char *prefix, const char *name) {
    if (prefix && prefix[0]) snprintf(buf, n, "%s.%s", prefix, name);
    else snprintf(buf, n, "%s", name);
    return buf;
}

/* "<prefix>.<name>.<leaf>" */
static const char *key3(char *buf, size_t n, const char *prefix, const char *name, const char *leaf) {
    char mid[128];
    nn_join(mid, sizeof mid, prefix, name);
    return nn_join(buf, n, mid, leaf);
}

void linear_declare(Linear *l, ParamStore *ps, const char *prefix, const char *name, int in, int out, int bias) {
    char k[160];
    l->in = in;
    l->out = out;
    l->w = param_(ps, key3(k, sizeof k, prefix, name, "weight"), (size_t)out, (size_t)in);
    l->b = bias ? param_(ps, key3(k, sizeof k, prefix, name, "bias"), (size_t)out) : NULL;
}

void layernorm_declare(LayerNorm *l, ParamStore *ps, const char *prefix, const char *name, int dim, float eps) {
    char k[160];
    l->eps = eps;
    l->w = param_(ps, key3(k, sizeof k, prefix, name, "weight"), (size_t)dim);
    l->b = param_(ps, key3(k, sizeof k, prefix, name, "bias"), (size_t)dim);
}

void conv2d_declare(Conv2d *l, ParamStore *ps, const char *prefix, const char *name, int in, int out, int k,
                    int stride, int groups, int bias) {
    char key[160];
    memset(l, 0, sizeof(*l));
    l->in = in;
    l->out = out;
    l->k = k;
    l->stride = stride;
    l->groups = groups;
    l->pad = k / 2;
    l->w = param_(ps, key3(key, sizeof key, prefix, name, "weight"), (size_t)out, (size_t)(in / groups),
                  (size_t)k, (size_t)k);
    l->b = bias ? param_(ps, key3(key, sizeof key, prefix, name, "bias"), (size_t)out) : NULL;
}

void batchnorm_declare(BatchNorm2d *l, ParamStore *ps, const char *prefix, const char *name, int ch,
                       float momentum, float eps) {
    char k[160];
    l->momentum = momentum;
    l->eps = eps;
    l->w = param_(ps, key3(k, sizeof k, prefix, name, "weight"), (size_t)ch);
    l->b = param_(ps, key3(k, sizeof k, prefix, name, "bias"), (size_t)ch);
    l->running_mean = buffer_(ps, key3(k, sizeof k, prefix, name, "running_mean"), (size_t)ch);
    l->running_var = buffer_(ps, key3(k, sizeof k, prefix, name, "running_var"), (size_t)ch);
    l->num_batches_tracked = param_declare(ps, key3(k, sizeof k, prefix, name, "num_batches_tracked"),
                                           PARAM_BUFFER, 0, NULL);
}

Tensor *linear_forward(Ctx *c, const Linear *l, Tensor *x) {
    return op_linear(c, x, l->w, l->b);
}

Tensor *layernorm_forward(Ctx *c, const LayerNorm *l, Tensor *x) {
    return op_layernorm(c, x, l->w, l->b, l->eps);
}

Tensor *conv2d_forward(Ctx *c, const Conv2d *l, Tensor *x) {
    if (x->ndim != 4) {
        char b[64];
        ctx_fail(c, "conv2d_forward: expected (N, C, H, W), got %s", tensor_shape_str(x, b, sizeof b));
    }
    Conv2dArgs a;
    if (l->pad_mode == PAD_SAME_STATIC)
        a = conv2d_args_same(l->static_h, l->static_w, l->k, l->k, l->stride, 1, l->groups);
    else if (l->pad_mode == PAD_SAME_DYNAMIC)
        a = conv2d_args_same((int)x->shape[2], (int)x->shape[3], l->k, l->k, l->stride, 1, l->groups);
    else
        a = conv2d_args(l->stride, l->pad, 1, l->groups);
    return op_conv2d(c, x, l->w, l->b, a);
}

Tensor *batchnorm_forward(Ctx *c, const BatchNorm2d *l, Tensor *x) {
    if (c->training && c->grad_enabled) l->num_batches_tracked->data[0] += 1.0f;
    return op_batchnorm(c, x, l->w, l->b, l->running_mean->data, l->running_var->data, l->momentum, l->eps);
}

/* ------------------------------------------------------------------------------------------ */

void init_trunc_normal(Tensor *t, Rng *r, float std) {
    rng_fill_trunc_normal(r, t->data, t->numel, std);
}

void init_constant(Tensor *t, float v) {
    for (size_t i = 0; i < t->numel; i++) t->data[i] = v;
}

void init_uniform(Tensor *t, Rng *r, float bound) {
    rng_fill_uniform(r, t->data, t->numel, -bound, bound);
}

/* kaiming_uniform(a=sqrt(5)) reduces to U(-1/sqrt(fan_in), 1/sqrt(fan_in)); bias the same */
void init_torch_default_linear(Linear *l, Rng *r) {
    float bound = 1.0f / sqrtf((float)l->in);
    init_uniform(l->w, r, bound);
    if (l->b) init_uniform(l->b, r, bound);
}

void init_torch_default_conv(Conv2d *l, Rng *r) {
    float fan_in = (float)(l->in / l->groups * l->k * l->k);
    float bound = 1.0f / sqrtf(fan_in);
    init_uniform(l->w, r, bound);
    if (l->b) init_uniform(l->b, r, bound);
}

void batchnorm_reset(BatchNorm2d *l) {
    init_constant(l->w, 1.0f);
    init_constant(l->b, 0.0f);
    init_constant(l->running_mean, 0.0f);
    init_constant(l->running_var, 1.0f);
    init_constant(l->num_batches_tracked, 0.0f);
}
