/* heads.c — the DINO / iBOT projection head (DINOv2's DINOHead). */
#include "nn/nn.h"
#include <string.h>

void dino_head_declare(DinoHead *h, ParamStore *ps, const char *prefix, int in, int hidden, int bottleneck, int K,
                       int nlayers) {
    memset(h, 0, sizeof(*h));
    h->in = in;
    h->hidden = hidden;
    h->bottleneck = bottleneck;
    h->K = K;
    h->nlayers = nlayers < 1 ? 1 : nlayers;
    char k[160];
    if (h->nlayers == 1) {
        linear_declare(&h->l0, ps, prefix, "mlp", in, bottleneck, 1);
    } else {
        linear_declare(&h->l0, ps, prefix, "mlp.0", in, hidden, 1);
        if (h->nlayers >= 3) linear_declare(&h->l1, ps, prefix, "mlp.2", hidden, hidden, 1);
        linear_declare(&h->l2, ps, prefix, h->nlayers >= 3 ? "mlp.4" : "mlp.2", hidden, bottleneck, 1);
    }
    h->weight_g = param_(ps, nn_join(k, sizeof k, prefix, "last_layer.weight_g"), (size_t)K, 1);
    h->weight_v = param_(ps, nn_join(k, sizeof k, prefix, "last_layer.weight_v"), (size_t)K, (size_t)bottleneck);
}

/* DINOHead._init_weights: Linear trunc_normal(0.02), bias 0; weight_g = 1 (and frozen) */
void dino_head_init(DinoHead *h, Rng *r) {
    Linear *ls[3] = {&h->l0, &h->l1, &h->l2};
    for (int i = 0; i < 3; i++) {
        if (!ls[i]->w) continue;
        init_trunc_normal(ls[i]->w, r, 0.02f);
        init_constant(ls[i]->b, 0.0f);
    }
    init_trunc_normal(h->weight_v, r, 0.02f);
    init_constant(h->weight_g, 1.0f);
}

Tensor *dino_head_forward(Ctx *c, const DinoHead *h, Tensor *x, Tensor **bottleneck_out) {
    /* x: (N, in) */
    Tensor *z = linear_forward(c, &h->l0, x);
    if (h->nlayers > 1) {
        z = op_gelu(c, z);                                   /* (N, hidden) */
        if (h->l1.w) z = op_gelu(c, linear_forward(c, &h->l1, z));
        z = linear_forward(c, &h->l2, z);                    /* (N, bottleneck) */
    }
    z = op_l2_normalize(c, z, 1e-12f);
    if (bottleneck_out) *bottleneck_out = z;
    /* weight norm: W = g * v / ||v|| per prototype row */
    Tensor *w = op_mul(c, op_l2_normalize(c, h->weight_v, 1e-12f), h->weight_g);  /* (K, bottleneck) */
    return op_linear(c, z, w, NULL);                          /* (N, K) */
}
