"""The lesson as one self-contained HTML slide deck and a PDF (attention.lesson.deck), in English and 简体中文:
opened offline in Chromium (every picture loaded, no request leaves file:/data:, the keys change the slide,
Chinese drawn in the inlined font, not as tofu), the PDF one page per slide, the numbers the model's own."""
from __future__ import annotations

import base64
import hashlib
import io
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from attention.i18n import t
from attention.i18n.fonts import needs_cjk
from attention.lesson.deck import pdf_page_count, picture_sizes, write_deck
from attention.models import load_model
from browser_support import ARGS, CHROMIUM, MARKS
from test_i18n import latin_words

HERE = os.path.dirname(os.path.abspath(__file__))
PHOTO = os.path.join(HERE, "..", "..", "shared", "images", "public_domain", "matplotlib_grace_hopper.jpg")
SLIDES = 9
LANGS = ("en", "zh-CN")


@pytest.fixture(scope="module")
def decks(tmp_path_factory):
    """One deck (HTML + PDF) per language, of demo-vit on the Grace Hopper photo, layer 2, head 1, patch (3, 5)."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} is absent")
    out = tmp_path_factory.mktemp("decks")
    loaded = load_model("demo-vit")
    return {lang: write_deck(PHOTO, loaded, str(out / f"deck-{lang}.html"), layer=2, head=1, query=(3, 5),
                             lang=lang, pdf=str(out / f"deck-{lang}.pdf")) for lang in LANGS}


def _html(info) -> str:
    with open(info.html_path, encoding="utf-8") as f:
        return f.read()


@pytest.mark.parametrize("lang", LANGS)
@MARKS[1]
def test_the_deck_is_one_self_contained_file(decks, lang):
    info = decks[lang]
    html = _html(info)
    assert len(info.slides) == SLIDES and html.count('<section class="slide"') == SLIDES
    # nothing to fetch: no link, no external script, every src / url() a data: URI
    assert "<link" not in html and not re.search(r"<script[^>]+src=", html)
    srcs = re.findall(r'src="([^"]*)"', html)
    assert len(srcs) >= 2 * SLIDES and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert all(u.startswith("data:") for u in re.findall(r"url\(([^)]*)\)", html))
    assert not re.search(r"https?://", html)
    # every slide names the image (file and sha256) and the model it was computed on
    sha = hashlib.sha256(open(PHOTO, "rb").read()).hexdigest()[:12]
    footers = re.findall(r'<div class="footer"><span>([^<]*)</span>', html)
    assert len(footers) == SLIDES
    for f in footers:
        assert "matplotlib_grace_hopper.jpg" in f and sha in f and "demo-vit" in f
        assert t("deck.footer_choice", lang, layer=2, head=1, query=t("common.patch_rc", lang, r=3, c=5)) in f
    assert info.lang == lang and info.html_bytes == os.path.getsize(info.html_path)


@MARKS[1]
def test_the_deck_shows_the_models_own_numbers(decks):
    """The query slides' numbers, against the attention captured from the model's forward pass (layer 2, head 1,
    query patch (3, 5)), computed here independently of the lesson."""
    loaded = load_model("demo-vit")
    prepared = loaded.prepare(Image.open(PHOTO).convert("RGB"))
    result = loaded.capture(prepared)
    from attention.lesson.query import self_attention_layers
    m = self_attention_layers(result)[2]
    row = m.weights[0, 1, m.layout.patch_index(3, 5)].double().numpy()
    top = np.sort(row)[::-1]
    entropy = -(row * np.log2(row)).sum()
    for lang in LANGS:
        html = _html(decks[lang])
        assert f"<b>{top[0]:.3f}</b>" in html and f"<b>{entropy:.2f}</b>" in html
        assert f"{100 * top[0]:.1f}%" in html          # the largest weight, in the weights slide
    from attention.methods.rollout import rollout
    r = rollout(result, query=(3, 5))[0].numpy()
    rollout_peak = f"{100 * r.max() / r.sum():.0f}%"
    assert rollout_peak in _html(decks["en"]) and rollout_peak in _html(decks["zh-CN"])


@pytest.mark.parametrize("lang", LANGS)
@MARKS[1]
def test_the_pdf_has_one_page_per_slide(decks, lang):
    info = decks[lang]
    data = open(info.pdf_path, "rb").read()
    assert data.startswith(b"%PDF")
    assert info.pdf_pages == SLIDES == pdf_page_count(info.pdf_path)
    # every page 1280 x 720 CSS px = 960 x 540 pt (the deck's @page), whatever the printer's default paper
    boxes = re.findall(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)\s*\]", data)
    assert boxes and all(abs(float(w) - 960) < 1 and abs(float(h) - 540) < 1 for w, h in boxes), boxes[:3]


def test_picture_sizes_fit_the_room_beside_the_text():
    how, sizes = picture_sizes([(518, 300), (518, 300)], (780, 585))
    assert how == "row" and sizes == [(300, 518), (300, 518)]          # side by side, never enlarged
    how, sizes = picture_sizes([(298, 465), (298, 465)], (780, 585))
    assert how == "column" and sizes[0][0] <= 780 and sum(h for _, h in sizes) + 14 <= 585


JS_STATE = "() => ({active: [...document.querySelectorAll('.slide')].findIndex(s => s.classList.contains('active')),"\
           " imgs: [...document.images].map(i => [i.complete, i.naturalWidth]),"\
           " fonts: [...document.fonts].map(f => f.status), text: document.querySelector('.deck').textContent})"

# draws each character on a canvas in the deck's font and in a character no font has (U+E000): a character the
# font lacks draws the same box (tofu)
JS_TOFU = """(chars) => {
  const c = document.createElement('canvas'); c.width = 48; c.height = 48;
  const g = c.getContext('2d', {willReadFrequently: true});
  const draw = (ch) => { g.clearRect(0, 0, 48, 48); g.font = '36px LessonSC'; g.fillText(ch, 4, 40);
                         return Array.from(g.getImageData(0, 0, 48, 48).data).join(','); };
  const box = draw('\\ue000');
  return chars.filter(ch => draw(ch) === box);
}"""


@pytest.mark.parametrize("lang", LANGS)
@MARKS[0]
@MARKS[1]
def test_the_deck_in_chromium_offline(decks, lang):
    """Every picture loads, no request leaves file:/data:, →/space/← change the slide; in Chinese the text is drawn
    in the inlined font, every character of it in the font's cmap and none a tofu box."""
    from playwright.sync_api import sync_playwright
    info = decks[lang]
    requests = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 720}, offline=True)
        try:
            context.route("**/*", lambda route: (requests.append(route.request.url), route.continue_()))
            page = context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            page.goto("file://" + info.html_path)
            page.wait_for_function("() => document.querySelector('.slide.active')")
            state = page.evaluate(JS_STATE)
            assert state["active"] == 0
            assert len(state["imgs"]) >= 2 * SLIDES and all(ok and w > 0 for ok, w in state["imgs"]), state["imgs"]
            for _ in range(SLIDES):             # nothing cut: the text fits its column, the pictures end above the footer
                fit = page.evaluate("""() => { const s = document.querySelector('.slide.active');
                    const t = s.querySelector('.text'), foot = s.querySelector('.footer').getBoundingClientRect();
                    const pics = [...s.querySelectorAll('.pics img')].map(i => i.getBoundingClientRect());
                    return {text: t.scrollHeight <= t.clientHeight + 1, pics: pics.length > 0 &&
                            pics.every(r => r.bottom <= foot.top && r.right <= t.getBoundingClientRect().left)}; }""")
                assert fit == {"text": True, "pics": True}, (page.evaluate(JS_STATE)["active"], fit)
                page.keyboard.press("ArrowRight")
            page.keyboard.press("Home")
            seen = [page.evaluate(JS_STATE)["active"]]
            for key in ("ArrowRight", "ArrowRight", " ", "ArrowLeft", "End", "Home"):
                page.keyboard.press(key)
                seen.append(page.evaluate(JS_STATE)["active"])
            assert seen == [0, 1, 2, 3, 2, SLIDES - 1, 0]
            assert page.evaluate("() => location.hash") == "#1"
            # printed: every slide shown, one 1280 x 720 page each, one below the other
            page.emulate_media(media="print")
            boxes = page.evaluate("() => [...document.querySelectorAll('.slide')].map(s => {"
                                  " const r = s.getBoundingClientRect(); return [r.top, r.width, r.height]; })")
            assert boxes == [[720 * k, 1280, 720] for k in range(SLIDES)]
            page.emulate_media(media="screen")
            if lang == "zh-CN":
                assert state["fonts"] == ["loaded"]
                chars = sorted({ch for ch in state["text"] if needs_cjk(ch)})
                assert len(chars) > 100
                from fontTools.ttLib import TTFont
                uri = re.search(r"data:font/otf;base64,([A-Za-z0-9+/=]+)", _html(info)).group(1)
                cmap = TTFont(io.BytesIO(base64.b64decode(uri))).getBestCmap()
                assert not [ch for ch in chars if ord(ch) not in cmap]
                assert page.evaluate(JS_TOFU, chars) == []
                # no English left outside the catalogue (the image's file name is a name, not a word)
                words = latin_words(state["text"].replace("matplotlib_grace_hopper.jpg", " "))
                assert not words, words
                for k in range(SLIDES):           # every slide's text has its font (no fallback to a system font)
                    page.keyboard.press("End" if k == SLIDES - 1 else "ArrowRight")
                assert page.evaluate("() => document.fonts.check('20px LessonSC', '注意力')")
            else:
                assert state["fonts"] == [] and not any(needs_cjk(ch) for ch in state["text"])
        finally:
            context.close()
            browser.close()
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), \
        [u for u in requests if not u.startswith(("file:", "data:"))]


@MARKS[1]
def test_pdf_without_playwright_by_chromiums_own_print(decks, tmp_path, monkeypatch):
    """Where Playwright is not installed, Chromium's --print-to-pdf prints the same pages."""
    from attention.lesson.deck import print_pdf
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)       # `import` of it raises ImportError
    pdf = tmp_path / "plain.pdf"
    assert print_pdf(decks["zh-CN"].html_path, str(pdf)) == SLIDES
    assert len(re.findall(rb"/MediaBox\s*\[0 0 960 540\]", pdf.read_bytes())) == SLIDES


@MARKS[1]
def test_cli_lesson_writes_the_deck_and_says_what_is_wrong(tmp_path):
    from attention.cli import main
    out = tmp_path / "deck.html"
    assert main(["lesson", "--image", PHOTO, "--model", "demo-vit", "--out", str(out), "--lang", "zh-CN",
                 "--layer", "1", "--query", "cls", "--pdf", str(tmp_path / "deck.pdf")]) == 0
    assert pdf_page_count(str(tmp_path / "deck.pdf")) == SLIDES
    html = out.read_text(encoding="utf-8")
    assert html.count('<section class="slide"') == SLIDES and '<html lang="zh-CN">' in html
    assert "第 1 层，头 0，查询 CLS" in html
    for argv, message in ((["--lang", "fr"], "unknown language 'fr'"),
                          (["--layer", "9"], "layer 9 is outside 0..3"),
                          (["--query", "9,9"], "outside the 8x8 patch grid"),
                          (["--image", str(tmp_path / "missing.jpg")], "no such file")):
        base = {"--image": PHOTO, "--model": "demo-vit", "--out": str(tmp_path / "x.html")}
        args = ["lesson"] + [v for k, val in base.items() if k not in argv for v in (k, val)] + argv
        r = subprocess.run([sys.executable, "-m", "attention", *args], capture_output=True, text=True, cwd=HERE + "/..",
                           timeout=300)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, (argv, r.stderr)


@MARKS[1]
def test_a_model_without_the_steps_gets_every_slide_saying_why_in_its_language(tmp_path):
    """A CNN with one self-attention layer (demo-cnn-selfattn): no tokens, no plain q·k attention, no rollout, no
    special tokens; each such slide says why, in Chinese, and the slides that are defined still show pictures."""
    info = write_deck(os.path.join(HERE, "..", "..", "shared", "images", "public_domain", "skimage_chelsea.png"),
                      "demo-cnn-selfattn", str(tmp_path / "cnn.html"), lang="zh-CN")
    html = _html(info)
    assert len(info.slides) == SLIDES
    texts = re.findall(r'<div class="text">(.*?)</div></div>', html, re.S)
    not_defined = [x for x in texts if "对这个模型没有定义" in x]
    assert len(not_defined) == 6                        # tokens, the four query steps, rollout
    assert "没有特殊词元" in texts[-1]                   # special tokens: the explanation, then why not here
    plain = re.sub(r"<[^>]+>", " ", " ".join(texts)).replace("skimage_chelsea.png", " ")
    assert not latin_words(plain), latin_words(plain)
    assert "SelfAttention2d" in plain and "demo-cnn-selfattn" in html


@MARKS[1]
def test_a_picture_in_memory_is_named_by_the_sha256_of_its_pixels(tmp_path):
    rgb = np.asarray(Image.open(PHOTO).convert("RGB"))
    info = write_deck(rgb, "demo-torch-vit", str(tmp_path / "a.html"), head=0, query="cls")
    html = _html(info)
    sha = hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()[:12]
    footers = re.findall(r'<div class="footer"><span>([^<]*)</span>', html)
    assert len(footers) == SLIDES and all(f.startswith(f"image image (sha256 {sha}) · model demo-torch-vit")
                                          and f.endswith("query CLS") for f in footers), footers[0]
