"""ConViT: gated positional self-attention (GPSA) blocks, then ordinary self-attention blocks.

GPSA computes two softmaxes, over content scores and over positional scores, and applies their gated
mix ``a = (1 - σ(g_h)) · softmax(q kᵀ / √d) + σ(g_h) · softmax(r_pos)``, renormalised, to the values.
The map shown is that mix (what multiplies the values), tapped at the module's ``attn_drop`` while a
capture runs (a forward hook installed per capture and removed after), so that with ``keep_graph`` the
logits depend on it. The two softmaxes stay in ``CaptureResult.records``.
"""
from __future__ import annotations

from torch import nn

from .. import interception
from ..layout import KNOWN, SELF
from . import register_family
from .timm_vit import TimmViT


def _is_gpsa(m: nn.Module) -> bool:
    return type(m).__name__ == "GPSA" and isinstance(getattr(m, "attn_drop", None), nn.Module)


@register_family
class ConViT(TimmViT):
    name = "timm-convit"
    priority = 60
    timm_classes = ("ConVit",)

    def instrument(self, model: nn.Module):
        undos = []
        for gpsa in filter(_is_gpsa, model.modules()):
            def on_mix(drop, args, out, gpsa=gpsa):
                # the running capture session (set by `attention.capture`, read through the lower
                # `interception` module so that a family never imports the capture above it)
                s = interception.current()
                if s is not None and s.owns(gpsa):
                    s.add(gpsa, out, SELF, s.layout_for(out.shape[-1]), source=KNOWN, op="gpsa-mix")
            undos.append(gpsa.attn_drop.register_forward_hook(on_mix).remove)
        return undos

    def finish(self, session, maps):
        mixed = {m.name for m in maps if m.op == "gpsa-mix"}
        return [m for m in maps if m.op == "gpsa-mix" or m.name not in mixed]
