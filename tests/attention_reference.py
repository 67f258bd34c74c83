"""An implementation-independent reference for the capture: every attention computation at the aten level.

`AtenAttentionRecorder` is a ``TorchDispatchMode`` (below autograd, below every Python wrapper the
capture uses) that, during a *plain* forward, records
- the output of every ``aten._softmax`` / ``aten._safe_softmax`` over a >= 3-D tensor (any dim), and
- for every fused CPU scaled-dot-product-attention kernel call, the weights recomputed in float64 from
  the kernel's own q, k, mask, causal flag and scale: ``softmax(q kᵀ · scale + mask)``.
Each record is returned as a (rows, keys) float64 matrix in logical order, so it can be compared
with a captured map whatever view convention the capture uses.
"""
from __future__ import annotations

import math

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_SOFTMAX = {aten._softmax.default, getattr(aten, "_safe_softmax", aten._softmax).default}
_SDPA = {aten._scaled_dot_product_flash_attention_for_cpu.default}


def _weights_from_kernel(q, k, attn_mask=None, is_causal=False, scale=None):
    q, k = q.double(), k.double()
    if k.dim() >= 3 and q.dim() >= 3 and k.shape[-3] != q.shape[-3]:
        k = k.repeat_interleave(q.shape[-3] // k.shape[-3], dim=-3)
    sc = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    s = (q @ k.transpose(-2, -1)) * sc
    L, S = q.shape[-2], k.shape[-2]
    if is_causal:
        s = s.masked_fill(~torch.ones(L, S, dtype=torch.bool).tril(), float("-inf"))
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf")) if attn_mask.dtype == torch.bool else s + attn_mask.double()
    return s.softmax(-1)


class AtenAttentionRecorder(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.records: list[torch.Tensor] = []   # (rows, keys) float64
        self.kinds: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if func in _SOFTMAX and args[0].dim() >= 3:
            dim = int(args[1]) % args[0].dim()
            w = out.detach().movedim(dim, -1)
            self.records.append(w.double().reshape(-1, w.shape[-1]))
            self.kinds.append("softmax")
        elif func in _SDPA:
            q, k = args[0], args[1]
            is_causal = kwargs.get("is_causal", args[4] if len(args) > 4 else False)
            w = _weights_from_kernel(q.detach(), k.detach(), kwargs.get("attn_mask"), is_causal, kwargs.get("scale"))
            self.records.append(w.reshape(-1, w.shape[-1]))
            self.kinds.append("sdpa")
        return out


def reference_attention(model, x):
    """(output, records) of a plain eval forward of `model` on `x` (MHA fast path off so that the
    per-op kernels run; the weights they compute are the same)."""
    fast = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        rec = AtenAttentionRecorder()
        with torch.no_grad(), rec:
            out = model(x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fast)
    return out, rec
