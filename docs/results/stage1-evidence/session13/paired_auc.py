#!/usr/bin/python3
"""Paired bootstrap of test AUC, teacher-initialised minus init-initialised fine-tuning, from
vitsup.py's npz files.  Usage: paired_auc.py TEACHER.npz INIT.npz [TEACHER2.npz INIT2.npz ...]
(several pairs: each seed's scores are rank-normalised and averaged per crop first)."""
import sys, numpy as np
from scipy.stats import rankdata
from sklearn.metrics import roc_auc_score
pairs = [(np.load(sys.argv[i]), np.load(sys.argv[i + 1])) for i in range(1, len(sys.argv), 2)]
y = pairs[0][0]["y"]
for t, b in pairs: assert (t["test_idx"] == pairs[0][0]["test_idx"]).all() and (b["y"] == y).all()
def avg(which): return np.mean([rankdata(p[which]["score"]) / len(y) for p in pairs], 0)
st, sb = avg(0), avg(1)
rng = np.random.default_rng(0); d = []
for _ in range(2000):
    i = rng.integers(0, len(y), len(y))
    if y[i].min() == y[i].max(): continue
    d.append(roc_auc_score(y[i], st[i]) - roc_auc_score(y[i], sb[i]))
d = np.array(d)
print("seeds %d: teacher %.3f, init %.3f, diff %+.3f [%+.3f, %+.3f] P(<=0) %.3f (test %d, %d positive)" % (
    len(pairs), roc_auc_score(y, st), roc_auc_score(y, sb), roc_auc_score(y, st) - roc_auc_score(y, sb),
    np.percentile(d, 2.5), np.percentile(d, 97.5), (d <= 0).mean(), len(y), y.sum()))
