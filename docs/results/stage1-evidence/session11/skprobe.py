#!/usr/bin/python3
"""sklearn cross-check of versa bench's crop probes: PREPARED.h5 FEAT.h5 [FEAT2.h5 ...]"""
import h5py, sys
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import roc_auc_score
p = h5py.File(sys.argv[1]); split = p["split"][:]; y_box = p["box_labels"]["pathology"][:]; kind = p["box_label"][:]
for fn in sys.argv[2:]:
    f = h5py.File(fn); X = f["features"][:]; b = f["box"][:]; s = split[f["sample"][:]]; y = (y_box[b] == 2).astype(int)
    tr, va, te = s == 0, s == 1, s == 2
    sc = StandardScaler().fit(X[tr]); Xs = sc.transform(X)
    best = None
    for C in [1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1]:
        m = LogisticRegression(C=C, max_iter=3000).fit(Xs[tr], y[tr])
        v = roc_auc_score(y[va], m.decision_function(Xs[va]))
        if best is None or v > best[0]: best = (v, C, roc_auc_score(y[te], m.decision_function(Xs[te])), m)
    m = best[3]; dte = m.decision_function(Xs[te])
    per = " ".join("type%d %.3f" % (k, roc_auc_score(y[te][kind[b][te] == k], dte[kind[b][te] == k])) for k in (0, 1))
    print("%-60s n %d/%d/%d pos %.2f  LR C=%g val %.3f test %.3f  (%s)" % (fn[-60:], tr.sum(), va.sum(), te.sum(), y.mean(), best[1], best[0], best[2], per))
