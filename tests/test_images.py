"""Odd and bad image files: each is processed correctly or refused with a specific message."""
from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest
from PIL import Image

from attention import images
from attention.errors import ImageError
from attention.images import open_image


def _save(img: Image.Image, path, **kw):
    img.save(path, **kw)
    return str(path)


@pytest.fixture
def gradient():
    y, x = np.mgrid[0:60, 0:90]
    return np.stack([x * 2, y * 4, (x + y)], -1).astype(np.uint8)


@pytest.mark.parametrize("content,reason", [
    (b"", r"empty \(0 bytes\)"),
    (b"hello, this is text\n", "not an image file"),
    (b"%PDF-1.4\n%...", "PDF document"),
    (b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg"/>', "SVG"),
])
def test_refused_files_say_why(tmp_path, content, reason):
    p = tmp_path / "photo.jpg"
    p.write_bytes(content)
    with pytest.raises(ImageError, match=reason) as e:
        open_image(str(p))
    assert "photo.jpg" in str(e.value)


def test_zip_renamed_png(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.txt", "x")
    p = tmp_path / "pic.png"
    p.write_bytes(buf.getvalue())
    with pytest.raises(ImageError, match="zip archive"):
        open_image(str(p))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated(tmp_path, gradient, fmt):
    buf = io.BytesIO()
    Image.fromarray(gradient).save(buf, fmt)
    p = tmp_path / f"cut.{fmt.lower()}"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="damaged or truncated"):
        open_image(str(p))


def test_missing_path_and_directory(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        open_image(str(tmp_path / "nope.png"))
    with pytest.raises(ImageError, match="is a directory"):
        open_image(str(tmp_path))


def test_decompression_bomb_names_the_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    p = _save(Image.new("RGB", (100, 100)), tmp_path / "big.png")
    with pytest.raises(ImageError, match="over the limit of 1,000 pixels"):
        open_image(p)


def test_upload_size_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_BYTES", 100)
    p = _save(Image.new("RGB", (64, 64), (1, 2, 3)), tmp_path / "a.bmp")
    with pytest.raises(ImageError, match="over the 0 MB limit|MB, over the"):
        open_image(p)


def test_grayscale_palette_and_16_bit(tmp_path, gradient):
    g = open_image(_save(Image.fromarray(gradient[..., 0]), tmp_path / "g.png")).image
    assert g.mode == "RGB" and np.array_equal(np.asarray(g)[..., 1], gradient[..., 0])
    p = open_image(_save(Image.fromarray(gradient).convert("P"), tmp_path / "p.png")).image
    assert p.mode == "RGB" and p.size == (90, 60)
    a16 = (gradient[..., 0].astype(np.uint16) * 257)
    loaded = open_image(_save(Image.fromarray(a16), tmp_path / "d.png"))
    assert np.array_equal(np.asarray(loaded.image)[..., 0], gradient[..., 0])
    assert any("16-bit" in n for n in loaded.notes)


def test_rgba_is_composited_on_white(tmp_path, gradient):
    rgba = np.dstack([gradient, np.full(gradient.shape[:2], 255, np.uint8)])
    rgba[:, :45, 3] = 0          # left half fully transparent
    rgba[:, 45:60, 3] = 128      # a half-transparent band
    loaded = open_image(_save(Image.fromarray(rgba, "RGBA"), tmp_path / "a.png"))
    out = np.asarray(loaded.image).astype(int)
    assert (out[:, :45] == 255).all()
    assert np.array_equal(out[:, 60:], gradient[:, 60:])
    expected = (gradient[:, 45:60].astype(int) * 128 + 255 * 127 + 127) // 255
    assert np.abs(out[:, 45:60] - expected).max() <= 1
    assert any("white" in n for n in loaded.notes)


def test_cmyk_jpeg(tmp_path, gradient):
    p = _save(Image.fromarray(gradient).convert("CMYK"), tmp_path / "c.jpg", quality=95)
    out = open_image(p)
    assert out.image.mode == "RGB" and any("CMYK" in n for n in out.notes)
    assert np.abs(np.asarray(out.image).astype(int) - gradient).mean() < 12


def test_exif_rotated_photo_is_upright(tmp_path, gradient):
    img = Image.fromarray(gradient)  # 90 wide, 60 high as stored
    exif = img.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    p = tmp_path / "phone.jpg"
    img.save(p, exif=exif.tobytes(), quality=95)
    out = open_image(str(p))
    assert out.image.size == (60, 90)
    expected = np.rot90(gradient, k=-1)
    assert np.abs(np.asarray(out.image).astype(int) - expected).mean() < 8
    assert any("EXIF" in n for n in out.notes)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 255, 0))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100)
    out = open_image(str(p))
    assert tuple(np.asarray(out.image)[5, 5]) == (255, 0, 0)
    assert any("first of 2 frames" in n for n in out.notes)


@pytest.mark.parametrize("ext,fmt", [("webp", "WEBP"), ("tiff", "TIFF"), ("bmp", "BMP")])
def test_other_formats_and_unicode_names(tmp_path, gradient, ext, fmt):
    p = _save(Image.fromarray(gradient), tmp_path / f"fotó mit Ümlaut 猫.{ext}", format=fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    assert np.array_equal(np.asarray(open_image(p).image), gradient)


def test_very_large_images_are_downscaled(tmp_path, monkeypatch):
    monkeypatch.setattr(images, "MAX_SIDE", 256)
    p = _save(Image.new("RGB", (1200, 300), (10, 20, 30)), tmp_path / "pano.png")
    out = open_image(p)
    assert out.image.size == (256, 64) and any("downscaled" in n for n in out.notes)


def test_tiny_images(tmp_path):
    with pytest.raises(ImageError, match="too small"):
        open_image(_save(Image.new("RGB", (1, 1)), tmp_path / "one.png"))
    assert open_image(_save(Image.new("RGB", (5, 3)), tmp_path / "small.png")).image.size == (5, 3)


@pytest.mark.slow
def test_a_200_megapixel_phone_photo_is_accepted_and_decoded_at_reduced_scale(tmp_path):
    """16330 x 12250 (200 MP) JPEG: under the bomb guard, decoded by libjpeg at 1/2 scale (draft mode),
    then downscaled to MAX_SIDE; the picture is the photo's (left half red, right half blue)."""
    w, h = 16330, 12250
    img = Image.new("RGB", (w, h), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, w // 2, h))
    p = str(tmp_path / "phone.jpg")
    img.save(p, quality=70)
    del img
    out = open_image(p)
    assert max(out.image.size) == images.MAX_SIDE
    assert any("JPEG draft mode" in n for n in out.notes) and any("downscaled" in n for n in out.notes)
    a = np.asarray(out.image).astype(int)
    W = a.shape[1]
    assert (abs(a[:, : W // 2 - 8] - [255, 0, 0]).max()) < 24 and (abs(a[:, W // 2 + 8:] - [0, 0, 255]).max()) < 24
    assert w * h <= images.MAX_PIXELS < 2 * w * h
