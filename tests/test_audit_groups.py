"""The audit on a model without classifier, and folders read as groups instead of classes.

A backbone (a timm ViT checkpoint without head weights) is audited on a flat folder and on class
folders: a report every time, no accuracy section, per-group maps and border masses that equal the
per-image numbers averaged by hand over each folder, and maps that equal `compute_map` on the
model's own capture.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from attention.audit.report import canvas_map
from attention.audit.run import run_audit
from attention.cli import main as cli_main
from attention.errors import UserError
from attention.images import open_image
from attention.methods import compute_map
from attention.models import load_model


def _photos(folder, names, seed):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    for n in names:
        a = rng.integers(0, 255, (40 + 8 * len(n), 48, 3), dtype=np.uint8)
        a[8:24, 10:30] = 255                          # an object, somewhere
        Image.fromarray(a).save(os.path.join(folder, n))


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    torch.manual_seed(0)
    m = timm.create_model("test_vit", num_classes=0, img_size=32).eval()
    path = tmp_path_factory.mktemp("ck") / "backbone.safetensors"
    save_file(m.state_dict(), str(path))
    return str(path)


def _shards(out):
    import glob
    parts = [np.load(p) for p in sorted(glob.glob(os.path.join(out, "shards", "*.npz")))]
    return {k: np.concatenate([p[k] for p in parts]) for k in ("ids", "map_rollout", "border_rollout",
                                                               "original_size", "box")}


def test_backbone_on_a_flat_folder_is_one_group(tmp_path, backbone):
    data = tmp_path / "flat"
    _photos(data, ["a.png", "b.png", "c.png"], 0)
    out = str(tmp_path / "audit")
    outcome = run_audit(str(data), out, "test_vit", checkpoint=backbone, batch_size=2,
                        shard_size=2, quiet=True, log=lambda s: None)
    r = outcome.report
    assert r["classification"] is None and r["grouping"]["by"] == "all images"
    assert r["methods"] == ["rollout"] and "no classifier" in r["methods_not_defined"]["grad_rollout"]
    assert r["class_maps"]["classes"] == ["all images"] and r["class_maps"]["counts"] == [3]
    assert r["heads"]["stats"]["entropy"]["n"][0][0] == 3
    # each map is the model's own rollout of that photo
    loaded = load_model("test_vit", checkpoint=backbone)
    s = _shards(out)
    for iid, m in zip(s["ids"], s["map_rollout"]):
        prepared = loaded.prepare(open_image(str(data / iid)).image)
        ref = compute_map("rollout", loaded.capture(prepared)).maps[0].numpy()
        np.testing.assert_allclose(m.astype(np.float32), ref, rtol=2e-3, atol=2e-4)     # stored as float16
    html = open(os.path.join(out, "report.html"), encoding="utf-8").read()
    assert "Groups, not classes" in html and "Per-group mean maps" in html and "Classification" not in html
    # resuming the same audit reuses its shards and writes the same report
    again = run_audit(str(data), out, "test_vit", checkpoint=backbone, batch_size=2, shard_size=2,
                      quiet=True, log=lambda s: None)
    assert again.reused_shards == 2 and again.report["class_maps"] == r["class_maps"]


def test_backbone_on_class_folders_groups_by_folder(tmp_path, backbone):
    data = tmp_path / "folders"
    _photos(data / "cats", ["1.png", "2.png"], 1)
    _photos(data / "dogs", ["3.png", "4.png", "5.png"], 2)
    out = str(tmp_path / "audit")
    code = cli_main(["audit", "--model", "test_vit", "--checkpoint", backbone, "--data", str(data), "--out", out,
                     "--batch-size", "2", "--quiet"])
    assert code == 0
    r = json.load(open(os.path.join(out, "report.json"), encoding="utf-8"))
    assert r["grouping"]["groups"] == ["cats", "dogs"] and "groups, not classes" in r["grouping"]["why"]
    assert r["classification"] is None and r["class_maps"]["counts"] == [2, 3]
    s = _shards(out)
    maps = np.load(os.path.join(out, "class_maps.npz"))
    for k, group in enumerate(["cats", "dogs"]):
        sel = [j for j, i in enumerate(s["ids"]) if str(i).startswith(group + "/")]
        # the group's border mass: the mean of its images' own
        per = r["shortcuts"]["rollout"]["per_class"][group]
        assert per["n"] == len(sel)
        assert per["border_mass"]["mean"] == pytest.approx(float(np.mean(s["border_rollout"][sel])), rel=1e-9)
        # the group's mean map: the mean of its images' maps on the photo canvas
        cm = np.stack([canvas_map(s["map_rollout"][j], s["original_size"][j], s["box"][j]) for j in sel])
        seen = np.isfinite(cm).any(0)          # canvas pixels some photo of the group covers
        np.testing.assert_allclose(maps["rollout"][k][seen], np.nanmean(cm[:, seen], 0), rtol=1e-5, atol=1e-6)
        assert np.isnan(maps["rollout"][k][~seen]).all()


def test_classifier_with_folders_that_are_not_its_classes(tmp_path):
    data = tmp_path / "folders"
    _photos(data / "left", ["1.png"], 3)
    _photos(data / "right", ["2.png"], 4)
    with pytest.raises(UserError, match="--group-by-folder"):
        run_audit(str(data), str(tmp_path / "a"), "demo-vit", quiet=True, log=lambda s: None)
    outcome = run_audit(str(data), str(tmp_path / "b"), "demo-vit", group_by_folder=True, faithfulness_steps=0,
                        quiet=True, log=lambda s: None)
    r = outcome.report
    assert r["grouping"]["by"] == "folder" and r["classification"] is None
    assert r["class_maps"]["classes"] == ["left", "right"]
    assert set(r["shortcuts"]["rollout"]["per_class"]) == {"left", "right"}
