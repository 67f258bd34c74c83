"""Hugging Face Hiera: mask-unit attention over tokens in Hiera's *unrolled* order, placed on the photo.

Hiera's forward "unrolls" the (H, W) token map before its first block: each unroll step with stride
(sy, sx) moves token (r, c) of the current (h, w) map to block ``(r mod sy, c mod sx)`` (the slowest
index) of the (h/sy, w/sx) map, at ``(r div sy, c div sx)``; after every step of the schedule a
mask unit is contiguous in memory, but neither the sequence nor a mask unit is in row-major order.
Its attention reshapes the sequence as ``(tokens_per_window, num_windows)`` (window = sequence index
mod ``num_windows``) and returns (B, heads, num_windows, Nq, Nk); a query-pooling layer takes the max of
``query_stride`` tokens (``in-window index = k * Nq + j``, k slowest) as query j, on the next stage's
coarser grid. Stages after the pooling ones attend globally, still in the (partly) unrolled order.

The positions of the tokens are those of the model's own ``unroll`` applied to the row-major cell
numbers of each stage grid (no unroll where the model's forward does not call it), so each recorded
matrix is placed by where its tokens really are. ``finish`` turns each record into a map the views
already understand, reordering its entries only (the values are the softmax's own):

* windows that tile the stage grid as aligned ``wh x ww`` rectangles, with as many queries as keys:
  ``window`` maps, windows row-major and tokens row-major within each (a plain `WindowInfo`, no shift);
* anything else (global attention in unrolled order, query pooling, windows that are no rectangles):
  the full (Nq, Nk) matrix in row-major order on both sides, zero where a query does not see a key
  (another mask unit): ``self`` when queries and keys are the same grid, else ``reduced`` (queries on
  the coarser, pooled grid; keys on the layer's input grid).

The raw records stay in ``CaptureResult.records`` in the model's order.
"""
from __future__ import annotations

import inspect
from dataclasses import replace
from functools import lru_cache
from typing import Optional

import torch
from torch import nn

from ..layout import KNOWN, REDUCED, SELF, WINDOW, ModelTokens, TokenLayout, WindowInfo
from . import register_family
from .base import MapSpec
from .huggingface import HuggingFace, backbone, is_hf


def _pair(v) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


@lru_cache(maxsize=64)
def _forward_unrolls(cls: type) -> bool:
    """Whether the class's forward unrolls the tokens (HieraModel's does; HieraBackbone's does not)."""
    try:
        return "unroll(" in inspect.getsource(cls.forward)
    except (OSError, TypeError):
        return True


def unrolled_cells(grid: tuple[int, int], schedule: tuple[tuple[int, int], ...]) -> torch.Tensor:
    """(H*W,) row-major cell number of each token of the unrolled sequence, by the model's own ``unroll``."""
    from transformers.models.hiera.modeling_hiera import unroll
    H, W = grid
    cells = torch.arange(H * W, dtype=torch.float64).view(1, H * W, 1)
    if not schedule:
        return cells.view(-1).long()
    return unroll(cells, image_shape=(H, W), patch_stride=(1, 1), schedule=[list(s) for s in schedule]).view(-1).long()


def _rectangles(cells: torch.Tensor, grid: tuple[int, int]) -> Optional[tuple[tuple[int, int], torch.Tensor, torch.Tensor]]:
    """For (nW, n) cell numbers: ((wh, ww), window order, in-window order) when every window is an aligned
    wh x ww rectangle of the grid (then window w' row-major and p' row-major within it), else None."""
    H, W = grid
    r, c = cells // W, cells % W
    r0, c0 = r.min(1).values, c.min(1).values
    wh, ww = int((r.max(1).values - r0).max()) + 1, int((c.max(1).values - c0).max()) + 1
    nW, n = cells.shape
    if wh * ww != n or H % wh or W % ww or nW != (H // wh) * (W // ww):
        return None
    if bool((r0 % wh).any() or (c0 % ww).any()):
        return None
    canon_w = (r0 // wh) * (W // ww) + c0 // ww                  # where each recorded window goes
    canon_p = (r - r0[:, None]) * ww + (c - c0[:, None])         # where each of its tokens goes
    if sorted(canon_w.tolist()) != list(range(nW)) or bool((canon_p.sort(1).values != torch.arange(n)).any()):
        return None
    window_of = torch.empty(nW, dtype=torch.long)
    window_of[canon_w] = torch.arange(nW)                        # canonical window -> recorded window
    token_of = torch.empty(nW, n, dtype=torch.long)              # (canonical window, p') -> recorded index
    token_of[canon_w[:, None].expand(nW, n), canon_p] = torch.arange(n).expand(nW, n)
    return (wh, ww), window_of, token_of


@register_family
class HFHiera(HuggingFace):
    name = "huggingface-hiera"
    priority = 45

    def matches(self, model: nn.Module) -> bool:
        return is_hf(model) and type(getattr(model, "config", None)).__name__ == "HieraConfig"

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        s = _pair(model.config.patch_stride)
        return ModelTokens((), (hw[0] // s[0], hw[1] // s[1]), (float(s[0]), float(s[1])))

    def describe(self, session, module, weights, site):
        # the record as the op made it: (B * heads, windows, Nq, Nk); `finish` places it
        return MapSpec(WINDOW, None, source=KNOWN)

    # -- the geometry ------------------------------------------------------------------------------
    def _stage_grids(self, model: nn.Module, hw) -> list[tuple[int, int]]:
        cfg = model.config
        g0 = self.tokens(model, hw).grid
        qs = _pair(cfg.query_stride)
        out = []
        for s in range(len(cfg.depths)):
            k = min(s, int(cfg.num_query_pool))
            out.append((g0[0] // qs[0] ** k, g0[1] // qs[1] ** k))
        return out

    def stage_cells(self, model: nn.Module, hw, stage: int) -> Optional[torch.Tensor]:
        """Row-major cell number (on that stage's grid) of each token of the stage's sequence; None where its
        tokens are no cells of a grid (pooled from a sequence that was not unrolled: rows r, r + h/2, ...)."""
        cfg = model.config
        grid = self._stage_grids(model, hw)[stage]
        if not _forward_unrolls(type(backbone(model))):   # the module that embeds and encodes
            return torch.arange(grid[0] * grid[1]) if min(stage, int(cfg.num_query_pool)) == 0 else None
        schedule = [tuple(_pair(cfg.query_stride))] * (len(cfg.depths) - 1)
        return unrolled_cells(grid, tuple(schedule[min(stage, int(cfg.num_query_pool)):]))

    def place(self, session, m):
        """The map of one recorded Hiera attention, placed (see the module docstring); None if it cannot be.
        (A copy made with `dataclasses.replace`: a family never imports the capture above it.)"""
        model = session.model
        parts = m.name.split(".")
        if "stages" not in parts or m.weights.dim() != 4:
            return None
        stage = int(parts[parts.index("stages") + 1])
        layer = int(parts[parts.index("layers") + 1])
        module = dict(model.named_modules()).get(m.name)
        qs = int(getattr(module, "query_stride", 1))
        pooled = qs > 1
        grids = self._stage_grids(model, session.input_hw)
        in_stage = stage - 1 if pooled and layer == 0 and stage > 0 else stage
        k_grid, q_grid = grids[in_stage], grids[stage]
        key_cells = self.stage_cells(model, session.input_hw, in_stage)        # (N,) per sequence index
        if key_cells is None:
            return None
        B = session.batch
        BH, nW, nq, nk = m.weights.shape
        heads = BH // B
        N = key_cells.numel()
        if nW * nk != N:
            return None
        # recorded window w, in-window index i is sequence index i * nW + w
        seq = torch.arange(nk)[None, :] * nW + torch.arange(nW)[:, None]      # (nW, nk)
        k_cells = key_cells[seq]
        if pooled:   # query j of window w: the max over in-window indices k * nq + j
            Wk = k_grid[1]
            sy, sx = k_grid[0] // q_grid[0], k_grid[1] // q_grid[1]
            members = k_cells.view(nW, qs, nq)                                  # (nW, qs, nq)
            coarse = (members // Wk // sy) * q_grid[1] + (members % Wk) // sx
            if bool((coarse != coarse[:, :1]).any()):
                return None    # pooled tokens that are no block of the grid: no one position
            q_cells = coarse[:, 0]
        else:
            q_cells = k_cells
        Nq_total = q_grid[0] * q_grid[1]
        if sorted(q_cells.reshape(-1).tolist()) != list(range(Nq_total)):
            return None
        w5 = m.weights.reshape(B, heads, nW, nq, nk)
        k_layout = TokenLayout((), k_grid, session.stride_for(k_grid))
        rect = _rectangles(k_cells, k_grid) if not pooled and nW > 1 else None
        if rect is not None:
            (wh, ww), window_of, token_of = rect
            t = w5[:, :, window_of]
            idx = token_of.to(t.device)
            t = t.gather(3, idx[None, None, :, :, None].expand(B, heads, nW, nq, nk))
            t = t.gather(4, idx[None, None, :, None, :].expand(B, heads, nW, nq, nk))
            weights = t.permute(0, 2, 1, 3, 4).reshape(B * nW, heads, nq, nk)
            info = WindowInfo((wh, ww), (0, 0), k_grid, k_grid)
            return replace(m, weights=weights, kind=WINDOW, layout=k_layout, query_layout=None, window=info,
                           layout_source=KNOWN)
        # the full matrix, row-major on both sides; zero between a query and the keys of other windows
        flat = q_cells[:, :, None] * N + k_cells[:, None, :]                  # (nW, nq, nk)
        dense = w5.new_zeros(B, heads, Nq_total * N)
        dense = dense.scatter(2, flat.reshape(1, 1, -1).expand(B, heads, -1).to(dense.device), w5.reshape(B, heads, -1))
        dense = dense.view(B, heads, Nq_total, N)
        if not pooled:
            return replace(m, weights=dense, kind=SELF, layout=k_layout, query_layout=None, window=None,
                           layout_source=KNOWN)
        q_layout = TokenLayout((), q_grid, session.stride_for(q_grid))
        return replace(m, weights=dense, kind=REDUCED, layout=k_layout, query_layout=q_layout, window=None,
                       layout_source=KNOWN)

    def finish(self, session, maps: list) -> list:
        out = []
        for m in maps:
            try:
                placed = self.place(session, m)
            except Exception:  # noqa: BLE001 - an unexpected variant: keep the record, unplaced
                placed = None
            out.append(placed if placed is not None else m)
        return out

    def blocks(self, model: nn.Module):
        return super(HuggingFace, self).blocks(model)   # stages pool tokens: no flat stack

    def position_embedding(self, model: nn.Module):
        return None


__all__ = ["HFHiera", "unrolled_cells"]
