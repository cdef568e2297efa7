"""The PyTorch side of bench/perf/perf_pretrain.c: one stage-1 DINOv2 step written with the
reference modules of tests/ref/models.py (DINOv2 ViT, DINOHead), the same work as the engine's
ssl_forward_backward + clip + AdamW + EMA:

  teacher (torch.no_grad, eval): 2 global crops -> CLS -> DINO head -> centered softmax targets
    (center EMA 0.9); masked patch tokens -> iBOT head -> centered softmax targets
  student: global crops with iBOT masks, local crops -> CLS of all crops -> DINO head;
    masked patch tokens -> iBOT head
  loss = DINO (every student crop against every other teacher crop, student temp 0.1)
       + 0.1 * KoLeo (per global crop, DINOv2's KoLeoLoss) + iBOT (weighted 1/n_masked per image)
  backward, clip_grad_norm_(3), AdamW, teacher EMA with torch._foreach_mul_/_add_ (m = 0.992)

The iBOT masks are the fixed pattern of perf_pretrain.c (make_masks), so both run the same
number of masked tokens.  One image = its 2 global + N local crops.

Usage: /usr/bin/python3 bench/perf/perf_pretrain_torch.py [--threads N] [--batch B] [--local N]
       [--k K] [--passes P] [--steps S]
"""
import argparse
import os
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "ref"))
import models as ref  # noqa: E402
from perf_models_torch import init_vit, results, run  # noqa: E402


class SslModel(nn.Module):
    def __init__(self, K):
        super().__init__()
        self.backbone = ref.ViT(224, 16, 192, 12, 3)
        init_vit(self.backbone)
        self.dino_head = ref.DINOHead(192, K, 2048, 256)
        self.ibot_head = ref.DINOHead(192, K, 2048, 256)
        for h in (self.dino_head, self.ibot_head):
            for m in h.mlp:
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
            h.last_layer.weight_g.requires_grad = False  # fixed at 1, as DINOv2


def make_masks(B, N):
    """perf_pretrain.c's make_masks: odd images masked, ratio 0.1..0.5, patch j masked when
    (37 j + 11 i) mod N < n"""
    m = torch.zeros(2 * B, N, dtype=torch.bool)
    for i in range(2 * B):
        n = int(N * (0.1 + 0.4 * (i // 2) / max(B - 1, 1))) if i % 2 else 0
        for j in range(N):
            m[i, j] = (37 * j + 11 * i) % N < n
    return m


def koleo(x, eps=1e-8):
    """DINOv2 KoLeoLoss"""
    x = F.normalize(x, eps=eps, p=2, dim=-1)
    with torch.no_grad():
        dots = x @ x.t()
        dots.view(-1)[:: x.shape[0] + 1].fill_(-1)
        idx = dots.max(dim=1)[1]
    d = F.pairwise_distance(x, x[idx], p=2, eps=eps)
    return -torch.log(d + eps).mean()


def dino_cross_entropy(lsm, tch):
    """DINO loss: mean over (teacher global crop g, student crop v != g) of the cross-entropy
    between teacher targets tch[g] and student log-probabilities lsm[v] (lists of chunks)"""
    dino, n_terms = 0.0, 0
    for v in range(len(lsm)):
        for g in range(len(tch)):
            if v != g:
                dino = dino + (-(tch[g] * lsm[v]).sum(-1)).mean()
                n_terms += 1
    return dino / n_terms


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--local", type=int, default=4)
    ap.add_argument("--k", type=int, default=4096)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    nt = torch.get_num_threads()
    print(f"== torch {torch.__version__} pretrain: {nt} threads, LD_PRELOAD={os.environ.get('LD_PRELOAD') or '(none)'}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")

    B, NL, K, G, L = a.batch, a.local, a.k, 224, 96
    N = (G // 16) ** 2
    student = SslModel(K)
    teacher = SslModel(K)  # weight_norm modules do not deepcopy: copy the state instead
    teacher.load_state_dict(student.state_dict())
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad = False
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.04)
    s_ema = [p for p in student.parameters()]
    t_ema = [p for p in teacher.parameters()]

    glob = torch.randn(2 * B, 3, G, G)
    loc = torch.randn(NL * B, 3, L, L) if NL else None
    masks = make_masks(B, N)
    midx = masks.reshape(-1).nonzero().squeeze(1)           # flat (image, patch) rows
    n_per = masks.sum(1).clamp(min=1).float()
    w = (1.0 / n_per).repeat_interleave(N).reshape(2 * B, N).reshape(-1)[midx]
    dino_center = torch.zeros(1, K)
    ibot_center = torch.zeros(1, K)
    temp, s_temp = 0.04, 0.1
    print(f"   ViT-Ti/16 + DINO head + iBOT head (K = {K}), batch {B}: 2 x {G} + {NL} x {L} crops, "
          f"{midx.numel()} masked tokens; {sum(p.numel() for p in params) / 1e6:.2f}M student parameters")

    state = {"dino_center": dino_center, "ibot_center": ibot_center, "loss": None}

    def step():
        # teacher targets
        with torch.no_grad():
            t_cls, t_patch, _ = teacher.backbone(glob)
            t_logits, _ = teacher.dino_head(t_cls)
            t_dino = F.softmax((t_logits - state["dino_center"]) / temp, dim=-1)
            state["dino_center"] = state["dino_center"] * 0.9 + t_logits.mean(0, keepdim=True) * 0.1
            t_m = t_patch.reshape(-1, 192)[midx]
            t_il, _ = teacher.ibot_head(t_m)
            t_ibot = F.softmax((t_il - state["ibot_center"]) / temp, dim=-1)
            state["ibot_center"] = state["ibot_center"] * 0.9 + t_il.mean(0, keepdim=True) * 0.1
        # student
        opt.zero_grad(set_to_none=True)
        s_cls, s_patch, _ = student.backbone(glob, masks)
        cls_all = s_cls
        if NL:
            l_cls, _, _ = student.backbone(loc)
            cls_all = torch.cat([s_cls, l_cls])
        s_logits, _ = student.dino_head(cls_all)
        dino = dino_cross_entropy(F.log_softmax(s_logits / s_temp, dim=-1).chunk(2 + NL), t_dino.chunk(2))
        ko = sum(koleo(c) for c in s_cls.chunk(2))
        s_il, _ = student.ibot_head(s_patch.reshape(-1, 192)[midx])
        ibot = ((-(t_ibot * F.log_softmax(s_il / s_temp, dim=-1)).sum(-1)) * w).sum() / (2 * B)
        loss = dino + 0.1 * ko + ibot
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 3.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_mul_(t_ema, 0.992)
            torch._foreach_add_(t_ema, s_ema, alpha=1 - 0.992)
        state["loss"] = (dino.item(), ibot.item(), ko.item())

    wall, cpu = run("pretrain", step, a.passes, a.steps, B)
    print("   losses: dino %.4f ibot %.4f koleo %.4f" % state["loss"])
    results("pretrain", wall, cpu, B, nt)


if __name__ == "__main__":
    main()
