"""Attention received per position, and the default map each model shows first.

Received attention of key position j in one layer: ``r_j = (1/Nq) Σ_i Â_ij`` with ``Â`` the
head-mean attention (for pooling attention, Nq = 1 and r is the pooling weights). For Swin's
windows each key is received only from its own window, so r_j is the mean over that window's
queries, placed back on the stage grid.

The default map (the export's ``heatmap``): rollout where it is defined (ViTs), otherwise the
received attention of the last spatial attention layer (CNN self-attention, attention pooling,
Swin's last stage).
"""
from __future__ import annotations

import torch

from ..capture import AttentionMap, CaptureResult
from ..errors import MethodNotDefinedError
from ..layout import POOLING, SELF, WINDOW
from . import register_method
from .fusion import fuse_heads


def received(m: AttentionMap) -> torch.Tensor:
    """(B, gh, gw) attention received by each patch position of one layer (heads averaged)."""
    if m.kind == WINDOW:
        info = m.window
        a = fuse_heads(m.weights).mean(dim=1)  # (B*nW, n): mean over the window's queries
        nW = info.windows_per_image
        B = a.shape[0] // nW
        wh, ww = info.window
        Hp, Wp = info.padded
        grid = a.view(B, Hp // wh, Wp // ww, wh, ww).permute(0, 1, 3, 2, 4).reshape(B, Hp, Wp)
        grid = grid[:, : info.grid[0], : info.grid[1]]
        return torch.roll(grid, shifts=info.shift, dims=(1, 2))
    if m.kind not in (SELF, POOLING) or m.layout is None or m.layout.num_patches == 0:
        raise MethodNotDefinedError(f"received attention needs a spatial layer; {m.name} is {m.kind}")
    p = m.layout.num_prefix
    a = fuse_heads(m.weights)[:, :, p:].mean(dim=1)
    return a.reshape(a.shape[0], *m.layout.grid)


@register_method("received")
def received_attention(result: CaptureResult, layer: int = -1) -> torch.Tensor:
    """Attention received per position in one layer (default: the last spatial one)."""
    spatial = [m for m in result.maps if m.kind in (SELF, POOLING, WINDOW) and m.layout is not None]
    if not spatial:
        raise MethodNotDefinedError("the model has no spatial attention layer")
    return received(spatial[layer])


def default_heatmap(result: CaptureResult) -> torch.Tensor:
    """(B, gh, gw): rollout for ViTs, else the last spatial layer's received attention."""
    from .rollout import rollout
    try:
        return rollout(result)
    except MethodNotDefinedError:
        return received_attention(result)
