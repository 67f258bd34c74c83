"""Procedural "shapes" dataset with exact ground-truth masks.

Every image holds one *target* object of one class (`CLASS_NAMES`) at a random position, size
(about 18-34 px across on a 64 px image), colour and rotation, on a textured, noisy background with
distractors: random lines, small blobs and sometimes a hollow ring (never another class shape).
Background and distractors are drawn first and the target last, so the mask is exactly the
target's own (non-antialiased) footprint: ``mask[y, x] == 255`` iff the object's colour was painted
at ``(y, x)``. Pixel noise is added to the whole image afterwards.

Everything is driven by one ``numpy.random.Generator``: the same seed gives byte-identical images.
Generation runs at several thousand 64 px images per second (cv2 drawing + numpy), so training can
draw fresh samples for every batch.
"""
from __future__ import annotations

import csv
import math
import os
from typing import Optional, Sequence

import cv2
import numpy as np

CLASS_NAMES = ("circle", "square", "triangle", "cross", "star")
NUM_CLASSES = len(CLASS_NAMES)

# cv2 draws polygons with fixed-point coordinates: `_SHIFT` fractional bits.
_SHIFT = 4
_SCALE = 1 << _SHIFT
_SUPERSAMPLE = 4

# Target size (outer diameter in px) on a 64 px image; scaled with `size`.
MIN_OBJECT, MAX_OBJECT = 18.0, 34.0
# Background colours are drawn from [BG_LOW, BG_HIGH] per channel; targets are >= OBJECT_CONTRAST
# brighter (luma) than the background under them.
BG_LOW, BG_HIGH = 12.0, 140.0
OBJECT_CONTRAST = 70.0


def _shape_polygon(label: int, d: float, angle: float) -> Optional[np.ndarray]:
    """Polygon (K, 2) of class `label` with outer diameter about `d`, centred at 0, rotated by
    `angle` radians (the circle is a 48-gon)."""
    r = d / 2.0
    if label == 0:
        a = np.arange(48) * (2 * math.pi / 48)
        pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    elif label == 1:  # square: side 0.8 d
        h = 0.4 * d
        pts = np.array([[-h, -h], [h, -h], [h, h], [-h, h]])
    elif label == 2:  # equilateral triangle, circumradius 0.58 d (apex up before rotation)
        R = 0.58 * d
        a = -math.pi / 2 + np.arange(3) * 2 * math.pi / 3
        pts = np.stack([R * np.cos(a), R * np.sin(a)], 1)
        pts[:, 1] += R * 0.25  # centre the bounding box vertically
    elif label == 3:  # plus-shaped cross, arm width 0.32 d, extent d
        w, e = 0.16 * d, r
        pts = np.array([[-w, -e], [w, -e], [w, -w], [e, -w], [e, w], [w, w], [w, e], [-w, e],
                        [-w, w], [-e, w], [-e, -w], [-w, -w]])
    elif label == 4:  # five-pointed star, outer radius 0.56 d, inner 0.45 * outer
        R = 0.56 * d
        a = -math.pi / 2 + np.arange(10) * math.pi / 5
        rad = np.where(np.arange(10) % 2 == 0, R, 0.45 * R)
        pts = np.stack([rad * np.cos(a), rad * np.sin(a)], 1)
        pts[:, 1] += R * 0.1
    else:
        raise ValueError(f"unknown label {label}")
    c, s = math.cos(angle), math.sin(angle)
    return pts @ np.array([[c, s], [-s, c]])


def shape_extent(label: int, d: float) -> float:
    """Largest distance from the centre to any point of the shape, any rotation."""
    return float(np.sqrt((_shape_polygon(label, d, 0.0) ** 2).sum(1)).max())


def render_object(label: int, center: tuple[float, float], diameter: float, angle: float,
                  size: int = 64) -> np.ndarray:
    """The footprint (uint8 {0, 255}, size x size) of one object; ``center`` is (x, y) in px, pixel
    (i, j) spanning [j, j+1) x [i, i+1). A pixel belongs to the object when the polygon covers at
    least half of it (rendered at 4x and area-averaged), so areas and centres match the geometry."""
    k = _SUPERSAMPLE
    big = np.zeros((size * k, size * k), np.uint8)
    cx, cy = center
    # a big pixel's centre is at k*x + (k-1)/2 in big-pixel index coordinates
    pts = np.round(((_shape_polygon(label, diameter, angle) + [cx, cy]) * k - 0.5) * _SCALE).astype(np.int32)
    cv2.fillPoly(big, [pts], 255, cv2.LINE_8, _SHIFT)
    cover = cv2.resize(big, (size, size), interpolation=cv2.INTER_AREA)
    return np.where(cover >= 128, np.uint8(255), np.uint8(0))


_NOISE_BANKS: dict[int, np.ndarray] = {}


def _noise(y: int, x: int, size: int) -> np.ndarray:
    """Unit Gaussian pixel noise (size, size, 3): the crop at (y, x) of a fixed, seeded noise bank
    (drawing 12k fresh normals per image would dominate the generation time)."""
    bank = _NOISE_BANKS.get(size)
    if bank is None:
        bank = np.random.default_rng(12345).standard_normal((4 * size, 4 * size, 3), dtype=np.float32)
        _NOISE_BANKS[size] = bank
    return bank[y:y + size, x:x + size]


class _Uniforms:
    """Uniform [0, 1) numbers drawn from `rng` in blocks and handed out as Python floats: small
    scalar draws in plain Python are ~20x cheaper than one numpy call each."""

    __slots__ = ("rng", "buf", "i")

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.buf = rng.random(96).tolist()
        self.i = 0

    def __call__(self, lo: float = 0.0, hi: float = 1.0) -> float:
        if self.i == len(self.buf):
            self.buf = self.rng.random(96).tolist()
            self.i = 0
        u = self.buf[self.i]
        self.i += 1
        return lo + (hi - lo) * u

    def int(self, lo: int, hi: int) -> int:
        """Integer in [lo, hi)."""
        return min(lo + int(self() * (hi - lo)), hi - 1)


def _luma(r: float, g: float, b: float) -> float:
    return 0.299 * r + 0.587 * g + 0.114 * b


def _contrasting_colour(u: _Uniforms, ref, min_luma: float = 60.0, min_dist: float = 110.0
                        ) -> tuple[float, float, float]:
    """A random RGB colour whose luma differs from `ref`'s by >= min_luma and RGB distance >= min_dist."""
    r0, g0, b0 = ref
    l0 = _luma(r0, g0, b0)
    for _ in range(32):
        r, g, b = u(0, 255), u(0, 255), u(0, 255)
        if abs(_luma(r, g, b) - l0) >= min_luma and (r - r0) ** 2 + (g - g0) ** 2 + (b - b0) ** 2 >= min_dist ** 2:
            return r, g, b
    return 255.0 - r0, 255.0 - g0, 255.0 - b0  # the inverse colour always contrasts


def _object_colour(u: _Uniforms, ref, min_luma: float = OBJECT_CONTRAST) -> tuple[float, float, float]:
    """A random colour at least `min_luma` brighter than `ref` (any hue): targets are always lighter
    than the (darker) background under them, which makes the classes much faster to learn for a
    small ViT; distractors have either polarity, so brightness alone does not find the target."""
    l0 = _luma(*ref)
    for _ in range(64):
        r, g, b = u(0, 255), u(0, 255), u(0, 255)
        if _luma(r, g, b) >= l0 + min_luma:
            return r, g, b
    k = min(255.0, l0 + min_luma)  # fall back: a grey that is bright enough
    return k, k, k


def _background(u: _Uniforms, size: int) -> tuple[np.ndarray, tuple[float, float, float]]:
    """Float32 (size, size, 3) textured background - a colour gradient plus low-frequency
    blotches, upsampled from a coarse grid - and its mean colour."""
    base = (u(BG_LOW, BG_HIGH), u(BG_LOW, BG_HIGH), u(BG_LOW, BG_HIGH))
    other = tuple(min(max(c + u(-40, 40), 0.0), 255.0) for c in base)
    cells = u.int(3, 8)
    ang = u(0, 2 * math.pi)
    amp = u(4, 14)
    c, s = math.cos(ang), math.sin(ang)
    lo, span = min(c, 0.0) + min(s, 0.0), max(abs(c) + abs(s), 1e-6)
    t = np.linspace(0.0, 1.0, cells)
    ramp = ((c * t[None, :] + s * t[:, None]) - lo) / span            # 0..1 over the image
    grid = np.asarray(base) + ramp[..., None] * (np.asarray(other) - np.asarray(base))
    # blotches: the fixed noise bank sampled at a random offset, scaled
    grid += _noise(u.int(0, 3 * size), u.int(0, 3 * size), size)[:cells, :cells] * amp
    img = cv2.resize(grid.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)
    mean = tuple(0.5 * (a + b) for a, b in zip(base, other))
    return img, mean


def _pt(x: float, y: float) -> tuple[int, int]:
    return int(round(x * _SCALE)), int(round(y * _SCALE))


def _draw_distractors(u: _Uniforms, img: np.ndarray, size: int, bg) -> None:
    s = size / 64.0
    # random lines (may run off the image)
    for _ in range(u.int(1, 5)):
        col = _contrasting_colour(u, bg, 30, 60)
        cv2.line(img, _pt(u(-0.1, 1.1) * size, u(-0.1, 1.1) * size), _pt(u(-0.1, 1.1) * size, u(-0.1, 1.1) * size),
                 col, u.int(1, 3), cv2.LINE_8, _SHIFT)
    # small blobs (far smaller than any target circle)
    for _ in range(u.int(2, 7)):
        col = _contrasting_colour(u, bg, 30, 60)
        cv2.circle(img, _pt(u(0, size), u(0, size)), int(u(1.0, 3.0) * s * _SCALE), col, -1, cv2.LINE_8, _SHIFT)
    # sometimes a hollow ring / ellipse outline (a non-target object)
    if u() < 0.4:
        col = _contrasting_colour(u, bg, 40, 80)
        cv2.ellipse(img, _pt(u(0.15, 0.85) * size, u(0.15, 0.85) * size),
                    _pt(u(5, 12) * s, u(5, 12) * s), u(0, 180), 0, 360, col, u.int(1, 3), cv2.LINE_8, _SHIFT)


def make_sample(rng: np.random.Generator, size: int = 64, label: Optional[int] = None
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """One sample: (image uint8 (size, size, 3) RGB, mask uint8 (size, size) in {0, 255}, label)."""
    u = _Uniforms(rng)
    if label is None:
        label = u.int(0, NUM_CLASSES)
    img, bg = _background(u, size)

    # the target's geometry, fully inside the image
    scale = size / 64.0
    d = u(MIN_OBJECT, MAX_OBJECT) * scale
    angle = u(0, 2 * math.pi)
    ext = shape_extent(label, d)
    cx, cy = u(ext + 1.0, size - 1.0 - ext), u(ext + 1.0, size - 1.0 - ext)
    mask = render_object(label, (cx, cy), d, angle, size)
    on = mask > 0
    under = tuple(img[on].mean(0).tolist()) if on.any() else bg  # background colour under the object

    _draw_distractors(u, img, size, bg)

    col = _object_colour(u, under)
    shade = u(-12, 12)
    img[on] = (col[0] + shade, col[1] + shade, col[2] + shade)  # drawn last: mask == visible object
    img += _noise(u.int(0, 3 * size), u.int(0, 3 * size), size) * u(3, 10)
    img += 0.5
    np.clip(img, 0, 255, out=img)
    return img.astype(np.uint8), mask, int(label)


def make_batch(rng: np.random.Generator, n: int, size: int = 64
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`n` samples from `rng`: images (n, size, size, 3) uint8, masks (n, size, size) uint8, labels (n,) int64."""
    images = np.empty((n, size, size, 3), np.uint8)
    masks = np.empty((n, size, size), np.uint8)
    labels = np.empty(n, np.int64)
    for i in range(n):
        images[i], masks[i], labels[i] = make_sample(rng, size)
    return images, masks, labels


def make_dataset(n: int, seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic dataset of `n` samples for `seed` (see `make_batch`)."""
    return make_batch(np.random.default_rng(seed), n, size)


def write_dataset(n: int, seed: int, out_dir: str, size: int = 64) -> dict:
    """Write DIR/images/00000.png, DIR/masks/00000.png (0 bg / 255 object) and DIR/labels.csv
    (header ``file,label``; file name, class name). Returns a small summary dict."""
    images, masks, labels = make_dataset(n, seed, size)
    img_dir, mask_dir = os.path.join(out_dir, "images"), os.path.join(out_dir, "masks")
    os.makedirs(img_dir, exist_ok=True)
    os.makedirs(mask_dir, exist_ok=True)
    width = max(5, len(str(n - 1)))
    rows = []
    for i in range(n):
        name = f"{i:0{width}d}.png"
        cv2.imwrite(os.path.join(img_dir, name), cv2.cvtColor(images[i], cv2.COLOR_RGB2BGR))
        cv2.imwrite(os.path.join(mask_dir, name), masks[i])
        rows.append((name, CLASS_NAMES[labels[i]]))
    with open(os.path.join(out_dir, "labels.csv"), "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["file", "label"])
        w.writerows(rows)
    counts = {c: int((labels == k).sum()) for k, c in enumerate(CLASS_NAMES)}
    return {"n": n, "seed": seed, "size": size, "dir": out_dir, "counts": counts}


def sample_grid(images: np.ndarray, labels: Sequence[int], path: str, cols: int = 6,
                masks: Optional[np.ndarray] = None) -> None:
    """Save a labelled grid of samples (matplotlib) - e.g. assets/shapes_samples.png."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    rows = math.ceil(n / cols) * (2 if masks is not None else 1)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.6, rows * 1.75))
    axes = np.atleast_2d(axes)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        if masks is not None:
            r *= 2
        axes[r, c].imshow(images[i], interpolation="nearest")
        axes[r, c].set_title(CLASS_NAMES[int(labels[i])], fontsize=9)
        if masks is not None:
            axes[r + 1, c].imshow(masks[i], cmap="gray", interpolation="nearest")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


__all__ = ["CLASS_NAMES", "NUM_CLASSES", "make_sample", "make_batch", "make_dataset", "write_dataset",
           "render_object", "shape_extent", "sample_grid"]
