"""PNG pictures next to the export: ``<stem>_<method>.png`` overlays and the ``<stem>_grid.png`` sheet."""
from __future__ import annotations

import os
import re
from typing import Iterable, Optional

import numpy as np
from PIL import Image

from ..capture import CaptureResult
from ..preprocess import PreparedImage
from .grid import grid_sheet
from .overlay import overlay

# npz entries that are not maps over the patch grid
_NOT_MAPS = {"input", "logits", "layer_names", "layout_sources", "num_prefix_tokens", "grid"}


def save_png(path: str, rgb: np.ndarray) -> str:
    """Write an (H, W, 3) uint8 RGB array as PNG (PIL: channels stay RGB; any path encoding)."""
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(path, format="PNG", compress_level=3)
    return path


def layer_head_maps(result: CaptureResult, item: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Per spatial layer, a (heads, gh, gw) float32 map per head, and the layers' names: the library's
    `attention.methods.layer_head_stack` with the default query (CLS where the model has one,
    otherwise the attention each position receives; Swin's windows placed back on the stage grid)."""
    from ..methods import layer_head_stack
    return layer_head_stack(result, "auto", item)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "map"


def _stride_for(result: Optional[CaptureResult], shape: tuple[int, int]) -> Optional[tuple[float, float]]:
    """The model's own stride when the map is on its token grid (covers exactly the patched area)."""
    from ..methods import grid_stride
    return grid_stride(result, shape) if result is not None else None


def write_pictures(out_dir: str, stem: str, prepared: PreparedImage, result: Optional[CaptureResult],
                   arrays: dict, methods: Iterable[str] = (), overlays: bool = True, grid: bool = False,
                   **overlay_options) -> list[str]:
    """Write the PNGs for one exported image; returns the paths written.

    ``overlays``: ``<stem>_<name>.png`` for ``heatmap`` and every other 2-D map in `arrays` (rollout and
    the `methods` asked for), drawn on the original photo. ``grid``: ``<stem>_grid.png``, the layer x head
    sheet of CLS -> patch attention (``arrays["raw"]`` when it is (layers, heads, gh, gw), otherwise taken
    from ``result``). Extra keyword arguments go to `overlay` (cmap, mode, alpha, norm, ...).
    """
    os.makedirs(out_dir, exist_ok=True)
    written = []
    photo = np.asarray(prepared.image.convert("RGB"))
    geometry = prepared.geometry
    if overlays:
        names = ["heatmap"] + [k for k in arrays if k != "heatmap"]
        names += [m for m in methods if m in arrays and m not in names]
        for name in names:
            if name not in arrays or name in _NOT_MAPS or name.startswith("attn_"):
                continue
            a = np.asarray(arrays[name])
            while a.ndim > 2 and a.shape[0] == 1:
                a = a[0]
            if a.ndim != 2 or not np.issubdtype(a.dtype, np.number) or min(a.shape) == 0:
                continue
            pic = overlay(photo, a, geometry, stride=_stride_for(result, a.shape), **overlay_options)
            written.append(save_png(os.path.join(out_dir, f"{stem}_{_safe(name)}.png"), pic))
    if grid:
        raw = arrays.get("raw")
        maps = None
        if raw is not None and np.asarray(raw).ndim == 4:
            maps = np.asarray(raw, np.float32)
        elif result is not None:
            maps, _ = layer_head_maps(result)
        if maps is not None and len(maps):
            written.append(save_png(os.path.join(out_dir, f"{stem}_grid.png"), grid_sheet(photo, maps, geometry)))
    return written


__all__ = ["write_pictures", "layer_head_maps", "save_png"]
