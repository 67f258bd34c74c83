"""The audit's only door into `attention.methods`: map names in, (B, gh, gw) float maps out.

Every call the audit makes into the methods goes through this module, so that a change of the
method interface is a change here only. It speaks the `Method` interface
(``compute_map(name, result, model=, x=) -> MapResult``, ``defined_for``) where the methods package
offers it, and the older registry of functions (``get_method(name)(result)`` or ``(model, x)``)
otherwise.
"""
from __future__ import annotations

from typing import Optional

import torch

# 'raw' gives one map per layer and head, not one per image: the audit summarises heads through the
# per-head statistics instead.
NOT_AUDITABLE = {"raw": "raw gives one map per layer and head; the audit summarises heads in its per-head statistics"}
DEFAULT_METHODS = ("rollout", "grad_rollout", "gradcam")
FALLBACK_METHOD = "received"   # the default map where rollout is not defined (CNN attention, Swin)


def _new_interface():
    from .. import methods
    return getattr(methods, "compute_map", None)


def auditable_methods() -> list[str]:
    """Registered method names that give one map per image."""
    from ..methods import method_names
    return [m for m in method_names() if m not in NOT_AUDITABLE]


def not_defined(result, names) -> dict[str, str]:
    """``{name: reason}`` for the methods without a meaning for this capture (checked before any work)."""
    from ..errors import MethodNotDefinedError
    from ..methods import get_method
    out = {}
    for name in names:
        if name in NOT_AUDITABLE:
            out[name] = NOT_AUDITABLE[name]
            continue
        m = get_method(name)      # KeyError for an unknown name
        why: Optional[str] = None
        if hasattr(m, "defined_for"):
            why = m.defined_for(result)
        elif not getattr(m, "needs_model", False):
            try:
                m(result)
            except MethodNotDefinedError as e:
                why = str(e)
        if why:
            out[name] = why
    return out


def compute_maps(model, x: torch.Tensor, result, names) -> dict[str, torch.Tensor]:
    """``{name: (B, gh, gw) float32 CPU}`` for each method name, on the batch ``x`` whose capture is
    ``result``. Raises `MethodNotDefinedError` or KeyError (an unknown name) as the methods do."""
    compute_map = _new_interface()
    out = {}
    for name in names:
        if name in NOT_AUDITABLE:
            raise KeyError(f"{name}: {NOT_AUDITABLE[name]}")
        if compute_map is not None:
            m = compute_map(name, result, model=model, x=x).maps
        else:
            from ..methods import get_method
            fn = get_method(name)
            m = fn(model, x) if getattr(fn, "needs_model", False) else fn(result)
        out[name] = m.detach().float().cpu()
    return out


__all__ = ["compute_maps", "not_defined", "auditable_methods", "DEFAULT_METHODS", "FALLBACK_METHOD", "NOT_AUDITABLE"]
