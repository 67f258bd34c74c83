"""CaiT's talking-heads attention: capture the softmax *before* the head-mixing ``proj_w``.

TalkingHeadAttn computes ``softmax(proj_l(q kᵀ))`` and then mixes heads with ``proj_w`` before
``attn_drop``; the rows after mixing no longer sum to 1. The softmax output is the input of
``proj_w`` (laid out (B, N, N, heads)), so a pre-hook there sees it.
"""
from __future__ import annotations

from torch import nn

from ..capture import current_session
from ..layout import SELF
from . import register_adapter
from .base import Adapter


@register_adapter
class TalkingHeadsAdapter(Adapter):
    priority = 20

    def matches(self, module: nn.Module) -> bool:
        return type(module).__name__ == "TalkingHeadAttn" and hasattr(module, "proj_w")

    def install(self, module: nn.Module):
        def on_softmax(proj_w, args):
            s = current_session(module)
            if s is not None:
                s.add(module, args[0].permute(0, 3, 1, 2), SELF)

        return module.proj_w.register_forward_pre_hook(on_softmax).remove
