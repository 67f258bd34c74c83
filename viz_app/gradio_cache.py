"""Atomic writes into Gradio's file cache.

Gradio names a cached picture by the hash of its bytes and rewrites that file in place on every
response. When two sessions get identical pictures at once (same image, same settings), one
download can read the file while the other truncates and rewrites it, and the browser or client
receives 0 bytes. Found by the load test (benchmarks/load.py). Our replacement writes a file only
when it is absent, through a temporary file and an atomic rename, so a reader always sees whole
bytes.

Pictures are PNG-encoded with zlib level 1: on this 2-core machine level 6 (PIL's default) took 25 ms
per lesson picture, level 1 half of that, for files about 15 % larger (served on localhost).
"""
from __future__ import annotations

import logging
import os
import tempfile
import time
from pathlib import Path

from gradio import processing_utils

_TIMING = os.environ.get("ATTENTION_VIZ_TIMING") == "1"
_log = logging.getLogger("viz_app.timing")


def encode(img, format: str) -> bytes:
    if format.lower() != "png":
        return processing_utils.encode_pil_to_bytes(img, format)
    import io
    with io.BytesIO() as out:
        img.save(out, "png", pnginfo=processing_utils.get_pil_metadata(img), compress_level=1)
        return out.getvalue()


def save_pil_to_cache(img, cache_dir: str, name: str = "image", format: str = "webp") -> str:
    t0 = time.perf_counter()
    data = encode(img, format)
    if _TIMING:
        _log.info("encode %s %dx%d %.1f ms", format, img.width, img.height, (time.perf_counter() - t0) * 1e3)
    folder = Path(cache_dir) / processing_utils.hash_bytes(data)
    folder.mkdir(exist_ok=True, parents=True)
    target = (folder / f"{name}.{format}").resolve()
    if not target.exists():
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".part-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    return str(target)


def install() -> None:
    processing_utils.save_pil_to_cache = save_pil_to_cache
