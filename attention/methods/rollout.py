"""Attention rollout (Abnar & Zuidema, 2020).

For each self-attention layer l (from ``start_layer``): fuse the heads, ``Â_l = fuse_h(A_l^h)``
(mean, max or min); optionally zero the smallest ``discard_ratio`` fraction of its entries, never
touching the CLS row (nor the rows of other prefix tokens named in ``query``); add the identity for
the residual connection and re-normalise every row, ``Ã_l = (Â_l + I) / rowsum(Â_l + I)``; multiply
in layer order, ``R = Ã_L · … · Ã_1``. The map is the CLS row of R over the patch tokens
(``query="auto"``; models without CLS: the mean over the patch query rows; any other query
``q``: ``qᵀ R`` over the patches, see `attention.methods.queries`).

Only one row of R is ever needed, so R is never formed: the row vector ``v = qᵀ`` is pushed through
the layers from the last to the first, ``v ← v · Ã_l`` (O(N²) per layer instead of O(N³)).

CaiT: its self-attention blocks run on the patch tokens only, then class-attention blocks update
the CLS token alone (``cls ← cls + CA(cls, [cls, patches])``, patches frozen). In the joint token
space [cls, patches] a self-attention layer acts on the patch rows (the CLS row is the identity)
and a class-attention layer on the CLS row (patch rows are the identity); the same fusion, discard
(never the CLS row), identity and row normalisation apply to each, and the map is the CLS row of
the product over the patches (the learned CLS token's own share, which carries no image content,
is dropped). Note that CaiT's talking-heads attention mixes the heads after the softmax; the maps
captured (and fused here) are the per-head softmax outputs before that mixing.

Not defined (MethodNotDefinedError): windowed attention (Swin), spatial-reduction attention (PVT,
Twins), channel attention (XCiT), fewer than two chained layers (a CNN with one attention block),
or layers whose token grids differ (hierarchical models).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from ..capture import AttentionMap, CaptureResult
from ..errors import MethodNotDefinedError
from ..layout import CHANNEL, CLASS, REDUCED, SELF, WINDOW, TokenLayout
from .base import MapResult, Method, MethodContext, register
from .fusion import fuse_heads
from .layers import grid_stride
from .queries import Query, query_weights, resolve_query
from .words import Phrase, phrase, range_words
from .words import query_words as query_phrase


def chained_or_reason(result: CaptureResult) -> tuple[Optional[list[AttentionMap]], Optional[Phrase]]:
    """(the layers rollout chains, in forward order, None), or (None, the phrase saying why rollout has no
    meaning for this capture: windowed, spatial-reduction or channel attention, fewer than two layers, token
    grids that change, self-attention after class attention)."""
    kinds = {m.kind for m in result.maps}
    if WINDOW in kinds:
        return None, phrase("method.why.rollout_window")
    if REDUCED in kinds:
        return None, phrase("method.why.rollout_reduced")
    if CHANNEL in kinds:
        return None, phrase("method.why.rollout_channel")
    layers = [m for m in result.maps if m.kind in (SELF, CLASS) and m.layout is not None]
    if len(layers) < 2:
        return None, phrase("method.why.rollout_few", n=len(layers))
    grid = layers[-1].layout.grid
    if any(m.layout.grid != grid for m in layers):
        return None, phrase("method.why.rollout_grids")
    seen_class = False
    for m in layers:
        if m.kind == CLASS:
            seen_class = True
        elif seen_class:
            return None, phrase("method.why.rollout_after_class")
    return layers, None


def rollout_layers(result: CaptureResult) -> list[AttentionMap]:
    """The layers rollout chains (forward order), or a clear error where rollout has no meaning."""
    layers, why = chained_or_reason(result)
    if why is not None:
        raise MethodNotDefinedError(why.text())
    return layers


def joint_layout(layers: list[AttentionMap]) -> TokenLayout:
    """The token space all chained layers live in: the layout with the most prefix tokens."""
    full = max((m.layout for m in layers), key=lambda l: len(l.special_names))
    for m in layers:
        for lay in (m.layout, m.query_layout):
            missing = [n for n in lay.special_names if n not in full.special_names]
            if missing:
                raise MethodNotDefinedError(
                    f"rollout cannot place tokens {missing} of {m.name} in one token sequence")
    return full


def token_positions(sub: TokenLayout, full: TokenLayout) -> list[int]:
    """Index in `full` of every token of `sub` (prefix tokens by name, then the patch grid)."""
    pos = [full.index(n) for n in sub.prefix_names]
    if sub.num_patches:
        pos += list(range(full.patch_slice.start, full.patch_slice.stop))
    return pos + [full.index(n) for n in sub.suffix_names]


@dataclass
class ChainOp:
    """One layer as an operator on the joint token space.

    Rows `q` (query tokens) become ``diag(scale) · (matrix + I)`` over the columns `k` (key tokens),
    with ``I`` the identity between equal tokens when ``identity`` is set and ``scale`` a per-row
    factor (None: 1); every other row is the identity. ``full``: q == k == every token.
    """

    q: list[int]
    k: list[int]
    matrix: torch.Tensor                  # (B, len(q), len(k))
    full: bool
    identity: bool = False
    scale: Optional[torch.Tensor] = None  # (B, len(q))

    def diag(self) -> tuple[list[int], list[int]]:
        """(row, col) pairs of ``matrix`` that are the same token (where the identity goes)."""
        kpos = {t: j for j, t in enumerate(self.k)}
        pairs = [(i, kpos[t]) for i, t in enumerate(self.q) if t in kpos]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def row_sums(self) -> torch.Tensor:
        """(B, len(q)) row sums of ``matrix + I`` (identity included when set)."""
        s = self.matrix.sum(dim=-1)
        if self.identity:
            if self.full:
                s = s + 1.0
            else:
                r, _ = self.diag()
                s = s.clone()
                s[:, r] += 1.0
        return s


def chain_ops(layers: list[AttentionMap], full: TokenLayout, matrices: list[torch.Tensor],
              identity: bool = True) -> list[ChainOp]:
    ops = []
    T = full.num_tokens
    for m, a in zip(layers, matrices):
        q = token_positions(m.query_layout, full)
        k = token_positions(m.layout, full)
        ops.append(ChainOp(q, k, a, len(q) == T and len(k) == T, identity))
    return ops


def propagate(ops: list[ChainOp], v: torch.Tensor) -> torch.Tensor:
    """``v · Op_L · … · Op_1`` for a batch of row vectors ``v`` (B, T) (ops in forward order)."""
    for op in reversed(ops):
        vq = v if op.full else v[:, op.q]
        if op.scale is not None:
            vq = vq * op.scale
        out = torch.bmm(vq.unsqueeze(1), op.matrix).squeeze(1)
        if op.identity:
            if op.full:
                out = out + vq
            else:
                r, c = op.diag()
                out[:, c] += vq[:, r]
        if op.full:
            v = out
        else:
            v = v.clone()
            v[:, op.q] = 0.0
            v[:, op.k] += out
    return v


def _kth_smallest(flat: torch.Tensor, k: int) -> torch.Tensor:
    """(B,) k-th smallest value (1-based) of each row of (B, E); numpy's introselect on CPU (10x kthvalue)."""
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        part = np.partition(flat.detach().numpy(), k - 1, axis=1)[:, k - 1]
        return torch.from_numpy(np.ascontiguousarray(part))
    return flat.kthvalue(k, dim=1).values


def discard_smallest(a: torch.Tensor, ratio: float, keep_rows: list[int] = ()) -> torch.Tensor:
    """Zero (in place) the smallest `ratio` of the entries of each (Nq, Nk) matrix, rows `keep_rows` excluded.

    ``k = int(ratio · number of eligible entries)``; every eligible entry ``<=`` the k-th smallest
    eligible value is set to zero (ties at the threshold go too).
    """
    if ratio <= 0:
        return a
    if ratio >= 1:
        raise ValueError(f"discard_ratio must be in [0, 1), got {ratio}")
    B, Nq, Nk = a.shape
    keep = sorted(set(int(r) % Nq for r in keep_rows))
    rows = [r for r in range(Nq) if r not in keep]
    if not rows:
        return a
    leading = keep == list(range(len(keep)))  # the usual case: CLS is row 0, the rest is contiguous
    sub = a[:, len(keep):, :] if leading else a[:, rows, :]
    k = int(ratio * sub.shape[1] * Nk)
    if k == 0:
        return a
    thr = _kth_smallest(sub.reshape(B, -1), k).to(a.device, a.dtype).view(B, 1, 1)
    if leading:
        sub.mul_(sub > thr)       # a view: zeroes the entries of `a` itself
    else:
        a[:, rows, :] = sub * (sub > thr)
    return a


def _protected_rows(m: AttentionMap, full: TokenLayout, query: Query) -> list[int]:
    """Rows of `m`'s matrix that discard must not touch: the CLS row and prefix tokens of the query."""
    names = {"cls"}
    if isinstance(query, str) and query not in ("patch_mean", "prefix_mean", "auto"):
        names |= {n.strip() for n in query.split("+")}
    elif query == "prefix_mean":
        names |= set(full.prefix_names)
    return [i for i, n in enumerate(m.query_layout.prefix_names) if n in names]


def finish(v: torch.Tensor, full: TokenLayout) -> torch.Tensor:
    """(B, T) token vector -> (B, gh, gw) map over the patches."""
    return v[:, full.patch_slice].reshape(v.shape[0], *full.grid)


def rollout_tokens(result: CaptureResult, head_fusion: str = "mean", discard_ratio: float = 0.0,
                   start_layer: int = 0, add_identity: bool = True,
                   query: Query = "auto", end_layer: Optional[int] = None) -> tuple[torch.Tensor, TokenLayout]:
    """(B, T) row ``qᵀ R`` over *all* tokens of the joint layout (prefix tokens first), and that layout.

    Every row of R sums to 1, so this vector does too; `rollout` keeps its patch part.
    """
    layers = rollout_layers(result)
    full = joint_layout(layers)
    query = resolve_query(full, query)
    q0 = query_weights(full, query, "this model")
    n = len(layers)
    end = n - 1 if end_layer is None else (end_layer + n if end_layer < 0 else end_layer)
    if not 0 <= end < n:
        raise ValueError(f"end_layer {end_layer} is outside the {n} chained layers")
    layers = layers[start_layer:end + 1]
    if not layers:
        raise ValueError(f"start_layer {start_layer} is past end layer {end}")
    mats = []
    for m in layers:
        a = fuse_heads(m.weights.detach(), head_fusion)
        if a.data_ptr() == m.weights.data_ptr():  # never modify the captured tensor in place
            a = a.clone()
        a = discard_smallest(a, discard_ratio, _protected_rows(m, full, query))
        mats.append(a)
    ops = chain_ops(layers, full, mats, identity=add_identity)
    for op in ops:  # row normalisation, kept as a per-row factor instead of a pass over the matrix
        op.scale = 1.0 / op.row_sums().clamp_min(1e-12)
    B = mats[0].shape[0]
    return propagate(ops, q0.to(mats[0].device).expand(B, -1).contiguous()), full


def rollout(result: CaptureResult, head_fusion: str = "mean", discard_ratio: float = 0.0,
            start_layer: int = 0, add_identity: bool = True, query: Query = "auto",
            end_layer: Optional[int] = None) -> torch.Tensor:
    """(B, gh, gw) rollout map ``qᵀ Ã_L ⋯ Ã_s`` over the patches; see the module docstring for the formula.

    ``head_fusion``: "mean" | "max" | "min"; ``discard_ratio`` in [0, 1); ``start_layer`` / ``end_layer``:
    indices (among the chained layers; negative counts from the end) of the first and last layer
    multiplied (None: the last, L); ``query``: "auto" (CLS, else the mean over patch rows), "cls", "dist",
    "cls+dist", "reg0", "prefix_mean", "patch_mean" or a patch (row, col).
    """
    v, full = rollout_tokens(result, head_fusion, discard_ratio, start_layer, add_identity, query, end_layer)
    return finish(v, full)


def chained_range(result: CaptureResult, layers: list[AttentionMap], start: Optional[int],
                  end: Optional[int]) -> tuple[int, int]:
    """(first, last) indices among the chained `layers` for a range given in `spatial_layers` numbering.

    The range keeps the chained layers whose position among the spatial layers lies in
    ``[start, end]`` (None: the first / the last); at least one layer is kept.
    """
    from .layers import resolve_layer
    order = {id(m): k for k, m in enumerate(result.maps)}
    at = [order[id(m)] for m in layers]
    lo = 0 if start is None else resolve_layer(result, start)[1]
    hi = at[-1] if end is None else resolve_layer(result, end)[1]
    first = next((k for k, i in enumerate(at) if i >= lo), len(at) - 1)
    last = max((k for k, i in enumerate(at) if i <= hi), default=0)
    if last < first:
        raise ValueError(f"the layer range starts at {start} after it ends at {end}")
    return first, last


def rollout_reason(result: CaptureResult) -> Optional[Phrase]:
    """Why rollout has no meaning for this capture, as a phrase (None: it has one)."""
    return chained_or_reason(result)[1]


def rollout_defined(result: CaptureResult, lang: str = "en") -> Optional[str]:
    """None where rollout has a meaning for this capture, else the reason, in `lang`."""
    why = rollout_reason(result)
    return None if why is None else why.text(lang)


def layer_range_words(first: int, last: int, n: int, lang: str = "en") -> str:
    """"through layer 11 of 0–11, from layer 3" in `lang` (`attention.methods.words.range_words`)."""
    return range_words(first, last, n).text(lang)


def query_words(query, lang: str = "en") -> str:
    """"default query", "query CLS", "query patch (3, 4)" … in `lang`."""
    return query_phrase(query).text(lang)


class Rollout(Method):
    """``qᵀ Ã_e ⋯ Ã_s`` over the patches, layers ``s … e`` (``start_layer`` … ``end_layer``); see the
    module docstring. ``head``: the fusion ("mean", "max", "min"; a head number falls back to the mean);
    options: ``discard_ratio``, ``add_identity``."""

    name = "rollout"
    label = "Rollout"
    title = "Attention rollout"
    summary = "attention multiplied through the layers, with the residual as identity (Abnar & Zuidema 2020)"
    uses_layer_range = True
    order = 10

    def defined_for(self, result: CaptureResult) -> Optional[str]:
        return rollout_defined(result)

    def reason(self, result: CaptureResult) -> Optional[Phrase]:
        return rollout_reason(result)

    def compute(self, ctx: MethodContext) -> MapResult:
        result = ctx.result
        layers = rollout_layers(result)
        first, last = chained_range(result, layers, ctx.start_layer, ctx.end_layer)
        fusion = ctx.head if isinstance(ctx.head, str) else "mean"
        ratio = float(ctx.options.get("discard_ratio", 0.0))
        identity = bool(ctx.options.get("add_identity", True))
        query = ctx.query
        qkey = query if isinstance(query, str) else tuple(int(v) for v in query)
        maps = ctx.memo(("rollout", fusion, first, last, qkey, ratio, identity),
                        lambda: rollout(result, head_fusion=fusion, discard_ratio=ratio, start_layer=first,
                                        add_identity=identity, query=query, end_layer=last))
        full = joint_layout(layers)
        fused = phrase("method.words.fused" if isinstance(ctx.head, str) else "method.words.fused_forced",
                       fusion=phrase(f"method.fusion.{fusion}"))
        words = (range_words(first, last, len(layers)), fused, query_phrase(query))
        words += (phrase("method.rollout.discarded", ratio=ratio),) if ratio else ()
        return MapResult(maps, self.name, full, grid_stride(result, maps.shape[-2:]),
                         None if isinstance(query, str) else qkey,
                         details={"start_layer": first, "end_layer": last,
                                  "layers": [m.name for m in layers[first:last + 1]]},
                         words=words)


register(Rollout())

__all__ = ["Rollout", "chained_range", "rollout_defined", "rollout_reason", "chained_or_reason", "layer_range_words", "query_words", "rollout",
           "rollout_tokens", "rollout_layers", "joint_layout", "discard_smallest", "propagate", "chain_ops",
           "ChainOp", "finish"]
