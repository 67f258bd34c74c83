"""timm's Swin v1/v2: attention per window of a cyclically shifted map.

The window attention module sees only (B * nW, n, C) windows; the block around it knows the stage grid
(its NHWC input), the window size and the shift. The capture records the softmax inside the window
attention (mask included), and this descriptor reads the enclosing block's input and attributes to
give each map its `WindowInfo` (roll by -shift, then pad).
"""
from __future__ import annotations

from torch import nn

from ..layout import KNOWN, WINDOW, TokenLayout, WindowInfo
from . import register_family
from .base import MapSpec
from .timm_vit import TimmViT


def is_window_block(m: nn.Module) -> bool:
    return hasattr(m, "window_size") and hasattr(m, "shift_size") and isinstance(getattr(m, "attn", None), nn.Module)


@register_family
class TimmSwin(TimmViT):
    name = "timm-swin"
    priority = 60
    timm_classes = ("SwinTransformer", "SwinTransformerV2")

    def describe(self, session, module, weights, site):
        block = site.enclosing(is_window_block)
        args = site.inputs(block) if block is not None else ()
        if not args or args[0].dim() != 4:
            return super().describe(session, module, weights, site)
        _, H, W, _ = args[0].shape
        wh, ww = (int(v) for v in block.window_size)
        shift = tuple(int(v) for v in block.shift_size) if any(block.shift_size) else (0, 0)
        padded = (H + (wh - H % wh) % wh, W + (ww - W % ww) % ww)
        info = WindowInfo((wh, ww), shift, (int(H), int(W)), padded)
        return MapSpec(WINDOW, TokenLayout((), info.grid, session.stride_for(info.grid)), window=info, source=KNOWN)

    def blocks(self, model):
        return super(TimmViT, self).blocks(model)  # hierarchical: no flat stack

    def gradcam_target(self, model: nn.Module) -> nn.Module:
        return model.layers[-1].blocks[-1].norm1

    def position_embedding(self, model):
        return None
