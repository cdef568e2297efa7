"""Shared by the session-11 analysis scripts: the CSV descriptors of each prepared box, a versa
checkpoint's teacher ViT as a PyTorch module, and the lesion crops of the bench."""
import csv, sys, h5py, numpy as np, torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.metrics import roc_auc_score
sys.path.insert(0, "tests/ref"); sys.path.insert(0, "bench")
import models
from probe_ceiling import lesion_crops

TABLES = ("mass_case_description_train_set", "mass_case_description_test_set",
          "calc_case_description_train_set", "calc_case_description_test_set")


def box_descriptors(raw, prep):
    """The CSV row (a dict) of every box of PREP (a versa prepare cbis file of RAW), None where an
    image's box count differs from its row count."""
    rows = {}
    for t in TABLES:
        for r in csv.DictReader(open(f"{raw}/{t}.csv")):
            rows.setdefault(r["image file path"].split("/")[0], []).append(r)
    ids = [s.decode() for s in prep["image_id"][:]]; off = prep["box_offset"][:]
    desc = [None] * off[-1]
    for i, iid in enumerate(ids):
        rr = rows.get(iid, [])
        if len(rr) == off[i + 1] - off[i]:
            for j, r in enumerate(rr): desc[off[i] + j] = r
    return desc


def crops(prep, size=96):
    """the bench's lesion crops (1.2 x the longer box side) of every box: X (n, size, size) in
    [0, 1], split, finding type"""
    imgs = [prep["images"][i].astype(np.float32) / 65535 for i in range(len(prep["split"]))]
    X, _, s, k = lesion_crops(prep, imgs, np.zeros(len(imgs), np.int64), prep["split"][:], size, "pathology")
    return X, s, k


def load_teacher(path):
    """the teacher backbone of a versa pretrain checkpoint as tests/ref/models.ViT (eval mode)"""
    ck = h5py.File(path)
    sd = {q[len("teacher.backbone."):]: torch.from_numpy(np.array(ck[q])) for q in ck.keys() if q.startswith("teacher.backbone.")}
    dim = sd["cls_token"].shape[-1]; patch = sd["patch_embed.proj.weight"].shape[-1]
    depth = 1 + max(int(q.split(".")[1]) for q in sd if q.startswith("blocks."))
    M = int(round((sd["pos_embed"].shape[1] - 1) ** 0.5))
    vit = models.ViT(M * patch, patch, dim, depth, dim // 64)
    vit.load_state_dict(sd, strict=True); vit.eval()
    return vit, sd["patch_embed.proj.weight"].shape[1]


def lr_auc(F, y, split, Cs, sub=None, max_iter=3000):
    """test AUC of a standardised logistic regression on the train split (rows with y >= 0 and
    sub), C chosen on val from Cs"""
    ok = (y >= 0) if sub is None else (y >= 0) & sub
    tr, va, te = ok & (split == 0), ok & (split == 1), ok & (split == 2)
    F = StandardScaler().fit(F[tr]).transform(F); best = None
    for C in Cs:
        m = LogisticRegression(C=C, max_iter=max_iter).fit(F[tr], y[tr])
        v = roc_auc_score(y[va], m.decision_function(F[va]))
        if best is None or v > best[0]: best = (v, roc_auc_score(y[te], m.decision_function(F[te])))
    return best[1]
