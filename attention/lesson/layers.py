"""Across layers: raw attention of each layer against rollout up to it, with and without the identity.

Raw: ``A_l[q, patches]`` (mean over heads). Rollout up to layer l (Abnar & Zuidema 2020):
``qᵀ Ã_l ⋯ Ã_0`` with ``Ã = (Â + I) / rowsum`` — the identity stands for the residual connection,
which carries each token's own content past the attention (at equal weight in this convention).
Without it, ``Ã = Â``: a product of row-stochastic matrices, which blurs towards the same row for
every query as layers are multiplied, so the map loses the object.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..capture import CaptureResult
from ..methods.queries import Query
from ..methods.raw import raw_attention
from ..methods.rollout import rollout, rollout_layers
from .figure import LABEL_SIZE, TITLE_SIZE, figure_to_rgb, new_figure

MAX_COLUMNS = 12


@dataclass(frozen=True)
class LayerMaps:
    """(layers, gh, gw) maps of one image, one entry per chained layer (forward order)."""

    layers: list[int]                 # indices into result.maps
    raw: np.ndarray
    rollout: np.ndarray               # with the identity (residual) term
    rollout_no_identity: np.ndarray


def layer_maps(result: CaptureResult, query: Query = "auto", item: int = 0) -> LayerMaps:
    chained = rollout_layers(result)          # MethodNotDefinedError where rollout has no meaning
    index = {id(m): i for i, m in enumerate(result.maps)}
    layers = [index[id(m)] for m in chained]
    raw = np.stack([raw_attention(result, i, "mean", query)[item].float().numpy() for i in layers])
    with_i = np.stack([rollout(result, query=query, end_layer=k)[item].numpy() for k in range(len(layers))])
    without = np.stack([rollout(result, query=query, end_layer=k, add_identity=False)[item].numpy()
                        for k in range(len(layers))])
    return LayerMaps(layers, raw, with_i, without)


def _columns(n: int) -> list[int]:
    if n <= MAX_COLUMNS:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, MAX_COLUMNS).round().astype(int).tolist()))


def raw_vs_rollout_picture(maps: LayerMaps, view: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """Rows: raw attention, rollout, rollout without the identity; columns: layers."""
    cols = _columns(len(maps.layers))
    rows = [("raw attention", maps.raw), ("rollout", maps.rollout), ("rollout, no identity", maps.rollout_no_identity)]
    fig = new_figure(2.4 * len(cols) + 2.2, 2.7 * len(rows) + 0.8)
    H, W = view.shape[:2]
    for r, (label, stack) in enumerate(rows):
        for c, k in enumerate(cols):
            ax = fig.add_subplot(len(rows), len(cols), r * len(cols) + c + 1)
            a = stack[k]
            ax.imshow(view, extent=(0, W, H, 0))
            ax.imshow(a, extent=(0, W, H, 0), cmap=cmap, alpha=0.65, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"layer {k}", fontsize=LABEL_SIZE)
            if c == 0:
                ax.set_ylabel(label, fontsize=LABEL_SIZE - 2)
            ax.text(0.03, 0.04, f"max {100 * a.max() / max(a.sum(), 1e-12):.0f}%", transform=ax.transAxes,
                    fontsize=LABEL_SIZE - 6, color="white", bbox=dict(facecolor="black", alpha=0.5, pad=1))
    fig.suptitle("raw attention vs. rollout (max: the top patch's share)", fontsize=TITLE_SIZE)
    return figure_to_rgb(fig)


__all__ = ["LayerMaps", "layer_maps", "raw_vs_rollout_picture"]
