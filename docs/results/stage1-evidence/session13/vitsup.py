#!/usr/bin/python3
"""What a ViT-Ti/16 at 96 px learns when trained WITH the labels: a versa checkpoint's teacher
backbone (its init or the pretrained teacher) + a linear head on the GAP, trained end to end on
the bench's lesion crops (1.2x the box) for spiculated vs circumscribed masses (desccnn.py's task,
CNN 0.933) or each lesion's pathology (probe_ceiling.py's, CNN 0.642): AdamW (wd 0.05), batch 32,
horizontal + vertical flips, the epoch with the best val AUC.  Prints every epoch; OUT.npz keeps
the test scores of that epoch (paired_auc.py).
Usage: vitsup.py RAW PREP.h5 CKPT LR EPOCHS [margin|pathology] [SEED] [OUT.npz]"""
import sys, numpy as np, torch, h5py
from torch import nn
sys.path.insert(0, "docs/results/stage1-evidence/session11")   # run from the repository root
from common import box_descriptors, crops, load_teacher
from sklearn.metrics import roc_auc_score
torch.set_num_threads(1)
raw, prep, ck, lr, epochs = sys.argv[1], h5py.File(sys.argv[2]), sys.argv[3], float(sys.argv[4]), int(sys.argv[5])
task = sys.argv[6] if len(sys.argv) > 6 else "margin"
seed = int(sys.argv[7]) if len(sys.argv) > 7 else 0
out = sys.argv[8] if len(sys.argv) > 8 else None
torch.manual_seed(seed); np.random.seed(seed)
desc = box_descriptors(raw, prep)
X, s, k = crops(prep)
X = torch.tensor((X - 0.449) / 0.226)[:, None].float()
if task == "margin":
    f = lambda r: {"SPICULATED": 1, "CIRCUMSCRIBED": 0}.get(r["mass margins"]) if r["abnormality type"] == "mass" else None
else:
    f = lambda r: {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}.get(r["pathology"])
y = np.array([-1 if d is None or f(d) is None else f(d) for d in desc])
tr, va, te = [np.where((y >= 0) & (s == q))[0] for q in (0, 1, 2)]
Y = torch.tensor(np.maximum(y, 0))
vit, chans = load_teacher(ck); vit.train()
head = nn.Linear(vit.norm.normalized_shape[0], 2)
net = lambda x: head(vit(x.expand(-1, chans, -1, -1))[2])
params = list(vit.parameters()) + list(head.parameters())
opt = torch.optim.AdamW(params, lr, weight_decay=0.05); best = (-1, 0, -1, None)
for ep in range(epochs):
    vit.train(); perm = tr[np.random.permutation(len(tr))]
    for i in range(0, len(perm), 32):
        b = perm[i:i + 32]; xb = X[b]
        if np.random.rand() < 0.5: xb = xb.flip(-1)
        if np.random.rand() < 0.5: xb = xb.flip(-2)
        loss = nn.functional.cross_entropy(net(xb), Y[b]); opt.zero_grad(); loss.backward(); opt.step()
    vit.eval()
    with torch.no_grad(): pv, pt = net(X[va])[:, 1].numpy(), net(X[te])[:, 1].numpy()
    v = roc_auc_score(y[va], pv)
    if v > best[0]: best = (v, roc_auc_score(y[te], pt), ep, pt)
    print("epoch %d val %.3f test %.3f" % (ep, v, roc_auc_score(y[te], pt)), flush=True)
if out: np.savez(out, test_idx=te, y=y[te], score=best[3], val=best[0], test=best[1], epoch=best[2])
print("seed %d %s %s lr %g: best val %.3f -> test AUC %.3f (epoch %d; train %d, test %d)" % (seed, ck, task, lr, best[0], best[1], best[2], len(tr), len(te)), flush=True)
