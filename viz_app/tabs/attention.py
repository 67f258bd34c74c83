"""The Attention tab: the map on the photo, its caption, and the view controls."""
from __future__ import annotations

import gradio as gr

from attention.methods import menu

from .. import main_view
from ..events import handler
from ..views import COLORMAPS, METHODS, MODES, NORMS, method_help
from . import Tab

VIEW_CONTROLS = ("method", "head", "query", "cmap", "alpha", "mode", "norm", "mass", "contour")


def build(ui, services) -> None:
    ui.heatmap = gr.Image(label="Attention on the photo (click a patch: where does it attend?)",
                          interactive=False, format="png", elem_id="heatmap", height=440,
                          buttons=["download", "fullscreen"])
    ui.caption = gr.Markdown("", elem_classes=["caption"], elem_id="caption")
    with gr.Row():
        ui.method = gr.Radio([(v, k) for k, v in METHODS.items()], value="rollout", label="Method",
                             elem_id="method")
    with gr.Row():
        ui.layer = gr.Slider(0, 11, value=11, step=1, label="Layer (0 = first)", elem_id="layer")
        ui.start_layer = gr.Slider(0, 11, value=0, step=1, label="Chain from layer (rollout)",
                                   elem_id="start-layer")
        ui.head = gr.Dropdown([("mean over heads", "mean")], value="mean", label="Head", elem_id="head")
        ui.query = gr.Dropdown([("CLS (default)", "auto")], value="auto", label="Query", elem_id="query")
    with gr.Row():
        ui.cmap = gr.Dropdown(list(COLORMAPS), value="inferno", label="Colormap", elem_id="cmap")
        ui.alpha = gr.Slider(0.0, 1.0, value=0.5, step=0.05, label="Opacity", elem_id="alpha")
        ui.mode = gr.Radio(list(MODES), value="smooth", label="Upsampling", elem_id="mode")
        ui.norm = gr.Radio(list(NORMS), value="minmax", label="Colour scale", elem_id="norm")
    with gr.Row():
        ui.mass = gr.Slider(0.0, 0.95, value=0.0, step=0.05,
                            label="Mass threshold (keep the patches holding this share; 0 = off)", elem_id="mass")
        ui.contour = gr.Checkbox(False, label="Outline", elem_id="contour")
    gr.Markdown(method_help(), elem_classes=["caption"])


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
