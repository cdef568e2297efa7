"""Reference data for engine/loss.c.

Writes tests/ref/data/losses.h5 with one group per case: float32 inputs, the loss and the
gradients of the loss w.r.t. each input, computed by PyTorch in float64 from the float32 inputs.
Run from the repo root:
    /usr/bin/python3 tests/ref/losses.py
"""
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "losses.h5")
g = torch.Generator().manual_seed(20240612)


def randn(*shape, scale=1.0, shift=0.0):
    return (torch.randn(*shape, generator=g) * scale + shift).float()


def rand(*shape):
    return torch.rand(*shape, generator=g).float()


def leaf(t):
    return t.double().clone().requires_grad_(True)


def write(h5, name, **arrays):
    grp = h5.create_group(name)
    for k, v in arrays.items():
        v = v.detach() if torch.is_tensor(v) else torch.as_tensor(v)
        if v.dim() == 0:
            v = v.reshape(1)
        grp.create_dataset(k, data=v.float().numpy() if v.dtype.is_floating_point else v.numpy())


def cross_entropy(h5, name, logits, target, ls):
    x = leaf(logits)
    loss = F.cross_entropy(x, target, ignore_index=-100, label_smoothing=ls)
    loss.backward()
    write(h5, name, logits=logits, target=target.int(), label_smoothing=torch.tensor([ls]), loss=loss,
          dlogits=x.grad)


def pair(h5, name, fn, a, b, **extra):
    ad, bd = leaf(a), leaf(b)
    loss = fn(ad, bd)
    loss.backward()
    write(h5, name, a=a, b=b, loss=loss, da=ad.grad, db=bd.grad, **extra)


def soft_dice(p, t, smooth):
    dims = tuple(range(1, p.dim()))
    inter = (p * t).sum(dims)
    total = p.sum(dims) + t.sum(dims)
    return 1 - ((2 * inter + smooth) / (total + smooth)).mean()


def main():
    with h5py.File(OUT, "w") as h5:
        t = torch.tensor([1, -100, 3, 0, 4, -100, 2])
        cross_entropy(h5, "ce", randn(7, 5, scale=2.0), t, 0.0)
        cross_entropy(h5, "ce_smooth", randn(7, 5, scale=2.0), t, 0.1)
        big = randn(4, 6, scale=400.0)
        big[0] = torch.tensor([1000.0, -1000.0, 999.0, 0.0, 3.0, 1000.0])
        cross_entropy(h5, "ce_large", big, torch.tensor([2, 0, 5, 1]), 0.2)

        # soft targets: a distribution per row (DINO-like), gradient also to the targets
        logits, q = randn(4, 6, scale=2.0), F.softmax(randn(4, 6), -1).float()
        pair(h5, "ce_soft", lambda x, p: torch.sum(-p * F.log_softmax(x, -1), -1).mean(), logits, q)

        x = randn(3, 7, scale=3.0)
        x[0, :3] = torch.tensor([50.0, -50.0, 0.0])  # log(1+exp(50)) overflows in the naive form
        tgt, w = rand(3, 7), rand(3, 7) + 0.5
        pair(h5, "bce", lambda a, b: F.binary_cross_entropy_with_logits(a, b), x, tgt)
        pair(h5, "bce_weight", lambda a, b: F.binary_cross_entropy_with_logits(a, b, weight=w.double()), x, tgt,
             weight=w)

        pair(h5, "mse", F.mse_loss, randn(4, 5), randn(4, 5))
        pair(h5, "smooth_l1", lambda a, b: F.smooth_l1_loss(a, b, beta=0.5), randn(4, 5), randn(4, 5),
             beta=torch.tensor([0.5]))
        pair(h5, "smooth_l1_beta0", lambda a, b: F.smooth_l1_loss(a, b, beta=0.0), randn(4, 5), randn(4, 5),
             beta=torch.tensor([0.0]))

        lp = F.log_softmax(randn(5, 8, scale=2.0), -1).float()
        lq = F.log_softmax(randn(5, 8, scale=2.0), -1).float()
        pair(h5, "kl_div", lambda a, b: F.kl_div(a, b, reduction="batchmean", log_target=True), lp, lq)

        p = torch.sigmoid(randn(3, 2, 4, 4, scale=2.0)).float()
        tt = (rand(3, 2, 4, 4) > 0.6).float()
        pair(h5, "soft_dice", lambda a, b: soft_dice(a, b, 1.0), p, tt, smooth=torch.tensor([1.0]))
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
