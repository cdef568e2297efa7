#!/usr/bin/python3
"""PyTorch counterpart of bench/perf/perf_conv.c: the same EfficientNet-B0 conv layers, batch 16,
float32, channels_last (PyTorch's fast CPU layout for depthwise / oneDNN), same thread count.

Prints the same table and "RESULT torch_conv <layer>_<metric> <value>" lines.
Usage: /usr/bin/python3 bench/perf/perf_conv_torch.py [--reps R] [--batch N] [--threads T]
       [--layout channels_last|contiguous]
"""
import argparse
import os
import time

import torch
import torch.nn.functional as F

# name, C, H, W, OC, K, stride, groups, x_grad, description  (as in perf_conv.c)
LAYERS = [
    ("stem_k3s2", 3, 224, 224, 32, 3, 2, 1, False, "stem 3x3 s2, 3 -> 32 @224"),
    ("dw_k3s1_96", 96, 112, 112, 96, 3, 1, 96, True, "depthwise 3x3 s1, 96 @112"),
    ("dw_k3s2_96", 96, 112, 112, 96, 3, 2, 96, True, "depthwise 3x3 s2, 96 @112 (stage 2)"),
    ("dw_k5s1_240", 240, 28, 28, 240, 5, 1, 240, True, "depthwise 5x5 s1, 240 @28 (stage 3)"),
    ("dw_k5s2_144", 144, 56, 56, 144, 5, 2, 144, True, "depthwise 5x5 s2, 144 @56 (stage 3)"),
    ("pw_expand_24_144", 24, 56, 56, 144, 1, 1, 1, True, "1x1 expand 24 -> 144 @56"),
    ("pw_project_144_24", 144, 56, 56, 24, 1, 1, 1, True, "1x1 project 144 -> 24 @56"),
    ("pw_expand_80_480", 80, 14, 14, 480, 1, 1, 1, True, "1x1 expand 80 -> 480 @14"),
    ("pw_head_320_1280", 320, 7, 7, 1280, 1, 1, 1, True, "1x1 head 320 -> 1280 @7"),
]


def same_pad(n, k, s):
    out = (n + s - 1) // s
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int,
                    default=int(os.environ.get("VERSA_THREADS") or os.environ.get("OMP_NUM_THREADS") or os.cpu_count()))
    ap.add_argument("--layout", default="channels_last", choices=["channels_last", "contiguous"])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    fmt = torch.channels_last if a.layout == "channels_last" else torch.contiguous_format
    N = a.batch
    print(f"perf_conv_torch: torch {torch.__version__}, {a.layout}, batch {N}, {torch.get_num_threads()} threads")
    print(f"RESULT torch_conv threads {torch.get_num_threads()}")
    print("%-20s %-38s %9s %9s %9s %9s %9s" % ("layer", "", "fwd_ms", "fwd_GF/s", "f+b_ms", "f+b_GF/s", "bwd_GF/s"))
    g = torch.Generator().manual_seed(7)
    tot_fl = tot_s = 0.0
    for name, C, H, W, OC, K, s, groups, x_grad, what in LAYERS:
        x = (torch.rand(N, C, H, W, generator=g) * 2 - 1).to(memory_format=fmt)
        w = ((torch.rand(OC, C // groups, K, K, generator=g) * 2 - 1) * 0.1).to(memory_format=fmt)
        pt, pb = same_pad(H, K, s)
        pl, pr = same_pad(W, K, s)
        OH, OW = (H + s - 1) // s, (W + s - 1) // s
        dy = (torch.rand(N, OC, OH, OW, generator=g) * 2 - 1).to(memory_format=fmt)
        fwd_fl = 2.0 * N * OC * OH * OW * (C // groups) * K * K
        bwd_fl = fwd_fl * (2 if x_grad else 1)

        def conv(xx, ww):
            if pt or pb or pl or pr:
                xx = F.pad(xx, [pl, pr, pt, pb])
            return F.conv2d(xx, ww, None, s, 0, 1, groups)

        best_f = best_fb = 1e30
        for rep in range(a.reps + 1):
            with torch.no_grad():
                t0 = time.perf_counter()
                conv(x, w)
                t1 = time.perf_counter()
            xr = x.detach().requires_grad_(x_grad)
            wr = w.detach().requires_grad_(True)
            t2 = time.perf_counter()
            y = conv(xr, wr)
            y.backward(dy)
            t3 = time.perf_counter()
            if rep > 0:
                best_f = min(best_f, t1 - t0)
                best_fb = min(best_fb, t3 - t2)
        bwd_s = best_fb - best_f
        print("%-20s %-38s %9.2f %9.1f %9.2f %9.1f %9.1f" % (
            name, what, 1e3 * best_f, fwd_fl / best_f / 1e9, 1e3 * best_fb, (fwd_fl + bwd_fl) / best_fb / 1e9,
            bwd_fl / bwd_s / 1e9 if bwd_s > 0 else 0.0))
        print(f"RESULT torch_conv {name}_fwd_ms {1e3 * best_f:.3f}")
        print(f"RESULT torch_conv {name}_fwdbwd_ms {1e3 * best_fb:.3f}")
        print(f"RESULT torch_conv {name}_fwdbwd_gflops {(fwd_fl + bwd_fl) / best_fb / 1e9:.2f}")
        tot_fl += fwd_fl + bwd_fl
        tot_s += best_fb
    print(f"all layers: forward+backward {tot_fl / tot_s / 1e9:.1f} GFLOP/s")
    print(f"RESULT torch_conv all_fwdbwd_gflops {tot_fl / tot_s / 1e9:.2f}")


if __name__ == "__main__":
    main()
