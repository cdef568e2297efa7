"""Training dynamics of the PyTorch DINOv2 step (bench/perf/perf_pretrain_torch.py's modules) on a
prepared synthetic HDF5, for comparison with `versa pretrain` (ssl/pretrain.c) at the same config.

Not a unit test: a diagnostic.  Per step it prints the DINO / iBOT / KoLeo losses and
  t_ent  mean entropy of the centered, sharpened teacher softmax rows (nats; ln K = uniform)
  s_ent  mean entropy of the student softmax rows (student temp 0.1)
  t_mar  entropy of the batch-mean teacher distribution (ln K: prototypes used evenly;
         0: every image on one prototype = collapse)
which is what DINOv2 practitioners watch: healthy training has DINO < ln K, t_ent well below ln K
and t_mar high.  The recipe mirrors ssl/pretrain.c: 2 global + n local RandomResizedCrops with
flips, teacher on the globals (eval, no grad), centering (momentum 0.9, delayed update), teacher
temperature warm-up, LR warm-up + cosine (base_lr * sqrt(B / 1024)), cosine WD and EMA momentum,
no WD on biases / norms / LayerScale, patch-embedding LR x 0.2, last layer frozen for the first
epoch, per-module gradient clipping at 3, iBOT on random masks of half the global crops.

Usage: /usr/bin/python3 tests/ref/dino_dynamics.py --h5 runs/.../synth-vindr.h5 [--k 1024] ...
"""
import argparse
import math
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "bench", "perf"))
import models as ref  # noqa: E402
from perf_models_torch import init_vit  # noqa: E402
from perf_pretrain_torch import dino_cross_entropy, koleo  # noqa: E402


class SslModel(nn.Module):
    def __init__(self, a):
        super().__init__()
        self.backbone = ref.ViT(a.global_size, 16, 192, 12, 3)
        init_vit(self.backbone)
        if a.layerscale != 1e-5:
            for n, p in self.backbone.named_parameters():
                if n.endswith("gamma"):
                    p.data.fill_(a.layerscale)
        self.dino_head = ref.DINOHead(192, a.k, a.hidden, a.bottleneck)
        self.ibot_head = ref.DINOHead(192, a.k, a.hidden, a.bottleneck)
        for h in (self.dino_head, self.ibot_head):
            for m in h.mlp:
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
            h.last_layer.weight_g.requires_grad = False


def rrc(img, size, scale, g):
    """RandomResizedCrop (ratio 3/4..4/3) + horizontal flip of one (1, H, W) image -> (3, size, size)"""
    H, W = img.shape[-2:]
    area = H * W
    for _ in range(10):
        a = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(1, generator=g).item())
        r = math.exp(math.log(3 / 4) + (math.log(4 / 3) - math.log(3 / 4)) * torch.rand(1, generator=g).item())
        w, h = int(round(math.sqrt(a * r))), int(round(math.sqrt(a / r)))
        if 0 < w <= W and 0 < h <= H:
            break
    else:
        w, h = W, H
    y = int(torch.randint(0, H - h + 1, (1,), generator=g))
    x = int(torch.randint(0, W - w + 1, (1,), generator=g))
    c = F.interpolate(img[None, :, y:y + h, x:x + w], size=(size, size), mode="bilinear", align_corners=False)[0]
    if torch.rand(1, generator=g).item() < 0.5:
        c = c.flip(-1)
    return ((c - 0.5) / 0.5).expand(3, -1, -1)


def cosine(it, T, v0, v1, warm=0, start=0.0):
    if it < warm:
        return start + (v0 - start) * it / warm
    return v1 + 0.5 * (v0 - v1) * (1 + math.cos(math.pi * (it - warm) / max(T - warm, 1)))


def entropy(p):
    return -(p * torch.log(p.clamp_min(1e-30))).sum(-1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--h5", required=True)
    ap.add_argument("--k", type=int, default=1024)
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--bottleneck", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--iters", type=int, default=150)
    ap.add_argument("--epoch-len", type=int, default=50)
    ap.add_argument("--global-size", type=int, default=64)
    ap.add_argument("--local-size", type=int, default=32)
    ap.add_argument("--nlocal", type=int, default=2)
    ap.add_argument("--gscale", type=float, nargs=2, default=[0.32, 1.0])
    ap.add_argument("--lscale", type=float, nargs=2, default=[0.05, 0.32])
    ap.add_argument("--base-lr", type=float, default=0.004)
    ap.add_argument("--lr", type=float, default=0.0, help="peak LR (overrides base_lr scaling)")
    ap.add_argument("--warmup-epochs", type=float, default=1)
    ap.add_argument("--freeze-epochs", type=float, default=1)
    ap.add_argument("--ttemp-warmup-epochs", type=float, default=1)
    ap.add_argument("--ttemp0", type=float, default=0.04)
    ap.add_argument("--ttemp", type=float, default=0.07)
    ap.add_argument("--mom", type=float, default=0.992)
    ap.add_argument("--wd", type=float, default=0.04)
    ap.add_argument("--wd-end", type=float, default=0.2)
    ap.add_argument("--layerscale", type=float, default=1e-5)
    ap.add_argument("--koleo", type=float, default=0.1)
    ap.add_argument("--ibot", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    g = torch.Generator().manual_seed(a.seed + 1)

    with h5py.File(a.h5, "r") as f:
        split = f["split"][:]
        imgs = f["images"][:].astype(np.float32) / float(f.attrs["max_value"])
    imgs = torch.from_numpy(imgs[split == 0])[:, None]  # (N, 1, H, W) in [0, 1]
    print(f"# {a.h5}: {imgs.shape[0]} train images {tuple(imgs.shape[-2:])}; args {vars(a)}", flush=True)

    student, teacher = SslModel(a), SslModel(a)
    teacher.load_state_dict(student.state_dict())
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad = False
    groups = []
    for n, p in student.named_parameters():
        if not p.requires_grad:
            continue
        nowd = n.endswith(".bias") or "norm" in n or "gamma" in n
        groups.append({"params": [p], "name": n, "wd_mult": 0.0 if nowd else 1.0,
                       "lr_mult": 0.2 if "patch_embed" in n else 1.0, "last": "last_layer" in n})
    opt = torch.optim.AdamW(groups, lr=0.0, weight_decay=0.0)
    s_list, t_list = list(student.parameters()), list(teacher.parameters())
    mods = {m: [p for n, p in student.named_parameters() if n.startswith(m) and p.requires_grad]
            for m in ("backbone", "dino_head", "ibot_head")}

    K, B, NL, T, E = a.k, a.batch, a.nlocal, a.iters, a.epoch_len
    N = (a.global_size // 16) ** 2
    peak = a.lr if a.lr > 0 else a.base_lr * math.sqrt(B / 1024)
    dcenter, icenter = torch.zeros(1, K), torch.zeros(1, K)
    perm, pos = torch.randperm(imgs.shape[0], generator=g), 0
    print("it dino ibot koleo t_ent s_ent t_mar lr ttemp", flush=True)
    for it in range(T):
        lr = cosine(it, T, peak, 1e-6, int(a.warmup_epochs * E))
        wd = cosine(it, T, a.wd, a.wd_end)
        mom = cosine(it, T, a.mom, 1.0)
        tw = int(a.ttemp_warmup_epochs * E)
        ttemp = a.ttemp0 + (a.ttemp - a.ttemp0) * it / tw if it < tw else a.ttemp
        if pos + B > imgs.shape[0]:
            perm, pos = torch.randperm(imgs.shape[0], generator=g), 0
        batch = imgs[perm[pos:pos + B]]
        pos += B
        glob = torch.stack([rrc(batch[b], a.global_size, a.gscale, g) for v in range(2) for b in range(B)])
        loc = torch.stack([rrc(batch[b], a.local_size, a.lscale, g) for v in range(NL) for b in range(B)]) if NL else None
        masks = torch.zeros(2 * B, N, dtype=torch.bool)
        for i in range(2 * B):
            if torch.rand(1, generator=g).item() < 0.5:
                r = 0.1 + 0.4 * torch.rand(1, generator=g).item()
                masks[i, torch.randperm(N, generator=g)[:max(1, int(r * N))]] = True
        midx = masks.reshape(-1).nonzero().squeeze(1)
        w = (1.0 / masks.sum(1).clamp(min=1).float()).repeat_interleave(N)[midx]

        with torch.no_grad():
            t_cls, t_patch, _ = teacher.backbone(glob)
            t_logits, _ = teacher.dino_head(t_cls)
            t_dino = F.softmax((t_logits - dcenter) / ttemp, dim=-1)
            dcenter = dcenter * 0.9 + t_logits.mean(0, keepdim=True) * 0.1
            t_il, _ = teacher.ibot_head(t_patch.reshape(-1, 192)[midx])
            t_ibot = F.softmax((t_il - icenter) / ttemp, dim=-1)
            icenter = icenter * 0.9 + t_il.mean(0, keepdim=True) * 0.1
        opt.zero_grad(set_to_none=True)
        s_cls, s_patch, _ = student.backbone(glob, masks)
        cls_all = torch.cat([s_cls, student.backbone(loc)[0]]) if NL else s_cls
        s_logits, _ = student.dino_head(cls_all)
        lsm = F.log_softmax(s_logits / 0.1, dim=-1)
        dino = dino_cross_entropy(lsm.chunk(2 + NL), t_dino.chunk(2))
        ko = sum(koleo(c) for c in s_cls.chunk(2))
        s_il, _ = student.ibot_head(s_patch.reshape(-1, 192)[midx])
        ibot = ((-(t_ibot * F.log_softmax(s_il / 0.1, dim=-1)).sum(-1)) * w).sum() / (2 * B)
        loss = dino + a.koleo * ko + a.ibot * ibot
        loss.backward()
        for ps in mods.values():
            torch.nn.utils.clip_grad_norm_(ps, 3.0)
        for gr in opt.param_groups:
            gr["lr"] = (0.0 if gr["last"] and it < a.freeze_epochs * E else lr) * gr["lr_mult"]
            gr["weight_decay"] = wd * gr["wd_mult"]
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(t_list, mom)
            torch._foreach_add_(t_list, s_list, alpha=1 - mom)
            t_ent = entropy(t_dino).mean().item()
            s_ent = entropy(lsm.exp()).mean().item()
            t_mar = entropy(t_dino.mean(0)).item()
        print(f"{it + 1} {dino.item():.4f} {ibot.item():.4f} {ko.item():.4f} {t_ent:.4f} {s_ent:.4f} {t_mar:.4f} "
              f"{lr:.3g} {ttemp:.4f}", flush=True)


if __name__ == "__main__":
    main()
