"""Reference data for tests/data/test_image.c: resize_f32 / image_resize against PyTorch
(F.interpolate bilinear, align_corners=False, antialias=False == cv2 INTER_LINEAR; mode "nearest"
== cv2 INTER_NEAREST) and, for shrinking with RESIZE_AREA, against the exact mean over each
output pixel's footprint (= cv2 INTER_AREA), checked against PIL's BOX filter at integer factors.  Run with /usr/bin/python3 from the repo root; writes
tests/ref/data/image_resize.h5 (a few kB)."""
import h5py
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

rng = np.random.default_rng(0)
H, W = 13, 17
img = rng.random((H, W), dtype=np.float32)
out = {"image": img}
# (out_w, out_h): enlarge, shrink, mixed, non-integer factors
sizes = [(40, 29), (5, 4), (34, 6), (11, 9), (17, 13)]
out["sizes"] = np.array(sizes, dtype=np.int32)
t = torch.from_numpy(img.astype(np.float64))[None, None]
for k, (ow, oh) in enumerate(sizes):
    out[f"bilinear{k}"] = F.interpolate(t, size=(oh, ow), mode="bilinear", align_corners=False)[0, 0].numpy().astype(np.float32)
    out[f"nearest{k}"] = F.interpolate(t, size=(oh, ow), mode="nearest")[0, 0].numpy().astype(np.float32)
# area (shrinking): the exact mean of the piecewise-constant image over each output pixel's
# footprint (= cv2 INTER_AREA), from the cumulative integral along each axis in float64
def area_1d(a, n_out, axis):
    a = np.moveaxis(a, axis, -1)
    n_in = a.shape[-1]
    cum = np.concatenate([np.zeros(a.shape[:-1] + (1,)), np.cumsum(a, axis=-1)], axis=-1)
    def F(u):   # integral over [0, u)
        i = np.minimum(np.floor(u).astype(int), n_in - 1)
        return cum[..., i] + (u - i) * a[..., i]
    edges = np.arange(n_out + 1) * (n_in / n_out)
    out = (F(edges[1:]) - F(edges[:-1])) / (n_in / n_out)
    return np.moveaxis(out, -1, axis)

area_sizes = [(5, 4), (11, 9), (8, 13), (3, 2)]
out["area_sizes"] = np.array(area_sizes, dtype=np.int32)
img64 = img.astype(np.float64)
for k, (ow, oh) in enumerate(area_sizes):
    out[f"area{k}"] = area_1d(area_1d(img64, ow, 1), oh, 0).astype(np.float32)
# integer factors: the same numbers must come out of PIL's BOX filter (a third-party check of
# the integral above): 12 x 16 -> 4 x 3 and 8 x 6
img2 = rng.random((12, 16), dtype=np.float32)
out["image2"] = img2
for k, (ow, oh) in enumerate([(4, 3), (8, 6)]):
    ours = area_1d(area_1d(img2.astype(np.float64), ow, 1), oh, 0)
    pil_box = np.array(Image.fromarray(img2, mode="F").resize((ow, oh), Image.BOX), dtype=np.float64)
    assert np.abs(ours - pil_box).max() < 1e-6
    out[f"area_int{k}"] = pil_box.astype(np.float32)

with h5py.File("tests/ref/data/image_resize.h5", "w") as f:
    for k, v in out.items():
        f[k] = v
print("wrote tests/ref/data/image_resize.h5")
