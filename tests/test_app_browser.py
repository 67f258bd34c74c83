"""The real app in headless Chromium (Debian's /usr/bin/chromium) through Playwright's sync API.

One server (``python app.py --model demo-vit``, HF_HUB_OFFLINE=1) and one page for the module; the
tests run in file order on the same analysed image. Screenshots go to a temporary folder, and also
to $VIZ_APP_SCREENSHOTS when set (the README's docs/screenshots/).
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
def server():
    from viz_app.testing import served_app
    with served_app("--model", "demo-vit") as url:
        yield url


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    img, _, _ = make_sample(np.random.default_rng(11), 64, LABEL)
    path = tmp_path_factory.mktemp("upload") / f"{CLASS_NAMES[LABEL]}.png"
    Image.fromarray(img).save(path)
    with app_page(server, path, height=1150, timeout_ms=60_000, accept_downloads=True) as pg:
        pg.wait_for_selector("#predictions [data-testid=label-output-value]")
        yield pg

def heatmap_pixels(pg) -> np.ndarray:
    """The pixels of the picture the heatmap element shows (the served PNG, exact)."""
    for attempt in range(10):
        url = src(pg, "#heatmap img")
        response = pg.request.get(url)
        try:
            return np.asarray(Image.open(io.BytesIO(response.body())).convert("RGB"), np.int16)
        except OSError:               # the picture was being replaced while it was fetched
            if attempt == 9:
                raise AssertionError(f"cannot read the heatmap at {url}: HTTP {response.status}") from None
            pg.wait_for_timeout(300)


def changed(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of pixels that differ visibly between two pictures of the same size."""
    assert a.shape == b.shape
    return float((np.abs(a - b).max(-1) > 8).mean())


def test_upload_predicts_the_shape(page, shots):
    top1 = page.locator("#predictions [data-testid=label-output-value]").inner_text().strip()
    assert top1 == CLASS_NAMES[LABEL]
    assert "Attention rollout" in page.locator("#caption").inner_text()
    wait_idle(page)
    shots(page, "main", full_page=True)


def test_layer_slider_and_head_change_the_heatmap(page, shots):
    before, old = heatmap_pixels(page), src(page, "#heatmap img")
    number = page.locator("#layer input[type=number]")
    number.fill("1")
    number.press("Enter")
    wait_new_src(page, "#heatmap img", old)
    page.wait_for_function("() => document.querySelector('#caption').innerText.includes('through layer 1')")
    after_layer, old = heatmap_pixels(page), src(page, "#heatmap img")
    assert changed(before, after_layer) > 0.02, "moving the layer slider must change the heatmap"

    page.locator("#method").get_by_label("Raw attention").check()
    wait_new_src(page, "#heatmap img", old)
    old = src(page, "#heatmap img")
    heads = {}
    for head in ("head 0", "head 1"):
        page.locator("#head input").click()
        page.get_by_role("option", name=head, exact=True).click()
        wait_new_src(page, "#heatmap img", old)
        page.wait_for_function(f"() => document.querySelector('#caption').innerText.includes('{head}')")
        heads[head], old = heatmap_pixels(page), src(page, "#heatmap img")
    assert changed(heads["head 0"], heads["head 1"]) > 0.02, "changing the head must change the heatmap"
    assert "layer 1" in page.locator("#caption").inner_text()
    shots(page.locator("#heatmap"), "heatmap_layer1_head1", for_readme=False)


def test_grid_opens_and_a_cell_opens_that_layer_and_head(page, shots):
    page.get_by_role("tab", name="Grid", exact=True).click()
    page.wait_for_selector("#grid img")
    wait_idle(page)
    shots(page, "grid", full_page=True)
    img = page.locator("#grid img")
    natural = img.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    box = img.bounding_box()
    layers, heads = (int(v) for v in re.search(r"(\d+) layers × (\d+) heads", page.locator("#grid-md").inner_text()).groups())
    assert layers >= 4 and heads >= 3
    # the sheet: 34 px row labels, 18 px column labels, layers x (heads + mean) cells, 2 px gaps
    cell = (natural[0] - 34) / (heads + 1) - 2
    x = 34 + 2 * (cell + 2) + cell / 2          # head 2
    y = 18 + 3 * (cell + 2) + cell / 2          # layer 3
    old = src(page, "#heatmap img")
    img.click(position={"x": x * box["width"] / natural[0], "y": y * box["height"] / natural[1]})
    page.wait_for_selector("#heatmap img", state="visible")
    wait_new_src(page, "#heatmap img", old)
    page.wait_for_function("() => document.querySelector('#caption').innerText.includes('layer 3')")
    caption = page.locator("#caption").inner_text()
    assert "Raw attention" in caption and "head 2" in caption


def test_click_on_a_patch_shows_the_query_view(page, shots):
    page.get_by_role("tab", name="Attention").click()
    old = src(page, "#heatmap img")
    box = page.locator("#heatmap img").bounding_box()
    page.locator("#heatmap img").click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.45})
    wait_new_src(page, "#heatmap img", old)
    page.wait_for_function("() => document.querySelector('#caption').innerText.includes('clicked patch')")
    assert "clicked patch" in page.locator("#query input").input_value()
    pic = heatmap_pixels(page)
    marker = (np.abs(pic - np.array([0, 255, 255])).sum(-1) < 60)
    assert marker.sum() > 20, "the clicked patch is marked"
    shots(page.locator("#heatmap"), "query_patch")


def test_clicking_a_class_explains_it(page):
    page.get_by_role("tab", name="Attention").click()
    second = page.locator("#predictions button.confidence-set").nth(1)
    name = second.locator("dt").inner_text().strip()
    old = src(page, "#heatmap img")
    second.click()
    wait_new_src(page, "#heatmap img", old)
    page.wait_for_function(f"() => document.querySelector('#caption').innerText.includes('for class {name}')")
    assert "Gradient-weighted" in page.locator("#caption").inner_text()
    assert page.locator("#method").get_by_label("Gradient-weighted (Chefer)").is_checked()


def test_compare_two_settings(page, shots):
    page.get_by_role("tab", name="Compare").click()
    page.locator("#compare-btn").click()
    page.wait_for_selector("#compare-a img")
    page.wait_for_selector("#compare-b img")
    wait_idle(page)
    a = np.asarray(Image.open(io.BytesIO(page.locator("#compare-a img").screenshot())).convert("L"), np.int16)
    b = np.asarray(Image.open(io.BytesIO(page.locator("#compare-b img").screenshot())).convert("L"), np.int16)
    assert a.shape != b.shape or np.abs(a - b).mean() > 0.5
    shots(page, "compare", full_page=True)


def test_diagnostics_and_faithfulness_tabs(page, shots):
    page.get_by_role("tab", name="Heads", exact=True).click()
    page.locator("#diag-btn").click()
    page.wait_for_function("() => document.querySelector('#diag-md').innerText.includes('layers')")
    wait_idle(page)
    shots(page, "diagnostics", full_page=True)
    page.get_by_role("tab", name="Faithfulness").click()
    page.locator("#faith-btn").click()
    page.wait_for_function("() => document.querySelector('#faith-md').innerText.includes('Deletion AUC')")
    assert "insertion AUC" in page.locator("#faith-md").inner_text()


def test_download_npz_follows_the_cli_contract(page, tmp_path):
    page.get_by_role("tab", name="Export", exact=True).click()
    page.locator("#prepare-downloads").click()
    link = page.locator("#downloads a[download$='.npz']")
    link.wait_for()
    with page.expect_download() as info:
        link.click()
    path = tmp_path / "export.npz"
    info.value.save_as(path)
    with np.load(path) as d:
        keys = set(d.files)
        layers = len(d["layer_names"])
    assert {"input", "logits", "layer_names", "num_prefix_tokens", "grid", "heatmap", "rollout"} <= keys
    assert layers >= 2 and {f"attn_{i:02d}" for i in range(layers)} <= keys
    assert page.locator("#downloads a[download$='_overlay.png']").count() == 1
    assert page.locator("#downloads a[download$='_grid.png']").count() == 1
    assert page.locator("#downloads a[download='star_demo-vit.npz']").count() == 1, "named after the upload"


def test_example_gallery_loads_an_image(page):
    page.get_by_role("tab", name="Attention").click()
    old = src(page, "#heatmap img")
    page.locator("#examples button.thumbnail-item").first.click()       # the first example: a circle
    wait_new_src(page, "#heatmap img", old)
    page.wait_for_selector("#predictions [data-testid=label-output-value]")
    assert "circle" in page.locator("#predictions").inner_text()


def test_a_model_that_cannot_load_leaves_the_previous_one_serving(page):
    page.locator("#model input").click()
    page.get_by_role("option", name="vit_base_patch16_224 (download needed)").click()
    toast = page.locator(".toast-body", has_text="not available")
    toast.first.wait_for()
    text = toast.first.inner_text()
    assert "still using demo-vit" in text
    assert "'Your own model'" in text and "--checkpoint" not in text      # the page's words, not the CLI's
    page.wait_for_function("() => document.querySelector('#model input').value.startsWith('demo-vit')")
    assert "Traceback" not in page.content()
