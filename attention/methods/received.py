"""Attention received per position, and the default map each model shows first.

Received attention of key position j in one layer, per head h: ``r^h_j = (1/Nq) Σ_i A^h_ij`` over
that layer's query rows (for pooling attention Nq = 1 and r is the pooling weights; for class
attention the CLS row; for spatial-reduction attention j runs over the coarser key grid). The
heads are then one picked or fused (mean, max, min over h). For Swin's windows each key is
received only from its own window, so r_j is the mean over that window's queries, placed back
on the stage grid at the key's original (un-shifted) position.

The default map (the export's ``heatmap``): rollout where it is defined (ViTs), otherwise the
received attention of the last spatial attention layer (CNN self-attention, attention pooling,
Swin's last stage).
"""
from __future__ import annotations

from typing import Optional

import torch

from ..capture import AttentionMap, CaptureResult
from ..errors import MethodNotDefinedError
from ..layout import CLASS, POOLING, REDUCED, SELF, WINDOW, TokenWindows
from .base import MapResult, Method, MethodContext, register
from .fusion import FUSIONS
from .layers import grid_stride, no_spatial_message, no_spatial_reason, resolve_layer, spatial_layers
from .words import head_words, layer_words, phrase


def received_heads(m: AttentionMap) -> torch.Tensor:
    """(B, heads, gh, gw) attention received by each position of one layer, per head (float32)."""
    if m.kind == WINDOW:
        info = m.window
        if info is None:
            raise MethodNotDefinedError(f"{m.name}: the window geometry was not captured")
        a = m.weights.detach().float().mean(dim=2)        # (B*nW, heads, n): mean over the window's queries
        nW = info.windows_per_image
        B, heads = a.shape[0] // nW, a.shape[1]
        if isinstance(info, TokenWindows):   # tokens listed one by one: each placed at its own cell
            return scatter_windows(info, a.reshape(B, nW, heads, -1).transpose(1, 2))
        wh, ww = info.window
        Hp, Wp = info.padded
        g = a.reshape(B, Hp // wh, Wp // ww, heads, wh, ww).permute(0, 3, 1, 4, 2, 5).reshape(B, heads, Hp, Wp)
        g = g[:, :, : info.grid[0], : info.grid[1]]
        return torch.roll(g, shifts=info.shift, dims=(2, 3))
    if m.kind not in (SELF, CLASS, POOLING, REDUCED) or m.layout is None or m.layout.num_patches == 0:
        raise MethodNotDefinedError(f"received attention needs a spatial layer; {m.name} is {m.kind}")
    a = m.weights.detach().float()[:, :, :, m.layout.patch_slice].mean(dim=2)
    return a.reshape(a.shape[0], a.shape[1], *m.layout.grid)


def scatter_windows(info, values: torch.Tensor) -> torch.Tensor:
    """(..., nW, n) values of every window token -> (..., H, W): each token's value at its grid cell
    (`WindowInfo.positions`); tokens that are no position (a window's CLS) are left out."""
    pos = torch.tensor(info.positions(), dtype=torch.long, device=values.device).reshape(-1)
    keep = pos >= 0
    flat = values.reshape(*values.shape[:-2], -1)
    out = flat.new_zeros(*values.shape[:-2], info.grid[0] * info.grid[1])
    out[..., pos[keep]] = flat[..., keep]
    return out.reshape(*values.shape[:-2], *info.grid)


def pick_head(per_head: torch.Tensor, head, name: str = "this layer") -> torch.Tensor:
    """(B, heads, gh, gw) -> (B, gh, gw): one head (int) or the heads fused ("mean", "max", "min")."""
    if isinstance(head, str):
        if head not in FUSIONS:
            raise ValueError(f"head must be an int or one of {FUSIONS}, got {head!r}")
        return {"mean": per_head.mean(dim=1), "max": per_head.amax(dim=1), "min": per_head.amin(dim=1)}[head]
    h = int(head)
    if not -per_head.shape[1] <= h < per_head.shape[1]:
        raise MethodNotDefinedError(f"head {h} out of range: {name} has {per_head.shape[1]} heads")
    return per_head[:, h]


def received(m: AttentionMap, head="mean") -> torch.Tensor:
    """(B, gh, gw) attention received by each patch position of one layer (heads fused or one head)."""
    return pick_head(received_heads(m), head, m.name)


def received_attention(result: CaptureResult, layer: int = -1, head="mean") -> torch.Tensor:
    """Attention received per position in one spatial layer (default: the last)."""
    _, _, m = resolve_layer(result, layer)
    return received(m, head)


class ReceivedAttention(Method):
    """``r_j = (1/Nq) Σ_i Â_ij``: how much attention each position receives in one layer."""

    name = "received"
    label = "Received attention"
    summary = "attention each position receives in one layer, averaged over its queries"
    uses_layer = True
    uses_heads = True
    uses_query = False
    order = 40

    def defined_for(self, result: CaptureResult) -> Optional[str]:
        return None if spatial_layers(result) else no_spatial_message(result)

    def reason(self, result: CaptureResult):
        return None if spatial_layers(result) else no_spatial_reason(result)

    def compute(self, ctx: MethodContext) -> MapResult:
        pos, _, m = resolve_layer(ctx.result, ctx.layer)
        maps = received(m, ctx.head)
        n = len(spatial_layers(ctx.result))
        return MapResult(maps, self.name, m.layout, grid_stride(ctx.result, maps.shape[-2:]), None,
                         details={"layer": pos, "layer_name": m.name},
                         words=(layer_words(pos, n, m.name), head_words(ctx.head), phrase("method.received.what")))


register(ReceivedAttention())


def default_method(result: CaptureResult) -> str:
    """The method a model's maps show first: rollout where defined, else received attention."""
    from .base import get_method
    return "rollout" if get_method("rollout").defined_for(result) is None else "received"


def default_heatmap(result: CaptureResult) -> torch.Tensor:
    """(B, gh, gw): rollout for ViTs, else the last spatial layer's received attention."""
    from .base import compute_map
    return compute_map(default_method(result), result).maps


__all__ = ["received", "received_heads", "received_attention", "pick_head", "default_heatmap", "default_method",
           "ReceivedAttention"]
