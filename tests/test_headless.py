"""Backbones without a classifier, paths on this machine and failed loads in the app's model manager.

Models are random-init, saved by the test, loaded through the manager's real path (the same
`load_model` the CLI uses).
"""
from __future__ import annotations

import os

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from attention.errors import CheckpointError, ModelNotFoundError, UserError
from viz_app.callbacks import Callbacks
from viz_app.models import CHECKPOINT_MAX_BYTES, ModelManager, upload_limit_bytes


def _save(model, path) -> str:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


@pytest.fixture
def backbone(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    return ref, _save(ref, tmp_path / "backbone.safetensors")


def _photo(tmp_path) -> str:
    p = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(p)
    return str(p)


def test_headless_checkpoint_in_the_app_has_attention_and_no_predictions(tmp_path, backbone):
    ref, path = backbone
    cb = Callbacks(ModelManager(pretrained=False))
    name = cb.manager.register("vit_tiny_patch16_224", path)
    assert "No predictions" in cb.manager.prediction_note(name)
    assert "Class-specific methods are off" in cb.manager.class_methods_disabled(name)
    a = cb.analyse("s1", _photo(tmp_path), name)
    assert a.predictions == [] and len(a.result.maps) == 12
    x = a.prepared.tensor
    with torch.no_grad():
        assert torch.allclose(a.result.logits.float(), ref(x), atol=1e-5)     # the backbone's features
    assert cb.manager.prediction_note("demo-vit") == "" and cb.manager.class_methods_disabled("demo-vit") == ""
    # the page: no class-specific method on the menu, and the note says why; the predictions note is plain
    from attention.methods import methods
    from viz_app.main_view import menu
    keys, not_offered = menu.offered_methods(a.result, has_classifier=bool(a.predictions))
    assert "raw" in keys and "rollout" in keys
    assert not any(m.class_specific for m in methods() if m.name in keys)
    assert {name for name, why in not_offered if "no classifier" in why} == \
        {m.name for m in methods() if m.class_specific and m.defined_for(a.result) is None}
    assert any("No predictions" in n for n in a.notes)


def test_a_failed_load_keeps_the_previous_model_and_says_what_is_wrong(tmp_path):
    mgr = ModelManager(pretrained=False)
    mgr.get("demo-vit")
    before = (mgr.loaded_names(), mgr.choices(), mgr.loads)
    text = tmp_path / "weights.pth"
    text.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="weights.pth is a text file, not a checkpoint"):
        mgr.register("vit_tiny_patch16_224", str(text))
    with pytest.raises(CheckpointError, match="no such file or folder"):
        mgr.register_path(str(tmp_path / "nope.safetensors"), "vit_tiny_patch16_224")
    with pytest.raises(CheckpointError, match="folder without config.json"):
        mgr.register_path(str(tmp_path))
    # no architecture given: it would be read from the file, which is no checkpoint
    with pytest.raises(CheckpointError, match="weights.pth is a text file, not a checkpoint"):
        mgr.register_path(str(text))
    assert (mgr.loaded_names(), mgr.choices(), mgr.loads) == before
    assert mgr.get("demo-vit") is not None


def test_path_on_this_machine_loads_without_copying(tmp_path, backbone):
    from viz_app.models import LocalPath
    ref, path = backbone
    mgr = ModelManager(pretrained=False)
    name = mgr.register("vit_tiny_patch16_224", LocalPath(path))     # what the UI's path field passes
    assert name == mgr.register_path(path, "vit_tiny_patch16_224")
    assert name in mgr.choices() and mgr.spec(name).checkpoint == os.path.abspath(path)
    assert mgr._files is None                      # nothing was copied into the upload folder
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(mgr.get(name).model(x), ref(x))


def test_hf_folder_by_path(tmp_path):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                                 image_size=32, patch_size=8, num_labels=2, id2label={0: "a", 1: "b"},
                                 label2id={"a": 0, "b": 1})
    torch.manual_seed(0)
    m = transformers.ViTForImageClassification(cfg).eval()
    m.save_pretrained(str(tmp_path / "vit"))
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(str(tmp_path / "vit"))
    mgr = ModelManager(pretrained=True)
    name = mgr.register_path(str(tmp_path / "vit"))
    lm = mgr.get(name)
    assert name.startswith("hf:") and lm.class_names == ["a", "b"] and lm.has_classifier


def test_upload_limits():
    from attention.images import MAX_BYTES
    assert CHECKPOINT_MAX_BYTES >= 2 * 1024 ** 3 and upload_limit_bytes() >= CHECKPOINT_MAX_BYTES
    # images keep their own, smaller limit, large enough for a 200 MP phone JPEG (tens of MB)
    assert 100 * 1024 * 1024 <= MAX_BYTES < CHECKPOINT_MAX_BYTES


def test_zero_shot_entries_per_classes(tmp_path):
    open_clip = pytest.importorskip("open_clip")
    import json
    d = tmp_path / "cfg"
    d.mkdir()
    (d / "tiny-app-clip.json").write_text(json.dumps(
        {"embed_dim": 32, "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 32,
                                         "patch_size": 8},
         "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}))
    open_clip.add_model_config(str(d))
    cb = Callbacks(ModelManager(pretrained=False))
    base = "open_clip:tiny-app-clip"
    assert cb.manager.is_zero_shot(base)
    assert "type the classes" in cb.manager.prediction_note(base)
    a_name = cb.manager.with_classes(base, "cat, dog")
    b_name = cb.manager.with_classes(a_name, "teapot, kettle, cup")     # re-typed on an entry: same base
    assert cb.manager.classes_of(b_name) == "teapot, kettle, cup" and cb.manager.is_zero_shot(b_name)
    assert cb.manager.classes_box(b_name) == (True, "teapot, kettle, cup")
    assert cb.manager.classes_box("demo-vit") == (False, "") and cb.manager.classes_box("") == (False, "")
    assert a_name in cb.manager.choices() and b_name in cb.manager.choices()
    photo = _photo(tmp_path)
    a, b = cb.analyse("s1", photo, a_name), cb.analyse("s2", photo, b_name)
    assert [p["label"] for p in a.predictions] and {p["label"] for p in a.predictions} == {"cat", "dog"}
    assert {p["label"] for p in b.predictions} == {"teapot", "kettle", "cup"}
    # one image tower for both entries
    assert cb.manager.get(a_name).model.visual is cb.manager.get(b_name).model.visual
    with pytest.raises(UserError, match="not a zero-shot model"):
        cb.manager.with_classes("demo-vit", "cat, dog")


def test_the_app_server_takes_checkpoint_sized_uploads(monkeypatch):
    """`python app.py` / `attention-viz` launch Gradio with the checkpoint limit (one server-wide limit);
    a stand-in records the launch arguments instead of serving."""
    from types import SimpleNamespace

    from viz_app.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    class Recorder:
        viz_callbacks = Callbacks(ModelManager(pretrained=True))
        viz_default = SimpleNamespace(model=None, notice=None)

        def launch(self, **kwargs):
            self.kwargs = kwargs

    demo = Recorder()
    assert main([], demo=demo) == 0
    assert demo.kwargs["max_file_size"] >= 2 * 1024 ** 3 and demo.kwargs["server_name"] == "127.0.0.1"
    assert demo.viz_default.model == "demo-vit"


# ---------------------------------------------------------------- in the browser

@pytest.mark.browser
@pytest.mark.slow
def test_browser_big_upload_path_field_and_bad_file(tmp_path):
    """Headless Chromium on the real app: an 88 MB headless checkpoint uploads (apart from the image
    limit), a path typed on this machine loads without uploading, a text file named .pth gets its
    own message and the previous model keeps serving."""
    from browser_support import CHROMIUM, app_page, wait_status
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent")
    from viz_app.testing import served_app
    torch.manual_seed(0)
    big = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=0).eval()
    big_path = _save(big, tmp_path / "dino_backbone.safetensors")
    assert os.path.getsize(big_path) > 60 * 2 ** 20
    tiny = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0).eval()
    tiny_path = _save(tiny, tmp_path / "tiny_backbone.safetensors")
    text = tmp_path / "notes.pth"
    text.write_text("not weights\n")
    photo = _photo(tmp_path)
    with served_app("--model", "demo-vit") as url, app_page(url, photo, timeout_ms=120_000) as pg:
        pg.get_by_text("Your own model").first.click()
        arch = pg.locator("#arch input")
        arch.fill("vit_small_patch16_224")
        arch.press("Enter")
        pg.set_input_files("#ckpt-file input[type=file]", big_path)
        pg.wait_for_selector("#ckpt-file a, #ckpt-file .file-name", timeout=120_000)
        pg.locator("#custom-btn").click()
        wait_status(pg, "dino_backbone.safetensors")
        assert "exceed" not in pg.content()
        # a path on this machine: no upload
        arch.fill("vit_tiny_patch16_224")
        arch.press("Enter")
        pg.locator("#ckpt-path textarea").fill(tiny_path)
        # Gradio sends a textbox's value to the server on its (debounced) input event; a click in the same
        # instant can overtake it (a person moving the mouse to the button cannot)
        pg.wait_for_timeout(1500)
        pg.locator("#custom-btn").click()
        wait_status(pg, "tiny_backbone.safetensors")     # named by the file: no server folders in the menu
        # a text file named .pth: its own message, the previous model stays
        pg.locator("#ckpt-path textarea").fill(str(text))
        pg.wait_for_timeout(1500)
        pg.locator("#custom-btn").click()
        toast = pg.locator(".toast-body", has_text="is a text file, not a checkpoint")
        toast.first.wait_for()
        assert "still using" in toast.first.inner_text()
        assert "Traceback" not in pg.content() and "IndexError" not in pg.content()


@pytest.mark.browser
@pytest.mark.slow
def test_browser_zero_shot_classes_box(tmp_path):
    """A zero-shot model shows a classes box; typed classes become the predictions (random-init ViT-S-32)."""
    pytest.importorskip("open_clip")
    from browser_support import CHROMIUM, app_page, wait_status
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent")
    from viz_app.testing import served_app
    photo = _photo(tmp_path)
    with served_app("--model", "open_clip:ViT-S-32", "--random-init") as url, \
            app_page(url, photo, timeout_ms=120_000) as pg:
        box = pg.locator("#classes textarea")
        box.wait_for()
        box.fill("cat, dog, teapot")
        box.press("Enter")
        wait_status(pg, "cat, dog, teapot")
        pg.wait_for_selector("#predictions [data-testid=label-output-value]")
        labels = pg.locator("#predictions").inner_text()
        assert all(c in labels for c in ("cat", "dog", "teapot"))
        pg.locator("#model input").click()
        pg.get_by_role("option", name="demo-vit (bundled, shapes)").click()
        pg.wait_for_function("() => { const e = document.querySelector('#classes');"
                             " return !e || e.offsetParent === null; }")   # hidden for a classifier
