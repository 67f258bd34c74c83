"""timm attention modules: turn fused attention off for the capture and hook ``attn_drop``.

timm reads ``fused_attn`` once at construction; with it on, ``F.scaled_dot_product_attention`` runs
and the weights never exist as a tensor. We flip it off per module for the capture (restored
afterwards). On the unfused path the post-softmax matrix goes through ``self.attn_drop``, a dropout
that is the identity in eval mode, which is why the hook sits on a dropout layer.

Covers ViT, DeiT (distilled), register ViTs, EVA/EVA02 (RoPE), BEiT (relative position bias),
CaiT's class attention, PVT-v2 / Twins (spatial reduction: keys on a coarser grid) and XCiT's
channel attention (labelled as not spatial).
"""
from __future__ import annotations

import math

from torch import nn

from ..capture import current_session
from ..layout import CHANNEL, CLASS, REDUCED, SELF, TokenLayout
from . import register_adapter
from .base import Adapter, chain, set_attr

_CHANNEL_ATTENTION = {"XCA"}


def _key_grid(num_keys: int, query_grid: tuple[int, int]) -> tuple[int, int]:
    """Grid of the reduced keys: same aspect ratio as the queries' grid."""
    h, w = query_grid
    kh = max(1, round(math.sqrt(num_keys * h / max(w, 1))))
    while num_keys % kh:
        kh -= 1
    return kh, num_keys // kh


@register_adapter
class TimmAttentionAdapter(Adapter):
    priority = 10

    def matches(self, module: nn.Module) -> bool:
        name = type(module).__name__
        return isinstance(getattr(module, "attn_drop", None), nn.Dropout) and (
            hasattr(module, "fused_attn") or "Attn" in name or "Attention" in name or name in _CHANNEL_ATTENTION)

    def install(self, module: nn.Module):
        undos = []
        if hasattr(module, "fused_attn"):
            undos.append(set_attr(module, "fused_attn", False))
        channel = type(module).__name__ in _CHANNEL_ATTENTION

        def remember_feat_size(mod, args, kwargs):
            # spatial-reduction attention is called as attn(x, feat_size)
            s = current_session(mod)
            if s is not None:
                fs = kwargs.get("feat_size", kwargs.get("size", args[1] if len(args) > 1 else None))
                s.scratch[id(mod)] = tuple(int(v) for v in fs) if fs is not None else None

        def on_weights(drop, args, out):
            s = current_session(module)
            if s is None:
                return
            w = out
            if channel:
                s.add(module, w, CHANNEL, layout=None)
            elif w.shape[-2] == w.shape[-1]:
                layout = s.layout_for(w.shape[-1])
                if layout is None and id(module) in s.scratch:
                    layout = TokenLayout((), s.scratch[id(module)], s.stride_for(s.scratch[id(module)]))
                s.add(module, w, SELF, layout=layout)
            elif s.scratch.get(id(module)) is not None:
                q_grid = s.scratch[id(module)]
                k_grid = _key_grid(w.shape[-1], q_grid)
                s.add(module, w, REDUCED, layout=TokenLayout((), k_grid, s.stride_for(k_grid)),
                      query_layout=TokenLayout((), q_grid, s.stride_for(q_grid)))
            else:
                s.add(module, w, CLASS)

        h1 = module.attn_drop.register_forward_hook(on_weights)
        h2 = module.register_forward_pre_hook(remember_feat_size, with_kwargs=True)
        undos += [h1.remove, h2.remove]
        return chain(*undos)
