"""PNG pictures next to the export: ``<stem>_<method>.png`` overlays and the ``<stem>_grid.png`` sheet."""
from __future__ import annotations

import os
import re
from typing import Iterable, Optional

import numpy as np
from PIL import Image

from ..capture import AttentionMap, CaptureResult
from ..layout import CLASS, POOLING, REDUCED, SELF, WINDOW
from ..preprocess import PreparedImage
from .grid import grid_sheet
from .overlay import overlay

# npz entries that are not maps over the patch grid
_NOT_MAPS = {"input", "logits", "layer_names", "num_prefix_tokens", "grid"}


def save_png(path: str, rgb: np.ndarray) -> str:
    """Write an (H, W, 3) uint8 RGB array as PNG (PIL: channels stay RGB; any path encoding)."""
    Image.fromarray(np.ascontiguousarray(rgb), "RGB").save(path, format="PNG", compress_level=3)
    return path


def _window_heads(m: AttentionMap) -> np.ndarray:
    """(heads, H, W) attention received per stage position, per head, for Swin's windowed attention."""
    info = m.window
    a = m.weights.detach().float().cpu()
    nW = info.windows_per_image
    a = a[:nW].mean(dim=2)                                        # (nW, heads, n): mean over window queries
    heads = a.shape[1]
    wh, ww = info.window
    Hp, Wp = info.padded
    g = a.reshape(Hp // wh, Wp // ww, heads, wh, ww).permute(2, 0, 3, 1, 4).reshape(heads, Hp, Wp)
    g = g[:, : info.grid[0], : info.grid[1]]
    return np.roll(g.numpy(), shift=info.shift, axis=(1, 2))


def layer_head_maps(result: CaptureResult, item: int = 0) -> tuple[list[np.ndarray], list[str]]:
    """Per spatial layer, a (heads, gh, gw) float32 map per head, and the layers' names.

    CLS -> patch attention (``weights[item, h, cls, prefix:]``) where the queries include a CLS token;
    otherwise the attention each position receives, averaged over the query rows (CNN self-attention,
    pooling, spatial-reduction, Swin windows placed back on the stage grid). Channel attention is skipped.
    """
    out, names = [], []
    for m in result.maps:
        if m.kind == WINDOW and m.window is not None:
            sub = AttentionMap(m.name, m.weights[item * m.window.windows_per_image:], m.kind, m.layout,
                               m.query_layout, m.window, m.module_type)
            out.append(_window_heads(sub).astype(np.float32))
            names.append(m.name)
            continue
        if m.kind not in (SELF, CLASS, POOLING, REDUCED) or m.layout is None or m.layout.num_patches == 0:
            continue
        w = m.weights[item].detach().float().cpu().numpy()          # (heads, Nq, Nk)
        p = m.layout.num_prefix
        q = m.query_layout
        cls = q.cls_index if (q is not None and m.kind in (SELF, CLASS)) else None
        a = w[:, cls, p:] if cls is not None and cls < w.shape[1] else w[:, :, p:].mean(axis=1)
        out.append(a.reshape(a.shape[0], *m.layout.grid).astype(np.float32))
        names.append(m.name)
    return out, names


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "map"


def _stride_for(result: Optional[CaptureResult], shape: tuple[int, int]) -> Optional[tuple[float, float]]:
    """The model's own stride when the map is on its token grid (covers exactly the patched area)."""
    t = getattr(result, "tokens", None)
    if t is not None and t.grid is not None and tuple(t.grid) == tuple(shape):
        return tuple(float(s) for s in t.stride)
    return None


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
