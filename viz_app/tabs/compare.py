"""The Compare tab: two settings side by side on the same image (two heads, layers, methods or models)."""
from __future__ import annotations

import gradio as gr

from .. import main_view
from ..events import handler
from ..views import METHODS
from . import Tab
from .grid import STALE

SIDES = (("a", "rollout", -1), ("b", "raw", -1))


def build(ui, services) -> None:
    gr.Markdown("Two settings side by side on the same image: two heads, layers, methods or models.")
    with gr.Row():
        for side, method, layer in SIDES:
            with gr.Column():
                S = side.upper()
                ui[f"cmp_{side}_model"] = gr.Dropdown(services.manager.choice_pairs(), allow_custom_value=True,
                                                      label=f"{S}: model", elem_id=f"compare-{side}-model")
                ui[f"cmp_{side}_method"] = gr.Dropdown([(v, k) for k, v in METHODS.items()], value=method,
                                                       label=f"{S}: method", elem_id=f"compare-{side}-method")
                with gr.Row():
                    ui[f"cmp_{side}_layer"] = gr.Number(layer, precision=0, label="layer (-1 = last)",
                                                        elem_id=f"compare-{side}-layer")
                    ui[f"cmp_{side}_head"] = gr.Dropdown(["mean", "max", "min"], value="mean",
                                                         allow_custom_value=True, label="head",
                                                         elem_id=f"compare-{side}-head")
                ui[f"cmp_{side}_img"] = gr.Image(interactive=False, format="png", label=S,
                                                 elem_id=f"compare-{side}", height=340,
                                                 buttons=["download", "fullscreen"])
                ui[f"cmp_{side}_md"] = gr.Markdown("", elem_classes=["caption"], elem_id=f"compare-{side}-md")
    ui.cmp_btn = gr.Button("Compare", variant="primary", elem_id="compare-btn")


CONTROLS = tuple(f"cmp_{s}_{c}" for s, _, _ in SIDES for c in ("model", "method", "layer", "head"))
PICTURES = tuple(f"cmp_{s}_{c}" for s, _, _ in SIDES for c in ("img", "md"))


def _head_menu(ctx, model: str) -> dict:
    """The head menu of `model`'s last layer (the side's own model: another model has other heads)."""
    page = ctx.page
    analysis = ctx.app.cb.analysis_of(ctx.session, model, None if model != page.model else page.sha, page.image,
                                      ctx.progress)
    m = main_view.menu.layer_at(analysis.result, -1)
    return gr.update(choices=main_view.menu.head_choices(m, "raw"), value="mean")


def _side_model(side: str):
    @handler(inputs=(f"cmp_{side}_model",), outputs=(f"cmp_{side}_head",), needs_image=True)
    def on_side_model(ctx) -> dict:
        return {f"cmp_{side}_head": _head_menu(ctx, getattr(ctx.values, f"cmp_{side}_model"))}
    on_side_model.__name__ = f"on_compare_model_{side}"
    return on_side_model


@handler(inputs=CONTROLS, outputs=PICTURES, needs_image=True)
def on_compare(ctx) -> dict:
    page = ctx.page
    base = page.view.with_(click=None, query="auto")
    v = vars(ctx.values)
    sides = []
    for side, _, _ in SIDES:
        layer = v[f"cmp_{side}_layer"]
        sides.append((v[f"cmp_{side}_model"] or page.model,
                      base.with_(method=v[f"cmp_{side}_method"], layer=int(layer if layer is not None else -1),
                                 head=str(v[f"cmp_{side}_head"]))))
    (ma, va), (mb, vb) = sides
    (pa, ca), (pb, cb_) = ctx.app.cb.compare(ctx.session, page.image, page.sha, ma, va, mb, vb, ctx.progress)
    return {"cmp_a_img": pa, "cmp_a_md": f"{ca}  \n{main_view.provenance(ma, page.sha, page.image_name)}",
            "cmp_b_img": pb, "cmp_b_md": f"{cb_}  \n{main_view.provenance(mb, page.sha, page.image_name)}"}


@handler(outputs=PICTURES + ("cmp_a_model", "cmp_b_model", "cmp_a_head", "cmp_b_head"))
def on_key(ctx) -> dict:
    """The page's model or image changed: both sides start from the page's model, the pictures are cleared."""
    page = ctx.page
    choices = ctx.app.manager.choice_pairs(ctx.session)
    out = {"cmp_a_img": None, "cmp_b_img": None, "cmp_a_md": STALE, "cmp_b_md": STALE}
    for side, _, _ in SIDES:
        out[f"cmp_{side}_model"] = gr.update(choices=choices, value=page.model)
        if page.sha:
            out[f"cmp_{side}_head"] = _head_menu(ctx, page.model)
    return out


def wire(events, ui) -> None:
    for side, _, _ in SIDES:
        events.bind(ui[f"cmp_{side}_model"].input, _side_model(side))
    events.bind(ui.cmp_btn.click, on_compare)


TAB = Tab("compare", "Compare", 30, build, wire, on_key=on_key)
