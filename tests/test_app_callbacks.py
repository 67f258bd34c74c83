"""The app's callbacks with the real demo models (no mocks, no browser).

Skipped where the bundled demo models are missing (train them with ``python -m attention.demo train``).
"""
from __future__ import annotations

import hashlib
import json
import os
import time

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image

from attention.demo.shapes import CLASS_NAMES, make_sample
from attention.models import demo_names

pytestmark = pytest.mark.skipif("demo-vit" not in demo_names(),
                                reason="assets/demo-vit.safetensors/.json missing (python -m attention.demo train "
                                       "--arch demo-vit)")

from viz_app.callbacks import Callbacks, pixels_sha256  # noqa: E402
from viz_app.models import ModelManager  # noqa: E402
from viz_app.state import SessionStore  # noqa: E402
from viz_app.views import View  # noqa: E402

MODEL = "demo-vit"
MARKER = np.array([0, 255, 255], np.uint8)   # overlay's query-patch marker colour


def shape_png(folder, label: int, seed: int = 11) -> str:
    img, _, _ = make_sample(np.random.default_rng(seed), 64, label)
    path = os.path.join(folder, f"{CLASS_NAMES[label]}_{seed}.png")
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return str(tmp_path_factory.mktemp("app_images"))


@pytest.fixture(scope="module")
def cb():
    return Callbacks(ModelManager(max_models=3), SessionStore(max_entries=8, max_per_session=4))


@pytest.fixture(scope="module")
def star(folder):
    return shape_png(folder, CLASS_NAMES.index("star"))


@pytest.fixture
def forwards(cb):
    """Counts forward passes of demo-vit with a forward hook on the model."""
    model = cb.manager.get(MODEL).model
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    yield calls
    handle.remove()


def test_analyse_predicts_the_shape(cb, folder):
    for label in (CLASS_NAMES.index("circle"), CLASS_NAMES.index("star"), CLASS_NAMES.index("cross")):
        a = cb.analyse("s-predict", shape_png(folder, label), MODEL)
        probs = [p["probability"] for p in a.predictions]
        assert len(probs) == 5 and sum(probs) <= 1.0 + 1e-5
        assert probs == sorted(probs, reverse=True)
        assert a.predictions[0]["label"] == CLASS_NAMES[label], a.predictions
        labels = cb.label_values(a)
        assert list(labels)[0] == CLASS_NAMES[label] and abs(sum(labels.values()) - sum(probs)) < 1e-6


def test_rerender_from_cache_runs_no_forward(cb, star, forwards):
    a = cb.analyse("s-cache", star, MODEL)
    assert len(forwards) == 1
    assert cb.analyse("s-cache", star, MODEL) is a            # same image again: served from the cache
    views = [View(method="raw", layer=l, head=h) for l in (0, 2, -1) for h in ("0", "3", "mean", "max")]
    views += [View(method="rollout", layer=l) for l in (0, 1, -1)]
    views += [View(cmap="jet"), View(alpha=0.9), View(mode="blocky"), View(mass=0.6, contour=True),
              View(method="raw", query="patch_mean")]
    for v in views:
        pic, caption = cb.render("s-cache", MODEL, a.image_sha, v)
        assert pic.dtype == np.uint8 and pic.shape == a.display.shape
    assert len(forwards) == 1, "changing layer/head/method/colour/opacity/mode must not run the model"
    # gradient methods: one forward + backward per target class, then cached
    cb.render("s-cache", MODEL, a.image_sha, View(method="grad_rollout"))
    n = len(forwards)
    assert n == 2
    cb.render("s-cache", MODEL, a.image_sha, View(method="grad_rollout", query="patch_mean", cmap="viridis"))
    assert len(forwards) == n
    cb.render("s-cache", MODEL, a.image_sha, View(method="grad_rollout", target=0))
    assert len(forwards) == n + 1


def test_rerender_is_fast(cb, star):
    a = cb.analyse("s-fast", star, MODEL)
    cb.render("s-fast", MODEL, a.image_sha, View(method="raw"))    # warm-up
    times = []
    for layer in range(len(a.result.maps)):
        for head in ("0", "1", "mean"):
            t = time.perf_counter()
            cb.render("s-fast", MODEL, a.image_sha, View(method="raw", layer=layer, head=head))
            times.append(time.perf_counter() - t)
    assert float(np.median(times)) < 0.05, times


def test_head_and_layer_change_the_picture(cb, star):
    a = cb.analyse("s-change", star, MODEL)
    last = len(a.result.maps) - 1
    pics = [cb.render("s-change", MODEL, a.image_sha, View(method="raw", layer=l, head=h))[0]
            for l, h in ((last, "0"), (last, "1"), (1, "0"))]
    assert not np.array_equal(pics[0], pics[1]), "another head must change the picture"
    assert not np.array_equal(pics[0], pics[2]), "another layer must change the picture"
    rollouts = [cb.render("s-change", MODEL, a.image_sha, View(method="rollout", layer=l))[0] for l in (0, last)]
    assert not np.array_equal(*rollouts)


def test_patch_click_gives_query_view_with_marker(cb, star):
    a = cb.analyse("s-click", star, MODEL)
    h, w = a.display.shape[:2]
    before, _ = cb.render("s-click", MODEL, a.image_sha, View(method="raw"))
    view = cb.click("s-click", a, View(method="raw", layer=3, head="2"), w * 0.6, h * 0.3)
    assert view.query == "patch" and view.click is not None
    pic, caption = cb.render("s-click", MODEL, a.image_sha, view)
    assert "clicked patch" in caption and "patch (" in caption
    marker = np.all(pic == MARKER, axis=-1)
    assert marker.sum() > 20 and not np.all(before == MARKER, axis=-1).any()
    ys, xs = np.nonzero(marker)
    assert abs(xs.mean() - w * 0.6) < w / 8 and abs(ys.mean() - h * 0.3) < h / 8, "marker sits on the clicked patch"
    # the patch attends differently than the CLS token
    cls_pic, _ = cb.render("s-click", MODEL, a.image_sha, view.with_(query="auto"))
    assert not np.array_equal(cls_pic, pic)


def test_grid_sheet_and_cell_click(cb, star):
    a = cb.analyse("s-grid", star, MODEL)
    sheet, layout, caption = cb.grid("s-grid", MODEL, a.image_sha, View())
    L, H = len(a.result.maps), a.result.maps[0].num_heads
    assert sheet.shape[:2] == layout.shape and layout.layers == L and layout.heads == H
    y, x = layout.cell_origin(2, 1)
    assert cb.grid_cell(layout, x + 3, y + 3) == (2, "1")
    y, x = layout.cell_origin(L - 1, "fused")
    assert cb.grid_cell(layout, x + 3, y + 3) == (L - 1, "mean")
    assert cb.grid_cell(layout, 1, 1) is None


def test_sessions_are_isolated(cb, folder):
    img = shape_png(folder, 0, seed=99)
    a = cb.analyse("tab-A", img, MODEL)
    assert cb.find("tab-B", MODEL, a.image_sha) is None
    with pytest.raises(gr.Error, match="no longer in the cache"):
        cb.render("tab-B", MODEL, a.image_sha, View())
    b = cb.analyse("tab-B", img, MODEL)
    assert b is not a
    cb.render("tab-B", MODEL, b.image_sha, View(method="grad_rollout", target=2))
    assert ("grad_rollout", 2) in b.derived and ("grad_rollout", 2) not in a.derived


def test_cache_is_bounded(folder):
    cb = Callbacks(ModelManager(), SessionStore(max_entries=3, max_per_session=2))
    paths = [shape_png(folder, k % 5, seed=200 + k) for k in range(4)]
    for p in paths:
        cb.analyse("one", p, MODEL)
    assert len(cb.store) == 2                                   # per-session bound
    for p in paths[:2]:
        cb.analyse("two", p, MODEL)
    assert len(cb.store) == 3                                   # global bound
    size = cb.store.stats()["bytes"]
    tiny = Callbacks(cb.manager, SessionStore(max_bytes=int(size / 3 * 1.5)))
    for p in paths:
        tiny.analyse("x", p, MODEL)
    assert len(tiny.store) == 1 and tiny.store.stats()["bytes"] <= tiny.store.max_bytes


@pytest.mark.parametrize("content, name, message", [
    (b"", "empty.png", "empty"),
    (b"hello, not an image at all" * 10, "notes.png", "not an image file"),
    (b"%PDF-1.4 fake", "paper.png", "PDF"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "truncated.png", "damaged or truncated|not an image"),
])
def test_bad_uploads_give_specific_errors(cb, tmp_path, content, name, message):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(gr.Error, match=message):
        cb.analyse("s-bad", str(p), MODEL)


def test_missing_image_and_model_errors(cb, star):
    with pytest.raises(gr.Error, match="no image"):
        cb.analyse("s-err", None, MODEL)
    with pytest.raises(gr.Error, match="no such file"):
        cb.analyse("s-err", "/nonexistent/photo.jpg", MODEL)
    with pytest.raises(gr.Error, match="unknown model"):
        cb.analyse("s-err", star, "no_such_model_xyz")
    a = cb.analyse("s-err", star, MODEL)
    with pytest.raises(gr.Error, match="click a patch"):
        cb.render("s-err", MODEL, a.image_sha, View(method="raw", query="patch"))


def test_failed_model_load_keeps_previous_model(cb, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert cb.manager.get(MODEL) is not None
    with pytest.raises(Exception) as info:
        cb.manager.get("vit_base_patch16_224")
    assert "not available" in str(info.value) and "HF_HUB_OFFLINE" in str(info.value)
    assert cb.manager.is_loaded(MODEL)


def test_own_checkpoint_and_labels(cb, tmp_path, star):
    from attention.models.demo_source import ASSETS
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"my {c}" for c in CLASS_NAMES))
    name = cb.manager.register("demo-vit", os.path.join(ASSETS, "demo-vit.safetensors"), str(labels))
    assert name in cb.manager.choices()
    a = cb.analyse("s-own", star, name)
    plain = cb.analyse("s-own", star, MODEL)
    assert a.predictions[0]["label"] == "my " + plain.predictions[0]["label"]
    bad = tmp_path / "three.txt"
    bad.write_text("a\nb\nc\n")
    with pytest.raises(Exception, match="3 names but the model has 5 classes"):
        cb.manager.register("demo-vit", os.path.join(ASSETS, "demo-vit.safetensors"), str(bad))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="junk.pth"):
        cb.manager.register("demo-vit", str(junk))
    assert cb.manager.is_loaded(name)


def test_class_click_targets_class_specific_methods(cb, star):
    a = cb.analyse("s-class", star, MODEL)
    second = a.predictions[1]
    target = cb.target_from_label(a, second["label"])
    assert target == second["index"]
    top, cap_top = cb.render("s-class", MODEL, a.image_sha, View(method="grad_rollout"))
    other, cap_other = cb.render("s-class", MODEL, a.image_sha, View(method="grad_rollout", target=target))
    assert second["label"] in cap_other and not np.array_equal(top, other)
    _, cap = cb.render("s-class", MODEL, a.image_sha, View(method="gradcam", target=target))
    assert "Grad-CAM" in cap and second["label"] in cap


def test_export_follows_the_cli_contract(cb, star):
    a = cb.analyse("s-export", star, MODEL)
    files = cb.export("s-export", MODEL, a.image_sha, View(method="raw", layer=2))
    names = [os.path.basename(f) for f in files]
    assert any(n.endswith("_overlay.png") for n in names) and any(n.endswith("_grid.png") for n in names)
    npz = next(f for f in files if f.endswith(".npz"))
    with np.load(npz) as d:
        keys = set(d.files)
        assert {"input", "logits", "layer_names", "num_prefix_tokens", "grid", "heatmap", "rollout"} <= keys
        L, m0 = len(a.result.maps), a.result.maps[0]
        assert {f"attn_{i:02d}" for i in range(L)} <= keys and f"attn_{L:02d}" not in keys
        assert d["input"].shape == (1, 3, 64, 64) and d["attn_00"].shape == tuple(m0.weights.shape)
        assert list(d["grid"]) == list(a.result.tokens.grid) and int(d["num_prefix_tokens"]) == 1
        assert list(d["layer_names"]) == a.result.layer_names
        assert list(d["layout_sources"]) == [m.layout_source for m in a.result.maps] == ["known"] * len(a.result.maps)
    meta = json.load(open(next(f for f in files if f.endswith(".json"))))
    assert meta["input_sha256"] == a.image_sha and meta["predictions"][0] == a.predictions[0]


def test_export_is_named_after_the_uploaded_file(cb, star):
    a = cb.analyse("s-export-name", star, MODEL)
    files = cb.export("s-export-name", MODEL, a.image_sha, View(method="raw"), image_name="My holiday.photo.JPG")
    names = sorted(os.path.basename(f) for f in files)
    stem = f"My_holiday.photo_{MODEL}"
    assert names == sorted([f"{stem}.npz", f"{stem}.json", f"{stem}_overlay.png", f"{stem}_grid.png"])
    meta = json.load(open(next(f for f in files if f.endswith(".json"))))
    assert meta["image"] == "My holiday.photo.JPG" and meta["input_sha256"] == a.image_sha


def test_api_functions_return_checksum_and_settings(cb, star):
    labels, pic, meta = cb.predict("s-api", star, MODEL)
    rgb = np.asarray(Image.open(star).convert("RGB"))
    assert meta["input_sha256"] == hashlib.sha256(rgb.tobytes()).hexdigest() == pixels_sha256(Image.open(star))
    assert list(labels)[0] == meta["predictions"][0]["label"] and pic.ndim == 3
    pic2, meta2 = cb.attention_map("s-api", star, MODEL, method="raw", layer=2, head="1", query="3,4")
    assert meta2["cached"] and meta2["layer"] == 2 and "patch (3, 4)" in meta2["caption"]
    with pytest.raises(gr.Error, match="unknown method"):
        cb.attention_map("s-api", star, MODEL, method="magic")


def test_diagnostics_and_faithfulness(cb, star):
    a = cb.analyse("s-diag", star, MODEL)
    f1, f2, f3, rows, md = cb.diagnostics("s-diag", MODEL, a.image_sha)
    assert len(rows) == len(a.result.maps) * a.result.maps[0].num_heads and "layers" in md
    fig, md = cb.faithfulness("s-diag", MODEL, a.image_sha, View(), steps=8, with_random=False)
    assert "Deletion AUC" in md and fig is not None


def test_other_demo_models_render(cb, folder):
    img = shape_png(folder, 1, seed=5)
    for name in [n for n in ("demo-torch-vit", "demo-cnn-selfattn", "demo-cnn-attnpool") if n in demo_names()]:
        a = cb.analyse("s-others", img, name)
        view = cb.default_view(a)
        pic, caption = cb.render("s-others", name, a.image_sha, view)
        assert pic.shape == a.display.shape, name
        sheet, layout, _ = cb.grid("s-others", name, a.image_sha, view)
        assert sheet.ndim == 3


def test_vit_base_rerender_within_50ms():
    """The speed target: ViT-B/16 at 224 on CPU re-renders from the cache in <= 50 ms (random weights)."""
    from viz_app.examples import example_files
    cb = Callbacks(ModelManager(pretrained=False), SessionStore())
    photo = next(p for p, caption in example_files() if "Chelsea" in caption)
    a = cb.analyse("s-vitb", photo, "vit_base_patch16_224")
    assert a.result.maps[0].weights.dtype == torch.float16 and len(a.result.maps) == 12
    views = [View(method="raw", layer=l, head=h) for l in (0, 6, 11) for h in ("0", "5", "mean")]
    views += [View(method="rollout", layer=l) for l in (3, 11)] + [View(cmap="jet", mode="blocky", mass=0.6)]
    for v in views:
        cb.render("s-vitb", "vit_base_patch16_224", a.image_sha, v)       # first use fills the caches
    times = []
    for v in views * 2:
        t = time.perf_counter()
        cb.render("s-vitb", "vit_base_patch16_224", a.image_sha, v)
        times.append(time.perf_counter() - t)
    assert float(np.median(times)) <= 0.05 and max(times) < 0.25, [round(t * 1000, 1) for t in times]


def test_a_live_frame_shows_the_same_map_as_that_image_analysed_normally(cb, folder):
    """The Live tab's path (`Callbacks.live`) draws exactly what the Attention tab draws for the same pixels,
    caches nothing, and falls back from a class-specific method to rollout (no backward pass per frame)."""
    frame = np.asarray(Image.open(shape_png(folder, 2, seed=5)).convert("RGB").resize((320, 240)))
    for method, shown in (("rollout", "rollout"), ("raw", "raw"), ("grad_rollout", "rollout")):
        pic, analysis, view = cb.live(MODEL, frame, View(method=method, layer=-1))
        assert view.method == shown
        ref = cb.analyse("live-test", frame, MODEL)
        want, _ = cb.render("live-test", MODEL, ref.image_sha, view)
        assert np.array_equal(pic, want), method
        assert [p["index"] for p in analysis.predictions] == [p["index"] for p in ref.predictions]
    stored = [key[2] for key in cb.store._items]       # (session, model, image sha)
    assert ref.image_sha in stored and analysis.image_sha not in stored   # the frames are never cached
    with pytest.raises(gr.Error, match="no camera frame"):
        cb.live(MODEL, None, View())


def test_your_own_model_proposes_the_architectures_whose_shapes_fit(tmp_path):
    """A ViT-S checkpoint that names no architecture: the menu proposes ViT-S-shaped models, never the default
    ViT-B (whose 768-wide weights do not fit), each verified here by timm building it with the same shapes."""
    import timm
    path = tmp_path / "vit_s.pth"
    sd = timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=7).state_dict()
    torch.save(sd, path)
    fits = Callbacks.architectures_for(str(path))
    assert "vit_small_patch16_224" in fits and "vit_base_patch16_224" not in fits
    for name in fits:
        other = timm.create_model(name, pretrained=False, num_classes=7).state_dict()
        assert {k: tuple(v.shape) for k, v in other.items() if k in sd and "pos_embed" not in k} == \
            {k: tuple(v.shape) for k, v in sd.items() if k in other and "pos_embed" not in k}
