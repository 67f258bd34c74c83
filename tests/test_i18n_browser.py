"""The page in Simplified Chinese, in headless Chromium, served as a user serves it (``python app.py --random-init``).

- A browser that asks for Chinese gets the whole page in Chinese: every tab, opened and computed, holds no Latin
  word outside the allow-list (names such as ViT, CLS, softmax, q, k, v, model and file names; the model's own
  class names in the predictions are its data, not the page's words).
- The Chinese glyphs come from the packaged Noto Sans SC (never a system font): the font face is loaded in the
  page, and every character the page shows is in the cmap of the font that draws it (no tofu boxes).
- The switch changes the language live without losing the page (image, model, the layer chosen), writes
  ``?lang=`` into the address so a reload keeps it, and switches back.
"""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from attention.demo.shapes import CLASS_NAMES, make_sample
from attention.i18n import t
from attention.i18n.fonts import cjk_font_path, cmap_of, needs_cjk
from browser_support import ARGS, CHROMIUM, MARKS, screenshot_saver, wait_idle, wait_status
from tests.i18n_support import latin_words

pytestmark = MARKS

#: (tab title in Chinese, the button that computes it or None, the element whose text says it is done)
TABS = [("app.tab.attention", None, "#caption"), ("app.tab.grid", "#grid-btn", None),
        ("app.tab.compare", "#compare-btn", None), ("app.tab.diagnostics", "#diag-btn", None),
        ("app.tab.faithfulness", "#faith-btn", None), ("app.tab.downloads", "#prepare-downloads", None),
        ("app.tab.live", None, None), ("app.tab.learn", None, None)]


@pytest.fixture(scope="module")
def server():
    from viz_app.testing import served_app
    with served_app("--random-init") as url:
        yield url


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    img, _, _ = make_sample(np.random.default_rng(7), 64, CLASS_NAMES.index("cross"))
    path = tmp_path_factory.mktemp("zh") / "cross.png"
    Image.fromarray(img).save(path)
    return path


@pytest.fixture(scope="module")
def chromium():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


def open_page(chromium, url: str, locale: str, photo):
    context = chromium.new_context(viewport={"width": 1280, "height": 900}, locale=locale)
    pg = context.new_page()
    pg.set_default_timeout(90_000)
    pg.goto(url)
    pg.wait_for_selector("#heatmap img")
    pg.set_input_files("#input-image input[type=file]", str(photo))
    wait_status(pg, photo.name)
    return context, pg


def settle(pg) -> None:
    wait_idle(pg)
    pg.wait_for_timeout(400)
    wait_idle(pg)


def page_words(pg) -> str:
    """The text the page shows, without the model's class names (the predictions) and code."""
    return pg.evaluate("""() => {
        const skipped = [...document.querySelectorAll('#predictions, code, pre')];
        const before = skipped.map(e => e.style.display);
        skipped.forEach(e => { e.style.display = 'none'; });
        const text = document.body.innerText;          // the rendered text only (nothing hidden)
        skipped.forEach((e, i) => { e.style.display = before[i]; });
        return text; }""")


def no_error_badges(pg, where: str) -> None:
    badges = pg.eval_on_selector_all("[data-testid=status-tracker] .error",
                                     "es => es.filter(e => e.offsetParent !== null).map(e => e.innerText)")
    assert not badges, f"{where}: Error badges {badges}"


@pytest.mark.parametrize("locale, address", [("zh-CN", ""), ("en-US", "?lang=zh-CN")],
                         ids=["chinese-browser", "english-browser-lang-param"])
def test_a_chinese_page_has_every_tab_in_chinese_drawn_with_the_packaged_font(server, chromium, photo, tmp_path,
                                                                               locale, address):
    """A browser that asks for Chinese, or an English one sent to ``?lang=zh-CN`` (then Gradio's own widget words
    are said through the catalogue's ``gradio.*`` table too)."""
    context, pg = open_page(chromium, server + address, locale, photo)
    try:
        assert pg.locator("#lang-switch input[value='zh-CN']").is_checked()
        pg.wait_for_function("(t) => document.querySelector('#status').innerText.startsWith(t)",
                             arg=t("app.inputs.showing", "zh-CN", what="").strip())
        left = {}
        for key, button, done in TABS:
            title = t(key, "zh-CN")
            pg.get_by_role("tab", name=title, exact=True).first.click()
            if button:
                pg.locator(button).click()
            settle(pg)
            if done:
                pg.wait_for_function("(sel) => document.querySelector(sel).innerText.trim().length > 0", arg=done)
            no_error_badges(pg, title)
            pg.screenshot(path=str(tmp_path / f"zh_{key}.png"))
            words = latin_words(page_words(pg)) - set(CLASS_NAMES)     # the model's class names are its data
            if words:
                left[title] = sorted(words)
        assert not left, f"English left in the Chinese page: {left}"
        if address == "":          # the README's picture of the Chinese lesson: step 2 at 1280x720
            pg.set_viewport_size({"width": 1280, "height": 720})
            pg.get_by_role("tab", name=t("app.learn.step_query", "zh-CN"), exact=True).click()
            pg.wait_for_selector("#learn-pick img")
            settle(pg)
            pg.evaluate("() => window.scrollTo(0, document.querySelector('#main-tabs').getBoundingClientRect().top"
                        " + window.scrollY - 8)")
            screenshot_saver(tmp_path)(pg, "learn_zh")
            pg.set_viewport_size({"width": 1280, "height": 900})

        # the glyphs: the packaged face is loaded and draws the page's Chinese; every character is covered
        loaded = pg.evaluate("""async () => { await document.fonts.ready;
            return [...document.fonts].filter(f => f.family.replace(/["']/g, '') === 'Noto Sans SC')
                                      .map(f => f.status); }""")
        assert "loaded" in loaded, loaded
        assert pg.evaluate("() => document.fonts.check('16px \"Noto Sans SC\"', '注意力')")
        shown = page_words(pg)
        cjk = {ch for ch in shown if needs_cjk(ch)}     # (formulas' math italics are KaTeX's own fonts)
        assert len(cjk) > 50
        missing = {ch for ch in cjk if ord(ch) not in cmap_of(cjk_font_path())}
        assert not missing, f"characters the font has no glyph for (tofu): {sorted(missing)}"
    finally:
        context.close()


def test_the_switch_changes_the_language_live_and_keeps_the_page(server, chromium, photo):
    context, pg = open_page(chromium, server, "en-US", photo)
    try:
        assert pg.locator("#lang-switch input[value='en']").is_checked()
        # a view of this page: layer 1, a lower opacity
        layer = pg.locator("#layer input[type=number]")
        layer.fill("1")
        layer.press("Enter")
        pg.wait_for_function("() => document.querySelector('#caption').innerText.includes('layer 1')")
        status_en = pg.locator("#status").inner_text()
        sha = re.search(r"image ([0-9a-f]{8})", status_en).group(1)

        pg.locator("#lang-switch label", has_text="简体中文").click()
        pg.wait_for_function("(t) => document.querySelector('#layer').innerText.includes(t)",
                             arg=t("app.attention.layer", "zh-CN"))
        pg.wait_for_function("() => document.querySelector('#status').innerText.startsWith('正在显示')")
        settle(pg)
        no_error_badges(pg, "after the switch")
        assert sha in pg.locator("#status").inner_text()                 # the same image
        assert "demo-vit" in pg.locator("#status").inner_text()          # the same model
        assert layer.input_value() == "1"                                  # the layer chosen is kept
        assert "lang=zh-CN" in pg.url
        assert pg.evaluate("() => document.documentElement.lang") == "zh-CN"
        assert pg.get_by_role("tab", name=t("app.tab.learn", "zh-CN"), exact=True).count() >= 1

        # a reload keeps the language (the address says it), even in an English browser
        pg.reload()
        pg.wait_for_selector("#heatmap img")
        pg.wait_for_function("(t) => document.querySelector('#layer').innerText.includes(t)",
                             arg=t("app.attention.layer", "zh-CN"))
        assert pg.locator("#lang-switch input[value='zh-CN']").is_checked()

        pg.locator("#lang-switch label", has_text="English").click()
        pg.wait_for_function("() => document.querySelector('#layer').innerText.includes('Layer (0 = first)')")
        pg.wait_for_function("() => document.querySelector('#status').innerText.startsWith('Showing')")
        assert "lang=en" in pg.url
    finally:
        context.close()
