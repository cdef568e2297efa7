"""Reference data for tests/data/test_augment.c: PIL bicubic resizing of crops (the resampler
DINOv2's RandomResizedCrop runs on PIL images), torchvision's Gaussian blur, brightness and
contrast.  Run with /usr/bin/python3 from the repo root; writes tests/ref/data/augment_ops.h5."""
import h5py
import numpy as np
import torch
import torchvision.transforms.functional as F
from PIL import Image

rng = np.random.default_rng(0)
H, W = 37, 53
img = rng.random((H, W), dtype=np.float32)
# a smooth component so the blur is not only averaging noise
yy, xx = np.mgrid[0:H, 0:W]
img = (0.5 * img + 0.5 * (0.5 + 0.5 * np.sin(xx / 5.0) * np.cos(yy / 7.0))).astype(np.float32)

out = {"image": img}
# (x, y, w, h, out_w, out_h): shrink, enlarge, mixed, whole image
crops = [(3, 5, 40, 30, 16, 12), (10, 2, 12, 9, 40, 31), (0, 0, 53, 37, 24, 50), (20, 10, 33, 27, 33, 27),
         (1, 1, 51, 35, 7, 5)]
pil = Image.fromarray(img, mode="F")
for k, (x, y, w, h, ow, oh) in enumerate(crops):
    c = pil.crop((x, y, x + w, y + h)).resize((ow, oh), Image.BICUBIC)
    out[f"crop{k}"] = np.array(c, dtype=np.float32)
out["crops"] = np.array(crops, dtype=np.int32)

t = torch.from_numpy(img)[None, None]
for k, s in enumerate([0.4, 1.3, 2.0]):
    out[f"blur{k}"] = F.gaussian_blur(t, [9, 9], [s, s])[0, 0].numpy()
out["blur_sigma"] = np.array([0.4, 1.3, 2.0], dtype=np.float32)
out["brightness_1.3"] = F.adjust_brightness(t[0], 1.3)[0].numpy()
out["contrast_0.7"] = F.adjust_contrast(t[0], 0.7)[0].numpy()
out["contrast_1.4"] = F.adjust_contrast(t[0], 1.4)[0].numpy()
out["solarize_0.5"] = F.solarize(t[0], 0.5)[0].numpy()

with h5py.File("tests/ref/data/augment_ops.h5", "w") as f:
    for k, v in out.items():
        f[k] = v
print("wrote tests/ref/data/augment_ops.h5")


# ---- DINOv2's MaskingGenerator (dinov2/data/masking.py), statistics over many draws ----
import math
import random


class MaskingGenerator:
    def __init__(self, input_size, num_masking_patches=None, min_num_patches=4, max_num_patches=None,
                 min_aspect=0.3, max_aspect=None):
        self.height, self.width = input_size
        self.num_patches = self.height * self.width
        self.num_masking_patches = num_masking_patches
        self.min_num_patches = min_num_patches
        self.max_num_patches = num_masking_patches if max_num_patches is None else max_num_patches
        max_aspect = max_aspect or 1 / min_aspect
        self.log_aspect_ratio = (math.log(min_aspect), math.log(max_aspect))

    def _mask(self, mask, max_mask_patches):
        delta = 0
        for _ in range(10):
            target_area = random.uniform(self.min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(random.uniform(*self.log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < self.width and h < self.height:
                top = random.randint(0, self.height - h)
                left = random.randint(0, self.width - w)
                num_masked = mask[top: top + h, left: left + w].sum()
                if 0 < h * w - num_masked <= max_mask_patches:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if mask[i, j] == 0:
                                mask[i, j] = 1
                                delta += 1
                if delta > 0:
                    break
        return delta

    def __call__(self, num_masking_patches=0):
        mask = np.zeros(shape=(self.height, self.width), dtype=bool)
        mask_count = 0
        while mask_count < num_masking_patches:
            max_mask_patches = num_masking_patches - mask_count
            max_mask_patches = min(max_mask_patches, self.max_num_patches)
            delta = self._mask(mask, max_mask_patches)
            if delta == 0:
                break
            else:
                mask_count += delta
        return mask


def components(m):
    H, W = m.shape
    seen = np.zeros_like(m)
    n = 0
    for i in range(H):
        for j in range(W):
            if m[i, j] and not seen[i, j]:
                n += 1
                stack = [(i, j)]
                seen[i, j] = True
                while stack:
                    a, b = stack.pop()
                    for da, db in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        x, y = a + da, b + db
                        if 0 <= x < H and 0 <= y < W and m[x, y] and not seen[x, y]:
                            seen[x, y] = True
                            stack.append((x, y))
    return n


random.seed(0)
gen = MaskingGenerator((16, 16), max_num_patches=0.5 * 16 * 16)
targets = [26, 64, 128]
draws = 3000
stats = []   # per target: mean count, std count, mean components, std components
for t in targets:
    cnt, comp = [], []
    for _ in range(draws):
        m = gen(t)
        cnt.append(m.sum())
        comp.append(components(m))
    stats.append([np.mean(cnt), np.std(cnt), np.mean(comp), np.std(comp)])
with h5py.File("tests/ref/data/augment_ops.h5", "a") as f:
    f["mask_targets"] = np.array(targets, dtype=np.int32)
    f["mask_draws"] = np.array([draws], dtype=np.int32)
    f["mask_stats"] = np.array(stats, dtype=np.float32)
print("mask stats", stats)
