"""The page's language without a browser: where a tab's language comes from, every text a component is built with
exists in every catalogue, the switch relabels every component and keeps the page, and the page's own texts
(status, notice, model menu, target line, messages) are said in the page's language."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from attention.demo.shapes import CLASS_NAMES, make_sample
from attention.i18n import LANGUAGES, catalogue, t
from attention.i18n.fonts import needs_cjk
from attention.models import demo_names
from tests.i18n_support import latin_words
from viz_app import inputs, words
from viz_app.callbacks import Callbacks
from viz_app.models import ModelManager, choose_default
from viz_app.page import Page
from viz_app.state import SessionStore
from viz_app.tabs import attention

pytestmark = pytest.mark.skipif("demo-vit" not in demo_names(), reason="bundled demo models missing")


@pytest.fixture(scope="module")
def app():
    from viz_app.ui import build_demo
    return build_demo(Callbacks(ModelManager(max_models=2), SessionStore()), default_model="demo-vit")


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    img, _, _ = make_sample(np.random.default_rng(3), 64, CLASS_NAMES.index("star"))
    path = tmp_path_factory.mktemp("lang") / "star.png"
    Image.fromarray(img).save(path)
    return str(path)


def request(query=None, accept=None):
    return SimpleNamespace(query_params=query or {}, headers={"accept-language": accept} if accept else {})


# --------------------------------------------------------------------------- where the language comes from

@pytest.mark.parametrize("query, accept, default, expected", [
    ({"lang": "zh-CN"}, "en-US,en;q=0.9", "en", "zh-CN"),      # the URL wins over the browser
    ({"lang": "zh"}, None, "en", "zh-CN"),                      # a short tag
    ({}, "zh-Hans-CN,zh;q=0.9,en;q=0.8", "en", "zh-CN"),        # the browser's first language
    ({}, "fr-FR,zh-CN;q=0.8,en;q=0.5", "en", "zh-CN"),          # the first language there is a catalogue for
    ({}, "fr-FR,de;q=0.8", "zh-CN", "zh-CN"),                   # none: the server's --lang
    ({"lang": "klingon"}, "en-GB", "zh-CN", "en"),              # an unknown ?lang= falls back to the browser
    ({}, None, "en", "en"),
])
def test_a_tabs_language_comes_from_the_url_then_the_browser_then_the_server(query, accept, default, expected):
    assert words.language_of(request(query, accept), default) == expected


def test_the_server_language_is_checked_at_the_start(capsys):
    from viz_app.cli import main
    from viz_app.testing import free_port
    before = words.build_language()
    assert main(["--lang", "tlh", "--port", str(free_port())]) == 2       # refused before anything loads
    err = capsys.readouterr().err
    assert "unknown language 'tlh'" in err and "zh-CN" in err
    assert words.build_language() == before


# --------------------------------------------------------------------------- every said text in every language

def test_every_component_built_with_a_text_has_it_in_every_language(app):
    ui = app.viz_ui
    said = [n for n in ui.names() if getattr(ui[n], "said", None) is not None]
    assert len(said) >= 30, said                       # the page's labels, tabs, buttons, help texts
    en, zh = catalogue("en"), catalogue("zh-CN")
    for name in said:
        for lang in LANGUAGES:
            texts = ui[name].said.texts(lang)           # raises KeyError for a key missing in `lang`
            assert texts, name
        for prop, key in ui[name].said.props.items():
            if isinstance(key, str):
                assert key in en and key in zh, (name, prop, key)
        zh_texts = ui[name].said.texts("zh-CN")
        for prop, text in zh_texts.items():
            if prop == "choices":
                text = " ".join(label for label, _ in text)
            if isinstance(text, str) and text.strip():
                assert not latin_words(text), (name, prop, latin_words(text), text)


def test_the_switch_relabels_every_component_and_keeps_the_page(app, photo):
    events, ui = app.viz_events, app.viz_ui
    page = Page("demo-vit")
    page = events.call(inputs.on_image, page, "switch", image_in=photo)["page"]
    page = events.call(attention.on_layer, page, "switch", layer=1)["page"]
    before = page
    handler = next(fn for fn in (dep.page_handler for dep in _bound(app)) if fn.__name__ == "on_language")
    out = events.call(handler, page, "switch", lang="zh-CN")
    new = out["page"]
    assert new.lang == "zh-CN"
    # the page is kept: image, model, the layer chosen for this model, the view
    assert (new.model, new.sha, new.image, new.layers) == (before.model, before.sha, before.image, before.layers)
    assert new.view.layer == before.view.layer == 1
    relabelled = {n for n in ui.names() if getattr(ui[n], "said", None) is not None}
    assert relabelled <= set(out), relabelled - set(out)
    assert out["layer"]["label"] == t("app.attention.layer", "zh-CN")
    assert out["mode"]["choices"] == [("平滑", "smooth"), ("块状", "blocky")]       # values unchanged
    # the followers redrew the page in Chinese (the language is part of the page's key for them)
    assert needs_cjk(out["status_md"]) and "demo-vit" in out["status_md"]
    assert out["status_md"].startswith("正在显示")
    assert needs_cjk(out["target_md"])
    back = events.call(handler, new, "switch", lang="en")
    assert back["status_md"].startswith("Showing") and back["layer"]["label"] == "Layer (0 = first)"


def _bound(app):
    """Every handler bound on the page (the wrapped functions Gradio calls)."""
    for block_fn in app.fns.values():
        fn = getattr(block_fn, "fn", None)
        if getattr(fn, "page_handler", None) is not None:
            yield fn


def test_the_page_texts_are_said_in_the_pages_language(app, photo):
    events = app.viz_events
    zh = events.call(inputs.on_image, Page("demo-vit", lang="zh-CN"), "zh", image_in=photo)
    en = events.call(inputs.on_image, Page("demo-vit", lang="en"), "en", image_in=photo)
    assert zh["status_md"].startswith("正在显示") and en["status_md"].startswith("Showing")
    assert not latin_words(zh["status_md"])
    menu_zh = dict((v, k) for k, v in zh["model_dd"]["choices"])
    assert menu_zh["demo-vit"] == "demo-vit（随附，合成图形）"
    # the same picture: the language changes words, never numbers
    assert np.array_equal(zh["heatmap"], en["heatmap"])
    # no image: a Chinese refusal
    refused = events.call(attention.on_reset_target, Page("demo-vit", lang="zh-CN"), "zh2")
    assert refused.get("skipped")


def test_the_start_notice_is_said_again_in_each_language():
    name, notice = choose_default(probe=lambda: (False, words.Text("app.notice.hub_offline")))
    if not notice:
        pytest.skip("the default ImageNet model is cached here: no notice")
    en, zh = words.in_language(notice, "en"), words.in_language(notice, "zh-CN")
    assert en == str(notice) and "HF_HUB_OFFLINE=1" in en and "HF_HUB_OFFLINE=1" in zh
    assert needs_cjk(zh) and not latin_words(zh), latin_words(zh)


def test_a_message_that_names_its_text_is_said_in_the_pages_language():
    from viz_app.events import NoImage, message_of
    assert message_of(NoImage(), "zh-CN") == t("app.pick_an_image", "zh-CN")
    assert message_of(NoImage(), "en").startswith("Pick an image first")
    assert needs_cjk(message_of(MemoryError(), "zh-CN"))


def test_every_catalogue_text_is_used_by_the_code():
    """No dead entries: each key is written in the code, or begins with the fixed part of an f-string key
    (``f"app.tab.{tab.id}"``, ``f"method.{name}.label"``)."""
    import ast
    import pathlib
    root = pathlib.Path(__file__).resolve().parents[1]
    literals, prefixes = set(), set()
    for path in list((root / "attention").rglob("*.py")) + list((root / "viz_app").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                literals.add(node.value)
                if node.value.endswith(".") and node.value.count(".") == 1 and " " not in node.value:
                    prefixes.add(node.value)          # a family read by prefix (the page script's "gradio.")
            elif isinstance(node, ast.JoinedStr) and node.values and isinstance(node.values[0], ast.Constant):
                head = str(node.values[0].value)
                if "." in head:
                    prefixes.add(head)
    unused = [k for k in catalogue("en") if k not in literals and not any(k.startswith(p) for p in prefixes)]
    assert not unused, f"catalogue entries no code says: {unused}"
