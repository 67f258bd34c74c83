"""``torch.nn.MultiheadAttention``, wherever it is used (torchvision's ViT, ``nn.TransformerEncoder``).

Callers pass ``need_weights=False``, and in eval mode ``TransformerEncoderLayer`` may take a fused
fast path that never calls the module's Python ``forward``. For the capture we (1) switch the
global MHA fast path off (reference counted across concurrent captures, since it is one global
flag) and (2) wrap the instance's ``forward`` to ask for per-head weights
(``need_weights=True, average_attn_weights=False``), record them, and hand the caller what it asked
for. The slow path computes the same result, so other threads are unaffected apart from speed.
"""
from __future__ import annotations

import threading

import torch
from torch import nn

from ..capture import current_session
from ..layout import SELF
from . import register_adapter
from .base import Adapter, set_attr

_fastpath_lock = threading.Lock()
_fastpath_users = 0
_fastpath_saved = True


def _disable_fastpath():
    global _fastpath_users, _fastpath_saved
    with _fastpath_lock:
        if _fastpath_users == 0:
            _fastpath_saved = torch.backends.mha.get_fastpath_enabled()
            torch.backends.mha.set_fastpath_enabled(False)
        _fastpath_users += 1

    def undo():
        global _fastpath_users
        with _fastpath_lock:
            _fastpath_users -= 1
            if _fastpath_users == 0:
                torch.backends.mha.set_fastpath_enabled(_fastpath_saved)
    return undo


@register_adapter
class MultiheadAttentionAdapter(Adapter):
    priority = 10

    def matches(self, module: nn.Module) -> bool:
        return isinstance(module, nn.MultiheadAttention)

    def install_model(self, model: nn.Module):
        if any(isinstance(m, nn.MultiheadAttention) for m in model.modules()):
            return [_disable_fastpath()]
        return []

    def install(self, module: nn.Module):
        original = type(module).forward

        def forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
                    average_attn_weights=True, is_causal=False):
            s = current_session(module)
            if s is None:
                return original(module, query, key, value, key_padding_mask=key_padding_mask,
                                need_weights=need_weights, attn_mask=attn_mask,
                                average_attn_weights=average_attn_weights, is_causal=is_causal)
            if is_causal and attn_mask is None:
                raise ValueError("is_causal=True needs an explicit attn_mask when capturing attention")
            out, weights = original(module, query, key, value, key_padding_mask=key_padding_mask,
                                    need_weights=True, attn_mask=attn_mask, average_attn_weights=False,
                                    is_causal=False)
            s.add(module, weights, SELF)
            if not need_weights:
                return out, None
            return out, (weights.mean(dim=1) if average_attn_weights else weights)

        return set_attr(module, "forward", forward)
