"""Which captured layers have a spatial view, how they are numbered, and the grid each one's queries sit on.

One numbering for the app's layer slider, the CLI and every method: position ``0 … n-1`` among the
layers `is_spatial` accepts (forward order), negative positions counting from the end.
A layer is spatial when its keys (or, for Swin, its windows) can be placed on a patch grid: self,
class, pooling and spatial-reduction attention with a known layout, and windowed attention with
its window geometry. Channel attention (XCiT) is not.
"""
from __future__ import annotations

from typing import Optional, Union

from ..capture import AttentionMap, CaptureResult
from ..errors import MethodNotDefinedError
from ..layout import CHANNEL, CLASS, POOLING, REDUCED, SELF, WINDOW


def is_spatial(m: AttentionMap) -> bool:
    """Whether layer `m` has a map over positions (see the module docstring)."""
    if m.kind == WINDOW:
        return m.window is not None
    return m.kind in (SELF, CLASS, POOLING, REDUCED) and m.layout is not None and m.layout.num_patches > 0


def spatial_layers(result: CaptureResult) -> list[int]:
    """Indices into ``result.maps`` of the spatial layers, in forward order."""
    return [i for i, m in enumerate(result.maps) if is_spatial(m)]


def no_spatial_reason(result: CaptureResult):
    """Why a capture has no map to show, as a `attention.methods.words.Phrase` (the kinds of layers it has)."""
    from .words import phrase
    kinds = sorted({m.kind for m in result.maps}) or ["none"]
    return phrase("method.why.no_spatial_xcit" if CHANNEL in kinds else "method.why.no_spatial",
                  n=len(result.maps), kinds=", ".join(kinds))


def no_spatial_message(result: CaptureResult, lang: str = "en") -> str:
    """`no_spatial_reason` in `lang`."""
    return no_spatial_reason(result).text(lang)


def resolve_layer(result: CaptureResult, layer: Union[int, str] = -1, clamp: bool = True
                  ) -> tuple[int, int, AttentionMap]:
    """(position among the spatial layers, index into ``result.maps``, the layer) for a position or a name.

    ``clamp``: positions past either end go to the first / last layer (a slider); otherwise IndexError.
    """
    idx = spatial_layers(result)
    if not idx:
        raise MethodNotDefinedError(no_spatial_message(result))
    if isinstance(layer, str):
        for pos, i in enumerate(idx):
            if result.maps[i].name == layer:
                return pos, i, result.maps[i]
        raise KeyError(f"no spatial attention layer named {layer!r}")
    pos = int(layer)
    if pos < 0:
        pos += len(idx)
    if not 0 <= pos < len(idx):
        if not clamp:
            raise IndexError(f"layer {layer} is outside the {len(idx)} spatial layers (0–{len(idx) - 1})")
        pos = min(max(pos, 0), len(idx) - 1)
    return pos, idx[pos], result.maps[idx[pos]]


def query_grid(m: AttentionMap) -> Optional[tuple[int, int]]:
    """The patch grid layer `m`'s queries sit on (where a clicked patch is looked up), or None."""
    if m.kind == WINDOW:
        return tuple(m.window.grid) if m.window is not None else None
    lay = m.query_layout if m.kind == REDUCED else m.layout
    if lay is None or lay.num_patches == 0 or m.kind in (POOLING, CLASS):
        return None
    return tuple(lay.grid)


def grid_stride(result: CaptureResult, grid) -> Optional[tuple[float, float]]:
    """Model-input pixels per cell when `grid` is the model's token grid (it covers exactly the
    patched area), else None (the renderer spreads the grid over the whole input)."""
    t = result.tokens
    if t is not None and t.grid is not None and tuple(t.grid) == tuple(grid):
        return tuple(float(s) for s in t.stride)
    return None


__all__ = ["is_spatial", "spatial_layers", "resolve_layer", "query_grid", "grid_stride", "no_spatial_message",
           "no_spatial_reason"]
