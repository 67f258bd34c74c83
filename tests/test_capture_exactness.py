"""Exactness of the capture engine, one case per attention family.

Every captured map is compared with attention recomputed *independently* in this file from the
layer's own weights and the input the layer really received (grabbed by our own forward
pre-hooks): softmax(q kᵀ / √d + the family's bias / rotary / mask terms), in float64.
The capture must also leave logits unchanged and restore the model exactly (fused-attention flags,
hooks, training flags, the global MHA fast-path flag), including when the forward raises.

All models are randomly initialised (no downloads) and shrunk via ``create_model`` kwargs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.modules import module as torch_module

from attention import capture
from attention.capture import record_attention
from attention.layout import ModelTokens

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("single_intra_op_thread")


# --------------------------------------------------------------------------------------------
# Small models written here: a ViT on nn.TransformerEncoder and a SAGAN-style CNN.
# --------------------------------------------------------------------------------------------

class EncoderViT(nn.Module):
    """The tutorial ViT: patches -> Linear, CLS + learned position embedding, nn.TransformerEncoder."""

    def __init__(self, img=32, patch=8, dim=32, depth=3, heads=4, mlp_dim=64, num_classes=10):
        super().__init__()
        self.patch = patch
        n = (img // patch) ** 2
        self.to_embedding = nn.Linear(3 * patch * patch, dim)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.pos_embedding = nn.Parameter(torch.randn(1, n + 1, dim))
        layer = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=mlp_dim, dropout=0.1,
                                           batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=depth, enable_nested_tensor=False)
        self.dropout = nn.Dropout(0.1)
        self.head = nn.Linear(dim, num_classes)

    def attention_tokens(self, hw):
        p = self.patch
        return ModelTokens(("cls",), (hw[0] // p, hw[1] // p), (float(p), float(p)))

    def forward(self, x):
        b, p = x.shape[0], self.patch
        gh, gw = x.shape[2] // p, x.shape[3] // p
        patches = x.unfold(2, p, p).unfold(3, p, p)                      # B, 3, gh, gw, p, p
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(b, gh * gw, 3 * p * p)
        tok = torch.cat([self.cls_token.expand(b, -1, -1), self.to_embedding(patches)], dim=1)
        tok = self.encoder(tok + self.pos_embedding)
        return self.head(self.dropout(tok[:, 0]))


class SelfAttention2d(nn.Module):
    """SAGAN self-attention over the positions of a feature map; records itself."""

    records_attention = True

    def __init__(self, c, stride):
        super().__init__()
        self.query = nn.Conv2d(c, c // 8, 1)
        self.key = nn.Conv2d(c, c // 8, 1)
        self.value = nn.Conv2d(c, c, 1)
        self.gamma = nn.Parameter(torch.tensor(0.5))
        self.stride = stride

    def forward(self, x):
        b, c, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)                     # B, HW, C/8
        k = self.key(x).flatten(2)                                        # B, C/8, HW
        attn = torch.softmax(q @ k / math.sqrt(q.shape[-1]), dim=-1)      # B, HW, HW
        record_attention(self, attn.unsqueeze(1), grid=(h, w), stride=(self.stride, self.stride))
        v = self.value(x).flatten(2)                                      # B, C, HW
        out = (v @ attn.transpose(1, 2)).view(b, c, h, w)
        return x + self.gamma * out


class SaganCNN(nn.Module):
    def __init__(self, num_classes=10):
        super().__init__()

        def stage(i, o):
            return [nn.Conv2d(i, o, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        self.features = nn.Sequential(*stage(3, 64), *stage(64, 128), *stage(128, 256))
        self.attention = SelfAttention2d(256, stride=8.0)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(256 * 4 * 4, 512), nn.ReLU(), nn.Dropout(0.5),
                                        nn.Linear(512, num_classes))

    def forward(self, x):
        return self.classifier(self.attention(self.features(x)))


# --------------------------------------------------------------------------------------------
# Independent reference computations (float64), one per family.
# --------------------------------------------------------------------------------------------

def d(t):
    return t.detach().double()


def heads(t, b, n, h):
    """(B, N, h*dh) -> (B, h, N, dh)."""
    return t.reshape(b, n, h, -1).transpose(1, 2)


def linear(x, w, bias=None):
    y = d(x) @ d(w).T
    return y + d(bias) if bias is not None else y


def plain_attention(q, k, extra=None):
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    if extra is not None:
        s = s + extra
    return torch.softmax(s, dim=-1)


def ref_timm_attention(mod, args, kwargs):
    """timm ViT/DeiT/DINOv2 Attention: one fused qkv Linear."""
    x = args[0]
    b, n, _ = x.shape
    assert isinstance(mod.q_norm, nn.Identity) and isinstance(mod.k_norm, nn.Identity)
    qkv = linear(x, mod.qkv.weight, mod.qkv.bias).reshape(b, n, 3, -1)
    q, k = heads(qkv[:, :, 0], b, n, mod.num_heads), heads(qkv[:, :, 1], b, n, mod.num_heads)
    return plain_attention(q, k)


def qkv_with_split_bias(mod, x):
    """EVA/BEiT: qkv weight without bias; bias = (q_bias, 0, v_bias)."""
    b, n, _ = x.shape
    qkv = linear(x, mod.qkv.weight).reshape(b, n, 3, -1)
    q = qkv[:, :, 0] + d(mod.q_bias)
    k = qkv[:, :, 1]                       # keys carry no bias
    return heads(q, b, n, mod.num_heads), heads(k, b, n, mod.num_heads)


def rotate_pairs(t):
    """Interleaved rotation: (x0, x1, x2, x3, ...) -> (-x1, x0, -x3, x2, ...)."""
    out = torch.empty_like(t)
    out[..., 0::2] = -t[..., 1::2]
    out[..., 1::2] = t[..., 0::2]
    return out


def ref_eva_rope(mod, args, kwargs):
    """EVA02: rotary embedding on the patch tokens (not the prefix tokens) of q and k."""
    x, rope = args[0], kwargs["rope"]
    assert not mod.rotate_half and isinstance(mod.q_norm, nn.Identity)
    q, k = qkv_with_split_bias(mod, x)
    sin, cos = d(rope).chunk(2, dim=-1)                      # (num_patches, head_dim) each
    npt = mod.num_prefix_tokens
    assert sin.shape == (x.shape[1] - npt, q.shape[-1])

    def rotary(t):
        patch = t[:, :, npt:]
        return torch.cat([t[:, :, :npt], patch * cos + rotate_pairs(patch) * sin], dim=2)
    return plain_attention(rotary(q), rotary(k))


def relative_index(wh, ww):
    """Index into a (2wh-1)(2ww-1) bias table for every pair of tokens of a wh x ww window."""
    ys, xs = torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    dy = ys[:, None] - ys[None, :] + wh - 1
    dx = xs[:, None] - xs[None, :] + ww - 1
    return dy * (2 * ww - 1) + dx


def ref_beit(mod, args, kwargs):
    """BEiT: relative position bias, with three extra table rows for cls->patch, patch->cls, cls->cls."""
    x = args[0]
    q, k = qkv_with_split_bias(mod, x)
    wh, ww = mod.window_size
    n = wh * ww + 1
    m = (2 * wh - 1) * (2 * ww - 1)
    index = torch.empty(n, n, dtype=torch.long)
    index[1:, 1:] = relative_index(wh, ww)
    index[0, :] = m            # cls -> patch
    index[:, 0] = m + 1        # patch -> cls
    index[0, 0] = m + 2        # cls -> cls
    bias = d(mod.relative_position_bias_table)[index.view(-1)].view(n, n, -1).permute(2, 0, 1)
    return plain_attention(q, k, bias)


def ref_talking_heads(mod, args, kwargs):
    """CaiT self-attention: heads mixed by proj_l *before* the softmax."""
    x = args[0]
    b, n, _ = x.shape
    qkv = linear(x, mod.qkv.weight, mod.qkv.bias).reshape(b, n, 3, -1)
    q, k = heads(qkv[:, :, 0], b, n, mod.num_heads), heads(qkv[:, :, 1], b, n, mod.num_heads)
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
    mixed = torch.einsum("bhij,gh->bgij", s, d(mod.proj_l.weight)) + d(mod.proj_l.bias)[None, :, None, None]
    return torch.softmax(mixed, dim=-1)


def ref_class_attention(mod, args, kwargs):
    """CaiT / XCiT class attention: only the CLS token queries."""
    x = args[0]
    b, n, _ = x.shape
    q = heads(linear(x[:, :1], mod.q.weight, mod.q.bias), b, 1, mod.num_heads)
    k = heads(linear(x, mod.k.weight, mod.k.bias), b, n, mod.num_heads)
    return plain_attention(q, k)


def ref_xca(mod, args, kwargs):
    """XCiT cross-covariance attention: channels x channels, q and k L2-normalised over the tokens."""
    x = args[0]
    b, n, _ = x.shape
    qkv = linear(x, mod.qkv.weight, mod.qkv.bias).reshape(b, n, 3, mod.num_heads, -1)
    q = qkv[:, :, 0].permute(0, 2, 3, 1)       # B, h, dh, N
    k = qkv[:, :, 1].permute(0, 2, 3, 1)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    k = k / k.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.softmax(q @ k.transpose(-2, -1) * d(mod.temperature), dim=-1)


def ref_pvt(mod, args, kwargs):
    """PVT-v2 spatial-reduction attention: keys from a strided conv over the (H, W) token map."""
    x, (h, w) = args[0], args[1]
    b, n, c = x.shape
    q = heads(linear(x, mod.q.weight, mod.q.bias), b, n, mod.num_heads)
    if mod.sr is not None:
        with torch.no_grad():
            red = mod.sr(x.transpose(1, 2).reshape(b, c, h, w)).flatten(2).transpose(1, 2)
            red = mod.norm(red)
    else:
        red = x
    kv = linear(red, mod.kv.weight, mod.kv.bias).reshape(b, red.shape[1], 2, -1)
    k = heads(kv[:, :, 0], b, red.shape[1], mod.num_heads)
    return plain_attention(q, k)


def ref_twins_lga(mod, args, kwargs):
    """Twins locally-grouped attention: pad to whole ws x ws windows, attention inside each window."""
    x, (h, w) = args[0], args[1]
    b, n, c = x.shape
    ws = mod.ws
    hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
    grid = torch.zeros(b, hp, wp, c, dtype=torch.float64)
    grid[:, :h, :w] = d(x).reshape(b, h, w, c)
    windows = []
    for wy in range(hp // ws):
        for wx in range(wp // ws):
            windows.append(grid[:, wy * ws:(wy + 1) * ws, wx * ws:(wx + 1) * ws].reshape(b, ws * ws, c))
    win = torch.stack(windows, 1).reshape(-1, ws * ws, c)          # (B * nW, n, C), image-major
    qkv = linear(win, mod.qkv.weight, mod.qkv.bias).reshape(win.shape[0], ws * ws, 3, -1)
    q, k = heads(qkv[:, :, 0], win.shape[0], ws * ws, mod.num_heads), heads(qkv[:, :, 1], win.shape[0], ws * ws, mod.num_heads)
    return plain_attention(q, k)


def ref_mha(mod, args, kwargs):
    """nn.MultiheadAttention: in_proj_weight / in_proj_bias, per head."""
    query, key = args[0], args[1]
    if not mod.batch_first:
        query, key = query.transpose(0, 1), key.transpose(0, 1)
    e = mod.embed_dim
    w, bias = mod.in_proj_weight, mod.in_proj_bias
    b = query.shape[0]
    q = heads(linear(query, w[:e], bias[:e]), b, query.shape[1], mod.num_heads)
    k = heads(linear(key, w[e:2 * e], bias[e:2 * e]), b, key.shape[1], mod.num_heads)
    return plain_attention(q, k)


def ref_sagan(mod, args, kwargs):
    x = d(args[0])
    q = torch.einsum("oc,bchw->bhwo", d(mod.query.weight[:, :, 0, 0]), x) + d(mod.query.bias)
    k = torch.einsum("oc,bchw->bhwo", d(mod.key.weight[:, :, 0, 0]), x) + d(mod.key.bias)
    q, k = q.flatten(1, 2), k.flatten(1, 2)                              # B, HW, C/8
    return plain_attention(q, k).unsqueeze(1)


def ref_swin_block(block, args, kwargs):
    """Swin v1 block input (B, H, W, C) -> norm1 -> roll(-shift) -> pad -> windows -> attention with the
    relative position bias and the shifted-window mask, both rebuilt here."""
    attn = block.attn
    with torch.no_grad():
        x = d(block.norm1(args[0]))
    b, h, w, c = x.shape
    wh, ww = block.window_size
    sh, sw = block.shift_size
    if sh or sw:
        x = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2))
    ph, pw = (-h) % wh, (-w) % ww
    x = F.pad(x, (0, 0, 0, pw, 0, ph))
    hp, wp = h + ph, w + pw
    nwh, nww = hp // wh, wp // ww
    windows = x.view(b, nwh, wh, nww, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nwh * nww, wh * ww, c)
    n = wh * ww
    qkv = linear(windows, attn.qkv.weight, attn.qkv.bias).reshape(-1, n, 3, c)
    q = heads(qkv[:, :, 0], qkv.shape[0], n, attn.num_heads)
    k = heads(qkv[:, :, 1], qkv.shape[0], n, attn.num_heads)
    bias = d(attn.relative_position_bias_table)[relative_index(wh, ww).view(-1)].view(n, n, -1).permute(2, 0, 1)
    s = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1]) + bias
    if sh or sw:
        # label the regions of the shifted, padded map; tokens of different regions may not attend
        def region(i, size, win, shift):
            return 0 if i < size - win else (1 if i < size - shift else 2)
        label = torch.tensor([[region(i, hp, wh, sh) * 3 + region(j, wp, ww, sw) for j in range(wp)]
                              for i in range(hp)])
        lw = label.view(nwh, wh, nww, ww).permute(0, 2, 1, 3).reshape(nwh * nww, n)
        mask = torch.where(lw[:, :, None] == lw[:, None, :], 0.0, -100.0).double()   # timm's -100
        s = (s.view(b, nwh * nww, -1, n, n) + mask[None, :, None]).view(-1, attn.num_heads, n, n)
    return torch.softmax(s, dim=-1)


# --------------------------------------------------------------------------------------------
# Cases
# --------------------------------------------------------------------------------------------

@dataclass
class Case:
    build: Callable[[], nn.Module]
    shape: tuple
    targets: Callable[[nn.Module], list]      # -> [(attention module name, module to pre-hook, reference)]
    kinds: dict                               # kind -> expected number of maps
    heavy: bool = False                       # full-size model: checked once, not in every test


def randomize(model, *names, std=1.0):
    """Give zero-initialised parameters (biases, bias tables) random values so that they matter."""
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.split(".")[-1] in names:
                p.normal_(0, std)
    return model


def timm_model(name, **kw):
    def build():
        return timm.create_model(name, pretrained=False, **kw)
    return build


def by_type(type_name, ref):
    def targets(model):
        out = []
        for n, m in model.named_modules():
            if type(m).__name__ == type_name:
                out.append((n, m, ref))
        return out
    return targets


def combine(*fns):
    return lambda model: [t for f in fns for t in f(model)]


def swin_targets(model):
    return [(n + ".attn", m, ref_swin_block) for n, m in model.named_modules()
            if type(m).__name__ == "SwinTransformerBlock"]


def tv_vit_small():
    return torchvision.models.VisionTransformer(image_size=96, patch_size=16, num_layers=3, num_heads=4,
                                                hidden_dim=64, mlp_dim=128, num_classes=10)


def mha_targets(model):
    return [(n, m, ref_mha) for n, m in model.named_modules() if isinstance(m, nn.MultiheadAttention)]


CASES = {
    "vit_tiny": Case(timm_model("vit_tiny_patch16_224", depth=3, img_size=112), (2, 3, 112, 112),
                     by_type("Attention", ref_timm_attention), {"self": 3}),
    "deit_tiny_distilled": Case(timm_model("deit_tiny_distilled_patch16_224", depth=3, img_size=112),
                                (1, 3, 112, 112),
                                by_type("Attention", ref_timm_attention), {"self": 3}),
    "dinov2_reg4": Case(timm_model("vit_small_patch14_reg4_dinov2", depth=3, img_size=98), (2, 3, 98, 98),
                        by_type("Attention", ref_timm_attention), {"self": 3}),
    "eva02_tiny_rope": Case(lambda: randomize(timm.create_model("eva02_tiny_patch14_224", depth=3,
                                                                img_size=112), "q_bias", "v_bias"),
                            (1, 3, 112, 112), by_type("EvaAttention", ref_eva_rope), {"self": 3}),
    "beit": Case(lambda: randomize(timm.create_model("beit_base_patch16_224", depth=3, embed_dim=64,
                                                     num_heads=4, img_size=112), "q_bias", "v_bias",
                                   "relative_position_bias_table"),
                 (1, 3, 112, 112), by_type("Attention", ref_beit), {"self": 3}),
    # 96x128 input: stage grids 24x32, 12x16, 6x8, 3x4 -> padding, asymmetric windows and shifts
    "swin_tiny": Case(lambda: randomize(timm.create_model("swin_tiny_patch4_window7_224", img_size=(96, 128),
                                                          depths=(2, 2, 2, 2), embed_dim=32,
                                                          num_heads=(1, 2, 4, 8)),
                                        "relative_position_bias_table"),
                      (2, 3, 96, 128), swin_targets, {"window": 8}),
    "cait_xxs24": Case(timm_model("cait_xxs24_224", depth=3, depth_token_only=2, img_size=112),
                       (1, 3, 112, 112),
                       combine(by_type("TalkingHeadAttn", ref_talking_heads),
                               by_type("ClassAttn", ref_class_attention)), {"self": 3, "class": 2}),
    "xcit_nano": Case(timm_model("xcit_nano_12_p16_224", depth=3, cls_attn_layers=1, img_size=112),
                      (1, 3, 112, 112),
                      combine(by_type("XCA", ref_xca), by_type("ClassAttn", ref_class_attention)),
                      {"channel": 3, "class": 1}),
    "pvt_v2_b0": Case(timm_model("pvt_v2_b0", depths=(1, 1, 1, 1)), (1, 3, 128, 96),
                      by_type("Attention", ref_pvt), {"reduced": 3, "self": 1}),
    # 96x128 input: stage-1 grid 24x32 -> padded to 28x35 for windows of 7
    "twins_svt_lga": Case(timm_model("twins_svt_small", depths=(2, 2, 2, 2), img_size=(96, 128)), (2, 3, 96, 128),
                          combine(by_type("LocallyGroupedAttn", ref_twins_lga), by_type("GlobalSubSampleAttn", ref_pvt)),
                          {"window": 4, "reduced": 3, "self": 1}),
    "torchvision_vit_small": Case(tv_vit_small, (2, 3, 96, 96), mha_targets, {"self": 3}),
    "torchvision_vit_b_16": Case(lambda: torchvision.models.vit_b_16(weights=None), (1, 3, 224, 224),
                                 mha_targets, {"self": 12}, heavy=True),
    "encoder_vit": Case(EncoderViT, (2, 3, 32, 32), mha_targets, {"self": 3}),
    "sagan_cnn": Case(SaganCNN, (2, 3, 32, 32),
                      lambda m: [("attention", m.attention, ref_sagan)], {"self": 1}),
}


# --------------------------------------------------------------------------------------------
# Helpers: our own input recorder and a snapshot of everything the capture may touch.
# --------------------------------------------------------------------------------------------

class InputRecorder:
    """Forward pre-hooks (registered by the test) that keep every call's args and kwargs."""

    def __init__(self, targets):
        self.calls = {name: [] for name, _, _ in targets}
        self.handles = []
        for name, mod, _ in targets:
            def hook(m, args, kwargs, name=name):
                self.calls[name].append((tuple(a.detach().clone() if torch.is_tensor(a) else a for a in args),
                                         {k: v.detach().clone() if torch.is_tensor(v) else v
                                          for k, v in kwargs.items()}))
            self.handles.append(mod.register_forward_pre_hook(hook, with_kwargs=True))

    def clear(self):
        for v in self.calls.values():
            v.clear()

    def remove(self):
        for h in self.handles:
            h.remove()


HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_forward_hooks_with_kwargs",
              "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called", "_backward_hooks",
              "_backward_pre_hooks", "_state_dict_hooks", "_load_state_dict_pre_hooks")
GLOBAL_HOOKS = ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
                "_global_backward_pre_hooks", "_global_forward_hooks_always_called")


def snapshot(model):
    mods = {}
    for name, m in model.named_modules():
        mods[name] = (
            m.training,
            vars(m).get("fused_attn", "<absent>"),
            {k: v for k, v in vars(m).items() if k in ("forward", "__call__")},
            {k: tuple((hk, id(hv)) for hk, hv in getattr(m, k, {}).items()) for k in HOOK_DICTS},
        )
    return {
        "modules": mods,
        "fastpath": torch.backends.mha.get_fastpath_enabled(),
        "global_hooks": {k: tuple(getattr(torch_module, k, {}).keys()) for k in GLOBAL_HOOKS},
        "grad_enabled": torch.is_grad_enabled(),
    }


def perturb_flags(model):
    """A non-trivial starting state: training on, one submodule in eval, fused attention mixed."""
    model.train()
    fused = [m for m in model.modules() if "fused_attn" in vars(m)]
    for i, m in enumerate(fused):
        m.fused_attn = (i % 2 == 0)
    attn_like = [m for m in model.modules() if type(m).__name__ in ("Attention", "EvaAttention", "XCA",
                                                                     "TalkingHeadAttn", "WindowAttention",
                                                                     "MultiheadAttention", "SelfAttention2d")]
    if attn_like:
        attn_like[0].eval()


# --------------------------------------------------------------------------------------------
# Tests
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case_id", list(CASES))
def test_captured_maps_equal_independent_recompute(case_id):
    case = CASES[case_id]
    torch.manual_seed(0)
    model = case.build()
    x = torch.randn(case.shape)

    model.eval()
    with torch.no_grad():
        logits_plain = model(x)
    targets = case.targets(model)
    assert targets, "no attention module found to check"

    recorder = InputRecorder(targets)
    try:
        perturb_flags(model)
        before = snapshot(model)
        res = capture(model, x)
        after = snapshot(model)
    finally:
        recorder.remove()
    assert after == before

    # logits with capture == logits without
    assert res.logits.shape == logits_plain.shape
    assert (res.logits - logits_plain).abs().max().item() <= TOL

    # one map per attention module, in forward order, with the expected kinds
    kinds = {}
    for m in res.maps:
        kinds[m.kind] = kinds.get(m.kind, 0) + 1
    assert kinds == case.kinds
    assert sorted(res.layer_names) == sorted(name for name, _, _ in targets)

    by_name = {name: (mod, ref) for name, mod, ref in targets}
    for amap in res.maps:
        mod, ref = by_name[amap.name]
        (args, kwargs), = recorder.calls[amap.name]
        expected = ref(mod, args, kwargs)
        got = amap.weights
        assert got.shape == expected.shape, amap.name
        assert got.dtype == torch.float32
        err = (got.double() - expected).abs().max().item()
        assert err <= TOL, f"{case_id} {amap.name}: max abs error {err:.2e}"
        assert (got.double().sum(-1) - 1).abs().max().item() <= TOL
        assert got.grad_fn is None and not got.requires_grad


@pytest.mark.parametrize("case_id", [k for k, c in CASES.items() if not c.heavy])
def test_model_restored_after_exception_in_forward(case_id):
    case = CASES[case_id]
    torch.manual_seed(0)
    model = case.build()
    x = torch.randn(case.shape)
    targets = case.targets(model)
    # raise from a forward hook on the 3rd attention module (the only one for the SAGAN CNN)
    name, mod, _ = targets[min(2, len(targets) - 1)]
    mod = dict(model.named_modules())[name]
    calls = []

    def boom(m, args, out):
        calls.append(1)
        raise RuntimeError("boom in the 3rd block")
    handle = mod.register_forward_hook(boom)
    try:
        perturb_flags(model)
        before = snapshot(model)
        with pytest.raises(RuntimeError, match="boom"):
            capture(model, x)
        assert calls == [1]
        assert snapshot(model) == before
    finally:
        handle.remove()

    # and the model still captures (and computes) correctly afterwards
    model.eval()
    with torch.no_grad():
        plain = model(x)
    res = capture(model, x)
    assert (res.logits - plain).abs().max().item() <= TOL
    assert len(res.maps) == sum(case.kinds.values())


def test_encoder_vit_fast_path_is_bypassed_under_no_grad():
    """nn.TransformerEncoder in eval + no_grad takes a fused fast path that never calls the
    MultiheadAttention's Python forward; the capture must still see every layer, exactly."""
    torch.manual_seed(0)
    model = EncoderViT().eval()
    x = torch.randn(3, 3, 32, 32)
    assert torch.backends.mha.get_fastpath_enabled()
    # Probe with an instance-level forward wrapper: a hook would itself disable the fast path.
    sa = model.encoder.layers[0].self_attn
    fired = []

    def probe(*args, **kwargs):
        fired.append(1)
        return type(sa).forward(sa, *args, **kwargs)
    sa.forward = probe
    try:
        with torch.no_grad():
            plain = model(x)
    finally:
        del sa.forward
    assert fired == [], "expected the fast path to skip the Python forward (test premise)"
    before = snapshot(model)
    with torch.no_grad():
        res = capture(model, x)
    assert snapshot(model) == before
    assert torch.backends.mha.get_fastpath_enabled()
    assert (res.logits - plain).abs().max().item() <= TOL
    assert [m.name for m in res.maps] == [f"encoder.layers.{i}.self_attn" for i in range(3)]
    for m in res.maps:
        assert m.weights.shape == (3, 4, 17, 17)
        assert m.layout.prefix_names == ("cls",) and m.layout.grid == (4, 4) and m.layout.stride == (8.0, 8.0)
    # exactness under no_grad too: recompute layer by layer from the layer's own weights (norm_first=False)
    tok = model.encoder.layers[0]
    assert not tok.norm_first
    with torch.no_grad():
        p = 8
        patches = x.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 1, 4, 5).reshape(3, 16, -1)
        h_in = torch.cat([model.cls_token.expand(3, -1, -1), model.to_embedding(patches)], 1) + model.pos_embedding
        for layer, amap in zip(model.encoder.layers, res.maps):
            expected = ref_mha(layer.self_attn, (h_in, h_in), {})
            assert (amap.weights.double() - expected).abs().max().item() <= TOL
            h_in = layer(h_in)


def test_sagan_layout():
    torch.manual_seed(0)
    res = capture(SaganCNN(), torch.randn(1, 3, 32, 32))
    (m,) = res.maps
    assert m.kind == "self" and m.name == "attention" and m.weights.shape == (1, 1, 16, 16)
    assert m.layout.prefix_names == () and m.layout.grid == (4, 4) and m.layout.stride == (8.0, 8.0)
