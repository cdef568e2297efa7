#!/usr/bin/python3
"""Loads a checkpoint written by the C engine into the PyTorch module it describes.

Optional, not run by CI (the C build and tests never need Python):
    VERSA_CKPT_EXPORT=/tmp/seq.h5 build/tests/engine/test_checkpoint
    /usr/bin/python3 tests/ref/check_ckpt_torch.py /tmp/seq.h5

The C test writes torch.nn.Sequential(Linear(4, 8), BatchNorm1d(8), ReLU(), Linear(8, 2)) with
value i of the k-th state_dict entry equal to sin(i + k) (running_var and num_batches_tracked
excepted).  This script loads it with the recipe every user of a versa checkpoint follows:
h5py + torch.from_numpy + load_state_dict(strict=True), then checks the values and runs it.
"""
import sys

import h5py
import numpy as np
import torch


def load_state_dict(path):
    with h5py.File(path, "r") as f:
        # tensors are the root datasets; optim/ and state/ are groups
        return {k: torch.from_numpy(np.array(f[k])) for k in f.keys() if isinstance(f[k], h5py.Dataset)}


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/seq.h5"
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    sd = load_state_dict(path)
    model.load_state_dict(sd, strict=True)   # raises on any missing / unexpected key or shape
    for k, (name, t) in enumerate(model.state_dict().items()):
        if name.endswith("running_var"):
            want = torch.tensor([1.5] + [1.0 + 0.1 * i for i in range(1, 8)])
        elif name.endswith("num_batches_tracked"):
            want = torch.tensor(42)
        else:
            want = torch.sin(torch.arange(t.numel(), dtype=torch.float32) + k).reshape(t.shape)
        err = (t.double() - want.double()).abs().max().item()
        assert err < 1e-6, f"{name}: max error {err}"
        print(f"{name:24s} {str(tuple(t.shape)):10s} {str(t.dtype):14s} ok")
    model.eval()
    y = model(torch.ones(3, 4))
    print("forward on ones(3, 4):", y.detach().numpy().round(5).tolist())
    print(f"{path}: load_state_dict(strict=True) ok")


if __name__ == "__main__":
    main()
