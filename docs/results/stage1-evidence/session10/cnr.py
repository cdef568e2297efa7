#!/usr/bin/python3
"""Conspicuity of masses by subtlety: on images with exactly one lesion, a mass with a mask,
CNR = (mean inside the mask - mean of a ring around it) / std of the ring (ring: from 2 px to
~half the mask's side outside it).  Median and quartiles per subtlety, first ~600 masses.

Usage: cnr.py PREPARED.h5"""
import h5py, numpy as np, sys
from scipy import ndimage
f = h5py.File(sys.argv[1])
boxes, off, bl = f["boxes"][:], f["box_offset"][:], f["box_label"][:]
p = f["box_labels"]["pathology"][:]; s = f["box_labels"]["subtlety"][:]
mp = f["mask_present"][:]
imgs, masks = f["images"], f["masks"]
res = {}
n = 0
for i in range(len(off) - 1):
    if off[i + 1] - off[i] != 1 or not mp[i]: continue
    j = off[i]
    if bl[j] != 0: continue
    im = imgs[i].astype(np.float32) / 65535; m = masks[i] > 0
    if m.sum() < 4: continue
    ring = ndimage.binary_dilation(m, iterations=max(3, int(np.sqrt(m.sum()) * 0.5))) & ~ndimage.binary_dilation(m, iterations=2) & (im > 0)
    if ring.sum() < 10: continue
    cnr = (im[m].mean() - im[ring].mean()) / (im[ring].std() + 1e-3)
    res.setdefault(s[j] + 1, []).append(cnr); n += 1
    if n > 600: break
for k in sorted(res): print(k, len(res[k]), "median CNR %.2f  q25 %.2f q75 %.2f" % tuple(np.percentile(res[k], [50, 25, 75])))
