"""The class each item of a batch is explained for: ``target`` resolved against the logits.

A module of its own, below `base` and every method, so that `MethodContext.targets` and the
gradient methods share it without an import cycle.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch

Target = Union[None, int, Sequence[int], torch.Tensor]


def resolve_targets(logits: torch.Tensor, target: Target = None) -> torch.Tensor:
    """(B,) class index per item: top-1 when None, one int for all, or one per item."""
    B = logits.shape[0]
    if target is None:
        return logits.detach().argmax(dim=-1)
    t = torch.as_tensor(target, dtype=torch.long, device=logits.device).flatten()
    if t.numel() == 1:
        t = t.expand(B)
    if t.numel() != B:
        raise ValueError(f"got {t.numel()} targets for a batch of {B}")
    if (t < 0).any() or (t >= logits.shape[-1]).any():
        raise IndexError(f"target class out of range 0..{logits.shape[-1] - 1}: {t.tolist()}")
    return t


__all__ = ["Target", "resolve_targets"]
