"""The PyTorch side of bench/perf/perf_models.c: the same cases, the same work, the same threads.

   vit_s_train       ViT-S/16 at 224, batch 8: forward + backward + AdamW step
   vit_ti_train      ViT-Ti/16 at 224, batch 16: forward + backward + AdamW step
   effnet_b0_train   EfficientNet-B0 at 224, batch 16 (BN in training mode), channels_last
   vit_s_infer       ViT-S/16 at 224, batch 32: forward only under torch.no_grad(), eval mode
   student_224       the stage-2 student step: EfficientNet-B0 at 224 (batch 16) / 512 (batch 4),
   student_512       channels_last, BI-RADS (5) and density (4) nn.Linear heads on the pooled
                     feature, both cross-entropies + the relational KD term of VersaMammo's
                     stage-2 loss.py against fixed (B, 384) teacher features, torch.optim.Adam 1e-4

The models are the reference mirrors of tests/ref/models.py (DINOv2 ViT with LayerScale,
lukemelas EfficientNet with static SAME padding), whose state_dict names and math the engine's
parity tests check.  Training cases: a 1000-way nn.Linear head on the feature (CLS token / pooled
head feature), F.cross_entropy against fixed random labels, backward, torch.optim.AdamW.step().
Lines starting with "RESULT" are read by bench/run_models.sh.

Usage: /usr/bin/python3 bench/perf/perf_models_torch.py CASE [--threads N] [--batch B]
       [--passes P] [--steps S] [--contiguous]   (--contiguous: NCHW instead of channels_last)
"""
import argparse
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "ref"))
import models as ref  # noqa: E402  (tests/ref/models.py: ViT, EfficientNet, DINOHead)

VIT = {"vit_small": (384, 12, 6), "vit_tiny": (192, 12, 3)}


def init_vit(m):
    """DINOv2 init as nn/vit.c: trunc_normal(0.02) linears with zero bias, LN (1, 0), LayerScale
    1e-5, pos_embed trunc_normal(0.02), cls N(0, 1e-6), mask token 0; patch conv default."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name == "pos_embed":
                nn.init.trunc_normal_(p, std=0.02)
            elif name == "cls_token":
                p.normal_(0, 1e-6)
            elif name.startswith("blocks.") and name.endswith(".weight") and p.dim() == 2:
                nn.init.trunc_normal_(p, std=0.02)
            elif name.startswith("blocks.") and name.endswith(".bias") and "norm" not in name:
                p.zero_()


def kd_loss(f, t):
    """VersaMammo stage 2 (tests/ref/distill_losses.py): KL of row-softmaxed cosine Gram matrices"""
    fs, ft = F.normalize(f, dim=1), F.normalize(t, dim=1)
    return F.kl_div(F.log_softmax(ft @ ft.t(), dim=1), F.softmax(fs @ fs.t(), dim=1), reduction="batchmean")


def blas_info():
    """the OpenBLAS core PyTorch's BLAS runs (Debian's torch calls the system libblas.so.3)"""
    import ctypes
    for lib in ("libblas.so.3", "libopenblas.so.0"):
        try:
            h = ctypes.CDLL(lib)
            h.openblas_get_corename.restype = ctypes.c_char_p
            h.openblas_get_config.restype = ctypes.c_char_p
            return f"{h.openblas_get_config().decode().strip()}, core {h.openblas_get_corename().decode()}"
        except (OSError, AttributeError):
            continue
    return "(BLAS core unknown)"


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


def run(name, step, passes, steps, images):
    """one warm-up step, then passes x steps; best per-step (wall, CPU) of each clock"""
    step()
    best_wall = best_cpu = 1e30
    for p in range(passes):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        wall, cpu = (time.perf_counter() - t0) / steps, (time.process_time() - c0) / steps
        print(f"   {name} pass {p + 1}: {wall:.3f} s/step wall, {cpu:.3f} CPU-s/step, {images / wall:.2f} images/s wall",
              flush=True)
        best_wall, best_cpu = min(best_wall, wall), min(best_cpu, cpu)
    return best_wall, best_cpu


def results(name, wall, cpu, images, nt):
    print(f"   best: {wall:.3f} s/step wall = {images / wall:.2f} images/s; {cpu:.3f} CPU-s/step = "
          f"{images / (cpu / nt):.2f} images/s core; peak RSS {peak_rss_mb():.0f} MB")
    print(f"RESULT torch {name}_step_s {wall:.4f}")
    print(f"RESULT torch {name}_step_cpu_s {cpu:.4f}")
    print(f"RESULT torch {name}_images_per_s {images / wall:.2f}")
    print(f"RESULT torch {name}_images_per_s_core {images / (cpu / nt):.2f}")
    print(f"RESULT torch {name}_peak_rss_mb {peak_rss_mb():.0f}", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=["vit_s_train", "vit_ti_train", "effnet_b0_train", "vit_s_infer",
                                         "student_224", "student_512"])
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", os.cpu_count())))
    ap.add_argument("--batch", type=int, default=0)
    ap.add_argument("--passes", type=int, default=3)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--contiguous", action="store_true", help="CNN in NCHW instead of channels_last")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    nt = torch.get_num_threads()
    student = a.case.startswith("student_")
    cnn = a.case == "effnet_b0_train" or student
    fmt = torch.contiguous_format if (a.contiguous or not cnn) else torch.channels_last
    print(f"== torch {torch.__version__} {a.case}: {nt} threads, LD_PRELOAD={os.environ.get('LD_PRELOAD') or '(none)'}, "
          f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}"
          + (f", {'channels_last' if fmt == torch.channels_last else 'NCHW'}" if cnn else ""))
    print(f"   BLAS: {blas_info()}; OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}")

    train = a.case.endswith("_train") or student
    B = a.batch or {"vit_s_train": 8, "vit_ti_train": 16, "effnet_b0_train": 16, "vit_s_infer": 32,
                    "student_224": 16, "student_512": 4}[a.case]
    S = 512 if a.case == "student_512" else 224
    if cnn:
        model = ref.EfficientNet(1.0, 1.0, 224)  # BN momentum 0.01, eps 1e-3 as lukemelas (SAME pads of 224 = of 512)
        feat = 1280
    else:
        dim, depth, heads = VIT["vit_tiny" if a.case == "vit_ti_train" else "vit_small"]
        model = ref.ViT(224, 16, dim, depth, heads)
        init_vit(model)
        feat = dim
    model = model.to(memory_format=fmt)
    x = torch.randn(B, 3, S, S).contiguous(memory_format=fmt)
    labels = torch.randint(0, 1000, (B,))
    nparam = sum(p.numel() for p in model.parameters())
    print(f"   {('forward + backward + Adam' if student else 'forward + backward + AdamW') if train else 'forward, no grad, eval'}, batch {B} at {S}x{S}, "
          f"{nparam / 1e6:.2f}M parameters (backbone)")

    if student:
        heads = nn.ModuleList([nn.Linear(feat, 5), nn.Linear(feat, 4)])  # BI-RADS, density
        teacher = torch.randn(B, 384)
        density = torch.randint(0, 4, (B,))
        labels = torch.randint(0, 5, (B,))
        model.train()
        opt = torch.optim.Adam(list(model.parameters()) + list(heads.parameters()), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            f = model(x)
            loss = F.cross_entropy(heads[0](f), labels) + F.cross_entropy(heads[1](f), density) + kd_loss(f, teacher)
            loss.backward()
            opt.step()
    elif train:
        head = nn.Linear(feat, 1000)
        model.train()
        params = list(model.parameters()) + list(head.parameters())
        opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.05)

        def step():
            opt.zero_grad(set_to_none=True)
            f = model(x)[0] if not cnn else model(x)  # ViT: the CLS token; CNN: pooled feature
            F.cross_entropy(head(f), labels).backward()
            opt.step()
    else:
        model.eval()

        def step():
            with torch.no_grad():
                model(x)

    wall, cpu = run(a.case, step, a.passes, a.steps, B)
    results(a.case, wall, cpu, B, nt)


if __name__ == "__main__":
    main()
