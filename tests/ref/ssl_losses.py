#!/usr/bin/python3
"""Reference values for the stage-1 losses (tests/ssl/test_ssl_losses.c), computed the way
DINOv2 computes them: DINOLoss over local crops plus the swapped global pair with loss_scales,
iBOTPatchLoss.forward_masked, KoLeoLoss, softmax centering with the delayed center update, and
Sinkhorn-Knopp (single process).  Run: /usr/bin/python3 tests/ref/ssl_losses.py"""
import h5py
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.manual_seed(0)
OUT = "tests/ref/data/ssl_losses.h5"


def lossfunc(t, s, temp):
    return torch.sum(t * F.log_softmax(s / temp, dim=-1), dim=-1)


def dino_forward(student_list, teacher_list, temp=0.1):
    total = 0
    for s in student_list:
        lsm = F.log_softmax(s / temp, dim=-1)
        for t in teacher_list:
            total -= torch.sum(t * lsm, dim=-1).mean()
    return total


def sinkhorn(teacher_output, temp, n_iterations=3):
    Q = torch.exp(teacher_output.double() / temp).t()
    B, K = Q.shape[1], Q.shape[0]
    Q /= torch.sum(Q)
    for _ in range(n_iterations):
        Q /= torch.sum(Q, dim=1, keepdim=True)
        Q /= K
        Q /= torch.sum(Q, dim=0, keepdim=True)
        Q /= B
    Q *= B
    return Q.t().float()


def koleo(x, eps=1e-8):
    x = F.normalize(x, eps=eps, p=2, dim=-1)
    with torch.no_grad():
        dots = x @ x.t()
        dots.view(-1)[:: x.shape[0] + 1].fill_(-1)
        _, I = torch.max(dots, dim=1)
    d = nn.PairwiseDistance(2, eps=eps)(x, x[I])
    return -torch.log(d + eps).mean()


with h5py.File(OUT, "w") as f:
    # ---- DINO: 2 global + 3 local crops, B = 4, K = 32 ----
    B, K, L = 4, 32, 3
    s = (torch.randn((2 + L) * B, K) * 3).requires_grad_(True)
    t_raw = torch.randn(2 * B, K) * 2
    center = torch.randn(1, K) * 0.5
    teacher_temp = 0.04
    t = F.softmax((t_raw - center) / teacher_temp, dim=-1)
    n_terms = 2 * L + 2
    t_chunks = t.chunk(2)
    s_global, s_local = s[: 2 * B], s[2 * B:]
    local = dino_forward(list(s_local.chunk(L)), list(t_chunks)) / n_terms
    t_swapped = torch.cat([t_chunks[1], t_chunks[0]])
    glob = dino_forward([s_global], [t_swapped]) * 2 / n_terms
    loss = local + glob
    loss.backward()
    g = f.create_group("dino")
    g["s"], g["t_raw"], g["center"], g["t"] = s.detach().numpy(), t_raw.numpy(), center.numpy(), t.numpy()
    g["loss"], g["s_grad"] = loss.detach().reshape(1).numpy(), s.grad.numpy()
    g.attrs.update(B=B, K=K, n_local=L, teacher_temp=teacher_temp)
    # delayed center update with this batch (momentum 0.9)
    new_center = center * 0.9 + t_raw.sum(0, keepdim=True) / t_raw.shape[0] * 0.1
    g["center_next"] = new_center.numpy()

    # ---- iBOT: 2B = 6 images of 9 patches, K = 24 ----
    n_img, N, K = 6, 9, 24
    masks = torch.rand(n_img, N) < 0.4
    masks[0, :] = False  # an image without masked patches
    masks[1, 0] = True
    sp = torch.randn(n_img, N, K) * 2
    tp_raw = torch.randn(n_img, N, K)
    pcenter = torch.randn(1, 1, K) * 0.3
    tp = F.softmax((tp_raw - pcenter) / 0.05, dim=-1)
    s_masked = sp[masks].clone().requires_grad_(True)
    t_masked = tp[masks]
    w = (1 / masks.sum(-1).clamp(min=1.0)).unsqueeze(-1).expand_as(masks)[masks]
    ibot = -(lossfunc(t_masked, s_masked, 0.1) * w).sum() / masks.shape[0]
    ibot.backward()
    g = f.create_group("ibot")
    g["s"], g["t"], g["w"] = s_masked.detach().numpy(), t_masked.numpy(), w.numpy()
    g["loss"], g["s_grad"] = ibot.detach().reshape(1).numpy(), s_masked.grad.numpy()
    g.attrs["n_images"] = n_img

    # ---- KoLeo on B = 7 features of D = 10 ----
    x = torch.randn(7, 10).requires_grad_(True)
    kl = koleo(x)
    kl.backward()
    g = f.create_group("koleo")
    g["x"], g["loss"], g["x_grad"] = x.detach().numpy(), kl.detach().reshape(1).numpy(), x.grad.numpy()

    # ---- Sinkhorn-Knopp (3 iterations) ----
    to = torch.randn(6, 10) * 0.5
    q = sinkhorn(to, 0.07)
    g = f.create_group("sinkhorn")
    g["t"], g["q"] = to.numpy(), q.numpy()
print("wrote", OUT)
