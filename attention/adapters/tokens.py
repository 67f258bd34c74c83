"""Token providers: what a model's token sequence looks like for an input size.

Prefix tokens come first (timm orders them CLS, DIST or registers), then the patch grid.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..layout import ModelTokens
from . import register_tokens


def _pair(v) -> tuple[int, int]:
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


@register_tokens(priority=100)
def own_declaration(model: nn.Module, hw) -> Optional[ModelTokens]:
    """Models that describe themselves: ``model.attention_tokens((H, W)) -> ModelTokens``."""
    fn = getattr(model, "attention_tokens", None)
    return fn(hw) if callable(fn) else None


@register_tokens(priority=50)
def timm_patch_models(model: nn.Module, hw) -> Optional[ModelTokens]:
    """timm ViT-family models (ViT, DeiT, EVA, BEiT, CaiT, Swin, ...): read their own attributes."""
    pe = getattr(model, "patch_embed", None)
    if pe is None or not hasattr(pe, "patch_size"):
        return None
    ph, pw = _pair(pe.patch_size)
    proj = getattr(pe, "proj", None)
    if hasattr(pe, "dynamic_feat_size"):
        grid = pe.dynamic_feat_size(hw)
    elif (isinstance(proj, nn.Conv2d) and not isinstance(proj.padding, str)
          and tuple(proj.stride) != tuple(proj.kernel_size)):
        # overlapping patch embedding (PVT-v2): a k x k conv with a smaller stride and padding
        (kh, kw), (sh, sw), (pdh, pdw), (dh, dw) = proj.kernel_size, proj.stride, proj.padding, proj.dilation
        grid = ((hw[0] + 2 * pdh - dh * (kh - 1) - 1) // sh + 1,
                (hw[1] + 2 * pdw - dw * (kw - 1) - 1) // sw + 1)
        ph, pw = sh, sw
    else:
        grid = (hw[0] // ph, hw[1] // pw)
    names: list[str] = []
    if getattr(model, "cls_token", None) is not None:
        names.append("cls")
    if getattr(model, "dist_token", None) is not None:
        names.append("dist")
    reg = getattr(model, "reg_token", None)
    n_reg = reg.shape[1] if reg is not None else int(getattr(model, "num_reg_tokens", 0) or 0)
    names += [f"reg{i}" for i in range(n_reg)]
    declared = getattr(model, "num_prefix_tokens", None)
    if getattr(model, "no_embed_class", False) is False and declared is not None and declared != len(names):
        # a family we do not know the order of: name the extra tokens generically
        names += [f"tok{i}" for i in range(len(names), declared)]
    return ModelTokens(tuple(names), (int(grid[0]), int(grid[1])), (float(ph), float(pw)))


@register_tokens(priority=40)
def torchvision_vit(model: nn.Module, hw) -> Optional[ModelTokens]:
    """torchvision's VisionTransformer: class token + (H/p, W/p) patches."""
    if not (hasattr(model, "class_token") and hasattr(model, "conv_proj") and hasattr(model, "patch_size")):
        return None
    p = int(model.patch_size)
    return ModelTokens(("cls",), (hw[0] // p, hw[1] // p), (float(p), float(p)))


@register_tokens(priority=0)
def declared_attributes(model: nn.Module, hw) -> Optional[ModelTokens]:
    """Fallback for models that set ``num_prefix_tokens`` and ``patch_size`` attributes."""
    p = getattr(model, "patch_size", None)
    if p is None:
        return None
    ph, pw = _pair(p)
    n = int(getattr(model, "num_prefix_tokens", 0))
    names = (("cls",) + tuple(f"tok{i}" for i in range(1, n))) if n else ()
    return ModelTokens(names, (hw[0] // ph, hw[1] // pw), (float(ph), float(pw)))
