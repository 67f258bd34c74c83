"""Matplotlib figures as RGB pictures, for the lesson steps (projected in class: large fonts).

Only the object-oriented API is used (``matplotlib.figure.Figure`` + the Agg canvas), never pyplot:
it is thread-safe and leaves no global state, so concurrent app requests cannot draw on each
other's figures.

- `new_figure(width, height)`: a `Figure` in inches at `DPI`, constrained layout.
- `figure_to_rgb(fig)`: render it to an (H, W, 3) uint8 array.
- `message_picture(text)`: a picture that only says something (a step is not defined for a model).
- `stack_pictures(pictures)`: several pictures one above the other (or side by side).
"""
from __future__ import annotations

import textwrap
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

DPI = 100
TITLE_SIZE = 22     # figure titles
LABEL_SIZE = 18     # axis titles and labels
TEXT_SIZE = 16      # annotations, tick labels
SMALL_SIZE = 13     # dense annotations (numbers in cells)
BACKGROUND = (255, 255, 255)


def new_figure(width: float, height: float, constrained: bool = True) -> Figure:
    """A figure of `width` x `height` inches (at `DPI`), not attached to pyplot."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained" if constrained else None)


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Render `fig` with the Agg backend and return its pixels as an (H, W, 3) uint8 array."""
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3]).copy()


def message_picture(text: str, width: float = 10.0, height: float = 3.0, title: str = "") -> np.ndarray:
    """An RGB picture that shows only `text` (wrapped), for a step that is not defined for a model."""
    fig = new_figure(width, height)
    ax = fig.add_subplot()
    ax.set_axis_off()
    wrapped = "\n".join(textwrap.fill(p, width=int(width * 6.5)) for p in str(text).split("\n"))
    ax.text(0.5, 0.5, wrapped, ha="center", va="center", fontsize=LABEL_SIZE, transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=TITLE_SIZE)
    return figure_to_rgb(fig)


def stack_pictures(pictures: Sequence[np.ndarray], vertical: bool = True, gap: int = 16) -> np.ndarray:
    """Place RGB pictures one below the other (``vertical``) or side by side, centred, on white."""
    pics = [np.asarray(p, dtype=np.uint8) for p in pictures if p is not None]
    if not pics:
        raise ValueError("no pictures to stack")
    if vertical:
        W = max(p.shape[1] for p in pics)
        H = sum(p.shape[0] for p in pics) + gap * (len(pics) - 1)
    else:
        H = max(p.shape[0] for p in pics)
        W = sum(p.shape[1] for p in pics) + gap * (len(pics) - 1)
    out = np.empty((H, W, 3), dtype=np.uint8)
    out[...] = BACKGROUND
    pos = 0
    for p in pics:
        h, w = p.shape[:2]
        if vertical:
            left = (W - w) // 2
            out[pos:pos + h, left:left + w] = p[..., :3]
            pos += h + gap
        else:
            top = (H - h) // 2
            out[top:top + h, pos:pos + w] = p[..., :3]
            pos += w + gap
    return out


__all__ = ["DPI", "TITLE_SIZE", "LABEL_SIZE", "TEXT_SIZE", "SMALL_SIZE", "new_figure", "figure_to_rgb",
           "message_picture", "stack_pictures"]
