"""Attention rollout (Abnar & Zuidema, 2020).

For each self-attention layer l (from ``start_layer``): fuse the heads, ``Â_l = fuse_h(A_l^h)``;
optionally zero the smallest ``discard_ratio`` fraction of its entries, never touching the CLS
row; add the identity for the residual connection and re-normalise every row,
``Ã_l = (Â_l + I) / rowsum(Â_l + I)``; multiply in layer order, ``R = Ã_L · … · Ã_1``.
The map is the CLS row of R over the patch tokens (models without CLS: the mean over the query
rows of the patch tokens).
"""
from __future__ import annotations

import torch

from ..capture import AttentionMap, CaptureResult
from ..errors import MethodNotDefinedError
from ..layout import SELF, WINDOW, TokenLayout
from . import register_method
from .fusion import fuse_heads


def rollout_layers(result: CaptureResult) -> list[AttentionMap]:
    """The layers rollout chains, or a clear error where rollout has no meaning for the model."""
    if any(m.kind == WINDOW for m in result.maps):
        raise MethodNotDefinedError(
            "rollout is not defined for windowed attention (Swin): each stage attends within local windows "
            "and stages change the token grid, so the layers cannot be multiplied; use raw attention per "
            "layer or Grad-CAM")
    layers = [m for m in result.maps if m.kind == SELF and m.layout is not None]
    if len(layers) < 2:
        raise MethodNotDefinedError(
            f"rollout needs a stack of at least two self-attention layers over the same tokens; this model "
            f"has {len(layers)} (its default map is the attention received per position instead)")
    n = layers[-1].weights.shape[-1]
    same = [m for m in layers if m.weights.shape[-1] == n and m.layout == layers[-1].layout]
    if len(same) != len(layers):
        raise MethodNotDefinedError(
            "rollout needs every self-attention layer to share one token layout; this model changes the "
            "token grid between stages (hierarchical model)")
    return layers


def discard_smallest(a: torch.Tensor, ratio: float, keep_row: int | None) -> torch.Tensor:
    """Zero the smallest `ratio` of entries of each (N, N) matrix, except those in row `keep_row`."""
    if ratio <= 0:
        return a
    B, N, _ = a.shape
    flat = a.reshape(B, -1)
    candidates = flat.clone()
    if keep_row is not None:
        candidates.view(B, N, N)[:, keep_row, :] = float("inf")
    k = int(ratio * candidates.shape[1])
    if k == 0:
        return a
    thr = candidates.kthvalue(k, dim=1, keepdim=True).values
    return torch.where(candidates <= thr, torch.zeros_like(flat), flat).view(B, N, N)


@register_method("rollout")
def rollout(result: CaptureResult, head_fusion: str = "mean", discard_ratio: float = 0.0,
            start_layer: int = 0, add_identity: bool = True) -> torch.Tensor:
    """(B, gh, gw) rollout map; see the module docstring for the formula."""
    layers = rollout_layers(result)[start_layer:]
    if not layers:
        raise ValueError(f"start_layer {start_layer} is past the last layer")
    layout: TokenLayout = layers[-1].layout
    cls = layout.cls_index
    R = None
    for m in layers:
        a = fuse_heads(m.weights, head_fusion)
        a = discard_smallest(a, discard_ratio, cls)
        if add_identity:
            a = a + torch.eye(a.shape[-1], dtype=a.dtype)
        a = a / a.sum(dim=-1, keepdim=True).clamp_min(1e-12)
        R = a if R is None else a @ R
    p = layout.num_prefix
    rows = R[:, cls, p:] if cls is not None else R[:, p:, p:].mean(dim=1)
    return rows.reshape(R.shape[0], *layout.grid)
