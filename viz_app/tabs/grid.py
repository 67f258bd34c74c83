"""The Grid tab: every layer × head for the current query; a click opens that layer and head."""
from __future__ import annotations

import gradio as gr

from .. import main_view
from ..events import handler
from ..words import said, tr
from . import Tab

#: what a tab's computed view says once the image or model changed (the catalogue's ``app.tabs.stale``)
STALE_KEY = "app.tabs.stale"
STALE = tr("en", STALE_KEY)


def stale(lang: str = "en") -> str:
    """`STALE` in `lang`."""
    return tr(lang, STALE_KEY)


def build(ui, services) -> None:
    ui.grid_btn = said(gr.Button(variant="primary", elem_id="grid-btn"), value="app.grid.button")
    said(gr.Markdown(), value="app.grid.intro")
    ui.grid_img = gr.Image(show_label=False, interactive=False, format="png", elem_id="grid",
                           buttons=["download", "fullscreen"])
    ui.grid_md = gr.Markdown("", elem_classes=["caption"], elem_id="grid-md")


def _sheet(ctx):
    analysis = ctx.analysis()
    view = main_view.resolve_view(ctx.page, analysis)
    page = ctx.page
    sheet, layout, caption = ctx.app.cb.grid(ctx.session, page.model, page.sha, view, page.image, ctx.progress,
                                             lang=page.lang)
    return analysis, sheet, layout, caption


def _grid_values(ctx) -> dict:
    analysis, sheet, _, caption = _sheet(ctx)
    return {"grid_img": sheet, "grid_md": main_view.signed(caption, analysis, ctx.page)}


@handler(outputs=("grid_img", "grid_md"), needs_image=True)
def on_grid(ctx) -> dict:
    return _grid_values(ctx)


@handler(outputs=("grid_img", "grid_md"))
def on_select(ctx) -> dict:
    """The tab was opened: the grid of what the page shows."""
    return _grid_values(ctx) if ctx.page.sha else {}


@handler(outputs=main_view.CONTROLS + ("heatmap", "caption", "tabs"), needs_image=True, select=True)
def on_grid_click(ctx) -> dict:
    """A cell clicked: the Attention tab on that layer and head (raw attention)."""
    analysis, _, layout, _ = _sheet(ctx)
    cell = ctx.app.cb.grid_cell(layout, ctx.event.index[0], ctx.event.index[1])
    if cell is None:
        return {}
    layer, head = cell
    page = ctx.page.choose_layer(layer).with_view(method="raw", head=head).with_(tab="attention")
    out = main_view.show(ctx, page, analysis)
    out["tabs"] = gr.Tabs(selected="attention")
    return out


@handler(outputs=("grid_img", "grid_md"))
def on_key(ctx) -> dict:
    """The image, model or language changed: the grid is redrawn if it is on screen, else cleared as out of date
    (opening the tab draws it, `on_select`)."""
    if ctx.page.tab == "grid" and ctx.page.sha:
        return _grid_values(ctx)
    return {"grid_img": None, "grid_md": stale(ctx.lang)}


def wire(events, ui) -> None:
    events.bind(ui.grid_btn.click, on_grid)
    events.bind(ui.grid_img.select, on_grid_click)


TAB = Tab("grid", "Grid", 20, build, wire, on_key=on_key, on_select=on_select)
