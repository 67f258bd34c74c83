"""Colour: normalising a raw map to [0, 1] and turning it into RGB with a matplotlib colormap.

Colours are exactly matplotlib's: a value ``v`` in [0, 1] gets ``cmap(v, bytes=True)`` (matplotlib
bins a float ``v`` into ``floor(v * N)`` of its ``N`` entries). The default colormap is the
perceptually uniform ``inferno``; ``jet`` and every other matplotlib name work too.
"""
from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np

DEFAULT_CMAP = "inferno"
NORMS = ("minmax", "percentile", "none")


@lru_cache(maxsize=32)
def colormap_lut(name: str = DEFAULT_CMAP) -> np.ndarray:
    """(N, 3) uint8 RGB table of matplotlib colormap `name` (N is 256 for the usual maps)."""
    import matplotlib

    try:
        cmap = matplotlib.colormaps[name]
    except KeyError:
        raise ValueError(f"unknown colormap {name!r}; e.g. inferno, viridis, magma, jet") from None
    lut = np.ascontiguousarray(cmap(np.arange(cmap.N), bytes=True)[:, :3])
    lut.setflags(write=False)
    return lut


def as_map(heat) -> np.ndarray:
    """A (gh, gw) float32 array from a numpy array / CPU tensor, leading axes of size 1 dropped."""
    if hasattr(heat, "detach"):
        heat = heat.detach().float().cpu().numpy()
    a = np.asarray(heat, dtype=np.float32)
    while a.ndim > 2 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"expected a 2-D map (gh, gw), got shape {a.shape}")
    return a


def normalize_map(heat, norm: str = "minmax", percentile: float = 99.0) -> np.ndarray:
    """Map values to [0, 1] (float32, same shape). NaN stays NaN; never divides by zero.

    - ``minmax``: ``(x - min) / (max - min)``.
    - ``percentile``: ``(x - min) / (p - min)`` clipped to 1, ``p`` the `percentile`-th percentile,
      so that a few extreme patches do not wash out the rest.
    - ``none``: the map is already in [0, 1]; only clipped.
    A constant map (or one with no finite value) becomes all zeros.
    """
    a = np.asarray(heat, dtype=np.float32)
    if norm not in NORMS:
        raise ValueError(f"unknown normalisation {norm!r}; choose one of {NORMS}")
    finite = np.isfinite(a)
    out = np.where(finite, a, np.nan).astype(np.float32)
    if norm == "none" or not finite.any():
        return np.clip(out, 0.0, 1.0) if finite.any() else out
    vals = a[finite]
    lo = float(vals.min())
    hi = float(np.percentile(vals, percentile)) if norm == "percentile" else float(vals.max())
    if not hi > lo:  # percentile collapsed onto the minimum: fall back to the maximum
        hi = float(vals.max())
    if not hi > lo:
        return np.where(finite, 0.0, np.nan).astype(np.float32)
    return np.clip((out - lo) / (hi - lo), 0.0, 1.0)


def to_index(values01: np.ndarray, n: int) -> np.ndarray:
    """matplotlib's binning of [0, 1] floats into `n` colours; NaN -> 0. uint8 when n <= 256."""
    v = np.nan_to_num(np.asarray(values01, dtype=np.float32), nan=0.0)
    idx = np.clip((v * n).astype(np.int32), 0, n - 1)
    return idx.astype(np.uint8) if n <= 256 else idx


def apply_colormap(values01: np.ndarray, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 RGB, identical to ``matplotlib cmap(v, bytes=True)``."""
    lut = colormap_lut(cmap)
    idx = to_index(values01, len(lut))
    if len(lut) == 256:
        return cv2.LUT(cv2.cvtColor(idx, cv2.COLOR_GRAY2RGB), lut.reshape(256, 1, 3))
    return lut[idx]


def colorbar(height: int = 256, width: int = 64, cmap: str = DEFAULT_CMAP, vmin: float = 0.0,
             vmax: float = 1.0, label: str = "", ticks: int = 5, background=(255, 255, 255)) -> np.ndarray:
    """A vertical legend (uint8 RGB, (height, width, 3)): high values on top, tick labels on the right."""
    img = np.full((height, width, 3), background, np.uint8)
    pad = 8
    bar_h, bar_w = max(height - 2 * pad - (12 if label else 0), 2), max(min(16, width // 3), 4)
    ramp = np.linspace(1.0, 0.0, bar_h, dtype=np.float32)[:, None].repeat(bar_w, axis=1)
    img[pad:pad + bar_h, 2:2 + bar_w] = apply_colormap(ramp, cmap)
    font, scale = cv2.FONT_HERSHEY_SIMPLEX, 0.35
    for k in range(ticks):
        f = k / max(ticks - 1, 1)
        y = int(round(pad + (1 - f) * (bar_h - 1)))
        cv2.line(img, (2 + bar_w, y), (5 + bar_w, y), (0, 0, 0), 1)
        text = f"{vmin + f * (vmax - vmin):.3g}"
        cv2.putText(img, text, (8 + bar_w, y + 4), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    if label:
        cv2.putText(img, label, (2, height - 2), font, scale, (0, 0, 0), 1, cv2.LINE_AA)
    return img
