"""Raw attention: one layer's attention from one query, for one head or the heads fused.

``map = q · Â`` restricted to the patch keys, where ``Â = A^h`` for head ``h`` or
``Â = fuse_h(A^h)`` (mean, max or min over the heads; max / min rows are *not* re-normalised) and
``q`` selects the query rows (averaged when there are several): ``"cls"``, ``"dist"``, ``"reg0"``…,
``"cls+dist"``, ``"prefix_mean"``, ``"patch_mean"``, ``"auto"`` or a patch ``(row, col)`` on the
layer's own query grid (see `attention.methods.queries`). The value at a key patch is the
attention weight itself (no normalisation beyond the softmax).

Per kind of layer:

* ``self`` / ``class`` (ViT, DeiT, registers, CaiT's class attention): the query row over the key
  patch grid.
* ``window`` (Swin): only patch queries; the patch ``(row, col)`` of the stage grid lives in window
  ``w`` at in-window index ``p`` (`WindowInfo.locate`); its row ``A[b·nW + w, :, p, :]`` is put back
  on the stage grid at each key's original (un-shifted) position (`WindowInfo.token_position`),
  zeros outside the window; the output is (B, H_stage, W_stage).
* ``reduced`` (PVT, Twins): the patch query's row over the coarser key grid (B, kh, kw);
  ``"patch_mean"`` averages all query rows.
* ``pooling``: the single learned query (``"auto"`` / ``"query"``) over the positions.
* ``channel`` (XCiT): not spatial, MethodNotDefinedError.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from ..capture import AttentionMap, CaptureResult
from ..errors import MethodNotDefinedError
from ..layout import CHANNEL, CLASS, POOLING, REDUCED, SELF, WINDOW, TokenWindows, WindowInfo
from .base import MapResult, Method, MethodContext, register
from .fusion import FUSIONS, fuse_heads
from .layers import grid_stride, no_spatial_message, no_spatial_reason, resolve_layer, spatial_layers
from .queries import Query, query_indices
from .words import head_words, layer_words, phrase, query_words

Head = Union[str, int]


def select_heads(weights: torch.Tensor, head: Head) -> torch.Tensor:
    """(B, heads, Nq, Nk) -> (B, Nq, Nk): one head (int) or the heads fused ("mean", "max", "min")."""
    if isinstance(head, str):
        if head not in FUSIONS:
            raise ValueError(f"head must be an int or one of {FUSIONS}, got {head!r}")
        return fuse_heads(weights, head)
    h = int(head)
    if not -weights.shape[1] <= h < weights.shape[1]:
        raise IndexError(f"head {h} out of range: the layer has {weights.shape[1]} heads")
    return weights[:, h].float()


def get_layer(result: CaptureResult, layer: Union[int, str]) -> AttentionMap:
    """A captured layer by index into ``result.maps`` (negative allowed) or by module name."""
    if isinstance(layer, str):
        for m in result.maps:
            if m.name == layer:
                return m
        raise KeyError(f"no captured attention layer named {layer!r}; layers: {', '.join(result.layer_names)}")
    return result.maps[layer]


def window_scatter_index(info: WindowInfo, window_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(in-window indices, flat stage-grid positions) of the real (non-padding) tokens of one window."""
    n = info.tokens_per_window
    src, dst = [], []
    for p in range(n):
        pos = info.token_position(window_index, p)
        if pos is not None:
            src.append(p)
            dst.append(pos[0] * info.grid[1] + pos[1])
    return torch.tensor(src, dtype=torch.long), torch.tensor(dst, dtype=torch.long)


def window_cls(info: WindowInfo) -> bool:
    """Whether the windows carry CLS tokens of their own (RF-DETR's windowed DINOv2)."""
    return isinstance(info, TokenWindows) and any(n.startswith("cls") for names in info.special for n in names)


def _window_cls_view(m: AttentionMap, head: Head) -> torch.Tensor:
    """Each window's CLS row(s) (mean where a window holds several) over that window's own patches, the
    windows side by side on the stage grid: (B, H, W)."""
    info = m.window
    nW = info.windows_per_image
    B = m.weights.shape[0] // nW
    H, W = info.grid
    out = m.weights.new_zeros(B, H * W, dtype=torch.float32)
    for w in range(nW):
        idx = [p for p, name in info.special_tokens(w) if name.startswith("cls")]
        if not idx:
            continue
        rows = select_heads(m.weights[w::nW][:, :, idx, :], head).mean(dim=1)   # (B, n)
        src, dst = window_scatter_index(info, w)
        out[:, dst.to(out.device)] = rows[:, src.to(out.device)]
    return out.view(B, H, W)


def _window_view(m: AttentionMap, head: Head, query: Query) -> torch.Tensor:
    info = m.window
    if info is None:
        raise MethodNotDefinedError(f"{m.name}: the window geometry was not captured")
    if isinstance(query, str) and query in ("auto", "cls") and window_cls(info):
        return _window_cls_view(m, head)
    if isinstance(query, str):
        raise MethodNotDefinedError(
            f"{m.name} is windowed attention (Swin): it has no CLS or other prefix token; pick a patch "
            f"(row, col) on its {info.grid[0]}x{info.grid[1]} stage grid")
    row, col = (int(v) for v in query)
    H, W = info.grid
    if not (0 <= row < H and 0 <= col < W):
        raise IndexError(f"patch ({row}, {col}) is outside the {H}x{W} stage grid of {m.name}")
    w, p = info.locate(row, col)
    nW = info.windows_per_image
    B = m.weights.shape[0] // nW
    rows = select_heads(m.weights[w::nW, :, p:p + 1, :], head)[:, 0, :]  # (B, n): one row per image
    src, dst = window_scatter_index(info, w)
    out = rows.new_zeros(B, H * W)
    out[:, dst.to(out.device)] = rows[:, src.to(out.device)]
    return out.view(B, H, W)


def raw_attention(result: CaptureResult, layer: Union[int, str] = -1, head: Head = "mean",
                  query: Query = "auto") -> torch.Tensor:
    """(B, gh, gw) attention of one layer from one query over the key patches; formula in the module docstring.

    ``layer``: index into ``result.maps`` or a module name; ``head``: an int or "mean" / "max" /
    "min"; ``query``: see `attention.methods.queries` ("cls", "dist", "reg0", "cls+dist",
    "prefix_mean", "patch_mean", "auto", or (row, col) on the layer's query grid).
    """
    m = get_layer(result, layer)
    if m.kind == CHANNEL:
        raise MethodNotDefinedError(f"{m.name} is channel attention (XCiT): channels × channels, not a spatial map")
    if m.kind == WINDOW:
        return _window_view(m, head, query)
    if m.layout is None or m.layout.num_patches == 0:
        raise MethodNotDefinedError(f"{m.name}: the key positions of this layer are unknown")
    if m.kind == POOLING:
        names = m.query_layout.prefix_names if m.query_layout is not None and m.query_layout is not m.layout else ()
        if query in ("auto", "query"):
            idx = [0]
        elif isinstance(query, str) and len(names) > 1 and (
                query == "prefix_mean" or all(q.strip() in names for q in query.split("+"))):
            # several learned queries (DETR's object queries, Perceiver's latents): one map per query by name
            idx = query_indices(m.query_layout, query, f"layer {m.name}")
        elif len(names) > 1:
            raise MethodNotDefinedError(
                f"{m.name}: its {len(names)} queries are learned ({', '.join(names[:3])}, …), not patches: pick "
                f"one by name, 'prefix_mean' for their mean, or 'auto' ({names[0]})")
        else:
            raise MethodNotDefinedError(f"{m.name} is attention pooling: its only query is the learned one ('auto')")
    elif m.kind in (SELF, CLASS, REDUCED):
        idx = query_indices(m.query_layout, query, f"layer {m.name}")
    else:  # pragma: no cover - every kind is handled above
        raise MethodNotDefinedError(f"{m.name}: raw views are not defined for {m.kind} attention")
    if len(idx) == 1:
        rows = m.weights[:, :, idx[0]:idx[0] + 1, :]
    else:
        rows = m.weights[:, :, idx, :]
    a = select_heads(rows, head).mean(dim=1)  # (B, Nk)
    return a[:, m.layout.patch_slice].reshape(a.shape[0], *m.layout.grid)


def cls_layers(result: CaptureResult) -> list[AttentionMap]:
    """Layers whose queries include a CLS token and whose keys are the patch grid (forward order)."""
    return [m for m in result.maps if m.kind in (SELF, CLASS) and m.layout is not None and m.layout.num_patches
            and m.query_layout is not None and m.query_layout.cls_index is not None]


def raw_cls_maps(result: CaptureResult) -> torch.Tensor:
    """(B, layers, heads, gh, gw): ``A^h_l[cls, patches]`` for every layer with a CLS query and every head.

    The explicit per-layer x per-head stack (the registered ``raw`` method gives one layer's map);
    see also `attention.methods.stacks.layer_head_stack` for every spatial layer of any model.

    The layer axis lists the layers of `cls_layers` (all layers for ViT / DeiT / register models;
    only the class-attention layers for CaiT, whose self-attention runs before CLS exists).
    """
    layers = cls_layers(result)
    if not layers:
        raise MethodNotDefinedError(
            "raw CLS → patch maps need a CLS token; this model has none (use raw_attention with a patch "
            "query or 'patch_mean')")
    grid = layers[0].layout.grid
    heads = layers[0].num_heads
    if any(m.layout.grid != grid or m.num_heads != heads for m in layers):
        raise MethodNotDefinedError("raw CLS maps need one patch grid and head count across layers")
    out = []
    for m in layers:
        c = m.query_layout.cls_index
        a = m.weights[:, :, c, m.layout.patch_slice].float()  # (B, heads, n)
        out.append(a.reshape(a.shape[0], heads, *grid))
    return torch.stack(out, dim=1)


def query_text(query, lang: str = "en") -> str:
    """"default query", "query CLS", "query patch (3, 4)" … in `lang` (`attention.methods.words.query_words`)."""
    return query_words(query).text(lang)


def head_text(head, lang: str = "en") -> str:
    """"head 3" or "mean over heads" in `lang`."""
    return head_words(head).text(lang)


class RawAttention(Method):
    """One layer's attention from one query: ``map = q · Â`` over the key patches (module docstring).

    Swin without a patch query: the attention each position receives in that layer (it has no
    CLS token); attention pooling: its learned query.
    """

    name = "raw"
    label = "Raw attention"
    summary = "one layer's attention from the query over the patches"
    uses_layer = True
    uses_heads = True
    order = 0

    def defined_for(self, result: CaptureResult) -> Optional[str]:
        return None if spatial_layers(result) else no_spatial_message(result)

    def reason(self, result: CaptureResult):
        return None if spatial_layers(result) else no_spatial_reason(result)

    def compute(self, ctx: MethodContext) -> MapResult:
        from .received import received_heads, pick_head
        result = ctx.result
        pos, i, m = resolve_layer(result, ctx.layer)
        n = len(spatial_layers(result))
        query, head = ctx.query, ctx.head
        where = (layer_words(pos, n, m.name), head_words(head))
        if m.kind == WINDOW and query in ("auto", "cls") and window_cls(m.window):
            maps = raw_attention(result, i, head, "cls")
            n_cls = sum(t.startswith("cls") for t in m.window.special[0])
            what = (phrase("method.raw.window_cls_each") if m.window.windows_per_image > 1
                    else phrase("method.raw.window_cls_all", n=n_cls))
            patch = None
        elif m.kind == WINDOW and isinstance(query, str):
            maps = pick_head(received_heads(m), head, m.name)
            what = phrase("method.raw.window_received")
            patch = None
        else:
            if m.kind == POOLING:
                query = "auto"
            maps = raw_attention(result, i, head, query)
            what = query_words(query)
            patch = None if isinstance(query, str) else tuple(int(v) for v in query)
        return MapResult(maps, self.name, m.layout, grid_stride(result, maps.shape[-2:]), patch,
                         details={"layer": pos, "layer_name": m.name}, words=where + (what,))


register(RawAttention())

__all__ = ["RawAttention", "raw_attention", "raw_cls_maps", "select_heads", "get_layer", "cls_layers", "window_scatter_index"]
