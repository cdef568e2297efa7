#!/usr/bin/python3
"""Lesion-centred crops of a prepared file's *train split* (no labels), as 16-bit PNGs plus a
manifest for `versa prepare manifest`: the unlabelled ROI patches of experiments C-E.  The crop is
the bench's (square, longer box side x (1 + 2 margin), zero outside the image).

Usage: roi_crops.py PREPARED.h5 OUT_DIR [MARGIN=0.1]
then:  versa prepare manifest OUT_DIR OUT_DIR/roi.h5 --manifest OUT_DIR/manifest.csv --no-crop --size 96x96"""
import h5py, numpy as np, sys, os
from PIL import Image
h5, out, margin = sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) > 3 else 0.1
f = h5py.File(h5)
boxes, off, split, pid = f["boxes"][:], f["box_offset"][:], f["split"][:], f["patient_id"][:]
imgs = f["images"]
os.makedirs(out + "/img", exist_ok=True)
rows = []
for i in range(len(split)):
    if split[i] != 0 or off[i + 1] == off[i]: continue
    im = imgs[i]; H, W = im.shape
    for j in range(off[i], off[i + 1]):
        b = boxes[j]
        cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
        side = max(16.0, max(b[2] - b[0], b[3] - b[1]) * (1 + 2 * margin))
        x0, y0, L = int(round(cx - side / 2)), int(round(cy - side / 2)), int(round(side))
        c = np.zeros((L, L), np.uint16)
        xs, ys, xe, ye = max(0, x0), max(0, y0), min(W, x0 + L), min(H, y0 + L)
        c[ys - y0:ye - y0, xs - x0:xe - x0] = im[ys:ye, xs:xe]
        name = "img/%06d.png" % j
        Image.fromarray(c, mode="I;16").save(out + "/" + name)
        rows.append((name, pid[i].decode()))
with open(out + "/manifest.csv", "w") as o:
    o.write("path,patient_id,split\n")
    for n, p in rows: o.write("%s,%s,train\n" % (n, p))
print(len(rows), "crops")
