"""The Attention tab: the map on the photo, its caption, and the view controls."""
from __future__ import annotations

import gradio as gr

from attention.methods import menu

from .. import main_view
from ..events import handler
from ..words import said
from ..views import COLORMAPS, METHODS, MODES, NORMS, method_help
from . import Tab

VIEW_CONTROLS = ("method", "head", "query", "cmap", "alpha", "mode", "norm", "mass", "contour")


def build(ui, services) -> None:
    ui.heatmap = gr.Image(interactive=False, format="png", elem_id="heatmap", height=440,
                          buttons=["download", "fullscreen"])
    said(ui.heatmap, label="app.attention.heatmap")
    ui.caption = gr.Markdown("", elem_classes=["caption"], elem_id="caption")
    with gr.Row():
        ui.method = said(gr.Radio([(v, k) for k, v in METHODS.items()], value="rollout", elem_id="method"),
                         label="app.attention.method")
    with gr.Row():
        ui.layer = said(gr.Slider(0, 11, value=11, step=1, elem_id="layer"), label="app.attention.layer")
        ui.start_layer = said(gr.Slider(0, 11, value=0, step=1, elem_id="start-layer"),
                              label="app.attention.start_layer")
        # the head and query menus' entries depend on the model: `main_view.controls` writes them
        ui.head = said(gr.Dropdown([("mean", "mean")], value="mean", elem_id="head"), label="app.attention.head")
        ui.query = said(gr.Dropdown([("CLS", "auto")], value="auto", elem_id="query"), label="app.attention.query")
    with gr.Row():
        ui.cmap = said(gr.Dropdown(list(COLORMAPS), value="inferno", elem_id="cmap"), label="app.attention.cmap")
        ui.alpha = said(gr.Slider(0.0, 1.0, value=0.5, step=0.05, elem_id="alpha"), label="app.attention.alpha")
        ui.mode = said(gr.Radio(list(MODES), value="smooth", elem_id="mode"), label="app.attention.mode",
                       choices=[(f"app.attention.mode_{m}", m) for m in MODES])
        ui.norm = said(gr.Radio(list(NORMS), value="minmax", elem_id="norm"), label="app.attention.norm",
                       choices=[(f"app.attention.norm_{v}", v) for _, v in NORMS])
    with gr.Row():
        ui.mass = said(gr.Slider(0.0, 0.95, value=0.0, step=0.05, elem_id="mass"), label="app.attention.mass")
        ui.contour = said(gr.Checkbox(False, elem_id="contour"), label="app.attention.contour")
    said(gr.Markdown(elem_classes=["caption"], elem_id="method-help"), value=_method_help)


def _method_help(lang: str) -> str:
    """One line per method (the library's words), in `lang`."""
    try:
        return method_help(lang=lang)
    except TypeError:           # the library's words in one language only
        return method_help()


@handler(inputs=VIEW_CONTROLS, outputs=main_view.CONTROLS + ("heatmap", "caption"), needs_image=True)
def on_controls(ctx) -> dict:
    """A view control changed (not the layer: see `on_layer`): the page's view takes every control's value."""
    v = ctx.values
    page = ctx.page.with_view(method=v.method, head=str(v.head), query=str(v.query), cmap=v.cmap,
                              alpha=float(v.alpha), mode=v.mode, norm=v.norm, mass=float(v.mass) or None,
                              contour=bool(v.contour))
    return main_view.show(ctx, page, ctx.analysis(page))


@handler(inputs=("layer",), outputs=main_view.CONTROLS + ("heatmap", "caption"), needs_image=True)
def on_layer(ctx) -> dict:
    """The user chose a layer: it is kept for this model (another model shows its own default)."""
    page = ctx.page.choose_layer(int(ctx.values.layer))
    return main_view.show(ctx, page, ctx.analysis(page), skip=("layer",))


@handler(inputs=("start_layer",), outputs=main_view.CONTROLS + ("heatmap", "caption"), needs_image=True)
def on_start_layer(ctx) -> dict:
    """The first layer chaining methods (rollout, gradient-weighted) start from (Chefer et al. start at 1)."""
    page = ctx.page.with_view(start_layer=int(ctx.values.start_layer))
    return main_view.show(ctx, page, ctx.analysis(page), skip=("start_layer",))


@handler(outputs=main_view.CONTROLS + ("heatmap", "caption"), needs_image=True, select=True)
def on_heatmap_click(ctx) -> dict:
    """A click on the picture: where that patch attends."""
    analysis = ctx.analysis()
    x, y = ctx.event.index[0], ctx.event.index[1]
    view = ctx.app.cb.click(ctx.session, analysis, main_view.resolve_view(ctx.page, analysis), x, y)
    return main_view.show(ctx, ctx.page.with_(view=view), analysis)


@handler(outputs=main_view.CONTROLS + ("heatmap", "caption"), needs_image=True, select=True)
def on_class(ctx) -> dict:
    """A class clicked in the predictions: class-specific methods explain it."""
    analysis = ctx.analysis()
    label = ctx.event.value if isinstance(ctx.event.value, str) else (ctx.event.value or {}).get("label", "")
    target = ctx.app.cb.target_from_label(analysis, label)
    page = ctx.page.with_view(target=target, method=menu.class_method(
        analysis.result, ctx.page.view.method, has_classifier=bool(analysis.predictions)))
    return main_view.show(ctx, page, analysis)


@handler(outputs=main_view.CONTROLS + ("heatmap", "caption"), needs_image=True)
def on_reset_target(ctx) -> dict:
    return main_view.show(ctx, ctx.page.with_view(target=None), ctx.analysis())


def wire(events, ui) -> None:
    for name in ("method", "head", "query", "cmap", "mode", "norm", "contour"):
        events.bind(ui[name].input, on_controls, show_progress="minimal", trigger_mode="always_last")
    for name in ("alpha", "mass"):
        events.bind(ui[name].input, on_controls, show_progress="hidden", trigger_mode="always_last")
        events.bind(ui[name].release, on_controls, show_progress="hidden", trigger_mode="always_last")
    events.bind(ui.layer.input, on_layer, show_progress="hidden", trigger_mode="always_last")
    events.bind(ui.layer.release, on_layer, show_progress="hidden", trigger_mode="always_last")
    events.bind(ui.start_layer.release, on_start_layer, show_progress="hidden", trigger_mode="always_last")
    events.bind(ui.heatmap.select, on_heatmap_click)
    events.bind(ui.preds.select, on_class)
    events.bind(ui.reset_target.click, on_reset_target)


TAB = Tab("attention", "Attention", 0, build, wire)
