"""open_clip's vision transformer (``model.visual``): class embedding + patch grid, ``nn.MultiheadAttention``.

The attention is ``nn.MultiheadAttention`` called with ``need_weights=False`` (recorded at its SDPA or
softmax, see `torch_mha`); the tokens are one class token then the (H/p, W/p) patches. A zero-shot
wrapper that holds the CLIP model (or its ``visual`` tower) anywhere inside is recognised too.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..layout import ModelTokens
from . import register_family
from .base import Family, PositionEmbedding


def visual_tower(model: nn.Module) -> Optional[nn.Module]:
    for m in model.modules():
        if type(m).__module__.startswith("open_clip") and type(m).__name__ == "VisionTransformer":
            return m
    return None


@register_family
class OpenCLIP(Family):
    name = "open_clip"
    priority = 45

    def matches(self, model: nn.Module) -> bool:
        return visual_tower(model) is not None

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        v = visual_tower(model)
        ph, pw = (int(p) for p in v.patch_size)
        return ModelTokens(("cls",), (hw[0] // ph, hw[1] // pw), (float(ph), float(pw)))

    def blocks(self, model: nn.Module):
        v = visual_tower(model)
        names = {id(m): n for n, m in model.named_modules()}
        return [(names[id(b)], b) for b in v.transformer.resblocks]

    def gradcam_target(self, model: nn.Module) -> nn.Module:
        return visual_tower(model).transformer.resblocks[-1].ln_1

    def position_embedding(self, model: nn.Module) -> Optional[PositionEmbedding]:
        v = visual_tower(model)
        pe = v.positional_embedding
        gh, gw = (int(g) for g in v.grid_size)
        return PositionEmbedding(pe.detach().float().cpu(), pe.shape[0] - gh * gw, (gh, gw), pe.requires_grad,
                                 "visual.positional_embedding")

    def projector(self, module: nn.Module):
        return None
