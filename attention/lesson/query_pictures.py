"""Pictures of one query's steps (`attention.lesson.query.QueryStep`), drawn on what the model saw.

Each step is its own picture so the app can put its explanation beside it; `query_steps_picture`
stacks them for one slide. Per-token values are drawn over the model's input view as a patch grid
(one cell per token, the exact numbers printed in the cells when the grid is small enough to read);
prefix tokens (CLS, DIST, registers) have no place in the image and are listed in the title.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
from matplotlib.patches import Rectangle

from .figure import LABEL_SIZE, SMALL_SIZE, TEXT_SIZE, figure_to_rgb, new_figure, stack_pictures
from .query import QueryStep, entropy_bits

ANNOTATE_MAX_CELLS = 100     # print the value in every cell up to a 10 x 10 grid


def _fmt(v: float) -> str:
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def draw_token_values(ax, view: np.ndarray, step: QueryStep, values: np.ndarray, *, cmap: str = "viridis",
                      title: str = "", vmin: Optional[float] = None, vmax: Optional[float] = None,
                      percent: bool = False, alpha: float = 0.6) -> None:
    """Per-token `values` (N,) as a patch grid over `view` (the model input, (H, W, 3) uint8);
    ``percent``: values are fractions, shown (colour scale included) as percentages."""
    if percent:
        values = 100.0 * np.asarray(values)
        vmin, vmax = (None if v is None else 100.0 * v for v in (vmin, vmax))
    grid = step.patch_grid(values)
    gh, gw = grid.shape
    H, W = view.shape[:2]
    ax.imshow(view, extent=(0, W, H, 0), interpolation="bilinear")
    im = ax.imshow(grid, extent=(0, W, H, 0), cmap=cmap, alpha=alpha, vmin=vmin, vmax=vmax,
                   interpolation="nearest")
    ch, cw = H / gh, W / gw
    if gh * gw <= ANNOTATE_MAX_CELLS:
        lo, hi = im.get_clim()
        for r in range(gh):
            for c in range(gw):
                val = grid[r, c]
                text = f"{val:.0f}" if percent else _fmt(val)
                light = (val - lo) / max(hi - lo, 1e-12) < 0.55
                ax.text((c + 0.5) * cw, (r + 0.5) * ch, text, ha="center", va="center",
                        fontsize=SMALL_SIZE if gw <= 8 else SMALL_SIZE - 3,
                        color="white" if light else "black")
    if step.query >= step.layout.num_prefix:
        r, c = divmod(step.query - step.layout.num_prefix, gw)
        ax.add_patch(Rectangle((c * cw, r * ch), cw, ch, fill=False, edgecolor="#ff2d55", linewidth=4))
    prefix = step.prefix_values(values)
    if prefix:
        extra = "   ".join(f"{n.upper()}: {v:.0f}%" if percent else f"{n.upper()}: {_fmt(v)}"
                           for n, v in prefix.items())
        title = f"{title}\n{extra}" if title else extra
    ax.set_title(title, fontsize=LABEL_SIZE)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.figure.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=TEXT_SIZE - 2)


def scores_picture(step: QueryStep, view: np.ndarray) -> np.ndarray:
    """Step 1: the raw scores ``q · k_j`` of the query against every key."""
    fig = new_figure(7.5, 7.0)
    ax = fig.add_subplot()
    draw_token_values(ax, view, step, step.scores, cmap="coolwarm",
                      title=f"scores q·k  (query: {step.token_name(step.query)})",
                      vmin=-np.abs(step.scores).max(), vmax=np.abs(step.scores).max())
    return figure_to_rgb(fig)


def softmax_picture(step: QueryStep, temperature: float = 1.0) -> np.ndarray:
    """Step 2: scaling by 1/√d and a temperature T, then softmax: every key's weight, sorted, at T
    against the model's own T = 1."""
    order = np.argsort(-step.scores)
    w1 = step.weights_at(1.0)[order]
    wt = step.weights_at(temperature)[order]
    fig = new_figure(9.0, 5.5)
    ax = fig.add_subplot()
    x = np.arange(len(order))
    ax.bar(x, w1, width=1.0, color="#bbbbbb", label="T = 1 (the model)")
    if abs(temperature - 1.0) > 1e-9:
        ax.step(x, wt, where="mid", color="#d62728", linewidth=3, label=f"T = {temperature:g}")
    ax.set_xlabel("keys, sorted by score q·k (highest first)", fontsize=LABEL_SIZE)
    ax.set_ylabel("attention weight", fontsize=LABEL_SIZE)
    ax.tick_params(labelsize=TEXT_SIZE)
    ax.legend(fontsize=TEXT_SIZE)
    ax.set_title(f"softmax(q·k / √d / T),  √d = {step.sqrt_d:.3g},  T = {temperature:g}\n"
                 f"top weight {wt.max():.3f} · entropy {entropy_bits(wt):.2f} of {np.log2(len(wt)):.2f} bits",
                 fontsize=LABEL_SIZE)
    return figure_to_rgb(fig)


def weights_picture(step: QueryStep, view: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Step 3: the attention weights as a map (percent); at T = 1 exactly the captured row."""
    w = step.weights_at(temperature)
    fig = new_figure(7.5, 7.0)
    ax = fig.add_subplot()
    label = "the model's attention (captured)" if abs(temperature - 1.0) < 1e-9 else f"weights at T = {temperature:g}"
    draw_token_values(ax, view, step, w, cmap="inferno", title=f"{label}, %", vmin=0.0, percent=True)
    return figure_to_rgb(fig)


def output_picture(step: QueryStep, top: int = 3) -> np.ndarray:
    """Step 4: ``z = Σ_j a_j v_j`` channel by channel, split into the top contributing keys and the rest."""
    contrib = step.top_contributors(top)
    d = step.head_dim
    x = np.arange(d)
    fig = new_figure(9.0, 5.5)
    ax = fig.add_subplot()
    width = 0.8 / (len(contrib) + 2)
    colours = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b"]
    rest = step.output.copy()
    for n, (j, a) in enumerate(contrib):
        part = a * step.v[j]
        rest = rest - part
        ax.bar(x + (n - 1) * width, part, width, color=colours[n % len(colours)],
               label=f"{a:.2f} × v[{step.token_name(j)}]")
    ax.bar(x + len(contrib) * width - width, rest, width, color="#bbbbbb", label="all other keys")
    ax.plot(x, step.output, "k_", markersize=24, markeredgewidth=4, label="z = Σ a_j v_j")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel(f"channel of the head's output (d = {d})", fontsize=LABEL_SIZE)
    ax.tick_params(labelsize=TEXT_SIZE)
    ax.legend(fontsize=TEXT_SIZE - 2, ncol=2)
    ax.set_title(f"the head's output for {step.token_name(step.query)}: weighted sum of the values",
                 fontsize=LABEL_SIZE)
    return figure_to_rgb(fig)


def query_steps_picture(step: QueryStep, view: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """All four steps in one picture (for a slide)."""
    top = stack_pictures([scores_picture(step, view), weights_picture(step, view, temperature)], vertical=False)
    bottom = stack_pictures([softmax_picture(step, temperature), output_picture(step)], vertical=False)
    return stack_pictures([top, bottom])


__all__ = ["draw_token_values", "scores_picture", "softmax_picture", "weights_picture", "output_picture",
           "query_steps_picture"]
