#!/usr/bin/python3
"""Reference values of the benchmark metrics for tests/bench/test_metrics.c.

Writes tests/ref/data/bench_metrics.h5 from fixed inputs (numpy seed 7) with Debian's
scikit-learn (python3-sklearn 1.2) and plain numpy:
  binary/      score (quantised to 0.1: many ties), pos, w (multiplicities 0..3 = a bootstrap
               resample); auc, auc_w (roc_auc_score, sample_weight = w)
  multiclass/  prob (n, 4) softmax rows, y in {0, 1, 2} (class 3 absent from y), w; auc (mean
               one-vs-rest AUC over the classes present in y), bacc (balanced_accuracy_score),
               acc, f1 (f1_score macro, zero_division 0) of argmax(prob); *_w with sample_weight
  multilabel/  score (n, 5), Y (column 4 has no positive), w; auc (mean AUC over the columns with
               a positive and a negative), f1 (f1_score macro over the columns with a positive,
               score > 0.5, zero_division 0), acc (subset accuracy); *_w
  retrieval/   q (nq, d), qy, db (ndb, d), dby (label 3 only among the queries: R = 0);
               hits (nq, 3) for K = 1, 2, 3, ap (AP@R, NaN for R = 0), top1..3, mapr (means,
               mapr over finite AP)
  knn/         xtr, ytr, xte, C, k, T; score (nte, C): DINO eval_knn weighted votes normalised
  percentile/  x (with NaNs), q; p = np.percentile(finite x, 100 q) (linear interpolation)
Run: /usr/bin/python3 tests/ref/bench_metrics.py
"""
import os

import h5py
import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score, roc_auc_score

rng = np.random.default_rng(7)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "bench_metrics.h5")
f = h5py.File(out, "w")


def put(group, **arrays):
    g = f.require_group(group)
    for k, v in arrays.items():
        v = np.asarray(v)
        if v.dtype == np.float64:
            v = v.astype(np.float64)
        g.create_dataset(k, data=v)


# ---- binary AUC with ties and weights -------------------------------------------------------
n = 40
score = (np.round(rng.random(n) * 10) / 10).astype(np.float32)   # many ties
pos = (rng.random(n) < 0.4).astype(np.uint8)
pos[:2] = [0, 1]
w = rng.integers(0, 4, n).astype(np.uint32)
w[:2] = [1, 1]
put("binary", score=score, pos=pos, w=w, auc=roc_auc_score(pos, score),
    auc_w=roc_auc_score(pos, score, sample_weight=w))

# ---- multi-class ----------------------------------------------------------------------------
n, C = 60, 4
logits = rng.standard_normal((n, C)) * 1.5
y = rng.integers(0, 3, n).astype(np.int32)                          # class 3 never true
logits[np.arange(n), y] += 1.0                                      # informative but imperfect
logits[:5, 3] += 4.0                                                # class 3 predicted sometimes
prob = np.exp(logits - logits.max(1, keepdims=True))
prob = (prob / prob.sum(1, keepdims=True)).astype(np.float32)
pred = prob.argmax(1)
w = rng.integers(0, 4, n).astype(np.uint32)


def ovr_auc(prob, y, sw=None):
    aucs = []
    for c in range(prob.shape[1]):
        t = (y == c).astype(int)
        m = np.ones(len(y), bool) if sw is None else sw > 0
        if t[m].min() == t[m].max():
            continue
        aucs.append(roc_auc_score(t, prob[:, c].astype(np.float64), sample_weight=sw))
    return np.mean(aucs)


put("multiclass", prob=prob, y=y, w=w,
    auc=ovr_auc(prob, y), bacc=balanced_accuracy_score(y, pred), acc=accuracy_score(y, pred),
    f1=f1_score(y, pred, average="macro", zero_division=0),
    auc_w=ovr_auc(prob, y, w), bacc_w=balanced_accuracy_score(y, pred, sample_weight=w),
    acc_w=accuracy_score(y, pred, sample_weight=w),
    f1_w=f1_score(y[w > 0], pred[w > 0], average="macro", zero_division=0, sample_weight=w[w > 0]))

# ---- multi-label ----------------------------------------------------------------------------
n, C = 50, 5
Y = (rng.random((n, C)) < 0.35).astype(np.uint8)
Y[:, 4] = 0                                                         # no positive: left out
score = np.clip(rng.random((n, C)) * 0.8 + 0.35 * Y, 0, 1).astype(np.float32)
w = rng.integers(0, 4, n).astype(np.uint32)


def ml_metrics(Y, S, sw=None):
    m = np.ones(len(Y), bool) if sw is None else sw > 0
    Ym, Sm, swm = Y[m], S[m], None if sw is None else sw[m]
    aucs = [roc_auc_score(Ym[:, c], Sm[:, c].astype(np.float64), sample_weight=swm)
            for c in range(Y.shape[1]) if 0 < Ym[:, c].sum() < len(Ym)]
    keep = Ym.sum(0) > 0
    f1 = f1_score(Ym[:, keep], (Sm[:, keep] > 0.5).astype(int), average="macro", zero_division=0, sample_weight=swm)
    acc = accuracy_score(Ym, (Sm > 0.5).astype(int), sample_weight=swm)
    return np.mean(aucs), f1, acc


a, b, c = ml_metrics(Y, score)
aw, bw, cw = ml_metrics(Y, score, w)
put("multilabel", score=score, Y=Y, w=w, auc=a, f1=b, acc=c, auc_w=aw, f1_w=bw, acc_w=cw)

# ---- retrieval: top-K and AP@R --------------------------------------------------------------
nq, ndb, d = 30, 80, 8
q = rng.standard_normal((nq, d)).astype(np.float32)
db = rng.standard_normal((ndb, d)).astype(np.float32)
qy = rng.integers(0, 3, nq).astype(np.int32)
qy[0] = 3                                                           # no database item: R = 0
dby = rng.integers(0, 3, ndb).astype(np.int32)
for k in range(nq):                                                 # labels correlated with features
    q[k, qy[k] % d] += 1.5
for k in range(ndb):
    db[k, dby[k] % d] += 1.5
qn = q.astype(np.float64) / np.linalg.norm(q.astype(np.float64), axis=1, keepdims=True)
dbn = db.astype(np.float64) / np.linalg.norm(db.astype(np.float64), axis=1, keepdims=True)
sim = qn @ dbn.T
Ks = [1, 2, 3]
hits = np.zeros((nq, 3), np.uint8)
ap = np.full(nq, np.nan)
for i in range(nq):
    order = np.argsort(-sim[i], kind="stable")
    rel = dby[order] == qy[i]
    for j, K in enumerate(Ks):
        hits[i, j] = rel[:K].any()
    R = int((dby == qy[i]).sum())
    if R:
        prec = np.cumsum(rel[:R]) / np.arange(1, R + 1)
        ap[i] = (prec * rel[:R]).sum() / R
put("retrieval", q=qn.astype(np.float32), qy=qy, db=dbn.astype(np.float32), dby=dby, hits=hits, ap=ap,
    topk=np.array(Ks, np.int32), top=hits.mean(0), mapr=np.nanmean(ap))

# ---- k-NN (DINO eval_knn) -------------------------------------------------------------------
ntr, nte, d, C, k, T = 70, 25, 6, 3, 20, 0.07
xtr = rng.standard_normal((ntr, d)).astype(np.float32)
ytr = rng.integers(0, C, ntr).astype(np.int32)
xtr[np.arange(ntr), ytr] += 1.0
xte = rng.standard_normal((nte, d)).astype(np.float32)
n64 = lambda x: x.astype(np.float64) / np.linalg.norm(x.astype(np.float64), axis=1, keepdims=True)
s = n64(xte) @ n64(xtr).T
kscore = np.zeros((nte, C))
for i in range(nte):
    top = np.argsort(-s[i], kind="stable")[:k]
    for j in top:
        kscore[i, ytr[j]] += np.exp(s[i, j] / T)
    kscore[i] /= kscore[i].sum()
put("knn", xtr=xtr, ytr=ytr, xte=xte, C=np.int32(C), k=np.int32(k), T=np.float64(T), score=kscore)

# ---- percentile -----------------------------------------------------------------------------
x = rng.standard_normal(37)
x[[3, 11]] = np.nan
qs = np.array([0.0, 0.025, 0.5, 0.975, 1.0])
put("percentile", x=x, q=qs, p=np.array([np.percentile(x[np.isfinite(x)], 100 * v) for v in qs]))

f.close()
print("wrote", out, os.path.getsize(out), "bytes")
