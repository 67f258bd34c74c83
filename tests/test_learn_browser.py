"""The Learn tab walked through in headless Chromium, as a teacher would: open the tab, click a patch,
move the temperature slider, use the keyboard, open every step, start and stop a short training.

One server (``python app.py --model demo-vit``) and one page for the module; tests run in file order.
Screenshots go to $VIZ_APP_SCREENSHOTS when set (the README's docs/screenshots/).
"""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from attention.demo.shapes import CLASS_NAMES, make_sample
from browser_support import MARKS, app_page, src, wait_idle, wait_new_src

LABEL = CLASS_NAMES.index("star")

pytestmark = MARKS


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    from viz_app.testing import served_app
    img, _, _ = make_sample(np.random.default_rng(11), 64, LABEL)
    path = tmp_path_factory.mktemp("upload") / "star.png"
    Image.fromarray(img).save(path)
    with served_app("--model", "demo-vit") as url, app_page(url, path, accept_downloads=True) as pg:
        yield pg

def number(pg, elem_id: str) -> float:
    return float(pg.locator(f"#{elem_id} input[type=number]").input_value())


def set_number(pg, elem_id: str, value) -> None:
    box = pg.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")


def test_open_the_learn_tab_shows_the_tokens(page, shots):
    page.get_by_role("tab", name="Learn", exact=True).click()
    page.wait_for_selector("#learn-tokens-img img")
    page.wait_for_function("() => document.querySelector('#learn-tokens-md').innerText.includes('65 tokens')")
    wait_idle(page)
    shots(page, "learn_tokens", full_page=True)


def show_part(pg, label: str) -> None:
    """Step 2 shows one of its four parts at a time (projector layout): pick one."""
    pg.locator("#learn-part").get_by_label(label).check()
    pg.wait_for_function("(p) => document.querySelector('#learn-query-pane').dataset.show === p",
                         arg=label.split()[0])


def test_one_query_numbers_match_the_captured_attention(page, shots):
    page.get_by_role("tab", name="2 · One query").click()
    show_part(page, "3 weights")
    page.wait_for_selector("#learn-step3-img img")
    page.wait_for_function("() => document.querySelector('#learn-step3-md').innerText.includes('max difference')")
    text = page.locator("#learn-step3-md").inner_text()
    diff = float(re.search(r"max difference\s*([0-9.eE+-]+)", text).group(1).rstrip("."))
    assert diff < 1e-5, text
    assert "exactly the model's attention" in text


def test_click_a_patch_sets_the_query(page, shots):
    old = src(page, "#learn-step1-img img")
    img = page.locator("#learn-pick img")
    box = img.bounding_box()
    natural = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    # the picture keeps its aspect ratio inside the element: find its drawn area
    scale = min(box["width"] / natural[0], box["height"] / natural[1])
    w, h = natural[0] * scale, natural[1] * scale
    x0, y0 = box["x"] + (box["width"] - w) / 2, box["y"] + (box["height"] - h) / 2
    page.mouse.click(x0 + w * (6.5 / 8), y0 + h * (1.5 / 8))          # cell (row 1, col 6) of the 8x8 grid
    page.wait_for_function("() => document.querySelector('#learn-row input[type=number]').value === '1' && "
                           "document.querySelector('#learn-col input[type=number]').value === '6'")
    wait_new_src(page, "#learn-step1-img img", old)
    page.wait_for_function("() => document.querySelector('#learn-step1-md').innerText.includes('patch (1, 6)')")


def test_temperature_slider_changes_the_weights_not_the_scores(page, shots):
    wait_idle(page)
    scores, weights = src(page, "#learn-step1-img img"), src(page, "#learn-step3-img img")
    set_number(page, "learn-temperature", 0.3)
    wait_new_src(page, "#learn-step3-img img", weights)
    page.wait_for_function("() => document.querySelector('#learn-step3-md').innerText.includes('not')")
    page.wait_for_function("() => document.querySelector('#learn-step2-md').innerText.includes('0.3')")
    assert src(page, "#learn-step1-img img") == scores      # scores do not depend on T
    wait_idle(page)
    shots(page, "learn_query", full_page=True)
    set_number(page, "learn-temperature", 1)
    page.wait_for_function("() => document.querySelector('#learn-step3-md').innerText.includes('exactly')")


def test_one_click_exports_a_figure_as_png(page, tmp_path):
    wait_idle(page)
    page.locator("#learn-step3-img").hover()
    button = page.locator("#learn-step3-img").get_by_role("button", name=re.compile("download", re.I))
    if button.count() == 0:
        button = page.locator("#learn-step3-img a[download]")
    with page.expect_download() as info:
        button.first.click()
    path = tmp_path / "figure.png"
    info.value.save_as(path)
    shown = page.request.get(src(page, "#learn-step3-img img")).body()
    saved = Image.open(path)
    assert saved.format == "PNG" and saved.size[0] > 400
    assert np.array_equal(np.asarray(saved.convert("RGB")), np.asarray(Image.open(io.BytesIO(shown)).convert("RGB")))


def test_keyboard_moves_the_query_patch(page):
    wait_idle(page)
    row, col = number(page, "learn-row"), number(page, "learn-col")
    page.locator("#learn-step3-md").click()               # focus outside any text field
    page.keyboard.press("Shift+ArrowLeft")
    page.wait_for_function(f"() => document.querySelector('#learn-col input[type=number]').value === '{int(col) - 1}'")
    page.keyboard.press("Shift+ArrowDown")
    page.wait_for_function(f"() => document.querySelector('#learn-row input[type=number]').value === '{int(row) + 1}'")
    page.wait_for_function(f"() => document.querySelector('#learn-step1-md').innerText.includes("
                           f"'patch ({int(row) + 1}, {int(col) - 1})')")


def test_heads_layers_and_special_tokens(page, shots):
    page.get_by_role("tab", name="3 · Heads").click()
    page.wait_for_selector("#learn-heads-img img")
    page.wait_for_function("() => document.querySelector('#learn-heads-md').innerText.includes('most local')")
    wait_idle(page)
    shots(page, "learn_heads", full_page=True)
    page.get_by_role("tab", name="4 · Layers").click()
    page.wait_for_selector("#learn-layers-img img")
    page.wait_for_function("() => document.querySelector('#learn-layers-md').innerText.includes('no identity')")
    wait_idle(page)
    shots(page, "learn_layers", full_page=True)
    page.get_by_role("tab", name="5 · Special tokens").click()
    page.wait_for_selector("#learn-prefix-img img")
    page.wait_for_selector("#learn-norms-img img")


def test_presenter_mode_enlarges_text(page):
    page.get_by_role("tab", name="2 · One query").click()
    md = page.locator("#learn-step2-md p").first
    before = float(md.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))
    page.locator("#presenter input[type=checkbox]").check()
    page.wait_for_function("() => document.body.classList.contains('presenter')")
    after = float(md.evaluate("e => parseFloat(getComputedStyle(e).fontSize)"))
    assert after > 1.2 * before
    assert not page.locator("#input-column").is_visible()
    page.locator("#presenter input[type=checkbox]").uncheck()
    page.wait_for_function("() => !document.body.classList.contains('presenter')")
    assert page.locator("#input-column").is_visible()


def bar_percent(pg) -> float:
    return float(pg.locator("#learn-train-bar [role=progressbar]").get_attribute("aria-valuenow"))


def test_watch_it_learn_start_stop_save_and_use(page, shots):
    page.get_by_role("tab", name="6 · Train").click()
    set_number(page, "learn-train-steps", 400)
    page.locator("#learn-train-start").click()
    page.wait_for_function("() => document.querySelector('#learn-train-md').innerText.includes('running')")
    page.wait_for_selector("#learn-train-probes img")
    # a few timer ticks later: training has moved on, the bar and the curves follow
    page.wait_for_function("() => { const m = document.querySelector('#learn-train-md').innerText.match(/step (\\d+) \\/ 400/);"
                           " return m && +m[1] >= 20; }")
    page.wait_for_selector("#learn-train-curves img")
    assert bar_percent(page) > 0

    # the other tabs keep answering while it trains
    page.get_by_role("tab", name="Attention", exact=True).click()
    old = src(page, "#heatmap img")
    set_number(page, "layer", 2)
    wait_new_src(page, "#heatmap img", old)
    page.wait_for_function("() => document.querySelector('#caption').innerText.includes('through layer 2')")
    page.get_by_role("tab", name="Learn", exact=True).click()
    page.get_by_role("tab", name="6 · Train").click()
    assert "running" in page.locator("#learn-train-md").inner_text()

    page.locator("#learn-train-stop").click()
    page.wait_for_function("() => document.querySelector('#learn-train-md').innerText.includes('stopped')")
    text = page.locator("#learn-train-md").inner_text()
    step = int(re.search(r"step (\d+) / 400", text).group(1))
    assert 0 < step < 400, text
    page.wait_for_timeout(3000)                   # stopped for good: the step count no longer moves
    assert f"step {step} / 400" in page.locator("#learn-train-md").inner_text()
    assert bar_percent(page) == pytest.approx(100 * step / 400, abs=1)
    page.locator("#learn-train-save").click()
    page.wait_for_function("() => document.querySelector('#learn-train-md').innerText.includes('Saved as')")
    page.wait_for_function("() => document.querySelector('#model input').value.includes('trained here')")
    assert f"({step} steps)" in page.locator("#model input").input_value()


def test_one_run_at_a_time_and_closing_a_tab_frees_the_slot(page):
    other = page.context.new_page()                 # a second browser tab: its own session
    other.goto(page.url)
    other.wait_for_selector("#input-image input[type=file]", state="attached")
    for pg in (other, page):
        pg.get_by_role("tab", name="Learn", exact=True).click()
        pg.get_by_role("tab", name="6 · Train").click()
    other.locator("#learn-train-start").click()
    other.wait_for_function("() => document.querySelector('#learn-train-md').innerText.includes('running')")
    page.locator("#learn-train-start").click()
    page.wait_for_selector(".toast-body:has-text('another browser tab is training')")
    assert "running" not in page.locator("#learn-train-md").inner_text()
    other.close()                                    # the tab goes: its run stops, the slot frees
    for _ in range(20):
        page.wait_for_timeout(1000)
        page.locator("#learn-train-start").click()
        page.wait_for_timeout(800)
        if "running" in page.locator("#learn-train-md").inner_text():
            break
    else:
        raise AssertionError("closing the training tab did not free the training slot")
    page.locator("#learn-train-stop").click()
    page.wait_for_function("() => document.querySelector('#learn-train-md').innerText.includes('stopped')")
