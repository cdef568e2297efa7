#!/usr/bin/python3
"""Reference outputs for the model parity tests (tests/nn/test_models.c).

Builds, in PyTorch, a DINOv2 Vision Transformer and a lukemelas EfficientNet with exactly the
state_dict keys of the reference implementations, fills every tensor with a closed-form hash of
(name, index) that tests/nn/test_models.c reproduces bit for bit (so no weights need committing),
runs a forward and a backward pass, and writes inputs, outputs and gradient fingerprints (norm,
sum, the first 64 and 32 strided elements of every parameter gradient) to tests/ref/data/models.h5.

The EfficientNet mirror is checked against torchvision's efficientnet_b0 (with symmetric padding
and PyTorch BN defaults) before anything is written, so the structure is not only self-consistent.

Run with Debian's torch: /usr/bin/python3 tests/ref/models.py
"""
import math
import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_num_threads(2)
OUT = "tests/ref/data/models.h5"


# --------------------------------------------------------------------------------------------
# closed-form parameter fill (mirrored in tests/nn/test_models.c: hash_fill_params)

def fnv1a(s):
    h = 2166136261
    for ch in s.encode():
        h ^= ch
        h = (h * 16777619) & 0xFFFFFFFF
    return h


def hash_uniform(name, n):
    h0 = fnv1a(name)
    i = np.arange(n, dtype=np.uint64)
    x = (np.uint64(h0) + i * np.uint64(2654435761)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x45D9F3B)) & np.uint64(0xFFFFFFFF)
    x ^= x >> np.uint64(16)
    return x.astype(np.float64) / 4294967296.0


def hash_value(name, shape):
    n = int(np.prod(shape)) if len(shape) else 1
    u = hash_uniform(name, n)
    if name.endswith("num_batches_tracked"):
        v = np.zeros(n)
    elif name.endswith("running_var"):
        v = 0.5 + u
    elif name.endswith("running_mean"):
        v = 0.2 * (u - 0.5)
    elif name.endswith("weight_g"):
        v = np.ones(n)
    elif len(shape) >= 2:
        fan_in = n // shape[0]
        v = (2.0 * u - 1.0) / math.sqrt(fan_in)
    elif name.endswith("bias"):
        v = 0.2 * (u - 0.5)
    else:  # norm weights, LayerScale gammas
        v = 1.0 + 0.2 * (u - 0.5)
    return v.astype(np.float32).reshape(shape)


def hash_fill(module):
    with torch.no_grad():
        for k, t in module.state_dict().items():
            t.copy_(torch.from_numpy(hash_value(k, tuple(t.shape))).to(t.dtype))


# --------------------------------------------------------------------------------------------
# DINOv2 ViT (names and math of dinov2/models/vision_transformer.py, block_chunks=0)

class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        x = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(x)


class LayerScale(nn.Module):
    def __init__(self, dim, init):
        super().__init__()
        self.gamma = nn.Parameter(init * torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim, 1e-5)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim, 1e-5)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class ViT(nn.Module):
    def __init__(self, img_size, patch, dim, depth, heads, offset=0.1):
        super().__init__()
        M = img_size // patch
        self.patch_size, self.offset = patch, offset
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + M * M, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.patch_embed = PatchEmbed(patch, dim)
        self.blocks = nn.ModuleList([Block(dim, heads) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)

    def interpolate_pos_encoding(self, x, w, h):
        npatch = x.shape[1] - 1
        N = self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        class_pos = self.pos_embed[:, 0]
        patch_pos = self.pos_embed[:, 1:]
        dim = x.shape[-1]
        w0, h0 = w // self.patch_size, h // self.patch_size
        M = int(math.sqrt(N))
        sx, sy = float(w0 + self.offset) / M, float(h0 + self.offset) / M
        patch_pos = F.interpolate(patch_pos.reshape(1, M, M, dim).permute(0, 3, 1, 2), mode="bicubic",
                                  scale_factor=(sx, sy))
        assert (w0, h0) == patch_pos.shape[-2:]
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((class_pos.unsqueeze(0), patch_pos), dim=1)

    def forward(self, x, masks=None):
        B, nc, w, h = x.shape
        x = self.patch_embed(x)
        if masks is not None:
            x = torch.where(masks.unsqueeze(-1), self.mask_token.to(x.dtype).unsqueeze(0), x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        for blk in self.blocks:
            x = blk(x)
        x = self.norm(x)
        cls, patch = x[:, 0], x[:, 1:]
        return cls, patch, patch.mean(dim=1)


# --------------------------------------------------------------------------------------------
# lukemelas EfficientNet (efficientnet_pytorch/model.py + utils.py)

B0_STAGES = [(3, 1, 1, 32, 16, 1), (3, 2, 6, 16, 24, 2), (5, 2, 6, 24, 40, 2), (3, 2, 6, 40, 80, 3),
             (5, 1, 6, 80, 112, 3), (5, 2, 6, 112, 192, 4), (3, 1, 6, 192, 320, 1)]


def round_filters(f, w):
    f *= w
    nf = max(8, int(f + 4) // 8 * 8)
    if nf < 0.9 * f:
        nf += 8
    return int(nf)


class Conv2dStaticSamePadding(nn.Conv2d):
    def __init__(self, cin, cout, k, stride=1, groups=1, bias=True, image_size=None, symmetric=False):
        super().__init__(cin, cout, k, stride, groups=groups, bias=bias,
                         padding=(k // 2 if symmetric else 0))
        self.static_padding = nn.Identity()
        if not symmetric:
            ih = iw = image_size
            oh, ow = math.ceil(ih / stride), math.ceil(iw / stride)
            ph = max((oh - 1) * stride + k - ih, 0)
            pw = max((ow - 1) * stride + k - iw, 0)
            if ph > 0 or pw > 0:
                self.static_padding = nn.ZeroPad2d((pw // 2, pw - pw // 2, ph // 2, ph - ph // 2))

    def forward(self, x):
        return F.conv2d(self.static_padding(x), self.weight, self.bias, self.stride, self.padding,
                        self.dilation, self.groups)


class MBConvBlock(nn.Module):
    def __init__(self, cin, cout, k, stride, e, image_size, mom, eps, drop, sym):
        super().__init__()
        mid = cin * e
        self.e, self.stride, self.cin, self.cout, self.drop = e, stride, cin, cout, drop
        if e != 1:
            self._expand_conv = Conv2dStaticSamePadding(cin, mid, 1, bias=False, image_size=image_size, symmetric=sym)
            self._bn0 = nn.BatchNorm2d(mid, momentum=mom, eps=eps)
        self._depthwise_conv = Conv2dStaticSamePadding(mid, mid, k, stride, groups=mid, bias=False,
                                                       image_size=image_size, symmetric=sym)
        self._bn1 = nn.BatchNorm2d(mid, momentum=mom, eps=eps)
        image_size = math.ceil(image_size / stride)
        sq = max(1, int(cin * 0.25))
        self._se_reduce = Conv2dStaticSamePadding(mid, sq, 1, image_size=1, symmetric=sym)
        self._se_expand = Conv2dStaticSamePadding(sq, mid, 1, image_size=1, symmetric=sym)
        self._project_conv = Conv2dStaticSamePadding(mid, cout, 1, bias=False, image_size=image_size, symmetric=sym)
        self._bn2 = nn.BatchNorm2d(cout, momentum=mom, eps=eps)

    def forward(self, inputs):
        x = inputs
        if self.e != 1:
            x = F.silu(self._bn0(self._expand_conv(x)))
        x = F.silu(self._bn1(self._depthwise_conv(x)))
        s = F.adaptive_avg_pool2d(x, 1)
        s = self._se_expand(F.silu(self._se_reduce(s)))
        x = torch.sigmoid(s) * x
        x = self._bn2(self._project_conv(x))
        if self.stride == 1 and self.cin == self.cout:
            x = x + inputs  # drop-connect is 0 in these references
        return x


class EfficientNet(nn.Module):
    def __init__(self, width, depth, image_size, mom=0.01, eps=1e-3, sym=False):
        super().__init__()
        stem = round_filters(32, width)
        self._conv_stem = Conv2dStaticSamePadding(3, stem, 3, 2, bias=False, image_size=image_size, symmetric=sym)
        self._bn0 = nn.BatchNorm2d(stem, momentum=mom, eps=eps)
        size = math.ceil(image_size / 2)
        self._blocks = nn.ModuleList()
        for (k, s, e, i, o, r) in B0_STAGES:
            i, o, r = round_filters(i, width), round_filters(o, width), int(math.ceil(depth * r))
            for j in range(r):
                self._blocks.append(MBConvBlock(i if j == 0 else o, o, k, s if j == 0 else 1, e, size, mom, eps, 0.0, sym))
                if j == 0:
                    size = math.ceil(size / s)
        head = round_filters(1280, width)
        self._conv_head = Conv2dStaticSamePadding(o, head, 1, bias=False, image_size=size, symmetric=sym)
        self._bn1 = nn.BatchNorm2d(head, momentum=mom, eps=eps)

    def forward(self, x):
        x = F.silu(self._bn0(self._conv_stem(x)))
        for b in self._blocks:
            x = b(x)
        x = F.silu(self._bn1(self._conv_head(x)))
        return F.adaptive_avg_pool2d(x, 1).flatten(1)


def check_against_torchvision():
    """The mirror with symmetric padding and BN defaults must equal torchvision's efficientnet_b0."""
    import torchvision
    tv = torchvision.models.efficientnet_b0().eval()
    me = EfficientNet(1.0, 1.0, 224, mom=0.1, eps=1e-5, sym=True).eval()
    hash_fill(me)
    tvs = tv.state_dict()
    mine = me.state_dict()
    # torchvision order: features.0 (stem conv, bn), features.1..7 stages, features.8 head
    tv_keys = [k for k in tvs if k.startswith("features.")]
    my_keys = [k for k in mine]
    assert len(tv_keys) == len(my_keys), (len(tv_keys), len(my_keys))
    # the two orders differ inside a block only in that torchvision puts SE (fc1, fc2) before project
    with torch.no_grad():
        for a, b in zip(sorted_like_tv(my_keys), tv_keys):
            assert tuple(mine[a].shape) == tuple(tvs[b].shape), (a, b, mine[a].shape, tvs[b].shape)
            tvs[b].copy_(mine[a])
    tv.load_state_dict(tvs)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = tv.avgpool(tv.features(x)).flatten(1)
        got = me(x)
    err = (ref - got).abs().max().item()
    assert err < 1e-4, err
    print(f"EfficientNet mirror == torchvision efficientnet_b0 (max abs diff {err:.2e})")


def sorted_like_tv(keys):
    """Reorder lukemelas keys so each block lists expand, depthwise, SE, project like torchvision."""
    out, block = [], []
    cur = None
    for k in keys:
        if k.startswith("_blocks."):
            idx = k.split(".")[1]
            if idx != cur:
                out += order_block(block)
                block, cur = [], idx
            block.append(k)
        else:
            out += order_block(block)
            block, cur = [], None
            out.append(k)
    out += order_block(block)
    return out


def order_block(keys):
    rank = {"_expand_conv": 0, "_bn0": 1, "_depthwise_conv": 2, "_bn1": 3, "_se_reduce": 4, "_se_expand": 5,
            "_project_conv": 6, "_bn2": 7}
    return sorted(keys, key=lambda k: (rank[k.split(".")[2]], keys.index(k)))


# --------------------------------------------------------------------------------------------
# DINOv2 DINOHead (dinov2/layers/dino_head.py)

class DINOHead(nn.Module):
    def __init__(self, in_dim, out_dim, hidden_dim, bottleneck_dim):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.GELU(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.GELU(), nn.Linear(hidden_dim, bottleneck_dim))
        self.last_layer = nn.utils.weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False))
        self.last_layer.weight_g.data.fill_(1)

    def forward(self, x):
        z = F.normalize(self.mlp(x), dim=-1, p=2, eps=1e-12)
        return self.last_layer(z), z


# --------------------------------------------------------------------------------------------

def fingerprint(g):
    g = g.detach().reshape(-1).double()
    n = g.numel()
    head = g[:64]
    stride = max(1, n // 32)
    strided = g[::stride][:32]
    row = np.zeros(2 + 64 + 32, dtype=np.float32)  # zero-padded for tensors under 64 elements
    row[0], row[1] = g.norm().item(), g.sum().item()
    row[2:2 + head.numel()] = head.numpy()
    row[66:66 + strided.numel()] = strided.numpy()
    return row


def write_case(f, group, model, x, loss_weights, masks=None, train=False, grads=True):
    model.train(train)
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    outs = model(x, masks) if masks is not None else model(x)
    if not isinstance(outs, tuple):
        outs = (outs,)
    loss = sum((o * w).sum() for o, w in zip(outs, loss_weights))
    loss.backward()
    g = f.create_group(group)
    g["x"] = x.detach().numpy()
    if masks is not None:
        g["masks"] = masks.numpy().astype(np.uint8)
    for i, (o, w) in enumerate(zip(outs, loss_weights)):
        g[f"out{i}"] = o.detach().numpy()
        g[f"w{i}"] = w.numpy()
    g["x_grad"] = x.grad.numpy()
    if grads:  # one row per parameter, named by the "grad_names" newline-joined attribute
        names = [k for k, _ in model.named_parameters()]
        rows = [fingerprint(p.grad if p.grad is not None else torch.zeros_like(p)) for _, p in model.named_parameters()]
        g["grad_fp"] = np.stack(rows)
        g.attrs["grad_names"] = "\n".join(names)
    if train:  # updated BN running statistics, concatenated in state_dict order
        keys = [k for k in model.state_dict() if "running" in k]
        g["running"] = np.concatenate([model.state_dict()[k].numpy().reshape(-1) for k in keys])
        g.attrs["running_names"] = "\n".join(keys)
    g.attrs["loss"] = loss.item()


def main():
    check_against_torchvision()
    gen = torch.Generator().manual_seed(0)
    with h5py.File(OUT, "w") as f:
        # ViT-Ti/16 built for 32 px (2x2 grid) run at 48x64: exercises the bicubic pos-embed path
        vit = ViT(img_size=32, patch=16, dim=192, depth=12, heads=3)
        hash_fill(vit)
        x = torch.randn(2, 3, 48, 64, generator=gen)
        ws = [torch.randn(2, 192, generator=gen), torch.randn(2, 12, 192, generator=gen),
              torch.randn(2, 192, generator=gen)]
        write_case(f, "vit_tiny", vit, x, ws)
        masks = torch.rand(2, 12, generator=gen) < 0.4
        write_case(f, "vit_tiny_masked", vit, x, ws, masks=masks)
        f["vit_tiny"].attrs["n_params"] = sum(p.numel() for p in vit.parameters())
        # parameter counts of the standard sizes (224 px, patch 14 and 16)
        for name, (d, depth, h) in {"vit_small": (384, 12, 6), "vit_base": (768, 12, 12)}.items():
            for p in (14, 16):
                m = ViT(224, p, d, depth, h)
                f.attrs[f"n_params_{name}_p{p}"] = sum(t.numel() for t in m.parameters())

        # EfficientNet-B0, lukemelas static SAME padding for 48 px, 48 px input, eval and train BN
        for mode in ("eval", "train"):
            net = EfficientNet(1.0, 1.0, 48)
            hash_fill(net)
            x = torch.randn(2, 3, 48, 48, generator=gen)
            w = torch.randn(2, 1280, generator=gen)
            write_case(f, f"effnet_b0_{mode}", net, x, [w], train=(mode == "train"))
        net = EfficientNet(1.0, 1.0, 224)
        f.attrs["n_params_effnet_b0"] = sum(t.numel() for t in net.parameters())
        net5 = EfficientNet(1.6, 2.2, 456)
        f.attrs["n_params_effnet_b5"] = sum(t.numel() for t in net5.parameters())
        f.attrs["n_blocks_effnet_b5"] = len(net5._blocks)
        # static padding computed for 224 applied to a 72 px input (the Mammo-CLIP 456-vs-512 quirk)
        hash_fill(net)
        x = torch.randn(1, 3, 72, 72, generator=gen)
        write_case(f, "effnet_b0_static224_at72", net, x, [torch.randn(1, 1280, generator=gen)], grads=False)
        head = DINOHead(48, 100, 64, 32)
        hash_fill(head)
        with torch.no_grad():  # a non-unit g checks that the scale is applied per prototype
            head.last_layer.weight_g.copy_(torch.from_numpy(1.0 + hash_value("g", (100, 1))))
        x = torch.randn(6, 48, generator=gen)
        write_case(f, "dino_head", head, x, [torch.randn(6, 100, generator=gen), torch.randn(6, 32, generator=gen)])
    print("wrote", OUT)

    # A PyTorch-initialised micro ViT exported the way a user exports any state_dict (one dataset
    # per key, nothing else): the C test loads it through the normal checkpoint loader.
    torch.manual_seed(1)
    micro = ViT(img_size=32, patch=16, dim=32, depth=2, heads=2).eval()
    with torch.no_grad():
        for blk in micro.blocks:
            blk.ls1.gamma.fill_(0.5)
            blk.ls2.gamma.fill_(0.5)
        micro.pos_embed.normal_(0, 0.02)
        micro.cls_token.normal_(0, 0.02)
    with h5py.File("tests/ref/data/vit_micro_torch.h5", "w") as f:
        for k, v in micro.state_dict().items():
            f[k] = v.numpy()
    x = torch.randn(2, 3, 48, 32, generator=gen)
    with torch.no_grad():
        cls, patch, pooled = micro(x)
    with h5py.File("tests/ref/data/vit_micro_io.h5", "w") as f:
        f["x"], f["cls"], f["pooled"] = x.numpy(), cls.numpy(), pooled.numpy()
    print("wrote tests/ref/data/vit_micro_torch.h5 and vit_micro_io.h5")


if __name__ == "__main__":
    main()
