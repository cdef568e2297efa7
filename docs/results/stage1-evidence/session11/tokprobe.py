#!/usr/bin/python3
"""Linear probes on the whole grid of frozen patch tokens (spatial layout kept) vs GAP, for
pathology and the mass descriptors.  Usage: tokprobe.py RAW PREP.h5 CKPT ..."""
import csv, sys, h5py, numpy as np, torch
sys.path.insert(0, "tests/ref"); sys.path.insert(0, "bench")
import models
from probe_ceiling import lesion_crops
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score
torch.set_num_threads(1)
raw, prep = sys.argv[1], h5py.File(sys.argv[2])
rows = {}
for t in ("mass_case_description_train_set", "mass_case_description_test_set", "calc_case_description_train_set", "calc_case_description_test_set"):
    for r in csv.DictReader(open(f"{raw}/{t}.csv")):
        rows.setdefault(r["image file path"].split("/")[0], []).append(r)
ids = [s.decode() for s in prep["image_id"][:]]; off = prep["box_offset"][:]
desc = [None] * off[-1]
for i, iid in enumerate(ids):
    rr = rows.get(iid, [])
    if len(rr) == off[i + 1] - off[i]:
        for j, r in enumerate(rr): desc[off[i] + j] = r
imgs = [prep["images"][i].astype(np.float32) / 65535 for i in range(len(ids))]
X, yp, s, k = lesion_crops(prep, imgs, np.zeros(len(imgs), np.int64), prep["split"][:], 96, "pathology")
X = torch.tensor((X - 0.449) / 0.226)[:, None].float()
tasks = {"pathology": lambda r: int(r["pathology"] == "MALIGNANT"),
         "spiculated": lambda r: {"SPICULATED": 1, "CIRCUMSCRIBED": 0}.get(r["mass margins"]) if r["abnormality type"] == "mass" else None,
         "irregular": lambda r: {"IRREGULAR": 1, "OVAL": 0, "ROUND": 0}.get(r["mass shape"]) if r["abnormality type"] == "mass" else None,
         "mass-malig": lambda r: int(r["pathology"] == "MALIGNANT") if r["abnormality type"] == "mass" else None,
         "calc-malig": lambda r: int(r["pathology"] == "MALIGNANT") if r["abnormality type"] == "calcification" else None}
Y = {n: np.array([-1 if d is None or fn(d) is None else fn(d) for d in desc]) for n, fn in tasks.items()}
def probe(F, y):
    ok = y >= 0; tr, va, te = ok & (s == 0), ok & (s == 1), ok & (s == 2)
    F = StandardScaler().fit(F[tr]).transform(F); best = None
    for C in [1e-4, 1e-3, 1e-2, 0.1]:
        m = LogisticRegression(C=C, max_iter=3000).fit(F[tr], y[tr])
        v = roc_auc_score(y[va], m.decision_function(F[va]))
        if best is None or v > best[0]: best = (v, roc_auc_score(y[te], m.decision_function(F[te])))
    return best[1]
for spec in sys.argv[3:]:
    ck = h5py.File(spec)
    sd = {q[len("teacher.backbone."):]: torch.from_numpy(np.array(ck[q])) for q in ck.keys() if q.startswith("teacher.backbone.")}
    dim = sd["cls_token"].shape[-1]; patch = sd["patch_embed.proj.weight"].shape[-1]
    depth = 1 + max(int(q.split(".")[1]) for q in sd if q.startswith("blocks."))
    M = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
    vit = models.ViT(M * patch, patch, dim, depth, dim // 64); vit.load_state_dict(sd, strict=True); vit.eval()
    toks, gaps = [], []
    with torch.no_grad():
        for i in range(0, len(X), 256):
            x = X[i:i + 256].expand(-1, sd["patch_embed.proj.weight"].shape[1], -1, -1)
            cls, p, g = vit(x)
            toks.append(p.reshape(p.shape[0], -1).numpy()); gaps.append(g.numpy())
    T, G = np.concatenate(toks), np.concatenate(gaps)
    print(spec, " ".join("%s gap %.3f grid %.3f |" % (n, probe(G, y), probe(T, y)) for n, y in Y.items()), flush=True)
