"""Degenerate inputs still give defined maps, and export names cannot escape the output folder."""
from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from attention.cli import main as cli_main
from attention.export import unique_stem
from attention.methods import default_heatmap, get_method
from attention.models import load_model
from attention.render import overlay


@pytest.mark.parametrize("colour", [(0, 0, 0), (255, 255, 255)])
def test_constant_images_give_finite_maps_and_pictures(colour):
    lm = load_model("demo-vit")
    prepared = lm.prepare(Image.new("RGB", (120, 90), colour))
    result = lm.capture(prepared)
    for heat in (default_heatmap(result)[0], get_method("rollout")(result)[0],
                 get_method("grad_rollout")(lm.model, prepared.tensor)[0]):
        h = heat.numpy()
        assert np.isfinite(h).all()
        pic = overlay(prepared.image, h, prepared.geometry)
        assert pic.shape == (90, 120, 3) and pic.dtype == np.uint8


def test_export_names_stay_inside_the_output_folder(tmp_path):
    taken: set[str] = set()
    for evil in ("../../etc/passwd.png", "/abs/..png", "..\\x.png", ".hidden.png"):
        stem = unique_stem(evil, taken)
        assert "/" not in stem and not stem.startswith(".")
    img = tmp_path / "in" / "..strange name ü.png"
    img.parent.mkdir()
    Image.new("RGB", (64, 64), (30, 120, 200)).save(img)
    out = tmp_path / "out"
    assert cli_main(["export", "--model", "demo-vit", "--quiet", "--out", str(out), str(img)]) == 0
    written = sorted(os.listdir(out))
    assert written == ["strange name ü.json", "strange name ü.npz"]


def test_cli_reports_each_bad_file_and_exits_non_zero(tmp_path, capsys):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), (200, 10, 10)).save(good)
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    rc = cli_main(["export", "--model", "demo-vit", "--quiet", "--out", str(tmp_path / "o"),
                   str(bad), str(good), str(tmp_path / "missing.jpg")])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"error: {bad}: " in err or "notes.png: not an image file" in err
    assert "missing.jpg: no such file" in err and "2 of 3 image(s) failed" in err
    assert "Traceback" not in err
    assert (tmp_path / "o" / "good.npz").exists()
