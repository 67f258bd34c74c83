"""The Learn tab's callbacks without a browser: sessions stay apart, the shown numbers are the model's,
one training run at a time, a saved lesson model serves the other tabs."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from attention.capture import capture
from attention.demo.shapes import CLASS_NAMES, make_sample
from attention.errors import UserError
from viz_app.callbacks import Callbacks
from viz_app.lesson import Lesson, QueryChoice, picker_cell, picker_picture
from viz_app.models import ModelManager
from viz_app.state import SessionStore
from viz_app.training import TrainingRoom


@pytest.fixture(scope="module")
def cb():
    return Callbacks(ModelManager(max_models=3), SessionStore())


def _photo(label: str, seed: int) -> Image.Image:
    img, _, _ = make_sample(np.random.default_rng(seed), 64, CLASS_NAMES.index(label))
    return Image.fromarray(img).resize((192, 192), Image.Resampling.NEAREST)


def test_query_steps_are_per_session_and_match_the_captured_map(cb):
    lesson = Lesson(cb)
    a = cb.analyse("tab-a", _photo("star", 1), "demo-vit")
    b = cb.analyse("tab-b", _photo("circle", 2), "demo-vit")
    choice = QueryChoice(layer=2, head=1, row=3, col=4)
    out_a = lesson.query_steps("tab-a", "demo-vit", a.image_sha, choice)
    out_b = lesson.query_steps("tab-b", "demo-vit", b.image_sha, choice)
    for out, an in ((out_a, a), (out_b, b)):
        diff = float(re.search(r"max difference \*\*([0-9.eE+-]+)\*\*", out[5]).group(1))
        assert diff < 1e-5
        # the top weight quoted in step 3 is the captured attention of that head / query
        lm = cb.manager.get("demo-vit")
        res = capture(lm.model, an.prepared.tensor)
        row = res.maps[2].weights[0, 1, 1 + 3 * 8 + 4]
        top = float(re.search(r"Most weight: patch \(\d+, \d+\) ([0-9.]+)%", out[5]).group(1))
        assert top == pytest.approx(100 * float(row.max()), abs=0.06)
    assert out_a[1] != out_b[1]                      # different images: different scores
    with pytest.raises(Exception, match="no longer in the cache"):
        lesson.query_steps("tab-b", "demo-vit", a.image_sha, choice)   # tab b never saw tab a's image


def test_step_3_text_quotes_the_weights_of_its_picture_at_every_temperature(cb):
    """Away from T = 1 the top weights quoted beside the weights picture are the re-normalised ones the
    picture shows, softmax(scores / (sqrt(d) T)) written out here, not the model's (T = 1)."""
    lesson = Lesson(cb)
    a = cb.analyse("tab-t", _photo("star", 1), "demo-vit")
    lm = cb.manager.get("demo-vit")
    res = capture(lm.model, a.prepared.tensor)
    row = res.maps[3].weights[0, 0, 1 + 1 * 8 + 6].double()
    scores = torch.log(row)                         # the scores up to a constant, so softmax(scores) = row
    for T in (1.0, 0.3, 2.0):
        out = lesson.query_steps("tab-t", "demo-vit", a.image_sha, QueryChoice(layer=3, head=0, row=1, col=6,
                                                                                temperature=T))
        quoted = [float(v) for v in re.findall(r"(?:patch \(\d+, \d+\)|CLS) ([0-9.]+)%", out[5].split("Check")[0])]
        want = torch.softmax(scores / T, -1).sort(descending=True).values[:3] * 100
        assert quoted == pytest.approx(want.tolist(), abs=0.06), T


def test_picker_click_maps_to_the_patch_under_it():
    view = np.zeros((64, 64, 3), np.uint8)
    pic = picker_picture(view, (8, 8), 2, 5)
    h, w = pic.shape[:2]
    for r, c in ((0, 0), (2, 5), (7, 7), (3, 6)):
        assert picker_cell((h, w), (8, 8), (c + 0.5) * w / 8, (r + 0.5) * h / 8) == (r, c)
    # the chosen patch is outlined in red
    y0, x0 = round(2 * h / 8), round(5 * w / 8)
    assert tuple(pic[y0 + 1, x0 + 1]) == (255, 45, 85)


def test_lesson_steps_for_other_models(cb):
    lesson = Lesson(cb)
    a = cb.analyse("tab-c", _photo("cross", 3), "demo-torch-vit")
    out = lesson.query_steps("tab-c", "demo-torch-vit", a.image_sha, QueryChoice(layer=-1, head=0, token="cls"))
    assert "query $i$ = CLS" in out[1]
    c = cb.analyse("tab-c", _photo("cross", 3), "demo-cnn-selfattn")
    with pytest.raises(Exception, match="covers plain"):
        lesson.query_steps("tab-c", "demo-cnn-selfattn", c.image_sha, QueryChoice())
    pic, pos, md = lesson.tokens("tab-c", "demo-cnn-selfattn", c.image_sha)
    assert "Not defined" in md and pic.ndim == 3


def test_one_training_run_at_a_time_and_save_and_use(cb):
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
    st = room.stop("teacher")
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


def test_lesson_results_count_in_the_session_cache_bytes(cb):
    lesson = Lesson(cb)
    a = cb.analyse("tab-m", _photo("square", 4), "demo-vit")
    bytes0, entry0 = cb.store.stats()["bytes"], a.nbytes()
    for layer in (0, 1):
        lesson.query_steps("tab-m", "demo-vit", a.image_sha, QueryChoice(layer=layer))
    projs = [a.derived[("lesson", "projections", k)] for k in (0, 1)]
    held = sum(t.element_size() * t.nelement() for p in projs for t in (p.q, p.k, p.v, p.captured))
    assert held > 0
    assert a.nbytes() - entry0 >= held                               # the entry measures what the lesson keeps
    assert cb.store.stats()["bytes"] - bytes0 == a.nbytes() - entry0  # and the store's bound sees it
    assert not any(isinstance(v, torch.Tensor) and v.numel() > 10 * projs[0].captured.numel()
                   for p in projs for v in vars(p).values())          # no whole capture kept per layer
