"""The map methods' words in English and Simplified Chinese (#26, app half): every registered method's label,
title and summary, the account of what a map shows (`MapResult.words`), the reasons a method is not offered, the
head and query menus, and the app's captions — on real captures of random-init timm models (ViT, distilled DeiT,
registers, Swin, CaiT) and the bundled demo models. Chinese texts: CJK, no Latin word outside the allow-list,
the same numbers as the English ones; English texts: unchanged; a language switch: no map computed again."""
from __future__ import annotations

import re
from collections import Counter

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from attention.capture import capture
from attention.demo.models import build_model
from attention.demo.shapes import CLASS_NAMES, make_sample
from attention.errors import MethodNotDefinedError
from attention.i18n import catalogue, placeholders
from attention.methods import compute_map, get_method, menu, method_label, method_summary, method_title, methods
from attention.methods.layers import spatial_layers
from attention.methods.words import describe, phrase
from tests.i18n_support import latin_words

pytestmark = pytest.mark.usefixtures("single_intra_op_thread")

ZH = "zh-CN"
CJK = re.compile(r"[\u4e00-\u9fff]")


def numbers(text: str) -> Counter:
    return Counter(re.findall(r"\d+", text))


def chinese(text: str, *names: str) -> None:
    """`text` is Chinese: CJK, and no Latin word but the allowed ones (`names`: data such as class names)."""
    for name in names:
        text = text.replace(name, " ")
    assert CJK.search(text), text
    assert latin_words(text) == set(), text


def _make(name, **kw):
    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=7, **kw).eval()


MODELS = {
    "vit": (lambda: _make("vit_tiny_patch16_224", img_size=48, depth=3), 48),
    "deit": (lambda: _make("deit_tiny_distilled_patch16_224", img_size=48, depth=3), 48),
    "reg": (lambda: _make("vit_small_patch14_reg4_dinov2", img_size=42, depth=2, embed_dim=48, num_heads=2), 42),
    "swin": (lambda: _make("swin_tiny_patch4_window7_224", img_size=96, embed_dim=24, num_heads=(1, 2, 3, 4),
                           depths=(2, 2, 2, 2)), 96),
    "cait": (lambda: _make("cait_xxs24_224", img_size=48, depth=2, init_values=0.5), 48),
    "demo-cnn-attnpool": (lambda: build_model("demo-cnn-attnpool").eval(), 64),
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def captured(request):
    make, size = MODELS[request.param]
    model = make()
    x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return request.param, model, x, capture(model, x)


# ---------------------------------------------------------------------------- names

def test_every_registered_method_has_its_names_in_both_languages():
    en, zh = catalogue("en"), catalogue(ZH)
    for m in methods():
        # English: the class attributes, unchanged, and the catalogue says the same
        assert m.label_in("en") == method_label(m.name) == m.label
        assert m.title_in() == method_title(m.name, "en") == (m.title or m.label)
        assert m.summary_in("en") == method_summary(m.name) == m.summary
        assert en[f"method.{m.name}.label"] == m.label and en[f"method.{m.name}.summary"] == m.summary
        if m.title:
            assert en[f"method.{m.name}.title"] == m.title
        # Chinese: every name and summary in the catalogue, read by name or by method
        for field in ("label", "summary"):
            assert f"method.{m.name}.{field}" in zh, (m.name, field)
        label, title, summary = m.label_in(ZH), method_title(m.name, ZH), method_summary(m, ZH)
        assert label == zh[f"method.{m.name}.label"] and summary == zh[f"method.{m.name}.summary"]
        for text in (label, title):
            assert latin_words(text) == set(), text       # a name (Grad-CAM, AttnLRP) or Chinese
        chinese(summary)
        assert numbers(summary) == numbers(m.summary)     # years of the papers
        assert numbers(title) == numbers(m.title_in())


def test_method_help_in_both_languages():
    from viz_app.views import method_help
    en, zh = method_help(), method_help(lang=ZH)
    assert en == method_help("en")
    assert en.split("  \n")[0] == f"**{get_method('raw').label}**: {get_method('raw').summary}."
    assert "**Grad-CAM**: " in en and en.count(" — class-specific.") == sum(m.class_specific for m in methods())
    lines = zh.split("  \n")
    assert len(lines) == len(methods())
    for m, line in zip(methods(), lines):
        assert line.startswith(f"**{m.label_in(ZH)}**：") and (("针对特定类别" in line) == m.class_specific)
        chinese(line)


def test_the_catalogue_entries_of_the_methods_are_chinese_and_keep_their_placeholders():
    en, zh = catalogue("en"), catalogue(ZH)
    keys = [k for k in en if k.startswith(("method.", "app.views."))]
    assert len(keys) > 60
    names = {"method.menu.query.cls", "method.menu.query.dist", "method.gradcam.label", "method.attnlrp.label"}
    for k in keys:
        assert placeholders(en[k]) == placeholders(zh[k]), k
        bare = re.sub(r"\{[^}]*\}", " ", zh[k])
        assert latin_words(bare) == set(), (k, zh[k])
        if k not in names and re.search(r"\w", bare):       # words, not only placeholders and punctuation
            assert CJK.search(bare), k


# ---------------------------------------------------------------------------- what a map shows

def _views(result):
    n = len(spatial_layers(result))
    return [dict(layer=-1, head="mean", query="auto"), dict(layer=0, head="max", query="auto"),
            dict(layer=n - 1, head=0, query="patch_mean", start_layer=1 if n > 2 else None),
            dict(layer=-1, head="min", query=(1, 1)), dict(layer=-1, head="mean", query="cls"),
            dict(layer=-1, head="mean", query="prefix_mean", discard_ratio=0.5)]


def test_every_method_describes_its_map_in_both_languages(captured):
    name, model, x, result = captured
    offered, _ = menu.offered_methods(result)
    assert offered
    seen = 0
    for m in methods():
        if m.name not in offered:
            continue
        for view in _views(result):
            try:
                out = compute_map(m.name, result, model=model, x=x, end_layer=view["layer"] if m.uses_layer_range
                                  else None, **view)
            except (MethodNotDefinedError, ValueError, IndexError):
                continue                                  # a query this model has not (covered by test_methods)
            seen += 1
            assert out.words, m.name                      # every registered method gives its account as words
            en, zh = out.describe("en"), out.describe(ZH)
            assert en == out.description == describe(out.words)
            chinese(zh)
            assert numbers(zh) == numbers(en), (en, zh)
            # the facts behind the words: the layer shown, the range chained, the query patch
            if "layer" in out.details:
                assert f"第 {out.details['layer']} 层" in zh and f"layer {out.details['layer']} of" in en
            if "end_layer" in out.details:
                assert f"第 {out.details['end_layer']} 层" in zh
            if out.query_patch is not None:
                assert f"({out.query_patch[0]}, {out.query_patch[1]})" in zh
    assert seen >= 4, (name, seen)


def test_english_descriptions_are_the_ones_of_before():
    """Literal English accounts (the words before the catalogue), on a 3-layer ViT."""
    torch.manual_seed(0)
    model = _make("vit_tiny_patch16_224", img_size=48, depth=3)
    with torch.no_grad():
        r = capture(model, torch.randn(1, 3, 48, 48))
    assert compute_map("raw", r, layer=0, head="max").description == \
        "layer 0 of 0–2 (blocks.0.attn) · max over heads · default query"
    assert compute_map("raw", r, head=1, query=(1, 2)).description == \
        "layer 2 of 0–2 (blocks.2.attn) · head 1 · query patch (1, 2)"
    assert compute_map("rollout", r, start_layer=1, head=2, query="cls", discard_ratio=0.9).description == \
        "through layer 2 of 0–2, from layer 1 · mean over heads (rollout fuses the heads: mean used) · query CLS" \
        " · smallest 90% discarded"
    assert compute_map("received", r, head="min").description == \
        "layer 2 of 0–2 (blocks.2.attn) · min over heads · attention each position receives"
    assert compute_map("rollout", r, start_layer=1, head=2, query="cls", discard_ratio=0.9).describe(ZH) == \
        "第 1 层至第 2 层（共 0–2 层） · 对各头取平均值（注意力展开自行融合各头：使用平均值） · 查询 CLS · 舍弃最小的 90%"
    assert compute_map("raw", r, head=1, query=(1, 2)).describe(ZH) == \
        "第 2 层（共 0–2 层，`blocks.2.attn`） · 头 1 · 查询图块 (1, 2)"


def test_a_phrase_is_a_fact_a_cache_can_keep():
    p = phrase("method.words.fused", fusion=phrase("method.fusion.max"))
    assert hash(p) == hash(phrase("method.words.fused", fusion=phrase("method.fusion.max")))
    assert p.text() == "max over heads" and p.text(ZH) == "对各头取最大值"


# ---------------------------------------------------------------------------- menus and reasons

def test_reasons_a_method_is_not_offered_in_both_languages(captured):
    name, _, _, result = captured
    for has_classifier in (True, False):
        names, missing = menu.offered_methods(result, has_classifier)
        zh_names, zh_missing = menu.offered_methods(result, has_classifier, lang=ZH)
        assert zh_names == names and [k for k, _ in zh_missing] == [k for k, _ in missing]
        for (k, why), (_, zh_why) in zip(missing, zh_missing):
            m = get_method(k)
            assert why == (m.defined_for(result) or menu.NO_CLASSIFIER)          # English: unchanged
            assert zh_why == m.why_not(result, ZH) or zh_why == menu.no_classifier(ZH)
            chinese(zh_why)
            assert numbers(zh_why) == numbers(why)
    if name == "swin":
        assert dict(menu.offered_methods(result, lang=ZH)[1])["rollout"].startswith("注意力展开不适用于窗口注意力（Swin）")
    if name == "demo-cnn-attnpool":
        why = dict(menu.offered_methods(result, lang=ZH)[1])
        assert "此模型只有 0 个" in why["rollout"] and "注意力池化" in why["attnlrp"]


def test_head_and_query_menus_in_both_languages(captured):
    _, _, _, result = captured
    for q in menu.query_choices(result):
        en, zh = menu.query_label(q, result), menu.query_label(q, result, lang=ZH)
        assert en == menu.query_label(q, result, "en")
        assert latin_words(zh) == set() and numbers(zh) == numbers(en), (q, zh)
        if q not in ("cls", "dist"):
            assert CJK.search(zh), (q, zh)
    layer = menu.layer_at(result, -1)
    for h in menu.head_choices(layer, "raw"):
        en, zh = menu.head_label(h), menu.head_label(h, ZH)
        chinese(zh)
        assert numbers(zh) == numbers(en)
    for m in methods():
        en, zh = menu.fuses_heads(m.name), menu.fuses_heads(m.name, ZH)
        assert bool(en) == bool(zh) == (not m.uses_heads)
        if zh:
            chinese(zh)
            assert zh.startswith(m.title_in(ZH))
    chinese(menu.fused_entry(ZH))
    assert menu.fused_entry() == "fused by the method"
    chinese(menu.no_classifier(ZH))
    assert menu.no_classifier() == menu.NO_CLASSIFIER


def test_english_menu_texts_are_the_ones_of_before():
    assert menu.head_label("1") == "head 1" and menu.head_label("mean") == "mean over heads"
    assert menu.head_label("2", ZH) == "头 2" and menu.head_label("mean", ZH) == "对各头取平均值"
    assert menu.fuses_heads("rollout") == "Attention rollout combines every head itself: there is no head to choose"
    assert menu.fuses_heads("rollout", ZH) == "注意力展开：自行融合所有头，没有可选的头"
    assert menu.query_label("reg2") == "register 2" and menu.query_label("reg2", lang=ZH) == "寄存器词元 2"
    assert menu.query_label("cls+dist") == "CLS+DIST (mean)" and menu.query_label("patch") == "clicked patch"


# ---------------------------------------------------------------------------- the app's captions

#: the bundled demo models, and a random-init Swin through the app's own loader (windowed attention: no rollout)
APP_MODELS = ["demo-vit", "demo-torch-vit", "demo-cnn-selfattn", "demo-cnn-attnpool", "swin_tiny_patch4_window7_224"]


@pytest.fixture(scope="module")
def star(tmp_path_factory):
    img, _, _ = make_sample(np.random.default_rng(3), 64, CLASS_NAMES.index("star"))
    path = tmp_path_factory.mktemp("i18n_methods") / "star.png"
    Image.fromarray(img).save(path)
    return str(path)


@pytest.fixture(scope="module")
def callbacks():
    from viz_app.callbacks import Callbacks
    from viz_app.models import ModelManager
    from viz_app.state import SessionStore
    return Callbacks(ModelManager(max_models=5, pretrained=False), SessionStore())


def _app_views(n_layers):
    from viz_app.views import View
    return [View(method=m.name) for m in methods()] + \
           [View(method=m.name, layer=0, head="max", target=1) for m in methods()] + \
           [View(method=m.name, query="patch", click=(30.0, 20.0), start_layer=1 if n_layers > 2 else None)
            for m in methods()] + [View(method="raw", query="patch_mean", head="0")]


@pytest.mark.parametrize("model_name", APP_MODELS)
def test_captions_in_both_languages_without_computing_the_map_again(callbacks, star, model_name, monkeypatch):
    from viz_app import views
    analysis = callbacks.analyse("s-i18n", star, model_name)
    calls = []
    real = views.library_map
    monkeypatch.setattr(views, "library_map", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    shown = 0
    for view in _app_views(len(spatial_layers(analysis.result))):
        getter = (lambda: callbacks.manager.get(model_name))
        try:
            en = views.compute_map(analysis, view, model=getter)
        except MethodNotDefinedError as e:
            with pytest.raises(MethodNotDefinedError) as zh_error:
                views.compute_map(analysis, view, model=getter, lang=ZH)
            if str(e).startswith(get_method(view.method).label + ":"):    # not defined here: the reason in Chinese
                chinese(str(zh_error.value))
            continue
        shown += 1
        before, derived = len(calls), dict(analysis.derived)
        zh = views.compute_map(analysis, view, model=getter, lang=ZH)
        assert len(calls) == before and analysis.derived == derived      # another language: no map computed
        assert all(analysis.derived[k] is v for k, v in derived.items())
        assert views.compute_map(analysis, view, model=getter, lang="en").caption == en.caption
        assert np.array_equal(zh.heat, en.heat) and zh.patch == en.patch
        chinese(zh.caption, *analysis.class_names)
        assert numbers(zh.caption) == numbers(en.caption), (en.caption, zh.caption)
        assert zh.caption.startswith(f"**{get_method(view.method).title_in(ZH)}**")
        if en.patch is not None:
            assert str(en.patch) in zh.caption
    assert shown >= 4
    if model_name.startswith("swin"):           # no CLS: the raw view is the attention each position receives
        raw = views.compute_map(analysis, views.View(method="raw"), lang=ZH).caption
        assert "每个位置接收到的注意力（Swin 没有 CLS 词元" in raw
        with pytest.raises(MethodNotDefinedError, match="^注意力展开：注意力展开不适用于窗口注意力（Swin）"):
            views.compute_map(analysis, views.View(method="rollout"), lang=ZH)


def test_the_grid_texts_and_the_not_offered_note(callbacks, star):
    from viz_app import views
    analysis = callbacks.analyse("s-i18n", star, "demo-cnn-attnpool")
    _, _, qtext, note = views.layer_heads(analysis, views.View(query="patch", click=(30.0, 20.0)), lang=ZH)
    assert qtext == "查询：点选的图块" and note == "（已在注意力标签页中标出）"
    assert views.layer_heads(analysis, views.View(query="patch", click=(30.0, 20.0)))[2:] == \
        ("query clicked patch", " (marked in the Attention tab)")
    en = views.not_offered_text(analysis.result)
    zh = views.not_offered_text(analysis.result, lang=ZH)
    assert en.startswith("Rollout (rollout needs a stack of at least two self-attention layers")
    chinese(zh)
    assert zh.startswith("注意力展开（注意力展开需要") and zh.count("；") == en.count("; ")


# ---------------------------------------------------------------------------- the page, through its handlers

@pytest.fixture(scope="module")
def app():
    from viz_app.callbacks import Callbacks
    from viz_app.models import ModelManager
    from viz_app.state import SessionStore
    from viz_app.ui import build_demo
    return build_demo(Callbacks(ModelManager(max_models=4), SessionStore()), default_model="demo-vit")


CONTROL_VALUES = dict(head="mean", query="auto", cmap="inferno", alpha=0.5, mode="smooth", norm="minmax", mass=0.0,
                      contour=False)


def _menu_texts(out) -> list[str]:
    texts = [label for label, _ in out["method"]["choices"]] + [label for label, _ in out["head"]["choices"]]
    texts += [label for label, _ in out["query"]["choices"]]
    return texts + ([out["head"]["info"]] if out["head"].get("info") else [])


@pytest.mark.parametrize("model_name", ["demo-vit", "demo-cnn-attnpool"])
def test_the_attention_tab_in_chinese_and_a_switch_computes_nothing(app, star, model_name):
    from viz_app import inputs
    from viz_app.page import Page
    from viz_app.tabs import attention
    ev, session = app.viz_events, f"s-zh-{model_name}"
    page = ev.call(inputs.on_model, Page("demo-vit"), session, model_dd=model_name)["page"]
    page = ev.call(inputs.on_image, page, session, image_in=star)["page"]
    analysis = app.viz_callbacks.find(session, model_name, page.sha)
    offered, _ = menu.offered_methods(analysis.result, bool(analysis.predictions))
    for method in offered:
        en = ev.call(attention.on_controls, page, session, method=method, **CONTROL_VALUES)
        derived = dict(analysis.derived)
        zh = ev.call(attention.on_controls, en["page"].with_(lang=ZH), session, method=method, **CONTROL_VALUES)
        assert analysis.derived == derived and all(analysis.derived[k] is v for k, v in derived.items())
        assert zh["page"].view == en["page"].view
        zh_caption, en_caption = zh["caption"].split("  \n")[0], en["caption"].split("  \n")[0]
        chinese(zh_caption, *analysis.class_names)
        assert numbers(zh_caption) == numbers(en_caption)
        for text in _menu_texts(zh):
            assert latin_words(text) == set(), text
        assert [v for _, v in zh["method"]["choices"]] == [v for _, v in en["method"]["choices"]]
        assert [v for _, v in zh["head"]["choices"]] == [v for _, v in en["head"]["choices"]]
        assert [v for _, v in zh["query"]["choices"]] == [v for _, v in en["query"]["choices"]]
        assert dict(en["method"]["choices"])[get_method(method).label] == method           # English labels
        assert dict((v, k) for k, v in zh["method"]["choices"])[method] == get_method(method).label_in(ZH)
        if not get_method(method).uses_heads:
            assert zh["head"]["choices"] == [("由方法自行融合", "mean")] and en["head"]["choices"] == \
                [("fused by the method", "mean")]
