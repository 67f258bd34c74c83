"""Lesson step "From image to tokens": patches, the token sequence and the position embeddings.

What a ViT does before its first attention layer, shown with the model's own numbers:

1. the (preprocessed) model input is cut into a ``gh x gw`` grid of ``p x p`` patches, numbered row
   by row (`TokenSequence.patch_box`);
2. each patch becomes one token; the prefix tokens (CLS, DIST, registers: learned vectors that do not
   come from the image) are put first, then the patch tokens in row-major order - the order the
   model really uses (`attention.layout`);
3. a position embedding is added. For a learned absolute embedding (timm ``pos_embed``, torchvision
   ``encoder.pos_embedding``, `TorchViT.pos_embed`) `position_similarity` gives the cosine similarity
   of every patch's position vector with every other one's, which `position_picture` draws as the
   ViT paper's Fig. 7 (left): a ``gh x gw`` mosaic of small ``gh x gw`` maps. A model whose positions
   enter otherwise (rotary embeddings, relative position bias, convolutions) gets a
   `MethodNotDefinedError` that says so.

Supported: timm's ViT family (ViT, DeiT incl. distilled, register ViTs, EVA/BEiT for the token
sequence), torchvision's ViT, and the demo ViTs (``demo-vit``, ``demo-torch-vit``). A CNN with a
self-attention layer (``demo-cnn-selfattn``) has no token sequence: it is refused with a message.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
import torch
from matplotlib import patheffects
from matplotlib.patches import FancyBboxPatch, Rectangle
from torch import nn

from ..families import PositionEmbedding, family_of, model_tokens
from ..i18n import t as tr
from ..errors import MethodNotDefinedError
from ..layout import TokenLayout
from ..preprocess import PreparedImage
from ..render.grid import view_thumbnail
from .figure import (BUTTONS_PX, FIG_LABEL_PX, FIG_TEXT_PX, FIG_TITLE_PX, figure_to_rgb, fit_size, font, px_canvas, pt,
                     text_width, wrap_px)

# colours of the token kinds (also used by the special-tokens step)
TOKEN_COLORS = {"cls": "#d62728", "dist": "#9467bd", "reg": "#2ca02c", "tok": "#8c564b", "patch": "#1f77b4"}
POSITION_COLOR = "#ffd966"

ImageLike = Union[PreparedImage, torch.Tensor, np.ndarray, tuple]


def display_name(name: str) -> str:
    """Name of a prefix token as shown to the class: "cls" -> "CLS", "reg0" -> "REG0"."""
    return name.upper()


def patch_name(row: int, col: int) -> str:
    return f"p({row},{col})"


def token_color(name: str) -> str:
    """Colour of a token kind: CLS red, DIST purple, registers green, patches blue."""
    n = name.lower()
    for k in ("cls", "dist", "reg", "tok"):
        if n.startswith(k):
            return TOKEN_COLORS[k]
    return TOKEN_COLORS["patch"]


# --------------------------------------------------------------------------- position embedding

def position_embedding(model: nn.Module) -> Optional[PositionEmbedding]:
    """The absolute position embedding of `model` as its family descriptor knows it, or None."""
    return family_of(model).position_embedding(model)


def _relative_position_kind(model: nn.Module, lang: str = "en") -> Optional[str]:
    for m in model.modules():
        if getattr(m, "rope", None) is not None or "Rope" in type(m).__name__:
            return tr("tokens.rel_rope", lang)
        if hasattr(m, "relative_position_bias_table") or hasattr(m, "rel_pos"):
            return tr("tokens.rel_bias", lang)
    return None


def position_note(model: nn.Module, prefix_names: Sequence[str] = (), lang: str = "en") -> str:
    """One sentence on how token positions enter `model` (for the lesson's text), in `lang`."""
    pe = position_embedding(model)
    rel = _relative_position_kind(model, lang)
    if pe is None:
        if rel:
            return tr("tokens.pos_none_rel", lang, rel=rel)
        return tr("tokens.pos_none", lang)
    kind = tr("tokens.pos_learned" if pe.learned else "tokens.pos_fixed", lang)
    also = tr("tokens.pos_also", lang, rel=rel) if rel else ""
    P = len(prefix_names)
    names = ", ".join(display_name(n) for n in prefix_names)
    if P == 0:
        key = "tokens.pos_added_patches"
    elif pe.num_prefix_positions >= P:
        key = "tokens.pos_added_all"
    elif pe.num_prefix_positions == 0:
        key = "tokens.pos_added_patches_only"
    else:
        key = "tokens.pos_added_some"
    return tr(key, lang, kind=kind, source=pe.source, names=names, k=pe.num_prefix_positions) + also


# --------------------------------------------------------------------------- token sequence

@dataclass(frozen=True)
class TokenSequence:
    """The token sequence a model builds for one input size, in the model's own order."""

    names: tuple[str, ...]           # "CLS", "DIST", "REG0", ..., then "p(r,c)" row by row
    layout: TokenLayout              # prefix names (lower case) + patch grid + stride (input px / patch)
    input_hw: tuple[int, int]        # model input (H, W) in pixels
    prefix_positions: int            # how many prefix tokens get a position embedding added
    patch_positions: bool            # whether the patch tokens get an absolute position embedding
    position: str                    # one sentence: how positions enter the model
    note: str = ""                   # anything else the class should know (e.g. Swin merges tokens later)

    @property
    def num_prefix(self) -> int:
        return self.layout.num_prefix

    @property
    def grid(self) -> tuple[int, int]:
        return self.layout.grid

    @property
    def num_patches(self) -> int:
        return self.layout.num_patches

    @property
    def num_tokens(self) -> int:
        return self.layout.num_tokens

    @property
    def prefix_names(self) -> tuple[str, ...]:
        return self.names[: self.num_prefix]

    def patch_box(self, row: int, col: int) -> tuple[float, float, float, float]:
        """(top, left, bottom, right) in model-input pixels of patch (row, col)."""
        self.layout.patch_index(row, col)  # bounds check
        sy, sx = self.layout.stride
        return (row * sy, col * sx, (row + 1) * sy, (col + 1) * sx)

    def has_position(self, index: int) -> bool:
        """Whether token `index` of the sequence gets an absolute position embedding added."""
        if index >= self.num_prefix:
            return self.patch_positions
        return index < self.prefix_positions

    def summary(self, lang: str = "en") -> str:
        """"N tokens = 1 CLS + 196 patches (14x14, row by row)", in `lang`."""
        kinds = []
        pn = self.layout.prefix_names
        for key, pred in (("tokens.sum_cls", lambda n: n == "cls"), ("tokens.sum_dist", lambda n: n == "dist"),
                          ("tokens.sum_reg", lambda n: n.startswith("reg")),
                          ("tokens.sum_other", lambda n: n.startswith("tok"))):
            k = sum(1 for n in pn if pred(n))
            if k:
                kinds.append(tr("tokens.sum_regs" if k > 1 and key == "tokens.sum_reg" else key, lang, k=k))
        gh, gw = self.grid
        kinds.append(tr("tokens.sum_patches", lang, n=self.num_patches, gh=gh, gw=gw))
        return tr("tokens.sum_total", lang, n=self.num_tokens, parts=" + ".join(kinds))


def _input_hw(image: ImageLike) -> tuple[int, int]:
    if isinstance(image, PreparedImage):
        return tuple(int(v) for v in image.tensor.shape[-2:])
    if isinstance(image, torch.Tensor):
        return tuple(int(v) for v in image.shape[-2:])
    if isinstance(image, np.ndarray):
        return tuple(int(v) for v in image.shape[:2])
    return int(image[0]), int(image[1])


def token_sequence(model: nn.Module, image: ImageLike, lang: str = "en") -> TokenSequence:
    """The ordered tokens `model` builds for `image` (a PreparedImage, an input tensor or an (H, W)); its
    sentences (`TokenSequence.position`, `.note`) in `lang`.

    Raises MethodNotDefinedError for models that do not cut the input into patch tokens.
    """
    hw = _input_hw(image)
    t = model_tokens(model, hw)
    if t.grid is None or t.grid[0] * t.grid[1] == 0:
        raise MethodNotDefinedError(tr("tokens.not_vit", lang, model=type(model).__name__))
    layout = t.layout()
    gh, gw = layout.grid
    names = tuple(display_name(n) for n in layout.prefix_names) + tuple(
        patch_name(r, c) for r in range(gh) for c in range(gw))
    pe = position_embedding(model)
    note = ""
    if any("PatchMerging" in type(m).__name__ for m in model.modules()):
        note = tr("tokens.note_merging", lang)
    return TokenSequence(names, layout, hw, 0 if pe is None else min(pe.num_prefix_positions, layout.num_prefix),
                         pe is not None, position_note(model, layout.prefix_names, lang), note)


def model_input_image(image: ImageLike, mean: Optional[Sequence[float]] = None,
                      std: Optional[Sequence[float]] = None) -> np.ndarray:
    """(H, W, 3) uint8 picture of what the model is fed.

    With ``mean`` / ``std`` (the preprocessing's normalisation) the input tensor is de-normalised: the
    exact pixels of the model input. Without them, a `PreparedImage`'s photo is cut to the box the
    input covers (`Geometry`) and resized to the input size (same area, the photo's own colours).
    """
    if isinstance(image, np.ndarray):
        a = np.asarray(image)
        if a.ndim != 3 or a.shape[2] < 3:
            raise ValueError(f"expected an (H, W, 3) picture, got shape {a.shape}")
        return np.ascontiguousarray(a[..., :3]).astype(np.uint8)
    x = image.tensor if isinstance(image, PreparedImage) else image
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"expected a PreparedImage, an input tensor or a picture, got {type(image).__name__}")
    x = x.detach().float().cpu()
    x = x[0] if x.dim() == 4 else x
    if mean is not None and std is not None:
        m = torch.tensor(list(mean), dtype=torch.float32).view(-1, 1, 1)
        s = torch.tensor(list(std), dtype=torch.float32).view(-1, 1, 1)
        rgb = (x * s + m).clamp(0, 1)
        return (rgb.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)
    H, W = x.shape[-2:]
    if isinstance(image, PreparedImage):
        return view_thumbnail(image.image, image.geometry, (int(H), int(W)))
    lo, hi = float(x.min()), float(x.max())  # a bare tensor: stretch to [0, 1] for display only
    rgb = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    return (rgb.permute(1, 2, 0).numpy() * 255.0 + 0.5).astype(np.uint8)


def _shown_tokens(seq: TokenSequence, max_boxes: int) -> list[Optional[int]]:
    """Indices of the tokens drawn in the strip, at most `max_boxes` of them (None: an ellipsis, not counted):
    the prefix tokens, the first patches and the last one."""
    P, N = seq.num_prefix, seq.num_patches
    if P + N <= max_boxes:
        return list(range(P + N))
    first = max_boxes - P - 1
    if first >= 1:
        return list(range(P + first)) + [None, P + N - 1]
    prefix = list(range(P)) if P <= 2 else [0, None, P - 1]      # many registers: the first and the last
    return prefix + [P, None, P + N - 1]


# the picture's box in the lesson at 1280x720 and in presenter mode (width, height px)
TOKENS_BOX, TOKENS_PRESENTER_BOX = (300, 518), (390, 598)


def tokens_picture(image: ImageLike, seq: TokenSequence, mean: Optional[Sequence[float]] = None,
                   std: Optional[Sequence[float]] = None, max_boxes: int = 14, scale: float = 1.0,
                   lang: str = "en") -> np.ndarray:
    """RGB picture: the model input with its patch grid and patch numbers, and below it the token sequence.

    The strip shows the prefix tokens (coloured by kind), then the patch tokens in the model's order
    (each with its own patch as a thumbnail, an ellipsis when there are more than fit), the position
    of each token in the sequence (#k), and which tokens get a position embedding added. Drawn at its size
    in the lesson (x `scale` for presenter mode), every text >= FIG_TEXT_PX x `scale` pixels.
    """
    img = model_input_image(image, mean, std)
    H, W = img.shape[:2]
    if (H, W) != tuple(seq.input_hw):
        raise ValueError(f"the picture is {H}x{W} px but the token sequence was made for {seq.input_hw}")
    gh, gw = seq.grid
    sy, sx = seq.layout.stride
    fw, fh = fit_size(TOKENS_BOX, scale, TOKENS_PRESENTER_BOX)
    f, lab, tit = FIG_TEXT_PX * scale, FIG_LABEL_PX * scale, FIG_TITLE_PX * scale
    fig, ax = px_canvas(fw, fh)
    pad = 6 * scale

    def width_of(t: str, px: float, bold: bool = False) -> float:
        return text_width(t, px, bold)

    def put(x, y, t, px, **kw):
        ax.text(x, y, t, fontsize=pt(px), **kw)

    # titles
    y = pad
    title = wrap_px(tr("tokens.pic_title", lang, H=H, W=W, gh=gh, gw=gw, n=gh * gw, sy=sy, sx=sx), fw - 2 * pad,
                    tit, first=fw - pad - BUTTONS_PX)
    put(pad, y, title, tit, ha="left", va="top")
    y += (title.count("\n") + 1) * tit * 1.2 + 2 * scale
    sub = wrap_px(tr("tokens.pic_sub", lang, gw=gw), fw - 2 * pad, f)
    put(pad, y, sub, f, ha="left", va="top", color="dimgray")
    y += (sub.count("\n") + 1) * f * 1.2 + 4 * scale

    # the token strip at the bottom: how many boxes fit
    names = [seq.names[i] for i in range(seq.num_prefix)] + [patch_name(gh - 1, gw - 1)]
    pos_yes, pos_no = tr("tokens.pos_yes", lang), tr("tokens.pos_no", lang)
    pos_label = pos_yes if all(seq.has_position(i) for i in range(seq.num_tokens)) else pos_no
    slot = max(width_of(t, f) for t in names + [pos_label, f"#{seq.num_tokens - 1}"]) + 6 * scale
    dots = 2.0 * f
    shown = _shown_tokens(seq, min(max_boxes, max(1, int((fw - 2 * pad - dots) // slot))))
    b = min(slot - 6 * scale, 44 * scale)                      # a box (square)
    note = wrap_px(seq.note, fw - 2 * pad, f) if seq.note else ""
    note_h = (note.count("\n") + 1) * f * 1.2 + 4 * scale if note else 0.0
    strip_text = tr("tokens.pic_strip", lang, n=seq.num_tokens)
    strip_h = (wrap_px(strip_text, fw - 2 * pad, lab).count("\n") + 1) \
        * lab * 1.3 + f * 1.2 + b + f * 1.3 + f * 1.5 + pad
    strip_top = fh - note_h - strip_h

    # the model input, its grid, patch numbers and row / column indices
    row_w = width_of(str(gh - 1), f) + 6 * scale
    top_h = f * 1.25
    side = max(10.0, min(fw - 2 * pad - row_w, strip_top - y - top_h - 4 * scale))
    ih, iw = (side, side * W / H) if W <= H else (side * H / W, side)
    x0 = pad + row_w + (fw - 2 * pad - row_w - iw) / 2
    y0 = y + top_h
    ax.imshow(img, extent=(x0, x0 + iw, y0 + ih, y0), interpolation="nearest", aspect="auto")
    ch, cw = ih / gh, iw / gw                                  # a cell, in figure pixels
    lw = 1.2 if min(ch, cw) >= 8 else 0.5
    for r in range(gh + 1):
        ax.plot([x0, x0 + iw], [y0 + r * ch] * 2, color="white", lw=lw, alpha=0.9)
    for c in range(gw + 1):
        ax.plot([x0 + c * cw] * 2, [y0, y0 + ih], color="white", lw=lw, alpha=0.9)
    cstep = max(1, int(math.ceil((width_of(str(gw - 1), f) + 6 * scale) / cw)))
    rstep = max(1, int(math.ceil(f * 1.15 / ch)))
    for c in range(0, gw, cstep):
        put(x0 + (c + 0.5) * cw, y0 - 3 * scale, str(c), f, ha="center", va="bottom")
    for r in range(0, gh, rstep):
        put(x0 - 4 * scale, y0 + (r + 0.5) * ch, str(r), f, ha="right", va="center")
    # the patch number in the top-left corner of its cell, where it leaves most of the patch visible; else only
    # the first column (row starts: k = row x gw), every few of the first row, and the last patch
    stroke = [patheffects.withStroke(linewidth=2.5 * scale, foreground="black")]
    fits_all = cw >= 2 * width_of(str(gh * gw - 1), f, True) and ch >= 2 * f
    numbered = [(r, c) for r in range(gh) for c in range(gw)] if fits_all else sorted(
        {(r, 0) for r in range(0, gh, rstep)} | {(0, c) for c in range(0, gw, cstep)} | {(gh - 1, gw - 1)})
    if ch >= f * 0.9:
        for r, c in numbered:
            put(x0 + c * cw + 2 * scale, y0 + r * ch + 1 * scale, str(r * gw + c), f, ha="left", va="top",
                color="white", fontweight="bold", path_effects=stroke)

    # the token strip
    y = strip_top
    head = wrap_px(strip_text, fw - 2 * pad, lab)
    put(fw / 2, y, head, lab, ha="center", va="top")
    y += (head.count("\n") + 1) * lab * 1.3
    total = sum(dots if t is None else slot for t in shown)
    x = (fw - total) / 2
    for tok in shown:
        if tok is None:
            put(x + dots / 2, y + f * 1.2 + b / 2, "…", tit, ha="center", va="center")
            x += dots
            continue
        cx, by = x + slot / 2, y + f * 1.2
        put(cx, by - 2 * scale, f"#{tok}", f, ha="center", va="bottom")
        if tok < seq.num_prefix:
            col = token_color(seq.layout.prefix_names[tok])
            ax.add_patch(FancyBboxPatch((cx - b / 2, by), b, b, boxstyle=f"round,pad={2 * scale}", fc=col,
                                        ec="black", lw=1.2))
        else:
            r, c = divmod(tok - seq.num_prefix, gw)
            top, left, bottom, right = (int(round(v)) for v in seq.patch_box(r, c))
            thumb = img[top:bottom, left:right]
            if thumb.size:
                ax.imshow(thumb, extent=(cx - b / 2, cx + b / 2, by + b, by), interpolation="nearest", aspect="auto")
            ax.add_patch(Rectangle((cx - b / 2, by), b, b, fill=False, ec=TOKEN_COLORS["patch"], lw=2.5 * scale))
        put(cx, by + b + 2 * scale, seq.names[tok], f, ha="center", va="top",
            color=token_color(seq.layout.prefix_names[tok]) if tok < seq.num_prefix else "black",
            fontweight="bold" if tok < seq.num_prefix else "normal")
        py = by + b + f * 1.3 + 2 * scale
        if seq.has_position(tok):
            put(cx, py, pos_yes, f, ha="center", va="top",
                bbox=dict(boxstyle="round,pad=0.15", fc=POSITION_COLOR, ec="black", lw=0.8))
        else:
            put(cx, py, pos_no, f, ha="center", va="top", color="gray")
        x += slot
    if note:
        put(pad, fh - note_h + 2 * scale, note, f, ha="left", va="top", color="dimgray")
    return figure_to_rgb(fig)


# --------------------------------------------------------------------------- position similarity

@dataclass(frozen=True)
class PositionSimilarity:
    """Cosine similarity of the patch position embeddings: ``similarity[r, c]`` is the (gh, gw) map of
    patch (r, c)'s position vector against every patch's (ViT paper, Fig. 7 left)."""

    similarity: np.ndarray           # (gh, gw, gh, gw) float32, diagonal 1
    grid: tuple[int, int]
    learned: bool
    source: str
    note: str


def position_similarity(model: nn.Module, grid: Optional[tuple[int, int]] = None,
                        lang: str = "en") -> PositionSimilarity:
    """``cos(e_i, e_j)`` for the patch rows ``e`` of the model's absolute position embedding.

    The prefix positions (CLS etc.) are dropped. ``grid``: the patch grid of the actual input when it
    differs from the one the table was made for; only for timm models with ``dynamic_img_size``,
    resampled exactly as the model does (`timm.layers.resample_abs_pos_embed`).
    Raises MethodNotDefinedError for models without an absolute position embedding. `note` is in `lang`.
    """
    pe = position_embedding(model)
    if pe is None:
        rel = _relative_position_kind(model, lang)
        how = tr("tokens.how_rel", lang, rel=rel) if rel else tr("tokens.how_none", lang)
        raise MethodNotDefinedError(tr("tokens.no_abs_pe", lang, model=type(model).__name__, how=how))
    table = pe.patch_table
    g = pe.grid
    note = ""
    if grid is not None and tuple(grid) != tuple(pe.grid):
        if not getattr(model, "dynamic_img_size", False):
            raise MethodNotDefinedError(tr("tokens.pe_fixed_grid", lang, gh=pe.grid[0], gw=pe.grid[1],
                                           ah=grid[0], aw=grid[1]))
        from timm.layers import resample_abs_pos_embed
        full = resample_abs_pos_embed(pe.table[None], new_size=list(grid), old_size=list(pe.grid),
                                      num_prefix_tokens=pe.num_prefix_positions)
        table = full[0, pe.num_prefix_positions:]
        note = tr("tokens.sim_resampled", lang, gh=pe.grid[0], gw=pe.grid[1], ah=grid[0], aw=grid[1])
        g = (int(grid[0]), int(grid[1]))
    e = table.double()
    norms = e.norm(dim=1)
    with torch.no_grad():
        sim = (e @ e.T) / (norms[:, None] * norms[None, :])
    if (norms == 0).any():
        note += tr("tokens.sim_zero", lang, k=int((norms == 0).sum()))
    sim = torch.where(torch.isfinite(sim), sim, torch.full_like(sim, float("nan")))
    kind = tr("tokens.sim_learned" if pe.learned else "tokens.sim_fixed", lang)
    dropped = (tr("tokens.sim_dropped", lang, k=pe.num_prefix_positions) if pe.num_prefix_positions
               else tr("tokens.sim_no_prefix", lang))
    note += tr("tokens.sim_note", lang, kind=kind, source=pe.source, gh=g[0], gw=g[1], dropped=dropped)
    return PositionSimilarity(sim.float().numpy().reshape(g[0], g[1], g[0], g[1]), g, pe.learned, pe.source, note)


def similarity_mosaic(sim: np.ndarray, gap: int = 1) -> np.ndarray:
    """(gh*(gh+gap)-gap, gw*(gw+gap)-gap) array: tile (r, c) is ``sim[r, c]``; NaN in the gaps."""
    gh, gw = sim.shape[:2]
    h2, w2 = sim.shape[2:]
    out = np.full((gh * (h2 + gap) - gap, gw * (w2 + gap) - gap), np.nan, dtype=np.float32)
    for r in range(gh):
        for c in range(gw):
            out[r * (h2 + gap): r * (h2 + gap) + h2, c * (w2 + gap): c * (w2 + gap) + w2] = sim[r, c]
    return out


def position_picture(pos: Union[PositionSimilarity, np.ndarray], cmap: str = "viridis",
                     scale: float = 1.0, lang: str = "en") -> np.ndarray:
    """RGB picture of the position-embedding similarities as in the ViT paper's Fig. 7 (left), drawn at its
    size in the lesson (x `scale` for presenter mode), every text >= FIG_TEXT_PX x `scale` pixels."""
    import matplotlib

    from .figure import nice_ticks
    sim = pos.similarity if isinstance(pos, PositionSimilarity) else np.asarray(pos)
    if sim.ndim != 4:
        raise ValueError(f"expected a (gh, gw, gh, gw) similarity array, got shape {sim.shape}")
    gh, gw = sim.shape[:2]
    gap = 1 if max(gh, gw) > 4 else 0
    mosaic = similarity_mosaic(sim, gap)
    fw, fh = fit_size(TOKENS_BOX, scale, TOKENS_PRESENTER_BOX)
    f, tit = FIG_TEXT_PX * scale, FIG_TITLE_PX * scale
    fig, ax = px_canvas(fw, fh)
    pad = 6 * scale

    def put(x, y, t, px, **kw):
        ax.text(x, y, t, fontsize=pt(px), **kw)

    def lines(t: str) -> int:
        return t.count("\n") + 1

    y = pad
    title = wrap_px(tr("tokens.sim_title", lang), fw - 2 * pad, tit, first=fw - pad - BUTTONS_PX)
    put(pad, y, title, tit, ha="left", va="top")
    y += lines(title) * tit * 1.2 + 2 * scale
    sub = wrap_px(tr("tokens.sim_sub", lang), fw - 2 * pad, f)
    put(pad, y, sub, f, ha="left", va="top", color="dimgray")
    y += lines(sub) * f * 1.2 + 4 * scale
    note = wrap_px(pos.note, fw - 2 * pad, f) if isinstance(pos, PositionSimilarity) else ""
    note_h = lines(note) * f * 1.2 + 4 * scale if note else 0.0
    bar_h = 12 * scale + f * 1.3 + f * 1.4                     # the colour scale, its ticks and its label
    cm = matplotlib.colormaps[cmap].with_extremes(bad="white")
    # the colour scale spans the values present (a fixed -1..1 made 0.6-1.0 look uniform); tiles are 0-based
    # like every other patch index in the lesson
    lo = float(np.nanmin(mosaic)) if np.isfinite(mosaic).any() else -1.0
    lo = min(lo, 0.999)
    row_w = text_width(str(gh - 1), f) + 6 * scale
    top_h = f * 1.25
    side = max(10.0, min(fw - 2 * pad - row_w, fh - y - top_h - 8 * scale - bar_h - note_h))
    mh, mw = (side, side * mosaic.shape[1] / mosaic.shape[0]) if mosaic.shape[1] <= mosaic.shape[0] else \
        (side * mosaic.shape[0] / mosaic.shape[1], side)
    x0, y0 = pad + row_w + (fw - 2 * pad - row_w - mw) / 2, y + top_h
    ax.imshow(mosaic, cmap=cm, vmin=lo, vmax=1, interpolation="nearest", aspect="auto",
              extent=(x0, x0 + mw, y0 + mh, y0))
    th, tw = mh * (sim.shape[2] + gap) / (mosaic.shape[0] + gap), mw * (sim.shape[3] + gap) / (mosaic.shape[1] + gap)
    cstep = max(1, int(math.ceil((font(int(round(f))).getlength(str(gw - 1)) + 6 * scale) / tw)))
    rstep = max(1, int(math.ceil(f * 1.15 / th)))
    for c in range(0, gw, cstep):
        put(x0 + c * tw + (tw * sim.shape[3] / (sim.shape[3] + gap)) / 2, y0 - 3 * scale, str(c), f, ha="center",
            va="bottom")
    for r in range(0, gh, rstep):
        put(x0 - 4 * scale, y0 + r * th + (th * sim.shape[2] / (sim.shape[2] + gap)) / 2, str(r), f, ha="right",
            va="center")
    # a horizontal colour scale under the mosaic
    by = y0 + mh + 8 * scale
    bx0, bx1 = x0, x0 + mw
    ax.imshow(np.linspace(lo, 1, 256)[None], cmap=cm, vmin=lo, vmax=1, aspect="auto",
              extent=(bx0, bx1, by + 12 * scale, by))
    ax.add_patch(Rectangle((bx0, by), bx1 - bx0, 12 * scale, fill=False, ec="dimgray", lw=0.8))
    ticks = nice_ticks(lo, 1.0, 4)
    for v in ticks:
        tx = bx0 + (bx1 - bx0) * (v - lo) / max(1 - lo, 1e-12)
        ax.plot([tx, tx], [by + 12 * scale, by + 15 * scale], color="dimgray", lw=0.8)
        put(tx, by + 15 * scale, f"{v:g}", f, ha="center", va="top")
    put((bx0 + bx1) / 2, by + 12 * scale + f * 1.3, tr("tokens.sim_bar", lang), f, ha="center", va="top")
    if note:
        put(pad, by + bar_h + 6 * scale, note, f, ha="left", va="top", color="dimgray")
    return figure_to_rgb(fig)


__all__ = ["TOKEN_COLORS", "display_name", "patch_name", "token_color", "PositionEmbedding", "position_embedding",
           "position_note", "TokenSequence", "token_sequence", "model_input_image", "tokens_picture",
           "PositionSimilarity", "position_similarity", "similarity_mosaic", "position_picture"]
