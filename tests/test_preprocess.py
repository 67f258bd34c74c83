"""The photo -> model-input geometry must match what the transform really does to the pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attention.preprocess import Preprocessor

TIMM_CFG = {"input_size": (3, 224, 224), "interpolation": "bicubic", "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5), "crop_pct": 0.9, "crop_mode": "center"}


def test_geometry_of_resize_and_centre_crop_written_out():
    pre = Preprocessor.from_timm_config(TIMM_CFG)
    g = pre(Image.new("RGB", (451, 300))).geometry
    # Resize(248) on the short side: 300x451 -> 248x372 (int(248*451/300) = 372); CenterCrop(224)
    sy, sx = 300 / 248, 451 / 372
    top, left = round((248 - 224) / 2), round((372 - 224) / 2)
    assert g.original_size == (300, 451) and g.input_size == (224, 224)
    np.testing.assert_allclose(g.box, (top * sy, left * sx, (top + 224) * sy, (left + 224) * sx))


def _marker_photo(h, w, y, x, r=6):
    a = np.full((h, w, 3), 90, np.uint8)
    a[y - r:y + r, x - r:x + r] = (255, 0, 0)
    return Image.fromarray(a)


@pytest.mark.parametrize("size,input_size", [((300, 451), (224, 224)), ((451, 300), (224, 224)),
                                             ((240, 640), (224, 320)), ((500, 375), (160, 224))])
def test_geometry_maps_input_pixels_back_onto_the_photo(size, input_size):
    """A red square in the photo, found in the model input, maps back onto the square."""
    h, w = size
    y, x = int(h * 0.45), int(w * 0.55)
    pre = Preprocessor.from_timm_config({**TIMM_CFG, "input_size": (3, *input_size)})
    prep = pre(_marker_photo(h, w, y, x))
    t = prep.tensor[0] * 0.5 + 0.5  # undo the normalisation
    red = (t[0] > 0.8) & (t[1] < 0.3)
    rows, cols = torch.nonzero(red, as_tuple=True)
    assert len(rows) > 0
    cy, cx = rows.float().mean().item() + 0.5, cols.float().mean().item() + 0.5
    py, px = prep.geometry.input_to_original(cy, cx)
    assert abs(py - y) < 1.5 and abs(px - x) < 1.5


def test_torchvision_preset_geometry():
    from torchvision.models import ViT_B_16_Weights
    preset = ViT_B_16_Weights.IMAGENET1K_V1.transforms()
    pre = Preprocessor(preset, {"input_size": (3, 224, 224)})
    prep = pre(_marker_photo(480, 640, 200, 350))
    assert torch.allclose(prep.tensor[0], preset(_marker_photo(480, 640, 200, 350)))
    # Resize(256): 480x640 -> 256x341; CenterCrop(224): top 16, left round(58.5) = 58 (banker's rounding)
    s = 480 / 256
    np.testing.assert_allclose(prep.geometry.box[:2], (16 * s, round((341 - 224) / 2) * (640 / 341)))


def test_unknown_geometric_step_is_refused():
    from torchvision import transforms as T
    with pytest.raises(ValueError, match="cannot follow the geometry"):
        Preprocessor(T.Compose([T.RandomRotation(10), T.ToTensor()]), {"input_size": (3, 32, 32)})
