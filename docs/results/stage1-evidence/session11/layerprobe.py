#!/usr/bin/python3
"""Per-layer frozen-feature probes of versa checkpoints on lesion crops (investigation).
Usage: layerprobe.py PREPARED.h5 LABEL CKPT[:name] ...   (LABEL pathology|box)"""
import os, sys, h5py, numpy as np, torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import lesion_crops, load_teacher, lr_auc
torch.set_num_threads(1)
f = h5py.File(sys.argv[1]); label = sys.argv[2]
imgs = [f["images"][i].astype(np.float32) / 65535 for i in range(len(f["split"]))]
X, y, s, k = lesion_crops(f, imgs, np.zeros(len(imgs), np.int64), f["split"][:], 96, "pathology")
y = (y == 2).astype(int) if label == "pathology" else k
X = torch.tensor((X - 0.449) / 0.226)[:, None].float()
def auc_lr(F, sub=None): return lr_auc(F, y, s, [1e-3, 1e-2, 0.1, 1], sub, max_iter=2000)
for spec in sys.argv[3:]:
    vit, chans = load_teacher(spec)
    depth = len(vit.blocks)
    cls_l, gap_l = [[] for _ in range(depth)], [[] for _ in range(depth)]
    with torch.no_grad():
        for i in range(0, len(X), 256):
            x = X[i:i + 256].expand(-1, chans, -1, -1)
            t = vit.patch_embed(x); t = torch.cat((vit.cls_token.expand(t.shape[0], -1, -1), t), 1)
            t = t + vit.interpolate_pos_encoding(t, 96, 96)
            for j, blk in enumerate(vit.blocks):
                t = blk(t); n = vit.norm(t)
                cls_l[j].append(n[:, 0].numpy()); gap_l[j].append(n[:, 1:].mean(1).numpy())
    cls_l = [np.concatenate(a) for a in cls_l]; gap_l = [np.concatenate(a) for a in gap_l]
    last4 = np.concatenate(cls_l[-4:] + [gap_l[-1]], 1)
    row = []
    for j in range(depth):
        row.append("%d:%.3f/%.3f" % (j + 1, auc_lr(cls_l[j]), auc_lr(gap_l[j])))
    last4 = np.concatenate(cls_l[-4:] + [gap_l[-1]], 1)
    if label == "pathology":
        for kk in (0, 1):
            print(spec, "type", kk, "cls12 %.3f gap12 %.3f last4 %.3f" % (auc_lr(cls_l[-1], k == kk), auc_lr(gap_l[-1], k == kk), auc_lr(last4, k == kk)), flush=True)
    print(spec, "layer:cls/gap", " ".join(row), "| dinov2 last4+avg %.3f" % auc_lr(last4), flush=True)
