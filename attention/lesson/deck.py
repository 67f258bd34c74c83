"""The whole lesson on one image and one model as ONE self-contained HTML slide deck, and a PDF of it.

`write_deck(image, model, out_html, layer=None, head=None, query=None, lang="en", pdf=None)` computes every
lesson step with the model's real numbers (the same functions the app's Learn tab draws with) and writes:

- one HTML file, nothing outside it: every picture inlined as a ``data:image/png`` URI, every formula drawn to a
  PNG by matplotlib's mathtext (no MathJax / KaTeX, no network), the Chinese deck's font a subset of Noto Sans SC
  (only the characters the deck uses) inlined as a ``data:font/otf`` URI; keyboard navigation (→, space,
  PageDown: next; ←, PageUp: previous; Home / End), the slide number in the URL's ``#n``;
- each slide 1280 x 720 CSS px, with a footer that names the image (file name and the first 12 hex digits of
  its sha256), the model, and the layer / head / query it was computed on;
- ``pdf``: the same slides printed by headless Chromium (`print_pdf`), one page per slide (CSS ``@page`` of
  1280 x 720 px and a page break after each slide).

Slides: title, from image to tokens, the four query steps (scores, softmax, weights, output), many heads,
across layers, special tokens. A step that is not defined for the model (e.g. rollout for a CNN) keeps its
slide and says why, in the deck's language.
"""
from __future__ import annotations

import base64
import hashlib
import html
import io
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np

from ..errors import MethodNotDefinedError, UserError
from ..i18n import normalize_lang, t as tr
from ..i18n.fonts import needs_cjk
from .explain import MATH, Explanation

CHROMIUM = "/usr/bin/chromium"
SLIDE_W, SLIDE_H = 1280, 720


@dataclass
class Slide:
    title: str
    pictures: list = field(default_factory=list)       # RGB uint8 arrays
    explanation: Optional[Explanation] = None
    kind: str = "step"


@dataclass(frozen=True)
class DeckInfo:
    """What `write_deck` wrote."""

    html_path: str
    pdf_path: Optional[str]
    slides: tuple[str, ...]          # slide titles, in order
    html_bytes: int
    pdf_pages: Optional[int]
    seconds: float                   # wall time of the whole call (compute + write + print)
    lang: str


# ------------------------------------------------------------------------------------------- inputs

def _load_image(image):
    """(LoadedImage, display name, sha256 hex or None) from a path, bytes, a PIL image or an array."""
    from ..images import open_image
    if isinstance(image, (str, os.PathLike)):
        path = os.fspath(image)
        if not os.path.isfile(path):
            raise UserError(f"--image {path}: no such file")
        with open(path, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        return open_image(path), os.path.basename(path), sha
    loaded = open_image(image)
    arr = np.asarray(loaded.image.convert("RGB"))
    name = os.path.basename(getattr(image, "filename", "") or "") or "image"       # a PIL image opened from a file
    return loaded, name, hashlib.sha256(arr.tobytes()).hexdigest()


def _load_model(model):
    if isinstance(model, str):
        from ..models import load_model
        return load_model(model)
    return model


def _query_of(query, layout) -> Union[str, tuple[int, int]]:
    """The lesson's query: a patch (row, col) or a prefix token name; None: the centre patch."""
    gh, gw = layout.grid
    if query is None:
        return (gh // 2, gw // 2)
    if isinstance(query, str):
        q = query.strip().lower()
        m = re.fullmatch(r"\(?\s*(\d+)\s*,\s*(\d+)\s*\)?", q)
        if m:
            query = (int(m.group(1)), int(m.group(2)))
        elif q in layout.prefix_names:
            return q
        else:
            raise UserError(f"query {query!r}: give a patch as 'row,col' (0..{gh - 1}, 0..{gw - 1}) or a prefix token "
                            f"({', '.join(layout.prefix_names) or 'this model has none'})")
    r, c = (int(v) for v in query)
    if not (0 <= r < gh and 0 <= c < gw):
        raise UserError(f"query patch ({r}, {c}) is outside the {gh}x{gw} patch grid")
    return (r, c)


# ------------------------------------------------------------------------------------------- the slides

def lesson_slides(prepared, loaded, layer: Optional[int] = None, head: Optional[int] = None, query=None,
                  lang: str = "en", temperature: float = 1.0) -> tuple[list[Slide], dict]:
    """Every lesson slide for one prepared image and a loaded model: ([Slide], the choices made: layer, head,
    query, number of layers / heads)."""
    from ..diagnostics import head_stats
    from .explain import (explain_heads, explain_layers, explain_output, explain_scores, explain_softmax,
                          explain_special, explain_tokens, explain_weights)
    from .figure import PRESENTER_SCALE as big
    from .figure import message_picture
    from .heads import distance_vs_depth_picture, heads_picture, query_distance, uniform_distance
    from .layers import layer_maps, raw_vs_rollout_picture
    from .query import layer_projections, self_attention_layers
    from .query_pictures import output_picture, scores_picture, softmax_picture, weights_picture
    from .special_tokens import high_norm_tokens, norms_picture, prefix_attention, special_tokens_picture, token_norms
    from .tokens import model_input_image, position_picture, position_similarity, token_sequence, tokens_picture

    lang = normalize_lang(lang)
    model = loaded.model
    result = loaded.capture(prepared)
    view = model_input_image(prepared)
    layers = self_attention_layers(result)
    slides: list[Slide] = []

    def reason(e: Exception, why: str) -> str:
        """The error's words when they are in the deck's language (the lesson's own errors are), else the step's
        reason from the catalogue (errors of the library's methods speak English)."""
        text = str(e)
        return text if lang == "en" or needs_cjk(text) else tr(why, lang)

    def not_defined(title: str, e: Exception, why: str = "deck.why_generic") -> Slide:
        from .explain import TEXT
        text = reason(e, why)
        return Slide(title, [message_picture(text, width=6.0, height=3.0)],
                     Explanation(title, ((TEXT, tr("deck.not_defined", lang, reason=text)),)))

    choice = {"layers": len(layers), "heads": layers[0].num_heads if layers else 0}
    if layers:
        k = (-1 if layer is None else int(layer))
        if not -len(layers) <= k < len(layers):
            raise UserError(f"layer {layer} is outside 0..{len(layers) - 1} (this model has {len(layers)} "
                            f"self-attention layers)")
        k %= len(layers)
        h = 0 if head is None else int(head)
        if not 0 <= h < layers[k].num_heads:
            raise UserError(f"head {head} is outside 0..{layers[k].num_heads - 1}")
        q = _query_of(query, layers[k].layout)
        choice.update(layer=k, head=h, query=q)

    # title
    from .figure import resized
    f = 420.0 / max(view.shape[:2])           # what the model saw, large enough to see (blocky when it is small)
    big_view = resized(view, round(view.shape[1] * f), round(view.shape[0] * f), smooth=f < 2)
    slides.append(Slide(tr("deck.title", lang), [big_view], None, kind="title"))

    # 1. image to tokens
    title = tr("explain.tokens_title", lang)
    try:
        seq = token_sequence(model, prepared, lang)
        config = getattr(loaded.preprocess, "config", {})
        pics = [tokens_picture(prepared, seq, config.get("mean"), config.get("std"), scale=big, lang=lang)]
        try:
            pics.append(position_picture(position_similarity(model, seq.grid, lang), scale=big, lang=lang))
        except MethodNotDefinedError as e:
            pics.append(message_picture(reason(e, "deck.why_generic")))
        slides.append(Slide(title, pics, explain_tokens(seq, lang)))
    except MethodNotDefinedError as e:
        slides.append(not_defined(title, e))

    # 2-5. one query, step by step
    titles = [tr(f"explain.{s}_title", lang) for s in ("scores", "softmax", "weights", "output")]
    if layers:
        try:
            step = layer_projections(model, prepared.tensor, choice["layer"], lang).step(choice["head"],
                                                                                         choice["query"])
            T = float(temperature)
            slides += [Slide(titles[0], [scores_picture(step, view, big, lang)], explain_scores(step, lang)),
                       Slide(titles[1], [softmax_picture(step, T, big, lang)], explain_softmax(step, T, lang)),
                       Slide(titles[2], [weights_picture(step, view, T, big, lang)], explain_weights(step, T, lang)),
                       Slide(titles[3], [output_picture(step, scale=big, lang=lang)], explain_output(step, lang))]
        except MethodNotDefinedError as e:
            slides += [not_defined(t, e, "deck.why_query") for t in titles]
    else:
        e = MethodNotDefinedError(tr("deck.no_self_attention", lang))
        slides += [not_defined(t, e) for t in titles]

    # 6. many heads
    title = tr("explain.heads_title", lang)
    if layers:
        m = layers[choice["layer"]]
        index = result.maps.index(m)
        dist = query_distance(m, choice["query"])
        stats = head_stats(result)
        u = uniform_distance(m.layout)
        slides.append(Slide(title, [heads_picture(result, index, choice["query"], view, distances=dist, lang=lang),
                                    distance_vs_depth_picture(stats, m.layout, highlight_layer=choice["layer"],
                                                              lang=lang)],
                            explain_heads(choice["layer"], m.num_heads, stats.mean_distance, u, lang)))
    else:
        slides.append(not_defined(title, MethodNotDefinedError(tr("deck.no_self_attention", lang))))

    # 7. across layers
    title = tr("explain.layers_title", lang)
    try:
        maps = layer_maps(result, choice.get("query", "auto"))
        slides.append(Slide(title, [raw_vs_rollout_picture(maps, view, scale=big, lang=lang)],
                            explain_layers(maps, lang)))
    except MethodNotDefinedError as e:
        slides.append(not_defined(title, e, "deck.why_layers"))

    # 8. special tokens
    title = tr("explain.special_title", lang)
    notes, pics = [], []
    try:
        pics.append(special_tokens_picture(prefix_attention(result, lang=lang), scale=big, lang=lang))
    except MethodNotDefinedError as e:
        pics.append(message_picture(reason(e, "deck.why_prefix")))
        notes.append(reason(e, "deck.why_prefix"))
    try:
        tn = token_norms(model, prepared.tensor)
        flags = high_norm_tokens(tn)
        pics.append(norms_picture(tn, flags, scale=big, lang=lang))
        notes.append(flags.describe(lang=lang))
    except MethodNotDefinedError as e:
        pics.append(message_picture(reason(e, "deck.why_norms")))
        notes.append(reason(e, "deck.why_norms"))
    slides.append(Slide(title, pics, explain_special(notes, lang)))
    return slides, choice


# ------------------------------------------------------------------------------------------- HTML

def _png_uri(rgb: np.ndarray) -> str:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb[..., :3]).astype(np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def formula_png(latex: str, px: float = 26.0, dpi: int = 200) -> bytes:
    """A formula drawn by matplotlib's mathtext to PNG bytes (at `dpi`: shown at half size for a crisp slide)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.mathtext import math_to_image
    buf = io.BytesIO()
    math_to_image(f"${latex}$", buf, prop=FontProperties(size=px * 72.0 / 100.0), dpi=dpi, format="png")
    return buf.getvalue()


def _png_size(data: bytes) -> tuple[int, int]:
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _inline_md(text: str) -> str:
    """The explanations' little Markdown (**bold**, *italic*, `code`) as HTML, everything else escaped."""
    s = html.escape(text)
    s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
    s = re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<i>\1</i>", s)
    s = re.sub(r"`(.+?)`", r"<code>\1</code>", s)
    return s.replace("\n", "<br>")


def _explanation_html(ex: Explanation, formulas: dict) -> str:
    parts = []
    for kind, body in ex.blocks:
        if kind == MATH:
            if body not in formulas:
                data = formula_png(body)
                w, h = _png_size(data)
                formulas[body] = (f'<div class="math"><img alt="{html.escape(body)}" width="{w // 2}" height="{h // 2}" '
                                  f'src="data:image/png;base64,{base64.b64encode(data).decode("ascii")}"></div>')
            parts.append(formulas[body])
        else:
            parts.append(f"<p>{_inline_md(body)}</p>")
    return "\n".join(parts)


_CSS = """
@page { size: 1280px 720px; margin: 0; }
* { box-sizing: border-box; }
html, body { margin: 0; padding: 0; background: #2b2b2b; }
body { font-family: %(font)s; color: #111; }
.deck { width: 1280px; height: 720px; transform-origin: 0 0; position: absolute; left: 0; top: 0; }
.slide { width: 1280px; height: 720px; padding: 26px 40px 52px; background: #fff; display: none; flex-direction: column;
         position: relative; overflow: hidden; }
.slide.active { display: flex; }
.slide h1 { margin: 0 0 14px; font-size: 34px; }
.slide h2 { margin: 0 0 12px; font-size: 30px; }
.body { display: flex; gap: 28px; flex: 1; min-height: 0; }
.pics { display: flex; gap: 14px; align-items: flex-start; justify-content: center; flex: 0 1 auto; min-width: 0; }
.pics.column { flex-direction: column; align-items: center; }
.pics img { display: block; image-rendering: auto; }
.text { flex: 1 1 420px; font-size: 19px; line-height: 1.45; overflow: hidden; min-width: 380px; }
.text p { margin: 0 0 10px; }
.math { margin: 4px 0 12px; }
.math img { display: block; max-width: 100%%; }
.facts { font-size: 22px; line-height: 1.6; }
.facts td { padding: 0 18px 0 0; vertical-align: top; }
.facts td:first-child { color: #555; white-space: nowrap; }
.footer { position: absolute; left: 40px; right: 40px; bottom: 14px; font-size: 15px; color: #555;
          display: flex; justify-content: space-between; border-top: 1px solid #ddd; padding-top: 6px; }
code { font-family: "DejaVu Sans Mono", monospace; font-size: 0.9em; }
@media print {
  html, body { background: #fff; }
  .deck { transform: none !important; position: static; width: auto; height: auto; }
  .slide { display: flex !important; break-after: page; page-break-after: always; }
  .slide:last-child { break-after: auto; page-break-after: auto; }
}
"""

_JS = """
(function () {
  var slides = Array.prototype.slice.call(document.querySelectorAll('.slide'));
  var deck = document.querySelector('.deck'), i = 0;
  function fit() {
    var s = Math.min(window.innerWidth / %(w)d, window.innerHeight / %(h)d);
    deck.style.transform = 'scale(' + s + ')';
    deck.style.left = Math.max(0, (window.innerWidth - %(w)d * s) / 2) + 'px';
    deck.style.top = Math.max(0, (window.innerHeight - %(h)d * s) / 2) + 'px';
  }
  function show(n) {
    i = Math.max(0, Math.min(slides.length - 1, n));
    slides.forEach(function (e, k) { e.classList.toggle('active', k === i); });
    document.body.setAttribute('data-slide', String(i + 1));
    if (history.replaceState) { history.replaceState(null, '', '#' + (i + 1)); }
  }
  document.addEventListener('keydown', function (e) {
    var next = ['ArrowRight', 'PageDown', ' ', 'Spacebar', 'Enter'], prev = ['ArrowLeft', 'PageUp', 'Backspace'];
    if (next.indexOf(e.key) >= 0) { show(i + 1); e.preventDefault(); }
    else if (prev.indexOf(e.key) >= 0) { show(i - 1); e.preventDefault(); }
    else if (e.key === 'Home') { show(0); e.preventDefault(); }
    else if (e.key === 'End') { show(slides.length - 1); e.preventDefault(); }
  });
  document.addEventListener('click', function (e) { if (e.clientX > window.innerWidth / 2) show(i + 1); else show(i - 1); });
  window.addEventListener('resize', fit);
  fit();
  // the first slide appears once the inlined font is decoded: text laid out before it would keep tofu boxes
  var start = function () { show((parseInt((location.hash || '#1').slice(1), 10) || 1) - 1); };
  if (document.fonts && document.fonts.load) {
    Promise.all([document.fonts.load('20px LessonSC'), document.fonts.ready]).then(start, start);
  } else { start(); }
})();
"""


def _font_face(texts: list[str]) -> tuple[str, str]:
    """(@font-face CSS, font-family list): for Chinese, a subset of Noto Sans SC with exactly the characters of
    `texts`, inlined (a projector PC without a Chinese font still shows the deck); else the reader's sans-serif."""
    chars = set("".join(texts))
    if not any(needs_cjk(c) for c in chars):
        return "", '"DejaVu Sans", "Helvetica Neue", Arial, sans-serif'
    from fontTools import subset
    from fontTools.ttLib import TTFont

    from ..i18n.fonts import cjk_font_path
    font = TTFont(cjk_font_path())
    opts = subset.Options()
    opts.layout_features = ["*"]
    opts.name_IDs = ["*"]
    opts.notdef_outline = True
    sub = subset.Subsetter(opts)
    sub.populate(text="".join(sorted(chars)) + "0123456789")
    sub.subset(font)
    buf = io.BytesIO()
    font.save(buf)
    uri = "data:font/otf;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    face = f'@font-face {{ font-family: "LessonSC"; src: url({uri}) format("opentype"); font-display: block; }}\n'
    return face, '"DejaVu Sans", "LessonSC", sans-serif'


PICS_BOX = (780, 585)          # the pictures' room on a slide beside the text (CSS px)


def picture_sizes(shapes: list[tuple[int, int]], box: tuple[int, int] = PICS_BOX) -> tuple[str, list[tuple[int, int]]]:
    """("row" or "column", [(width, height)]): the pictures side by side or one above the other, whichever shows
    them larger, scaled down (never up) to fit `box`; gaps of 14 px."""
    if not shapes:
        return "row", []
    gap = 14 * (len(shapes) - 1)
    hs, ws = [h for h, w in shapes], [w for h, w in shapes]
    row = min(1.0, (box[0] - gap) / sum(ws), box[1] / max(hs))
    col = min(1.0, box[0] / max(ws), (box[1] - gap) / sum(hs))
    how, f = ("row", row) if row >= col else ("column", col)
    return how, [(max(1, int(w * f)), max(1, int(h * f))) for h, w in shapes]


def deck_html(slides: list[Slide], facts: list[tuple[str, str]], footer: str, lang: str) -> str:
    """The deck's HTML (one string, nothing outside it)."""
    formulas: dict = {}
    n = len(slides)
    sections = []
    for i, s in enumerate(slides):
        how, sizes = picture_sizes([p.shape[:2] for p in s.pictures])
        pics = "".join(f'<img alt="{html.escape(s.title)}" width="{w}" height="{h}" src="{_png_uri(p)}">'
                       for p, (w, h) in zip(s.pictures, sizes))
        if s.kind == "title":
            rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in facts)
            body = (f'<div class="body"><div class="pics {how}">{pics}</div><div class="text">'
                    f'<p>{_inline_md(tr("deck.subtitle", lang))}</p><table class="facts">{rows}</table></div></div>')
            head = f"<h1>{html.escape(s.title)}</h1>"
        else:
            text = _explanation_html(s.explanation, formulas) if s.explanation else ""
            body = f'<div class="body"><div class="pics {how}">{pics}</div><div class="text">{text}</div></div>'
            head = f"<h2>{html.escape(s.title)}</h2>"
        page = tr("deck.slide_of", lang, i=i + 1, n=n)
        sections.append(f'<section class="slide" id="s{i + 1}" data-index="{i + 1}">{head}{body}'
                        f'<div class="footer"><span>{html.escape(footer)}</span><span>{html.escape(page)}</span></div>'
                        f"</section>")
    visible = [s.title for s in slides] + [v for kv in facts for v in kv] + [footer, tr("deck.subtitle", lang),
                                                                             tr("deck.slide_of", lang, i=0, n=0)]
    visible += [b for s in slides if s.explanation for k, b in s.explanation.blocks if k != MATH]
    face, family = _font_face(visible)
    css = face + _CSS % {"font": family}
    js = _JS % {"w": SLIDE_W, "h": SLIDE_H}
    return (f'<!DOCTYPE html>\n<html lang="{lang}">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{html.escape(slides[0].title)} · {html.escape(footer)}</title>\n"
            f"<style>{css}</style>\n</head>\n<body>\n<div class=\"deck\">\n" + "\n".join(sections) +
            f"\n</div>\n<script>{js}</script>\n</body>\n</html>\n")


# ------------------------------------------------------------------------------------------- PDF

def print_pdf(html_path: str, pdf_path: str, chromium: str = CHROMIUM, timeout: float = 180.0) -> int:
    """Print `html_path` to `pdf_path` with headless Chromium (one page per slide: the deck's CSS @page and page
    breaks); returns the number of pages. Through Playwright when it is installed (it waits for the inlined font
    to be decoded: ``document.fonts.ready``), else Chromium's own ``--print-to-pdf``. Raises UserError when
    Chromium is missing or fails."""
    if not os.path.exists(chromium):
        raise UserError(f"--pdf needs Chromium at {chromium} (apt-get install chromium)")
    html_path, pdf_path = os.path.abspath(html_path), os.path.abspath(pdf_path)
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    if sync_playwright is not None:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, args=[
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run"])
            try:
                page = browser.new_page(viewport={"width": SLIDE_W, "height": SLIDE_H})
                page.set_default_timeout(timeout * 1000)
                page.goto("file://" + html_path)
                page.evaluate("() => document.fonts.ready.then(() => true)")
                page.pdf(path=pdf_path, prefer_css_page_size=True, print_background=True)
            finally:
                browser.close()
        return pdf_page_count(pdf_path)
    with tempfile.TemporaryDirectory(prefix="lesson-chromium-") as profile:
        cmd = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               "--no-pdf-header-footer", "--run-all-compositor-stages-before-draw", "--virtual-time-budget=10000",
               f"--print-to-pdf={pdf_path}", "file://" + html_path]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise UserError(f"Chromium did not print {html_path} within {timeout:.0f} s") from None
    if not os.path.isfile(pdf_path) or os.path.getsize(pdf_path) == 0:
        raise UserError(f"Chromium could not print {html_path} to {pdf_path} (exit {done.returncode}): "
                        f"{done.stderr.strip()[-300:]}")
    return pdf_page_count(pdf_path)


def pdf_page_count(pdf_path: str) -> int:
    """Pages of a PDF: pypdf when installed, else the ``/Type /Page`` objects (Chromium writes them plainly)."""
    try:
        import pypdf
        return len(pypdf.PdfReader(pdf_path).pages)
    except ImportError:
        with open(pdf_path, "rb") as f:
            data = f.read()
        return len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", data))


# ------------------------------------------------------------------------------------------- the whole thing

def write_deck(image, model, out_html: str, layer: Optional[int] = None, head: Optional[int] = None, query=None,
               lang: str = "en", pdf: Optional[str] = None, temperature: float = 1.0) -> DeckInfo:
    """Write the lesson for `image` (a path, bytes, a PIL image or an array) and `model` (a name such as
    "demo-vit", or a `LoadedModel`) as one self-contained HTML deck at `out_html` (and a PDF at `pdf`).

    ``layer`` (index among the self-attention layers, negative from the end; default the last), ``head``
    (default 0) and ``query`` (a patch (row, col) or "row,col", or a prefix token such as "cls"; default the
    centre patch) choose what the query steps and the heads slide show. ``lang``: "en" or "zh-CN".
    """
    t0 = time.perf_counter()
    lang = normalize_lang(lang)
    loaded_image, name, sha = _load_image(image)
    loaded = _load_model(model)
    prepared = loaded.prepare(loaded_image.image)
    slides, choice = lesson_slides(prepared, loaded, layer, head, query, lang, temperature)
    H, W = (int(v) for v in prepared.tensor.shape[-2:])
    img_w, img_h = loaded_image.image.size
    image_text = f"{name} ({img_w}×{img_h}, sha256 {sha[:12]})"
    parts = [tr("deck.footer_image", lang, image=name, sha=sha[:12]), tr("deck.footer_model", lang, model=loaded.name)]
    facts = [(tr("deck.fact_image", lang), image_text), (tr("deck.fact_model", lang), loaded.name),
             (tr("deck.fact_input", lang), f"{W}×{H}")]
    if "layer" in choice:
        q = choice["query"]
        qname = q.upper() if isinstance(q, str) else tr("common.patch_rc", lang, r=q[0], c=q[1])
        parts.append(tr("deck.footer_choice", lang, layer=choice["layer"], head=choice["head"], query=qname))
        facts += [(tr("deck.fact_layers", lang), tr("deck.fact_layers_v", lang, n=choice["layers"], k=choice["layer"])),
                  (tr("deck.fact_heads", lang), tr("deck.fact_heads_v", lang, n=choice["heads"], h=choice["head"])),
                  (tr("deck.fact_query", lang), qname)]
    footer = " · ".join(parts)
    text = deck_html(slides, facts, footer, lang)
    out_dir = os.path.dirname(os.path.abspath(out_html))
    try:
        os.makedirs(out_dir, exist_ok=True)
        with open(out_html, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise UserError(f"--out {out_html}: cannot write there ({e.strerror or type(e).__name__})") from None
    pages = print_pdf(out_html, pdf) if pdf else None
    return DeckInfo(os.path.abspath(out_html), os.path.abspath(pdf) if pdf else None,
                    tuple(s.title for s in slides), os.path.getsize(out_html), pages, time.perf_counter() - t0, lang)


# ------------------------------------------------------------------------------------------- CLI

def add_lesson_parser(sub) -> None:
    """``attention-viz lesson --image PHOTO --model NAME --out deck.html [--pdf deck.pdf] [--lang zh-CN]``."""
    p = sub.add_parser("lesson", help="write the lesson on one image as a self-contained HTML slide deck (and PDF)")
    p.add_argument("--image", required=True, help="the photo the lesson is computed on")
    p.add_argument("--model", required=True, help="demo-vit, a timm name, hf:ORG/NAME, ... (as for export)")
    p.add_argument("--out", required=True, help="the HTML deck to write")
    p.add_argument("--pdf", help="also print the slides to this PDF (headless Chromium), one page per slide")
    p.add_argument("--lang", default="en", help="en or zh-CN (简体中文)")
    p.add_argument("--layer", type=int, default=None, help="self-attention layer of the query steps (default: last)")
    p.add_argument("--head", type=int, default=None, help="head of the query steps (default: 0)")
    p.add_argument("--query", default=None, help="query token: 'row,col' of a patch or 'cls' (default: centre patch)")
    p.set_defaults(handler=lesson_command)


def lesson_command(args) -> int:
    import sys
    try:
        lang = normalize_lang(args.lang)
    except ValueError as e:
        raise UserError(f"--lang: {e}") from None
    info = write_deck(args.image, args.model, args.out, layer=args.layer, head=args.head, query=args.query,
                      lang=lang, pdf=args.pdf)
    pdf = f", {info.pdf_path} ({info.pdf_pages} pages)" if info.pdf_path else ""
    print(f"wrote {info.html_path} ({len(info.slides)} slides, {info.html_bytes / 1e6:.1f} MB){pdf} "
          f"in {info.seconds:.1f} s", file=sys.stderr)
    return 0


__all__ = ["Slide", "DeckInfo", "lesson_slides", "deck_html", "formula_png", "print_pdf", "pdf_page_count",
           "write_deck", "add_lesson_parser", "lesson_command"]
