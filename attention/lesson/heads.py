"""Many heads: one query in every head of a layer, and which heads look locally or globally.

Mean attention distance (ViT paper, Fig. 7): for a head, ``Σ_j a_ij ‖pos_i − pos_j‖`` in input pixels
between patch centres, averaged over the patch queries i (`attention.diagnostics.head_stats`, the
keys restricted to the patches and re-normalised). For reference, a head that spread its attention
uniformly over all patches would score `uniform_distance` of the grid.
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from ..capture import AttentionMap, CaptureResult
from ..diagnostics import HeadStats, token_centres
from ..i18n import t as tr
from ..layout import TokenLayout
from ..methods.queries import Query, query_indices
from .figure import (BUTTONS_PX, FIG_LABEL_PX, FIG_TEXT_PX, FIG_TITLE_PX, figure_to_rgb, fit_size, px_canvas,
                     px_figure, pt, text_width, wrap_px)


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


# the pictures' box in the lesson at 1280x720 and in presenter mode (width, height px)
HEADS_BOX, HEADS_PRESENTER_BOX = (465, 298), (598, 340)


def heads_picture(result: CaptureResult, layer: int, query: Query, view: np.ndarray,
                  distances: Optional[np.ndarray] = None, item: int = 0, cmap: str = "inferno",
                  scale: float = 1.0, lang: str = "en") -> np.ndarray:
    """One panel per head: the captured attention of `query` in layer `layer` (index into
    ``result.maps``) over the patch grid, on `view` (the model's input, (H, W, 3) uint8). Drawn at its
    size in the lesson (x `scale` for presenter mode), every text >= FIG_TEXT_PX x `scale` pixels."""
    from ..methods.raw import raw_attention
    m = result.maps[layer]
    H = m.num_heads
    maps = [raw_attention(result, layer, h, query)[item].float().numpy() for h in range(H)]
    dist = query_distance(m, query, item) if distances is None else distances
    fw, fh = fit_size(HEADS_BOX, scale, HEADS_PRESENTER_BOX)
    f, tit = FIG_TEXT_PX * scale, FIG_TITLE_PX * scale
    pad, gap = 6 * scale, 6 * scale
    q = "CLS" if query in ("auto", "cls") else (query.upper() if isinstance(query, str) else
                                                tr("common.patch_rc", lang, r=query[0], c=query[1]))
    what = tr("heads.what_px", lang) if not isinstance(query, str) else ""
    title = wrap_px(tr("heads.title", lang, layer=layer, query=q, what=what), fw - 2 * pad, tit,
                    first=fw - pad - BUTTONS_PX)
    top = pad + (title.count("\n") + 1) * tit * 1.2 + 4 * scale
    label_h = f * 1.3
    # the number of columns that makes the maps largest in the space left
    Hh, Ww = view.shape[:2]

    def side_for(cols: int) -> float:
        rows = -(-H // cols)
        return min((fw - 2 * pad - (cols - 1) * gap) / cols,
                   ((fh - top - pad - (rows - 1) * gap) / rows - label_h) * Ww / Hh)
    cols = max(range(1, H + 1), key=side_for)
    rows = -(-H // cols)
    mw = side_for(cols)
    mh = mw * Hh / Ww
    x_start = (fw - cols * mw - (cols - 1) * gap) / 2
    fig, ax = px_canvas(fw, min(fh, top + rows * (mh + label_h + gap) - gap + pad))   # no empty rows below
    ax.text(pad, pad, title, fontsize=pt(tit), ha="left", va="top")
    for h, a in enumerate(maps):
        r, c = divmod(h, cols)
        x0, y0 = x_start + c * (mw + gap), top + r * (mh + label_h + gap) + label_h
        ax.imshow(view, extent=(x0, x0 + mw, y0 + mh, y0), aspect="auto")
        ax.imshow(a, extent=(x0, x0 + mw, y0 + mh, y0), cmap=cmap, alpha=0.65, interpolation="nearest", aspect="auto")
        if not isinstance(query, str):
            qr, qc = query
            gh, gw = a.shape
            ax.add_patch(Rectangle((x0 + qc * mw / gw, y0 + qr * mh / gh), mw / gw, mh / gh, fill=False,
                                   ec="#ff2d55", lw=2.0 * scale))
        # the longest label that fits over the map
        d = tr("heads.dist_px", lang, d=dist[h]) if np.isfinite(dist[h]) else ""
        head = tr("heads.head", lang, h=h)
        label = next((t for t in (f"{head}{d}", f"{h}{d}", head, str(h))
                      if text_width(t, f) <= mw - 4 * scale), str(h))
        ax.text(x0 + mw / 2, y0 - 2 * scale, label, fontsize=pt(f), ha="center", va="bottom")
    return figure_to_rgb(fig)


def distance_vs_depth_picture(stats: HeadStats, layout: Optional[TokenLayout] = None,
                              highlight_layer: Optional[int] = None, scale: float = 1.0,
                              lang: str = "en") -> np.ndarray:
    """ViT Fig. 7: each head's mean attention distance (input pixels) against its layer; drawn at its size in
    the lesson (x `scale` for presenter mode), every text >= FIG_TEXT_PX x `scale` pixels."""
    d = stats.mean_distance
    fw, fh = fit_size(HEADS_BOX, scale, HEADS_PRESENTER_BOX)
    f, lab = FIG_TEXT_PX * scale, FIG_LABEL_PX * scale
    fig = px_figure(fw, fh)
    ax = fig.add_subplot()
    L, Hmax = d.shape
    for l in range(L):
        ys = d[l][np.isfinite(d[l])]
        ax.scatter(np.full(len(ys), l), ys, s=(7 * scale) ** 2, color="#d62728" if l == highlight_layer else "#1f77b4",
                   alpha=0.85, edgecolors="black", linewidths=0.5, zorder=3)
    if layout is not None:
        u = uniform_distance(layout)
        ax.axhline(u, color="gray", linestyle="--", linewidth=2, label=tr("heads.uniform", lang, u=u))
        ax.legend(fontsize=pt(f), loc="lower right")
    ax.set_xlabel(tr("heads.depth_x", lang), fontsize=pt(lab))
    ax.set_ylabel(tr("heads.depth_y", lang), fontsize=pt(lab))
    # at most about 8 layer ticks: 15 px labels of a 24-layer model would run into each other
    ax.set_xticks(range(0, L, max(1, int(np.ceil(L / 8)))))
    ax.yaxis.set_major_locator(MaxNLocator(5, steps=[1, 2, 2.5, 5, 10]))
    ax.tick_params(labelsize=pt(f))
    top = np.nanmax(d) if np.isfinite(d).any() else 1.0
    ax.set_ylim(0, 1.12 * max(top, uniform_distance(layout) if layout is not None else 0.0))
    ax.grid(alpha=0.3)
    fig.suptitle(wrap_px(tr("heads.depth_title", lang), fw - 12 * scale, lab,
                         first=fw - 6 * scale - BUTTONS_PX),
                 fontsize=pt(lab), x=6 * scale / fw, ha="left")
    return figure_to_rgb(fig)


__all__ = ["uniform_distance", "query_distance", "heads_picture", "distance_vs_depth_picture"]
