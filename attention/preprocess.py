"""Preprocessing from the model's own data config, and the way back from model input to photo.

The transform itself is timm's (``resolve_data_config`` + ``create_transform``) or torchvision's
documented one; we never re-implement it. Alongside the tensor we keep the `Geometry`: which box
of the original photo the model input covers, computed by walking the same transform's resize and
crop steps. Later stages use it to draw a map on the original photo exactly where the model saw it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import functional as TF


@dataclass(frozen=True)
class Geometry:
    """Model input (H, W) covers the box ``(top, left, bottom, right)`` of the original photo.

    Coordinates are in original-photo pixels (floats; a box larger than the photo means the
    transform padded). Input pixel row ``i`` covers photo rows ``top + i * sy .. top + (i+1) * sy``
    with ``sy = (bottom - top) / H``.
    """

    original_size: tuple[int, int]   # (H0, W0) of the photo
    input_size: tuple[int, int]      # (H, W) of the model input
    box: tuple[float, float, float, float]

    def input_to_original(self, row: float, col: float) -> tuple[float, float]:
        """Photo coordinates of a model-input coordinate (continuous, pixel edges at integers)."""
        top, left, bottom, right = self.box
        return (top + row * (bottom - top) / self.input_size[0],
                left + col * (right - left) / self.input_size[1])

    def to_dict(self) -> dict:
        return {"original_size": list(self.original_size), "input_size": list(self.input_size),
                "box": [float(v) for v in self.box]}


def _resized_size(h: int, w: int, size) -> tuple[int, int]:
    if isinstance(size, (list, tuple)) and len(size) == 2:
        return int(size[0]), int(size[1])
    size = size[0] if isinstance(size, (list, tuple)) else size
    short, long = (h, w) if h <= w else (w, h)
    new_short, new_long = int(size), int(int(size) * long / short)
    return (new_short, new_long) if h <= w else (new_long, new_short)


def geometry_of(steps: list, original_hw: tuple[int, int]) -> Geometry:
    """Follow resize / crop steps of a transform and return where the output sits on the input."""
    h, w = original_hw
    # affine map output pixel -> original pixel: orig = offset + out * scale (per axis)
    oy, ox, sy, sx = 0.0, 0.0, 1.0, 1.0
    for t in steps:
        name = type(t).__name__
        if isinstance(t, T.Resize) or name == "ResizeKeepRatio" or name == "ImageClassification":
            if name == "ResizeKeepRatio":
                nh, nw = t.get_params(torch.empty(3, h, w), t.size, t.longest)
            elif name == "ImageClassification":
                nh, nw = _resized_size(h, w, t.resize_size)
            else:
                nh, nw = _resized_size(h, w, t.size)
            sy, sx = sy * h / nh, sx * w / nw
            h, w = nh, nw
        if isinstance(t, T.CenterCrop) or name == "ImageClassification":
            size = t.size if isinstance(t, T.CenterCrop) else t.crop_size
            ch, cw = (size, size) if isinstance(size, int) else (tuple(size) * 2)[:2]
            if getattr(t, "floor_offsets", False):   # transformers' centre crop: floor((H - h) / 2)
                top, left = (h - ch) // 2, (w - cw) // 2
            else:                                     # torchvision's: round((H - h) / 2)
                top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
            oy, ox = oy + top * sy, ox + left * sx
            h, w = ch, cw
        elif not (isinstance(t, (T.Resize, T.Normalize, T.ToTensor, T.PILToTensor, T.ConvertImageDtype))
                  or name in ("MaybeToTensor", "ToNumpy", "ResizeKeepRatio")):
            raise ValueError(f"cannot follow the geometry of preprocessing step {t!r}")
    return Geometry(tuple(original_hw), (h, w), (oy, ox, oy + h * sy, ox + w * sx))


@dataclass
class PreparedImage:
    """What a model is fed (``tensor``, (1, 3, H, W)) and where it came from."""

    tensor: torch.Tensor
    image: Image.Image
    geometry: Geometry


class Preprocessor:
    """Callable: PIL image -> `PreparedImage`. ``config`` is a timm-style data config."""

    def __init__(self, transform: Callable, config: dict, steps: Optional[list] = None):
        """``steps``: the resize / crop steps to follow for the geometry when ``transform`` is not a
        torchvision ``Compose`` of them (e.g. a Hugging Face image processor doing the same)."""
        self.transform = transform
        self.config = dict(config)
        if steps is not None:
            self.steps = list(steps)
        else:
            self.steps = list(transform.transforms) if isinstance(transform, T.Compose) else [transform]
        geometry_of(self.steps, (300, 400))  # fail now, not on the first photo

    @classmethod
    def from_timm_config(cls, config: dict) -> "Preprocessor":
        from timm.data import create_transform
        keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
        cfg = {k: config[k] for k in keys if k in config}
        return cls(create_transform(**cfg, is_training=False), cfg)

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.config["input_size"][-2:])

    def __call__(self, image: Image.Image) -> PreparedImage:
        image = image.convert("RGB") if image.mode != "RGB" else image
        x = self.transform(image)
        if not isinstance(x, torch.Tensor):
            x = TF.to_tensor(x)
        geometry = geometry_of(self.steps, (image.height, image.width))
        return PreparedImage(x.unsqueeze(0).float(), image, geometry)

    def describe(self) -> dict:
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.config.items()}
        d["steps"] = [repr(t) for t in self.steps]
        if not isinstance(self.transform, T.Compose):
            d["transform"] = repr(self.transform)
        return d
