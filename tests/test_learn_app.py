"""The Learn tab's steps without a browser, through the page's own handlers (`Events.call`): sessions stay
apart, the shown numbers are the model's, every registered step draws or says why, one training run at a time,
a saved lesson model serves the other tabs."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from attention.capture import capture
from attention.demo.shapes import CLASS_NAMES, make_sample
from attention.errors import UserError
from viz_app import inputs
from viz_app.callbacks import Callbacks
from viz_app.learn import navigator, opener
from viz_app.learn.steps import step_named, steps
from viz_app.learn.steps.query import on_temperature, picker_cell, picker_picture
from viz_app.models import ModelManager
from viz_app.page import Page
from viz_app.state import SessionStore
from viz_app.training import TrainingRoom


@pytest.fixture(scope="module")
def app():
    from viz_app.ui import build_demo
    return build_demo(Callbacks(ModelManager(max_models=3), SessionStore()), default_model="demo-vit")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("learn")
    out = {}
    for label, seed in (("star", 1), ("circle", 2), ("cross", 3), ("square", 4)):
        img, _, _ = make_sample(np.random.default_rng(seed), 64, CLASS_NAMES.index(label))
        path = folder / f"{label}.png"
        Image.fromarray(img).resize((192, 192), Image.Resampling.NEAREST).save(path)
        out[label] = str(path)
    return out


def shown(app, photo: str, model: str = "demo-vit", session: str = "local") -> Page:
    """The page after choosing `model` and `photo`, as the browser would (the followers run too)."""
    ev = app.viz_events
    page = ev.call(inputs.on_model, Page("demo-vit"), session, model_dd=model)["page"]
    return ev.call(inputs.on_image, page, session, image_in=photo)["page"]


def open_step(app, page: Page, step_id: str, session: str = "local") -> dict:
    return app.viz_events.call(opener(step_named(step_id)), page.with_(tab="learn"), session)


def captured_row(app, page: Page, layer: int, head: int, token: int, session: str = "local") -> torch.Tensor:
    """The attention row recorded by an independent capture of the same input."""
    a = app.viz_callbacks.analysis_of(session, page.model, page.sha, page.image)
    res = capture(app.viz_callbacks.manager.get(page.model).model, a.prepared.tensor)
    return res.maps[layer].weights[0, head, token]


def test_every_registered_step_draws_on_the_page_and_signs_it(app, photos):
    page = shown(app, photos["star"])
    for step in steps():
        out = open_step(app, page, step.id)
        assert out["page"].lesson.step == step.id
        if not step.needs_image:
            continue
        for name in step.pictures:
            assert isinstance(out[name], np.ndarray) and out[name].ndim == 3, (step.id, name)
        for name in step.texts:
            assert f"image `{page.sha[:8]}`" in out[name] and "model `demo-vit`" in out[name], (step.id, name)


def test_query_steps_are_per_session_and_match_the_captured_map(app, photos):
    pages = {"tab-a": shown(app, photos["star"], session="tab-a"),
             "tab-b": shown(app, photos["circle"], session="tab-b")}
    texts = {}
    for session, page in pages.items():
        page = page.with_lesson(layer=2, head=1, row=3, col=4)
        out = open_step(app, page, "query", session)
        md = out["learn_step3_md"]
        assert float(re.search(r"max difference \*\*([0-9.eE+-]+)\*\*", md).group(1)) < 1e-5
        row = captured_row(app, page, 2, 1, 1 + 3 * 8 + 4, session)
        top = float(re.search(r"Most weight: patch \(\d+, \d+\) ([0-9.]+)%", md).group(1))
        assert top == pytest.approx(100 * float(row.max()), abs=0.06)
        texts[session] = out["learn_step1_md"]
    assert texts["tab-a"] != texts["tab-b"]                # different images: different scores
    store = app.viz_callbacks.store                       # neither session holds the other's analysis
    assert store.get("tab-a", "demo-vit", pages["tab-b"].sha) is None
    assert store.get("tab-b", "demo-vit", pages["tab-a"].sha) is None


def test_step_3_text_quotes_the_weights_of_its_picture_at_every_temperature(app, photos):
    """Away from T = 1 the top weights quoted beside the weights picture are the re-normalised ones the
    picture shows, softmax(scores / (sqrt(d) T)) written out here, not the model's (T = 1)."""
    page = shown(app, photos["star"], session="tab-t")
    row = captured_row(app, page, 3, 0, 1 + 1 * 8 + 6, "tab-t").double()
    scores = torch.log(row)                         # the scores up to a constant, so softmax(scores) = row
    ev = app.viz_events
    page = page.with_(tab="learn").with_lesson(step="query", layer=3, head=0, row=1, col=6)
    for T in (1.0, 0.3, 2.0):
        out = ev.call(on_temperature, page, "tab-t", learn_temperature=T)
        md = out["learn_step3_md"]
        quoted = [float(v) for v in re.findall(r"(?:patch \(\d+, \d+\)|CLS) ([0-9.]+)%", md.split("Check")[0])]
        want = torch.softmax(scores / T, -1).sort(descending=True).values[:3] * 100
        assert quoted == pytest.approx(want.tolist(), abs=0.06), T
        assert out["page"].lesson.temperature == T


def test_picker_click_maps_to_the_patch_under_it():
    view = np.zeros((64, 64, 3), np.uint8)
    pic = picker_picture(view, (8, 8), 2, 5)
    h, w = pic.shape[:2]
    for r, c in ((0, 0), (2, 5), (7, 7), (3, 6)):
        assert picker_cell((h, w), (8, 8), (c + 0.5) * w / 8, (r + 0.5) * h / 8) == (r, c)
    # the chosen patch is outlined in red
    y0, x0 = round(2 * h / 8), round(5 * w / 8)
    assert tuple(pic[y0 + 1, x0 + 1]) == (255, 45, 85)


def test_lesson_steps_for_other_models(app, photos):
    page = shown(app, photos["cross"], "demo-torch-vit", session="tab-c").with_lesson(token="cls")
    out = open_step(app, page, "query", "tab-c")
    assert "query i = CLS" in out["learn_step1_md"]
    page = shown(app, photos["cross"], "demo-cnn-selfattn", session="tab-c")
    out = open_step(app, page, "query", "tab-c")
    assert "Not available here" in out["learn_step1_md"] and "covers plain" in out["learn_step1_md"]
    out = open_step(app, page, "tokens", "tab-c")
    assert "Not defined" in out["learn_tokens_md"] and out["learn_tokens_img"].ndim == 3


def test_a_model_change_refits_the_query_and_clears_the_other_steps(app, photos):
    """The lesson follows the page: a layer kept where the new model has it, every other step cleared."""
    page = shown(app, photos["star"], session="tab-k").with_(tab="learn").with_lesson(step="query", layer=1,
                                                                                       row=7, col=7)
    out = app.viz_events.call(inputs.on_model, page, "tab-k", model_dd="demo-torch-vit")
    new = out["page"]
    assert new.model == "demo-torch-vit" and new.lesson.layer == 1
    n_layers = len(app.viz_callbacks.analysis_of("tab-k", new.model, new.sha, new.image).result.maps)
    assert out["learn_layer"]["maximum"] == n_layers - 1 and out["learn_layer"]["value"] == 1
    assert "model `demo-torch-vit`" in out["learn_step1_md"]             # the step on screen: redrawn
    assert out["learn_heads_img"] is None and "Out of date" in out["learn_heads_md"]   # the others: cleared


def test_previous_next_walk_through_every_step_and_part_in_order(app, photos):
    page = shown(app, photos["star"], session="tab-n").with_(tab="learn")
    ev, seen = app.viz_events, []
    for _ in range(len(steps()) + 5):
        out = ev.call(navigator(+1), page, "tab-n")
        page = out["page"]
        seen.append((page.lesson.step, page.lesson.part if page.lesson.step == "query" else ""))
    want = [("query", "1"), ("query", "2"), ("query", "3"), ("query", "4")] + \
        [(s.id, "") for s in steps()[2:]]
    assert seen[:len(want)] == want and seen[len(want):] == [want[-1]] * (len(seen) - len(want))
    for _ in range(len(steps()) + 5):
        page = ev.call(navigator(-1), page, "tab-n")["page"]
    assert page.lesson.step == steps()[0].id


def test_one_training_run_at_a_time_and_save_and_use(app):
    cb = app.viz_callbacks
    room = TrainingRoom(cb.manager)
    room.start("teacher", 400)
    with pytest.raises(UserError, match="another browser tab is training"):
        room.start("student", 50)
    assert room.state("student") is None               # nobody else sees the teacher's run
    with pytest.raises(UserError, match="still training"):
        room.start("teacher", 50)
    run = room.run_of("teacher")
    while run.state().step < 5:
        run.wait(0.2)
    room.stop("teacher")
    st = run.wait(30)
    assert st.status == "stopped" and 5 <= st.step < 400
    name = room.save("teacher")
    assert name in cb.manager.choices()
    served = cb.manager.get(name).model
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(served(x).numpy(), run.model()(x).numpy(), rtol=1e-5, atol=1e-6)
    room.start("student", 20)                          # the slot is free again
    assert room.run_of("student").wait(120).status == "finished"
    with pytest.raises(UserError, match="between"):
        room.start("student", 5)


def test_lesson_results_count_in_the_session_cache_bytes(app, photos):
    cb = app.viz_callbacks
    page = shown(app, photos["square"], session="tab-m")
    a = cb.analysis_of("tab-m", page.model, page.sha, page.image)
    bytes0, entry0 = cb.store.stats()["bytes"], a.nbytes()
    for layer in (0, 1):
        open_step(app, page.with_lesson(layer=layer), "query", "tab-m")
    projs = [a.derived[("lesson", "projections", k)] for k in (0, 1)]
    held = sum(t.element_size() * t.nelement() for p in projs for t in (p.q, p.k, p.v, p.captured))
    assert held > 0
    assert a.nbytes() - entry0 >= held                               # the entry measures what the lesson keeps
    assert cb.store.stats()["bytes"] - bytes0 == a.nbytes() - entry0  # and the store's bound sees it
    assert not any(isinstance(v, torch.Tensor) and v.numel() > 10 * projs[0].captured.numel()
                   for p in projs for v in vars(p).values())          # no whole capture kept per layer
