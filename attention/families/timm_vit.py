"""timm's ViT family: one flat stack of blocks over prefix tokens + a patch grid.

Covers `VisionTransformer` and the models built like it (DeiT incl. distilled, register ViTs,
EVA/EVA02 with RoPE, BEiT with relative position bias, DINOv2/v3, SigLIP, RoPE-ViT, ViTamin's ViT
stages, ...): the prefix tokens come first in the order CLS, DIST, registers, then the last gh * gw
tokens are the patches. With ``fused_attn`` on (the default) timm calls
``F.scaled_dot_product_attention`` and the capture records the weights it computes; off, it records
``attn.softmax(-1)``. Either way the map is the softmax over keys that multiplies the values.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..layout import ModelTokens
from . import register_family
from .base import Family, PositionEmbedding, Recorded


def pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def is_timm(model: nn.Module) -> bool:
    return type(model).__module__.startswith("timm.")


def patch_grid(pe: nn.Module, hw: tuple[int, int]) -> tuple[tuple[int, int], tuple[float, float]]:
    """The patch grid and stride a timm patch embedding makes of an (H, W) input."""
    ph, pw = pair(pe.patch_size)
    proj = getattr(pe, "proj", None)
    if hasattr(pe, "dynamic_feat_size"):
        grid = pe.dynamic_feat_size(hw)
    elif (isinstance(proj, nn.Conv2d) and not isinstance(proj.padding, str)
          and tuple(proj.stride) != tuple(proj.kernel_size)):
        # overlapping patch embedding (PVT-v2): a k x k conv with a smaller stride and padding
        (kh, kw), (sh, sw), (pdh, pdw), (dh, dw) = proj.kernel_size, proj.stride, proj.padding, proj.dilation
        grid = ((hw[0] + 2 * pdh - dh * (kh - 1) - 1) // sh + 1, (hw[1] + 2 * pdw - dw * (kw - 1) - 1) // sw + 1)
        ph, pw = sh, sw
    else:
        grid = (hw[0] // ph, hw[1] // pw)
    return (int(grid[0]), int(grid[1])), (float(ph), float(pw))


def timm_prefix_names(model: nn.Module) -> tuple[str, ...]:
    names: list[str] = []
    if getattr(model, "cls_token", None) is not None:
        names.append("cls")
    if getattr(model, "dist_token", None) is not None:
        names.append("dist")
    reg = getattr(model, "reg_token", None)
    n_reg = reg.shape[1] if reg is not None else int(getattr(model, "num_reg_tokens", 0) or 0)
    names += [f"reg{i}" for i in range(n_reg)]
    declared = getattr(model, "num_prefix_tokens", None)
    if getattr(model, "no_embed_class", False) is False and declared is not None and declared > len(names):
        names += [f"tok{i}" for i in range(len(names), declared)]  # a family we do not know the order of
    return tuple(names)


def timm_qkv(module: nn.Module, rec: Recorded):
    """q, k, v of timm's `Attention` (fused ``qkv`` linear, optional q/k norms) from its input."""
    x = rec.args[0] if rec.args else rec.kwargs["x"]
    B, N, _ = x.shape
    H = module.num_heads
    d = getattr(module, "head_dim", None) or module.qkv.out_features // (3 * H)
    qkv = module.qkv(x).reshape(B, N, 3, H, d).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = module.q_norm(q), module.k_norm(k)
    scale = float(module.scale)

    def project(z: torch.Tensor) -> torch.Tensor:      # (B, H, N, d) -> the layer's output (B, N, C)
        out = module.norm(z.transpose(1, 2).reshape(B, N, H * d).to(x.dtype))
        if getattr(module, "gate", None) is not None:
            out = out * module.gate(x).sigmoid()
        return module.proj(out)

    return q, k, v, scale, project, rec.output


@register_family
class TimmViT(Family):
    name = "timm-vit"
    priority = 50
    #: a subclass for one timm family names its model classes here (and gets a higher priority)
    timm_classes: tuple[str, ...] = ()

    def matches(self, model: nn.Module) -> bool:
        if self.timm_classes:
            return is_timm(model) and type(model).__name__ in self.timm_classes
        pe = getattr(model, "patch_embed", None)
        return is_timm(model) and pe is not None and hasattr(pe, "patch_size")

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        grid, stride = patch_grid(model.patch_embed, hw)
        return ModelTokens(timm_prefix_names(model), grid, stride)

    def blocks(self, model: nn.Module):
        stack = getattr(model, "blocks", None)
        if isinstance(stack, (nn.Sequential, nn.ModuleList)) and len(stack):
            names = {id(m): n for n, m in model.named_modules()}
            return [(names[id(b)], b) for b in stack]
        return super().blocks(model)

    def gradcam_target(self, model: nn.Module) -> nn.Module:
        blocks = getattr(model, "blocks", None)
        if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks) and hasattr(blocks[-1], "norm1"):
            return blocks[-1].norm1
        return super().gradcam_target(model)

    def position_embedding(self, model: nn.Module) -> Optional[PositionEmbedding]:
        pe = getattr(model, "pos_embed", None)
        grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
        if not isinstance(pe, torch.Tensor) or pe.dim() != 3 or grid is None:
            return None
        gh, gw = int(grid[0]), int(grid[1])  # the table is made for patch_embed.grid_size (resampled otherwise)
        if pe.shape[1] - gh * gw < 0:
            return None
        return PositionEmbedding(pe.detach().float().cpu()[0], pe.shape[1] - gh * gw, (gh, gw),
                                 isinstance(pe, nn.Parameter) and pe.requires_grad, "pos_embed")

    def projector(self, module: nn.Module):
        if isinstance(getattr(module, "qkv", None), nn.Linear) and hasattr(module, "num_heads") \
                and hasattr(module, "q_norm") and hasattr(module, "scale"):
            return timm_qkv
        return None
