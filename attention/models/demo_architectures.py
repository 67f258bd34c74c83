"""Four small attention classifiers for the shapes demo, one per classic tutorial architecture.

- ``demo-vit``: a plain ``timm.models.vision_transformer.VisionTransformer`` (CLS token, patch 8).
- ``demo-torch-vit``: a textbook ViT on ``nn.TransformerEncoder`` (`TorchViT`).
- ``demo-cnn-selfattn``: conv stages + a SAGAN-style self-attention block (`SelfAttention2d`).
- ``demo-cnn-attnpool``: residual CNN + attention pooling (`AttentionPool2d`).

The two CNN attention modules follow the capture protocol of `attention.capture`: class attribute
``records_attention = True`` and a call to ``record_attention`` with the softmax output inside
``forward`` (a no-op outside a capture).
"""
from __future__ import annotations

import copy
import math
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import record_attention
from ..layout import ModelTokens

DEMO_ARCHS = ("demo-vit", "demo-torch-vit", "demo-cnn-selfattn", "demo-cnn-attnpool")

_DEFAULTS = {
    "demo-vit": {"img_size": 64, "patch_size": 8, "embed_dim": 64, "depth": 4, "num_heads": 4,
                 "mlp_ratio": 2.0, "drop_rate": 0.0, "attn_drop_rate": 0.0, "drop_path_rate": 0.0,
                 "stem": "conv", "stem_hidden": 32, "pos_init": "sincos", "pos_scale": 0.5},
    "demo-torch-vit": {"img_size": 64, "patch_size": 8, "dim": 64, "depth": 4, "heads": 4, "mlp_dim": 128,
                       "dropout": 0.0, "norm_first": True, "stem": "conv", "stem_hidden": 32,
                       "pos_init": "sincos", "pos_scale": 0.5},
    "demo-cnn-selfattn": {"img_size": 64, "channels": [16, 32, 64, 128], "gamma_init": 1.0, "dropout": 0.1},
    "demo-cnn-attnpool": {"img_size": 64, "stem": 32, "channels": [32, 64], "width": 128, "hidden": 64,
                          "activation": "tanh", "dropout": 0.1},
}


def default_config(arch: str) -> dict:
    """The build config used for the shipped weights (a fresh copy)."""
    if arch not in _DEFAULTS:
        raise KeyError(f"unknown demo arch {arch!r}; expected one of {DEMO_ARCHS}")
    return copy.deepcopy(_DEFAULTS[arch])


def sincos_pos_embed(dim: int, grid: tuple[int, int]) -> torch.Tensor:
    """2-D sin-cos position embedding (MAE / ViT-22B style), (gh * gw, dim), rows in row-major order."""
    gh, gw = grid
    d4 = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(d4, dtype=torch.float64) / d4))
    ys, xs = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64),
                            indexing="ij")
    out = []
    for pos in (ys.reshape(-1), xs.reshape(-1)):
        a = pos[:, None] * omega[None]
        out += [a.sin(), a.cos()]
    emb = torch.cat(out, 1)
    if emb.shape[1] < dim:
        emb = torch.cat([emb, torch.zeros(emb.shape[0], dim - emb.shape[1], dtype=emb.dtype)], 1)
    return emb.float()


def _init_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int], num_prefix: int, scale: float) -> None:
    """Initialise a learned position embedding (1, prefix + gh*gw, dim) with scaled 2-D sin-cos
    values for the patches (zeros for the prefix tokens); it stays a trainable parameter."""
    with torch.no_grad():
        pos_embed.zero_()
        pos_embed[0, num_prefix:] = sincos_pos_embed(pos_embed.shape[-1], grid) * scale


def hmlp_stem(patch_size: int, dim: int, hidden: int = 48) -> nn.Sequential:
    """Hierarchical-MLP patch stem (DeiT III): 2x2 stride-2 convs with BN + GELU, stride = patch_size.
    Each token is a function of its own p x p patch only (the windows never overlap), exactly like a
    linear patch embedding, but non-linear - which makes a small ViT learn far faster from scratch."""
    n = int(round(math.log2(patch_size)))
    if 2 ** n != patch_size:
        raise ValueError("the hmlp stem needs a power-of-two patch size")
    layers, cin = [], 3
    for i in range(n - 1):
        layers += [nn.Conv2d(cin, hidden, 2, 2), nn.BatchNorm2d(hidden), nn.GELU()]
        cin = hidden
    layers.append(nn.Conv2d(cin, dim, 2, 2))
    return nn.Sequential(*layers)


def conv_stem(patch_size: int, dim: int, hidden: int = 48) -> nn.Sequential:
    """Convolutional patch stem (Xiao et al. 2021, "Early convolutions help transformers see better"):
    4x4 stride-2 convs with padding 1 (BN + ReLU), total stride = patch_size. Each stage's windows are
    centred on their 2x2 output block, so token (i, j) stays centred on its p x p patch; its receptive
    field (22 px for p = 8) overlaps the neighbouring patches a little."""
    n = int(round(math.log2(patch_size)))
    if 2 ** n != patch_size:
        raise ValueError("the conv stem needs a power-of-two patch size")
    layers, cin = [], 3
    for i in range(n - 1):
        layers += [nn.Conv2d(cin, hidden, 4, 2, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True)]
        cin = hidden
    layers.append(nn.Conv2d(cin, dim, 4, 2, 1))
    return nn.Sequential(*layers)


# --------------------------------------------------------------------------- textbook ViT

class TorchViT(nn.Module):
    """ViT from scratch: patch embedding, learned CLS token and position embedding,
    ``nn.TransformerEncoder``, classification from the CLS output (dropout + linear).

    ``stem="linear"`` is the textbook patch embedding (flattened p x p patches -> nn.Linear);
    ``stem="conv"`` a small convolutional stem of total stride p (`conv_stem`), which trains many
    times faster from scratch; either way there is one token per p x p patch."""

    def __init__(self, img_size: int = 64, patch_size: int = 8, dim: int = 64, depth: int = 4, heads: int = 4,
                 mlp_dim: int = 128, dropout: float = 0.1, norm_first: bool = True, stem: str = "linear",
                 stem_hidden: int = 32, pos_init: str = "random", pos_scale: float = 0.5, num_classes: int = 5):
        super().__init__()
        self.patch_size = patch_size
        self.num_patches = (img_size // patch_size) ** 2
        self.stem = stem
        if stem == "linear":
            self.patch_embed = nn.Linear(3 * patch_size * patch_size, dim)
        elif stem == "conv":
            self.patch_embed = conv_stem(patch_size, dim, stem_hidden)
        else:
            raise ValueError(f"unknown stem {stem!r}; expected 'linear' or 'conv'")
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, self.num_patches + 1, dim) * 0.02)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(d_model=dim, nhead=heads, dim_feedforward=mlp_dim, dropout=dropout,
                                           activation="gelu", batch_first=True, norm_first=norm_first)
        self.encoder = nn.TransformerEncoder(layer, num_layers=depth,
                                             norm=nn.LayerNorm(dim) if norm_first else None,
                                             enable_nested_tensor=False)
        self.head_drop = nn.Dropout(dropout)
        self.head = nn.Linear(dim, num_classes)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if pos_init == "sincos":
            g = img_size // patch_size
            _init_pos_embed(self.pos_embed, (g, g), 1, pos_scale)

    def attention_tokens(self, input_hw) -> ModelTokens:
        p = self.patch_size
        return ModelTokens(prefix_names=("cls",), grid=(input_hw[0] // p, input_hw[1] // p), stride=(p, p))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + N, dim) tokens (CLS first), position embedding added."""
        B, C, H, W = x.shape
        p = self.patch_size
        if self.stem == "linear":
            patches = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # B, gh, gw, C, p, p
            tok = self.patch_embed(patches.reshape(B, (H // p) * (W // p), C * p * p))
        else:
            tok = self.patch_embed(x).flatten(2).transpose(1, 2)         # B, gh*gw, dim
        tok = torch.cat([self.cls_token.expand(B, -1, -1), tok], 1)
        return self.dropout(tok + self.pos_embed)

    def classify(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.head_drop(tokens[:, 0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.encoder(self.embed(x)))


# --------------------------------------------------------------------------- SAGAN self-attention CNN

class SelfAttention2d(nn.Module):
    """SAGAN self-attention over the positions of a feature map:
    ``attn = softmax_j(q_i . k_j / sqrt(C/8))``, ``out = gamma * (attn @ v) + x``."""

    records_attention = True

    def __init__(self, channels: int, gamma_init: float = 1.0, attn_dropout: float = 0.0):
        super().__init__()
        self.dk = max(channels // 8, 1)
        self.query = nn.Conv2d(channels, self.dk, 1)
        self.key = nn.Conv2d(channels, self.dk, 1)
        self.value = nn.Conv2d(channels, channels, 1)
        self.gamma = nn.Parameter(torch.tensor(float(gamma_init)))
        # attention dropout (training only), as in timm: in eval mode a hook here sees the softmax output
        self.attn_drop = nn.Dropout(attn_dropout)
        self.stride = 8.0  # input pixels per feature cell; set by the owning model each forward

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns (gamma * attended + x, attended) where attended = attn @ v as a (B, C, h, w) map."""
        B, C, h, w = x.shape
        q = self.query(x).flatten(2).transpose(1, 2)                    # B, hw, dk
        k = self.key(x).flatten(2)                                      # B, dk, hw
        v = self.value(x).flatten(2).transpose(1, 2)                    # B, hw, C
        attn = torch.softmax(torch.bmm(q, k) / math.sqrt(self.dk), dim=-1)  # B, hw (queries), hw (keys)
        record_attention(self, attn.unsqueeze(1), grid=(h, w), stride=(self.stride, self.stride))
        attn = self.attn_drop(attn)
        attended = torch.bmm(attn, v).transpose(1, 2).reshape(B, C, h, w)
        return self.gamma * attended + x, attended


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class CNNSelfAttention(nn.Module):
    """conv3x3-BN-ReLU-maxpool stages (64 px -> 8 x 8 at stride 8; a last conv stage without pool),
    a SAGAN self-attention block,
    then global average pooling of the attention block's output -> dropout -> linear.

    ``pool="attended"`` (default) pools the attended values ``attn @ v`` only, so that the
    prediction is carried by the attention: GAP(attn @ v) = sum_j (column mean of attn)_j v_j, i.e.
    the attention *received* by position j is exactly its pooling weight. ``pool="residual"`` pools
    ``gamma * attn @ v + x`` (SAGAN's output)."""

    def __init__(self, img_size: int = 64, channels=(16, 32, 64, 128), gamma_init: float = 1.0, dropout: float = 0.1,
                 attn_dropout: float = 0.0, pool: str = "attended", num_classes: int = 5):
        super().__init__()
        layers, cin = [], 3
        for i, c in enumerate(channels):  # a 2x2 max-pool after each of the first three stages: stride 8
            layers += [_conv_bn_relu(cin, c)] + ([nn.MaxPool2d(2)] if i < 3 else [])
            cin = c
        self.features = nn.Sequential(*layers)
        self.attn = SelfAttention2d(cin, gamma_init, attn_dropout)
        self.pool = pool
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.features(x)
        self.attn.stride = x.shape[-1] / f.shape[-1]
        out, attended = self.attn(f)
        pooled = (attended if self.pool == "attended" else out).mean((2, 3))
        return self.fc(self.drop(pooled))


# --------------------------------------------------------------------------- ResNet + attention pooling

class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        y = self.bn2(self.conv2(y))
        return F.relu(y + self.shortcut(x), inplace=True)


class AttentionPool2d(nn.Module):
    """Attention pooling: scores = fc2(act(fc1(features))) per position, softmax over the h*w
    positions, attention-weighted sum of the features."""

    records_attention = True

    def __init__(self, channels: int, hidden: int = 64, activation: str = "tanh", attn_dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.Tanh() if activation == "tanh" else nn.ReLU()
        self.fc2 = nn.Linear(hidden, 1)
        # dropout on the pooling weights (training only): spreads the weight over all informative
        # positions instead of the single best one; in eval mode a hook here sees the softmax output
        self.attn_drop = nn.Dropout(attn_dropout)
        self.stride = 8.0  # input pixels per feature cell; set by the owning model each forward

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, h, w = x.shape
        feats = x.flatten(2).transpose(1, 2)                            # B, hw, C
        weights = torch.softmax(self.fc2(self.act(self.fc1(feats))).squeeze(-1), dim=-1)  # B, hw
        record_attention(self, weights.view(B, 1, 1, h * w), grid=(h, w), stride=(self.stride, self.stride),
                         kind="pooling")
        weights = self.attn_drop(weights)
        return torch.bmm(weights.unsqueeze(1), feats).squeeze(1)        # B, C


class CNNAttentionPool(nn.Module):
    """ResNet-style CNN -> attention pooling -> dropout -> linear.

    Stem: 2x2 stride-2 conv (64 -> 32 px); then one basic block per stage, each followed by a 2x2
    max-pool (32 -> 16 -> 8); a 1x1 conv "neck" to the final width. All downsampling is by aligned
    2x2 windows, so feature cell (i, j) is centred on input pixels 8i..8i+7 (no half-cell shift), and
    the receptive field stays local (32 px), so the pooling weights can point at the object."""

    def __init__(self, img_size: int = 64, stem: int = 32, channels=(32, 64), width: int = 128, hidden: int = 64,
                 activation: str = "tanh", dropout: float = 0.1, attn_dropout: float = 0.0, num_classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, stem, 2, 2, bias=False), nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
        blocks, cin = [], stem
        for c in channels:
            blocks += [BasicBlock(cin, c), nn.MaxPool2d(2)]
            cin = c
        blocks += [nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.layers = nn.Sequential(*blocks)
        self.pool = AttentionPool2d(width, hidden, activation, attn_dropout)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.layers(self.stem(x))
        self.pool.stride = x.shape[-1] / f.shape[-1]
        return self.fc(self.drop(self.pool(f)))


# --------------------------------------------------------------------------- registry

def _build_timm_vit(cfg: dict, num_classes: int) -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer
    model = VisionTransformer(img_size=cfg["img_size"], patch_size=cfg["patch_size"], in_chans=3,
                             num_classes=num_classes, global_pool="token", embed_dim=cfg["embed_dim"],
                             depth=cfg["depth"], num_heads=cfg["num_heads"], mlp_ratio=cfg["mlp_ratio"],
                             class_token=True, drop_rate=cfg["drop_rate"], attn_drop_rate=cfg["attn_drop_rate"],
                             drop_path_rate=cfg["drop_path_rate"])
    stem = cfg.get("stem", "linear")
    if stem in ("hmlp", "conv"):
        # still a plain VisionTransformer with timm's PatchEmbed: only its projection is replaced
        make = hmlp_stem if stem == "hmlp" else conv_stem
        model.patch_embed.proj = make(cfg["patch_size"], cfg["embed_dim"], cfg.get("stem_hidden", 48))
    if cfg.get("pos_init", "random") == "sincos":
        _init_pos_embed(model.pos_embed, tuple(model.patch_embed.grid_size), model.num_prefix_tokens,
                        cfg.get("pos_scale", 0.5))
    return model


def build_model(arch: str, config: Optional[dict] = None, num_classes: int = 5) -> nn.Module:
    """Build an untrained demo model; `config` defaults to `default_config(arch)` (missing keys too)."""
    cfg = default_config(arch)
    cfg.update(config or {})
    if arch == "demo-vit":
        return _build_timm_vit(cfg, num_classes)
    if arch == "demo-torch-vit":
        return TorchViT(num_classes=num_classes, **cfg)
    if arch == "demo-cnn-selfattn":
        return CNNSelfAttention(num_classes=num_classes, **cfg)
    if arch == "demo-cnn-attnpool":
        return CNNAttentionPool(num_classes=num_classes, **cfg)
    raise KeyError(f"unknown demo arch {arch!r}; expected one of {DEMO_ARCHS}")


__all__ = ["DEMO_ARCHS", "default_config", "build_model", "TorchViT", "SelfAttention2d", "CNNSelfAttention",
           "AttentionPool2d", "CNNAttentionPool", "BasicBlock"]
