#!/usr/bin/python3
"""The supervised ceiling for the descriptors: probe_ceiling's small CNN trained on mass crops for
margin spiculated vs circumscribed and shape irregular vs oval/round.  Usage: desccnn.py RAW PREP.h5"""
import os, sys, h5py, numpy as np, torch
from torch import nn
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import box_descriptors, crops
from sklearn.metrics import roc_auc_score
torch.set_num_threads(1); torch.manual_seed(0); np.random.seed(0)
raw, prep = sys.argv[1], h5py.File(sys.argv[2])
desc = box_descriptors(raw, prep)
X, s, k = crops(prep)
X = torch.tensor(X)[:, None]
tasks = {"margin spiculated vs circumscribed": lambda r: {"SPICULATED": 1, "CIRCUMSCRIBED": 0}.get(r["mass margins"]) if r["abnormality type"] == "mass" else None,
         "shape irregular vs oval/round": lambda r: {"IRREGULAR": 1, "OVAL": 0, "ROUND": 0}.get(r["mass shape"]) if r["abnormality type"] == "mass" else None}
for name, fun in tasks.items():
    y = np.array([-1 if d is None or fun(d) is None else fun(d) for d in desc])
    tr, va, te = [np.where((y >= 0) & (s == q))[0] for q in (0, 1, 2)]
    Y = torch.tensor(np.maximum(y, 0))
    def block(i, o): return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))
    net = nn.Sequential(block(1, 16), block(16, 32), block(32, 64), block(64, 64), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4); best = (-1, 0)
    for ep in range(30):
        net.train(); perm = tr[np.random.permutation(len(tr))]
        for i in range(0, len(perm), 32):
            b = perm[i:i + 32]; xb = X[b]
            if np.random.rand() < 0.5: xb = xb.flip(-1)
            loss = nn.functional.cross_entropy(net(xb), Y[b]); opt.zero_grad(); loss.backward(); opt.step()
        net.eval()
        with torch.no_grad(): pv, pt = net(X[va])[:, 1].numpy(), net(X[te])[:, 1].numpy()
        v = roc_auc_score(y[va], pv)
        if v > best[0]: best = (v, roc_auc_score(y[te], pt))
    print("%s: CNN test AUC %.3f (train %d, test %d)" % (name, best[1], len(tr), len(te)), flush=True)
