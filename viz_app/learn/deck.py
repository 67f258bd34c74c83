"""The lesson as slides, from the Learn tab: the page's image, model, layer, head and query written as one
self-contained HTML deck (and a PDF of it where the server has Chromium), in the page's language.

The deck is `attention.lesson.deck.write_deck` (the CLI's ``attention-viz lesson``), run on the session's
decoded photo (so the deck's image sha256 is the page's: the sha256 of the decoded RGB pixels) and the page's
loaded model, at the lesson's place (`Page.lesson`: layer, head, query, temperature). Each call writes into a
folder of its own inside Gradio's cache folder: nothing is shared between browser tabs, and Gradio's cache policy
(`delete_cache` of the page) deletes the files.
"""
from __future__ import annotations

import logging
import os
import re
import tempfile

import gradio as gr

from attention.errors import UserError

from ..events import handler
from ..main_view import provenance
from ..words import tr
from .step import analysis_and_model, layer_index, self_attention
from .steps.query import query_of

log = logging.getLogger("viz_app")

DECK_OUT = ("learn_deck_files", "learn_deck_md")


def deck_folder() -> str:
    """A new folder of its own for one deck, inside Gradio's cache folder (served, and deleted by its policy)."""
    from gradio.utils import get_upload_folder
    root = os.path.join(get_upload_folder(), "lesson-decks")
    os.makedirs(root, exist_ok=True)
    return tempfile.mkdtemp(prefix="deck-", dir=root)


def deck_stem(image_name, model: str, lang: str) -> str:
    """``<image stem>_<model>_<lang>``, in file-name-safe characters."""
    stem = os.path.splitext(os.path.basename(image_name or ""))[0] or "lesson"
    safe = "_".join(re.sub(r"[^A-Za-z0-9.-]+", "_", p).strip("._") or "x" for p in (stem, model, lang))
    return safe[:120]


def lesson_choice(place, analysis) -> dict:
    """The deck's layer / head / query: the lesson's place, kept inside this model's ranges as the Learn tab
    shows it (none for a model without self-attention over patches: the deck's slides then say why)."""
    layers = self_attention(analysis)
    if not layers:
        return {}
    k = layer_index(place, len(layers))
    head = min(max(0, int(place.head)), layers[k].num_heads - 1)
    return {"layer": k, "head": head, "query": query_of(place)}


def query_name(query, lang: str) -> str:
    return query.upper() if isinstance(query, str) else tr(lang, "common.patch_rc", r=query[0], c=query[1])


@handler(outputs=DECK_OUT)
def on_deck(ctx) -> dict:
    """"Download the lesson as slides": the deck's HTML (and PDF) as downloads, and what was written."""
    from attention.lesson.deck import CHROMIUM, print_pdf, write_deck
    if ctx.page.image is None and ctx.page.sha is None:
        return {"learn_deck_files": gr.update(value=None, visible=False),
                "learn_deck_md": gr.update(value=tr(ctx, "app.learn.deck_no_image"), visible=True)}
    a, loaded = analysis_and_model(ctx)
    place, lang = ctx.page.lesson, ctx.lang
    choice = lesson_choice(place, a)
    folder = deck_folder()
    stem = deck_stem(ctx.page.image_name, a.model_key, lang)
    html_path = os.path.join(folder, stem + ".html")
    photo = a.photo.copy()              # named as the page names it (the deck's footer shows the name)
    photo.filename = ctx.page.image_name or ""
    ctx.progress(0.1, tr(ctx, "app.learn.deck_btn"))
    info = write_deck(photo, loaded, html_path, lang=lang, temperature=float(place.temperature), **choice)
    files, notes = [info.html_path], []
    if os.path.exists(CHROMIUM):
        ctx.progress(0.8, "PDF")
        pdf_path = os.path.join(folder, stem + ".pdf")
        try:
            print_pdf(info.html_path, pdf_path)
            files.append(pdf_path)
        except UserError as e:         # the HTML deck is there all the same
            log.warning("deck PDF not printed: %s", e)
            notes.append(tr(ctx, "app.learn.deck_pdf_failed"))
    else:
        notes.append(tr(ctx, "app.learn.deck_no_pdf"))
    where = provenance(a.model_key, a.image_sha, ctx.page.image_name, lang=lang)
    said_choice = (tr(ctx, "app.learn.deck_choice", layer=choice["layer"], head=choice["head"],
                      query=query_name(choice["query"], lang)) if choice else "")
    md = tr(ctx, "app.learn.deck_done", n=len(info.slides), seconds=info.seconds, source=where, choice=said_choice)
    return {"learn_deck_files": gr.update(value=files, visible=True),
            "learn_deck_md": gr.update(value="  \n".join([md] + notes), visible=True)}


def cleared() -> dict:
    """No deck of another image, model or language stays offered."""
    return {"learn_deck_files": gr.update(value=None, visible=False),
            "learn_deck_md": gr.update(value="", visible=False)}


__all__ = ["on_deck", "cleared", "deck_folder", "deck_stem", "lesson_choice", "DECK_OUT"]
