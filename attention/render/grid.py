"""The layer x head sheet ("bertviz, but for images"): one small overlay per (layer, head) in one picture.

Rows are layers, columns are heads plus a fused column ("mean" over the heads). Each cell shows the
part of the photo the model saw (the geometry's box) with that head's map, normalised per cell.
`SheetLayout` knows where every cell is, so a click on the sheet maps back to (layer, head).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import cv2
import numpy as np

from ..preprocess import Geometry
from .colormap import DEFAULT_CMAP, apply_colormap, normalize_map
from .overlay import ImageLike, _box, as_rgb

FUSED = "fused"
_FONT = cv2.FONT_HERSHEY_SIMPLEX


@dataclass(frozen=True)
class SheetLayout:
    """Where the cells of a sheet are. Cell (r, c) spans rows ``top + r*(cell_h+gap)`` .. ``+cell_h``."""

    layers: int
    heads: int                      # head columns (the widest layer)
    fused: bool                     # one more column after the heads
    cell_h: int
    cell_w: int
    gap: int = 2
    left: int = 34                  # width of the row-label margin
    top: int = 18                   # height of the column-label margin
    heads_per_layer: Optional[tuple[int, ...]] = None  # for layers with fewer heads (blank cells)

    @property
    def cols(self) -> int:
        return self.heads + int(self.fused)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of the sheet in pixels."""
        return (self.top + self.layers * (self.cell_h + self.gap),
                self.left + self.cols * (self.cell_w + self.gap))

    def cell_origin(self, layer: int, head: Union[int, str]) -> tuple[int, int]:
        """(y, x) of the top-left pixel of a cell; `head` is a head index or ``"fused"``."""
        col = self.heads if head == FUSED else int(head)
        return self.top + layer * (self.cell_h + self.gap), self.left + col * (self.cell_w + self.gap)

    def cell_at(self, x: float, y: float) -> Optional[tuple[int, Union[int, str]]]:
        """(layer, head or ``"fused"``) of the cell under sheet pixel (x, y); None for margins, gaps and blanks."""
        if x < self.left or y < self.top:
            return None
        col, cx = divmod(int(x) - self.left, self.cell_w + self.gap)
        row, cy = divmod(int(y) - self.top, self.cell_h + self.gap)
        if row >= self.layers or col >= self.cols or cx >= self.cell_w or cy >= self.cell_h:
            return None
        if self.fused and col == self.heads:
            return row, FUSED
        if self.heads_per_layer is not None and col >= self.heads_per_layer[row]:
            return None
        return row, col


def cell_shape(geometry: Optional[Geometry], cell_size: int) -> tuple[int, int]:
    """(cell_h, cell_w): the longer side is `cell_size`, the aspect that of the photo's box."""
    if geometry is None:
        return cell_size, cell_size
    top, left, bottom, right = geometry.box
    bh, bw = bottom - top, right - left
    if bh >= bw:
        return cell_size, max(1, int(round(cell_size * bw / bh)))
    return max(1, int(round(cell_size * bh / bw))), cell_size


def sheet_layout(num_layers: int, num_heads: Union[int, Sequence[int]], geometry: Optional[Geometry] = None, *,
                 fused: bool = True, cell_size: int = 96, gap: int = 2) -> SheetLayout:
    """The layout `grid_sheet` draws with the same arguments (for click handling without the picture)."""
    per = None
    if not isinstance(num_heads, (int, np.integer)):
        per = tuple(int(h) for h in num_heads)
        num_heads = max(per) if per else 0
        if len(set(per)) <= 1:
            per = None
    ch, cw = cell_shape(geometry, cell_size)
    scale = min(1.0, max(cell_size, 40) / 96)
    return SheetLayout(int(num_layers), int(num_heads), bool(fused), ch, cw, gap,
                       left=int(round(34 * max(scale, 0.8))), top=int(round(18 * max(scale, 0.8))),
                       heads_per_layer=per)


def grid_cell_at(layout: SheetLayout, x: float, y: float) -> Optional[tuple[int, Union[int, str]]]:
    """(layer, head | "fused") under a click at sheet pixel (x, y), or None."""
    return layout.cell_at(x, y)


def view_thumbnail(image: ImageLike, geometry: Geometry, cell_hw: tuple[int, int]) -> np.ndarray:
    """The part of the photo the model saw (geometry box), resampled to `cell_hw` (uint8 RGB).

    Area-averaged first (no aliasing when a large photo shrinks), then placed with a sub-pixel affine warp.
    """
    photo = as_rgb(image)
    H, W = photo.shape[:2]
    top, left, bottom, right = _box(geometry, (H, W))
    ch, cw = cell_hw
    f = min(ch / max(bottom - top, 1e-9), cw / max(right - left, 1e-9))
    if f < 0.5:
        nh, nw = max(1, int(round(H * f))), max(1, int(round(W * f)))
        photo = cv2.resize(photo, (nw, nh), interpolation=cv2.INTER_AREA)
        top, left, bottom, right = top * nh / H, left * nw / W, bottom * nh / H, right * nw / W
    sy, sx = (bottom - top) / ch, (right - left) / cw
    # cell pixel q (centre q + 0.5) -> photo continuous top + (q + 0.5) * s -> photo index (- 0.5)
    inv = np.array([[sx, 0.0, left + 0.5 * sx - 0.5], [0.0, sy, top + 0.5 * sy - 0.5]])
    return cv2.warpAffine(photo, inv, (cw, ch), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def _as_layers(maps) -> list[np.ndarray]:
    if isinstance(maps, np.ndarray) or hasattr(maps, "detach"):
        a = maps.detach().float().cpu().numpy() if hasattr(maps, "detach") else np.asarray(maps)
        if a.ndim != 4:
            raise ValueError(f"expected maps of shape (layers, heads, gh, gw), got {a.shape}")
        return [np.asarray(m, np.float32) for m in a]
    out = []
    for m in maps:
        m = np.asarray(m.detach().float().cpu().numpy() if hasattr(m, "detach") else m, np.float32)
        if m.ndim == 2:
            m = m[None]
        if m.ndim != 3:
            raise ValueError(f"expected per-layer maps of shape (heads, gh, gw), got {m.shape}")
        out.append(m)
    return out


def _put_centered(img: np.ndarray, text: str, cx: int, cy: int, scale: float, color=(40, 40, 40)) -> None:
    (tw, th), _ = cv2.getTextSize(text, _FONT, scale, 1)
    cv2.putText(img, text, (int(cx - tw / 2), int(cy + th / 2)), _FONT, scale, color, 1, cv2.LINE_AA)


def grid_sheet(image: ImageLike, maps, geometry: Geometry, fused: Union[str, np.ndarray, None] = "mean", *,
               cell_size: int = 96, cmap: str = DEFAULT_CMAP, alpha: float = 0.6, mode: str = "smooth",
               norm: str = "minmax", percentile: float = 99.0, row_labels: Optional[Sequence[str]] = None,
               head_labels: Optional[Sequence[str]] = None, fused_label: str = "mean", gap: int = 2,
               background=(255, 255, 255), return_layout: bool = False):
    """One picture of every (layer, head) map on the photo; returns uint8 RGB (and the `SheetLayout`).

    `maps`: (layers, heads, gh, gw), or a list of per-layer (heads_l, gh_l, gw_l) arrays (layers may
    differ in heads and grid; missing heads are blank cells). `fused`: ``"mean"`` (mean over the heads,
    computed here), an array (layers, gh, gw), or None for no fused column. Each cell is normalised on
    its own (`norm`). Labels: rows "L0".., columns "H0".. and `fused_label`.
    """
    layers = _as_layers(maps)
    if not layers or max(m.shape[0] for m in layers) == 0:
        raise ValueError("no maps to draw")
    if isinstance(fused, str):
        if fused != "mean":
            raise ValueError(f"fused must be 'mean', an array or None, got {fused!r}")
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN positions stay NaN
            fused_maps = [np.nanmean(np.where(np.isfinite(m), m, np.nan), axis=0) if np.isfinite(m).any()
                          else np.zeros(m.shape[1:], np.float32) for m in layers]
    elif fused is None:
        fused_maps = None
    else:
        fused_maps = [np.asarray(f.detach().float().cpu().numpy() if hasattr(f, "detach") else f, np.float32)
                      for f in fused]
        if len(fused_maps) != len(layers):
            raise ValueError(f"fused has {len(fused_maps)} layers, maps {len(layers)}")
    layout = sheet_layout(len(layers), [m.shape[0] for m in layers], geometry, fused=fused_maps is not None,
                          cell_size=cell_size, gap=gap)
    ch, cw = layout.cell_h, layout.cell_w
    sheet = np.full((*layout.shape, 3), background, np.uint8)
    thumb = view_thumbnail(image, geometry, (ch, cw))
    interp = cv2.INTER_NEAREST_EXACT if mode == "blocky" else cv2.INTER_LINEAR
    blank = np.full((ch, cw, 3), 225, np.uint8)

    def cell(m: Optional[np.ndarray]) -> np.ndarray:
        if m is None or not np.isfinite(m).any():
            return blank
        v = np.nan_to_num(normalize_map(m, norm, percentile), nan=0.0)
        v = cv2.resize(v, (cw, ch), interpolation=interp)
        return cv2.addWeighted(thumb, 1.0 - alpha, apply_colormap(v, cmap), alpha, 0.0)

    for r, m in enumerate(layers):
        for h in range(layout.heads):
            y, x = layout.cell_origin(r, h)
            sheet[y:y + ch, x:x + cw] = cell(m[h] if h < m.shape[0] else None)
        if fused_maps is not None:
            y, x = layout.cell_origin(r, FUSED)
            sheet[y:y + ch, x:x + cw] = cell(fused_maps[r])

    scale = 0.4 * max(min(cell_size / 96, 1.0), 0.8)
    for r in range(layout.layers):
        y, _ = layout.cell_origin(r, 0)
        text = row_labels[r] if row_labels is not None else f"L{r}"
        _put_centered(sheet, str(text), layout.left // 2, y + ch // 2, scale)
    for c in range(layout.cols):
        _, x = layout.cell_origin(0, FUSED if (layout.fused and c == layout.heads) else c)
        if layout.fused and c == layout.heads:
            text = fused_label
        else:
            text = head_labels[c] if head_labels is not None else f"H{c}"
        _put_centered(sheet, str(text), x + cw // 2, layout.top // 2, scale)
    return (sheet, layout) if return_layout else sheet


__all__ = ["grid_sheet", "sheet_layout", "grid_cell_at", "SheetLayout", "cell_shape", "view_thumbnail", "FUSED"]
