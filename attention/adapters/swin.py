"""Swin v1/v2: per-window attention plus what is needed to put window tokens back on the image.

The window attention module only sees (B * nW, n, C) windows; the block around it knows the stage
grid (H, W) (from its NHWC input), the window size and the cyclic shift. A pre-hook on the block
stores those for the capture; the attention's ``attn_drop`` hook (fused attention off, as for
other timm modules) records the weights with a `WindowInfo`.
"""
from __future__ import annotations

from torch import nn

from ..capture import current_session
from ..layout import WINDOW, TokenLayout, WindowInfo
from . import register_adapter
from .base import Adapter, chain, set_attr


def _is_swin_block(module: nn.Module) -> bool:
    return (hasattr(module, "window_size") and hasattr(module, "shift_size")
            and isinstance(getattr(module, "attn", None), nn.Module))


@register_adapter
class SwinWindowAdapter(Adapter):
    priority = 30

    def matches(self, module: nn.Module) -> bool:
        return type(module).__name__ == "WindowAttention" and isinstance(getattr(module, "attn_drop", None), nn.Dropout)

    def install_model(self, model: nn.Module):
        undos = []
        for block in model.modules():
            if _is_swin_block(block) and self.matches(block.attn):
                attn = block.attn

                def remember_geometry(blk, args, attn=attn):
                    s = current_session(blk)
                    if s is None:
                        return
                    _, H, W, _ = args[0].shape
                    wh, ww = blk.window_size
                    shift = tuple(int(v) for v in blk.shift_size) if any(blk.shift_size) else (0, 0)
                    padded = (H + (wh - H % wh) % wh, W + (ww - W % ww) % ww)
                    s.scratch[id(attn)] = WindowInfo((int(wh), int(ww)), shift, (int(H), int(W)), padded)

                undos.append(block.register_forward_pre_hook(remember_geometry).remove)
        return undos

    def install(self, module: nn.Module):
        undos = []
        if hasattr(module, "fused_attn"):
            undos.append(set_attr(module, "fused_attn", False))

        def on_weights(drop, args, out):
            s = current_session(module)
            if s is None:
                return
            info = s.scratch.get(id(module))
            layout = TokenLayout((), info.grid, s.stride_for(info.grid)) if info else None
            s.add(module, out, WINDOW, layout=layout, window=info)

        undos.append(module.attn_drop.register_forward_hook(on_weights).remove)
        return chain(*undos)
