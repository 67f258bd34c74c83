"""The page's handlers without a browser, through the page's own event wrapper (`Events.call`: inputs by name,
the followers after a model or image change), on every bundled model: control ranges the browser accepts,
captions that name their image and model, failures that leave the page usable, a layer chosen for one model
that does not leak into another, and a Learn tab that follows the image and model."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from attention.demo.shapes import CLASS_NAMES, make_sample
from attention.models import demo_names
from viz_app import inputs
from viz_app.callbacks import Callbacks, pixels_sha256
from viz_app.learn import opener
from viz_app.learn.steps import step_named, steps
from viz_app.models import ModelManager
from viz_app.page import Page
from viz_app.state import SessionStore
from viz_app.tabs import attention

MODELS = ["demo-vit", "demo-torch-vit", "demo-cnn-selfattn", "demo-cnn-attnpool"]
pytestmark = pytest.mark.skipif(not set(MODELS) <= set(demo_names()), reason="bundled demo models missing")

PROVENANCE = re.compile(r"image `([0-9a-f]{8})`(?: \([^)]*\))? · model `([^`]+)`")


@pytest.fixture(scope="module")
def app():
    from viz_app.ui import build_demo
    return build_demo(Callbacks(ModelManager(max_models=4), SessionStore()), default_model="demo-vit")


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


def with_image(app, image: str, session: str, model: str = "demo-vit") -> dict:
    ev = app.viz_events
    page = ev.call(inputs.on_model, Page("demo-vit"), session, model_dd=model)["page"]
    return ev.call(inputs.on_image, page, session, image_in=image)


@pytest.mark.parametrize("model", MODELS)
def test_every_model_gets_valid_controls_and_a_captioned_picture(app, images, model):
    session = f"s-{model}"
    out = with_image(app, images[0], session, model)
    page = out["page"]
    analysis = app.viz_callbacks.find(session, model, sha_of(images[0]))
    assert page.key == (model, analysis.image_sha)
    n_layers = len([m for m in analysis.result.maps if m.is_spatial])
    slider_ok(out["layer"], n_layers)
    assert provenance_of(out["caption"]) == (analysis.image_sha[:8], model)
    assert provenance_of(out["status_md"]) == (analysis.image_sha[:8], model)
    assert out["heatmap"].ndim == 3
    methods = [k for _, k in out["method"]["choices"]]
    assert out["method"]["value"] in methods
    if n_layers < 2:                        # rollout needs a stack of layers: not offered, and the note says why
        assert "rollout" not in methods and "Not offered" in out["notes_md"]
    heads = analysis.result.maps[-1].num_heads
    for side in ("a", "b"):                 # Compare offers this model's heads, no more
        assert [v for _, v in out[f"cmp_{side}_head"]["choices"]] == ["mean", "max", "min"] + [str(i) for i in range(heads)]
    labels = [label for label, _ in out["query"]["choices"]]
    assert len(labels) == len(set(labels)) and not ("CLS (default)" in labels and "CLS" in labels)


def test_a_model_that_fails_to_load_keeps_the_previous_one(app, images):
    before = with_image(app, images[0], "s-fail")["page"]
    out = app.viz_events.call(inputs.on_model, before, "s-fail", model_dd="no_such_model_xyz")
    assert out["page"] == before and out["model_dd"]["value"] == "demo-vit"
    assert "heatmap" not in out              # nothing else changes: no empty picture, no Error badge


def test_a_failed_load_my_model_leaves_everything_usable(app, images, tmp_path):
    bad = tmp_path / "broken.pth"
    bad.write_bytes(b"this is not a checkpoint")
    before = with_image(app, images[0], "s-custom", "demo-cnn-selfattn")["page"]
    out = app.viz_events.call(inputs.on_custom, before, "s-custom", arch_dd="demo-vit", ckpt_file=str(bad),
                              ckpt_path="", labels_file=None, live_cb=False)
    assert out["page"] == before and set(out) <= {"page", "skipped"}     # nothing changed; the toast said why


def test_an_undefined_view_is_a_message_not_an_exception(app, images):
    """Rollout on a one-layer CNN: a warning and no update (Gradio would badge every output on an exception)."""
    page = with_image(app, images[0], "s-undef", "demo-cnn-attnpool")["page"]
    values = dict(method="rollout", head="mean", query="auto", cmap="inferno", alpha=0.5, mode="smooth",
                  norm="minmax", mass=0.0, contour=False)
    out = app.viz_events.call(attention.on_controls, page, "s-undef", **values)
    assert out["page"].view.method != "rollout" or out.get("skipped")


def test_a_layer_chosen_for_one_model_is_not_applied_to_another(app, images):
    """The caption defect: opacity changed, a layer chosen on demo-vit, then another model: that model shows its
    own last layer (its default), and the chosen layer comes back with demo-vit."""
    session = "s-layer"
    page = with_image(app, images[0], session)["page"]
    ev = app.viz_events
    page = ev.call(attention.on_layer, page, session, layer=1)["page"]
    values = dict(method="rollout", head="mean", query="auto", cmap="inferno", alpha=0.3, mode="smooth",
                  norm="minmax", mass=0.0, contour=False)
    page = ev.call(attention.on_controls, page, session, **values)["page"]
    out = ev.call(inputs.on_model, page, session, model_dd="demo-torch-vit")
    other = app.viz_callbacks.find(session, "demo-torch-vit", out["page"].sha)
    last = len(other.result.maps) - 1
    assert out["layer"]["value"] == last and f"through layer {last} of 0–{last}" in out["caption"]
    back = ev.call(inputs.on_model, out["page"], session, model_dd="demo-vit")
    assert back["layer"]["value"] == 1 and "through layer 1 of 0–3" in back["caption"]


@pytest.mark.parametrize("model", MODELS)
def test_learn_follows_image_and_model(app, images, model):
    """A new image (then the other model): every lesson control range comes from it, the step on screen is
    recomputed on it, every other step is cleared; no explanation names another image or model."""
    session = f"learn-{model}"
    ev = app.viz_events
    page = Page("demo-vit", tab="learn")
    for image, name in ((images[0], "demo-vit"), (images[1], "demo-vit"), (images[1], model)):
        for step in ("query", "heads", "tokens"):
            page = page.with_lesson(step=step, layer=7, head=5, row=7, col=7)
            if name != page.model:
                out = ev.call(inputs.on_model, page, session, model_dd=name)
            else:
                out = ev.call(inputs.on_image, page.with_(image=None, sha=None), session, image_in=image)
            page = out["page"]
            analysis = app.viz_callbacks.find(session, name, page.sha)
            spatial = [m for m in analysis.result.maps if m.is_spatial and m.layout.grid]
            if step == "query" and spatial and "learn_layer" in out:
                slider_ok(out["learn_layer"], len([m for m in analysis.result.maps if m.kind == "self"])
                          if hasattr(spatial[0], "kind") else out["learn_layer"]["maximum"] + 1)
                slider_ok(out["learn_row"], spatial[0].layout.grid[0])
                slider_ok(out["learn_col"], spatial[0].layout.grid[1])
            here = step_named(step)
            for name_, value in out.items():
                if isinstance(value, str) and "image `" in value and name_.startswith("learn_"):
                    assert provenance_of(value) == (analysis.image_sha[:8], analysis.model_key)
            for other in steps():
                if other is here or not other.needs_image:
                    continue
                for t in other.texts:
                    assert "Out of date" in out[t]
            assert all(("image `" in out[t]) or ("Not available" in out[t]) for t in here.texts), \
                [out[t] for t in here.texts]


def test_learn_before_an_image_is_a_message(app):
    out = app.viz_events.call(opener(step_named("query")), Page("demo-vit", tab="learn"), "s-empty")
    texts = [v for k, v in out.items() if k.startswith("learn_") and isinstance(v, str) and "Not available" in v]
    assert texts and all("Pick an image first" in t for t in texts)


def test_rollout_start_layer_control_changes_the_map_like_the_library(app, images):
    """The "chain from layer" slider: rollout from layer 1 is the library's rollout(start_layer=1), and
    differs from rollout over every layer."""
    from attention.methods import compute_map
    session, model = "s-start", "demo-vit"
    out = with_image(app, images[0], session, model)
    slider_ok(out["start_layer"], 4)
    ev, page = app.viz_events, out["page"]
    full = ev.call(attention.on_start_layer, page, session, start_layer=0)
    late = ev.call(attention.on_start_layer, page, session, start_layer=1)
    assert late["page"].view.start_layer == 1 and full["page"].view.start_layer == 0
    assert not np.array_equal(np.asarray(full["heatmap"]), np.asarray(late["heatmap"]))
    analysis = app.viz_callbacks.find(session, model, page.sha)
    ref1 = compute_map("rollout", analysis.result, start_layer=1, end_layer=3).maps
    ref0 = compute_map("rollout", analysis.result, start_layer=0, end_layer=3).maps
    assert not np.allclose(ref0.numpy(), ref1.numpy())
