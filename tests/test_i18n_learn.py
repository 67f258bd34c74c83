"""The Learn tab in Simplified Chinese, through the page's own handlers (`Events.call`, no browser): every text a
lesson handler returns is Chinese (no Latin word outside the allow-list, CJK present) with the English run's
numbers; the English page is unchanged; the language switch relabels every fixed text of the tab and redraws
the step on screen in the new language at the same place; the deck button writes the lesson of the page's
image, model, layer, head and query, in the page's language."""
from __future__ import annotations

import html as html_lib
import os
import re

import numpy as np
import pytest
from PIL import Image

from attention.demo.shapes import CLASS_NAMES, make_sample
from attention.i18n import t
from attention.lesson.deck import CHROMIUM, pdf_page_count
from tests.i18n_support import latin_words
from viz_app import inputs
from viz_app.callbacks import Callbacks
from viz_app.learn import navigator, on_key, opener
from viz_app.learn.deck import on_deck
from viz_app.learn.steps import step_named, steps
from viz_app.learn.steps.query import on_temperature
from viz_app.models import ModelManager
from viz_app.page import Page
from viz_app.state import SessionStore
from viz_app.training import describe

ZH = "zh-CN"
CJK = re.compile(r"[\u4e00-\u9fff]")
NUMBER = re.compile(r"(?<![A-Za-z_\\])-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


@pytest.fixture(scope="module")
def app():
    from viz_app.ui import build_demo
    return build_demo(Callbacks(ModelManager(max_models=3), SessionStore()), default_model="demo-vit")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    img, _, _ = make_sample(np.random.default_rng(5), 64, CLASS_NAMES.index("star"))
    path = tmp_path_factory.mktemp("learn-zh") / "star.png"
    Image.fromarray(img).resize((192, 192), Image.Resampling.NEAREST).save(path)
    return str(path)


def shown(app, photo: str, session: str, model: str = "demo-vit") -> Page:
    ev = app.viz_events
    page = ev.call(inputs.on_model, Page("demo-vit"), session, model_dd=model)["page"]
    return ev.call(inputs.on_image, page, session, image_in=photo)["page"]


def words_of(text: str) -> str:
    """What a reader reads: formulas ($$ … $$, $ … $) hold no words (`attention.lesson.explain`), code spans are
    names (the image's hash, the model)."""
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    return re.sub(r"\$[^$]*\$", " ", text)


def assert_chinese(text: str, where: str) -> None:
    assert CJK.search(text), (where, text)
    assert latin_words(words_of(text)) == set(), (where, latin_words(words_of(text)), text)


def numbers(text: str) -> list[float]:
    """The numbers a text states (formulas left out), in order of size (the languages order sentences apart)."""
    text = re.sub(r"`[^`]*`", " ", words_of(text))      # hashes in code spans
    return sorted(float(v) for v in NUMBER.findall(text))


def texts(out: dict) -> dict:
    return {k: v for k, v in out.items() if isinstance(v, str) and k.startswith("learn_")}


PLACE = dict(step="query", part="3", layer=2, head=1, token="patch", row=3, col=4)


def test_every_step_speaks_chinese_with_the_english_numbers(app, photo):
    """Each step opened on the same page and place in English and in Chinese: the Chinese texts have no English
    word and state the same numbers; the Chinese pictures are drawn in Chinese (not the English ones)."""
    page = shown(app, photo, "zh-steps").with_(tab="learn").with_lesson(**PLACE)
    ev = app.viz_events
    for step in steps():
        en = ev.call(opener(step), page, "zh-steps")
        zh = ev.call(opener(step), page.with_(lang=ZH), "zh-steps")
        assert zh["page"].lesson == en["page"].lesson and zh["page"].lang == ZH
        assert texts(zh).keys() == texts(en).keys() and texts(zh), step.id
        for name, text in texts(zh).items():
            assert_chinese(text, f"{step.id}:{name}")
            assert latin_words(words_of(texts(en)[name]))         # (the English one is English)
            assert numbers(text) == pytest.approx(numbers(texts(en)[name])), (step.id, name, text)
        for name in step.pictures:
            if isinstance(en.get(name), np.ndarray):
                assert zh[name].ndim == 3 and (zh[name].shape != en[name].shape
                                               or not np.array_equal(zh[name], en[name])), (step.id, name)


def test_the_english_page_is_unchanged(app, photo):
    """English: the model's own numbers in the sentences the browser tests read."""
    page = shown(app, photo, "en-page").with_(tab="learn").with_lesson(**PLACE)
    out = app.viz_events.call(opener(step_named("query")), page, "en-page")
    assert "Most weight: patch (" in out["learn_step3_md"] and "max difference **" in out["learn_step3_md"]
    assert "query i = patch (3, 4)" in out["learn_step1_md"]
    assert f"*Computed on image `{page.sha[:8]}` (star.png) · model `demo-vit`.*" in out["learn_step1_md"]
    assert not CJK.search("".join(texts(out).values()))


def test_temperature_picker_and_navigation_answer_in_chinese(app, photo):
    ev = app.viz_events
    page = shown(app, photo, "zh-temp").with_(tab="learn", lang=ZH).with_lesson(**PLACE)
    out = ev.call(on_temperature, page, "zh-temp", learn_temperature=0.3)
    assert_chinese(out["learn_step2_md"], "T=0.3")
    assert_chinese(out["learn_step3_md"], "T=0.3")
    assert "T = 0.3" in out["learn_step3_md"] and out["page"].lesson.temperature == 0.3
    out = ev.call(navigator(+1), page.with_lesson(part="4"), "zh-temp")      # step 2's last part -> step 3
    assert out["page"].lesson.step == "heads"
    assert_chinese(out["learn_heads_md"], "next")


def test_failures_and_no_image_are_said_in_chinese(app, photo):
    ev = app.viz_events
    empty = Page("demo-vit", tab="learn", lang=ZH)
    out = ev.call(opener(step_named("query")), empty, "zh-empty")
    assert all(t("app.pick_an_image", ZH) in v for v in texts(out).values())
    for v in texts(out).values():
        assert_chinese(v, "no image")
    followed = ev.call(on_key, empty, "zh-empty")           # a switch before any image: the query menu too
    assert followed["learn_token"]["choices"] == [(t("app.learn.token_patch", ZH), "patch")]
    page = shown(app, photo, "zh-cnn", "demo-cnn-selfattn").with_(tab="learn", lang=ZH)
    for step_id in ("tokens", "query", "heads", "layers", "special"):
        out = ev.call(opener(step_named(step_id)), page, "zh-cnn")
        for name, v in texts(out).items():
            assert_chinese(v, f"cnn:{step_id}:{name}")
    out = ev.call(opener(step_named("query")), page, "zh-cnn")
    assert out["learn_step1_md"].startswith("**此处不可用。**")


def language_handler(app):
    """The page's language switch handler (bound by `viz_app.ui`)."""
    for block_fn in app.fns.values():
        fn = getattr(block_fn.fn, "page_handler", None)
        if fn is not None and fn.__name__ == "on_language":
            return fn
    raise AssertionError("no language switch handler")


def learn_components(app) -> list[str]:
    ui = app.viz_ui
    return [n for n in ui.names() if str(getattr(ui[n], "elem_id", "") or "").startswith(("learn", "presenter"))]


def test_the_switch_relabels_the_learn_tab_and_keeps_the_lessons_place(app, photo):
    """English -> Chinese -> English on step 2, part 3, layer 2, head 1, patch (3, 4): every fixed text of the
    Learn tab relabelled (no English left in Chinese), the step on screen redrawn by the follower in the new
    language at the same place, and the English text back exactly as it was."""
    ev = app.viz_events
    switch = language_handler(app)
    page = shown(app, photo, "zh-switch").with_(tab="learn").with_lesson(**PLACE, temperature=0.5)
    before = ev.call(on_key, page, "zh-switch")
    out = ev.call(switch, page, "zh-switch", lang=ZH)
    new = out["page"]
    assert new.lang == ZH and new.lesson == page.lesson
    # (the switch's own relabelling: the followers' redraws may be merged into the same answer)
    mine = [n for n in learn_components(app) if isinstance(out.get(n), dict)]
    assert {"learn_prev", "learn_next", "learn_deck_btn", "presenter", "learn_part", "learn_layer",
            "learn_temperature", "learn_train_start", "learn_tokens_btn"} <= set(mine)
    for name in learn_components(app):                  # the pictures' labels too (drawn over by the redraw)
        for text in app.viz_ui[name].said.texts(ZH).values() if hasattr(app.viz_ui[name], "said") else ():
            if isinstance(text, str):
                assert latin_words(text) == set(), (name, text)
    for name in mine:
        update = out[name]
        said_props = getattr(getattr(app.viz_ui[name], "said", None), "props", {"label": None, "info": None})
        for prop in said_props:                         # (a menu's or a slider's value is no text)
            if isinstance(update.get(prop), str) and update[prop]:       # ("": the deck's message cleared)
                assert_chinese(update[prop], f"{name}.{prop}")
        for label, _ in update.get("choices") or []:        # ("2 softmax": softmax is not translated)
            assert latin_words(label) == set(), (name, label)
    assert [v for _, v in out["learn_part"]["choices"]] == ["1", "2", "3", "4", "slide"]   # values stay
    tab_titles = [out[n]["label"] for n in out if n.startswith("said_") and "label" in out[n]]
    assert t("app.tab.learn", ZH) in tab_titles and t("app.learn.step_query", ZH) in tab_titles

    after = ev.call(on_key, new, "zh-switch")                   # the follower after the switch
    assert after["page"].lesson == page.lesson
    for name in ("learn_step1_md", "learn_step2_md", "learn_step3_md", "learn_step4_md"):
        assert_chinese(after[name], name)
        assert numbers(after[name]) == pytest.approx(numbers(before[name]))
    assert after["learn_layer"]["value"] == 2 and after["learn_head"]["value"] == 1
    assert after["learn_row"]["value"] == 3 and after["learn_col"]["value"] == 4
    assert after["learn_temperature"]["value"] == 0.5
    assert after["learn_heads_md"] == t("app.learn.stale", ZH)          # the steps not on screen: cleared

    back = ev.call(switch, after["page"], "zh-switch", lang="en")
    again = ev.call(on_key, back["page"], "zh-switch")
    assert back["learn_prev"]["value"] == "◀ Previous" and again["page"].lesson == page.lesson
    assert {k: again[k] for k in texts(before)} == texts(before)        # English exactly as before


def test_training_status_in_chinese(app):
    """Step 6's status and pictures of a real (short) run, in Chinese."""
    from attention.lesson.learning_pictures import curves_picture
    from viz_app.training import TrainingRoom
    assert_chinese(describe(None, ZH), "no run")
    room = TrainingRoom(app.viz_callbacks.manager)
    room.start("zh-train", 20)
    st = room.run_of("zh-train").wait(120)
    assert st.status == "finished"
    zh, en = describe(st, ZH), describe(st, "en")
    assert_chinese(zh, "finished")
    assert "已完成" in zh and "step 20 / 20" in en and "第 20 / 20 步" in zh
    assert numbers(zh.replace("：", " ")) == pytest.approx(numbers(en))
    assert not np.array_equal(curves_picture(st, lang=ZH), curves_picture(st))


# ------------------------------------------------------------------------------------------- the deck

def footer_of(deck_html: str) -> str:
    return html_lib.unescape(re.search(r'<div class="footer"><span>(.*?)</span>', deck_html).group(1))


@pytest.mark.parametrize("lang", ["en", ZH])
def test_the_deck_button_writes_the_lesson_at_the_pages_place(app, photo, lang):
    """The deck written by the button states the page's image (sha256 of its pixels), model, layer, head and
    query, is in the page's language, quotes the same top weights as step 2's part 3 on the page, and its PDF
    has one page per slide."""
    ev = app.viz_events
    session = f"deck-{lang}"
    page = shown(app, photo, session).with_(tab="learn", lang=lang).with_lesson(**PLACE)
    out = ev.call(on_deck, page, session)
    files = out["learn_deck_files"]["value"]
    assert out["learn_deck_files"]["visible"] and files[0].endswith(f"star_demo-vit_{lang}.html")
    deck = open(files[0], encoding="utf-8").read()
    assert f'<html lang="{lang}">' in deck
    footer = footer_of(deck)
    assert footer == " · ".join([t("deck.footer_image", lang, image="star.png", sha=page.sha[:12]),
                                 t("deck.footer_model", lang, model="demo-vit"),
                                 t("deck.footer_choice", lang, layer=2, head=1,
                                   query=t("common.patch_rc", lang, r=3, c=4))])
    for key in ("explain.scores_title", "explain.heads_title", "explain.layers_title"):
        assert f"<h2>{html_lib.escape(t(key, lang))}</h2>" in deck
    step3 = ev.call(opener(step_named("query")), page, session)["learn_step3_md"]
    top = re.search(r"(?:Most weight|权重最大的是)[:：] ?(.*?)[.。]", step3).group(1)
    assert html_lib.escape(top) in deck                   # the same query: the same top weights
    md = out["learn_deck_md"]["value"]
    if lang == ZH:
        assert_chinese(md, "deck message")
    assert f"`{page.sha[:8]}`" in md and "`demo-vit`" in md
    n_slides = len(re.findall(r'<section class="slide"', deck))
    if os.path.exists(CHROMIUM):
        assert files[1].endswith(".pdf") and pdf_page_count(files[1]) == n_slides == 9
    else:
        assert len(files) == 1 and t("app.learn.deck_no_pdf", lang) in md


def test_the_deck_of_each_tab_is_its_own(app, photo):
    """Two browser tabs: two folders, each deck of its own page's query (a prefix token here); without an
    image, a message and no file."""
    ev = app.viz_events
    a = shown(app, photo, "deck-a").with_(tab="learn").with_lesson(layer=1, head=0, token="cls")
    b = shown(app, photo, "deck-b").with_(tab="learn", lang=ZH).with_lesson(layer=3, head=2, row=0, col=7)
    fa = ev.call(on_deck, a, "deck-a")["learn_deck_files"]["value"][0]
    fb = ev.call(on_deck, b, "deck-b")["learn_deck_files"]["value"][0]
    assert os.path.dirname(fa) != os.path.dirname(fb)
    assert footer_of(open(fa, encoding="utf-8").read()).endswith(
        t("deck.footer_choice", "en", layer=1, head=0, query="CLS"))
    assert footer_of(open(fb, encoding="utf-8").read()).endswith(
        t("deck.footer_choice", ZH, layer=3, head=2, query=t("common.patch_rc", ZH, r=0, c=7)))
    out = ev.call(on_deck, Page("demo-vit", tab="learn", lang=ZH), "deck-empty")
    assert out["learn_deck_files"]["visible"] is False
    assert out["learn_deck_md"]["value"] == t("app.learn.deck_no_image", ZH)
    # a new image or model: no deck of the old one stays offered
    cleared = ev.call(on_key, a, "deck-a")
    assert cleared["learn_deck_files"]["visible"] is False


# ------------------------------------------------------------------------------------------- in the browser

def _browser(test):
    from browser_support import MARKS
    for mark in MARKS:
        test = mark(test)
    return test


@_browser
def test_in_chromium_the_chinese_lesson_and_its_slides(photo, tmp_path):
    """Served as a user serves it, opened with ``?lang=zh-CN``: the Learn tab's texts (formulas aside) hold no
    English word, step 2 moves by the keyboard in Chinese, and the slides button offers the HTML and PDF, served
    by the page, the HTML in Chinese at the page's query."""
    from browser_support import app_page, wait_idle
    from viz_app.testing import served_app
    with served_app("--model", "demo-vit") as url, app_page(url + "?lang=zh-CN", photo) as pg:
        pg.get_by_role("tab", name=t("app.tab.learn", ZH), exact=True).click()
        pg.wait_for_function("() => document.querySelector('#learn-tokens-md').innerText.includes('65 个词元')")
        pg.get_by_role("tab", name=t("app.learn.step_query", ZH)).click()
        pg.wait_for_function("() => document.querySelector('#learn-step1-md').innerText.includes('图块 (')")
        wait_idle(pg)
        shown = pg.evaluate("""() => {
            const root = document.querySelector('#learn-tab');
            const copy = root.cloneNode(true);
            copy.querySelectorAll('.katex, .kbd-hidden, [style*="display: none"]').forEach(e => e.remove());
            document.body.appendChild(copy);
            const text = copy.innerText;
            copy.remove();
            return text; }""")
        assert CJK.search(shown)
        assert latin_words(shown) == set(), latin_words(shown)
        pg.locator("#learn-deck-btn").click()
        pg.wait_for_selector("#learn-deck-files a[href*='.html']", timeout=120_000)
        wait_idle(pg)
        href = pg.locator("#learn-deck-files a[href*='.html']").first.get_attribute("href")
        deck = pg.request.get(href if href.startswith("http") else url.rstrip("/") + "/" + href.lstrip("/")).text()
        assert '<html lang="zh-CN">' in deck and t("explain.scores_title", ZH) in deck
        row, col = (int(pg.locator(f"#learn-{k} input[type=number]").input_value()) for k in ("row", "col"))
        assert t("deck.footer_choice", ZH, layer=3, head=0, query=t("common.patch_rc", ZH, r=row, c=col)) in \
            html_lib.unescape(deck)
        assert_chinese(pg.locator("#learn-deck-md").inner_text(), "deck message")
        if os.path.exists(CHROMIUM):
            assert pg.locator("#learn-deck-files a[href*='.pdf']").count() == 1
