#!/usr/bin/python3
"""Reference values for the stage-2 losses (distill/losses.c, tests/distill/test_distill_losses.c),
written the way VersaMammo's pretraining/stage2/scr/loss.py computes them:

  KD       G_t = normalize(t) normalize(t)^T, G_s = normalize(f) normalize(f)^T,
           F.kl_div(F.log_softmax(G_t, 1), F.softmax(G_s, 1), reduction="batchmean")
  released contrastive   T = softmax(f_low f_low^T / 0.07) (no detach), P = log_softmax(f f^T / 0.07),
           L = -(T * P).sum(1).mean()
  label-aware contrastive (commit c23978e)   T = 0.5 softmax(g g^T / 0.07) + 0.5 (Y_b + Y_d) / 2,
           Y[i, j] = 1[y_i = y_j] / sum_j 1[y_i = y_j]; with missing labels (-1) the rule of
           distill.h (a row averages its known label sets; no known label -> the softmax alone)
  alignment (beyond the paper)  cosine: (1 - (normalize(p) * normalize(t)).sum(1)).mean();
           mse: F.mse_loss(p, t)

Inputs are float32 (stored), the references are computed in float64 from them (stored as float32).
Run from the repo root:  /usr/bin/python3 tests/ref/distill_losses.py
"""
import os

import h5py
import torch
import torch.nn.functional as F

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "distill_losses.h5")
g = torch.Generator().manual_seed(20250926)


def randn(*shape, scale=1.0):
    return (torch.randn(*shape, generator=g) * scale).float()


def leaf(t):
    return t.double().clone().requires_grad_(True)


def write(h5, name, **arrays):
    grp = h5.create_group(name)
    for k, v in arrays.items():
        v = v.detach() if torch.is_tensor(v) else torch.as_tensor(v)
        if v.dim() == 0:
            v = v.reshape(1)
        grp.create_dataset(k, data=v.float().numpy() if v.dtype.is_floating_point else v.int().numpy())


def kd_loss(f, t):
    fs, ft = F.normalize(f, dim=1), F.normalize(t, dim=1)
    gs, gt = fs @ fs.t(), ft @ ft.t()
    return F.kl_div(F.log_softmax(gt, dim=1), F.softmax(gs, dim=1), reduction="batchmean")


def released_contrastive(f, f_low, temp=0.07):
    T = F.softmax(f_low @ f_low.t() / temp, dim=1)
    P = F.log_softmax(f @ f.t() / temp, dim=1)
    return -(T * P).sum(1).mean()


def label_matrix(y):
    m = (y[:, None] == y[None, :]).double()
    return m / m.sum(1, keepdim=True)


def label_targets(gf, labels, temp=0.07, mix=0.5):
    """labels (B, S), -1 = missing"""
    T = F.softmax(gf @ gf.t() / temp, dim=1)
    B, S = labels.shape
    out = T.clone()
    for i in range(B):
        known = [s for s in range(S) if labels[i, s] >= 0]
        if not known:
            continue
        row = mix * T[i]
        for s in known:
            same = (labels[:, s] == labels[i, s]).double()
            row = row + (1 - mix) * same / same.sum() / len(known)
        out[i] = row
    return out


with h5py.File(OUT, "w") as h5:
    # ---- relational KD: B = 6, D = 10, Dt = 7; one student row with a small norm ----
    f, t = randn(6, 10), randn(6, 7)
    f[2] *= 1e-3
    fd = leaf(f)
    loss = kd_loss(fd, t.double())
    loss.backward()
    write(h5, "kd", f=f, t=t, loss=loss, df=fd.grad)
    # the paper's batch (28) with wider features
    f, t = randn(28, 64), randn(28, 48, scale=3.0)
    fd = leaf(f)
    loss = kd_loss(fd, t.double())
    loss.backward()
    write(h5, "kd_b28", f=f, t=t, loss=loss, df=fd.grad)

    # ---- released contrastive: moderate logits, and saturated ones: unnormalised non-negative
    # features like pooled SiLU maps with different row norms, |S| ~ 100-600, so the targets are
    # near one-hot on the largest-norm row, not on the diagonal ----
    for name, scale, D in (("released", 0.3, 10), ("released_sat", 1.0, 32)):
        f, fl = randn(6, D, scale=scale), randn(6, D, scale=scale)
        if name == "released_sat":
            rows = torch.tensor([0.5, 1.0, 1.6, 0.7, 1.3, 0.9])
            f = (f.abs() * rows[:, None]).float()
            fl = (fl.abs() * rows[[3, 5, 0, 2, 1, 4], None]).float()
        fd, fld = leaf(f), leaf(fl)
        loss = released_contrastive(fd, fld)
        loss.backward()
        write(h5, name, f=f, f_low=fl, loss=loss, df=fd.grad, df_low=fld.grad, temp=torch.tensor([0.07]))

    # ---- label-aware targets: B = 8, teacher dim 12, BI-RADS + density ----
    # (a) every label known: the published formula verbatim
    gf = randn(8, 12, scale=0.3)
    yb = torch.tensor([0, 1, 1, 2, 0, 3, 1, 2])
    yd = torch.tensor([2, 2, 1, 1, 3, 2, 0, 2])
    gd = gf.double()
    T_pub = 0.5 * F.softmax(gd @ gd.t() / 0.07, dim=1) + 0.5 * (label_matrix(yb) + label_matrix(yd)) / 2
    labels = torch.stack([yb, yd], 1)
    assert torch.allclose(T_pub, label_targets(gd, labels))
    f = randn(8, 16, scale=0.3)
    fd = leaf(f)
    loss = -(T_pub * F.log_softmax(fd @ fd.t() / 0.07, dim=1)).sum(1).mean()
    loss.backward()
    write(h5, "label_aware", g=gf, labels=labels, f=f, T=T_pub, loss=loss, df=fd.grad, mix=torch.tensor([0.5]))
    # (b) missing labels, mix 0.3
    labels_m = labels.clone()
    labels_m[1, 0] = -1
    labels_m[4, 1] = -1
    labels_m[6, :] = -1
    T_m = label_targets(gd, labels_m, mix=0.3)
    fd = leaf(f)
    loss = -(T_m * F.log_softmax(fd @ fd.t() / 0.07, dim=1)).sum(1).mean()
    loss.backward()
    write(h5, "label_aware_missing", g=gf, labels=labels_m, f=f, T=T_m, loss=loss, df=fd.grad, mix=torch.tensor([0.3]))

    # ---- feature alignment: B = 5, Dt = 9 ----
    p, t = randn(5, 9), randn(5, 9)
    pd = leaf(p)
    loss = (1 - (F.normalize(pd, dim=1) * F.normalize(t.double(), dim=1)).sum(1)).mean()
    loss.backward()
    write(h5, "align_cosine", p=p, t=t, loss=loss, dp=pd.grad)
    pd = leaf(p)
    loss = F.mse_loss(pd, t.double())
    loss.backward()
    write(h5, "align_mse", p=p, t=t, loss=loss, dp=pd.grad)
print("wrote", OUT)
