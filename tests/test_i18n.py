"""The lesson in English and 简体中文: the catalogues agree, every word of the Chinese lesson (pictures and
explanations) comes from the catalogue, and the Chinese pictures are drawn with a font that has every glyph
(the packaged Noto Sans SC: no system font, no tofu boxes)."""
from __future__ import annotations

import inspect
import json
import os
import re
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from attention.i18n import LANGUAGES, catalogue, catalogue_path, normalize_lang, placeholders, t
from attention.i18n.fonts import MPL_FAMILY, cjk_font_path, cmap_of, latin_font_path, needs_cjk
from attention.lesson import figure
from attention.models import load_model
from tests.i18n_support import latin_words

HERE = os.path.dirname(os.path.abspath(__file__))
PHOTO = os.path.join(HERE, "..", "..", "shared", "images", "public_domain", "matplotlib_grace_hopper.jpg")

# --------------------------------------------------------------------------- the catalogues

def test_every_key_in_every_language_with_the_same_placeholders():
    en = catalogue("en")
    assert len(en) > 100
    for lang in LANGUAGES:
        other = catalogue(lang)
        assert set(other) == set(en), f"{lang}: missing {set(en) - set(other)}, extra {set(other) - set(en)}"
        for key, text in en.items():
            assert other[key].strip() or not text.strip(), f"{lang} {key} is empty"
            assert placeholders(other[key]) == placeholders(text), (lang, key, other[key])
    # the Chinese catalogue is translated: a value equal to the English one holds no English word
    zh = catalogue("zh-CN")
    same = [k for k in en if zh[k] == en[k] and latin_words(re.sub(r"\{[^}]*\}", " ", en[k]))]
    assert not same, f"untranslated in zh-CN: {same}"
    assert sum(needs_cjk(v) for v in zh.values()) > 0.8 * len(zh)


def test_catalogues_are_plain_json_files_translators_can_edit():
    for lang in LANGUAGES:
        with open(catalogue_path(lang), encoding="utf-8") as f:
            data = json.load(f)
        assert isinstance(data, dict) and all(isinstance(v, str) for v in data.values())


def test_t_formats_and_says_what_is_wrong():
    assert t("heads.head", h=3) == "head 3"
    assert t("heads.head", "zh-CN", h=3) == "头 3"
    assert t("query.softmax_sub", "zh-CN", sqrt_d=4.0, top=0.04567, H=5.871, Hmax=6.0224) == \
        "√d = 4 · 最大权重 0.046 · 熵 5.87 比特（最大 6.02）"
    for tag in ("zh", "zh_CN", "zh-cn", "zh-Hans", "ZH-CN"):
        assert normalize_lang(tag) == "zh-CN"
    for tag in (None, "", "en-US", "en_GB"):
        assert normalize_lang(tag) == "en"
    with pytest.raises(ValueError, match="unknown language 'fr'.*en, zh-CN"):
        t("heads.head", "fr", h=1)
    with pytest.raises(KeyError, match="no.such.key"):
        t("no.such.key", "zh-CN")


def test_glossary_beside_the_catalogue_and_its_terms_used():
    path = os.path.join(os.path.dirname(catalogue_path("en")), "glossary.md")
    glossary = open(path, encoding="utf-8").read()
    zh = catalogue("zh-CN")
    for en_term, zh_term, key in (("attention rollout", "注意力展开", "layers.row_rollout"),
                                  ("multi-head attention", "多头注意力", "explain.heads_title"),
                                  ("query / key / value", "查询", "explain.scores_project"),
                                  ("patch", "图块", "tokens.pic_title"), ("head", "头", "heads.head"),
                                  ("layer", "层", "common.layer_k"), ("token", "词元", "tokens.pic_strip"),
                                  ("position embedding", "位置嵌入", "tokens.sim_title")):
        assert f"| {en_term} | {zh_term}" in glossary or (en_term in glossary and zh_term in glossary), en_term
        assert zh_term in zh[key], (key, zh[key])
    assert "键" in zh["explain.scores_project"] and "值" in zh["explain.scores_project"]


def test_public_lesson_functions_take_lang_and_keep_their_old_signature():
    from attention.lesson import explain, heads, layers, learning_pictures, query_pictures, special_tokens, tokens
    funcs = [tokens.tokens_picture, tokens.position_picture, tokens.position_similarity, tokens.token_sequence,
             tokens.position_note, query_pictures.scores_picture, query_pictures.softmax_picture,
             query_pictures.weights_picture, query_pictures.output_picture, query_pictures.query_steps_picture,
             heads.heads_picture, heads.distance_vs_depth_picture, layers.raw_vs_rollout_picture,
             special_tokens.special_tokens_picture, special_tokens.norms_picture,
             special_tokens.HighNormTokens.describe, learning_pictures.curves_picture,
             learning_pictures.probes_picture, explain.explain_tokens, explain.explain_scores,
             explain.explain_softmax, explain.explain_weights, explain.explain_output, explain.explain_heads,
             explain.explain_layers, explain.explain_special]
    for f in funcs:
        p = inspect.signature(f).parameters
        assert "lang" in p and p["lang"].default == "en", f.__qualname__
        # every parameter before lang keeps its place (lang is added last, or keyword-only)
        assert list(p)[-1] == "lang" or p["lang"].kind == inspect.Parameter.KEYWORD_ONLY, f.__qualname__


# --------------------------------------------------------------------------- every word of the pictures

@pytest.fixture(scope="module")
def demo_vit():
    return load_model("demo-vit")


@pytest.fixture(scope="module")
def reg4():
    torch.manual_seed(0)
    return timm.create_model("vit_small_patch14_reg4_dinov2", pretrained=False, img_size=28, depth=4).eval()


class Drawn:
    """Every text the lesson's pictures draw: matplotlib texts (read where `figure_to_rgb` localises the fonts)
    and the raster canvas's texts with the PIL font each one is drawn with."""

    def __init__(self, monkeypatch):
        self.mpl, self.canvas = [], []
        original = figure.localize_fonts

        def localize(fig):
            from matplotlib.text import Text
            original(fig)
            self.mpl += [(t.get_text(), t) for t in fig.findobj(Text) if t.get_text().strip()]
        monkeypatch.setattr(figure, "localize_fonts", localize)
        text = figure.Canvas.text

        def canvas_text(c, xy, s, size=figure.MIN_TEXT_PX, fill=(0, 0, 0), anchor="la", bold=False, align="left"):
            self.canvas.append((s, c.font(size, bold, s).path))
            return text(c, xy, s, size, fill, anchor, bold, align)
        monkeypatch.setattr(figure.Canvas, "text", canvas_text)

    def texts(self) -> list[str]:
        return [s for s, _ in self.mpl] + [s for s, _ in self.canvas]


def draw_lesson(lang: str, demo, reg4_model) -> dict:
    """Every lesson picture and explanation in `lang` on the demo model and a register ViT."""
    from attention.diagnostics import head_stats
    from attention.lesson import explain as ex
    from attention.lesson.heads import distance_vs_depth_picture, heads_picture, query_distance, uniform_distance
    from attention.lesson.layers import layer_maps, raw_vs_rollout_picture
    from attention.lesson.learning_pictures import curves_picture, probes_picture
    from attention.lesson.query import layer_projections, self_attention_layers
    from attention.lesson.query_pictures import query_steps_picture
    from attention.lesson.special_tokens import (high_norm_tokens, norms_picture, prefix_attention,
                                                 special_tokens_picture, token_norms)
    from attention.lesson.tokens import (model_input_image, position_picture, position_similarity, token_sequence,
                                         tokens_picture)
    prepared = demo.prepare(Image.open(PHOTO).convert("RGB"))
    result = demo.capture(prepared)
    view = model_input_image(prepared)
    seq = token_sequence(demo.model, prepared, lang)
    pics = [tokens_picture(prepared, seq, lang=lang),
            position_picture(position_similarity(demo.model, seq.grid, lang), lang=lang)]
    step = layer_projections(demo.model, prepared.tensor, -1).step(1, (3, 4))
    pics += [query_steps_picture(step, view, 0.5, lang=lang)]
    layers = self_attention_layers(result)
    stats = head_stats(result)
    k = len(layers) - 1
    pics += [heads_picture(result, result.maps.index(layers[k]), (3, 4), view, lang=lang),
             distance_vs_depth_picture(stats, layers[k].layout, highlight_layer=k, lang=lang)]
    maps = layer_maps(result, (3, 4))
    pics += [raw_vs_rollout_picture(maps, view, lang=lang)]
    tn = token_norms(demo.model, prepared.tensor)
    flags = high_norm_tokens(tn)
    pics += [special_tokens_picture(prefix_attention(result), lang=lang), norms_picture(tn, flags, lang=lang)]
    x = torch.randn(1, 3, 28, 28, generator=torch.Generator().manual_seed(1))
    from attention.capture import capture
    pics += [special_tokens_picture(prefix_attention(capture(reg4_model, x)), lang=lang),
             norms_picture(token_norms(reg4_model, x), lang=lang)]
    # the training step's pictures: the drawing inputs of a run (their numbers do not matter to the words)
    snaps = [SimpleNamespace(step=s, pointing_game=0.2 * s, rollout=np.random.default_rng(s).random((5, 8, 8)),
                             hits=[True, False, True, True, False]) for s in (0, 2)]
    state = SimpleNamespace(history=SimpleNamespace(step=[1, 2, 3], loss=[1.6, 1.2, 0.9], acc=[0.2, 0.4, 0.5]),
                            total_steps=10, step=3, status="running", snapshots=snaps)

    class P:                             # five probe pictures and their (here: numbered) classes
        images, label_names = np.zeros((5, 64, 64, 3), np.uint8) + 90, ["1", "2", "3", "4", "5"]

        def __len__(self):
            return 5
    pics += [curves_picture(state, lang=lang), probes_picture(P(), snaps, lang=lang)]
    texts = [ex.explain_tokens(seq, lang), ex.explain_scores(step, lang), ex.explain_softmax(step, 0.5, lang),
             ex.explain_weights(step, 0.5, lang), ex.explain_output(step, lang),
             ex.explain_heads(k, layers[k].num_heads, stats.mean_distance, uniform_distance(layers[k].layout), lang),
             ex.explain_layers(maps, lang), ex.explain_special([flags.describe(lang=lang)], lang)]
    return {"pictures": pics, "explanations": texts, "step": step, "maps": maps}


def test_no_english_left_in_the_chinese_lesson(monkeypatch, demo_vit, reg4):
    drawn = Drawn(monkeypatch)
    out = draw_lesson("zh-CN", demo_vit, reg4)
    texts = drawn.texts()
    assert len(texts) > 150 and sum(needs_cjk(s) for s in texts) > 40
    left = {w: s for s in texts + [e.text() for e in out["explanations"]] for w in latin_words(s)}
    assert not left, f"English words outside the catalogue in the Chinese lesson: {left}"
    # ... while the English lesson draws no Chinese, and its words are the catalogue's English
    drawn_en = Drawn(monkeypatch)
    out_en = draw_lesson("en", demo_vit, reg4)
    assert not any(needs_cjk(s) for s in drawn_en.texts() + [e.text() for e in out_en["explanations"]])
    assert "the model's attention (captured), %" in [s for s, _ in drawn_en.canvas] or any(
        "weights at T = 0.5" in s for s, _ in drawn_en.canvas)


def test_explanations_carry_the_same_real_numbers_in_both_languages(demo_vit, reg4):
    """The numbers in the words are the model's: computed here from the captured attention, independently."""
    from attention.lesson import explain as ex
    zh = draw_lesson("zh-CN", demo_vit, reg4)
    step, maps = zh["step"], zh["maps"]
    row = step.captured                                    # the model's own attention row (captured)
    s = step.scores * step.scale
    w_half = np.exp(s / 0.5 - (s / 0.5).max())
    w_half /= w_half.sum()
    for lang in ("en", "zh-CN"):
        soft = ex.explain_softmax(step, 0.5, lang).text()
        assert f"{row.max():.3f}" in soft and f"{w_half.max():.3f}" in soft
        assert f"{-(row * np.log2(row)).sum():.2f}" in soft
        layers = ex.explain_layers(maps, lang).text()
        assert f"{100 * maps.rollout[-1].max() / maps.rollout[-1].sum():.0f}%" in layers
        scores = ex.explain_scores(step, lang).text()
        assert f"{step.scores.max():.2f}" in scores
    assert "注意力展开" in ex.explain_layers(maps, "zh-CN").text()
    assert "第 1 步" in ex.explain_scores(step, "zh-CN").title


# --------------------------------------------------------------------------- the font: every glyph, no tofu

def test_every_character_of_the_chinese_pictures_is_in_the_font_that_draws_it(monkeypatch, demo_vit, reg4):
    path = cjk_font_path()
    assert "pylopdf_fonts_zh_cn" in path and path.endswith("NotoSansSC-Regular.otf")   # the package, not the system
    cjk, latin = cmap_of(path), cmap_of(latin_font_path())
    drawn = Drawn(monkeypatch)
    draw_lesson("zh-CN", demo_vit, reg4)
    for text, artist in drawn.mpl:
        if needs_cjk(text):
            assert artist.get_fontfamily() == MPL_FAMILY, text
        for ch in text.replace("\n", ""):
            assert ord(ch) in latin or (needs_cjk(text) and ord(ch) in cjk), (text, ch)
    for text, font_path in drawn.canvas:
        cmap = cmap_of(font_path)
        assert font_path == path if needs_cjk(text) else True
        missing = [ch for ch in text.replace("\n", "") if ord(ch) not in cmap]
        assert not missing, (text, missing, font_path)


def _glyph(ch: str, canvas: bool) -> np.ndarray:
    if canvas:
        c = figure.Canvas(48, 48)
        c.text((4, 4), ch, 30)
        return c.to_array()
    fig, ax = figure.px_canvas(48, 48)
    ax.text(4, 4, ch, fontsize=figure.pt(30), ha="left", va="top")
    return figure.figure_to_rgb(fig)


def test_chinese_text_renders_as_glyphs_not_tofu():
    """Each distinct Chinese character of the catalogue, drawn the lesson's two ways (matplotlib with the font
    fallback, the raster canvas), gives its own shape: a missing glyph would draw the same box for all of them,
    the box a character no font has (U+E000, private use) draws."""
    chars = sorted({ch for v in catalogue("zh-CN").values() for ch in v if needs_cjk(ch)})
    assert len(chars) > 300
    for canvas in (False, True):
        with warnings.catch_warnings():          # matplotlib says the glyph is missing: that is the point
            warnings.simplefilter("ignore", UserWarning)
            tofu = _glyph("\ue000", canvas)
        seen = {}
        for ch in chars:
            g = _glyph(ch, canvas)
            ink = (g < 128).any(axis=2).sum()
            assert ink > (20 if "\u4e00" <= ch <= "\u9fff" else 0), (ch, canvas)    # punctuation: a few pixels
            assert not np.array_equal(g, tofu), (ch, canvas)
            key = g.tobytes()
            assert key not in seen, f"{ch} and {seen.get(key)} draw the same picture (canvas={canvas})"
            seen[key] = ch
