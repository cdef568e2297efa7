#!/usr/bin/python3
"""Contact sheet: rows = mass margins (circumscribed, obscured, microlobulated, ill-defined, spiculated),
8 crops each (the bench's 1.2x box crop, 96 px).  Usage: margin_montage.py RAW PREP.h5 OUT.png"""
import os, sys, h5py, numpy as np
from PIL import Image
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import box_descriptors
raw, prep, out = sys.argv[1], h5py.File(sys.argv[2]), sys.argv[3]
desc = box_descriptors(raw, prep)
off = prep["box_offset"][:]; boxes = prep["boxes"][:]
order = ["CIRCUMSCRIBED", "OBSCURED", "MICROLOBULATED", "ILL_DEFINED", "SPICULATED"]
tiles = {m: [] for m in order}
for i in range(len(off) - 1):
    rr = desc[off[i]:off[i + 1]]
    if None in rr or i % 2: continue
    im = None
    for j, r in enumerate(rr):
        m = r.get("mass margins")
        if m not in tiles or len(tiles[m]) >= 8: continue
        if im is None: im = prep["images"][i].astype(np.float32) / 65535
        b = boxes[off[i] + j]; cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        L = int(max(16, max(b[2] - b[0], b[3] - b[1]) * 1.2)); x0, y0 = int(cx - L / 2), int(cy - L / 2)
        c = np.zeros((L, L), np.float32); H, W = im.shape
        xs, ys, xe, ye = max(0, x0), max(0, y0), min(W, x0 + L), min(H, y0 + L)
        c[ys - y0:ye - y0, xs - x0:xe - x0] = im[ys:ye, xs:xe]
        c = (c - c.min()) / (c.max() - c.min() + 1e-6)
        tiles[m].append(np.asarray(Image.fromarray((c * 255).astype(np.uint8)).resize((96, 96), Image.BILINEAR)))
    if all(len(v) >= 8 for v in tiles.values()): break
g = np.zeros((96 * 5, 96 * 8), np.uint8)
for r, m in enumerate(order):
    for k, t in enumerate(tiles[m]): g[r * 96:(r + 1) * 96, k * 96:(k + 1) * 96] = t
Image.fromarray(g).save(out); print(out)
