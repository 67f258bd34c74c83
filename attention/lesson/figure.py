"""Matplotlib figures as RGB pictures, for the lesson steps (projected in class: large fonts).

Only the object-oriented API is used (``matplotlib.figure.Figure`` + the Agg canvas), never pyplot:
it is thread-safe and leaves no global state, so concurrent app requests cannot draw on each
other's figures.

- `new_figure(width, height)`: a `Figure` in inches at `DPI`, constrained layout.
- `px_figure(width, height)`, `px_canvas(width, height)`, `pt(px, scale)`, `wrap_px(text, width, px)`: figures
  sized in pixels with fonts set in pixels: each lesson figure is drawn at about the size the lesson shows it at
  1280×720 (its box), so a font of N px in it reaches the screen at N px; its smallest text is `FIG_TEXT_PX`
  (x `PRESENTER_SCALE` in presenter mode, drawn larger for a larger box). `smallest_text_px(fig)` checks it.
- `figure_to_rgb(fig)`: render it to an (H, W, 3) uint8 array.
- `message_picture(text)`: a picture that only says something (a step is not defined for a model).
- `stack_pictures(pictures)`: several pictures one above the other (or side by side).
- `Canvas`: direct raster drawing (PIL, DejaVu Sans) for the pictures that follow every click: a
  matplotlib figure costs 150-900 ms to lay out and render, a canvas of the same picture 5-20 ms.
  Text is set in pixels, never below `MIN_TEXT_PX` (readable from the back of a classroom when the
  picture is shown at its own size, which the lesson's layout does at 1280×720); presenter mode draws
  at `PRESENTER_SCALE` (text ≥ 20 px).
"""
from __future__ import annotations

import functools
from typing import Optional, Sequence

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


# fonts of the lesson figures in pixels (at scale 1: the 1280×720 layout; presenter mode multiplies them)
FIG_TEXT_PX = 15      # the smallest: tick labels, notes, numbers in cells
FIG_LABEL_PX = 16     # axis labels, panel titles
FIG_TITLE_PX = 18     # figure titles
BUTTONS_PX = 64       # Gradio's download and full-screen buttons over a picture's top-right corner (CSS px, about
                      # 26 high): the first line of a title is left-aligned and stops short of them


def pt(px: float, scale: float = 1.0) -> float:
    """The matplotlib font size (points) of text `px` x `scale` pixels high in a figure at `DPI`."""
    return px * scale * 72.0 / DPI


def px_figure(width: float, height: float, constrained: bool = True) -> Figure:
    """A figure of `width` x `height` pixels (rounded)."""
    return new_figure(round(width) / DPI, round(height) / DPI, constrained)


def fit_size(base: tuple[float, float], scale: float, cap: tuple[float, float]) -> tuple[int, int]:
    """(width, height) px of a lesson figure: its 1280×720 box `base` x `scale`, within `cap` (its box in
    presenter mode, which is not PRESENTER_SCALE x larger everywhere)."""
    return int(min(base[0] * scale, cap[0])), int(min(base[1] * scale, cap[1]))


def px_canvas(width: float, height: float):
    """(figure, axes) of `width` x `height` pixels whose one axes covers it in pixel coordinates (x right, y
    down): for pictures laid out by hand (pass ``aspect="auto"`` to imshow)."""
    fig = px_figure(width, height, constrained=False)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_xlim(0, round(width))
    ax.set_ylim(round(height), 0)
    ax.set_autoscale_on(False)
    ax.set_axis_off()
    return fig, ax


def _tokens(para: str) -> list[tuple[str, bool]]:
    """`para` as (word, space before it) pairs: words split at spaces, and every CJK character its own word
    (Chinese has no spaces: a line may break between any two characters, but not before closing punctuation)."""
    from ..i18n.fonts import is_cjk_char
    out, space, word = [], False, ""
    for ch in para:
        if ch == " ":
            if word:
                out.append((word, space))
                word = ""
            space = True
        elif is_cjk_char(ch):
            if word and not (ch in _NO_BREAK_BEFORE):
                out.append((word, space))
                word, space = "", False
            word += ch
            if ch not in _NO_BREAK_AFTER:
                out.append((word, space))
                word, space = "", False
        else:
            if word and is_cjk_char(word[-1]) and word[-1] not in _NO_BREAK_AFTER:
                out.append((word, space))
                word, space = "", False
            word += ch
    if word or not out:
        out.append((word, space))
    return out


_NO_BREAK_BEFORE = "，。、；：！？）】》」』”’%"
_NO_BREAK_AFTER = "（【《「『“‘"


def text_width(text: str, px: float, bold: bool = False) -> float:
    """Width in pixels of one line of `text` at `px` as matplotlib draws it: DejaVu Sans, and Noto Sans SC for
    the characters DejaVu lacks (matplotlib's per-glyph fallback, `attention.i18n.fonts.MPL_FAMILY`)."""
    from ..i18n.fonts import needs_cjk
    text = str(text)
    if not needs_cjk(text):
        return font(int(round(px)), bold).getlength(text)
    latin, cjk = font(int(round(px)), bold), cjk_font(int(round(px)))
    from ..i18n.fonts import is_cjk_char
    return float(sum((cjk if is_cjk_char(ch) else latin).getlength(ch) for ch in text))


def wrap_px(text: str, width: float, px: float, bold: bool = False, first: Optional[float] = None) -> str:
    """`text` broken at spaces (and between Chinese characters) so that no line is wider than `width` pixels at
    `px` (as matplotlib draws it), the first one not wider than `first` (clear of the buttons: `BUTTONS_PX`);
    existing line breaks are kept."""
    from ..i18n.fonts import needs_cjk
    lines = []
    for para in str(text).split("\n"):
        line = ""
        # no Chinese: split at every space exactly as always (English pictures stay as they were)
        words = _tokens(para) if needs_cjk(para) else [(w, i > 0) for i, w in enumerate(para.split(" "))]
        for word, space in words:
            trial = (f"{line} {word}" if space else line + word) if line else word
            if line and text_width(trial, px, bold) > (width if lines or first is None else min(width, first)):
                lines.append(line)
                line = word
            else:
                line = trial
        lines.append(line)
    return "\n".join(lines)


def smallest_text_px(fig: Figure) -> float:
    """The smallest font (pixels) among the texts `fig` draws, tick labels included (draw it first: matplotlib
    makes the tick labels when drawing); an axis switched off draws none of its own."""
    from matplotlib.text import Text
    hidden = set()
    for ax in fig.get_axes():
        if not ax.axison:
            for axis in (ax.xaxis, ax.yaxis):
                hidden.update(id(t) for t in axis.findobj(Text))
    sizes = [t.get_fontsize() * DPI / 72.0 for t in fig.findobj(Text)
             if id(t) not in hidden and t.get_visible() and t.get_text().strip()]
    return float(min(sizes)) if sizes else float("inf")


def localize_fonts(fig: Figure) -> None:
    """Every text of `fig` with Chinese characters in it draws with DejaVu Sans falling back to Noto Sans SC
    (registered by path, never a system font); texts without them are left as they are (English pictures do not
    change)."""
    from matplotlib.text import Text

    from ..i18n.fonts import MPL_FAMILY, needs_cjk, register_cjk_font
    texts = [t for t in fig.findobj(Text) if needs_cjk(t.get_text())]
    if texts:
        register_cjk_font()
        for t in texts:
            t.set_fontfamily(MPL_FAMILY)
            t.set_fontweight("normal")     # Noto Sans SC comes in one weight: a bold Chinese text would be drawn
            #                                regular anyway, beside bold Latin letters


def figure_to_rgb(fig: Figure) -> np.ndarray:
    """Render `fig` with the Agg backend and return its pixels as an (H, W, 3) uint8 array."""
    localize_fonts(fig)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3]).copy()


def message_picture(text: str, width: float = 3.0, height: float = 2.0, title: str = "",
                    scale: float = 1.0) -> np.ndarray:
    """An RGB picture that shows only `text` (wrapped), for a step that is not defined for a model; `width`
    and `height` in inches (the height grows to fit the text). The lesson may show it in a box as narrow as
    300 px: its text is sized to stay >= FIG_LABEL_PX x `scale` there."""
    W = width * DPI
    px = FIG_LABEL_PX * scale * max(1.0, W / 300.0)
    wrapped = wrap_px(str(text), W - px, px)
    title_px = px * FIG_TITLE_PX / FIG_LABEL_PX
    need = (wrapped.count("\n") + 1) * px * 1.3 + (2 * title_px if title else 0) + 2 * px
    fig = new_figure(width, max(height, need / DPI))
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.text(0.5, 0.5, wrapped, ha="center", va="center", fontsize=pt(px), transform=ax.transAxes)
    if title:
        fig.suptitle(title, fontsize=pt(title_px))
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


# ---------------------------------------------------------------------- raster canvas (fast pictures)
MIN_TEXT_PX = 15          # the smallest text a canvas draws, in picture pixels
PRESENTER_SCALE = 1.4     # presenter mode: every length and font x 1.4 (15 px -> 21 px)


@functools.lru_cache(maxsize=None)
def _font_path(bold: bool = False) -> str:
    from matplotlib import font_manager
    return font_manager.findfont(font_manager.FontProperties(family="DejaVu Sans",
                                                             weight="bold" if bold else "normal"))


@functools.lru_cache(maxsize=64)
def font(px: int, bold: bool = False):
    """DejaVu Sans (shipped with matplotlib: no system font needed) at `px` pixels."""
    from PIL import ImageFont
    return ImageFont.truetype(_font_path(bold), max(int(px), 1))


@functools.lru_cache(maxsize=64)
def cjk_font(px: int):
    """Noto Sans SC (the font package's file, `attention.i18n.fonts`) at `px` pixels."""
    from PIL import ImageFont

    from ..i18n.fonts import cjk_font_path
    return ImageFont.truetype(cjk_font_path(), max(int(px), 1))


def font_for(text: str, px: int, bold: bool = False):
    """The PIL font a canvas draws `text` with: DejaVu Sans, or Noto Sans SC for a text with Chinese in it (PIL
    has no per-glyph fallback; Noto Sans SC has the Latin letters and signs the lesson uses as well)."""
    from ..i18n.fonts import needs_cjk
    return cjk_font(px) if needs_cjk(text) else font(px, bold)


@functools.lru_cache(maxsize=32)
def _lut(cmap: str) -> np.ndarray:
    import matplotlib
    return (np.asarray(matplotlib.colormaps[cmap](np.linspace(0.0, 1.0, 256)))[:, :3] * 255).round().astype(np.uint8)


def colorize(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """Values -> RGB uint8 through a matplotlib colormap (its 256-entry table; no figure)."""
    t = (np.asarray(values, np.float64) - vmin) / max(vmax - vmin, 1e-12)
    return _lut(cmap)[np.clip(np.round(t * 255), 0, 255).astype(np.int64)]


def nice_ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About `n` round tick values covering [lo, hi]."""
    if not np.isfinite(lo) or not np.isfinite(hi) or hi <= lo:
        return [float(lo)]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** np.floor(np.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = np.ceil(lo / step - 1e-9) * step
    return [float(v) for v in np.arange(first, hi + step * 1e-6, step)]


class Canvas:
    """A white RGB picture drawn with PIL; every length is multiplied by `scale` (presenter mode)."""

    def __init__(self, width: int, height: int, scale: float = 1.0):
        from PIL import Image, ImageDraw
        self.scale = float(scale)
        self.image = Image.new("RGB", (self.px(width), self.px(height)), BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)

    def px(self, v: float) -> int:
        return int(round(v * self.scale))

    def font(self, size: float, bold: bool = False, text: str = ""):
        return font_for(text, max(self.px(size), self.px(MIN_TEXT_PX)), bold)

    def text(self, xy, s: str, size: float = MIN_TEXT_PX, fill=(0, 0, 0), anchor: str = "la", bold: bool = False,
             align: str = "left") -> None:
        x, y = xy
        self.draw.multiline_text((self.px(x), self.px(y)), s, font=self.font(size, bold, s), fill=fill,
                                 anchor=anchor, align=align, spacing=self.px(3))

    def text_width(self, s: str, size: float = MIN_TEXT_PX, bold: bool = False) -> float:
        """Width of `s` in unscaled units."""
        return self.draw.textlength(s, font=self.font(size, bold, s)) / self.scale

    def rect(self, x0, y0, x1, y1, fill=None, outline=None, width: float = 1) -> None:
        (a, b), (c, d) = sorted((self.px(x0), self.px(x1))), sorted((self.px(y0), self.px(y1)))
        self.draw.rectangle([a, c, max(a, b - 1), max(c, d - 1)], fill=fill, outline=outline,
                            width=max(1, self.px(width)))

    def line(self, points, fill=(0, 0, 0), width: float = 1) -> None:
        self.draw.line([(self.px(x), self.px(y)) for x, y in points], fill=fill, width=max(1, self.px(width)))

    def paste(self, rgb: np.ndarray, x: float, y: float) -> None:
        from PIL import Image
        self.image.paste(Image.fromarray(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8)),
                         (self.px(x), self.px(y)))

    def colorbar(self, x: float, y: float, w: float, h: float, cmap: str, vmin: float, vmax: float,
                 fmt=lambda v: f"{v:g}", size: float = MIN_TEXT_PX) -> None:
        """A vertical colour scale at (x, y) of w x h with tick labels on its right."""
        H = max(self.px(h), 2)
        ramp = colorize(np.linspace(vmax, vmin, H), cmap, vmin, vmax)
        self.paste(np.repeat(ramp[:, None, :], max(self.px(w), 1), axis=1), x, y)
        self.rect(x, y, x + w, y + h, outline=(80, 80, 80))
        for v in nice_ticks(vmin, vmax, 4):
            ty = y + h * (vmax - v) / max(vmax - vmin, 1e-12)
            self.line([(x + w, ty), (x + w + 4, ty)], fill=(60, 60, 60))
            self.text((x + w + 7, ty), fmt(v), size, anchor="lm")

    def to_array(self) -> np.ndarray:
        return np.asarray(self.image, dtype=np.uint8).copy()


def resized(view: np.ndarray, width: int, height: int, smooth: bool = True) -> np.ndarray:
    """`view` resized to width x height (bilinear, or nearest for a blocky patch grid)."""
    import cv2
    return cv2.resize(np.ascontiguousarray(view[..., :3]), (max(int(width), 1), max(int(height), 1)),
                      interpolation=cv2.INTER_LINEAR if smooth else cv2.INTER_NEAREST)


__all__ = ["DPI", "TITLE_SIZE", "LABEL_SIZE", "TEXT_SIZE", "SMALL_SIZE", "FIG_TEXT_PX", "FIG_LABEL_PX", "FIG_TITLE_PX",
           "BUTTONS_PX", "pt", "px_figure", "px_canvas", "fit_size", "wrap_px", "text_width", "localize_fonts", "cjk_font",
           "font_for", "smallest_text_px", "new_figure",
           "figure_to_rgb",
           "message_picture", "stack_pictures", "MIN_TEXT_PX", "PRESENTER_SCALE", "Canvas", "font", "colorize",
           "nice_ticks", "resized"]
