"""Rendering: maps land on the right photo pixels, colours are matplotlib's, sheet and files are right."""
from __future__ import annotations

import math
import os

import matplotlib
import numpy as np
import pytest
import torch
from PIL import Image

from attention.capture import capture
from attention.preprocess import Preprocessor
from attention.render import (FUSED, colorbar, grid_sheet, heat_on_photo, layer_head_maps, mass_mask, normalize_map, overlay,
                              patch_pixels, photo_to_patch, sheet_layout, upsample_to_photo, write_pictures)

CONFIG = {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.5,) * 3, "std": (0.5,) * 3,
          "crop_pct": 0.9, "crop_mode": "center"}
H0, W0 = 300, 451            # a non-square photo
# What timm's eval transform does to it, written out by hand: shorter side -> floor(224 / 0.9) = 248,
# longer side int(248 * 451 / 300) = 372; centre crop 224 at offsets round(24 / 2), round(148 / 2).
RH, RW, CROP_TOP, CROP_LEFT, PATCH, GRID = 248, 372, 12, 74, 16, 14


@pytest.fixture(scope="module")
def pre():
    return Preprocessor.from_timm_config(CONFIG)


@pytest.fixture(scope="module")
def geometry(pre):
    return pre(Image.new("RGB", (W0, H0))).geometry


def expected_cells(h=H0, w=W0):
    """Per photo row / column: the patch index its pixel centre falls in (-1 outside the crop), and how far
    (in photo pixels) that centre is from the nearest patch edge."""
    out = []
    for n, resized, off in ((h, RH, CROP_TOP), (w, RW, CROP_LEFT)):
        s = n / resized                                  # photo pixels per resized pixel
        inp = (np.arange(n) + 0.5) * resized / n - off   # centre in model-input pixels
        cell = np.floor(inp / PATCH).astype(int)
        cell[(inp < 0) | (inp >= GRID * PATCH)] = -1
        edge = np.abs(inp / PATCH - np.round(inp / PATCH)) * PATCH * s
        out.append((cell, edge))
    return out


def photo_array(seed=0):
    return np.random.default_rng(seed).integers(60, 256, (H0, W0, 3), dtype=np.uint8)


def test_geometry_matches_hand_computation(geometry):
    assert geometry.original_size == (H0, W0) and geometry.input_size == (224, 224)
    np.testing.assert_allclose(geometry.box, (CROP_TOP * H0 / RH, CROP_LEFT * W0 / RW,
                                              (CROP_TOP + 224) * H0 / RH, (CROP_LEFT + 224) * W0 / RW))


@pytest.mark.parametrize("r,c", [(3, 10), (0, 0), (13, 13), (7, 2), (4, 7), (9, 6)])
def test_blocky_peak_lands_on_the_patch_pixels(geometry, r, c):
    m = np.zeros((GRID, GRID), np.float32)
    m[r, c] = 5.0
    heat = heat_on_photo(m, geometry, mode="blocky")
    (rows, redge), (cols, cedge) = expected_cells()
    inside = (rows >= 0)[:, None] & (cols >= 0)[None, :]
    peak = (rows == r)[:, None] & (cols == c)[None, :]
    # OpenCV warps in float32: only centres within 1e-3 px of a patch edge (but not on it) could go either way
    sure = ((redge > 1e-3) | (redge == 0))[:, None] & ((cedge > 1e-3) | (cedge == 0))[None, :]
    assert sure.all() and cedge[225] == 0   # column 225's centre lies exactly on the edge of columns 6 | 7
    assert peak.sum() > 300  # a patch is ~19.4 x 19.4 photo pixels
    assert np.all(np.isnan(heat[~inside]))
    assert not np.any(np.isnan(heat[inside]))
    np.testing.assert_array_equal((heat == 1.0)[sure], peak[sure])
    np.testing.assert_array_equal(heat[inside & ~peak & sure], 0.0)


def test_outside_crop_is_dimmed_without_heat(geometry):
    photo = photo_array()
    m = np.random.default_rng(1).random((GRID, GRID)).astype(np.float32)
    (rows, _), (cols, _) = expected_cells()
    inside = (rows >= 0)[:, None] & (cols >= 0)[None, :]
    assert (~inside).sum() > 30000  # the centre crop drops both sides and a band top and bottom
    out = overlay(photo, m, geometry, alpha=0.5)
    assert out.shape == photo.shape and out.dtype == np.uint8
    assert np.all(out[~inside] < photo[~inside])
    # no heat: outside pixels are the photo scaled, whatever the map
    out2 = overlay(photo, 1 - m, geometry, alpha=0.5, cmap="jet")
    np.testing.assert_array_equal(out[~inside], out2[~inside])
    assert not np.array_equal(out[inside], out2[inside])
    kept = overlay(photo, m, geometry, dim_outside=False)
    np.testing.assert_array_equal(kept[~inside], photo[~inside])


def test_bright_square_through_the_real_preprocessing_renders_back_onto_it(pre):
    r, c = 5, 9
    # the square's patch on the photo, from the hand-written resize and crop
    y0 = (CROP_TOP + r * PATCH) * H0 / RH
    y1 = (CROP_TOP + (r + 1) * PATCH) * H0 / RH
    x0 = (CROP_LEFT + c * PATCH) * W0 / RW
    x1 = (CROP_LEFT + (c + 1) * PATCH) * W0 / RW
    sy0, sy1, sx0, sx1 = math.ceil(y0) + 3, math.floor(y1) - 3, math.ceil(x0) + 3, math.floor(x1) - 3
    photo = np.full((H0, W0, 3), 40, np.uint8)
    photo[sy0:sy1, sx0:sx1] = 255
    prepared = pre(Image.fromarray(photo))
    x = prepared.tensor[0].mean(0)                                         # (224, 224)
    patch_means = x.reshape(GRID, PATCH, GRID, PATCH).mean(dim=(1, 3))
    assert divmod(int(patch_means.argmax()), GRID) == (r, c)
    heat = heat_on_photo(patch_means.numpy(), prepared.geometry, mode="blocky")
    assert np.all(heat[sy0:sy1, sx0:sx1] == 1.0)                          # the peak covers the square
    ys, xs = np.nonzero(heat == 1.0)
    assert abs(ys.mean() - (sy0 + sy1 - 1) / 2) < 1.5 and abs(xs.mean() - (sx0 + sx1 - 1) / 2) < 1.5
    assert photo_to_patch(prepared.geometry, (GRID, GRID), (sy0 + sy1) / 2, (sx0 + sx1) / 2) == (r, c)


def test_smooth_peak_is_at_the_patch_centre(geometry):
    m = np.zeros((GRID, GRID), np.float32)
    m[6, 4] = 1.0
    heat = heat_on_photo(m, geometry, mode="smooth")
    y, x = np.unravel_index(np.nanargmax(heat), heat.shape)
    cy = ((CROP_TOP + 6.5 * PATCH) * H0 / RH)      # patch centre, continuous photo coordinates
    cx = ((CROP_LEFT + 4.5 * PATCH) * W0 / RW)
    assert abs(y + 0.5 - cy) <= 0.5 and abs(x + 0.5 - cx) <= 0.5
    assert heat[y, x] > 0.95


def test_patch_pixels_and_photo_to_patch_agree(geometry):
    (rows, _), (cols, _) = expected_cells()
    for r, c in [(0, 0), (4, 11), (13, 13)]:
        y0, y1, x0, x1 = patch_pixels(geometry, (GRID, GRID), r, c)
        np.testing.assert_array_equal(np.nonzero(rows == r)[0], np.arange(y0, y1))
        np.testing.assert_array_equal(np.nonzero(cols == c)[0], np.arange(x0, x1))
        assert photo_to_patch(geometry, (GRID, GRID), y0, x1 - 1) == (r, c)
    assert photo_to_patch(geometry, (GRID, GRID), 2, 2) is None   # cropped away


def test_photo_shown_at_another_size(geometry):
    small = photo_array()[::2, ::2]                                       # 150 x 226
    m = np.zeros((GRID, GRID), np.float32)
    m[3, 10] = 1
    heat = upsample_to_photo(m, geometry, small.shape[:2], mode="blocky")
    y0, y1, x0, x1 = patch_pixels(geometry, (GRID, GRID), 3, 10, photo_hw=small.shape[:2])
    assert np.all(heat[y0:y1, x0:x1] == 1) and (heat == 1).sum() == (y1 - y0) * (x1 - x0)
    assert overlay(small, m, geometry).shape == small.shape


@pytest.mark.parametrize("name", ["viridis", "jet", None])
def test_alpha_one_gives_matplotlib_colours(geometry, name):
    m = np.random.default_rng(2).normal(size=(GRID, GRID)).astype(np.float32)
    kwargs = {} if name is None else {"cmap": name}
    out = overlay(photo_array(), m, geometry, alpha=1.0, mode="blocky", **kwargs)
    cmap = matplotlib.colormaps[name or "inferno"]
    m64 = m.astype(np.float64)
    norm = (m64 - m64.min()) / (m64.max() - m64.min())
    colours = cmap(norm, bytes=True)[..., :3]                            # (14, 14, 3)
    (rows, redge), (cols, cedge) = expected_cells()
    sure = (rows >= 0)[:, None] & (cols >= 0)[None, :] & (redge > 1e-3)[:, None] & (cedge > 1e-3)[None, :]
    expected = colours[np.clip(rows, 0, 13)][:, np.clip(cols, 0, 13)]
    np.testing.assert_array_equal(out[sure], expected[sure])


def test_colorbar_ends_are_the_colormap_ends():
    bar = colorbar(200, 70, cmap="magma", label="attention")
    cmap = matplotlib.colormaps["magma"]
    np.testing.assert_array_equal(bar[8, 4], cmap(1.0, bytes=True)[:3])     # top = high
    np.testing.assert_array_equal(bar[8 + 200 - 16 - 12 - 1, 4], cmap(0.0, bytes=True)[:3])


def test_percentile_norm_clips():
    m = np.arange(100, dtype=np.float32).reshape(10, 10)
    n = normalize_map(m, "percentile", 90)
    p90 = np.percentile(np.arange(100), 90)
    np.testing.assert_allclose(n, np.clip(np.arange(100).reshape(10, 10) / p90, 0, 1), rtol=1e-6)
    np.testing.assert_array_equal(normalize_map(np.full((3, 3), 7.0), "minmax"), 0.0)
    np.testing.assert_array_equal(normalize_map(np.array([[2.0, -1.0]]), "none"), [[1.0, 0.0]])


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.6, 0.9, 1.0])
def test_mass_mask_is_smallest_set(fraction):
    m = np.random.default_rng(3).random((GRID, GRID)) ** 3
    mask = mass_mask(m, fraction)
    vals = np.sort(m.ravel())[::-1]
    k = int(np.argmax(np.cumsum(vals) >= fraction * m.sum() * (1 - 1e-12))) + 1
    assert mask.sum() == k
    assert m[mask].min() >= m[~mask].max() if (~mask).any() else True
    assert m[mask].sum() >= fraction * m.sum() - 1e-9
    assert m[mask].sum() - m[mask].min() < fraction * m.sum()


def test_mass_threshold_dims_the_dropped_patches(geometry):
    photo = photo_array()
    m = np.random.default_rng(4).random((GRID, GRID)).astype(np.float32)
    keep = mass_mask(m, 0.5)
    out = overlay(photo, m, geometry, mass_threshold=0.5, mode="blocky", dim=0.35)
    (rows, redge), (cols, cedge) = expected_cells()
    sure = (rows >= 0)[:, None] & (cols >= 0)[None, :] & (redge > 1e-3)[:, None] & (cedge > 1e-3)[None, :]
    kept_px = keep[np.clip(rows, 0, 13)][:, np.clip(cols, 0, 13)] & sure
    dropped = ~keep[np.clip(rows, 0, 13)][:, np.clip(cols, 0, 13)] & sure
    assert np.abs(out[dropped].astype(int) - photo[dropped] * 0.35).max() <= 0.5 + 1e-6
    plain = overlay(photo, m, geometry, mode="blocky")
    np.testing.assert_array_equal(out[kept_px], plain[kept_px])
    assert overlay(photo, m, geometry, mass_threshold=0.5, contour=True).shape == photo.shape


def test_query_patch_marker(geometry):
    photo = np.zeros((H0, W0, 3), np.uint8)
    out = overlay(photo, np.zeros((GRID, GRID)), geometry, alpha=0.0, query_patch=(2, 3), marker_color=(0, 255, 255))
    y0, y1, x0, x1 = patch_pixels(geometry, (GRID, GRID), 2, 3)
    np.testing.assert_array_equal(out[y0, x0:x1], [[0, 255, 255]] * (x1 - x0))
    np.testing.assert_array_equal(out[y0:y1, x1 - 1], [[0, 255, 255]] * (y1 - y0))
    assert out[(y0 + y1) // 2, (x0 + x1) // 2].sum() == 0


@pytest.mark.parametrize("m", [np.full((GRID, GRID), 0.3), np.full((GRID, GRID), np.nan),
                               np.where(np.eye(GRID) > 0, np.nan, 1.0), np.where(np.eye(GRID) > 0, np.inf, 1.0),
                               np.zeros((GRID, GRID))])
def test_constant_and_nan_maps(geometry, m):
    photo = photo_array()
    for mode in ("smooth", "blocky"):
        for norm in ("minmax", "percentile", "none"):
            out = overlay(photo, m, geometry, mode=mode, norm=norm, mass_threshold=0.6, contour=True)
            assert out.dtype == np.uint8 and out.shape == photo.shape
            heat = heat_on_photo(m, geometry, mode=mode, norm=norm)
            (rows, _), (cols, _) = expected_cells()
            inside = (rows >= 0)[:, None] & (cols >= 0)[None, :]
            assert np.all(np.isfinite(heat[inside])) and heat[inside].min() >= 0 and heat[inside].max() <= 1
    sheet = grid_sheet(photo, np.broadcast_to(m, (2, 3, GRID, GRID)), geometry)
    assert sheet.dtype == np.uint8


def test_grid_sheet_shape_and_click_round_trip(geometry):
    L, Hh = 12, 12
    maps = np.random.default_rng(5).random((L, Hh, GRID, GRID)).astype(np.float32)
    sheet, layout = grid_sheet(photo_array(), maps, geometry, cell_size=96, return_layout=True)
    assert (layout.cell_h, layout.cell_w) == (96, 96)   # the crop box is (almost) square
    assert sheet.shape == (layout.top + L * (96 + layout.gap), layout.left + (Hh + 1) * (96 + layout.gap), 3)
    assert layout == sheet_layout(L, Hh, geometry, cell_size=96)
    for layer in range(L):
        for head in list(range(Hh)) + [FUSED]:
            y, x = layout.cell_origin(layer, head)
            assert layout.cell_at(x, y) == (layer, head)
            assert layout.cell_at(x + 95, y + 95) == (layer, head)
            assert layout.cell_at(x + 48, y + 48) == (layer, head)
    assert layout.cell_at(5, 300) is None                      # row-label margin
    y, x = layout.cell_origin(0, 0)
    assert layout.cell_at(x + 96, y) is None                   # gap
    assert layout.cell_at(sheet.shape[1] + 3, y) is None
    # cell content: alpha 1, blocky -> the peak patch has the top colour of the colormap
    one = np.zeros((1, 1, GRID, GRID), np.float32)
    one[0, 0, 7, 0] = 1
    s, lay = grid_sheet(photo_array(), one, geometry, alpha=1.0, mode="blocky", fused=None, return_layout=True)
    assert lay.cols == 1
    y, x = lay.cell_origin(0, 0)
    top = matplotlib.colormaps["inferno"](1.0, bytes=True)[:3]
    bottom = matplotlib.colormaps["inferno"](0.0, bytes=True)[:3]
    cell = 96 / GRID
    np.testing.assert_array_equal(s[y + int(7.5 * cell), x + int(0.5 * cell)], top)
    np.testing.assert_array_equal(s[y + int(7.5 * cell), x + int(1.5 * cell)], bottom)


def test_grid_sheet_ragged_layers(geometry):
    maps = [np.random.rand(3, 8, 8), np.random.rand(6, 4, 4)]
    sheet, layout = grid_sheet(photo_array(), maps, geometry, return_layout=True)
    assert layout.heads == 6 and layout.cols == 7
    y, x = layout.cell_origin(0, 4)
    assert layout.cell_at(x + 2, y + 2) is None                # layer 0 has only 3 heads
    y, x = layout.cell_origin(0, FUSED)
    assert layout.cell_at(x + 2, y + 2) == (0, FUSED)


@pytest.fixture(scope="module")
def tiny_vit():
    import timm
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2, num_classes=5).eval()


def test_write_pictures(tmp_path, pre, tiny_vit):
    photo = np.zeros((H0, W0, 3), np.uint8)
    photo[..., 0] = 200                                                   # pure red photo
    prepared = pre(Image.fromarray(photo))
    result = capture(tiny_vit, prepared.tensor)
    rng = np.random.default_rng(6)
    arrays = {"input": prepared.tensor.numpy(), "logits": result.logits.numpy(),
              "layer_names": np.array(result.layer_names), "num_prefix_tokens": np.array(1), "grid": np.array([14, 14]),
              "attn_00": result.maps[0].weights.numpy(), "heatmap": rng.random((GRID, GRID)).astype(np.float32),
              "rollout": rng.random((GRID, GRID)).astype(np.float32), "gradcam": rng.random((GRID, GRID))}
    written = write_pictures(str(tmp_path), "photo", prepared, result, arrays, ["gradcam"], overlays=True, grid=True)
    names = {"photo_heatmap.png", "photo_rollout.png", "photo_gradcam.png", "photo_grid.png"}
    assert sorted(os.listdir(tmp_path)) == sorted(names)
    assert {os.path.basename(p) for p in written} == names
    back = np.asarray(Image.open(tmp_path / "photo_gradcam.png").convert("RGB"))
    np.testing.assert_array_equal(back, overlay(photo, arrays["gradcam"], prepared.geometry))
    assert back[0, 0, 0] == round(200 * 0.35) and back[0, 0, 2] == 0    # dimmed red stays red (not BGR)

    maps, names_ = layer_head_maps(result)
    assert len(maps) == 2 and names_ == result.layer_names
    w = result.maps[1].weights[0].numpy()                                  # (3 heads, 197, 197)
    np.testing.assert_allclose(maps[1], w[:, 0, 1:].reshape(3, GRID, GRID))
    sheet = np.asarray(Image.open(tmp_path / "photo_grid.png").convert("RGB"))
    assert sheet.shape[:2] == sheet_layout(2, 3, prepared.geometry).shape
    np.testing.assert_array_equal(sheet, grid_sheet(photo, maps, prepared.geometry))

    # arrays["raw"] (layers, heads, gh, gw) is used when present; overlays only when asked
    only = tmp_path / "only_grid"
    raw = rng.random((4, 2, GRID, GRID)).astype(np.float32)
    write_pictures(str(only), "p", prepared, result, {"raw": raw, "heatmap": arrays["heatmap"]}, [],
                   overlays=False, grid=True)
    assert os.listdir(only) == ["p_grid.png"]
    sheet = np.asarray(Image.open(only / "p_grid.png").convert("RGB"))
    np.testing.assert_array_equal(sheet, grid_sheet(photo, raw, prepared.geometry))
