#!/usr/bin/python3
"""PyTorch references for engine/op_conv.c, op_pool.c and op_resize.c.

Writes tests/ref/data/ops_conv.h5.  Every case is a group holding its inputs, the output, a
random weight R and the gradients of L = sum(out * R) with respect to every input, all float32
and computed by PyTorch in float32 (what the C ops are compared against):

  conv/<case>/   x, w, [b], y, R, gx, gw, [gb], args = (sh, sw, pt, pb, pl, pr, dh, dw, groups)
                 [same = (in_h, in_w, kh, kw, stride, dilation, groups) for TF-"SAME" cases,
                  built with F.pad + conv2d exactly as lukemelas' Conv2dStaticSamePadding]
  pool/<case>/   x, y, R, gx, args = (kind, k, stride, pad)   kind 0 max, 1 avg, 2 global avg
  resize/<case>/ x, y, R, gx, args = (mode, out_h, out_w, w0, M)
                 mode 0 nearest, 1 bilinear, 2 bicubic; w0 > 0 means F.interpolate was called with
                 scale_factor = (w0 + 0.1) / M as DINOv2's pos-embed interpolation does (the C test
                 recomputes that double), else with size

Run from the repository root:  /usr/bin/python3 tests/ref/ops_conv.py
"""
import math
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F

torch.manual_seed(0)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "ops_conv.h5")


def randn(*shape):
    return torch.randn(*shape, dtype=torch.float32)


def put(g, name, t):
    a = t.detach().numpy() if isinstance(t, torch.Tensor) else np.asarray(t)
    g.create_dataset(name, data=a.astype(np.float32) if a.dtype.kind == "f" else a)


def weighted_grads(y, inputs):
    R = randn(*y.shape)
    grads = torch.autograd.grad((y * R).sum(), inputs)
    return R, grads


def same_pads(in_size, k, stride, dilation):
    """lukemelas EfficientNet-PyTorch Conv2dStaticSamePadding"""
    out = math.ceil(in_size / stride)
    total = max((out - 1) * stride + (k - 1) * dilation + 1 - in_size, 0)
    return total // 2, total - total // 2


def conv_case(f, name, x_shape, w_shape, stride=1, pad=0, dilation=1, groups=1, bias=True, same=False):
    x = randn(*x_shape).requires_grad_()
    w = (randn(*w_shape) * 0.5).requires_grad_()
    b = (randn(w_shape[0]) * 0.5).requires_grad_() if bias else None
    kh, kw = w_shape[2], w_shape[3]
    if same:
        pt, pb = same_pads(x_shape[2], kh, stride, dilation)
        pl, pr = same_pads(x_shape[3], kw, stride, dilation)
        y = F.conv2d(F.pad(x, [pl, pr, pt, pb]), w, b, stride, 0, dilation, groups)
    else:
        pt = pb = pl = pr = pad
        y = F.conv2d(x, w, b, stride, pad, dilation, groups)
    ins = [x, w] + ([b] if bias else [])
    R, grads = weighted_grads(y, ins)
    g = f.create_group("conv/" + name)
    put(g, "x", x), put(g, "w", w), put(g, "y", y), put(g, "R", R)
    put(g, "gx", grads[0]), put(g, "gw", grads[1])
    if bias:
        put(g, "b", b), put(g, "gb", grads[2])
    put(g, "args", np.array([stride, stride, pt, pb, pl, pr, dilation, dilation, groups], np.int32))
    if same:
        put(g, "same", np.array([x_shape[2], x_shape[3], kh, kw, stride, dilation, groups], np.int32))


def pool_case(f, name, kind, x_shape, k=0, stride=0, pad=0):
    x = randn(*x_shape).requires_grad_()
    if kind == 0:
        y = F.max_pool2d(x, k, stride, pad)
    elif kind == 1:
        y = F.avg_pool2d(x, k, stride, pad, count_include_pad=True)
    else:
        y = F.adaptive_avg_pool2d(x, 1).flatten(1)
    R, (gx,) = weighted_grads(y, [x])
    g = f.create_group("pool/" + name)
    put(g, "x", x), put(g, "y", y), put(g, "R", R), put(g, "gx", gx)
    put(g, "args", np.array([kind, k, stride, pad], np.int32))


MODES = {"nearest": 0, "bilinear": 1, "bicubic": 2}


def resize_case(f, name, mode, x_shape, size=None, dinov2_w0=0):
    x = randn(*x_shape).requires_grad_()
    kw = {} if mode == "nearest" else {"align_corners": False}
    M = x_shape[2]
    if dinov2_w0:
        # DINOv2 interpolate_pos_encoding with interpolate_offset = 0.1
        sf = float(dinov2_w0 + 0.1) / M
        y = F.interpolate(x, scale_factor=(sf, sf), mode=mode, **kw)
    else:
        y = F.interpolate(x, size=size, mode=mode, **kw)
    R, (gx,) = weighted_grads(y, [x])
    g = f.create_group("resize/" + name)
    put(g, "x", x), put(g, "y", y), put(g, "R", R), put(g, "gx", gx)
    put(g, "args", np.array([MODES[mode], y.shape[2], y.shape[3], dinov2_w0, M], np.int32))


def main():
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with h5py.File(OUT, "w") as f:
        # dense / grouped (im2col + GEMM, or plain GEMM for pointwise)
        conv_case(f, "dense3x3", (2, 3, 9, 8), (5, 3, 3, 3), stride=1, pad=1)
        conv_case(f, "dense3x3_s2_nobias", (2, 4, 9, 9), (6, 4, 3, 3), stride=2, pad=1, bias=False)
        conv_case(f, "stem_same_s2", (2, 3, 10, 11), (8, 3, 3, 3), stride=2, bias=False, same=True)
        conv_case(f, "dense5x5_same_s1", (1, 2, 8, 7), (3, 2, 5, 5), stride=1, same=True)
        conv_case(f, "dilation2", (1, 3, 10, 9), (4, 3, 3, 3), stride=1, pad=2, dilation=2)
        conv_case(f, "groups2", (2, 4, 7, 7), (6, 2, 3, 3), stride=1, pad=1, groups=2)
        conv_case(f, "pointwise", (2, 8, 6, 5), (12, 8, 1, 1))
        conv_case(f, "pointwise_s2", (3, 8, 7, 7), (4, 8, 1, 1), stride=2, bias=False)
        conv_case(f, "pointwise_groups4", (2, 8, 5, 5), (8, 2, 1, 1), groups=4)
        # depthwise (direct kernel), EfficientNet's MBConv shapes in small
        conv_case(f, "dw3_s1", (2, 6, 9, 10), (6, 1, 3, 3), stride=1, bias=False, same=True, groups=6)
        conv_case(f, "dw3_s2_same", (2, 6, 10, 11), (6, 1, 3, 3), stride=2, bias=False, same=True, groups=6)
        conv_case(f, "dw5_s1_same", (2, 4, 9, 9), (4, 1, 5, 5), stride=1, bias=False, same=True, groups=4)
        conv_case(f, "dw5_s2_same", (2, 4, 11, 10), (4, 1, 5, 5), stride=2, bias=False, same=True, groups=4)
        conv_case(f, "dw3_s1_wide_bias", (1, 3, 6, 37), (3, 1, 3, 3), stride=1, pad=1, groups=3)
        conv_case(f, "dw5_s2_wide_same", (2, 3, 7, 45), (3, 1, 5, 5), stride=2, bias=False, same=True, groups=3)
        conv_case(f, "dw3_dilation2", (1, 4, 9, 9), (4, 1, 3, 3), stride=1, pad=2, dilation=2, groups=4)
        conv_case(f, "dw_multiplier2", (1, 3, 6, 6), (6, 1, 3, 3), stride=1, pad=1, groups=3)

        pool_case(f, "max_k3_s2_p1", 0, (2, 3, 9, 8), 3, 2, 1)
        pool_case(f, "max_k2_s2", 0, (2, 3, 8, 7), 2, 2, 0)
        pool_case(f, "avg_k3_s1_p1", 1, (2, 3, 7, 6), 3, 1, 1)
        pool_case(f, "avg_k2_s2", 1, (2, 3, 8, 8), 2, 2, 0)
        pool_case(f, "avg_k3_s2_p1", 1, (2, 3, 9, 8), 3, 2, 1)
        pool_case(f, "global_avg", 2, (2, 5, 6, 7))

        for mode in ("bilinear", "bicubic", "nearest"):
            resize_case(f, mode + "_up", mode, (2, 3, 5, 7), size=(11, 13))
            resize_case(f, mode + "_down", mode, (2, 3, 12, 10), size=(5, 7))
            resize_case(f, mode + "_x2", mode, (1, 2, 4, 5), size=(8, 10))
            resize_case(f, mode + "_mixed", mode, (1, 2, 6, 9), size=(9, 4))
        # ViT position embeddings: a 14x14 grid for a 518-px image (37x37 patches)
        resize_case(f, "bicubic_posembed_14_37", "bicubic", (1, 4, 14, 14), size=(37, 37))
        # DINOv2 with interpolate_offset 0.1 from a 16x16 grid (224 px): to 37x37 (518 px) and
        # 7x7 (98-px local crops)
        resize_case(f, "bicubic_dinov2_16_37", "bicubic", (1, 4, 16, 16), dinov2_w0=37)
        resize_case(f, "bicubic_dinov2_16_7", "bicubic", (1, 4, 16, 16), dinov2_w0=7)
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
