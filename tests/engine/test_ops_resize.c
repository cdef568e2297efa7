/* test_ops_resize.c — bilinear / bicubic / nearest resampling: PyTorch references for up- and
 * down-sampling (incl. the 14x14 -> 37x37 ViT position-embedding case and DINOv2's scale-factor
 * path with interpolate_offset 0.1), finite-difference checks of every mode incl. strided inputs,
 * hand-computed values, and errors. */
#include "tests/common/testutil.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------------------------------ */
/* PyTorch references (tests/ref/ops_conv.py, group resize/) */

static void test_resize_vs_pytorch(void **st) {
    (void)st;
    static const char *cases[] = {
        "bilinear_up", "bilinear_down", "bilinear_x2", "bilinear_mixed",
        "bicubic_up",  "bicubic_down",  "bicubic_x2",  "bicubic_mixed",
        "nearest_up",  "nearest_down",  "nearest_x2",  "nearest_mixed",
        "bicubic_posembed_14_37", "bicubic_dinov2_16_37", "bicubic_dinov2_16_7",
    };
    RefFile *r = ref_open("ops_conv");
    double wy = 0, wg = 0;
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char grp[128], key[160];
        snprintf(grp, sizeof grp, "resize/%s", cases[i]);
        snprintf(key, sizeof key, "%s/args", grp);
        float *a = ref_get(r, key, NULL, NULL, NULL);   /* mode, out_h, out_w, w0, M */
        int mode = (int)a[0], oh = (int)a[1], ow = (int)a[2], w0 = (int)a[3], M = (int)a[4];
        Ctx c;
        ctx_init(&c, 1);
        Tensor *x = ref_tensor_at(&c, r, grp, "x", 1), *y;
        if (w0 > 0) {
            /* DINOv2: scale_factor = (w0 + interpolate_offset) / M, computed in double */
            double sf = (w0 + 0.1) / M;
            y = op_resize_bicubic_scale(&c, x, oh, ow, sf, sf);
        } else {
            y = mode == 0 ? op_resize_nearest(&c, x, oh, ow)
              : mode == 1 ? op_resize_bilinear(&c, x, oh, ow)
                          : op_resize_bicubic(&c, x, oh, ow);
        }
        double ey = ref_compare(r, grp, "y", y, y->data, y->numel, 1e-5);
        Tensor *R = ref_tensor_at(&c, r, grp, "R", 0);
        backward_from(&c, y, R->data);
        double eg = ref_compare(r, grp, "gx", x, x->grad, x->numel, 1e-5);
        printf("    %-24s out %.2e  grad %.2e (max |err| / max |ref|)\n", cases[i], ey, eg);
        wy = fmax(wy, ey), wg = fmax(wg, eg);
        free(a);
        ctx_free(&c);
    }
    printf("    resize vs PyTorch: worst output %.2e, worst gradient %.2e\n", wy, wg);
    ref_close(r);
}

/* ------------------------------------------------------------------------------------------ */
/* hand-computed values */

static void test_resize_values(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    /* bilinear 1x2 -> 1x4 of [0, 1]: src = (dst + 0.5) / 2 - 0.5 = -0.25 (clamped to 0), 0.25,
     * 0.75, 1.25 (last index repeated) */
    Tensor *x = tensor_from(&c, 4, TSHAPE(1, 1, 1, 2), (float[]){0, 1});
    Tensor *y = op_resize_bilinear(&c, x, 1, 4);
    const float want[4] = {0.0f, 0.25f, 0.75f, 1.0f};
    for (int i = 0; i < 4; i++) assert_float_equal(y->data[i], want[i], 1e-7);
    /* nearest 3 -> 5: floor(dst * 0.6) = 0, 0, 1, 1, 2 */
    Tensor *xn = tensor_from(&c, 4, TSHAPE(1, 1, 1, 3), (float[]){10, 20, 30});
    Tensor *yn = op_resize_nearest(&c, xn, 1, 5);
    const float wn[5] = {10, 10, 20, 20, 30};
    for (int i = 0; i < 5; i++) assert_float_equal(yn->data[i], wn[i], 0);
    /* bicubic to the same size: taps (0, 1, 0, 0), the identity bit for bit */
    Rng r;
    rng_init(&r, 5);
    Tensor *xb = tensor_new_(&c, 2, 3, 6, 7);
    rng_fill_uniform(&r, xb->data, xb->numel, -1, 1);
    Tensor *yb = op_resize_bicubic(&c, xb, 6, 7);
    assert_memory_equal(yb->data, xb->data, xb->numel * sizeof(float));
    /* a constant map stays constant: the Keys weights sum to one */
    Tensor *k = tensor_new_(&c, 1, 1, 5, 4);
    for (size_t i = 0; i < k->numel; i++) k->data[i] = 0.75f;
    Tensor *yk = op_resize_bicubic(&c, k, 13, 3);
    for (size_t i = 0; i < yk->numel; i++) assert_float_equal(yk->data[i], 0.75f, 1e-6);
    ctx_free(&c);
}

/* ------------------------------------------------------------------------------------------ */
/* finite-difference checks */

typedef struct ResizeCase {
    int mode, oh, ow;
    double sf;   /* > 0: op_resize_bicubic_scale */
} ResizeCase;

static Tensor *f_resize(Ctx *c, Tensor **in, void *ud) {
    const ResizeCase *rc = ud;
    if (rc->sf > 0) return op_resize_bicubic_scale(c, in[0], rc->oh, rc->ow, rc->sf, rc->sf);
    if (rc->mode == 0) return op_resize_nearest(c, in[0], rc->oh, rc->ow);
    if (rc->mode == 1) return op_resize_bilinear(c, in[0], rc->oh, rc->ow);
    return op_resize_bicubic(c, in[0], rc->oh, rc->ow);
}

static void gc_resize(const char *what, ResizeCase rc, size_t N, size_t C, size_t H, size_t W, int transposed) {
    GcInput in = GC_IN(4, N, C, H, W);
    in.transposed = transposed;
    gradcheck(what, f_resize, &in, 1, &rc, (GcOpts){0});
}

static void test_resize_gradcheck(void **st) {
    (void)st;
    for (int mode = 0; mode < 3; mode++) {
        const char *nm[3] = {"nearest", "bilinear", "bicubic"};
        char what[96];
        snprintf(what, sizeof what, "%s up 4x5 -> 9x11", nm[mode]);
        gc_resize(what, (ResizeCase){mode, 9, 11, 0}, 2, 2, 4, 5, 0);
        snprintf(what, sizeof what, "%s down 9x8 -> 4x3", nm[mode]);
        gc_resize(what, (ResizeCase){mode, 4, 3, 0}, 1, 2, 9, 8, 0);
        snprintf(what, sizeof what, "%s mixed transposed 5x7 -> 8x3", nm[mode]);
        gc_resize(what, (ResizeCase){mode, 8, 3, 0}, 2, 1, 5, 7, 1);
    }
    gc_resize("bicubic 3x3 -> 10x10 (border taps clamp twice)", (ResizeCase){2, 10, 10, 0}, 1, 1, 3, 3, 0);
    gc_resize("bicubic scale (7 + 0.1) / 4", (ResizeCase){2, 7, 7, (7 + 0.1) / 4}, 1, 2, 4, 4, 0);
}

static void test_resize_errors(void **st) {
    (void)st;
    Ctx c;
    ctx_init(&c, 1);
    jmp_buf jb;
    c.fail_jmp = &jb;
    Tensor *x = tensor_zeros_(&c, 2, 3, 4);
    if (setjmp(jb) == 0) {
        op_resize_bilinear(&c, x, 8, 8);
        fail_msg("a 3-D input did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "op_resize_bilinear"));
    assert_non_null(strstr(c.fail_msg, "(2,3,4)"));
    Tensor *x4 = tensor_zeros_(&c, 1, 1, 4, 4);
    if (setjmp(jb) == 0) {
        op_resize_nearest(&c, x4, 0, 3);
        fail_msg("an empty output size did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "op_resize_nearest"));
    if (setjmp(jb) == 0) {
        op_resize_bicubic_scale(&c, x4, 8, 8, 0.0, 2.0);
        fail_msg("a zero scale factor did not fail");
    }
    assert_non_null(strstr(c.fail_msg, "op_resize_bicubic_scale"));
    ctx_free(&c);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resize_vs_pytorch),
        cmocka_unit_test(test_resize_values),
        cmocka_unit_test(test_resize_gradcheck),
        cmocka_unit_test(test_resize_errors),
    };
    return RUN_GROUP(tests);
}
