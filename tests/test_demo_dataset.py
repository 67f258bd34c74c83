"""The procedural shapes dataset: determinism, exact masks, the dataset CLI."""
import csv
import math
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from attention.demo.quality import auroc, cell_fractions, evaluate_maps
from attention.demo.shapes import (CLASS_NAMES, MAX_OBJECT, MIN_OBJECT, make_dataset, make_sample, render_object,
                                   shape_extent, write_dataset)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_class_names():
    assert CLASS_NAMES[:5] == ("circle", "square", "triangle", "cross", "star")


def test_same_seed_identical_different_seed_differs():
    a = make_dataset(40, seed=7)
    b = make_dataset(40, seed=7)
    for x, y in zip(a, b):
        assert x.tobytes() == y.tobytes()
    c = make_dataset(40, seed=8)
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[1], c[1])
    images, masks, labels = a
    assert images.shape == (40, 64, 64, 3) and images.dtype == np.uint8
    assert masks.shape == (40, 64, 64) and masks.dtype == np.uint8
    assert labels.shape == (40,) and set(np.unique(labels)) <= set(range(len(CLASS_NAMES)))


def test_classes_balanced_and_masks_binary_sized():
    images, masks, labels = make_dataset(500, seed=1)
    counts = np.bincount(labels, minlength=5)
    assert counts.min() >= 70, counts                       # ~100 each
    assert set(np.unique(masks)) == {0, 255}
    area = (masks > 0).sum((1, 2))
    assert area.min() >= 100 and area.max() <= 34 * 34, (area.min(), area.max())
    # the object never touches the border
    assert not masks[:, 0].any() and not masks[:, -1].any() and not masks[:, :, 0].any() and not masks[:, :, -1].any()
    # object pixels differ clearly from the background around them
    for img, m in zip(images[:100], masks[:100]):
        on = m > 0
        ring = cv2.dilate(m, np.ones((5, 5), np.uint8)) > 0
        ring &= ~on
        d = np.abs(img[on].astype(float).mean(0) - img[ring].astype(float).mean(0)).sum()
        assert d > 40, d


def test_object_uniform_colour_under_mask():
    """The target is drawn last: every masked pixel is the object colour (+ pixel noise only), so
    the mask is exactly the visible object."""
    images, masks, _ = make_dataset(50, seed=2)
    for img, m in zip(images, masks):
        px = img[m > 0].astype(float)
        assert px.std(0).max() < 16, px.std(0)       # fill shade is constant; noise sigma <= 10


@pytest.mark.parametrize("label", range(5))
def test_render_on_flat_background_matches_mask_exactly(label):
    size = 64
    bg, fg = np.array([30, 60, 90], np.uint8), np.array([220, 200, 10], np.uint8)
    mask = render_object(label, (31.3, 30.7), 26.0, 0.4, size)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = bg
    img[mask > 0] = fg
    differs = (img != bg).any(-1)
    assert np.array_equal(differs, mask > 0)
    assert set(np.unique(mask)) == {0, 255}
    # area matches the geometry of the class (diameter d = 26)
    d = 26.0
    expected = {0: math.pi * (d / 2) ** 2,                           # circle
                1: (0.8 * d) ** 2,                                   # square, side 0.8 d
                2: 3 * math.sqrt(3) / 4 * (0.58 * d) ** 2,           # equilateral triangle, circumradius 0.58 d
                3: d * 0.32 * d * 2 - (0.32 * d) ** 2,               # plus: two arms minus the overlap
                4: None}[label]
    area = (mask > 0).sum()
    if expected is not None:
        assert abs(area - expected) / expected < 0.08, (area, expected)
    else:  # star: 10-gon with outer R = 0.56 d, inner 0.45 R
        R, r = 0.56 * d, 0.252 * d
        star = 5 * R * r * math.sin(math.pi / 5)
        assert abs(area - star) / star < 0.1, (area, star)
    # unrotated, the object's bounding box is centred where asked (pixel j spans [j, j+1))
    ys, xs = np.nonzero(render_object(label, (31.3, 30.7), 26.0, 0.0, size))
    assert abs((xs.min() + xs.max() + 1) / 2 - 31.3) <= 1.0 and abs((ys.min() + ys.max() + 1) / 2 - 30.7) <= 1.0


def test_sizes_in_range_and_fit_inside():
    for label in range(5):
        for d in (MIN_OBJECT, MAX_OBJECT):
            ext = shape_extent(label, d)
            assert d / 2 - 1e-6 <= ext <= 0.7 * d
    rng = np.random.default_rng(3)
    for _ in range(200):
        _, m, label = make_sample(rng)
        ys, xs = np.nonzero(m)
        extent = max(ys.max() - ys.min(), xs.max() - xs.min()) + 1
        assert 12 <= extent <= 40, (label, extent)


def test_generation_speed():
    import time
    make_dataset(20, 0)
    t = time.perf_counter()
    make_dataset(1000, 0)
    rate = 1000 / (time.perf_counter() - t)
    assert rate > 300, rate   # ~3000/s on an idle core; generous for loaded CI machines


def test_cli_writes_dataset(tmp_path):
    out = tmp_path / "ds"
    r = subprocess.run([sys.executable, "-m", "attention.demo", "dataset", "--n", "12", "--seed", "5",
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    with open(out / "labels.csv") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["file", "label"]
    assert len(rows) == 13
    images, masks, labels = make_dataset(12, seed=5)
    for i, (name, cls) in enumerate(rows[1:]):
        assert name == f"{i:05d}.png"
        assert cls == CLASS_NAMES[labels[i]]
        img = cv2.cvtColor(cv2.imread(str(out / "images" / name)), cv2.COLOR_BGR2RGB)
        m = cv2.imread(str(out / "masks" / name), cv2.IMREAD_UNCHANGED)
        assert img.shape == (64, 64, 3) and m.shape == (64, 64)
        assert np.array_equal(img, images[i]) and np.array_equal(m, masks[i])  # PNG is lossless


def test_write_dataset_size(tmp_path):
    info = write_dataset(3, 0, str(tmp_path), size=96)
    assert info["n"] == 3
    m = cv2.imread(str(tmp_path / "masks" / "00002.png"), cv2.IMREAD_UNCHANGED)
    img = cv2.imread(str(tmp_path / "images" / "00002.png"))
    assert m.shape == (96, 96) and img.shape == (96, 96, 3)


def test_auroc_by_hand():
    assert auroc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert auroc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == 0.5
    # one inversion out of 2 x 3 pairs; tie counts half
    assert auroc([0.1, 0.4, 0.35, 0.8, 0.4], [0, 0, 1, 1, 1]) == pytest.approx((6 - 1 - 0.5) / 6)
    assert math.isnan(auroc([1, 2], [1, 1]))


def test_evaluate_maps_on_masks_themselves():
    _, masks, labels = make_dataset(30, seed=4)
    frac = cell_fractions(masks, (8, 8))
    assert frac.shape == (30, 8, 8) and frac.max() == 1.0
    perfect = evaluate_maps(frac, masks)
    assert perfect["pointing_game"] == 1.0 and perfect["auroc"] == 1.0 and perfect["accuracy"] is None
    inverted = evaluate_maps(-frac, masks)
    assert inverted["pointing_game"] == 0.0 and inverted["auroc"] == 0.0
    logits = np.eye(5)[labels]
    logits[0] = np.roll(logits[0], 1)
    r = evaluate_maps(frac, masks, labels, logits)
    assert r["accuracy"] == pytest.approx(29 / 30)
