#!/usr/bin/python3
"""Contact sheet of lesion crops (2 x box side): row 1 the first 8 benign, row 2 the first 8
malignant lesions of one finding type (0 mass, 1 calcification), each 128 px; prints their
subtlety classes (0-4 = subtlety 1-5).

Usage: montage.py PREPARED.h5 OUT.png [TYPE=0]"""
import h5py, numpy as np, sys
from PIL import Image
f = h5py.File(sys.argv[1]); out = sys.argv[2]; typ = int(sys.argv[3]) if len(sys.argv) > 3 else 0
boxes, off, bl = f["boxes"][:], f["box_offset"][:], f["box_label"][:]
p = f["box_labels"]["pathology"][:]; s = f["box_labels"]["subtlety"][:]
imgs = f["images"]
rows = {1: [], 2: []}
for i in range(len(off) - 1):
    for j in range(off[i], off[i + 1]):
        if bl[j] != typ or len(rows[p[j]]) >= 8: continue
        b = boxes[j]; im = imgs[i].astype(np.float32) / 65535
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        side = max(24, max(b[2] - b[0], b[3] - b[1]) * 2.0)
        x0, y0 = int(cx - side / 2), int(cy - side / 2); L = int(side)
        c = np.zeros((L, L), np.float32)
        H, W = im.shape
        xs, ys, xe, ye = max(0, x0), max(0, y0), min(W, x0 + L), min(H, y0 + L)
        c[ys - y0:ye - y0, xs - x0:xe - x0] = im[ys:ye, xs:xe]
        t = Image.fromarray((c * 255).astype(np.uint8)).resize((128, 128), Image.BILINEAR)
        rows[p[j]].append((np.asarray(t), s[j]))
    if all(len(r) >= 8 for r in rows.values()): break
grid = np.zeros((256, 1024), np.uint8)
for r, k in enumerate((1, 2)):
    for c, (t, st) in enumerate(rows[k]):
        grid[r * 128:(r + 1) * 128, c * 128:(c + 1) * 128] = t
Image.fromarray(grid).save(out)
print([st for _, st in rows[1]], [st for _, st in rows[2]])
