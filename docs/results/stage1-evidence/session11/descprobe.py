#!/usr/bin/python3
"""Do frozen crop features encode the lesion descriptors that decide malignancy?
Usage: descprobe.py RAW_CBIS_DIR PREPARED.h5 FEAT.h5 ...  (versa bench crop feature caches)"""
import os, sys, h5py, numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import box_descriptors, lr_auc
raw, prep = sys.argv[1], h5py.File(sys.argv[2])
desc = box_descriptors(raw, prep)
split = prep["split"][:]
tasks = {
  "mass margin spiculated vs circumscribed": lambda r: None if r["abnormality type"] != "mass" else {"SPICULATED": 1, "CIRCUMSCRIBED": 0}.get(r["mass margins"]),
  "mass shape irregular vs oval/round": lambda r: None if r["abnormality type"] != "mass" else {"IRREGULAR": 1, "OVAL": 0, "ROUND": 0}.get(r["mass shape"]),
  "calc fine-linear/pleomorphic vs punctate/round/amorphous": lambda r: None if r["abnormality type"] != "calcification" else {"FINE_LINEAR_BRANCHING": 1, "PLEOMORPHIC": 1, "PUNCTATE": 0, "ROUND_AND_REGULAR": 0, "AMORPHOUS": 0}.get(r["calc type"]),
  "mass malignant": lambda r: None if r["abnormality type"] != "mass" else int(r["pathology"] == "MALIGNANT"),
  "calc malignant": lambda r: None if r["abnormality type"] != "calcification" else int(r["pathology"] == "MALIGNANT"),
}
for fn in sys.argv[3:]:
    f = h5py.File(fn); X = f["features"][:]; b = f["box"][:]; s = split[f["sample"][:]]
    out = []
    for name, fun in tasks.items():
        y = np.array([-1 if desc[k] is None or fun(desc[k]) is None else fun(desc[k]) for k in b])
        out.append("%s %.3f (n %d)" % (name.split(" vs")[0], lr_auc(X, y, s, [1e-3, 1e-2, 0.1, 1]), ((y >= 0) & (s == 2)).sum()))
    print(fn.split("/features/")[-1].split("/")[0], " | ".join(out))
