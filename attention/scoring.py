"""Scores of a map against a ground-truth mask: cell fractions, pointing game, AUROC.

Shared by `attention.faithfulness`, `attention.audit` and the demo evaluation (`attention.demo.quality`
re-exports them), so it sits below all three and imports only numpy and torch.

Definitions (grid of gh x gw cells over an H x W mask; cell = (H/gh) x (W/gw) pixels):
- cell fraction: fraction of a cell's pixels covered by the mask;
- pointing game: the map's argmax cell has cell fraction > 0 (the object touches it);
- AUROC (per image, then averaged): map values as scores; positives = cells with fraction
  >= `pos_threshold` (0.5), negatives = cells with fraction == 0; cells only partly covered are
  left out (`ignore_partial=True`) or counted as negatives (False). Ties get average ranks.
"""
from __future__ import annotations

import numpy as np
import torch


def cell_fractions(masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(N, H, W) masks (any non-zero = object) -> (N, gh, gw) fraction of each cell covered."""
    masks = np.asarray(masks)
    N, H, W = masks.shape
    gh, gw = grid
    if H % gh or W % gw:
        raise ValueError(f"mask size {H}x{W} is not a multiple of the {gh}x{gw} grid")
    m = (masks > 0).astype(np.float32).reshape(N, gh, H // gh, gw, W // gw)
    return m.mean((2, 4))


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` for binary `labels` (Mann-Whitney U with average ranks
    for ties); NaN when one class is absent."""
    scores = np.asarray(scores, np.float64).ravel()
    labels = np.asarray(labels).ravel().astype(bool)
    P = int(labels.sum())
    Nn = labels.size - P
    if P == 0 or Nn == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(s.size, np.float64)
    # average ranks (1-based) over runs of equal scores
    starts = np.r_[0, np.flatnonzero(np.diff(s)) + 1]
    ends = np.r_[starts[1:], s.size]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[labels].sum() - P * (P + 1) / 2.0) / (P * Nn))


def _as_maps(maps) -> np.ndarray:
    return np.asarray(maps.detach().cpu() if isinstance(maps, torch.Tensor) else maps, np.float64)


def pointing_hits(maps, masks) -> np.ndarray:
    """(N,) bool: the highest cell of each (gh, gw) map touches the object of its (H, W) mask (pointing game)."""
    maps = _as_maps(maps)
    N = maps.shape[0]
    fr = cell_fractions(masks, maps.shape[1:]).reshape(N, -1)
    return fr[np.arange(N), maps.reshape(N, -1).argmax(1)] > 0


def evaluate_maps(maps, masks, labels=None, logits=None, *, pos_threshold: float = 0.5,
                  ignore_partial: bool = True) -> dict:
    """Score (N, gh, gw) maps against (N, H, W) masks; with `labels` and `logits` (N, C) also accuracy.

    Returns {"n", "accuracy" (or None), "pointing_game", "auroc", "auroc_n"} with per-image
    values averaged (images without positive or negative cells are skipped for AUROC)."""
    maps = _as_maps(maps)
    N, gh, gw = maps.shape
    flat = maps.reshape(N, -1)
    fr = cell_fractions(masks, (gh, gw)).reshape(N, -1)
    hit = pointing_hits(maps, masks)
    aucs = []
    for i in range(N):
        pos = fr[i] >= pos_threshold
        keep = (fr[i] == 0) | pos if ignore_partial else np.ones_like(pos)
        a = auroc(flat[i][keep], pos[keep])
        if not np.isnan(a):
            aucs.append(a)
    acc = None
    if labels is not None and logits is not None:
        lg = logits.detach().cpu().numpy() if isinstance(logits, torch.Tensor) else np.asarray(logits)
        acc = float((lg.argmax(1) == np.asarray(labels)).mean())
    return {"n": int(N), "accuracy": acc, "pointing_game": float(hit.mean()),
            "auroc": float(np.mean(aucs)) if aucs else float("nan"), "auroc_n": len(aucs)}


__all__ = ["cell_fractions", "auroc", "pointing_hits", "evaluate_maps"]
