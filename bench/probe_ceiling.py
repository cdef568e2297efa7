#!/usr/bin/python3
"""bench/probe_ceiling.py — how much room a frozen-feature probe has on a prepared synthetic file.

The stage-1 evidence (bench/pretrain_evidence.sh) asks whether frozen teacher features beat a
randomly initialised network.  That question only has an answer if the task has room above the
random features, so this script measures two ceilings on the *same* train / val / test split:

  - supervised CNN: a 4-block CNN (conv-BN-ReLU-maxpool, 16/32/64/64 channels) trained on the
    density labels of the train split (AdamW 1e-3, batch 32, horizontal flips, 40 epochs), the
    epoch with the best val AUC; what a model that *sees the labels* reaches at this resolution;
  - intensity histogram: a logistic regression on 24 hand-made features of the tissue pixels
    (mean, std, tissue fraction, a 16-bin histogram, fractions above 5 thresholds) — the synthetic
    generator makes brightness encode composition (data/synth_imaging.c), so this is the cue a
    random network already has.

Test metrics: macro one-vs-rest AUC and balanced accuracy with 1000-resample bootstrap 95% CIs
(percentile), as `versa bench` reports them.  Python / PyTorch is only used for this comparison;
the C program never needs it.

Usage: /usr/bin/python3 bench/probe_ceiling.py PREPARED.h5 [--threads N] [--label density] [--unit image|crop]
       (--label box --unit crop: the lesion's finding type, as the bench's `label: box` tasks)
"""
import argparse

import h5py
import numpy as np
import torch
import torch.nn as nn
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from sklearn.preprocessing import StandardScaler


def auc(y, p):
    """macro one-vs-rest AUC; the positive class's probability for two classes"""
    return roc_auc_score(y, p[:, 1]) if p.shape[1] == 2 else roc_auc_score(y, p, multi_class="ovr", average="macro")


def metrics(y, p, rng):
    bac = lambda yy, pp: balanced_accuracy_score(yy, pp.argmax(1))
    out = []
    for fn in (auc, bac):
        v = fn(y, p)
        bs = []
        for _ in range(1000):
            i = rng.integers(0, len(y), len(y))
            if len(np.unique(y[i])) == p.shape[1]:
                bs.append(fn(y[i], p[i]))
        out.append((v, np.percentile(bs, 2.5), np.percentile(bs, 97.5)))
    return out


def histogram_features(im):
    t = im[im > 0.05]
    if t.size == 0:
        t = im.ravel()
    h = np.histogram(t, bins=16, range=(0, 1))[0] / t.size
    return np.concatenate([[t.mean(), t.std(), (im > 0.05).mean()], h, [(t > q).mean() for q in (0.3, 0.4, 0.5, 0.6, 0.7)]])


def lesion_crops(f, imgs, y, split, size, label):
    """square crops around every box (side = longer box side x 1.2, at least 16 px; zero outside
    the image), resized to size x size; each crop carries its lesion's own label where the file
    has one (/box_labels/<label>, as versa bench), else its image's, its image's split and its
    finding type (/box_label, an index into /findings' classes)"""
    boxes, off, kind = f["boxes"][:], f["box_offset"][:], f["box_label"][:]
    own = f["box_labels"][label][:] if "box_labels" in f and label in f["box_labels"] else np.full(len(boxes), -1)
    out, yy, ss, kk = [], [], [], []
    for i in range(len(imgs)):
        H, W = imgs[i].shape
        for j in range(off[i], off[i + 1]):
            b = boxes[j]
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            side = max(16.0, max(b[2] - b[0], b[3] - b[1]) * 1.2)
            x0, y0 = int(round(cx - side / 2)), int(round(cy - side / 2))
            L = int(round(side))
            c = np.zeros((L, L), np.float32)
            xs, ys = max(0, x0), max(0, y0)
            xe, ye = min(W, x0 + L), min(H, y0 + L)
            if xe > xs and ye > ys:
                c[ys - y0:ye - y0, xs - x0:xe - x0] = imgs[i][ys:ye, xs:xe]
            t = torch.tensor(c)[None, None]
            out.append(nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0, 0].numpy())
            yy.append(own[j] if own[j] >= 0 else y[i])
            ss.append(split[i])
            kk.append(kind[j])
    return np.stack(out), np.array(yy, dtype=np.int64), np.array(ss), np.array(kk)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("h5")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--label", default="density")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--unit", choices=("image", "crop"), default="image")
    ap.add_argument("--crop-size", type=int, default=64)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    rng = np.random.default_rng(0)
    f = h5py.File(a.h5, "r")
    imgs = f["images"][:].astype(np.float32) / float(f.attrs["max_value"])
    if a.label == "box" and a.unit != "crop":
        ap.error("--label box needs --unit crop")
    # --label box: a placeholder per image, replaced below by each crop's finding type
    y = (np.zeros(len(imgs), np.int64) if a.label == "box" else f["labels"][a.label][:].astype(np.int64))
    split = f["split"][:]
    kind = None
    if a.unit == "crop":
        imgs, y, split, kind = lesion_crops(f, imgs, y, split, a.crop_size, a.label)
        if a.label == "box":
            y = kind.astype(np.int64)
    tr, va, te = (np.where((split == s) & (y >= 0))[0] for s in (0, 1, 2))
    lo = int(y[y >= 0].min())
    y = np.where(y >= 0, y - lo, -1)   # pathology is stored 1..2 (0 = normal)
    K = int(y.max()) + 1

    F = np.stack([histogram_features(x) for x in imgs])
    sc = StandardScaler().fit(F[tr])
    lr = LogisticRegression(C=1.0, max_iter=5000).fit(sc.transform(F[tr]), y[tr])
    hist = metrics(y[te], lr.predict_proba(sc.transform(F[te])), rng)

    X = torch.tensor(imgs)[:, None]
    while X.shape[-1] > 96:
        X = nn.functional.avg_pool2d(X, 2)
    Y = torch.tensor(y)

    def block(i, o):
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    net = nn.Sequential(block(1, 16), block(16, 32), block(32, 64), block(64, 64), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(64, K))
    opt = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=1e-4)
    best = (-1.0, None, -1)
    for ep in range(a.epochs):
        net.train()
        perm = tr[np.random.permutation(len(tr))]
        for i in range(0, len(perm), 32):
            b = perm[i:i + 32]
            xb = X[b]
            if np.random.rand() < 0.5:
                xb = xb.flip(-1)
            loss = nn.functional.cross_entropy(net(xb), Y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            pv = net(X[va]).softmax(1).numpy()
            pt = net(X[te]).softmax(1).numpy()
        v = auc(y[va], pv)
        if v > best[0]:
            best = (v, pt, ep)
    cnn = metrics(y[te], best[1], rng)

    print(f"{a.h5}: {a.label} of {'lesion crops' if a.unit == 'crop' else 'whole images'}, "
          f"train {len(tr)} / val {len(va)} / test {len(te)}, {X.shape[-1]} px for the CNN")
    for name, m in (("supervised CNN (best val epoch %d)" % best[2], cnn), ("intensity-histogram logistic regression", hist)):
        print(f"{name}: test AUC {m[0][0]:.3f} [{m[0][1]:.3f}, {m[0][2]:.3f}], "
              f"bacc {m[1][0]:.3f} [{m[1][1]:.3f}, {m[1][2]:.3f}]")
    if kind is not None and "findings" in f and a.label != "box":
        # the crops mix finding types whose malignancy cues differ (mass shape and margin,
        # calcification morphology and count): the CNN's AUC within each type
        names = f["findings"].attrs["classes"].decode().split("\n")
        for k, name in enumerate(names):
            sel = kind[te] == k
            if sel.sum() and len(np.unique(y[te][sel])) == K:
                m = metrics(y[te][sel], best[1][sel], rng)
                print(f"  within {name} crops ({sel.sum()} test): CNN AUC {m[0][0]:.3f} [{m[0][1]:.3f}, {m[0][2]:.3f}]")


if __name__ == "__main__":
    main()
