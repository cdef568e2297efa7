#!/usr/bin/python3
"""Linear probes on the whole grid of frozen patch tokens (spatial layout kept) vs GAP, for
pathology and the mass descriptors.  Usage: tokprobe.py RAW PREP.h5 CKPT ..."""
import os, sys, h5py, numpy as np, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import box_descriptors, crops, load_teacher, lr_auc
torch.set_num_threads(1)
raw, prep = sys.argv[1], h5py.File(sys.argv[2])
desc = box_descriptors(raw, prep)
X, s, k = crops(prep)
X = torch.tensor((X - 0.449) / 0.226)[:, None].float()
tasks = {"pathology": lambda r: int(r["pathology"] == "MALIGNANT"),
         "spiculated": lambda r: {"SPICULATED": 1, "CIRCUMSCRIBED": 0}.get(r["mass margins"]) if r["abnormality type"] == "mass" else None,
         "irregular": lambda r: {"IRREGULAR": 1, "OVAL": 0, "ROUND": 0}.get(r["mass shape"]) if r["abnormality type"] == "mass" else None,
         "mass-malig": lambda r: int(r["pathology"] == "MALIGNANT") if r["abnormality type"] == "mass" else None,
         "calc-malig": lambda r: int(r["pathology"] == "MALIGNANT") if r["abnormality type"] == "calcification" else None}
Y = {n: np.array([-1 if d is None or fn(d) is None else fn(d) for d in desc]) for n, fn in tasks.items()}
def probe(F, y): return lr_auc(F, y, s, [1e-4, 1e-3, 1e-2, 0.1])
for spec in sys.argv[3:]:
    vit, chans = load_teacher(spec)
    toks, gaps = [], []
    with torch.no_grad():
        for i in range(0, len(X), 256):
            x = X[i:i + 256].expand(-1, chans, -1, -1)
            cls, p, g = vit(x)
            toks.append(p.reshape(p.shape[0], -1).numpy()); gaps.append(g.numpy())
    T, G = np.concatenate(toks), np.concatenate(gaps)
    print(spec, " ".join("%s gap %.3f grid %.3f |" % (n, probe(G, y), probe(T, y)) for n, y in Y.items()), flush=True)
