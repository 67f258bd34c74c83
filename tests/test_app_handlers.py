"""The page's handlers without a browser, on every bundled model: named updates, control ranges the browser
accepts, captions that name their image and model, failures that leave the page usable, and a Learn tab
that follows the image and model (no picture or number of a previous one)."""
from __future__ import annotations

import re
from types import SimpleNamespace

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from attention.demo.shapes import CLASS_NAMES, make_sample
from attention.models import demo_names
from viz_app.callbacks import Callbacks, pixels_sha256
from viz_app.models import ModelManager
from viz_app.state import SessionStore
from viz_app.views import View

MODELS = ["demo-vit", "demo-torch-vit", "demo-cnn-selfattn", "demo-cnn-attnpool"]
pytestmark = pytest.mark.skipif(not set(MODELS) <= set(demo_names()), reason="bundled demo models missing")

PROVENANCE = re.compile(r"image `([0-9a-f]{8})`(?: \([^)]*\))? · model `([^`]+)`")


def no_progress(*a, **k):
    return None


def request(session: str):
    return SimpleNamespace(session_hash=session)


@pytest.fixture(scope="module")
def page():
    from viz_app.ui import build_demo
    demo = build_demo(Callbacks(ModelManager(max_models=4), SessionStore()), default_model="demo-vit")
    return demo.viz_handlers


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("handlers")
    out = []
    for label, seed in (("star", 3), ("circle", 4)):
        img, _, _ = make_sample(np.random.default_rng(seed), 64, CLASS_NAMES.index(label))
        path = folder / f"{label}.png"
        Image.fromarray(img).save(path)
        out.append(str(path))
    return out


def sha_of(path: str) -> str:
    return pixels_sha256(Image.open(path))


def slider_ok(update: dict, n: int) -> None:
    """A slider update over n positions that the browser accepts, hidden when there is nothing to choose."""
    assert update["minimum"] < update["maximum"], update
    assert 0 <= update["value"] <= max(n - 1, 0)
    assert update["visible"] == (n > 1) and update["maximum"] == max(n - 1, 1)


def provenance_of(text: str) -> tuple[str, str]:
    m = PROVENANCE.search(text)
    assert m, f"no image/model named in {text!r}"
    return m.group(1), m.group(2)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_gets_valid_controls_and_a_captioned_picture(page, images, model):
    u = page.ui
    out = page.on_model(model, images[0], View(), "demo-vit", request(f"s-{model}"), no_progress)
    assert isinstance(out, dict) and all(isinstance(k, gr.components.Component) or hasattr(k, "_id") for k in out)
    analysis = page.cb.find(f"s-{model}", model, sha_of(images[0]))
    n_layers = len([m for m in analysis.result.maps if m.is_spatial])
    slider_ok(out[u.layer], n_layers)
    assert out[u.model_state] == model and out[u.key_state] == (model, analysis.image_sha)
    assert provenance_of(out[u.caption]) == (analysis.image_sha[:8], model)
    assert out[u.heatmap].ndim == 3
    methods = [k for _, k in out[u.method]["choices"]]
    assert out[u.method]["value"] in methods
    if n_layers < 2:                        # rollout needs a stack of layers: not offered, and the note says why
        assert "rollout" not in methods and "not offered" in out[u.notes_md]
    heads = analysis.result.maps[-1].num_heads
    for c_head in u.cmp_heads:              # Compare offers this model's heads, no more
        assert out[c_head]["choices"] == ["mean", "max", "min"] + [str(i) for i in range(heads)]
    labels = [label for label, _ in out[u.query]["choices"]]
    assert len(labels) == len(set(labels)) and not ("CLS (default)" in labels and "CLS" in labels)


def test_a_model_that_fails_to_load_keeps_the_previous_one(page, images):
    u = page.ui
    out = page.on_model("no_such_model_xyz", images[0], View(), "demo-vit", request("s-fail"), no_progress)
    assert out[u.model_state] == "demo-vit" and out[u.model_dd]["value"] == "demo-vit"
    assert u.heatmap not in out              # nothing else changes: no empty picture, no Error badge


def test_a_failed_load_my_model_leaves_everything_usable(page, images, tmp_path):
    u = page.ui
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"this is not a checkpoint")
    out = page.on_custom("demo-vit", str(bad), None, images[0], View(), "demo-cnn-selfattn", request("s-custom"),
                         no_progress)
    assert out == {u.model_dd: gr.update(value="demo-cnn-selfattn"), u.model_state: "demo-cnn-selfattn"}


def test_an_undefined_view_is_a_message_not_an_exception(page, images):
    """Rollout on a one-layer CNN: a warning and no update (Gradio would badge every output on an exception)."""
    model = "demo-cnn-attnpool"
    page.on_model(model, images[0], View(), "demo-vit", request("s-undef"), no_progress)
    sha = sha_of(images[0])
    out = page.on_controls("rollout", 0, "mean", "auto", "inferno", 0.5, "smooth", "minmax", 0.0, False, View(),
                           sha, model, images[0], request("s-undef"), no_progress)
    assert out == gr.skip()


@pytest.mark.parametrize("model", MODELS)
def test_learn_follows_image_and_model(page, images, model):
    """A new image (then the other model): every lesson control range comes from it, the step on screen is
    recomputed on it, every other step is cleared; no explanation names another image or model."""
    learn = page.ui.learn
    L = learn.ui
    session = f"learn-{model}"
    for image, name in ((images[0], "demo-vit"), (images[1], "demo-vit"), (images[1], model)):
        out = page.on_model(name, image, View(), "demo-vit", request(session), no_progress)
        key = out[page.ui.key_state]
        for step in ("learn-query", "learn-heads", "learn-tokens"):
            upd = learn.on_key(key, "learn", step, "1", name, key[1], image, 7, 5, "patch", 7, 7, False, request(session))
            analysis = page.cb.find(session, name, key[1])
            c = learn.lesson.controls(session, name, key[1])
            slider_ok(upd[L.layer], c["layers"])
            slider_ok(upd[L.head], c["heads"])
            slider_ok(upd[L.row], c["grid"][0])
            slider_ok(upd[L.col], c["grid"][1])
            shown = learn.step_outputs(step)
            for comp, value in upd.items():
                if isinstance(value, str) and "image `" in value:
                    assert provenance_of(value) == (analysis.image_sha[:8], analysis.model_key)
                if comp in learn.all_outputs() and comp not in shown and comp is not L.pick:
                    assert value is None or value == "" or "Out of date" in str(value)
            mds = [c for c in shown if isinstance(c, gr.Markdown)]
            assert mds and all(("image `" in upd[md]) or ("Not available" in upd[md]) for md in mds), \
                [upd[md] for md in mds]


def test_learn_before_an_image_is_a_message(page):
    learn = page.ui.learn
    out = learn.on_open("learn-query")("learn-query", "demo-vit", None, None, 3, 0, "patch", 3, 3, 1.0,
                                       False, request("s-empty"))
    texts = [v for v in out.values() if isinstance(v, str) and "Not available" in v]
    assert texts and all("pick one" in t for t in texts)


def test_previous_next_walk_through_every_step_in_order(page, images):
    from viz_app.learn_tab import STEP_IDS
    learn = page.ui.learn
    L = learn.ui
    out = page.on_model("demo-vit", images[0], View(), "demo-vit", request("s-nav"), no_progress)
    sha = out[page.ui.key_state][1]
    step, part, seen = "learn-tokens", "1", [("learn-tokens", "1")]
    for _ in range(20):
        upd = learn.on_nav(+1)(step, part, "demo-vit", sha, images[0], 3, 0, "patch", 3, 3, 1.0, False, request("s-nav"))
        step, part = upd.get(L.step, step), upd.get(L.part, part)
        if (step, part) == seen[-1]:
            break
        seen.append((step, part))
    assert seen == [("learn-tokens", "1")] + [("learn-query", p) for p in "1234"] + \
        [(s, p) for s, p in zip(STEP_IDS[2:], ["4"] * 4)]
    back = learn.on_nav(-1)("learn-query", "1", "demo-vit", sha, images[0], 3, 0, "patch", 3, 3, 1.0,
                            False, request("s-nav"))
    assert back[L.step] == "learn-tokens" and "image `" in back[L.tokens_step.outputs[-1]]


def test_rollout_start_layer_control_changes_the_map_like_the_library(page, images):
    """The "chain from layer" slider: rollout from layer 1 is the library's rollout(start_layer=1), and
    differs from rollout over every layer."""
    from attention.methods import compute_map
    session, model = "s-start", "demo-vit"
    out = page.on_model(model, images[0], View(), "demo-vit", request(session), no_progress)
    slider_ok(out[page.ui.start_layer], 4)
    view, sha = out[page.ui.view_state], out[page.ui.sha_state]
    args = ("rollout", 3, "mean", "auto", "inferno", 0.5, "blocky", "minmax", 0.0, False)
    full = page.on_start_layer(0, *args, view, sha, model, images[0], request(session), no_progress)
    late = page.on_start_layer(1, *args, view, sha, model, images[0], request(session), no_progress)
    assert late[page.ui.view_state].start_layer == 1 and full[page.ui.view_state].start_layer == 0
    assert not np.array_equal(np.asarray(full[page.ui.heatmap]), np.asarray(late[page.ui.heatmap]))
    analysis = page.cb.find(session, model, sha)
    ref1 = compute_map("rollout", analysis.result, start_layer=1, end_layer=3).maps
    ref0 = compute_map("rollout", analysis.result, start_layer=0, end_layer=3).maps
    assert not np.allclose(ref0.numpy(), ref1.numpy())
