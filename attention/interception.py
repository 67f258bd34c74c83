"""Capture at the operation: every softmax and every scaled-dot-product attention of a forward pass.

While at least one capture runs (reference counted, any thread), the four ways PyTorch code computes
a softmax (``F.softmax``, ``torch.softmax``, ``Tensor.softmax``, and ``nn.Softmax``, which calls
``F.softmax``) and ``F.scaled_dot_product_attention`` are replaced by thin wrappers. A wrapper looks up
the capture session of the *calling* context (a ``ContextVar``); with none it calls the original at
the cost of one lookup, so other threads are unaffected. ``nn.MultiheadAttention`` needs nothing of
its own: ``F.multi_head_attention_forward`` calls the module-level ``softmax`` or
``scaled_dot_product_attention`` of ``torch.nn.functional``, which are the patched names; its fused
fast path (and ``nn.TransformerEncoderLayer``'s) is switched off while a capture runs on a model that
has one (`fastpath_off`).

Why patch functions rather than a ``TorchFunctionMode``: a mode sends *every* op of the forward through
Python (measured: 2.8x the plain forward on demo-vit at 64 px, 1.10x on ViT-Ti), the patches only the
handful of attention ops (benchmarks/capture.py). Why no module hooks: the innermost module that ran an
op is found by walking the Python frames from the op up to the first ``self`` that belongs to the
model (`OpSite`), which costs nothing on the other modules and leaves the model untouched.

SDPA is computed *as its definition* (``softmax(q kᵀ · scale + mask)`` with the kernel's scale, mask,
causal flag and GQA head sharing; dropout as the caller asked, after the recorded weights), and the
output is ``weights @ v``: the recorded tensor is the one the logits depend on, so ``∂y/∂A`` from
autograd is the true gradient. The recorded tensor is always the canonical 4-D view
(X, heads, Nq, Nk) and the caller gets that same tensor viewed back into its own shape, so the
gradient path runs through the recorded view too.
"""
from __future__ import annotations

import math
import sys
import threading
from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

# The originals, taken at import (before any patch).
_F_SOFTMAX = F.softmax
_TORCH_SOFTMAX = torch.softmax
_TENSOR_SOFTMAX = torch.Tensor.softmax
_SDPA = F.scaled_dot_product_attention

_lock = threading.Lock()
_users = 0
_fastpath_users = 0
_fastpath_saved = True

#: set by `attention.capture`: ``() -> session or None`` for the calling context
current: Callable[[], object] = lambda: None


class OpSite:
    """Where an attention op ran: the innermost module of the captured model on the Python stack.

    ``frame`` is the frame that called the op. The walk is lazy and only follows frames whose
    ``self`` is a module of the model (``names``: id -> module path).
    """

    __slots__ = ("frame", "names", "_found", "_next")

    def __init__(self, frame, names: dict):
        self.frame = frame
        self.names = names
        self._found: list = []      # [(module, frame)] found so far, innermost first
        self._next = frame          # where the walk goes on

    def _walk(self):
        """Yield (module, frame) of the model's running modules, innermost first, walking lazily."""
        yield from self._found
        seen = {id(m) for m, _ in self._found}
        f = self._next
        while f is not None:
            code = f.f_code
            if code.co_argcount and code.co_varnames[0] == "self":
                m = f.f_locals.get("self")
                if m is not None and id(m) in self.names and id(m) not in seen:
                    seen.add(id(m))
                    self._found.append((m, f))
                    self._next = f.f_back
                    yield m, f
            f = f.f_back
            self._next = f

    def chain(self) -> list:
        """[(module, frame)] of every running module of the model, innermost first."""
        return list(self._walk())

    @property
    def module(self) -> Optional[nn.Module]:
        """The innermost module that ran the op (an ``nn.Softmax`` counts as part of its parent)."""
        for m, _ in self._walk():
            if not isinstance(m, nn.Softmax):
                return m
        return None

    @property
    def name(self) -> str:
        m = self.module
        return self.names.get(id(m), "") if m is not None else ""

    def enclosing(self, predicate: Callable[[nn.Module], bool]) -> Optional[nn.Module]:
        """The innermost running module of the model for which ``predicate`` holds."""
        return next((m for m, _ in self._walk() if predicate(m)), None)

    def inputs(self, module: nn.Module) -> tuple:
        """The positional arguments ``module`` was called with (from its ``_call_impl`` frame)."""
        f = self.frame
        while f is not None:
            if f.f_code.co_name in ("_call_impl", "_wrapped_call_impl") and f.f_locals.get("self") is module:
                return tuple(f.f_locals.get("args", ()))
            f = f.f_back
        return ()


def canonical(t: torch.Tensor, batch: int) -> Optional[torch.Tensor]:
    """A (X, heads, Nq, Nk) view of attention weights ``t`` (softmax over the last dim), or None.

    3-D (X, Nq, Nk): X = batch -> one head; X = batch * h -> h heads (``bmm`` over B*heads, as
    ``nn.MultiheadAttention`` and hand-written ViTs do). 4-D as is. 5-D and more: leading dims folded
    into X (Twins' (B, windows, heads, n, n)). 2-D and 1-D softmaxes are not attention (class scores).
    """
    d = t.dim()
    if d < 3:
        return None
    if d == 3:
        x = t.shape[0]
        h = x // batch if batch and x % batch == 0 else 1
        return t.view(x // h, h, t.shape[1], t.shape[2]) if t.is_contiguous() else t.reshape(x // h, h, *t.shape[1:])
    if d == 4:
        return t
    return t.flatten(0, d - 4)


def _record(session, op: str, weights: torch.Tensor, frame) -> torch.Tensor:
    """Hand ``weights`` (softmax over the last dim) to the session; return the tensor the caller
    should use in its place (the recorded canonical view, viewed back)."""
    canon = canonical(weights, session.batch)
    if canon is None:
        return weights
    if not session.record(op, canon, OpSite(frame, session.names)):
        return weights
    return canon if canon.shape == weights.shape else canon.reshape(weights.shape)


def _softmax_dim(t: torch.Tensor, dim) -> Optional[int]:
    if dim is None:
        return None
    try:
        return int(dim) % t.dim()
    except TypeError:  # a named dimension
        return None


def _recorded_softmax(original, t: torch.Tensor, dim, frame):
    out = original(t, dim)
    s = current()
    if s is None or not isinstance(t, torch.Tensor):
        return out
    d = _softmax_dim(t, dim)
    if d is None or t.dim() < 3:
        return out
    if d == t.dim() - 1:
        return _record(s, "softmax", out, frame)
    # softmax over another axis (e.g. attention pooling over positions): record it keys-last
    moved = out.movedim(d, -1)
    used = _record(s, "softmax", moved, frame)
    return used.movedim(-1, d) if used is not moved else out


def _f_softmax(input, dim=None, _stacklevel=3, dtype=None):
    if current() is None or not isinstance(input, torch.Tensor):
        return _F_SOFTMAX(input, dim, _stacklevel, dtype)
    if dim is None:  # F.softmax's legacy implicit dim
        dim = F._get_softmax_dim("softmax", input.dim(), _stacklevel)
    # F.softmax itself calls Tensor.softmax (patched too): call the C method so that it records once
    return _recorded_softmax(lambda t, d: _TENSOR_SOFTMAX(t, d, dtype=dtype), input, dim,
                             sys._getframe(1))


def _torch_softmax(input, dim=None, dtype=None, **kwargs):
    if current() is None:
        return _TORCH_SOFTMAX(input, dim, dtype=dtype, **kwargs)
    return _recorded_softmax(lambda t, d: _TORCH_SOFTMAX(t, d, dtype=dtype, **kwargs), input, dim,
                             sys._getframe(1))


def _tensor_softmax(self, dim=None, dtype=None, **kwargs):
    if current() is None:
        return _TENSOR_SOFTMAX(self, dim, dtype=dtype, **kwargs)
    return _recorded_softmax(lambda t, d: _TENSOR_SOFTMAX(t, d, dtype=dtype, **kwargs), self, dim,
                             sys._getframe(1))


def sdpa_weights(query, key, attn_mask=None, is_causal=False, scale=None, enable_gqa=False) -> torch.Tensor:
    """The attention weights ``F.scaled_dot_product_attention`` applies, written out (its documented
    reference): ``softmax(q kᵀ · scale + bias)``, bias from ``is_causal`` and a bool or float mask.

    When q and k share their leading dims (the usual case) the scores are one ``baddbmm`` over
    (batch·heads) with the scale folded in: no scaled copy of q and no copy of the transposed k.
    """
    L, S, d = query.shape[-2], key.shape[-2], query.shape[-1]
    sc = 1.0 / math.sqrt(d) if scale is None else scale
    if enable_gqa and key.dim() >= 3 and key.shape[-3] != query.shape[-3]:
        key = key.repeat_interleave(query.shape[-3] // key.shape[-3], dim=-3)
    if query.shape[:-2] == key.shape[:-2]:
        q3, k3 = query.reshape(-1, L, d), key.reshape(-1, S, d)
        scores = torch.baddbmm(q3.new_empty(q3.shape[0], L, S), q3, k3.transpose(1, 2), beta=0.0, alpha=sc)
        scores = scores.view(*query.shape[:-2], L, S)
    else:  # broadcast leading dims
        scores = (query * sc) @ key.transpose(-2, -1)
    if is_causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=query.device).tril()
        scores = scores.masked_fill(~keep, float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    return _TORCH_SOFTMAX(scores, -1)


def _weighted_values(weights: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """``weights @ value``: one ``bmm`` over the leading dims when they agree."""
    if weights.shape[:-2] != value.shape[:-2]:
        return weights @ value
    L, S, e = weights.shape[-2], weights.shape[-1], value.shape[-1]
    return torch.bmm(weights.reshape(-1, L, S), value.reshape(-1, S, e)).view(*weights.shape[:-2], L, e)


def _sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    s = current()
    if s is None or query.dim() < 3:
        return _SDPA(query, key, value, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal,
                     scale=scale, **({"enable_gqa": True} if enable_gqa else {}))
    weights = sdpa_weights(query, key, attn_mask, is_causal, scale, enable_gqa)
    weights = _record(s, "sdpa", weights, sys._getframe(1))
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p, training=True)
    if enable_gqa and value.shape[-3] != query.shape[-3]:
        value = value.repeat_interleave(query.shape[-3] // value.shape[-3], dim=-3)
    return _weighted_values(weights, value)


_PATCHES = ((F, "softmax", _f_softmax), (torch, "softmax", _torch_softmax),
            (torch.Tensor, "softmax", _tensor_softmax), (F, "scaled_dot_product_attention", _sdpa))


def acquire(needs_fastpath_off: bool) -> None:
    """Patch the attention ops (first user) and, if asked, switch the MHA fast path off."""
    global _users, _fastpath_users, _fastpath_saved
    with _lock:
        if _users == 0:
            for owner, name, fn in _PATCHES:
                setattr(owner, name, fn)
        _users += 1
        if needs_fastpath_off:
            if _fastpath_users == 0:
                _fastpath_saved = torch.backends.mha.get_fastpath_enabled()
                torch.backends.mha.set_fastpath_enabled(False)
            _fastpath_users += 1


def release(needs_fastpath_off: bool) -> None:
    global _users, _fastpath_users
    with _lock:
        if needs_fastpath_off:
            _fastpath_users -= 1
            if _fastpath_users == 0:
                torch.backends.mha.set_fastpath_enabled(_fastpath_saved)
        _users -= 1
        if _users == 0:
            F.softmax = _F_SOFTMAX
            torch.softmax = _TORCH_SOFTMAX
            del torch.Tensor.softmax  # back to the C method inherited from TensorBase
            F.scaled_dot_product_attention = _SDPA


__all__ = ["OpSite", "canonical", "sdpa_weights", "acquire", "release"]
