"""The explicit per-layer x per-head stack: every spatial layer's map for every head, for one image.

For each spatial layer (see `attention.methods.layers`) a (heads, gh, gw) array of
``raw_attention(result, layer, h, q)`` for every head h, where the query q is the one asked for
(``"auto"``: CLS where the model has one, else the mean over the patch query rows, i.e. the
attention each position receives; attention pooling: its learned query). Swin's windowed layers
without a patch query: the attention each position receives (`received_heads`). A patch query is
given per layer (``query`` a callable ``layer -> (row, col) or None``, because each stage has its
own grid); a layer where it is None, or a class-attention layer (its only query is CLS), is NaN.
A query a layer does not have (e.g. "dist" in CaiT's patch-only blocks) falls back to the mean
over its patch queries.
"""
from __future__ import annotations

from typing import Callable, Optional, Union

import numpy as np

from ..capture import AttentionMap, CaptureResult
from ..errors import MethodNotDefinedError
from ..layout import CLASS, POOLING, WINDOW
from .layers import no_spatial_message, spatial_layers
from .queries import Query
from .raw import raw_attention
from .received import received_heads

PatchFor = Callable[[AttentionMap], Optional[tuple[int, int]]]


def layer_head_stack(result: CaptureResult, query: Union[Query, PatchFor] = "auto", item: int = 0
                     ) -> tuple[list[np.ndarray], list[str]]:
    """([(heads, gh, gw) float32 per spatial layer], [layer names]); see the module docstring."""
    idx = spatial_layers(result)
    if not idx:
        raise MethodNotDefinedError(no_spatial_message(result))
    maps, names = [], []
    for i in idx:
        m = result.maps[i]
        q = query(m) if callable(query) else query
        if m.kind == POOLING:
            q = "auto"
        if m.kind == WINDOW and not isinstance(q, tuple):
            a = received_heads(m)[item].numpy()
        elif q is None or (m.kind == CLASS and isinstance(q, tuple)):
            a = None
        else:
            try:
                a = np.stack([raw_attention(result, i, h, q)[item].numpy() for h in range(m.num_heads)])
            except MethodNotDefinedError:
                a = np.stack([raw_attention(result, i, h, "patch_mean")[item].numpy() for h in range(m.num_heads)])
        if a is None:
            grid = m.window.grid if m.kind == WINDOW else m.layout.grid
            a = np.full((m.num_heads, *grid), np.nan, np.float32)
        maps.append(np.ascontiguousarray(a, dtype=np.float32))
        names.append(m.name)
    return maps, names


__all__ = ["layer_head_stack"]
