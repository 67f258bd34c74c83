"""Your own attention modules: they call `attention.record_attention` themselves.

A module opts in with the class attribute ``records_attention = True`` and calls
``record_attention(self, weights, grid=(h, w), stride=(sy, sx))`` inside its forward. Nothing needs
installing: the call looks up the capture session of the calling context.
"""
from __future__ import annotations

from torch import nn

from . import register_adapter
from .base import Adapter


@register_adapter
class RecordedAttentionAdapter(Adapter):
    priority = 100

    def matches(self, module: nn.Module) -> bool:
        return bool(getattr(module, "records_attention", False))

    def install(self, module: nn.Module):
        return lambda: None
