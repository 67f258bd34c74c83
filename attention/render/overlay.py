"""A map over the patch grid, drawn on the ORIGINAL photo exactly where the model saw it.

Conventions (continuous coordinates, pixel edges at integers, pixel centres at ``k + 0.5``):

- grid cell ``(i, j)`` covers model-input pixels ``[i*sy, (i+1)*sy) x [j*sx, (j+1)*sx)``, ``s`` the
  stride (input size / grid size unless given);
- model input covers ``geometry.box = (top, left, bottom, right)`` of the photo, so input row ``r``
  is photo row ``top + r * (bottom - top) / H_in`` (the inverse of the preprocessing's resize + crop);
- a photo pixel belongs to the cell its centre falls in; pixels whose centre is outside the box were
  never seen by the model (cropped away): they get no heat (NaN) and are shown dimmed.

The grid is placed on the photo with one affine warp (`cv2.warpAffine`): nearest for ``blocky``
(each patch is a crisp block), bilinear for ``smooth``.
"""
from __future__ import annotations

from typing import Optional, Union

import cv2
import numpy as np
from PIL import Image

from ..preprocess import Geometry
from .colormap import DEFAULT_CMAP, apply_colormap, as_map, normalize_map

MODES = ("smooth", "blocky")
ImageLike = Union[Image.Image, np.ndarray]


def as_rgb(image: ImageLike) -> np.ndarray:
    """(H, W, 3) uint8 RGB from a PIL image or an array (grayscale and RGBA are converted)."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB") if image.mode != "RGB" else image)
    a = np.asarray(image)
    if a.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {a.dtype}")
    if a.ndim == 2:
        return cv2.cvtColor(a, cv2.COLOR_GRAY2RGB)
    if a.ndim == 3 and a.shape[2] == 4:
        return np.ascontiguousarray(a[..., :3])
    if a.ndim != 3 or a.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {a.shape}")
    return a


def _box(geometry: Geometry, photo_hw: Optional[tuple[int, int]]) -> tuple[float, float, float, float]:
    """The geometry's box, rescaled when the photo is shown at another size than the original."""
    top, left, bottom, right = geometry.box
    if photo_hw is None or tuple(photo_hw) == tuple(geometry.original_size):
        return top, left, bottom, right
    fy = photo_hw[0] / geometry.original_size[0]
    fx = photo_hw[1] / geometry.original_size[1]
    return top * fy, left * fx, bottom * fy, right * fx


def cell_size_on_photo(geometry: Geometry, grid: tuple[int, int], stride: Optional[tuple[float, float]] = None,
                       photo_hw: Optional[tuple[int, int]] = None) -> tuple[float, float, float, float]:
    """(top, left, cell_h, cell_w): photo coordinates of the grid's top-left corner and its cell size."""
    top, left, bottom, right = _box(geometry, photo_hw)
    H, W = geometry.input_size
    sy, sx = stride if stride is not None else (H / grid[0], W / grid[1])
    return top, left, sy * (bottom - top) / H, sx * (right - left) / W


def grid_to_photo_matrix(geometry: Geometry, grid: tuple[int, int], stride: Optional[tuple[float, float]] = None,
                         photo_hw: Optional[tuple[int, int]] = None) -> np.ndarray:
    """2x3 affine matrix from grid indices to photo pixel indices (OpenCV's convention: index = centre).

    Cell ``g`` has its centre at continuous ``g + 0.5``; photo pixel ``p`` at ``p + 0.5``; continuous photo
    coordinate ``= top + g_cont * cell``. Hence ``p = cell * g + top + cell / 2 - 1/2``.
    """
    top, left, ch, cw = cell_size_on_photo(geometry, grid, stride, photo_hw)
    return np.array([[cw, 0.0, left + cw / 2 - 0.5],
                     [0.0, ch, top + ch / 2 - 0.5]], dtype=np.float64)


def seen_rect(geometry: Geometry, photo_hw: tuple[int, int], grid: Optional[tuple[int, int]] = None,
              stride: Optional[tuple[float, float]] = None) -> tuple[int, int, int, int]:
    """``(y0, y1, x0, x1)`` (end exclusive, clipped to the photo): the photo pixels whose centre lies in
    the area the map covers, i.e. the model's view (the whole box, or ``grid * stride`` of it)."""
    H, W = photo_hw
    if grid is None:
        top, left, bottom, right = _box(geometry, photo_hw)
    else:
        top, left, ch, cw = cell_size_on_photo(geometry, grid, stride, photo_hw)
        bottom, right = top + grid[0] * ch, left + grid[1] * cw
    # centre p + 0.5 in [top, bottom)  <=>  ceil(top - 0.5) <= p < ceil(bottom - 0.5)
    y0, y1 = (min(max(int(np.ceil(v - 0.5)), 0), H) for v in (top, bottom))
    x0, x1 = (min(max(int(np.ceil(v - 0.5)), 0), W) for v in (left, right))
    return y0, max(y1, y0), x0, max(x1, x0)


def seen_mask(geometry: Geometry, photo_hw: tuple[int, int], grid: Optional[tuple[int, int]] = None,
              stride: Optional[tuple[float, float]] = None) -> np.ndarray:
    """(H, W) bool: photo pixels whose centre lies in the area the map covers (the model's view)."""
    y0, y1, x0, x1 = seen_rect(geometry, photo_hw, grid, stride)
    mask = np.zeros(tuple(photo_hw), bool)
    mask[y0:y1, x0:x1] = True
    return mask


def patch_pixels(geometry: Geometry, grid: tuple[int, int], row: int, col: int,
                 stride: Optional[tuple[float, float]] = None,
                 photo_hw: Optional[tuple[int, int]] = None) -> tuple[int, int, int, int]:
    """Photo pixel index range ``(y0, y1, x0, x1)`` (end exclusive, may be empty or reach outside the
    photo) of the pixels whose centres fall in grid cell (row, col)."""
    top, left, ch, cw = cell_size_on_photo(geometry, grid, stride, photo_hw)
    # centre p + 0.5 >= edge  <=>  p >= ceil(edge - 0.5)
    y0, y1 = int(np.ceil(top + row * ch - 0.5)), int(np.ceil(top + (row + 1) * ch - 0.5))
    x0, x1 = int(np.ceil(left + col * cw - 0.5)), int(np.ceil(left + (col + 1) * cw - 0.5))
    return y0, y1, x0, x1


def photo_to_patch(geometry: Geometry, grid: tuple[int, int], y: float, x: float,
                   stride: Optional[tuple[float, float]] = None,
                   photo_hw: Optional[tuple[int, int]] = None) -> Optional[tuple[int, int]]:
    """Grid cell (row, col) under photo pixel index (y, x) (e.g. a click), or None outside the view."""
    top, left, ch, cw = cell_size_on_photo(geometry, grid, stride, photo_hw)
    r = int(np.floor((y + 0.5 - top) / ch))
    c = int(np.floor((x + 0.5 - left) / cw))
    return (r, c) if 0 <= r < grid[0] and 0 <= c < grid[1] else None


def _warp_to_rect(v: np.ndarray, geometry: Geometry, photo_hw: tuple[int, int], rect: tuple[int, int, int, int],
                  mode: str, stride: Optional[tuple[float, float]]) -> np.ndarray:
    """Grid values (float32 or uint8) warped onto the photo pixels of `rect` only."""
    y0, y1, x0, x1 = rect
    M = grid_to_photo_matrix(geometry, v.shape, stride, photo_hw)
    M[:, 2] -= (x0, y0)                                   # photo index -> index inside the rectangle
    inv = cv2.invertAffineTransform(M)
    if mode == "blocky":
        # a pixel centre exactly on a cell edge belongs to the later cell ([i*s, (i+1)*s)); OpenCV's
        # nearest rounds such ties down, so nudge (in grid cells) by just more than its rounding error
        inv[:, 2] += 1e-6 + 4e-7 * max(v.shape)  # OpenCV warps in float32: ~6e-8 relative error
    interp = cv2.INTER_NEAREST if mode == "blocky" else cv2.INTER_LINEAR
    return cv2.warpAffine(v, inv, (x1 - x0, y1 - y0), flags=interp | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


def _finite(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32)
    return a if np.isfinite(a).all() else np.where(np.isfinite(a), a, np.float32(0))


def upsample_to_photo(values: np.ndarray, geometry: Geometry, photo_hw: Optional[tuple[int, int]] = None,
                      mode: str = "smooth", stride: Optional[tuple[float, float]] = None,
                      outside: float = np.nan) -> np.ndarray:
    """(gh, gw) grid values -> (H, W) float32 on the photo through the inverse preprocessing.

    Blocky: every photo pixel gets the value of the cell its centre falls in (exact up to OpenCV's
    float32 arithmetic, i.e. for centres further than ~1e-5 cell from an edge; a centre exactly on
    an edge goes to the later cell). Smooth: bilinear between cell centres, edge cells extended to
    the border of the view. Pixels outside the model's view get `outside` (NaN by default); non-finite
    cells are treated as 0.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    v = _finite(as_map(values))
    H, W = photo_hw if photo_hw is not None else geometry.original_size
    rect = seen_rect(geometry, (H, W), v.shape, stride)
    y0, y1, x0, x1 = rect
    up = np.full((H, W), outside, np.float32)
    if y1 > y0 and x1 > x0:
        up[y0:y1, x0:x1] = _warp_to_rect(v, geometry, (H, W), rect, mode, stride)
    return up


def heat_on_photo(heat, geometry: Geometry, photo_hw: Optional[tuple[int, int]] = None, *, mode: str = "smooth",
                  norm: str = "minmax", percentile: float = 99.0, stride: Optional[tuple[float, float]] = None,
                  outside: float = np.nan) -> np.ndarray:
    """The normalised map ([0, 1]) resampled onto the photo, (H, W) float32, `outside` where unseen."""
    return upsample_to_photo(normalize_map(as_map(heat), norm, percentile), geometry, photo_hw, mode, stride, outside)


def mass_mask(heat, fraction: float) -> np.ndarray:
    """DINO-style mask: the smallest set of cells holding `fraction` of the map's mass (bool, grid shape).

    Mass is the map's non-negative part (NaN counts as 0). Cells are taken in decreasing order of value
    (ties in row-major order) until their sum reaches ``fraction * total``. A map without mass keeps all.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"mass fraction must be in [0, 1], got {fraction}")
    a = np.clip(np.nan_to_num(as_map(heat).astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0), 0.0, None)
    flat = a.ravel()
    total = flat.sum()
    if not total > 0:
        return np.ones(a.shape, bool)
    order = np.argsort(-flat, kind="stable")
    cum = np.cumsum(flat[order])
    k = int(np.searchsorted(cum, fraction * total * (1 - 1e-12), side="left")) + 1  # 1e-12: summation order
    keep = np.zeros(flat.size, bool)
    keep[order[:min(k, flat.size)]] = True
    return keep.reshape(a.shape)


def overlay(image: ImageLike, heat, geometry: Geometry, *, cmap: str = DEFAULT_CMAP, alpha: float = 0.5,
            mode: str = "smooth", norm: str = "minmax", percentile: float = 99.0,
            mass_threshold: Optional[float] = None, contour: bool = False, contour_level: float = 0.5,
            query_patch: Optional[tuple[int, int]] = None, dim_outside: bool = True, dim: float = 0.35,
            stride: Optional[tuple[float, float]] = None, contour_color=(255, 255, 255),
            marker_color=(0, 255, 255)) -> np.ndarray:
    """Colour a (gh, gw) map and blend it on the original photo; returns (H, W, 3) uint8 RGB.

    - ``mode``: ``smooth`` (bilinear) or ``blocky`` (nearest: one block per patch).
    - ``norm``: ``minmax``, ``percentile`` (clip at the `percentile`-th percentile) or ``none``.
    - ``mass_threshold``: keep the smallest set of patches holding this fraction of the mass; the
      rest of the view is shown dimmed without heat.
    - ``contour``: outline the kept patches (with ``mass_threshold``) or the region with normalised
      heat >= `contour_level`.
    - ``query_patch``: (row, col) of a patch to mark with a box (e.g. the query of a per-query map).
    - ``dim_outside``: darken the part of the photo the model never saw (by factor `dim`).
    `image` may be shown at another size than ``geometry.original_size``; the box is rescaled.
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose one of {MODES}")
    photo = as_rgb(image)
    H, W = photo.shape[:2]
    grid_map = as_map(heat)
    gh, gw = grid_map.shape
    rect = y0, y1, x0, x1 = seen_rect(geometry, (H, W), (gh, gw), stride)
    out = cv2.convertScaleAbs(photo, alpha=dim) if dim_outside else photo.copy()
    thick = max(1, int(round(min(H, W) / 224)))
    if y1 > y0 and x1 > x0:
        norm_map = _finite(normalize_map(grid_map, norm, percentile))
        up = _warp_to_rect(norm_map, geometry, (H, W), rect, mode, stride)
        view = photo[y0:y1, x0:x1]
        blended = cv2.addWeighted(view, 1.0 - alpha, apply_colormap(up, cmap), alpha, 0.0)
        region = None
        if mass_threshold is not None:
            keep = mass_mask(grid_map, mass_threshold).astype(np.uint8) * 255
            region = _warp_to_rect(keep, geometry, (H, W), rect, mode, stride) >= 128
            dimmed = out[y0:y1, x0:x1] if dim_outside else cv2.convertScaleAbs(view, alpha=dim)
            np.copyto(blended, dimmed, where=~region[..., None])
        out[y0:y1, x0:x1] = blended
        if contour:
            if region is None:
                region = up >= contour_level
            contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE,
                                           offset=(x0, y0))
            cv2.drawContours(out, contours, -1, tuple(int(c) for c in contour_color), thick, cv2.LINE_AA)
    if query_patch is not None:
        r, c = query_patch
        if not (0 <= r < gh and 0 <= c < gw):
            raise IndexError(f"query patch ({r}, {c}) is outside the {gh}x{gw} grid")
        py0, py1, px0, px1 = patch_pixels(geometry, (gh, gw), r, c, stride, (H, W))
        cv2.rectangle(out, (px0, py0), (px1 - 1, py1 - 1), tuple(int(v) for v in marker_color), thick)
    return out

__all__ = ["overlay", "heat_on_photo", "upsample_to_photo", "mass_mask", "seen_mask", "seen_rect", "patch_pixels",
           "photo_to_patch", "grid_to_photo_matrix", "cell_size_on_photo", "as_rgb", "MODES"]
