"""Head diagnostics: per layer and head, what does each head look at?

For every captured layer l and head h (arrays of shape (layers, max heads), NaN where a layer has
fewer heads or a statistic does not apply), averaged over the batch:

* ``entropy`` (nats): ``H = -Σ_j p_j log p_j`` of the attention over the *patch* keys, re-normalised
  to sum to 1 (``p_j = A_ij / Σ_patches A_ik``). Query: the CLS row where the layer's queries
  include CLS (CaiT's class attention too); otherwise the mean of ``H`` over the patch queries
  (Swin: each query over its own window; pooling: the single query). ``entropy_normalized`` divides
  by ``log(number of patch keys the query can see)``: 1 = uniform, 0 = one patch.
* ``mean_distance`` (input pixels; ViT paper, Fig. 7): ``d_i = Σ_j p_ij ‖pos_i − pos_j‖`` with
  ``p`` as above over the patch keys, averaged over the patch queries i; ``pos`` is the centre of a
  grid cell in model-input pixels, ``((r + ½)·stride_y, (c + ½)·stride_x)`` (Swin: the un-shifted
  stage position, with the stage's stride; PVT: queries and keys on their own grids). NaN where the
  queries have no position (CaiT's class attention, pooling).
* ``prefix_mass``: ``Σ_{j ∈ prefix} A_ij`` (CLS, DIST, registers; raw weights), averaged over the
  patch queries (all queries where there are none); ``register_mass`` the same over the register
  tokens only. NaN where the layout has no such tokens.
* ``object_fraction`` (when a mask is given): ``Σ_j p_j m_j`` with ``p`` as for ``entropy`` (same
  queries) and ``m_j`` the fraction of key cell j covered by the object mask (the mask, at the
  input size or any grid, area-averaged onto the layer's key grid).

Ranking helpers: `most_object_focused`, `most_global`, `most_local`, `looks_at_registers`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F

from .capture import AttentionMap, CaptureResult
from .layout import CHANNEL, CLASS, POOLING, REDUCED, SELF, WINDOW, TokenLayout, TokenWindows


@dataclass
class HeadStats:
    """Per-(layer, head) statistics; every array is (layers, max heads), NaN where not applicable."""

    layer_names: list[str]
    kinds: list[str]
    num_heads: np.ndarray
    entropy: np.ndarray
    entropy_normalized: np.ndarray
    mean_distance: np.ndarray
    prefix_mass: np.ndarray
    register_mass: np.ndarray
    object_fraction: Optional[np.ndarray] = None
    notes: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return self.entropy.shape

    def to_dict(self) -> dict:
        out = {"layer_names": self.layer_names, "kinds": self.kinds, "num_heads": self.num_heads.tolist()}
        for k in ("entropy", "entropy_normalized", "mean_distance", "prefix_mass", "register_mass", "object_fraction"):
            v = getattr(self, k)
            out[k] = None if v is None else np.where(np.isnan(v), None, v).tolist()
        return out


@dataclass
class _Groups:
    """A layer as G groups (1, or Swin's windows) of (Q queries × K keys), with positions."""

    P: torch.Tensor          # (B, G, heads, Q, K) attention weights
    kpatch: torch.Tensor     # (G, K) bool: key is a patch with a position
    kpos: torch.Tensor       # (G, K, 2) key positions in input pixels
    kcell: torch.Tensor      # (G, K) flat index into the key grid, -1 for non-patch keys
    kgrid: tuple[int, int]
    qpatch: torch.Tensor     # (G, Q) bool: query is a patch with a position
    qpos: torch.Tensor       # (G, Q, 2)
    sel: torch.Tensor        # (G, Q) weights (sum 1) of the queries entropy / object fraction read
    prefix: list[int]
    registers: list[int]


def token_centres(layout: TokenLayout) -> torch.Tensor:
    """(num_tokens, 2) pixel centres of the layout's tokens (prefix tokens: 0)."""
    gh, gw = layout.grid
    sy, sx = layout.stride
    r, c = torch.meshgrid(torch.arange(gh, dtype=torch.float64), torch.arange(gw, dtype=torch.float64), indexing="ij")
    pos = torch.stack([(r.flatten() + 0.5) * sy, (c.flatten() + 0.5) * sx], dim=1)
    return torch.cat([torch.zeros(layout.num_prefix, 2, dtype=torch.float64), pos,
                      torch.zeros(layout.num_suffix, 2, dtype=torch.float64)])   # tokens after the patches


def _patch_mask(layout: TokenLayout) -> torch.Tensor:
    m = torch.zeros(layout.num_tokens, dtype=torch.bool)
    m[layout.patch_slice] = True
    return m


def _groups(m: AttentionMap) -> Optional[_Groups]:
    w = m.weights.detach().double().cpu()  # small: statistics run on the CPU
    if m.kind == WINDOW:
        info = m.window
        if info is None:
            return None
        nW = info.windows_per_image
        B = w.shape[0] // nW
        n = w.shape[-1]
        P = w.view(B, nW, w.shape[1], n, n)
        sy, sx = m.layout.stride if m.layout is not None else (1.0, 1.0)
        wh, ww = info.window
        gidx, pidx = torch.meshgrid(torch.arange(nW), torch.arange(n), indexing="ij")
        wy, wx = gidx // (info.padded[1] // ww), gidx % (info.padded[1] // ww)
        sy_, sx_ = wy * wh + pidx // ww, wx * ww + pidx % ww       # shifted (padded) position
        valid = (sy_ < info.grid[0]) & (sx_ < info.grid[1])        # padding tokens have no position
        r = (sy_ + info.shift[0]) % info.grid[0]                   # original stage-grid position
        c = (sx_ + info.shift[1]) % info.grid[1]
        pos = torch.stack([(r + 0.5) * sy, (c + 0.5) * sx], dim=-1).double()
        cell = torch.where(valid, r * info.grid[1] + c, torch.full_like(r, -1))
        if isinstance(info, TokenWindows):   # tokens listed one by one (a window's own CLS has no position)
            cell = torch.tensor(info.positions(), dtype=torch.long)
            valid, r, c = cell >= 0, cell.clamp(min=0) // info.grid[1], cell.clamp(min=0) % info.grid[1]
            pos = torch.stack([(r + 0.5) * sy, (c + 0.5) * sx], dim=-1).double()
        sel = valid.double() / valid.sum()
        return _Groups(P, valid, pos, cell, tuple(info.grid), valid, pos, sel, [], [])
    if m.kind not in (SELF, CLASS, REDUCED, POOLING) or m.layout is None or m.layout.num_patches == 0:
        return None
    L, QL = m.layout, m.query_layout
    P = w.unsqueeze(1)  # G = 1
    kpatch = _patch_mask(L)
    cell = torch.full((L.num_tokens,), -1, dtype=torch.long)
    cell[L.patch_slice] = torch.arange(L.num_patches)
    if m.kind == POOLING or QL is None:
        Q = w.shape[-2]
        qpatch = torch.zeros(Q, dtype=torch.bool)
        qpos = torch.zeros(Q, 2, dtype=torch.float64)
        sel = torch.full((Q,), 1.0 / Q, dtype=torch.float64)
    else:
        qpatch, qpos = _patch_mask(QL), token_centres(QL)
        sel = torch.zeros(QL.num_tokens, dtype=torch.float64)
        if QL.cls_index is not None:
            sel[QL.cls_index] = 1.0
        elif qpatch.any():
            sel[qpatch] = 1.0 / qpatch.sum()
        else:
            sel[:] = 1.0 / QL.num_tokens
    return _Groups(P, kpatch[None], token_centres(L)[None], cell[None], tuple(L.grid), qpatch[None], qpos[None], sel[None],
                   L.special_indices(), list(L.registers))


def _coverage(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, gh·gw) fraction of each grid cell covered by the mask (B, H, W)."""
    m = mask.double().unsqueeze(1)
    if m.shape[-2] >= grid[0] and m.shape[-1] >= grid[1]:
        cov = F.adaptive_avg_pool2d(m, grid)
    else:
        cov = F.interpolate(m, size=grid, mode="nearest")
    return cov.flatten(1)


def _layer_stats(g: _Groups, mask: Optional[torch.Tensor]) -> dict[str, torch.Tensor]:
    """(heads,) tensors of every statistic for one layer (batch-averaged)."""
    P = g.P                                   # (B, G, h, Q, K)
    kp = g.kpatch.to(P.dtype)[:, None, :]     # (G, 1, K)
    Pp = P * kp[None, :, None]                # patch keys only
    s = Pp.sum(-1, keepdim=True)
    p = Pp / s.clamp_min(1e-300)
    logp = torch.where(p > 0, p.log(), torch.zeros_like(p))
    ent = -(p * logp).sum(-1)                 # (B, G, h, Q)
    nvis = g.kpatch.sum(-1).to(P.dtype)       # (G,) patch keys a query can see
    ent_n = ent / nvis.clamp_min(2).log()[None, :, None, None]
    sel = g.sel[None, :, None, :]             # (1, G, 1, Q)
    out = {"entropy": (ent * sel).sum((1, 3)).mean(0), "entropy_normalized": (ent_n * sel).sum((1, 3)).mean(0)}

    qp = g.qpatch.to(P.dtype)                 # (G, Q)
    if qp.sum() > 0:
        D = torch.linalg.vector_norm(g.qpos[:, :, None, :] - g.kpos[:, None, :, :], dim=-1)  # (G, Q, K)
        d = (p * D[None, :, None]).sum(-1)    # (B, G, h, Q)
        out["mean_distance"] = (d * qp[None, :, None]).sum((1, 3)).mean(0) / qp.sum()
        mass_q = qp / qp.sum()
    else:
        out["mean_distance"] = torch.full((P.shape[2],), float("nan"), dtype=P.dtype)
        mass_q = torch.full_like(qp, 1.0 / qp.numel())
    for name, idx in (("prefix_mass", g.prefix), ("register_mass", g.registers)):
        if idx:
            mass = P[..., idx].sum(-1)        # (B, G, h, Q)
            out[name] = (mass * mass_q[None, :, None]).sum((1, 3)).mean(0)
        else:
            out[name] = torch.full((P.shape[2],), float("nan"), dtype=P.dtype)
    if mask is not None:
        cov = _coverage(mask, g.kgrid)        # (Bm, cells)
        if cov.shape[0] == 1:
            cov = cov.expand(P.shape[0], -1)
        kc = torch.gather(cov, 1, g.kcell.clamp_min(0).flatten()[None].expand(cov.shape[0], -1))
        kc = kc.view(cov.shape[0], *g.kcell.shape) * g.kpatch.to(P.dtype)  # (B, G, K)
        frac = (p * kc[:, :, None, None, :]).sum(-1)                            # (B, G, h, Q)
        out["object_fraction"] = (frac * sel).sum((1, 3)).mean(0)
    return out


def _as_mask(mask, batch: int) -> Optional[torch.Tensor]:
    if mask is None:
        return None
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if m.dim() == 2:
        m = m[None]
    if m.dim() != 3 or m.shape[0] not in (1, batch):
        raise ValueError(f"mask must be (H, W) or (B, H, W), got {tuple(m.shape)}")
    m = m.double().cpu()
    if m.max() > 1:
        m = (m > 0).double()  # a 0/255 uint8 mask
    return m


def head_stats(result: CaptureResult, mask: Union[None, np.ndarray, torch.Tensor] = None) -> HeadStats:
    """Statistics for every captured layer and head of `result`; formulas in the module docstring.

    ``mask``: an object mask (H, W) or (B, H, W), bool or 0/1 or 0/255, at the model-input size or
    at any grid (e.g. the patch grid); enables ``object_fraction``.
    """
    maps = result.maps
    B = result.logits.shape[0]
    mask_t = _as_mask(mask, B)
    hmax = max((m.num_heads for m in maps), default=0)
    keys = ["entropy", "entropy_normalized", "mean_distance", "prefix_mass", "register_mass"]
    if mask_t is not None:
        keys.append("object_fraction")
    arrays = {k: np.full((len(maps), hmax), np.nan) for k in keys}
    notes = {}
    for i, m in enumerate(maps):
        g = _groups(m) if m.kind != CHANNEL else None
        if g is None:
            notes[m.name] = f"{m.kind} attention: no spatial statistics"
            continue
        st = _layer_stats(g, mask_t)
        for k in keys:
            arrays[k][i, : m.num_heads] = st[k].numpy()
    return HeadStats([m.name for m in maps], [m.kind for m in maps], np.array([m.num_heads for m in maps]),
                     arrays["entropy"], arrays["entropy_normalized"], arrays["mean_distance"],
                     arrays["prefix_mass"], arrays["register_mass"], arrays.get("object_fraction"), notes)


def _rank(values: Optional[np.ndarray], k: int, descending: bool) -> list[tuple[int, int, float]]:
    if values is None:
        raise ValueError("that statistic was not computed (object_fraction needs a mask)")
    flat = [(i, h, float(v)) for (i, h), v in np.ndenumerate(values) if not np.isnan(v)]
    flat.sort(key=lambda t: -t[2] if descending else t[2])
    return flat[:k]


def most_object_focused(stats: HeadStats, k: int = 5) -> list[tuple[int, int, float]]:
    """The k (layer, head, object_fraction) with the largest share of attention on the object."""
    return _rank(stats.object_fraction, k, True)


def most_global(stats: HeadStats, k: int = 5) -> list[tuple[int, int, float]]:
    """The k (layer, head, mean_distance) that look furthest (pixels)."""
    return _rank(stats.mean_distance, k, True)


def most_local(stats: HeadStats, k: int = 5) -> list[tuple[int, int, float]]:
    """The k (layer, head, mean_distance) that look nearest (pixels)."""
    return _rank(stats.mean_distance, k, False)


def looks_at_registers(stats: HeadStats, k: int = 5) -> list[tuple[int, int, float]]:
    """The k (layer, head, register_mass) that put the most attention on register tokens."""
    return _rank(stats.register_mass, k, True)


__all__ = ["HeadStats", "head_stats", "token_centres", "most_object_focused", "most_global", "most_local", "looks_at_registers"]
