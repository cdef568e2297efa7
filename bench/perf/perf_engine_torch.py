"""The PyTorch side of bench/perf/perf_engine.c: the same 12-layer, 384-wide, 6-head pre-norm
transformer step (forward + backward, no optimizer) over 197 tokens, batch 8, and F.linear at the
same shapes, on the same threads.  The attention is timm/DINOv2 `Attention` math (qkv reshape /
permute, softmax(q k^T * scale) v).  Lines starting with "RESULT" are read by bench/run.sh.

Usage: /usr/bin/python3 bench/perf/perf_engine_torch.py [--threads N] [--passes P] [--steps S] [--batch B]
"""
import argparse
import math
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class Block(nn.Module):
    def __init__(self, dim, num_heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class Model(nn.Module):
    def __init__(self, depth, dim, num_heads):
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, num_heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x):
        for b in self.blocks:
            x = b(x)
        return self.norm(x)


def timed(fn, reps):
    """best (wall s, process CPU s) per call of reps batches after one warm-up call, each clock
    separately; a batch lasts >= 0.1 s, since the process CPU clock adds the other threads' time
    only at scheduler ticks (perf_engine.c time_calls does the same)"""
    fn()  # warm-up
    t0 = time.perf_counter()
    fn()
    n = max(1, math.ceil(0.1 / max(time.perf_counter() - t0, 1e-6)))
    wall = cpu = 1e30
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(n):
            fn()
        w, c = (time.perf_counter() - t0) / n, (time.process_time() - c0) / n
        wall, cpu = min(wall, w), min(cpu, c)
    return wall, cpu


def linear_time(R, IN, OUT, reps=5):
    """F.linear forward + backward (dX, dW, db), best of reps"""
    x = torch.randn(R, IN, requires_grad=True)
    w = (0.1 * torch.randn(OUT, IN)).requires_grad_(True)
    b = torch.zeros(OUT, requires_grad=True)
    g = torch.full((R, OUT), 1e-3)

    def run():
        x.grad = w.grad = b.grad = None
        F.linear(x, w, b).backward(g)

    return timed(run, reps)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    preload = os.environ.get("LD_PRELOAD", "")
    print(f"== torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"LD_PRELOAD={preload or '(none)'}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}")
    print(f"RESULT torch threads {torch.get_num_threads()}")

    L, C, H, T, B = 12, 384, 6, 197, a.batch
    R = B * T
    nt = torch.get_num_threads()
    print(f"   rates: \"wall\" by the clock; \"core\" = work / (CPU-seconds / {nt} threads), the rate with the\n"
          "   cores to ourselves (the machine may be shared); best of the repetitions for each")

    def gf(fl, t):
        return fl / t / 1e9

    print("\n== F.linear forward + backward (its 3 products + bias), best of 5")
    fl_sum, wall_sum, cpu_sum = 0.0, 0.0, 0.0
    for name, IN, OUT in (("qkv", 384, 1152), ("proj", 384, 384), ("fc1", 384, 1536), ("fc2", 1536, 384)):
        wall, cpu = linear_time(R, IN, OUT)
        fl = 3 * 2.0 * R * IN * OUT
        fl_sum, wall_sum, cpu_sum = fl_sum + fl, wall_sum + wall, cpu_sum + cpu
        print(f"   linear {name:5s} {IN:4d} -> {OUT:4d}: {gf(fl, cpu / nt):6.1f} GFLOP/s core; wall {gf(fl, wall):6.1f}")
    print(f"   all four:              {gf(fl_sum, cpu_sum / nt):6.1f} GFLOP/s core; wall {gf(fl_sum, wall_sum):6.1f}")
    print(f"RESULT torch linear_gflops {gf(fl_sum, cpu_sum / nt):.1f}")
    print(f"RESULT torch linear_gflops_wall {gf(fl_sum, wall_sum):.1f}")

    scale = (C // H) ** -0.5
    qkv = torch.randn(B, T, 3 * C, requires_grad=True)
    ga = torch.full((B, T, C), 1e-3)

    def attention_core():  # timm Attention.forward between the two linears
        qkv.grad = None
        q, k, v = qkv.reshape(B, T, 3, H, C // H).permute(2, 0, 3, 1, 4)
        p = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
        (p @ v).transpose(1, 2).reshape(B, T, C).backward(ga)

    wall, cpu = timed(attention_core, 5)
    at_fl = 12.0 * B * T * T * C
    print(f"\n== attention core (B={B}, T={T}, C={C}, {H} heads) forward + backward, best of 5: "
          f"{gf(at_fl, cpu / nt):.1f} GFLOP/s core, {gf(at_fl, wall):.1f} wall")
    print(f"RESULT torch attention_gflops {gf(at_fl, cpu / nt):.1f}")
    print(f"RESULT torch attention_gflops_wall {gf(at_fl, wall):.1f}")

    model = Model(L, C, H)
    for n, p in model.named_parameters():
        if "norm" not in n and n.endswith("weight"):
            nn.init.trunc_normal_(p, std=0.02)
        elif "norm" not in n:
            nn.init.zeros_(p)
    x = torch.randn(B, T, C)
    g = torch.full((B, T, C), 1.0 / (B * T * C))
    fwd_fl = L * (2.0 * R * 12 * C * C + 4.0 * B * T * T * C)
    step_fl = 3 * fwd_fl
    nparam = sum(p.numel() for p in model.parameters())
    print(f"\n== training step: {L} layers, C={C}, {H} heads, T={T}, batch {B}, {nparam / 1e6:.1f}M params; "
          "forward + backward, no optimizer")

    def step():
        t0, c0 = time.perf_counter(), time.process_time()
        model.zero_grad(set_to_none=True)
        model(x).backward(g)
        return time.perf_counter() - t0, time.process_time() - c0

    step()  # warm-up
    best_wall = best_cpu = 1e30
    for p in range(a.passes):
        ts = [step() for _ in range(a.steps)]
        wall = sum(t[0] for t in ts) / a.steps
        cpu = sum(t[1] for t in ts) / a.steps
        print(f"   pass {p + 1}: {wall:.3f} s/step wall, {cpu:.3f} CPU-s/step, {B / wall:.2f} images/s wall")
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    core_step = best_cpu / nt
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
    print(f"   best: {best_wall:.3f} s/step wall = {B / best_wall:.2f} images/s; {best_cpu:.3f} CPU-s/step = "
          f"{B / core_step:.2f} images/s core")
    print(f"   achieved {gf(step_fl, core_step):.1f} GFLOP/s core, {gf(step_fl, best_wall):.1f} wall")
    print(f"   peak RSS {rss:.0f} MB")
    print(f"RESULT torch step_s {best_wall:.4f}")
    print(f"RESULT torch step_cpu_s {best_cpu:.4f}")
    print(f"RESULT torch images_per_s {B / best_wall:.2f}")
    print(f"RESULT torch images_per_s_core {B / core_step:.2f}")
    print(f"RESULT torch step_gflops {gf(step_fl, core_step):.1f}")
    print(f"RESULT torch peak_rss_mb {rss:.0f}")


if __name__ == "__main__":
    main()
