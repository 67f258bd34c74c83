"""Models that describe themselves: ``model.attention_tokens((H, W)) -> ModelTokens`` (the demo models).

Their attention modules either compute a softmax the capture sees, or set ``records_attention = True``
and call `attention.record_attention` with the layout they know (the SAGAN and attention-pooling CNNs).
"""
from __future__ import annotations

from torch import nn

from . import register_family
from .base import Family


@register_family
class DeclaredTokens(Family):
    name = "declared"
    priority = 100

    def matches(self, model: nn.Module) -> bool:
        return callable(getattr(model, "attention_tokens", None))
