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
from ..i18n import t as tr
from ..methods.queries import Query
from ..methods.raw import raw_attention
from ..methods.rollout import rollout, rollout_layers
from .figure import (BUTTONS_PX, FIG_LABEL_PX, FIG_TEXT_PX, FIG_TITLE_PX, figure_to_rgb, fit_size, px_canvas, pt,
                     text_width, wrap_px)

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


def _columns(n: int, most: int = MAX_COLUMNS) -> list[int]:
    most = max(2, min(most, MAX_COLUMNS))
    if n <= most:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, most).round().astype(int).tolist()))


# the picture's box in the lesson at 1280x720 and in presenter mode (width, height px)
LAYERS_BOX, LAYERS_PRESENTER_BOX = (465, 468), (598, 598)
MIN_MAP_PX = 64            # a map narrower than this would be a blur on the projector: fewer layers are shown


def raw_vs_rollout_picture(maps: LayerMaps, view: np.ndarray, cmap: str = "inferno", scale: float = 1.0,
                           lang: str = "en") -> np.ndarray:
    """Rows: raw attention, rollout, rollout without the identity; columns: layers (evenly chosen where they do
    not all fit). Drawn at its size in the lesson (x `scale` for presenter mode), every text >= FIG_TEXT_PX x
    `scale` pixels."""
    fw, fh = fit_size(LAYERS_BOX, scale, LAYERS_PRESENTER_BOX)
    f, lab, tit = FIG_TEXT_PX * scale, FIG_LABEL_PX * scale, FIG_TITLE_PX * scale
    pad, gap = 6 * scale, 6 * scale
    rows = [(tr("layers.row_raw", lang), maps.raw), (tr("layers.row_rollout", lang), maps.rollout),
            (tr("layers.row_noid", lang), maps.rollout_no_identity)]
    left = lab * 1.4                                          # the row labels, turned
    cols = _columns(len(maps.layers), int((fw - 2 * pad - left + gap) // (MIN_MAP_PX * scale + gap)))
    n = len(cols)
    shown = "" if n == len(maps.layers) else tr("layers.shown", lang, n=n, L=len(maps.layers))
    title = wrap_px(tr("layers.title", lang, shown=shown), fw - 2 * pad, tit,
                    first=fw - pad - BUTTONS_PX)
    top = pad + (title.count("\n") + 1) * tit * 1.2 + f * 1.3 + 2 * scale
    cap = f * 1.25
    H, W = view.shape[:2]
    side = min((fw - 2 * pad - left - (n - 1) * gap) / n, ((fh - top - pad) / 3 - cap - gap) * W / H)
    mh = side * H / W
    fh = min(fh, top + 3 * (mh + cap + gap) - gap + pad)      # no empty space below
    fig, ax = px_canvas(fw, fh)
    ax.text(pad, pad, title, fontsize=pt(tit), ha="left", va="top")
    x_start = pad + left + (fw - 2 * pad - left - n * side - (n - 1) * gap) / 2
    for r, (label, stack) in enumerate(rows):
        y0 = top + r * (mh + cap + gap)
        ax.text(x_start - 4 * scale, y0 + mh / 2, label, fontsize=pt(lab), rotation=90, ha="right", va="center")
        for c, k in enumerate(cols):
            x0 = x_start + c * (side + gap)
            a = stack[k]
            ax.imshow(view, extent=(x0, x0 + side, y0 + mh, y0), aspect="auto")
            ax.imshow(a, extent=(x0, x0 + side, y0 + mh, y0), cmap=cmap, alpha=0.65, interpolation="nearest",
                      aspect="auto")
            if r == 0:
                ax.text(x0 + side / 2, y0 - 3 * scale, tr("common.layer_k", lang, k=k)
                        if text_width(tr("common.layer_k", lang, k="00"), f) <= side
                        else str(k), fontsize=pt(f), ha="center", va="bottom")
            share = f"{100 * a.max() / max(a.sum(), 1e-12):.0f}%"
            top_share = tr("layers.max", lang, share=share)
            ax.text(x0 + side / 2, y0 + mh + 1 * scale, top_share if text_width(top_share, f) <= side
                    else share, fontsize=pt(f), ha="center", va="top")
    return figure_to_rgb(fig)


__all__ = ["LayerMaps", "layer_maps", "raw_vs_rollout_picture"]
