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

from .figure import (LABEL_SIZE, SMALL_SIZE, TEXT_SIZE, Canvas, colorize, nice_ticks, resized, stack_pictures)
from ..i18n import t as tr
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


# ---------------------------------------------------------------------- fast pictures (raster canvas)
MAP_SIZE = 330          # the long side of the patch-grid map, in picture pixels (shown 1:1 at 1280x720)
CHART_SIZE = (440, 400)  # the bar charts (width, height)
_INK = (20, 20, 20)
_QUERY = (255, 45, 85)


def _signed_text(text: str) -> str:
    """A typographic minus, and no "-0.00" (a value that rounds to zero has no sign)."""
    if text.startswith("-") and float(text) == 0.0:
        text = text[1:]
    return text.replace("-", "−")


def _cell_text(v: float, percent: bool, dense: bool, fine: bool = False) -> str:
    if percent:
        return f"{v:.1f}" if fine else f"{v:.0f}"
    if dense:
        return _signed_text(f"{v:.1f}")
    return _signed_text(_fmt(v))


def _cell_texts(c: Canvas, grid: np.ndarray, percent: bool, dense: bool, fine: bool, room: float) -> list:
    """The printed value of every cell, in the most precise format whose widest text fits `room` (cell width
    less a margin): two decimals, else one, else none; the font is never made smaller (it is the minimum)."""
    formats = [lambda v: _cell_text(v, percent, dense, fine)]
    if not percent:
        formats += [lambda v: _signed_text(f"{v:.1f}"), lambda v: _signed_text(f"{v:.0f}")]
    elif fine:
        formats += [lambda v: f"{v:.0f}"]
    for fmt in formats:
        texts = [[fmt(v) for v in row] for row in grid]
        if max(c.text_width(t, 15) for row in texts for t in row) <= room:
            break
    return texts


def token_map_picture(step: QueryStep, view: np.ndarray, values: np.ndarray, *, cmap: str, title: str,
                      vmin: float, vmax: float, percent: bool = False, scale: float = 1.0,
                      alpha: float = 0.6) -> np.ndarray:
    """Per-token `values` (N,) as a patch grid over `view` (what the model saw), with the value printed in
    every cell (up to 10 x 10), the query patch outlined and the prefix tokens' values in the title."""
    vals = 100.0 * np.asarray(values, np.float64) if percent else np.asarray(values, np.float64)
    lo, hi = (100.0 * vmin, 100.0 * vmax) if percent else (vmin, vmax)
    grid = step.patch_grid(vals)
    gh, gw = grid.shape
    H0, W0 = view.shape[:2]
    f = MAP_SIZE / max(H0, W0)
    mw, mh = W0 * f, H0 * f
    prefix = step.prefix_values(vals)
    extra = "   ".join(f"{n.upper()}: {v:.1f}%" if percent else f"{n.upper()}: {_signed_text(_fmt(v))}"
                       for n, v in prefix.items())
    top = 34 + (24 if extra else 0)
    c = Canvas(int(10 + mw + 12 + 18 + 58), int(top + mh + 10), scale)
    c.text((10, 8), title, 17, fill=_INK, bold=True)
    if extra:
        c.text((10, 34), extra.replace("-", "−"), 15, fill=_INK)
    x0, y0 = 10, top
    W, H = c.px(mw), c.px(mh)
    base = resized(view, W, H, smooth=True).astype(np.float64)
    colours = colorize(grid, cmap, lo, hi)
    cells = resized(colours, W, H, smooth=False).astype(np.float64)
    c.paste((base * (1 - alpha) + cells * alpha).round().astype(np.uint8), x0, y0)
    ch, cw = mh / gh, mw / gw
    for r in range(1, gh):
        c.line([(x0, y0 + r * ch), (x0 + mw, y0 + r * ch)], fill=(235, 235, 235))
    for k in range(1, gw):
        c.line([(x0 + k * cw, y0), (x0 + k * cw, y0 + mh)], fill=(235, 235, 235))
    if gh * gw <= ANNOTATE_MAX_CELLS:
        blended = base * (1 - alpha)
        dense = gw > 8
        fine = percent and hi < 10 and not dense      # small weights: one decimal (1.6 %, not 2 %)
        texts = _cell_texts(c, grid, percent, dense, fine, cw - 4)
        for r in range(gh):
            for k in range(gw):
                rgb = colours[r, k] * alpha + blended[min(int((r + 0.5) * H / gh), H - 1),
                                                      min(int((k + 0.5) * W / gw), W - 1)]
                light = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) < 140
                c.text((x0 + (k + 0.5) * cw, y0 + (r + 0.5) * ch), texts[r][k], 15,
                       fill=(255, 255, 255) if light else (0, 0, 0), anchor="mm")
    if step.query >= step.layout.num_prefix:
        r, k = divmod(step.query - step.layout.num_prefix, gw)
        c.rect(x0 + k * cw, y0 + r * ch, x0 + (k + 1) * cw, y0 + (r + 1) * ch, outline=_QUERY, width=4)
    c.colorbar(x0 + mw + 12, y0, 18, mh, cmap, lo, hi,
               fmt=(lambda v: f"{v + 0.0:g}%") if percent else (lambda v: _signed_text(f"{v:g}")))
    return c.to_array()


def scores_picture(step: QueryStep, view: np.ndarray, scale: float = 1.0, lang: str = "en") -> np.ndarray:
    """Step 1: the raw scores ``q · k_j`` of the query against every key."""
    m = float(np.abs(step.scores).max()) or 1.0
    return token_map_picture(step, view, step.scores, cmap="coolwarm", vmin=-m, vmax=m, scale=scale,
                             title=tr("query.scores_title", lang, query=step.token_name(step.query, lang)))


def weights_picture(step: QueryStep, view: np.ndarray, temperature: float = 1.0, scale: float = 1.0,
                    lang: str = "en") -> np.ndarray:
    """Step 3: the attention weights as a map (percent); at T = 1 exactly the captured row."""
    w = step.weights_at(temperature)
    label = (tr("query.weights_model", lang) if abs(temperature - 1.0) < 1e-9
             else tr("query.weights_T", lang, T=temperature))
    return token_map_picture(step, view, w, cmap="inferno", title=tr("query.weights_title", lang, label=label), vmin=0.0, vmax=float(w.max()),
                             percent=True, scale=scale)


class _Plot:
    """A plot area on a canvas: data -> picture coordinates, axes, ticks, labels."""

    def __init__(self, c: Canvas, box, xlim, ylim):
        self.c, (self.x0, self.y0, self.x1, self.y1) = c, box
        self.xlim, self.ylim = xlim, ylim

    def x(self, v):
        a, b = self.xlim
        return self.x0 + (v - a) / max(b - a, 1e-12) * (self.x1 - self.x0)

    def y(self, v):
        a, b = self.ylim
        return self.y1 - (v - a) / max(b - a, 1e-12) * (self.y1 - self.y0)

    def axes(self, yfmt, xlabel: str, ylabel: str = "") -> None:
        c = self.c
        for v in nice_ticks(*self.ylim, 4):
            ty = self.y(v)
            c.line([(self.x0, ty), (self.x1, ty)], fill=(232, 232, 232))
            c.text((self.x0 - 6, ty), yfmt(v), 15, anchor="rm")
        c.line([(self.x0, self.y0), (self.x0, self.y1), (self.x1, self.y1)], fill=(60, 60, 60), width=1.5)
        if self.ylim[0] < 0 < self.ylim[1]:
            c.line([(self.x0, self.y(0)), (self.x1, self.y(0))], fill=(0, 0, 0), width=1)
        c.text(((self.x0 + self.x1) / 2, self.y1 + 26), xlabel, 15, anchor="ma")
        if ylabel:
            c.text((self.x0, self.y0 - 8), ylabel, 15, anchor="ld")


def _legend(c: Canvas, x: float, y: float, items, width: float) -> float:
    """Legend entries (colour, text) in rows from (x, y) within `width`; returns the bottom."""
    cx, cy = x, y
    for colour, text in items:
        w = 22 + c.text_width(text, 15) + 18
        if cx + w > x + width and cx > x:
            cx, cy = x, cy + 24
        c.rect(cx, cy + 3, cx + 16, cy + 17, fill=colour)
        c.text((cx + 22, cy + 10), text, 15, anchor="lm")
        cx += w
    return cy + 24


def softmax_picture(step: QueryStep, temperature: float = 1.0, scale: float = 1.0, lang: str = "en") -> np.ndarray:
    """Step 2: scaling by 1/√d and a temperature T, then softmax: every key's weight, sorted by score, at T
    against the model's own T = 1 (grey bars)."""
    order = np.argsort(-step.scores)
    w1 = step.weights_at(1.0)[order]
    wt = step.weights_at(temperature)[order]
    changed = abs(temperature - 1.0) > 1e-9
    W, Hh = CHART_SIZE
    c = Canvas(W, Hh, scale)
    c.text((12, 8), f"softmax(q·k / √d / T),  T = {temperature:g}", 17, fill=_INK, bold=True)
    c.text((12, 34), tr("query.softmax_sub", lang, sqrt_d=step.sqrt_d, top=wt.max(), H=entropy_bits(wt),
                        Hmax=np.log2(len(wt))), 15, fill=_INK)
    items = [((170, 170, 170), tr("query.legend_model", lang))] + (
        [((214, 39, 40), f"T = {temperature:g}")] if changed else [])
    bottom = _legend(c, 70, 60, items, W - 90)
    top = max(w1.max(), wt.max()) * 1.05
    p = _Plot(c, (70, bottom + 22, W - 16, Hh - 58), (0, len(order)), (0.0, float(top)))
    p.axes(lambda v: _signed_text(f"{v:.2f}"), tr("query.softmax_x", lang), tr("query.softmax_y", lang))
    n = len(order)
    for j in range(n):
        c.rect(p.x(j), p.y(w1[j]), max(p.x(j + 1) - (1 if n < 80 else 0), p.x(j) + 1), p.y(0), fill=(170, 170, 170))
    if changed:
        pts = []
        for j in range(n):
            pts += [(p.x(j), p.y(wt[j])), (p.x(j + 1), p.y(wt[j]))]
        c.line(pts, fill=(214, 39, 40), width=3)
    return c.to_array()


def output_picture(step: QueryStep, top: int = 3, scale: float = 1.0, lang: str = "en") -> np.ndarray:
    """Step 4: ``z = Σ_j a_j v_j`` channel by channel, split into the top contributing keys and the rest
    (bars side by side per channel; the black tick is z)."""
    contrib = step.top_contributors(top)
    d = step.head_dim
    colours = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (148, 103, 189), (140, 86, 75)]
    parts, rest = [], step.output.astype(np.float64).copy()
    for j, a in contrib:
        part = a * step.v[j]
        rest = rest - part
        parts.append(part)
    parts.append(rest)
    W, Hh = CHART_SIZE
    c = Canvas(W, Hh, scale)
    c.text((12, 8), tr("query.output_title", lang, query=step.token_name(step.query, lang)), 17, fill=_INK, bold=True)
    items = [(colours[n % len(colours)], f"{a:.2f} × v[{step.token_name(j, lang)}]")
             for n, (j, a) in enumerate(contrib)]
    items += [((170, 170, 170), tr("query.output_rest", lang)), ((0, 0, 0), "z")]
    bottom = _legend(c, 12, 36, items, W - 24)
    allv = np.concatenate([np.stack(parts).ravel(), step.output.ravel()])
    lo, hi = float(min(allv.min(), 0)), float(max(allv.max(), 0))
    pad = 0.06 * (hi - lo or 1.0)
    p = _Plot(c, (70, bottom + 14, W - 16, Hh - 58), (0, d), (lo - pad, hi + pad))
    p.axes(lambda v: _signed_text(f"{v:.2g}"), tr("query.output_x", lang, d=d))
    nb = len(parts)
    for ch in range(d):
        gx0 = p.x(ch + 0.1)
        bw = (p.x(ch + 0.9) - gx0) / nb
        for n, part in enumerate(parts):
            colour = colours[n % len(colours)] if n < len(contrib) else (170, 170, 170)
            y0, y1 = sorted((p.y(part[ch]), p.y(0)))
            c.rect(gx0 + n * bw, y0, gx0 + (n + 1) * bw, max(y1, y0 + 1), fill=colour)
        zy = p.y(step.output[ch])
        c.line([(p.x(ch + 0.05), zy), (p.x(ch + 0.95), zy)], fill=(0, 0, 0), width=3)
    if d <= 32:
        for ch in range(0, d, 1 if d <= 16 else 4):
            c.text((p.x(ch + 0.5), p.y1 + 4), str(ch), 15, anchor="ma")
    return c.to_array()


def query_steps_picture(step: QueryStep, view: np.ndarray, temperature: float = 1.0, scale: float = 1.0,
                        lang: str = "en") -> np.ndarray:
    """All four steps in one picture (for a slide)."""
    top = stack_pictures([scores_picture(step, view, scale, lang),
                          weights_picture(step, view, temperature, scale, lang)], vertical=False)
    bottom = stack_pictures([softmax_picture(step, temperature, scale, lang),
                             output_picture(step, scale=scale, lang=lang)], vertical=False)
    return stack_pictures([top, bottom])


__all__ = ["draw_token_values", "token_map_picture", "scores_picture", "softmax_picture", "weights_picture", "output_picture",
           "query_steps_picture"]
