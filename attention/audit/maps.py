"""The audit's only door into `attention.methods`: map names in, (B, gh, gw) float maps out.

Every call the audit makes into the methods goes through this module (the `Method` interface:
``defined_for(result)`` before any work, ``compute_map(name, result, model=, x=) -> MapResult``), so
a change of that interface is a change here only. Class-specific methods explain the top-1 class.
"""
from __future__ import annotations

import torch

# 'raw' gives one map per layer and head, not one per image: the audit summarises heads through the
# per-head statistics instead.
NOT_AUDITABLE = {"raw": "raw gives one map per layer and head; the audit summarises heads in its per-head statistics"}
DEFAULT_METHODS = ("rollout", "grad_rollout", "gradcam")
FALLBACK_METHOD = "received"   # the default map where rollout is not defined (CNN attention, Swin)


def auditable_methods() -> list[str]:
    """Registered method names that give one map per image."""
    from ..methods import method_names
    return [m for m in method_names() if m not in NOT_AUDITABLE]


def not_defined(result, names) -> dict[str, str]:
    """``{name: reason}`` for the methods without a meaning for this capture (checked before any work)."""
    from ..methods import get_method
    out = {}
    for name in names:
        why = NOT_AUDITABLE.get(name) or get_method(name).defined_for(result)   # KeyError for an unknown name
        if why:
            out[name] = why
    return out


def compute_maps(model, x: torch.Tensor, result, names) -> dict[str, torch.Tensor]:
    """``{name: (B, gh, gw) float32 CPU}`` for each method name, on the batch ``x`` whose capture is
    ``result``. Raises `MethodNotDefinedError` or KeyError (an unknown name) as the methods do."""
    return capture_and_maps(model, x, names, result)[1]


def capture_and_maps(model, x: torch.Tensor, names, result=None):
    """``(capture, {name: (B, gh, gw) float32 CPU})``: the batch's capture and its maps, the gradient maps
    from one shared forward + backward (`attention.methods.plan`), whose forward is also the capture
    (no separate forward) when ``result`` is None."""
    from ..methods.plan import compute_maps as planned
    for name in names:
        if name in NOT_AUDITABLE:
            raise KeyError(f"{name}: {NOT_AUDITABLE[name]}")
    result, maps = planned(list(names), model, x, result)
    return result, {n: m.maps.detach().float().cpu() for n, m in maps.items()}


__all__ = ["compute_maps", "capture_and_maps", "not_defined", "auditable_methods", "DEFAULT_METHODS", "FALLBACK_METHOD", "NOT_AUDITABLE"]
