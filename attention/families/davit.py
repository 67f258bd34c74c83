"""DaViT (dual attention): spatial window attention and channel group attention, alternating.

- ``SpatialBlock`` pads its (B, C, H, W) map to whole windows and runs ``WindowAttention`` on each
  (unshifted) ws x ws window: kind ``window`` with the geometry read from the block's input.
- ``ChannelBlock``'s ``ChannelAttention`` is a softmax over channels of a head (channels x channels),
  labelled ``channel``: spatial views refuse it.
"""
from __future__ import annotations

from torch import nn

from ..layout import CHANNEL, KNOWN, WINDOW, TokenLayout, WindowInfo
from . import register_family
from .base import MapSpec
from .timm_vit import TimmViT


@register_family
class DaViT(TimmViT):
    name = "timm-davit"
    priority = 60
    timm_classes = ("DaVit",)

    def tokens(self, model, hw):
        return None  # hierarchical: each layer's grid comes from its block

    def describe(self, session, module, weights, site):
        if type(module).__name__ == "ChannelAttention":
            return MapSpec(CHANNEL, None, source=KNOWN)
        block = site.enclosing(lambda m: type(m).__name__ == "SpatialBlock")
        args = site.inputs(block) if block is not None else ()
        if not args or args[0].dim() != 4:
            return super().describe(session, module, weights, site)
        _, _, H, W = args[0].shape
        wh, ww = (int(v) for v in block.window_size)
        info = WindowInfo((wh, ww), (0, 0), (int(H), int(W)), (H + (wh - H % wh) % wh, W + (ww - W % ww) % ww))
        return MapSpec(WINDOW, TokenLayout((), info.grid, session.stride_for(info.grid)), window=info, source=KNOWN)

    def blocks(self, model):
        return super(TimmViT, self).blocks(model)

    def gradcam_target(self, model: nn.Module) -> nn.Module:
        return model.stages[-1].blocks[-1][-1].norm1  # the last (channel) block's first norm

    def position_embedding(self, model):
        return None
