"""Many heads: one query in every head of a layer, and which heads look locally or globally.

Mean attention distance (ViT paper, Fig. 7): for a head, ``Σ_j a_ij ‖pos_i − pos_j‖`` in input pixels
between patch centres, averaged over the patch queries i (`attention.diagnostics.head_stats`, the
keys restricted to the patches and re-normalised). For reference, a head that spread its attention
uniformly over all patches would score `uniform_distance` of the grid.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np

from ..capture import AttentionMap, CaptureResult
from ..diagnostics import HeadStats, token_centres
from ..layout import TokenLayout
from ..methods.queries import Query, query_indices
from .figure import LABEL_SIZE, TEXT_SIZE, TITLE_SIZE, figure_to_rgb, new_figure


def _centres(layout: TokenLayout) -> np.ndarray:
    """(gh * gw, 2) patch centres (y, x) in input pixels."""
    return token_centres(layout)[layout.num_prefix:].numpy()


def uniform_distance(layout: TokenLayout) -> float:
    """Mean distance (input pixels) between two patch centres drawn uniformly: the score of a head
    that attends to every patch equally."""
    c = _centres(layout)
    return float(np.linalg.norm(c[:, None] - c[None], axis=-1).mean())


def query_distance(m: AttentionMap, query: Union[tuple[int, int], str], item: int = 0) -> np.ndarray:
    """(heads,) distance of one patch query's attention, ``Σ_j a_ij ‖pos_i − pos_j‖`` over patch keys
    (re-normalised to the patches); NaN for a prefix query, which has no position."""
    if isinstance(query, str):
        return np.full(m.num_heads, np.nan)
    layout = m.layout
    i = query_indices(m.query_layout, tuple(query))[0]
    p = layout.num_prefix
    a = m.weights[item, :, i, p:].double().numpy()
    a = a / a.sum(-1, keepdims=True)
    c = _centres(layout)
    qi = i - m.query_layout.num_prefix
    d = np.linalg.norm(c - c[qi], axis=-1)
    return a @ d


def heads_picture(result: CaptureResult, layer: int, query: Query, view: np.ndarray,
                  distances: Optional[np.ndarray] = None, item: int = 0, cmap: str = "inferno") -> np.ndarray:
    """One panel per head: the captured attention of `query` in layer `layer` (index into
    ``result.maps``) over the patch grid, on `view` (the model's input, (H, W, 3) uint8)."""
    from ..methods.raw import raw_attention
    m = result.maps[layer]
    H = m.num_heads
    maps = [raw_attention(result, layer, h, query)[item].float().numpy() for h in range(H)]
    dist = query_distance(m, query, item) if distances is None else distances
    cols = min(H, 6)
    rows = -(-H // cols)
    fig = new_figure(3.6 * cols, 3.9 * rows + 0.6)
    Hh, Ww = view.shape[:2]
    for h, a in enumerate(maps):
        ax = fig.add_subplot(rows, cols, h + 1)
        ax.imshow(view, extent=(0, Ww, Hh, 0))
        ax.imshow(a, extent=(0, Ww, Hh, 0), cmap=cmap, alpha=0.65, interpolation="nearest")
        if not isinstance(query, str):
            r, c = query
            gh, gw = a.shape
            ax.plot([(c + 0.5) * Ww / gw], [(r + 0.5) * Hh / gh], marker="s", markersize=10,
                    markerfacecolor="none", markeredgecolor="#ff2d55", markeredgewidth=3)
        title = f"head {h}"
        if np.isfinite(dist[h]):
            title += f" · {dist[h]:.0f} px"
        ax.set_title(title, fontsize=LABEL_SIZE)
        ax.set_xticks([])
        ax.set_yticks([])
    q = "CLS" if query in ("auto", "cls") else (query.upper() if isinstance(query, str) else f"patch {tuple(query)}")
    fig.suptitle(f"layer {layer}: where {q} looks, head by head (px: this query's attention distance)",
                 fontsize=TITLE_SIZE)
    return figure_to_rgb(fig)


def distance_vs_depth_picture(stats: HeadStats, layout: Optional[TokenLayout] = None,
                              highlight_layer: Optional[int] = None) -> np.ndarray:
    """ViT Fig. 7: each head's mean attention distance (input pixels) against its layer."""
    d = stats.mean_distance
    fig = new_figure(9.0, 5.5)
    ax = fig.add_subplot()
    L, Hmax = d.shape
    for l in range(L):
        ys = d[l][np.isfinite(d[l])]
        ax.scatter(np.full(len(ys), l), ys, s=90, color="#d62728" if l == highlight_layer else "#1f77b4",
                   alpha=0.85, edgecolors="black", linewidths=0.5, zorder=3)
    if layout is not None:
        u = uniform_distance(layout)
        ax.axhline(u, color="gray", linestyle="--", linewidth=2, label=f"uniform attention: {u:.0f} px")
        ax.legend(fontsize=TEXT_SIZE, loc="lower right")
    ax.set_xlabel("layer (depth)", fontsize=LABEL_SIZE)
    ax.set_ylabel("mean attention distance (px)", fontsize=LABEL_SIZE)
    ax.set_xticks(range(L))
    ax.tick_params(labelsize=TEXT_SIZE)
    top = np.nanmax(d) if np.isfinite(d).any() else 1.0
    ax.set_ylim(0, 1.12 * max(top, uniform_distance(layout) if layout is not None else 0.0))
    ax.grid(alpha=0.3)
    ax.set_title("local heads sit low, global heads high (one dot per head)", fontsize=LABEL_SIZE)
    return figure_to_rgb(fig)


__all__ = ["uniform_distance", "query_distance", "heads_picture", "distance_vs_depth_picture"]
