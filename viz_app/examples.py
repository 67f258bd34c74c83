"""The examples gallery: shapes made at run time, and public-domain photos shipped with scikit-image
and matplotlib (no download). Written once as PNG files to a folder and listed with captions."""
from __future__ import annotations

import logging
import os
import tempfile
import threading
from typing import Callable, Optional

import numpy as np
from PIL import Image

from .words import Text

log = logging.getLogger(__name__)

SHAPES_SEED = 2024
_lock = threading.Lock()
_cache: dict[str, list[tuple[str, str]]] = {}


def shapes_samples(seed: int = SHAPES_SEED) -> list[tuple[np.ndarray, str]]:
    """One synthetic 64x64 image per shapes class (the demo models' world), with its class name."""
    from attention.demo.shapes import CLASS_NAMES, make_sample
    rng = np.random.default_rng(seed)
    return [(make_sample(rng, 64, label)[0], name) for label, name in enumerate(CLASS_NAMES)]


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load():
        import skimage.data
        return getattr(skimage.data, name)()
    return load


def _grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


PHOTOS: tuple[tuple[str, str, Callable[[], np.ndarray]], ...] = (
    ("chelsea", Text("app.examples.chelsea"), _skimage("chelsea")),
    ("coffee", Text("app.examples.coffee"), _skimage("coffee")),
    ("astronaut", Text("app.examples.astronaut"), _skimage("astronaut")),
    ("rocket", Text("app.examples.rocket"), _skimage("rocket")),
    ("grace_hopper", "Grace Hopper", _grace_hopper),
)


def _save(folder: str, name: str, rgb: np.ndarray) -> str:
    """Written anew by each process (the generator may have changed), atomically (others may be serving it)."""
    path = os.path.join(folder, name + ".png")
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".png")
    os.close(fd)
    Image.fromarray(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8)).save(tmp)
    os.replace(tmp, path)
    return path


def example_files(folder: Optional[str] = None) -> list[tuple[str, str]]:
    """[(png path, caption)]: five shapes first, then the photos. Missing sources are skipped."""
    folder = folder or os.path.join(tempfile.gettempdir(), "viz_app_examples")
    with _lock:
        if folder in _cache:
            return list(_cache[folder])
        os.makedirs(folder, exist_ok=True)
        out = []
        for i, (rgb, name) in enumerate(shapes_samples()):
            out.append((_save(folder, f"shape_{i}_{name}", rgb),
                        Text("app.examples.shape", name=Text(f"app.examples.shape_{name}"))))
        for key, caption, load in PHOTOS:
            try:
                out.append((_save(folder, key, load()), caption))
            except Exception as e:  # noqa: BLE001 - an absent sample photo only shortens the gallery
                log.warning("example %s unavailable: %s", key, e)
        _cache[folder] = out
        return list(out)
