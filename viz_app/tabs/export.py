"""The Export tab: the overlay, the layer × head sheet and every attention tensor (the CLI's export format)."""
from __future__ import annotations

import gradio as gr

from .. import main_view
from ..events import handler
from ..words import said
from . import Tab


def build(ui, services) -> None:
    said(gr.Markdown(), value="app.export.intro")
    ui.dl_btn = said(gr.Button(variant="primary", elem_id="prepare-downloads"), value="app.export.button")
    ui.dl_files = said(gr.File(file_count="multiple", interactive=False, elem_id="downloads"), label="app.export.files")


@handler(outputs=("dl_files",), needs_image=True)
def on_export(ctx) -> dict:
    page = ctx.page
    view = main_view.resolve_view(page, ctx.analysis())
    return {"dl_files": ctx.app.cb.export(ctx.session, page.model, page.sha, view, page.image, ctx.progress,
                                          image_name=page.image_name, lang=page.lang)}


@handler(outputs=("dl_files",))
def on_key(ctx) -> dict:
    """The image, model or language changed: the files of the last export of the page's (model, image) while
    they are on disk (the files are the same in every language), else none."""
    page = ctx.page
    analysis = ctx.app.cb.find(ctx.session, page.model, page.sha) if page.sha else None
    return {"dl_files": ctx.app.cb.last_export(analysis) if analysis is not None else None}


def wire(events, ui) -> None:
    events.bind(ui.dl_btn.click, on_export)


TAB = Tab("downloads", "Export", 70, build, wire, on_key=on_key)
