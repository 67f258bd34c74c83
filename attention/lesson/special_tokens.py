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
from torch import nn

from ..families import family_of, model_tokens
from ..capture import CaptureResult
from ..errors import MethodNotDefinedError
from ..layout import SELF, TokenLayout
from .figure import LABEL_SIZE, SMALL_SIZE, TEXT_SIZE, figure_to_rgb, new_figure
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


def prefix_attention(result: CaptureResult, image: int = 0) -> PrefixAttention:
    """What the CLS / DIST / register tokens attend to, and how much the patches attend to them.

    Reads the captured weights as they are (no re-normalisation). Raises MethodNotDefinedError when
    no self-attention layer has prefix tokens (a CNN, Swin, a ViT without CLS token).
    """
    layers = _prefix_layers(result)
    if not layers:
        raise MethodNotDefinedError(
            "this model has no special tokens (CLS, DIST or registers) in its self-attention layers, so there is "
            "nothing to show in the 'special tokens' step: its attention runs between image positions only.")
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


def special_tokens_picture(pa: PrefixAttention, max_layers: int = 12) -> np.ndarray:
    """RGB picture: top, each prefix token's attention map per layer (mean over heads); bottom, per
    prefix token a layer x head heat map of the attention the patch queries give it."""
    P, L = pa.attends_to.shape[:2]
    cols = _pick_layers(L, max_layers)
    width = float(np.clip(2.4 * len(cols) + 2.5, 11.0, 17.0))
    side = min(2.4, (width - 2.5) / len(cols))             # inches per small map
    H = pa.received.shape[2]
    heat_h = (width - 2.5) / P * H / L                       # height of an equal-aspect layer x head heat map
    top_h, bottom_h = P * (side + 0.55) + 1.0, float(np.clip(heat_h + 2.0, 3.4, 6.0))
    fig = new_figure(width, top_h + bottom_h)
    top, bottom = fig.subfigures(2, 1, height_ratios=[top_h, bottom_h])
    axes = top.subplots(P, len(cols), squeeze=False)
    for p in range(P):
        for j, l in enumerate(cols):
            ax = axes[p, j]
            a = pa.attends_to[p, l]
            ax.imshow(a, cmap="inferno", vmin=0, vmax=max(float(a.max()), 1e-12), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_xlabel(f"max {a.max():.2f}", fontsize=SMALL_SIZE - 2, labelpad=2)
            if p == 0:
                ax.set_title(f"L{l}", fontsize=TEXT_SIZE)
            if j == 0:
                ax.set_ylabel(pa.names[p], fontsize=LABEL_SIZE, color=token_color(pa.names[p]), fontweight="bold")
    sub = "" if len(cols) == L else f"; {len(cols)} of {L} layers"
    top.suptitle("What each special token looks at: its attention over the patches\n(mean over heads; each map "
                 f"scaled to its own max{sub})", fontsize=LABEL_SIZE)

    # heat maps of equal aspect, centred: spacer columns take the width they do not need
    target = min((width - 2.5) / P, (bottom_h - 2.0) * L / H)
    pad = max(0.0, (width - 2.5 - P * target) / 2.0) / target
    if pad > 0.05:
        allax = bottom.subplots(1, P + 2, squeeze=False, width_ratios=[pad] + [1.0] * P + [pad])[0]
        allax[0].set_axis_off()
        allax[-1].set_axis_off()
        bax = allax[1:-1]
    else:
        bax = bottom.subplots(1, P, squeeze=False)[0]
    rec = pa.received
    vmax = float(np.nanmax(rec)) if np.isfinite(rec).any() else 1.0
    cell_in = min((width - 2.0) / P / L, 3.4 / H)            # about the size of one heat-map cell
    fs = min(SMALL_SIZE, cell_in * 72 * 0.3)
    im = None
    for p in range(P):
        ax = bax[p]
        im = ax.imshow(rec[p].T, cmap="viridis", vmin=0, vmax=max(vmax, 1e-12), aspect="equal",
                       interpolation="nearest")
        ax.set_title(f"→ {pa.names[p]}", fontsize=LABEL_SIZE, color=token_color(pa.names[p]), fontweight="bold")
        ax.set_xlabel("layer", fontsize=TEXT_SIZE)
        if p == 0:
            ax.set_ylabel("head", fontsize=TEXT_SIZE)
        ax.set_xticks(range(0, L, max(1, int(math.ceil(L / 6)))))
        ax.set_yticks(range(0, H, max(1, int(math.ceil(H / 6)))))
        ax.tick_params(labelsize=SMALL_SIZE)
        if fs >= 9:
            for l in range(L):
                for h in range(H):
                    v = rec[p, l, h]
                    if np.isfinite(v):
                        ax.text(l, h, f"{v:.2f}", ha="center", va="center", fontsize=fs,
                                color="white" if v < 0.6 * vmax else "black")
    cb = bottom.colorbar(im, ax=list(bax), shrink=0.9)
    cb.ax.tick_params(labelsize=SMALL_SIZE)
    cb.set_label("attention weight", fontsize=TEXT_SIZE)
    bottom.suptitle(f"What attends to them: the mean attention weight a patch gives the token\n(per layer and head; "
                    f"uniform attention would give 1/{pa.num_tokens} = {pa.uniform:.3f})", fontsize=LABEL_SIZE)
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
        P = self.layout.num_prefix
        return self.norms[image, :, P:].reshape(self.norms.shape[1], *self.layout.grid)

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

    def describe(self, limit: int = 8) -> str:
        if not self.tokens:
            return f"No high-norm patch tokens ({self.rule})."
        lines = [f"{len(self.tokens)} high-norm patch token(s) ({self.rule}):"]
        for t in self.tokens[:limit]:
            lines.append(f"layer {t.layer}, patch ({t.row},{t.col}): norm {t.norm:.1f} = {t.ratio:.1f}x the median")
        if len(self.tokens) > limit:
            lines.append(f"... and {len(self.tokens) - limit} more")
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
    rule = f"patch-token norm > {factor:g}x the median patch-token norm of the same layer"
    return HighNormTokens(found, float(factor), medians.astype(np.float32), rule, tuple(search))


def norms_picture(tn: TokenNorms, flags: Optional[HighNormTokens] = None, image: int = 0) -> np.ndarray:
    """RGB picture: the patch-token norms of every block as maps (flagged tokens boxed in cyan), and
    below the norms per layer: median and max over the patches, each prefix token, the threshold."""
    flags = flags if flags is not None else high_norm_tokens(tn, image=image)
    maps = tn.patch_maps(image)
    L = maps.shape[0]
    ncols = min(L, 6 if L <= 12 else 8)
    nrows = int(math.ceil(L / ncols))
    fig = new_figure(17, 2.9 * nrows + 6.8)
    top, bottom = fig.subfigures(2, 1, height_ratios=[2.9 * nrows + 0.9, 5.9])
    axes = top.subplots(nrows, ncols, squeeze=False)
    flagged = {}
    for t in flags.tokens:
        flagged.setdefault(t.layer, []).append(t)
    for l in range(nrows * ncols):
        ax = axes.flat[l]
        if l >= L:
            ax.set_axis_off()
            continue
        m = maps[l]
        ax.imshow(m, cmap="magma", vmin=0, vmax=max(float(m.max()), 1e-12), interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"L{l}: median {np.median(m):.3g}, max {m.max():.3g}", fontsize=SMALL_SIZE)
        for t in flagged.get(l, []):
            ax.add_patch(Rectangle((t.col - 0.5, t.row - 0.5), 1, 1, fill=False, ec="cyan", lw=2.5))
    top.suptitle("Norm of every patch token after each block (each map scaled from 0 to its own max; "
                 "cyan box = flagged)", fontsize=LABEL_SIZE)

    ax = bottom.subplots()
    ls = np.arange(L)
    patch = tn.norms[image, :, tn.layout.num_prefix:]
    ax.plot(ls, np.median(patch, 1), "o-", color="tab:blue", lw=2.5, label="patches: median")
    ax.plot(ls, patch.max(1), "s--", color="tab:blue", lw=1.5, alpha=0.7, label="patches: max")
    ax.plot(ls, flags.factor * flags.medians, ":", color="gray", lw=2, label=f"threshold ({flags.factor:g}x median)")
    for p, name in enumerate(tn.names):
        ax.plot(ls, tn.norms[image, :, p], "^-", color=token_color(name), lw=1.8,
                alpha=1.0 if p == 0 else 0.75, label=name)
    ax.set_xlabel("layer (block)", fontsize=TEXT_SIZE)
    ax.set_ylabel("token norm (L2)", fontsize=TEXT_SIZE)
    ax.set_xticks(range(0, L, max(1, int(math.ceil(L / 16)))))
    ax.tick_params(labelsize=SMALL_SIZE)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=SMALL_SIZE - 1, loc="upper left", ncol=2 if len(tn.names) > 3 else 1)
    ax.set_title(flags.describe(limit=4), fontsize=SMALL_SIZE, loc="left")
    bottom.suptitle("Token norms per layer (Darcet et al. 2023: a few patch tokens with very high norms in the later "
                    "layers of large ViTs)", fontsize=LABEL_SIZE)
    return figure_to_rgb(fig)


__all__ = ["DEFAULT_FACTOR", "PrefixAttention", "prefix_attention", "special_tokens_picture", "transformer_blocks",
           "TokenNorms", "token_norms", "HighNormToken", "HighNormTokens", "high_norm_tokens", "norms_picture"]
