"""Fusing the heads of one layer: mean, max or min over the heads axis."""
from __future__ import annotations

import torch

FUSIONS = ("mean", "max", "min")


def fuse_heads(weights: torch.Tensor, how: str = "mean") -> torch.Tensor:
    """(B, heads, Nq, Nk) -> (B, Nq, Nk). Max / min rows no longer sum to 1; callers renormalise."""
    w = weights.float()
    if how == "mean":
        return w.mean(dim=1)
    if how == "max":
        return w.amax(dim=1)
    if how == "min":
        return w.amin(dim=1)
    raise ValueError(f"unknown head fusion {how!r}; choose one of {FUSIONS}")
