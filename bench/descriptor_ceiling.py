#!/usr/bin/python3
"""bench/descriptor_ceiling.py — how much of CBIS-DDSM malignancy the lesion descriptors explain.

A logistic regression on the case-description CSVs' own categorical descriptors (abnormality type,
mass shape / calc type, mass margins / calc distribution), trained on the *_train_set rows and
scored on the *_test_set rows, one row per lesion; and the AUC of the assessment column alone.
On synthetic data (versa synth) this is the ceiling a reader of the pixels could approach if the
descriptors were fully visible: the generator draws pathology from the finding's BI-RADS category,
which follows from the descriptors, while the CSV's assessment merges 4A/4B/4C into 4.

Usage: /usr/bin/python3 bench/descriptor_ceiling.py RAW/cbis-ddsm
"""
import csv
import os
import sys

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import OneHotEncoder


def rows(root):
    out = []
    for kind in ("mass", "calc"):
        for split in ("train", "test"):
            path = os.path.join(root, f"{kind}_case_description_{split}_set.csv")
            with open(path, newline="") as f:
                for r in csv.DictReader(f):
                    a = r.get("mass shape") or r.get("calc type") or ""
                    b = r.get("mass margins") or r.get("calc distribution") or ""
                    out.append((split, (kind, a, b), int(r["assessment"]), r["pathology"].startswith("MALIGNANT")))
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__.strip().splitlines()[-1])
    rs = rows(sys.argv[1])
    tr = [r for r in rs if r[0] == "train"]
    te = [r for r in rs if r[0] == "test"]
    ytr = np.array([r[3] for r in tr])
    yte = np.array([r[3] for r in te])
    enc = OneHotEncoder(handle_unknown="ignore").fit([r[1] for r in tr])
    lr = LogisticRegression(max_iter=2000).fit(enc.transform([r[1] for r in tr]), ytr)
    p = lr.predict_proba(enc.transform([r[1] for r in te]))[:, 1]
    print(f"{sys.argv[1]}: {len(tr)} train / {len(te)} test lesions, {ytr.mean():.1%} malignant in train")
    print(f"test AUC of the assessment column alone: {roc_auc_score(yte, [r[2] for r in te]):.3f}")
    print(f"test AUC of a logistic regression on the descriptors: {roc_auc_score(yte, p):.3f}")


if __name__ == "__main__":
    main()
