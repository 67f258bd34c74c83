"""The Heads tab: entropy, attention distance and prefix / register mass of every head, and their ranking."""
from __future__ import annotations

import gradio as gr

from .. import main_view
from ..analysis_plots import RANK_COLUMNS
from ..events import handler
from . import Tab
from .grid import STALE


def build(ui, services) -> None:
    ui.diag_btn = gr.Button("Compute head statistics", variant="primary", elem_id="diag-btn")
    ui.diag_md = gr.Markdown("", elem_classes=["caption"], elem_id="diag-md")
    with gr.Row():
        ui.ent_plot = gr.Plot(show_label=False, elem_id="ent-plot")
        ui.dist_plot = gr.Plot(show_label=False, elem_id="dist-plot")
    with gr.Row():
        ui.mass_plot = gr.Plot(show_label=False, elem_id="mass-plot")
    ui.rank_df = gr.Dataframe(headers=RANK_COLUMNS, label="Heads ranked (most focused first)", interactive=False,
                              max_height=340, wrap=True, elem_id="rank-df")


OUTPUTS = ("ent_plot", "dist_plot", "mass_plot", "rank_df", "diag_md")


@handler(outputs=OUTPUTS, needs_image=True)
def on_diagnostics(ctx) -> dict:
    page = ctx.page
    analysis = ctx.analysis()
    f1, f2, f3, rows, md = ctx.app.cb.diagnostics(ctx.session, page.model, page.sha, page.image, ctx.progress)
    return {"ent_plot": f1, "dist_plot": f2, "mass_plot": f3, "rank_df": rows,
            "diag_md": main_view.signed(md, analysis, page)}


@handler(outputs=OUTPUTS)
def on_key(ctx) -> dict:
    return {"ent_plot": None, "dist_plot": None, "mass_plot": None, "rank_df": None, "diag_md": STALE}


def wire(events, ui) -> None:
    events.bind(ui.diag_btn.click, on_diagnostics)


TAB = Tab("diagnostics", "Heads", 40, build, wire, on_key=on_key)
