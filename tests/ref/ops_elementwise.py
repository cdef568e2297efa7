#!/usr/bin/python3
"""PyTorch references for the elementwise, activation, reduction and shape ops
(engine/op_elementwise.c, op_activation.c, op_reduce.c, op_shape.c).

Run from the repo root:  /usr/bin/python3 tests/ref/ops_elementwise.py
Writes tests/ref/data/ops_elementwise.h5 (about 330 KB), read by tests/engine/test_ops_*.c.

Layout: /<op>/n is the number of cases; case k lives in /<op>/<k>/ with
  x0, x1, ...   inputs (float32).  Where t<i> exists the op sees x<i>.transpose(-2, -1), a
                strided view (g<i> is still the gradient of the stored x<i>).
  out, w        the output and the loss weights: loss = sum(out * w)   (split: out<j>, w<j>)
  g0, g1, ...   d loss / d x<i>
  op arguments as small datasets: dim, keepdim, s (scalar), idx (int32), mask (uint8), sizes.
Inputs are float32; the reference is computed in float64 from them and rounded to float32, so a
C result can be compared against (nearly) exact values.
"""
import os

import h5py
import numpy as np
import torch
import torch.nn.functional as F

rng = np.random.default_rng(20240611)
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "ops_elementwise.h5")


def uniform(shape, lo=-1.0, hi=1.0):
    return rng.uniform(lo, hi, size=shape).astype(np.float32)


def away_from_zero(shape, margin=0.05, hi=1.0):
    """values in [-hi, -margin] U [margin, hi]: keeps relu away from its kink"""
    u = rng.uniform(margin, hi, size=shape)
    s = np.where(rng.uniform(size=shape) < 0.5, -1.0, 1.0)
    return (u * s).astype(np.float32)


def nonzero(shape, lo=0.5, hi=2.0):
    """|x| in [lo, hi] with random sign: divisors"""
    return away_from_zero(shape, lo, hi)


class Case:
    """One op application: inputs (float32 base arrays), transposed flags, extra datasets."""

    def __init__(self, xs, fn, t=None, args=None):
        self.xs = xs
        self.fn = fn  # fn(list of float64 tensors as the op sees them) -> tensor or list
        self.t = t or [0] * len(xs)
        self.args = args or {}


def base_of(x, transposed):
    """The stored base array: for a transposed input the op sees base.transpose(-2, -1)."""
    return np.ascontiguousarray(np.swapaxes(x, -1, -2)) if transposed else x


def new_group(parent, name):
    """a group without modification times, so a rerun writes a byte-identical file"""
    gcpl = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
    gcpl.set_obj_track_times(False)
    return h5py.Group(h5py.h5g.create(parent.id, name.encode(), gcpl=gcpl))


def put(g, name, data):
    g.create_dataset(name, data=data, track_times=False)


def run_case(g, case):
    ts, views = [], []
    for i, (x, tr) in enumerate(zip(case.xs, case.t)):
        base = base_of(x, tr)
        put(g, f"x{i}", base)
        if tr:
            put(g, f"t{i}", np.int32(1))
        bt = torch.tensor(base, dtype=torch.float64, requires_grad=True)
        ts.append(bt)
        views.append(bt.transpose(-2, -1) if tr else bt)
    for k, v in case.args.items():
        put(g, k, v)
    outs = case.fn(views)
    if isinstance(outs, (list, tuple)):
        loss = 0
        for j, o in enumerate(outs):
            w = uniform(tuple(o.shape))
            put(g, f"out{j}", o.detach().numpy().astype(np.float32))
            put(g, f"w{j}", w)
            loss = loss + (o * torch.tensor(w, dtype=torch.float64)).sum()
    else:
        o = outs.reshape(-1) if outs.dim() == 0 else outs
        w = uniform(tuple(o.shape))
        put(g, "out", o.detach().numpy().astype(np.float32))
        put(g, "w", w)
        loss = (o * torch.tensor(w, dtype=torch.float64)).sum()
    loss.backward()
    for i, bt in enumerate(ts):
        put(g, f"g{i}", bt.grad.numpy().astype(np.float32))


def binary_cases(fn, div=False):
    b = nonzero if div else uniform
    return [
        Case([uniform((2, 3, 4)), b((3, 1))], fn),            # middle + inner broadcast
        Case([uniform((4,)), b((2, 3, 4))], fn),              # a broadcast over leading dims
        Case([uniform((1,)), b((5, 6))], fn),                 # scalar-shaped a
        Case([uniform((2, 1, 4)), b((3, 1))], fn),            # both broadcast
        Case([uniform((5, 6)), b((5, 6))], fn, t=[1, 0]),     # same shape, a strided
        Case([uniform((3, 4, 5)), b((4, 5))], fn, t=[0, 1]),  # strided b broadcast over dim 0
        Case([uniform((8, 16)), b((16,))], fn),               # bias-like row vector
    ]


def main():
    cases = {}
    cases["add"] = binary_cases(lambda v: v[0] + v[1])
    cases["sub"] = binary_cases(lambda v: v[0] - v[1])
    cases["mul"] = binary_cases(lambda v: v[0] * v[1])
    cases["div"] = binary_cases(lambda v: v[0] / v[1], div=True)
    cases["scale"] = [
        Case([uniform((3, 5))], lambda v: v[0] * np.float32(-1.7), args={"s": np.float32(-1.7)}),
        Case([uniform((2, 4, 3))], lambda v: v[0] * np.float32(0.3), t=[1], args={"s": np.float32(0.3)}),
    ]
    cases["add_scalar"] = [
        Case([uniform((3, 5))], lambda v: v[0] + np.float32(2.5), args={"s": np.float32(2.5)}),
        Case([uniform((2, 4, 3))], lambda v: v[0] + np.float32(-0.25), t=[1], args={"s": np.float32(-0.25)}),
    ]

    def bias(dim):
        def f(v):
            shape = [1] * v[0].dim()
            shape[dim] = -1
            return v[0] + v[1].reshape(shape)
        return f

    cases["bias_add"] = [
        Case([uniform((2, 3, 4, 5)), uniform((3,))], bias(1), args={"dim": np.int32(1)}),   # conv bias
        Case([uniform((6, 8)), uniform((8,))], bias(-1), args={"dim": np.int32(-1)}),        # linear bias
        Case([uniform((3, 4, 5)), uniform((4,))], bias(1), t=[1, 0], args={"dim": np.int32(1)}),
    ]

    def act_cases(fn, gen=lambda s: uniform(s, -3, 3)):
        return [Case([gen((3, 7))], fn), Case([gen((2, 3, 4))], fn, t=[1]), Case([gen((40,))], fn)]

    cases["gelu"] = act_cases(lambda v: F.gelu(v[0]))
    cases["silu"] = act_cases(lambda v: F.silu(v[0]))
    cases["sigmoid"] = act_cases(lambda v: torch.sigmoid(v[0]))
    cases["tanh"] = act_cases(lambda v: torch.tanh(v[0]))
    cases["exp"] = act_cases(lambda v: torch.exp(v[0]))
    cases["relu"] = act_cases(lambda v: F.relu(v[0]), gen=lambda s: away_from_zero(s, 0.05, 3.0))
    cases["log"] = act_cases(lambda v: torch.log(v[0]), gen=lambda s: uniform(s, 0.1, 3.0))
    cases["sqrt"] = act_cases(lambda v: torch.sqrt(v[0]), gen=lambda s: uniform(s, 0.1, 3.0))

    def red_cases(fn):
        out = []
        for shape, dim, keep, tr in [((3, 4, 5), 0, 0, 0), ((3, 4, 5), 1, 1, 0), ((3, 4, 5), 2, 0, 0),
                                     ((3, 4, 5), -1, 1, 0), ((2, 6, 5), 1, 0, 1), ((7,), 0, 0, 0),
                                     ((4, 300), 1, 0, 0)]:
            out.append(Case([uniform(shape)], lambda v, d=dim, k=keep: fn(v[0], d, bool(k)), t=[tr],
                            args={"dim": np.int32(dim), "keepdim": np.int32(keep)}))
        return out

    cases["sum"] = red_cases(lambda x, d, k: x.sum(d, keepdim=k))
    cases["mean"] = red_cases(lambda x, d, k: x.mean(d, keepdim=k))
    cases["max"] = red_cases(lambda x, d, k: x.max(d, keepdim=k)[0])
    cases["sum_all"] = [Case([uniform((3, 4, 5))], lambda v: v[0].sum().reshape(1)),
                        Case([uniform((4, 6))], lambda v: v[0].sum().reshape(1), t=[1]),
                        Case([uniform((5000,))], lambda v: v[0].sum().reshape(1))]
    cases["mean_all"] = [Case([uniform((3, 4, 5))], lambda v: v[0].mean().reshape(1)),
                         Case([uniform((4, 6))], lambda v: v[0].mean().reshape(1), t=[1])]

    cases["concat"] = [
        Case([uniform((2, 3)), uniform((2, 5)), uniform((2, 1))], lambda v: torch.cat(v, 1),
             args={"dim": np.int32(1)}),
        Case([uniform((2, 3, 4)), uniform((1, 3, 4))], lambda v: torch.cat(v, 0), args={"dim": np.int32(0)}),
        Case([uniform((2, 3, 4)), uniform((2, 3, 2))], lambda v: torch.cat(v, -1), t=[1, 0],
             args={"dim": np.int32(-1)}),
        # more inputs than a tape node holds
        Case([uniform((1, 4)) for _ in range(6)], lambda v: torch.cat(v, 0), args={"dim": np.int32(0)}),
    ]
    cases["split"] = [
        Case([uniform((4, 7))], lambda v: torch.split(v[0], [2, 4, 1], 1),
             args={"dim": np.int32(1), "sizes": np.array([2, 4, 1], np.int32)}),
        Case([uniform((6, 2, 3))], lambda v: torch.split(v[0], [1, 5], 0),
             args={"dim": np.int32(0), "sizes": np.array([1, 5], np.int32)}),
        Case([uniform((3, 4, 5))], lambda v: torch.split(v[0], [3, 2], -1), t=[1],
             args={"dim": np.int32(-1), "sizes": np.array([3, 2], np.int32)}),
    ]

    def isel(dim, idx):
        return lambda v: torch.index_select(v[0], dim, torch.tensor(idx))

    cases["index_select"] = [
        Case([uniform((5, 4))], isel(0, [4, 0, 4, 2, 4]), args={"dim": np.int32(0), "idx": np.int32([4, 0, 4, 2, 4])}),
        Case([uniform((2, 5, 3))], isel(1, [1, 1, 3]), args={"dim": np.int32(1), "idx": np.int32([1, 1, 3])}),
        Case([uniform((3, 6))], isel(-1, [5, 0, 2, 2]), t=[1],
             args={"dim": np.int32(-1), "idx": np.int32([5, 0, 2, 2])}),
    ]
    ids = np.int32([3, 3, 7, 0, 9, 3])
    cases["embedding"] = [Case([uniform((10, 4))], lambda v: F.embedding(torch.tensor(ids, dtype=torch.long), v[0]),
                               args={"idx": ids})]

    def where_case(mshape, ashape, bshape, t=None):
        m = (rng.uniform(size=mshape) < 0.5).astype(np.uint8)
        fn = lambda v: torch.where(torch.tensor(m, dtype=torch.bool), v[0], v[1])
        return Case([uniform(ashape), uniform(bshape)], fn, t=t, args={"mask": m})

    cases["where"] = [
        where_case((2, 3, 4), (2, 3, 4), (2, 3, 4)),
        where_case((2, 1, 4), (2, 3, 4), (2, 3, 4)),
        where_case((2, 3, 1), (1, 4), (2, 3, 4)),   # DINOv2's mask token: where(mask, token, x)
        where_case((4, 5), (4, 5), (5,), t=[1, 0]),
    ]

    def mfill_case(shape, value, t=0):
        m = (rng.uniform(size=shape) < 0.4).astype(np.uint8)
        fn = lambda v: v[0].masked_fill(torch.tensor(m, dtype=torch.bool), value)
        return Case([uniform(shape)], fn, t=[t], args={"mask": m, "s": np.float32(value)})

    cases["masked_fill"] = [mfill_case((3, 5), 0.5), mfill_case((2, 3, 4), -1e4, t=1)]

    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    # latest format: compact object headers; no modification times: reruns are byte-identical
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    fcpl = h5py.h5p.create(h5py.h5p.FILE_CREATE)
    fcpl.set_obj_track_times(False)
    with h5py.File(h5py.h5f.create(OUT.encode(), h5py.h5f.ACC_TRUNC, fcpl=fcpl, fapl=fapl)) as f:
        for op, cs in cases.items():
            grp = new_group(f, op)
            put(grp, "n", np.int32(len(cs)))
            for k, case in enumerate(cs):
                run_case(new_group(grp, str(k)), case)
    print(f"wrote {OUT} ({os.path.getsize(OUT)} bytes, {sum(len(c) for c in cases.values())} cases)")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
