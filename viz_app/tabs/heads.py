"""The Heads tab: entropy, attention distance and prefix / register mass of every head, and their ranking."""
from __future__ import annotations

import gradio as gr

from .. import main_view
from ..analysis_plots import RANK_COLUMNS, rank_columns
from ..events import handler
from ..words import said
from . import Tab
from .grid import stale


def build(ui, services) -> None:
    ui.diag_btn = said(gr.Button(variant="primary", elem_id="diag-btn"), value="app.heads.button")
    ui.diag_md = gr.Markdown("", elem_classes=["caption"], elem_id="diag-md")
    with gr.Row():
        ui.ent_plot = gr.Plot(show_label=False, elem_id="ent-plot")
        ui.dist_plot = gr.Plot(show_label=False, elem_id="dist-plot")
    with gr.Row():
        ui.mass_plot = gr.Plot(show_label=False, elem_id="mass-plot")
    ui.rank_df = said(gr.Dataframe(headers=RANK_COLUMNS, interactive=False, max_height=340, wrap=True,
                                   elem_id="rank-df"), label="app.heads.rank")


OUTPUTS = ("ent_plot", "dist_plot", "mass_plot", "rank_df", "diag_md")


def _table(rows: list, lang: str) -> dict:
    """The ranking table with its headers in `lang` (a Dataframe's headers are part of its value)."""
    return {"headers": rank_columns(lang), "data": rows}


def _drawn(ctx, analysis) -> dict:
    page = ctx.page
    f1, f2, f3, rows, md = ctx.app.cb.diagnostics(ctx.session, page.model, page.sha, page.image, ctx.progress,
                                                  lang=page.lang)
    return {"ent_plot": f1, "dist_plot": f2, "mass_plot": f3, "rank_df": _table(rows, page.lang),
            "diag_md": main_view.signed(md, analysis, page)}


@handler(outputs=OUTPUTS, needs_image=True)
def on_diagnostics(ctx) -> dict:
    return _drawn(ctx, ctx.analysis())


@handler(outputs=OUTPUTS)
def on_key(ctx) -> dict:
    """The image, model or language changed: the statistics of the page's analysis are drawn again in the page's
    language where they were computed (no computation: they are cached with it), else cleared as out of date."""
    page = ctx.page
    if page.sha:
        analysis = ctx.app.cb.find(ctx.session, page.model, page.sha)
        if analysis is not None and ctx.app.cb.has_diagnostics(analysis):
            return _drawn(ctx, analysis)
    return {"ent_plot": None, "dist_plot": None, "mass_plot": None, "rank_df": _table([], ctx.lang),
            "diag_md": stale(ctx.lang)}


def wire(events, ui) -> None:
    events.bind(ui.diag_btn.click, on_diagnostics)


TAB = Tab("diagnostics", "Heads", 40, build, wire, on_key=on_key)
