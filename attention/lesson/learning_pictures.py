"""Pictures of a "watch it learn" run (`attention.lesson.learning`): the training curves and the probe
images' attention at a few moments of training, from diffuse (step 0) to the object."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .figure import LABEL_SIZE, TEXT_SIZE, TITLE_SIZE, figure_to_rgb, new_figure
from .learning import ProbeSnapshot, Probes, TrainingState

MAX_COLUMNS = 5


def curves_picture(state: TrainingState) -> np.ndarray:
    """Loss (left axis) and batch accuracy + the probes' pointing game (right axis) against the step."""
    h = state.history
    fig = new_figure(9.0, 5.0)
    ax = fig.add_subplot()
    if h.step:
        ax.plot(h.step, h.loss, color="#1f77b4", linewidth=2, label="loss")
    ax.set_xlabel("training step", fontsize=LABEL_SIZE)
    ax.set_ylabel("cross-entropy loss", fontsize=LABEL_SIZE, color="#1f77b4")
    ax.set_xlim(0, max(state.total_steps, 1))
    ax.set_ylim(0, 1.08 * max(h.loss) if h.loss else 2.0)
    ax.tick_params(labelsize=TEXT_SIZE)
    ax2 = ax.twinx()
    if h.step:
        ax2.plot(h.step, _smooth(h.acc), color="#2ca02c", linewidth=2, label="accuracy (batches)")
    snaps = state.snapshots
    if snaps:
        ax2.plot([s.step for s in snaps], [s.pointing_game for s in snaps], "o-", color="#d62728", linewidth=2,
                 markersize=7, label="probes: rollout on the object")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("fraction", fontsize=LABEL_SIZE)
    ax2.tick_params(labelsize=TEXT_SIZE)
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    if lines[0] or lines2[0]:
        ax2.legend(lines[0] + lines2[0], lines[1] + lines2[1], fontsize=TEXT_SIZE - 2, loc="center right")
    ax.grid(alpha=0.3)
    ax.set_title(f"step {state.step} / {state.total_steps} · {state.status}", fontsize=LABEL_SIZE)
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
                   cmap: str = "inferno") -> np.ndarray:
    """Rows: the probe images; columns: the image, then its rollout map at a few snapshots (first to latest),
    a green frame where the map's peak is on the object."""
    shown = pick_snapshots(snapshots, columns)
    P = len(probes)
    ncol = 1 + max(len(shown), 1)
    fig = new_figure(2.3 * ncol + 0.4, 2.3 * P + 0.9)
    names = probes.label_names
    for p in range(P):
        ax = fig.add_subplot(P, ncol, p * ncol + 1)
        ax.imshow(probes.images[p], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(names[p], fontsize=LABEL_SIZE - 2)
        if p == 0:
            ax.set_title("probe", fontsize=LABEL_SIZE - 2)
        for c, snap in enumerate(shown):
            ax = fig.add_subplot(P, ncol, p * ncol + 2 + c)
            H, W = probes.images[p].shape[:2]
            ax.imshow(probes.images[p], extent=(0, W, H, 0), interpolation="nearest")
            ax.imshow(snap.rollout[p], extent=(0, W, H, 0), cmap=cmap, alpha=0.7, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for side in ax.spines.values():
                side.set_edgecolor("#2ca02c" if snap.hits[p] else "#d62728")
                side.set_linewidth(4)
            if p == 0:
                ax.set_title(f"step {snap.step}\n{100 * snap.pointing_game:.0f}% on object", fontsize=TEXT_SIZE - 2)
    if not shown:
        fig.suptitle("press Start: the maps appear here", fontsize=TITLE_SIZE - 4)
    else:
        fig.suptitle("rollout during training\n(green: peak on the object)", fontsize=TITLE_SIZE - 4)
    return figure_to_rgb(fig)


__all__ = ["curves_picture", "probes_picture", "pick_snapshots"]
