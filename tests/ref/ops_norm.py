"""Reference data for engine/op_norm.c: softmax, log_softmax, layernorm, l2_normalize, batchnorm.

Writes tests/ref/data/ops_norm.h5 with one group per case holding the float32 inputs, the
upstream gradient `dy`, the output `y` and the input gradients (batch norm also the running
statistics before/after).  The references are computed by PyTorch in float64 from the float32
inputs, so they are exact to float32 rounding.  Run from the repo root:
    /usr/bin/python3 tests/ref/ops_norm.py
"""
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "ops_norm.h5")
g = torch.Generator().manual_seed(20240611)


def randn(*shape, scale=1.0, shift=0.0):
    # float32 draw, as the C side gets float32 inputs
    return (torch.randn(*shape, generator=g) * scale + shift).float()


def leaf(t):
    return t.double().clone().requires_grad_(True)


def f32(t):
    return t.detach().float().numpy()


def write(h5, name, **arrays):
    grp = h5.create_group(name)
    for k, v in arrays.items():
        v = v.detach() if torch.is_tensor(v) else torch.as_tensor(v)
        grp.create_dataset(k, data=v.float().numpy() if v.dtype.is_floating_point else v.numpy())


def row_op(h5, name, fn, x):
    dy = randn(*x.shape)
    xd = leaf(x)
    y = fn(xd)
    y.backward(dy.double())
    write(h5, name, x=x, dy=dy, y=y, dx=xd.grad)


def layernorm(h5, name, x, affine, eps):
    C = x.shape[-1]
    dy = randn(*x.shape)
    xd = leaf(x)
    w = randn(C, scale=0.5, shift=1.0) if affine else None
    b = randn(C, scale=0.5) if affine else None
    wd = leaf(w) if affine else None
    bd = leaf(b) if affine else None
    y = F.layer_norm(xd, (C,), wd, bd, eps)
    y.backward(dy.double())
    arrays = dict(x=x, dy=dy, y=y, dx=xd.grad, eps=torch.tensor([eps]))
    if affine:
        arrays.update(w=w, b=b, dw=wd.grad, db=bd.grad)
    write(h5, name, **arrays)


def batchnorm(h5, name, x, training, momentum, eps):
    C = x.shape[1]
    dy = randn(*x.shape)
    w, b = randn(C, scale=0.5, shift=1.0), randn(C, scale=0.5)
    rm0 = randn(C, scale=0.3)
    rv0 = (torch.rand(C, generator=g) + 0.5).float()
    xd, wd, bd = leaf(x), leaf(w), leaf(b)
    rm, rv = rm0.double().clone(), rv0.double().clone()
    y = F.batch_norm(xd, rm, rv, wd, bd, training=training, momentum=momentum, eps=eps)
    y.backward(dy.double())
    write(h5, name, x=x, dy=dy, w=w, b=b, running_mean0=rm0, running_var0=rv0, y=y, dx=xd.grad, dw=wd.grad,
          db=bd.grad, running_mean1=rm, running_var1=rv, momentum=torch.tensor([momentum]),
          eps=torch.tensor([eps]))


def main():
    with h5py.File(OUT, "w") as h5:
        row_op(h5, "softmax", lambda t: F.softmax(t, -1), randn(4, 3, 7, scale=3.0))
        row_op(h5, "log_softmax", lambda t: F.log_softmax(t, -1), randn(4, 3, 7, scale=3.0))
        # logits around +-1000: exp would overflow without the max subtraction
        big = randn(3, 6, scale=500.0)
        big[0, :] = torch.tensor([1000.0, 999.0, -1000.0, 0.0, 1000.0, 998.5])
        row_op(h5, "softmax_large", lambda t: F.softmax(t, -1), big)
        row_op(h5, "log_softmax_large", lambda t: F.log_softmax(t, -1), big)
        # mean 3 >> std 1 checks the variance does not cancel
        layernorm(h5, "layernorm", randn(3, 5, 16, shift=3.0), True, 1e-5)
        layernorm(h5, "layernorm_noaffine", randn(6, 10, scale=2.0), False, 1e-6)
        x = randn(5, 8)
        x[2] *= 1e-5  # ||x|| < eps: the clamp is active for this row
        row_op(h5, "l2_normalize", lambda t: F.normalize(t, p=2.0, dim=-1, eps=1e-3), x)
        h5["l2_normalize"].create_dataset("eps", data=np.array([1e-3], np.float32))
        batchnorm(h5, "batchnorm_train", randn(4, 3, 5, 5, scale=2.0, shift=1.0), True, 0.1, 1e-5)
        # eps 1e-3 (TF EfficientNet): large enough that a misplaced eps shows at 1e-5 tolerance
        batchnorm(h5, "batchnorm_eval", randn(4, 3, 5, 5, scale=2.0, shift=1.0), False, 0.01, 1e-3)
        batchnorm(h5, "batchnorm_train_2d", randn(8, 6), True, 0.01, 1e-3)  # (N, C): one value per plane
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
