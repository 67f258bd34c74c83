"""The Export tab: the overlay, the layer × head sheet and every attention tensor (the CLI's export format)."""
from __future__ import annotations

import gradio as gr

from .. import main_view
from ..events import handler
from . import Tab


def build(ui, services) -> None:
    gr.Markdown("The current overlay (PNG), the layer × head sheet (PNG), and every attention tensor as `.npz` + "
                "`.json` in the format of `python -m attention export`, named after the uploaded file.")
    ui.dl_btn = gr.Button("Prepare downloads", variant="primary", elem_id="prepare-downloads")
    ui.dl_files = gr.File(label="Files", file_count="multiple", interactive=False, elem_id="downloads")


@handler(outputs=("dl_files",), needs_image=True)
def on_export(ctx) -> dict:
    page = ctx.page
    view = main_view.resolve_view(page, ctx.analysis())
    return {"dl_files": ctx.app.cb.export(ctx.session, page.model, page.sha, view, page.image, ctx.progress,
                                          image_name=page.image_name)}


@handler(outputs=("dl_files",))
def on_key(ctx) -> dict:
    return {"dl_files": None}


def wire(events, ui) -> None:
    events.bind(ui.dl_btn.click, on_export)


TAB = Tab("downloads", "Export", 70, build, wire, on_key=on_key)
