#!/usr/bin/python3
"""Weights from this project into PyTorch: load a stage-1 checkpoint's teacher backbone into the
DINOv2-structured reference ViT of tests/ref/models.py with load_state_dict(strict=True), embed a
random image, and compare with `versa embed` on the same image.  Not run by CI (needs torch).

    /usr/bin/python3 tests/ref/check_roundtrip.py runs/pretrain_quick/checkpoint.h5 [build/versa]
"""
import os
import re
import subprocess
import sys
import tempfile

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(__file__))
from models import ViT  # noqa: E402

ARCH = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "vit_base": (768, 12, 12), "vit_large": (1024, 24, 16)}


def cfg_value(text, section, key, default):
    m = re.search(rf"^{section}:\s*\n((?:[ \t]+.*\n)+)", text, re.M)
    if m:
        k = re.search(rf"^\s+{key}:\s*([^\s#]+)", m.group(1), re.M)
        if k:
            return k.group(1)
    return default


def main():
    ckpt = sys.argv[1]
    versa = sys.argv[2] if len(sys.argv) > 2 else "build/versa"
    with h5py.File(ckpt, "r") as f:
        config = f.attrs["config"]
        config = config.decode() if isinstance(config, bytes) else str(config)
        prefix = "teacher.backbone."
        state = {k[len(prefix):]: torch.from_numpy(np.array(f[k])) for k in f.keys() if k.startswith(prefix)}
    arch = cfg_value(config, "student", "arch", "vit_tiny")
    patch = int(cfg_value(config, "student", "patch_size", "16"))
    size = int(cfg_value(config, "crops", "global_crops_size", "224"))
    dim, depth, heads = ARCH[arch]
    model = ViT(size, patch, dim, depth, heads).eval()
    model.load_state_dict(state, strict=True)
    print(f"loaded {len(state)} tensors into the reference {arch}/{patch} with strict=True")

    rng = np.random.default_rng(0)
    img = rng.integers(0, 65536, size=(size, size), dtype=np.uint16)
    with tempfile.NamedTemporaryFile(suffix=".pgm", delete=False) as t:
        t.write(f"P5 {size} {size} 65535\n".encode())
        t.write(img.astype(">u2").tobytes())
        path = t.name
    x = torch.from_numpy(img.astype(np.float32) / 65535.0)[None, None].repeat(1, 3, 1, 1)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        _, _, ref = model((x - mean) / std)
    out = subprocess.run([versa, "embed", "--model", ckpt, "--image", path], capture_output=True, text=True, check=True)
    os.unlink(path)
    got = np.array([float(v) for v in out.stdout.splitlines()[1].split()], dtype=np.float32)
    ref = ref.numpy().reshape(-1)
    err = np.abs(got - ref).max() / np.abs(ref).max()
    print(f"versa embed vs PyTorch: max relative error {err:.2e} over {ref.size} values")
    sys.exit(0 if err < 1e-4 else 1)


if __name__ == "__main__":
    main()
