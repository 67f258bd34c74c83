"""Pictures of a "watch it learn" run (`attention.lesson.learning`): the training curves and the probe
images' attention at a few moments of training, from diffuse (step 0) to the object."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator

from .figure import (BUTTONS_PX, FIG_LABEL_PX, FIG_TEXT_PX, figure_to_rgb, font, px_canvas,
                     px_figure, pt, text_width, wrap_px)
from ..i18n import t as tr
from .learning import ProbeSnapshot, Probes, TrainingState

MAX_COLUMNS = 5
# BOX: the pictures' size at scale 1, the box the 1280x720 layout gives them (step 6 then fits the screen);
# presenter mode draws them at PRESENTER_SCALE (text FIG_TEXT_PX x 1.4 = 21 px) for its larger box.
BOX = (427, 320)


def curves_picture(state: TrainingState, scale: float = 1.0, lang: str = "en") -> np.ndarray:
    """Loss (left axis) and batch accuracy + the probes' pointing game (right axis) against the step; every
    text >= FIG_TEXT_PX x `scale` pixels."""
    h = state.history
    f, lab = FIG_TEXT_PX * scale, FIG_LABEL_PX * scale
    fig = px_figure(BOX[0] * scale, BOX[1] * scale)
    ax = fig.add_subplot()
    if h.step:
        ax.plot(h.step, h.loss, color="#1f77b4", linewidth=2, label=tr("learn.loss", lang))
    ax.set_xlabel(tr("learn.step_axis", lang), fontsize=pt(lab))
    ax.set_ylabel(tr("learn.loss", lang), fontsize=pt(lab), color="#1f77b4")
    ax.set_xlim(0, max(state.total_steps, 1))
    ax.set_ylim(0, 1.08 * max(h.loss) if h.loss else 2.0)
    ax.tick_params(labelsize=pt(f))
    ax.xaxis.set_major_locator(MaxNLocator(4))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax2 = ax.twinx()
    if h.step:
        ax2.plot(h.step, _smooth(h.acc), color="#2ca02c", linewidth=2, label=tr("learn.accuracy", lang))
    snaps = state.snapshots
    if snaps:
        ax2.plot([s.step for s in snaps], [s.pointing_game for s in snaps], "o-", color="#d62728", linewidth=2,
                 markersize=7, label=tr("learn.probes_on_object", lang))
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel(tr("learn.fraction", lang), fontsize=pt(lab))
    ax2.tick_params(labelsize=pt(f))
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    if lines[0] or lines2[0]:     # under the plot: inside it, it would hide the curves at this size
        fig.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=pt(f), loc="outside lower center", ncol=3,
                   frameon=False, handlelength=1.2, columnspacing=0.8)
    ax.grid(alpha=0.3)
    ax.set_title(tr("learn.curves_title", lang, step=state.step, total=state.total_steps,
                    status=tr(f"learn.status_{state.status}", lang)), fontsize=pt(lab))
    return figure_to_rgb(fig)


def _smooth(values: Sequence[float], k: int = 10) -> np.ndarray:
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    out = np.empty_like(v)
    for i in range(len(v)):
        lo = max(0, i - k + 1)
        out[i] = (c[i + 1] - c[lo]) / (i + 1 - lo)
    return out


def pick_snapshots(snapshots: Sequence[ProbeSnapshot], columns: int = MAX_COLUMNS) -> list[ProbeSnapshot]:
    """The first, the latest and evenly spaced ones between (at most `columns`)."""
    if len(snapshots) <= columns:
        return list(snapshots)
    idx = np.linspace(0, len(snapshots) - 1, columns).round().astype(int)
    return [snapshots[i] for i in sorted(set(idx.tolist()))]


def probes_picture(probes: Probes, snapshots: Sequence[ProbeSnapshot], columns: int = MAX_COLUMNS,
                   cmap: str = "inferno", scale: float = 1.0, lang: str = "en") -> np.ndarray:
    """Rows: the probe images; columns: the image, then its rollout map at a few snapshots (first to latest),
    a green frame where the map's peak is on the object; every text >= FIG_TEXT_PX x `scale` pixels."""
    shown = pick_snapshots(snapshots, columns)
    P = len(probes)
    ncol = 1 + max(len(shown), 1)
    fw, fh = BOX[0] * scale, BOX[1] * scale
    f, lab = FIG_TEXT_PX * scale, FIG_LABEL_PX * scale
    pad, gap = 6 * scale, 5 * scale
    names = probes.label_names
    small = font(int(round(f)))
    title = wrap_px(tr("learn.probes_title", lang) if shown else tr("learn.press_start", lang), fw - 2 * pad, lab,
                    bold=True,
                    first=fw - pad - BUTTONS_PX / 0.75)          # the buttons, in the pixels of a picture shown x0.78
    top = pad + (title.count("\n") + 1) * lab * 1.2 + 2 * f * 1.2 + 2 * scale   # the title, two lines over columns
    name_w = max(small.getlength(n) for n in names) + 6 * scale
    side = min((fw - 2 * pad - name_w - (ncol - 1) * gap) / ncol, (fh - top - pad - (P - 1) * gap) / P)
    fig, ax = px_canvas(fw, min(fh, top + P * (side + gap) - gap + pad))
    ax.text(pad, pad, title, fontsize=pt(lab), ha="left", va="top", fontweight="bold")
    x_start = pad + name_w + (fw - 2 * pad - name_w - ncol * side - (ncol - 1) * gap) / 2
    ax.text(x_start + side / 2, top - 3 * scale, tr("learn.probe", lang), fontsize=pt(f), ha="center", va="bottom")
    for c, snap in enumerate(shown):
        label = tr("learn.step_n", lang, step=snap.step)
        label = label if text_width(label, f) <= side - 4 * scale else str(snap.step)
        ax.text(x_start + (c + 1) * (side + gap) + side / 2, top - 3 * scale,
                f"{label}\n{100 * snap.pointing_game:.0f}%", fontsize=pt(f), ha="center", va="bottom",
                linespacing=1.0)
    for p in range(P):
        y0 = top + p * (side + gap)
        H, W = probes.images[p].shape[:2]
        ax.text(x_start - 4 * scale, y0 + side / 2, names[p], fontsize=pt(f), ha="right", va="center")
        ax.imshow(probes.images[p], extent=(x_start, x_start + side, y0 + side, y0), interpolation="nearest",
                  aspect="auto")
        for c, snap in enumerate(shown):
            x0 = x_start + (c + 1) * (side + gap)
            ax.imshow(probes.images[p], extent=(x0, x0 + side, y0 + side, y0), interpolation="nearest", aspect="auto")
            ax.imshow(snap.rollout[p], extent=(x0, x0 + side, y0 + side, y0), cmap=cmap, alpha=0.7,
                      interpolation="nearest", aspect="auto")
            ax.add_patch(Rectangle((x0, y0), side, side, fill=False, lw=3 * scale,
                                   ec="#2ca02c" if snap.hits[p] else "#d62728"))
    return figure_to_rgb(fig)


__all__ = ["BOX", "curves_picture", "probes_picture", "pick_snapshots"]
