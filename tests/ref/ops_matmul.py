"""Reference data for engine/op_matmul.c and engine/op_attention.c.

Writes tests/ref/data/ops_matmul.h5 with one group per case: float32 inputs, an upstream gradient
`dout`, the output and the gradients of sum(out * dout) w.r.t. each input, computed by PyTorch in
float64 from the float32 inputs (so the reference is exact to float32 rounding).

Inputs named `*_base` are stored in their own memory layout; the case's `transposed` attribute
lists which of them the op sees transposed (last two dims), as the C test builds that view.

Attention is the math of timm/DINOv2 `Attention.forward` without the proj linear:
    qkv.reshape(B, T, 3, H, D).permute(2, 0, 3, 1, 4); softmax(q @ k^T * D^-0.5) @ v;
    transpose(1, 2).reshape(B, T, C)

Run from the repo root:
    /usr/bin/python3 tests/ref/ops_matmul.py
"""
import os

import h5py
import torch

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "ops_matmul.h5")
g = torch.Generator().manual_seed(20240613)


def randn(*shape):
    return torch.randn(*shape, generator=g).float()


def leaf(t):
    return t.double().clone().requires_grad_(True)


def write(h5, name, attrs=None, **arrays):
    grp = h5.create_group(name)
    for k, v in arrays.items():
        grp.create_dataset(k, data=v.detach().float().numpy())
    for k, v in (attrs or {}).items():
        grp.attrs[k] = v


def run(h5, name, fn, inputs, transposed=(), attrs=None):
    """inputs: dict name -> float32 base tensor; names in `transposed` enter fn as .transpose(-1, -2)"""
    leaves = {k: leaf(v) for k, v in inputs.items()}
    args = {k: (v.transpose(-1, -2) if k in transposed else v) for k, v in leaves.items()}
    out = fn(**args)
    dout = randn(*out.shape)
    (out * dout.double()).sum().backward()
    grads = {"d" + k: v.grad for k, v in leaves.items()}
    a = dict(attrs or {})
    a["transposed"] = ",".join(transposed)
    write(h5, name, a, **inputs, out=out, dout=dout, **grads)


def matmul(a, b):
    return a @ b


def linear(x, w, b=None):
    return torch.nn.functional.linear(x, w, b)


def attention(qkv, n_heads):
    B, T, C3 = qkv.shape
    C = C3 // 3
    D = C // n_heads
    q, k, v = qkv.reshape(B, T, 3, n_heads, D).permute(2, 0, 3, 1, 4)
    attn = (q @ k.transpose(-2, -1)) * D ** -0.5
    attn = attn.softmax(dim=-1)
    return (attn @ v).transpose(1, 2).reshape(B, T, C)


def main():
    os.makedirs(os.path.dirname(OUT), exist_ok=True)
    with h5py.File(OUT, "w") as h5:
        # matmul: plain, same batch dims, broadcast 2-D b, right-aligned partial broadcast
        run(h5, "matmul_2d", matmul, {"a": randn(5, 7), "b": randn(7, 4)})
        run(h5, "matmul_batched", matmul, {"a": randn(2, 3, 5, 7), "b": randn(2, 3, 7, 4)})
        run(h5, "matmul_bcast", matmul, {"a": randn(2, 3, 5, 7), "b": randn(7, 4)})
        run(h5, "matmul_bcast_partial", matmul, {"a": randn(2, 3, 5, 7), "b": randn(3, 7, 4)})
        # transposed operands: stored (.., K, M) / (.., N, K), seen as (.., M, K) / (.., K, N)
        run(h5, "matmul_trans", matmul, {"a": randn(3, 7, 5), "b": randn(3, 4, 7)}, transposed=("a", "b"))
        run(h5, "matmul_trans_bcast", matmul, {"a": randn(3, 7, 5), "b": randn(4, 7)}, transposed=("a", "b"))
        # linear: bias, no bias, 1-D x, transposed x (per-batch transposed operand) and weight
        run(h5, "linear_bias", linear, {"x": randn(2, 5, 7), "w": randn(4, 7), "b": randn(4)})
        run(h5, "linear_nobias", linear, {"x": randn(6, 7), "w": randn(4, 7)})
        run(h5, "linear_vec", linear, {"x": randn(7), "w": randn(4, 7), "b": randn(4)})
        run(h5, "linear_trans", linear, {"x": randn(2, 7, 5), "w": randn(7, 4), "b": randn(4)},
            transposed=("x", "w"))
        # attention: T below and above the 8-wide vector kernels, odd head size
        run(h5, "attention_small", lambda qkv: attention(qkv, 2), {"qkv": randn(2, 5, 3 * 8)},
            attrs={"n_heads": 2})
        run(h5, "attention_t19", lambda qkv: attention(qkv, 3), {"qkv": randn(2, 19, 3 * 15)},
            attrs={"n_heads": 3})
        # large logits: the max-subtraction and the exp underflow path
        run(h5, "attention_sharp", lambda qkv: attention(qkv, 2), {"qkv": 6 * randn(1, 17, 3 * 16)},
            attrs={"n_heads": 2})
    print("wrote", OUT, os.path.getsize(OUT), "bytes")


if __name__ == "__main__":
    main()
