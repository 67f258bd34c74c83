"""The family descriptor: everything one model family's attention needs, in one object.

A `Family` says, for the models it `matches`:
- `tokens(model, (H, W))`: the token sequence the model builds (prefix tokens and their names, patch
  grid, stride) for that input size;
- `describe(session, module, weights, site)`: what one recorded attention tensor is (`MapSpec`: kind,
  key and query layouts, windows, and whether that is known or inferred), or None if it is not attention;
- `finish(session, maps)`: which recorded tensors are *the* attention shown to users (default: all);
- `instrument(model)`: per-capture set-up that a family needs beyond the op capture (rare; returns undos);
- for the rest of the library: `blocks` (the residual stream, for token norms), `gradcam_target`,
  `position_embedding`, `projector` (q/k/v of one attention module, for the lesson's step by step).

The base class is also the descriptor of *unknown* models: it infers layouts from shapes alone
(`infer_layout`), labelled ``inferred``, and leaves ``unknown`` what fits no grid.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional

import torch
from torch import nn

from ..errors import MethodNotDefinedError
from ..layout import (CHANNEL, CLASS, INFERRED, KNOWN, POOLING, REDUCED, SELF, UNKNOWN, WINDOW, ModelTokens,
                      TokenLayout, WindowInfo)


@dataclass(frozen=True)
class MapSpec:
    """What one recorded attention tensor is. ``cacheable``: the same for every call with the same
    module, shape and input size (so it is worked out once per model)."""

    kind: str
    layout: Optional[TokenLayout]
    query_layout: Optional[TokenLayout] = None
    window: Optional[WindowInfo] = None
    source: str = KNOWN
    cacheable: bool = True
    #: heads per window where the op's tensor folds windows into its head axis ((B*nW*heads, n, n) kernels):
    #: the capture views the weights as (B*nW, heads, n, n)
    heads: Optional[int] = None


@dataclass
class Recorded:
    """One call of an attention module: its inputs and output (what a `Family.projector` works from)."""

    args: tuple = ()
    kwargs: Optional[dict] = None
    output: object = None


@dataclass(frozen=True)
class PositionEmbedding:
    """A model's absolute position embedding: ``table`` (positions, D), prefix positions first."""

    table: torch.Tensor              # (num_prefix_positions + gh * gw, D), float32, CPU, detached
    num_prefix_positions: int        # positions of prefix tokens in the table (0: patches only)
    grid: tuple[int, int]            # the patch grid the table was made for
    learned: bool                    # a trained parameter (False: a fixed buffer)
    source: str                      # attribute it was read from

    @property
    def patch_table(self) -> torch.Tensor:
        """(gh * gw, D) rows of the patch positions, row-major."""
        return self.table[self.num_prefix_positions:]


def prefix_names_guess(n: int) -> tuple[str, ...]:
    """Names for ``n`` prefix tokens of an unknown model: a CLS token first is by far the commonest."""
    return (("cls",) + tuple(f"tok{i}" for i in range(1, n))) if n else ()


@lru_cache(maxsize=4096)
def infer_grid(num_patches: int, hw: tuple[int, int]) -> Optional[tuple[tuple[int, int], tuple[float, float]]]:
    """A (gh, gw) grid with gh * gw = num_patches that an integer stride s lays over an (H, W) input
    ((gh, gw) = (H // s, W // s) or both rounded up), with the cell size (H / gh, W / gw); None if none fits."""
    H, W = hw
    if num_patches <= 0:
        return None
    for s in range(1, max(H, W) + 1):
        for gh, gw in ((H // s, W // s), (-(-H // s), -(-W // s))):  # no padding / padding to whole cells
            if gh > 0 and gw > 0 and gh * gw == num_patches:
                return (gh, gw), (H / gh, W / gw)  # cells laid evenly over the input
        if (H // s) * (W // s) < num_patches:
            break
    return None


#: prefix-token counts seen in practice: none, CLS, CLS + DIST, 4 registers, CLS + 4 registers
PREFIX_COUNTS = (0, 1, 2, 4, 5)


@lru_cache(maxsize=4096)
def infer_layout(num_tokens: int, hw: tuple[int, int]) -> Optional[TokenLayout]:
    """Prefix tokens + a patch grid fitted to ``num_tokens`` and the input size: the fewest prefix tokens
    (of `PREFIX_COUNTS`) for which the rest forms a grid an integer stride lays over the input."""
    for p in PREFIX_COUNTS:
        if p >= num_tokens:
            break
        g = infer_grid(num_tokens - p, hw)
        if g is not None:
            return TokenLayout(prefix_names_guess(p), g[0], g[1])
    return None


def key_grid_like(num_keys: int, query_grid: tuple[int, int]) -> tuple[int, int]:
    """Grid of reduced keys: the factorisation of ``num_keys`` closest to the queries' aspect ratio."""
    h, w = query_grid
    best = None
    for kh in range(1, num_keys + 1):
        if num_keys % kh == 0:
            err = abs(math.log((kh / (num_keys // kh)) / (h / max(w, 1))))
            if best is None or err < best[0]:
                best = (err, (kh, num_keys // kh))
    return best[1]


def reduced_spec(q_layout: TokenLayout, num_keys: int, k_grid: Optional[tuple[int, int]] = None,
                 source: str = INFERRED) -> MapSpec:
    """Spatial-reduction attention: queries on ``q_layout``, keys on a coarser grid over the same area."""
    k_grid = k_grid or key_grid_like(num_keys, q_layout.grid)
    qh, qw = q_layout.grid
    k_stride = (q_layout.stride[0] * qh / k_grid[0], q_layout.stride[1] * qw / k_grid[1])
    return MapSpec(REDUCED, TokenLayout((), k_grid, k_stride), TokenLayout((), q_layout.grid, q_layout.stride),
                   source=source)


class Family:
    """A model family's descriptor. The base class handles unknown models by inference."""

    name = "generic"
    #: higher is tried first
    priority = 0

    def matches(self, model: nn.Module) -> bool:
        return False

    # -- capture ------------------------------------------------------------------------------------
    def tokens(self, model: nn.Module, hw: tuple[int, int]) -> Optional[ModelTokens]:
        own = getattr(model, "attention_tokens", None)  # models that describe themselves
        if callable(own):
            return own(hw)
        p = getattr(model, "patch_size", None)  # models that declare patch_size / num_prefix_tokens
        if isinstance(p, (int, tuple, list)):
            ph, pw = (p, p) if isinstance(p, int) else (int(p[0]), int(p[1]))
            n = int(getattr(model, "num_prefix_tokens", 0) or 0)
            return ModelTokens(prefix_names_guess(n), (hw[0] // ph, hw[1] // pw), (float(ph), float(pw)))
        return None

    def instrument(self, model: nn.Module) -> list[Callable[[], None]]:
        return []

    def finish(self, session, maps: list) -> list:
        return list(maps)

    def describe(self, session, module: nn.Module, weights: torch.Tensor, site) -> Optional[MapSpec]:
        """Known token sequence first (the family's `tokens`), then inference from shapes."""
        X, heads, nq, nk = weights.shape
        known = session.tokens.grid is not None
        channel = self.channel_attention(module, weights, site)
        if channel:
            return MapSpec(CHANNEL, None, source=KNOWN if known else INFERRED)
        if X != session.batch:
            return MapSpec(WINDOW, None, source=UNKNOWN)
        k_layout, source = self._sequence_layout(session, nk)
        if nq == nk:
            return MapSpec(SELF, k_layout, source=source)
        if k_layout is not None and nq <= k_layout.num_prefix:
            return MapSpec(CLASS, k_layout, TokenLayout(k_layout.prefix_names[:nq], (0, 0), k_layout.stride),
                           source=source)
        q_layout, q_source = self._sequence_layout(session, nq)
        if q_layout is not None and nk < nq and q_layout.num_prefix == 0:
            return reduced_spec(q_layout, nk, source=INFERRED)
        if k_layout is not None and nq < nk:
            return MapSpec(POOLING, k_layout, TokenLayout(tuple(f"query{i}" for i in range(nq)) if nq > 1
                                                          else ("query",), (0, 0), k_layout.stride), source=source)
        return MapSpec(SELF if nq == nk else POOLING, None, source=UNKNOWN)

    def _sequence_layout(self, session, n: int) -> tuple[Optional[TokenLayout], str]:
        layout = session.layout_for(n)
        if layout is not None:
            return layout, KNOWN
        layout = infer_layout(n, session.input_hw)
        return (layout, INFERRED) if layout is not None else (None, UNKNOWN)

    def channel_attention(self, module: nn.Module, weights: torch.Tensor, site) -> bool:
        """Cross-covariance (XCiT-style) attention: a (C/h x C/h) matrix where the module's input is a
        (B, N, C) token sequence with N different from the matrix size."""
        X, heads, nq, nk = weights.shape
        if nq != nk:
            return False
        args = site.inputs(module)
        x = args[0] if args and isinstance(args[0], torch.Tensor) else None
        return x is not None and x.dim() == 3 and x.shape[1] != nk and x.shape[2] == heads * nk

    # -- beyond capture -----------------------------------------------------------------------------
    def blocks(self, model: nn.Module) -> list[tuple[str, nn.Module]]:
        """The flat stack of transformer blocks whose outputs are the token sequence (the residual stream)."""
        names = {id(m): n for n, m in model.named_modules()}
        stack = next((m.layers for m in model.modules() if isinstance(m, nn.TransformerEncoder)), None)
        if stack is None or len(stack) == 0:
            raise MethodNotDefinedError(
                f"{type(model).__name__} has no flat stack of transformer blocks over one token sequence "
                "(ViT-style), so there are no per-layer token norms to show (hierarchical models merge tokens "
                "between stages; a CNN has no tokens).")
        return [(names.get(id(b), f"block{i}"), b) for i, b in enumerate(stack)]

    def gradcam_target(self, model: nn.Module) -> nn.Module:
        """The layer whose activations Grad-CAM uses: the last conv of an unknown model."""
        enc = [m for m in model.modules() if isinstance(m, nn.TransformerEncoderLayer)]
        if enc:
            return enc[-1].norm1
        convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
        if convs:
            return convs[-1]
        raise MethodNotDefinedError("Grad-CAM needs a target layer; none found (pass target_layer=...)")

    def position_embedding(self, model: nn.Module) -> Optional[PositionEmbedding]:
        """A learned ``pos_embed`` (1, N, D): prefix rows for the prefix tokens, then a square grid."""
        pe = getattr(model, "pos_embed", None)
        if not isinstance(pe, torch.Tensor) or pe.dim() != 3:
            return None
        t = self.tokens(model, (224, 224))
        n, n_prefix = pe.shape[1], len(t.prefix_names) if t is not None else 0
        for p in (n_prefix, 0):
            g = math.isqrt(n - p)
            if g * g == n - p and g > 0:
                return PositionEmbedding(pe.detach().float().cpu()[0], p, (g, g),
                                         isinstance(pe, nn.Parameter) and pe.requires_grad, "pos_embed")
        return None

    def projector(self, module: nn.Module) -> Optional[Callable]:
        """``fn(module, rec: Recorded) -> (q, k, v, scale, project, output)``: q, k, v (B, H, N, d) of this
        attention module recomputed from its own weights and input, the score scale, ``project(z)`` that
        turns Σ a v (B, H, N, d) into the module's output, and that output; None if the family cannot."""
        return None


__all__ = ["Family", "MapSpec", "PositionEmbedding", "Recorded", "infer_layout", "infer_grid", "key_grid_like",
           "reduced_spec", "prefix_names_guess"]
