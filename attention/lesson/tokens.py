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
from ..errors import MethodNotDefinedError
from ..layout import TokenLayout
from ..preprocess import PreparedImage
from ..render.grid import view_thumbnail
from .figure import LABEL_SIZE, SMALL_SIZE, TEXT_SIZE, TITLE_SIZE, figure_to_rgb, new_figure

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


def _relative_position_kind(model: nn.Module) -> Optional[str]:
    for m in model.modules():
        if getattr(m, "rope", None) is not None or "Rope" in type(m).__name__:
            return "rotary position embeddings (RoPE) inside every attention layer"
        if hasattr(m, "relative_position_bias_table") or hasattr(m, "rel_pos"):
            return "a relative position bias added to the attention scores"
    return None


def position_note(model: nn.Module, prefix_names: Sequence[str] = ()) -> str:
    """One sentence on how token positions enter `model` (for the lesson's text)."""
    pe = position_embedding(model)
    rel = _relative_position_kind(model)
    if pe is None:
        if rel:
            return f"No absolute position embedding: positions enter through {rel}."
        return "No absolute position embedding was found in this model."
    kind = "learned" if pe.learned else "fixed"
    what = f"A {kind} position embedding (`{pe.source}`, one vector per position) is added to "
    also = f" In addition, positions enter through {rel}." if rel else ""
    P = len(prefix_names)
    if P == 0:
        return what + "every patch token." + also
    names = ", ".join(display_name(n) for n in prefix_names)
    if pe.num_prefix_positions >= P:
        return what + f"every token, {names} included." + also
    if pe.num_prefix_positions == 0:
        return what + f"the patch tokens only; {names} get no position (they do not come from a place)." + also
    return what + f"the patch tokens and the first {pe.num_prefix_positions} of {names}." + also


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

    def summary(self) -> str:
        kinds = []
        pn = self.layout.prefix_names
        for label, pred in (("CLS", lambda n: n == "cls"), ("DIST", lambda n: n == "dist"),
                            ("register", lambda n: n.startswith("reg")), ("other prefix", lambda n: n.startswith("tok"))):
            k = sum(1 for n in pn if pred(n))
            if k:
                kinds.append(f"{k} {label}" + ("s" if k > 1 and label in ("register",) else ""))
        gh, gw = self.grid
        kinds.append(f"{self.num_patches} patches ({gh}x{gw}, row by row)")
        return f"{self.num_tokens} tokens = " + " + ".join(kinds)


def _input_hw(image: ImageLike) -> tuple[int, int]:
    if isinstance(image, PreparedImage):
        return tuple(int(v) for v in image.tensor.shape[-2:])
    if isinstance(image, torch.Tensor):
        return tuple(int(v) for v in image.shape[-2:])
    if isinstance(image, np.ndarray):
        return tuple(int(v) for v in image.shape[:2])
    return int(image[0]), int(image[1])


def token_sequence(model: nn.Module, image: ImageLike) -> TokenSequence:
    """The ordered tokens `model` builds for `image` (a PreparedImage, an input tensor or an (H, W)).

    Raises MethodNotDefinedError for models that do not cut the input into patch tokens.
    """
    hw = _input_hw(image)
    t = model_tokens(model, hw)
    if t.grid is None or t.grid[0] * t.grid[1] == 0:
        raise MethodNotDefinedError(
            f"{type(model).__name__} is not a token-based vision transformer: it does not cut the image into "
            "patch tokens, has no CLS token and no position embedding (its attention, if any, runs over the "
            "cells of a CNN feature map). The 'image to tokens' step is only defined for ViTs.")
    layout = t.layout()
    gh, gw = layout.grid
    names = tuple(display_name(n) for n in layout.prefix_names) + tuple(
        patch_name(r, c) for r in range(gh) for c in range(gw))
    pe = position_embedding(model)
    note = ""
    if any("PatchMerging" in type(m).__name__ for m in model.modules()):
        note = ("This is the sequence of the first stage: the model merges neighbouring tokens between stages "
                "(Swin-style), and its attention runs within local windows.")
    return TokenSequence(names, layout, hw, 0 if pe is None else min(pe.num_prefix_positions, layout.num_prefix),
                         pe is not None, position_note(model, layout.prefix_names), note)


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
    """Indices of the tokens drawn in the strip (None: an ellipsis)."""
    P, N = seq.num_prefix, seq.num_patches
    room = max(4, max_boxes - P - 1)
    if N <= room + 1:
        return list(range(P + N))
    tail = 2
    return list(range(P + room - tail)) + [None] + list(range(P + N - tail, P + N))


def tokens_picture(image: ImageLike, seq: TokenSequence, mean: Optional[Sequence[float]] = None,
                   std: Optional[Sequence[float]] = None, max_boxes: int = 14) -> np.ndarray:
    """RGB picture: the model input with its patch grid and patch numbers, and below it the token sequence.

    The strip shows the prefix tokens (coloured by kind), then the patch tokens in the model's order
    (each with its own patch as a thumbnail, an ellipsis when there are more than fit), the position
    of each token in the sequence (#k), and which tokens get a position embedding added.
    """
    img = model_input_image(image, mean, std)
    H, W = img.shape[:2]
    if (H, W) != tuple(seq.input_hw):
        raise ValueError(f"the picture is {H}x{W} px but the token sequence was made for {seq.input_hw}")
    gh, gw = seq.grid
    sy, sx = seq.layout.stride
    fig = new_figure(14, 12.5)
    gs = fig.add_gridspec(2, 1, height_ratios=[2.6, 1.0])
    ax = fig.add_subplot(gs[0])
    ax.imshow(img, extent=(0, W, H, 0), interpolation="nearest")
    cells = max(gh, gw)
    lw = 1.6 if cells <= 16 else (1.0 if cells <= 32 else 0.5)
    for r in range(gh + 1):
        ax.axhline(r * sy, color="white", lw=lw, alpha=0.9)
    for c in range(gw + 1):
        ax.axvline(c * sx, color="white", lw=lw, alpha=0.9)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    # patch numbers: the index among the patches (row-major)
    if cells <= 16:  # the patch number in the top-left corner of its cell, leaving the patch visible
        fs = max(8.0, min(TEXT_SIZE, 130.0 / cells))
        stroke = [patheffects.withStroke(linewidth=3, foreground="black")]
        for r in range(gh):
            for c in range(gw):
                ax.text((c + 0.06) * sx, (r + 0.06) * sy, str(r * gw + c), ha="left", va="top", color="white",
                        fontsize=fs, fontweight="bold", path_effects=stroke)
    step = max(1, int(math.ceil(cells / 16)))
    ax.set_xticks([(c + 0.5) * sx for c in range(0, gw, step)], [str(c) for c in range(0, gw, step)])
    ax.set_yticks([(r + 0.5) * sy for r in range(0, gh, step)], [str(r) for r in range(0, gh, step)])
    ax.tick_params(labelsize=TEXT_SIZE if cells <= 16 else SMALL_SIZE, length=0)
    ax.xaxis.tick_top()
    ax.set_xlabel("patch column", fontsize=LABEL_SIZE)
    ax.xaxis.set_label_position("top")
    ax.set_ylabel("patch row", fontsize=LABEL_SIZE)
    ax.set_title(f"Model input {H}x{W} px cut into {gh}x{gw} = {gh * gw} patches of {sy:g}x{sx:g} px\n"
                 f"(patch k sits in row k // {gw}, column k % {gw})", fontsize=TITLE_SIZE, pad=12)

    # the token strip
    sx_ = fig.add_subplot(gs[1])
    shown = _shown_tokens(seq, max_boxes)
    n = len(shown)
    bw, gap = 1.0, 0.18
    sx_.set_xlim(-0.1, n * (bw + gap))
    sx_.set_ylim(-1.55, 1.75)
    sx_.set_axis_off()
    sx_.set_aspect("equal")
    for i, tok in enumerate(shown):
        x0 = i * (bw + gap)
        if tok is None:
            sx_.text(x0 + bw / 2, 0.5, "…", ha="center", va="center", fontsize=TITLE_SIZE)
            sx_.text(x0 + bw / 2, -0.6, "…", ha="center", va="center", fontsize=TITLE_SIZE)
            continue
        name = seq.names[tok]
        if tok < seq.num_prefix:
            col = token_color(seq.layout.prefix_names[tok])
            sx_.add_patch(FancyBboxPatch((x0, 0), bw, bw, boxstyle="round,pad=0.02", fc=col, ec="black", lw=1.5))
            sx_.text(x0 + bw / 2, bw / 2, name, ha="center", va="center", color="white", fontsize=TEXT_SIZE - 2,
                     fontweight="bold")
            sx_.text(x0 + bw / 2, -0.12, "learned", ha="center", va="top", fontsize=SMALL_SIZE - 2, color="dimgray")
        else:
            k = tok - seq.num_prefix
            r, c = divmod(k, gw)
            top, left, bottom, right = (int(round(v)) for v in seq.patch_box(r, c))
            thumb = img[top:bottom, left:right]
            if thumb.size:
                sx_.imshow(thumb, extent=(x0, x0 + bw, 0, bw), interpolation="nearest", zorder=2)
            sx_.add_patch(Rectangle((x0, 0), bw, bw, fill=False, ec=TOKEN_COLORS["patch"], lw=3, zorder=3))
            sx_.text(x0 + bw / 2, -0.12, name, ha="center", va="top", fontsize=SMALL_SIZE - 1)
        sx_.text(x0 + bw / 2, bw + 0.12, f"#{tok}", ha="center", va="bottom", fontsize=SMALL_SIZE)
        if seq.has_position(tok):
            sx_.add_patch(FancyBboxPatch((x0 + 0.08, -1.2), bw - 0.16, 0.5, boxstyle="round,pad=0.02",
                                         fc=POSITION_COLOR, ec="black", lw=1))
            sx_.text(x0 + bw / 2, -0.95, "+pos", ha="center", va="center", fontsize=SMALL_SIZE - 2)
        else:
            sx_.text(x0 + bw / 2, -0.95, "no pos", ha="center", va="center", fontsize=SMALL_SIZE - 2, color="gray")
    sx_.set_title(f"Token sequence: {seq.summary()}", fontsize=LABEL_SIZE)
    sx_.text(0.0, -0.02, " ".join(t for t in (seq.position, seq.note) if t), transform=sx_.transAxes,
             fontsize=SMALL_SIZE, va="top", wrap=True)
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


def position_similarity(model: nn.Module, grid: Optional[tuple[int, int]] = None) -> PositionSimilarity:
    """``cos(e_i, e_j)`` for the patch rows ``e`` of the model's absolute position embedding.

    The prefix positions (CLS etc.) are dropped. ``grid``: the patch grid of the actual input when it
    differs from the one the table was made for; only for timm models with ``dynamic_img_size``,
    resampled exactly as the model does (`timm.layers.resample_abs_pos_embed`).
    Raises MethodNotDefinedError for models without an absolute position embedding.
    """
    pe = position_embedding(model)
    if pe is None:
        rel = _relative_position_kind(model)
        how = f"positions enter through {rel}" if rel else "it has no learned position table to compare"
        raise MethodNotDefinedError(
            f"{type(model).__name__} has no absolute position embedding ({how}), so there is no "
            "'position embedding similarity' picture for it.")
    table = pe.patch_table
    g = pe.grid
    note = ""
    if grid is not None and tuple(grid) != tuple(pe.grid):
        if not getattr(model, "dynamic_img_size", False):
            raise MethodNotDefinedError(
                f"this model's position embedding is for a {pe.grid[0]}x{pe.grid[1]} patch grid and it does not "
                f"resize it for other input sizes (asked for {grid[0]}x{grid[1]})")
        from timm.layers import resample_abs_pos_embed
        full = resample_abs_pos_embed(pe.table[None], new_size=list(grid), old_size=list(pe.grid),
                                      num_prefix_tokens=pe.num_prefix_positions)
        table = full[0, pe.num_prefix_positions:]
        note = f"resampled from {pe.grid[0]}x{pe.grid[1]} to {grid[0]}x{grid[1]} as the model does; "
        g = (int(grid[0]), int(grid[1]))
    e = table.double()
    norms = e.norm(dim=1)
    with torch.no_grad():
        sim = (e @ e.T) / (norms[:, None] * norms[None, :])
    if (norms == 0).any():
        note += f"{int((norms == 0).sum())} position vectors are zero (similarity undefined: blank); "
    sim = torch.where(torch.isfinite(sim), sim, torch.full_like(sim, float("nan")))
    kind = "learned" if pe.learned else "fixed (not trained)"
    dropped = (f"the {pe.num_prefix_positions} prefix position(s) dropped" if pe.num_prefix_positions
               else "the table has no prefix positions")
    note += f"{kind} `{pe.source}`, {g[0]}x{g[1]} patch positions, {dropped}"
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


def position_picture(pos: Union[PositionSimilarity, np.ndarray], cmap: str = "viridis") -> np.ndarray:
    """RGB picture of the position-embedding similarities as in the ViT paper's Fig. 7 (left)."""
    import matplotlib

    sim = pos.similarity if isinstance(pos, PositionSimilarity) else np.asarray(pos)
    if sim.ndim != 4:
        raise ValueError(f"expected a (gh, gw, gh, gw) similarity array, got shape {sim.shape}")
    gh, gw = sim.shape[:2]
    gap = 1 if max(gh, gw) > 4 else 0
    mosaic = similarity_mosaic(sim, gap)
    side = float(np.clip(max(mosaic.shape) / 80.0, 8.0, 16.0))
    fig = new_figure(side + 2.2, side + 1.6)
    ax = fig.add_subplot()
    cm = matplotlib.colormaps[cmap].with_extremes(bad="white")
    # the colour scale spans the values present (a fixed -1..1 made 0.6-1.0 look uniform); tiles are 0-based
    # like every other patch index in the lesson
    lo = float(np.nanmin(mosaic)) if np.isfinite(mosaic).any() else -1.0
    lo = min(lo, 0.999)
    im = ax.imshow(mosaic, cmap=cm, vmin=lo, vmax=1, interpolation="nearest")
    step = max(1, int(math.ceil(max(gh, gw) / 16)))
    th, tw = sim.shape[2] + gap, sim.shape[3] + gap
    ax.set_xticks([c * tw + (tw - gap - 1) / 2 for c in range(0, gw, step)], [str(c) for c in range(0, gw, step)])
    ax.set_yticks([r * th + (th - gap - 1) / 2 for r in range(0, gh, step)], [str(r) for r in range(0, gh, step)])
    ax.tick_params(labelsize=TEXT_SIZE, length=0)
    ax.set_xlabel("input patch column", fontsize=LABEL_SIZE)
    ax.set_ylabel("input patch row", fontsize=LABEL_SIZE)
    for s in ax.spines.values():
        s.set_visible(False)
    cb = fig.colorbar(im, ax=ax, shrink=0.8)
    cb.set_label("cosine similarity", fontsize=LABEL_SIZE)
    cb.ax.tick_params(labelsize=TEXT_SIZE)
    ax.set_title("Position embedding similarity\n(tile at row r, column c: patch (r, c)'s position vector "
                 "vs every patch's)", fontsize=LABEL_SIZE)
    if isinstance(pos, PositionSimilarity):
        fig.supxlabel(pos.note, fontsize=SMALL_SIZE, color="dimgray")
    return figure_to_rgb(fig)


__all__ = ["TOKEN_COLORS", "display_name", "patch_name", "token_color", "PositionEmbedding", "position_embedding",
           "position_note", "TokenSequence", "token_sequence", "model_input_image", "tokens_picture",
           "PositionSimilarity", "position_similarity", "similarity_mosaic", "position_picture"]
