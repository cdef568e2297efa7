#!/usr/bin/python3
"""Reference trajectories of torch.optim for tests/engine/test_optim.c.

Writes tests/ref/data/optim.h5.  Four tensors with per-tensor lr / weight-decay multipliers (torch
param groups), a fixed sequence of 20 gradients, a per-step lr and wd (as a schedule would give),
and the parameters after every step for AdamW, Adam, SGD (momentum), SGD (nesterov), plain SGD
and AdamW with clip_grad_norm_ before each step.  Also single clip_grad_norm_ / DINO
clip_gradients results.  Run: /usr/bin/python3 tests/ref/optim.py
"""
import math
import os

import h5py
import numpy as np
import torch

torch.set_num_threads(1)
STEPS = 20
# name, shape, lr_mult, wd_mult (powers of two so lr*mult is exact on both sides)
PARAMS = [("w1", (4, 3), 1.0, 1.0), ("b1", (3,), 0.5, 0.0), ("w2", (2, 2, 3), 2.0, 0.5), ("w3", (5,), 0.25, 2.0)]

rng = np.random.default_rng(1234)
init = {n: rng.standard_normal(s).astype(np.float32) for n, s, _, _ in PARAMS}
# gradients with different scales per tensor and over time, so clipping and the moments matter
grads = {n: (rng.standard_normal((STEPS,) + s) * (0.5 + 2.0 * rng.random((STEPS,) + (1,) * len(s)))).astype(np.float32)
         for n, s, _, _ in PARAMS}
# lr and wd per step: a cosine-ish shape, rounded to float32 so C and Python see the same value
lr_seq = np.array([1e-2 * (0.55 + 0.45 * math.cos(math.pi * t / STEPS)) for t in range(STEPS)], np.float32)
wd_seq = np.array([0.04 + 0.01 * t for t in range(STEPS)], np.float32)

CASES = {
    # name: (constructor, hyper-parameters [beta1, beta2, eps, momentum, nesterov, clip], lr scale)
    "adamw": (lambda g: torch.optim.AdamW(g, betas=(0.9, 0.999), eps=1e-8, foreach=False), [0.9, 0.999, 1e-8, 0, 0, 0], 1.0),
    "adam": (lambda g: torch.optim.Adam(g, betas=(0.8, 0.99), eps=1e-6, foreach=False), [0.8, 0.99, 1e-6, 0, 0, 0], 1.0),
    "sgd_momentum": (lambda g: torch.optim.SGD(g, lr=1.0, momentum=0.9, foreach=False), [0, 0, 0, 0.9, 0, 0], 5.0),
    "sgd_nesterov": (lambda g: torch.optim.SGD(g, lr=1.0, momentum=0.8, nesterov=True, foreach=False), [0, 0, 0, 0.8, 1, 0], 5.0),
    "sgd": (lambda g: torch.optim.SGD(g, lr=1.0, foreach=False), [0, 0, 0, 0, 0, 0], 5.0),
    "adamw_clip": (lambda g: torch.optim.AdamW(g, betas=(0.9, 0.95), eps=1e-8, foreach=False), [0.9, 0.95, 1e-8, 0, 0, 3.0], 1.0),
}


def run(name, make, hp, lr_scale, out):
    ts = {n: torch.tensor(init[n], requires_grad=True) for n, _, _, _ in PARAMS}
    groups = [{"params": [ts[n]], "lr": 1.0, "weight_decay": 0.0, "lr_mult": lm, "wd_mult": wm} for n, _, lm, wm in PARAMS]
    opt = make(groups)
    after = {n: [] for n in ts}
    norms = []
    for t in range(STEPS):
        for n in ts:
            ts[n].grad = torch.tensor(grads[n][t])
        if hp[5] > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(list(ts.values()), hp[5])))
        lr = float(lr_seq[t]) * lr_scale
        for g in opt.param_groups:   # what a schedule does: the group's lr and wd for this step
            g["lr"] = lr * g["lr_mult"]
            g["weight_decay"] = float(wd_seq[t]) * g["wd_mult"]
        opt.step()
        for n in ts:
            after[n].append(ts[n].detach().numpy().copy())
    grp = out.create_group(name)
    grp["hp"] = np.array(hp, np.float64)
    grp["lr_scale"] = np.array([lr_scale])
    for n in ts:
        grp["after/" + n] = np.stack(after[n])
    if norms:
        grp["norms"] = np.array(norms, np.float32)


def clip_refs(out):
    """One clip_grad_norm_ that clips, one that does not, and DINO's per-tensor clip."""
    g = out.create_group("clip")
    gs = {n: torch.tensor(grads[n][0] * 3.0) for n, _, _, _ in PARAMS}
    for label, max_norm in (("clipped", 2.0), ("unclipped", 1e4)):
        ps = [torch.zeros(v.shape, requires_grad=True) for v in gs.values()]
        for p, v in zip(ps, gs.values()):
            p.grad = v.clone()
        norm = torch.nn.utils.clip_grad_norm_(ps, max_norm)
        g[label + "/max_norm"] = np.array([max_norm])
        g[label + "/norm"] = np.array([float(norm)])
        for (n, _, _, _), p in zip(PARAMS, ps):
            g[label + "/" + n] = p.grad.numpy()
    # dino/utils.py clip_gradients(model, clip)
    clip = 4.0
    for n, v in gs.items():
        v = v.clone()
        param_norm = v.norm(2)
        clip_coef = clip / (param_norm + 1e-6)
        if clip_coef < 1:
            v.mul_(clip_coef)
        g["per_param/" + n] = v.numpy()
    g["per_param/max_norm"] = np.array([clip])
    for n in gs:
        g["input/" + n] = gs[n].numpy()


def cosine_scheduler(base_value, final_value, epochs, niter_per_ep, warmup_epochs=0, start_warmup_value=0):
    """dino/utils.py, verbatim in substance."""
    warmup_schedule = np.array([])
    warmup_iters = warmup_epochs * niter_per_ep
    if warmup_epochs > 0:
        warmup_schedule = np.linspace(start_warmup_value, base_value, warmup_iters)
    iters = np.arange(epochs * niter_per_ep - warmup_iters)
    schedule = final_value + 0.5 * (base_value - final_value) * (1 + np.cos(np.pi * iters / len(iters)))
    schedule = np.concatenate((warmup_schedule, schedule))
    assert len(schedule) == epochs * niter_per_ep
    return schedule


def sched_refs(out):
    # lr as in DINO: 10 epochs of 7 iterations, 2 warm-up epochs from 1e-6
    out["sched/lr"] = cosine_scheduler(5e-4, 1e-6, 10, 7, warmup_epochs=2, start_warmup_value=1e-6)
    # teacher momentum 0.996 -> 1, no warm-up
    out["sched/momentum"] = cosine_scheduler(0.996, 1.0, 10, 7)
    # teacher temperature: linspace warm-up over 30 steps, then constant (main_dino.py DINOLoss)
    out["sched/teacher_temp"] = np.concatenate((np.linspace(0.04, 0.07, 30), np.ones(40) * 0.07))


def main():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "optim.h5")
    with h5py.File(path, "w") as out:
        for n, s, lm, wm in PARAMS:
            out["init/" + n] = init[n]
            out["grads/" + n] = grads[n]
            out["mult/" + n] = np.array([lm, wm], np.float32)
        out["lr"] = lr_seq
        out["wd"] = wd_seq
        for name, (make, hp, scale) in CASES.items():
            run(name, make, hp, scale, out)
        clip_refs(out)
        sched_refs(out)
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    main()
