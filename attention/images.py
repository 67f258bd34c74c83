"""Reading photos: any common format in, an upright RGB `PIL.Image` out, or a clear `ImageError`.

- EXIF orientation is applied (phones store photos sideways), so maps are drawn upright.
- Transparency is composited on white (`BACKGROUND`); palette, grayscale, CMYK and 16-bit images are
  converted to 8-bit RGB; animated images use their first frame.
- Decompression bombs are refused above `MAX_PIXELS` (250 MP: phone photos go up to 200 MP); very large
  photos are downscaled to at most `MAX_SIDE` pixels on the long side before anything else, so memory
  stays bounded. A large JPEG is decoded at a reduced scale by libjpeg itself (``Image.draft``: 1/2, 1/4
  or 1/8 of the size, the smallest that still covers `MAX_SIDE`), which is several times faster and
  never holds the full-size pixels.
- Memory bound: an image above `BIG_PIXELS` (16.8 MP) is decoded one at a time in the process
  (`_BIG_DECODES`); its full-size pixels (at most 4 bytes each in PIL, so 1 GB at the 250 MP limit) are
  reduced by block means in their own mode (a 15000 x 15000 grayscale PNG is 225 MB, never a 900 MB RGB
  copy) before anything else, and the freed memory is handed back to the system afterwards
  (`return_freed_memory`). Smaller images decode concurrently, each at most 67 MB per full-size copy.
- Only regular files are read by path, their size checked before reading (`read_regular_file`).
"""
from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import hashlib
import io
import os
import stat
import sys
import threading
from dataclasses import dataclass, field
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import ImageError

MAX_PIXELS = 250_000_000          # refuse larger images (decompression-bomb guard, above 200 MP phone photos)
MAX_SIDE = 4096                   # downscale larger photos (the model sees a few hundred pixels)
MAX_BYTES = 200 * 1024 * 1024     # refuse larger files
# PIL refuses images above twice its own limit (~179 MP) before we can look at them; our guard is the one
# above, so PIL's is raised to it (it is a process-wide setting, only ever raised here, never lowered)
Image.MAX_IMAGE_PIXELS = max(Image.MAX_IMAGE_PIXELS or 0, MAX_PIXELS)
#: images above this many pixels (after JPEG draft) are "big": decoded one at a time, reduced in their own mode
BIG_PIXELS = MAX_SIDE * MAX_SIDE
_BIG_DECODES = threading.Semaphore(1)
MIN_SIDE = 2                      # a 1-pixel side has no spatial structure to attend to
BACKGROUND = (255, 255, 255)      # transparent pixels are composited on white


@dataclass
class LoadedImage:
    image: Image.Image
    notes: list[str] = field(default_factory=list)   # what was done to it, to tell the user
    # sha256 of the file's bytes (None for arrays and PIL images): the notes belong to the file, while two
    # files can decode to the same pixels (an APNG and its first frame as PNG, 16-bit and 8-bit)
    file_sha256: str | None = None


def read_regular_file(path: str, name: str, limit: int) -> bytes:
    """The bytes of a regular file, its size checked before reading. A FIFO, socket, device or ``/dev/stdin``
    is refused without blocking: it is opened non-blocking and looked at (``fstat``) before any read, so a
    path that names a pipe cannot hold the caller (and a server's worker) forever."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise ImageError.said("images.no_such_file", path=path) from None
    except IsADirectoryError:
        raise ImageError.said("images.directory", path=path) from None
    except OSError as e:
        raise ImageError.said("images.cannot_open", path=path, why=e.strerror or e) from None
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode):
        os.close(fd)
        raise ImageError.said("images.directory", path=path)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(st.st_mode):
            raise ImageError.said("images.not_regular", name=name)
        if st.st_size > limit:
            raise ImageError.said("images.file_over_limit", name=name, size_mb=st.st_size / 2**20,
                                      limit_mb=limit // 2**20)
        data = f.read(limit + 1)      # never more than the limit, even if the file grew since fstat
    if len(data) > limit:
        raise ImageError.said("images.grew_over_limit", name=name, limit_mb=limit // 2**20)
    return data


def _refuse_bytes(data: bytes, name: str) -> None:
    head = data[:512].lstrip().lower()
    if head.startswith(b"%pdf"):
        raise ImageError.said("images.pdf", name=name)
    if head.startswith(b"pk\x03\x04"):
        raise ImageError.said("images.zip", name=name)
    if head.startswith(b"<?xml") or b"<svg" in head:
        raise ImageError.said("images.svg", name=name)


def open_image(source: Union[str, bytes, Image.Image, np.ndarray], name: str | None = None) -> LoadedImage:
    """Decode and normalise an image from a path, bytes, a PIL image or an (H, W[, C]) uint8 array."""
    notes: list[str] = []
    if isinstance(source, np.ndarray):
        source = Image.fromarray(source)
    if isinstance(source, Image.Image):
        return _normalise(source, name or "image", notes, None)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        name = name or os.path.basename(path)
        data = read_regular_file(path, name, MAX_BYTES)
    else:
        data, name = bytes(source), name or "upload"
        if len(data) > MAX_BYTES:
            raise ImageError.said("images.bytes_over_limit", name=name, size_mb=len(data) / 2**20,
                                      limit_mb=MAX_BYTES // 2**20)
    if not data:
        raise ImageError.said("images.empty", name=name)
    _refuse_bytes(data, name)
    file_sha = hashlib.sha256(data).hexdigest()
    with _decode_errors(name):
        img = Image.open(io.BytesIO(data))      # the header only: no pixels yet
        if img.width * img.height > MAX_PIXELS:
            raise ImageError.said("images.too_many_pixels", name=name, width=img.width, height=img.height,
                                  max_pixels=MAX_PIXELS)
        if img.format == "JPEG" and max(img.size) > 2 * MAX_SIDE:
            full = img.size
            scale = MAX_SIDE / max(full)
            img.draft("RGB", (max(1, int(full[0] * scale)), max(1, int(full[1] * scale))))
            notes.append(f"decoded at reduced scale from {full[0]}x{full[1]} (JPEG draft mode)")
    big = img.width * img.height > BIG_PIXELS
    if not big:
        with _decode_errors(name):
            img.load()
        return _normalise(img, name, notes, file_sha)
    with _BIG_DECODES:          # one big decode at a time: the memory bound (module docstring)
        try:
            with _decode_errors(name):
                img.load()
            return _normalise(img, name, notes, file_sha)
        finally:
            del img, data
            return_freed_memory()


@contextlib.contextmanager
def _decode_errors(name: str):
    """Decoder exceptions -> one `ImageError` naming the file."""
    try:
        yield
    except ImageError:
        raise
    except Image.DecompressionBombError:
        raise ImageError.said("images.bomb", name=name, max_pixels=MAX_PIXELS) from None
    except UnidentifiedImageError:
        raise ImageError.said("images.undecodable", name=name) from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError.said("images.damaged", name=name, error=e) from None


def _normalise(img: Image.Image, name: str, notes: list[str], file_sha: str | None) -> LoadedImage:
    """First frame, reduced (a big image), upright, RGB, at most `MAX_SIDE`: the `LoadedImage`."""
    if getattr(img, "is_animated", False) and getattr(img, "n_frames", 1) > 1:
        img.seek(0)
        notes.append(f"animated image: using the first of {img.n_frames} frames")
    if max(img.size) >= 2 * MAX_SIDE:
        factor = max(img.size) // MAX_SIDE          # >= 2, and the reduced long side stays >= MAX_SIDE
        reduced = reduce_by(img, factor)
        if reduced is not img:
            notes.append(f"decoded at reduced scale from {img.width}x{img.height} (means of {factor}x{factor} "
                         f"pixels)")
            reduced.info = dict(img.info)        # the EXIF orientation is applied below
            img = reduced
    transposed = ImageOps.exif_transpose(img)
    if transposed is not img and transposed.size != img.size:
        notes.append("rotated upright following its EXIF orientation")
    img = transposed if transposed is not None else img
    img = to_rgb(img, notes)
    if min(img.size) < MIN_SIDE:
        raise ImageError.said("images.too_small", name=name, width=img.width, height=img.height,
                              min_side=MIN_SIDE)
    if max(img.size) > MAX_SIDE:
        scale = MAX_SIDE / max(img.size)
        new = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
        notes.append(f"downscaled from {img.width}x{img.height} to {new[0]}x{new[1]}")
        img = img.resize(new, Image.Resampling.LANCZOS)
    return LoadedImage(img, notes, file_sha)


def reduce_by(img: Image.Image, factor: int) -> Image.Image:
    """The image shrunk `factor` times by the mean of each ``factor x factor`` block (in its own mode, before
    any conversion, so a big grayscale image never exists as a full-size RGB copy); `img` itself when
    `factor` < 2."""
    if factor < 2:
        return img
    if img.mode.startswith("I;16"):     # PIL has no reduce for 16-bit: block means in numpy (uint16 view)
        a = np.asarray(img)
        h, w = (a.shape[0] // factor) * factor, (a.shape[1] // factor) * factor
        blocks = a[:h, :w].reshape(h // factor, factor, w // factor, factor)
        means = blocks.mean(axis=(1, 3), dtype=np.float32)
        return Image.fromarray(np.round(means).astype(np.uint16))
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    elif img.mode == "1":
        img = img.convert("L")
    try:
        return img.reduce(factor)
    except ValueError:                  # a mode PIL cannot reduce: the usual path (resize) does it
        return img


def return_freed_memory() -> None:
    """Hand freed heap memory back to the system (glibc ``malloc_trim``) after a big decode: its blocks are
    below the mmap threshold (see `attention.allocator`), so without this they would stay with the process."""
    if _libc is not None:
        _libc.malloc_trim(0)


def _load_libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):    # not glibc
        return None


_libc = _load_libc()


def to_rgb(img: Image.Image, notes: list[str]) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        img = Image.fromarray(np.clip(a / hi * 255.0 + 0.5, 0, 255).astype(np.uint8))
        notes.append("16-bit image converted to 8 bits")
        mode = img.mode
    if mode == "F":
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        img = Image.fromarray(((a - lo) / (hi - lo or 1.0) * 255).astype(np.uint8))
        mode = img.mode
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("RGBA", "LA", "PA") or (mode == "RGBa"):
        rgba = img.convert("RGBA")
        if rgba.getextrema()[3][0] < 255:
            notes.append("transparent pixels composited on a white background")
        bg = Image.new("RGB", rgba.size, BACKGROUND)
        bg.paste(rgba, mask=rgba.getchannel("A"))
        return bg
    if mode != "RGB":
        if mode == "CMYK":
            notes.append("CMYK image converted to RGB")
        return img.convert("RGB")
    return img


def load_image(source, name: str | None = None) -> Image.Image:
    """`open_image` without the notes."""
    return open_image(source, name).image
