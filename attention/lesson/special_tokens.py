"""Lesson step "Special tokens": what CLS, DIST and register tokens do, and high-norm artifact tokens.

Attention, from the captured maps (``A_l^h``: layer l, head h, rows = queries, columns = keys; P prefix
tokens first, then the gh x gw patches row by row):

* what prefix token t **attends to** in layer l: ``mean_h A_l^h[t, patches]`` as a (gh, gw) map
  (`PrefixAttention.attends_to`), and the part of its row that goes to prefix tokens
  (`PrefixAttention.attends_to_prefix`);
* what **attends to** t: ``mean_{q in patches} A_l^h[q, t]`` per layer and head
  (`PrefixAttention.received`), the average attention weight a patch query gives t. Uniform
  attention would give ``1 / num_tokens``; registers in DINOv2-reg models soak up far more.

Norms (Darcet et al. 2023, "Vision Transformers Need Registers"): `token_norms` runs the model once
with forward hooks on its transformer blocks and takes the L2 norm of every token of every block's
output. `high_norm_tokens` flags a *patch* token of layer l when

    norm > factor x median(norms of the patch tokens of layer l, same image)

(prefix tokens are never flagged: they are not image content). Artifact tokens show up in the later
layers of large, long-trained models; a small or randomly initialised model normally has none.

Supported: ViT-style models with one token sequence through a flat stack of blocks: timm's ViT
family (``model.blocks``: ViT, DeiT incl. distilled, register ViTs, EVA, BEiT), torchvision's ViT
(``encoder.layers``) and ``nn.TransformerEncoder`` models such as ``demo-torch-vit``. Models without
prefix tokens, or without such blocks (Swin, CNNs), get a `MethodNotDefinedError` with the reason.
"""
from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Optional, Sequence, Union

import numpy as np
import torch
from matplotlib.patches import Rectangle
from matplotlib.ticker import MaxNLocator
from torch import nn

from ..families import family_of, model_tokens
from ..capture import CaptureResult
from ..errors import MethodNotDefinedError
from ..i18n import t as tr
from ..layout import SELF, TokenLayout
from .figure import (BUTTONS_PX, FIG_LABEL_PX, FIG_TEXT_PX, figure_to_rgb, fit_size, font, nice_ticks, px_canvas, pt,
                     wrap_px)
from .tokens import display_name, token_color

DEFAULT_FACTOR = 3.0


# --------------------------------------------------------------------------- attention to / from prefix tokens

@dataclass(frozen=True)
class PrefixAttention:
    """Attention of and to the prefix tokens, one image, every self-attention layer with prefix tokens."""

    names: tuple[str, ...]            # display names: "CLS", "DIST", "REG0", ...
    layers: tuple[str, ...]           # module names of the layers, forward order
    layer_indices: tuple[int, ...]    # their indices into ``result.maps``
    grid: tuple[int, int]
    num_tokens: int
    attends_to: np.ndarray            # (P, L, gh, gw): mean over heads of A[t, patches]
    attends_to_prefix: np.ndarray     # (P, L, P): mean over heads of A[t, prefix tokens]
    received: np.ndarray              # (P, L, heads): mean over patch queries q of A^h[q, t]

    @property
    def uniform(self) -> float:
        """The weight every key would get from uniform attention: 1 / num_tokens."""
        return 1.0 / self.num_tokens


def _prefix_layers(result: CaptureResult):
    return [(i, m) for i, m in enumerate(result.maps)
            if m.kind == SELF and m.layout is not None and m.layout.num_prefix > 0 and m.layout.num_patches > 0
            and m.query_layout == m.layout]


def prefix_attention(result: CaptureResult, image: int = 0, lang: str = "en") -> PrefixAttention:
    """What the CLS / DIST / register tokens attend to, and how much the patches attend to them.

    Reads the captured weights as they are (no re-normalisation). Raises MethodNotDefinedError when
    no self-attention layer has prefix tokens (a CNN, Swin, a ViT without CLS token).
    """
    layers = _prefix_layers(result)
    if not layers:
        raise MethodNotDefinedError(tr("special.no_prefix", lang))
    layout = layers[0][1].layout
    layers = [(i, m) for i, m in layers if m.layout == layout]
    P, grid = layout.num_prefix, layout.grid
    to, to_prefix, received = [], [], []
    for _, m in layers:
        w = m.weights[image].float()                                   # (heads, N, N)
        mean_h = w.mean(0)                                              # (N, N)
        to.append(mean_h[:P, P:].reshape(P, *grid))
        to_prefix.append(mean_h[:P, :P])
        received.append(w[:, P:, :P].mean(1).T)                         # (P, heads)
    heads = {r.shape[1] for r in received}
    rec = (torch.stack(received, 1).numpy() if len(heads) == 1
           else _ragged(received))
    return PrefixAttention(tuple(display_name(n) for n in layout.prefix_names), tuple(m.name for _, m in layers),
                           tuple(i for i, _ in layers), tuple(grid), layout.num_tokens,
                           torch.stack(to, 1).numpy().astype(np.float32),
                           torch.stack(to_prefix, 1).numpy().astype(np.float32), rec.astype(np.float32))


def _ragged(received: list[torch.Tensor]) -> np.ndarray:
    H = max(r.shape[1] for r in received)
    out = np.full((received[0].shape[0], len(received), H), np.nan, dtype=np.float32)
    for l, r in enumerate(received):
        out[:, l, :r.shape[1]] = r.numpy()
    return out


def _pick_layers(L: int, max_layers: int) -> list[int]:
    if L <= max_layers:
        return list(range(L))
    return sorted({int(round(v)) for v in np.linspace(0, L - 1, max_layers)})


# the pictures' box in the lesson at 1280x720 and in presenter mode (width, height px)
SPECIAL_BOX, SPECIAL_PRESENTER_BOX = (300, 518), (390, 598)


def times_uniform(v: float) -> str:
    """A multiple of uniform attention (weight x num_tokens) as the picture prints it: two significant digits
    below 10 (0.31, 1.2), whole numbers above (23); 1 = uniform."""
    if not np.isfinite(v):
        return ""
    return f"{v:.0f}" if v >= 9.95 else (f"{v:.1f}" if v >= 0.995 else f"{v:.2f}")


def _colour_scale(ax, x: float, y: float, w: float, h: float, cmap: str, vmin: float, vmax: float, fmt, px: float,
                  scale: float) -> float:
    """A vertical colour scale at (x, y) with its tick labels on the right; returns its right edge."""
    ax.imshow(np.linspace(vmax, vmin, 256)[:, None], cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto",
              extent=(x, x + w, y + h, y))
    ax.add_patch(Rectangle((x, y), w, h, fill=False, ec="dimgray", lw=0.8))
    right = x + w
    for v in nice_ticks(vmin, vmax, max(2, min(4, int(h // (px * 1.6))))):
        ty = y + h * (vmax - v) / max(vmax - vmin, 1e-12)
        ax.plot([x + w, x + w + 3 * scale], [ty, ty], color="dimgray", lw=0.8)
        ax.text(x + w + 5 * scale, ty, fmt(v), fontsize=pt(px), ha="left", va="center")
        right = max(right, x + w + 5 * scale + font(int(round(px))).getlength(fmt(v)))
    return right


def special_tokens_picture(pa: PrefixAttention, max_layers: int = 12, scale: float = 1.0,
                           lang: str = "en") -> np.ndarray:
    """RGB picture: top, each prefix token's attention map per layer (mean over heads); bottom, per
    prefix token a layer x head heat map of the attention the patch queries give it, as a multiple of
    uniform attention (`times_uniform`; printed in the cells where they fit). Drawn at its size in the
    lesson (x `scale` for presenter mode), every text >= FIG_TEXT_PX x `scale` pixels."""
    P, L = pa.attends_to.shape[:2]
    fw, fh = fit_size(SPECIAL_BOX, scale, SPECIAL_PRESENTER_BOX)
    f, lab = FIG_TEXT_PX * scale, FIG_LABEL_PX * scale
    pad, gap = 6 * scale, 4 * scale
    small = font(int(round(f)))
    name_w = max(font(int(round(lab)), True).getlength(n) for n in pa.names) + 6 * scale
    cols = _pick_layers(L, min(max_layers, max(1, int((fw - 2 * pad - name_w + gap) // (44 * scale + gap)))))
    # many prefix tokens (registers): the maps of the first two, and what attends to each one per layer (mean
    # over heads) in one table; so that every text keeps its size
    rows = list(range(P)) if P <= 2 else [0, 1]
    sub = "" if len(cols) == L else tr("special.sub_layers", lang, n=len(cols), L=L)
    sub += "" if len(rows) == P else tr("special.sub_tokens", lang, n=len(rows), P=P)
    texts = []                                               # (x, y, text, px, kw) placed once the height is known

    def lines(t: str) -> int:
        return t.count("\n") + 1

    y = pad
    t1 = wrap_px(tr("special.t1", lang), fw - 2 * pad, lab, bold=True,
                 first=fw - pad - BUTTONS_PX)
    texts.append((pad, y, t1, lab, dict(ha="left", va="top", fontweight="bold")))
    y += lines(t1) * lab * 1.2
    t2 = wrap_px(tr("special.t2", lang, sub=sub), fw - 2 * pad, f)
    texts.append((pad, y, t2, f, dict(ha="left", va="top", color="dimgray")))
    y += lines(t2) * f * 1.2 + f * 1.3 + 2 * scale
    n = len(cols)
    side = min((fw - 2 * pad - name_w - (n - 1) * gap) / n, 50 * scale)
    x_start = pad + name_w + (fw - 2 * pad - name_w - n * side - (n - 1) * gap) / 2
    images = []                                              # (array, extent, imshow kw)
    for j, l in enumerate(cols):
        texts.append((x_start + j * (side + gap) + side / 2, y - 3 * scale, f"L{l}", f, dict(ha="center", va="bottom")))
    for p in rows:
        texts.append((x_start - 4 * scale, y + side / 2, pa.names[p], lab,
                      dict(ha="right", va="center", color=token_color(pa.names[p]), fontweight="bold")))
        for j, l in enumerate(cols):
            a = pa.attends_to[p, l]
            x0 = x_start + j * (side + gap)
            images.append((a, (x0, x0 + side, y + side, y),
                           dict(cmap="inferno", vmin=0, vmax=max(float(a.max()), 1e-12), interpolation="nearest")))
            texts.append((x0 + side / 2, y + side + 1 * scale, f"{a.max():.2f}", f, dict(ha="center", va="top")))
        y += side + f * 1.3 + gap
    y += 6 * scale

    # what attends to them, in multiples of uniform attention: a layer x head table per prefix token, or one
    # token x layer table (mean over heads) when there are many
    u = pa.uniform
    rec = pa.received / u
    if P <= 2:
        panels = [(f"→ {pa.names[p]}", token_color(pa.names[p]), rec[p].T, [str(h) for h in range(rec.shape[2])],
                   tr("special.axis_head", lang)) for p in range(P)]
        per = tr("special.per_layer_head", lang)
    else:
        with np.errstate(all="ignore"):
            mean = np.nanmean(rec, axis=2)                   # (P, L)
        panels = [(tr("special.each_token", lang), "black", mean, list(pa.names), "")]
        per = tr("special.per_layer_mean", lang)
    t3 = wrap_px(tr("special.t3", lang), fw - 2 * pad, lab, bold=True)
    texts.append((pad, y, t3, lab, dict(ha="left", va="top", fontweight="bold")))
    y += lines(t3) * lab * 1.2
    t4 = wrap_px(tr("special.t4", lang, per=per, n=pa.num_tokens, u=u), fw - 2 * pad, f)
    texts.append((pad, y, t4, f, dict(ha="left", va="top", color="dimgray")))
    y += lines(t4) * f * 1.2 + 4 * scale
    values = np.concatenate([m.ravel() for _, _, m, _, _ in panels])
    vmax = float(np.nanmax(values)) if np.isfinite(values).any() else 1.0
    vmax = max(vmax, 1e-12)
    R = panels[0][2].shape[0]
    row_labels = panels[0][3]
    label_font = small if P <= 2 else font(int(round(f)), True)
    head_w = max(label_font.getlength(t) for t in row_labels) + 6 * scale + (f * 1.3 if panels[0][4] else 0)
    bar_w = 12 * scale + 5 * scale + small.getlength("00.0") + 4 * scale
    avail = fw - 2 * pad - head_w - bar_w
    k = len(panels)
    # cells as wide as fits, as high as the height left allows (not below a line of text: wider than high then)
    cell = min((avail - (k - 1) * 2 * gap) / k / L, 56 * scale)
    cell_h = min(cell, max(f * 1.3, (fh - y - lab * 1.3 - 2 * f * 1.3 - pad) / R))
    hw, hh = cell * L, cell_h * R
    x_start = pad + head_w + (avail - k * hw - (k - 1) * 2 * gap) / 2
    top = y + lab * 1.3
    text_fits = (max(small.getlength(times_uniform(v)) for v in values) + 4 * scale <= cell and f * 1.1 <= cell_h)
    lstep = max(1, int(math.ceil((small.getlength(str(L - 1)) + 6 * scale) / cell)))
    rstep = max(1, int(math.ceil(f * 1.15 / cell_h)))
    for i, (title, colour, m, labels, axis) in enumerate(panels):
        x0 = x_start + i * (hw + 2 * gap)
        texts.append((x0 + hw / 2, y, title, lab, dict(ha="center", va="top", color=colour, fontweight="bold")))
        images.append((m, (x0, x0 + hw, top + hh, top),
                       dict(cmap="viridis", vmin=0, vmax=vmax, interpolation="nearest")))
        for l in range(0, L, lstep):
            texts.append((x0 + (l + 0.5) * cell, top + hh + 2 * scale, str(l), f, dict(ha="center", va="top")))
        if i == 0:
            for r in range(0, R, rstep):
                kw = dict(ha="right", va="center") if axis else dict(
                    ha="right", va="center", color=token_color(labels[r]), fontweight="bold")
                texts.append((x0 - 3 * scale, top + (r + 0.5) * cell_h, labels[r], f, kw))
            if axis:
                texts.append((x0 - 6 * scale - max(small.getlength(t) for t in labels), top + hh / 2, axis, f,
                              dict(ha="right", va="center", rotation=90)))
        texts.append((x0 + hw / 2, top + hh + 2 * scale + f * 1.3, tr("special.axis_layer", lang), f,
                      dict(ha="center", va="top")))
        if text_fits:
            for l in range(L):
                for r in range(R):
                    v = m[r, l]
                    if np.isfinite(v):
                        texts.append((x0 + (l + 0.5) * cell, top + (r + 0.5) * cell_h, times_uniform(v), f,
                                      dict(ha="center", va="center", color="white" if v < 0.6 * vmax else "black")))
    bar_h = max(hh, 60 * scale)
    bottom = max(top + hh + 2 * scale + 2 * f * 1.3, top + bar_h)
    fig, ax = px_canvas(fw, min(fh, bottom + pad))
    for a, ext, kw in images:
        ax.imshow(a, extent=ext, aspect="auto", **kw)
    _colour_scale(ax, x_start + k * hw + (k - 1) * 2 * gap + 8 * scale, top, 12 * scale, bar_h, "viridis",
                  0.0, vmax, lambda v: f"{v + 0.0:g}", f, scale)
    for x, yy, t, px, kw in texts:
        ax.text(x, yy, t, fontsize=pt(px), **kw)
    return figure_to_rgb(fig)


# --------------------------------------------------------------------------- token norms

def transformer_blocks(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The flat stack of transformer blocks whose outputs are the token sequence, with module names
    (the model's family descriptor knows where it is; hierarchical models and CNNs have none)."""
    return family_of(model).blocks(model)


@dataclass(frozen=True)
class TokenNorms:
    """L2 norm of every token of every block's output: ``norms[b, l, t]``."""

    norms: np.ndarray                 # (B, L, N) float32
    layout: TokenLayout               # prefix tokens + patch grid of the blocks' sequence
    layers: tuple[str, ...]           # block module names, forward order

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(display_name(n) for n in self.layout.prefix_names)

    def patch_maps(self, image: int = 0) -> np.ndarray:
        """(L, gh, gw) norms of the patch tokens."""
        return self.norms[image, :, self.layout.patch_slice].reshape(self.norms.shape[1], *self.layout.grid)

    def prefix_norms(self, image: int = 0) -> np.ndarray:
        """(L, P) norms of the prefix tokens."""
        return self.norms[image, :, : self.layout.num_prefix]


def _output_tokens(block: nn.Module, out) -> torch.Tensor:
    t = out[0] if isinstance(out, (tuple, list)) else out
    if isinstance(block, nn.TransformerEncoderLayer) and not block.self_attn.batch_first:
        t = t.transpose(0, 1)  # (N, B, D) -> (B, N, D)
    return t


def token_norms(model: nn.Module, x: torch.Tensor) -> TokenNorms:
    """Run ``model(x)`` once (eval mode, no grad; the model is left as found) and return the L2 norm of
    every token of every transformer block's output (before any final norm)."""
    blocks = transformer_blocks(model)
    outs: list[Optional[torch.Tensor]] = [None] * len(blocks)
    handles = []
    # switch to eval mode only if needed (a loaded model already is: then nothing is touched, so that a
    # concurrent capture on the same model is not affected)
    flags = [(m, m.training) for m in model.modules()] if any(m.training for m in model.modules()) else []
    me = threading.get_ident()

    def hook(i):
        def fn(mod, args, out):
            if threading.get_ident() == me:  # the hooks are on the shared model: ignore other threads' forwards
                outs[i] = _output_tokens(mod, out).detach().float().norm(dim=-1).cpu()
        return fn

    try:
        for i, (_, b) in enumerate(blocks):
            handles.append(b.register_forward_hook(hook(i)))
        if flags:
            model.eval()
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
        for m, t in flags:
            m.training = t
    missing = [blocks[i][0] for i, o in enumerate(outs) if o is None]
    if missing:
        raise MethodNotDefinedError(f"these blocks did not run in the forward pass: {', '.join(missing)}")
    norms = torch.stack(outs, 1).numpy().astype(np.float32)  # (B, L, N)
    layout = model_tokens(model, tuple(x.shape[-2:])).layout()
    N = norms.shape[-1]
    if layout.num_patches == 0:
        raise MethodNotDefinedError(f"{type(model).__name__}: the patch grid of its tokens is unknown")
    if N != layout.num_tokens:
        if N == layout.num_patches:
            layout = TokenLayout((), layout.grid, layout.stride)
        else:
            raise MethodNotDefinedError(
                f"the blocks output {N} tokens but the model's layout has {layout.num_tokens} "
                f"({layout.num_prefix} prefix + {layout.num_patches} patches)")
    return TokenNorms(norms, layout, tuple(n for n, _ in blocks))


@dataclass(frozen=True)
class HighNormToken:
    layer: int                        # block index
    row: int
    col: int
    index: int                        # token index in the sequence
    norm: float
    ratio: float                      # norm / median patch norm of that layer


@dataclass(frozen=True)
class HighNormTokens:
    """Flagged patch tokens (largest ratio first) and the rule that flagged them."""

    tokens: list[HighNormToken]
    factor: float
    medians: np.ndarray               # (L,) median patch-token norm per layer
    rule: str
    layers: tuple[int, ...] = field(default=())   # the layers that were searched

    def __len__(self) -> int:
        return len(self.tokens)

    def __iter__(self):
        return iter(self.tokens)

    def describe(self, limit: int = 8, lang: str = "en") -> str:
        """The flagged tokens in words (at most `limit` of them), in `lang`."""
        rule = tr("special.rule", lang, factor=self.factor)
        if not self.tokens:
            return tr("special.none_flagged", lang, rule=rule)
        lines = [tr("special.n_flagged", lang, n=len(self.tokens), rule=rule)]
        for t in self.tokens[:limit]:
            lines.append(tr("special.flag_line", lang, layer=t.layer, row=t.row, col=t.col, norm=t.norm,
                            ratio=t.ratio))
        if len(self.tokens) > limit:
            lines.append(tr("special.more", lang, n=len(self.tokens) - limit))
        return "\n".join(lines)


def high_norm_tokens(norms: Union[TokenNorms, np.ndarray], layout: Optional[TokenLayout] = None,
                     factor: float = DEFAULT_FACTOR, image: int = 0,
                     layers: Optional[Sequence[int]] = None) -> HighNormTokens:
    """Patch tokens whose norm exceeds ``factor`` x the median patch norm of the same layer.

    ``norms``: a `TokenNorms`, or an (L, N) / (B, L, N) array with its ``layout``. ``layers``: only
    search these block indices (default: all).
    """
    if isinstance(norms, TokenNorms):
        layout = layout or norms.layout
        arr = norms.norms
    else:
        arr = np.asarray(norms, dtype=np.float32)
        if layout is None:
            raise ValueError("a bare norms array needs its TokenLayout")
    if arr.ndim == 3:
        arr = arr[image]
    if arr.ndim != 2 or arr.shape[1] != layout.num_tokens:
        raise ValueError(f"expected (layers, {layout.num_tokens}) norms, got shape {arr.shape}")
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor}")
    P, gw = layout.num_prefix, layout.grid[1]
    patches = arr[:, P:]
    medians = np.median(patches, axis=1)
    search = range(arr.shape[0]) if layers is None else [int(l) % arr.shape[0] for l in layers]
    found = []
    for l in search:
        m = float(medians[l])
        if not m > 0:
            continue
        for k in np.flatnonzero(patches[l] > factor * m):
            r, c = divmod(int(k), gw)
            found.append(HighNormToken(int(l), r, c, P + int(k), float(patches[l, k]), float(patches[l, k] / m)))
    found.sort(key=lambda t: (-round(t.ratio, 6), t.layer, t.row, t.col))
    rule = tr("special.rule", "en", factor=float(factor))
    return HighNormTokens(found, float(factor), medians.astype(np.float32), rule, tuple(search))


def norms_picture(tn: TokenNorms, flags: Optional[HighNormTokens] = None, image: int = 0,
                  scale: float = 1.0, lang: str = "en") -> np.ndarray:
    """RGB picture: the patch-token norms of every block as maps (flagged tokens boxed in cyan), and
    below the norms per layer: median and max over the patches, each prefix token, the threshold. Drawn at
    its size in the lesson (x `scale` for presenter mode), every text >= FIG_TEXT_PX x `scale` pixels."""
    flags = flags if flags is not None else high_norm_tokens(tn, image=image)
    maps = tn.patch_maps(image)
    L = maps.shape[0]
    fw, fh = fit_size(SPECIAL_BOX, scale, SPECIAL_PRESENTER_BOX)
    f, lab = FIG_TEXT_PX * scale, FIG_LABEL_PX * scale
    pad, gap = 6 * scale, 4 * scale
    fig, ax = px_canvas(fw, fh)

    def put(x, y, t, px, **kw):
        ax.text(x, y, t, fontsize=pt(px), **kw)

    y = pad
    t1 = wrap_px(tr("special.norms_t1", lang), fw - 2 * pad, lab, bold=True,
                 first=fw - pad - BUTTONS_PX)
    put(pad, y, t1, lab, ha="left", va="top", fontweight="bold")
    y += (t1.count("\n") + 1) * lab * 1.2
    t2 = wrap_px(tr("special.norms_t2", lang), fw - 2 * pad, f)
    put(pad, y, t2, f, ha="left", va="top", color="dimgray")
    y += (t2.count("\n") + 1) * f * 1.2 + 4 * scale
    # the maps take at most about a third of the height, in the number of columns that makes them largest
    room = 0.34 * fh
    label_h = f * 1.25
    gh, gw = maps.shape[1:]

    def side_for(cols: int) -> float:
        rows = -(-L // cols)
        return min((fw - 2 * pad - (cols - 1) * gap) / cols, (room / rows - label_h - gap) * gw / gh)
    ncols = max(range(1, L + 1), key=side_for)
    nrows = -(-L // ncols)
    mw = side_for(ncols)
    mh = mw * gh / gw
    flagged = {}
    for t in flags.tokens:
        flagged.setdefault(t.layer, []).append(t)
    x_start = (fw - ncols * mw - (ncols - 1) * gap) / 2
    for l in range(L):
        r, c = divmod(l, ncols)
        x0, y0 = x_start + c * (mw + gap), y + r * (mh + label_h + gap) + label_h
        m = maps[l]
        ax.imshow(m, cmap="magma", vmin=0, vmax=max(float(m.max()), 1e-12), interpolation="nearest", aspect="auto",
                  extent=(x0, x0 + mw, y0 + mh, y0))
        put(x0 + mw / 2, y0 - 1 * scale, f"L{l}", f, ha="center", va="bottom")
        for t in flagged.get(l, []):
            ax.add_patch(Rectangle((x0 + t.col * mw / gw, y0 + t.row * mh / gh), mw / gw, mh / gh, fill=False,
                                   ec="cyan", lw=2.0 * scale))
    y += nrows * (mh + label_h + gap) + 6 * scale

    # the norms per layer (a plot in the space left; its legend below it)
    n_flag = len(flags)
    head = (tr("special.flagged_n" if n_flag != 1 else "special.flagged_1", lang, n=n_flag) if n_flag
            else tr("special.flagged_0", lang))
    t3 = wrap_px(tr("special.norms_t3", lang, head=head), fw - 2 * pad, lab, bold=True)
    put(pad, y, t3, lab, ha="left", va="top", fontweight="bold")
    y += (t3.count("\n") + 1) * lab * 1.2 + 4 * scale
    # one legend entry per kind of prefix token (CLS, DIST, the registers together)
    kinds = {}
    for p, name in enumerate(tn.names):
        kinds.setdefault(token_color(name), []).append(p)
    entries = 3 + len(kinds)
    legend_h = -(-entries // 2) * f * 1.6 + 6 * scale
    left, bottom_h = f * 1.3 + font(int(round(f))).getlength("000") + 10 * scale, 2 * f * 1.35 + 4 * scale
    px0, py0 = pad + left, y
    pw, ph = fw - pad - 4 * scale - px0, max(40 * scale, fh - pad - legend_h - bottom_h - y)
    pax = fig.add_axes((px0 / fw, 1 - (py0 + ph) / fh, pw / fw, ph / fh))
    ls = np.arange(L)
    patch = tn.norms[image, :, tn.layout.num_prefix:]
    pax.plot(ls, np.median(patch, 1), "o-", color="tab:blue", lw=2.5, ms=5 * scale, label=tr("special.patch_median", lang))
    pax.plot(ls, patch.max(1), "s--", color="tab:blue", lw=1.5, alpha=0.7, ms=4 * scale, label=tr("special.patch_max", lang))
    pax.plot(ls, flags.factor * flags.medians, ":", color="gray", lw=2, label=tr("special.x_median", lang, factor=flags.factor))
    for p, name in enumerate(tn.names):
        group = kinds[token_color(name)]
        label = ("_" if p != group[0] else "") + (name if len(group) == 1 else
                                                  f"{tn.names[group[0]]}–{tn.names[group[-1]]}")
        pax.plot(ls, tn.norms[image, :, p], "^-", color=token_color(name), lw=1.8, ms=5 * scale,
                 alpha=1.0 if p == 0 else 0.75, label=label)
    pax.set_xlabel(tr("special.norms_x", lang), fontsize=pt(f), labelpad=1)
    pax.set_ylabel(tr("special.norms_y", lang), fontsize=pt(f), labelpad=1)
    pax.set_xticks(range(0, L, max(1, int(math.ceil(L / 6)))))
    pax.yaxis.set_major_locator(MaxNLocator(max(2, min(4, int(ph // (f * 2))))))
    pax.tick_params(labelsize=pt(f), pad=2)
    pax.grid(alpha=0.3)
    pax.legend(fontsize=pt(f), loc="upper center", ncol=2, frameon=False, handlelength=1.5, columnspacing=1.0,
               bbox_to_anchor=(0.5 - (left - pad) / 2 / pw, -(bottom_h) / ph), borderaxespad=0.0)
    return figure_to_rgb(fig)


__all__ = ["DEFAULT_FACTOR", "PrefixAttention", "prefix_attention", "special_tokens_picture", "transformer_blocks",
           "TokenNorms", "token_norms", "HighNormToken", "HighNormTokens", "high_norm_tokens", "norms_picture"]
