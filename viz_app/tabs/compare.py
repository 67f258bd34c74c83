"""The Compare tab: two settings side by side on the same image (two heads, layers, methods or models)."""
from __future__ import annotations

import gradio as gr

from .. import main_view
from ..events import handler
from ..views import METHODS, method_choices as methods_in
from ..words import said, tr
from . import Tab
from .grid import stale

SIDES = (("a", "rollout", -1), ("b", "raw", -1))
FUSIONS = ("mean", "max", "min")


def method_choices(lang: str = "en") -> list[tuple[str, str]]:
    """The method menu: every registered method by its name in `lang` (the value is the method's key)."""
    return methods_in(METHODS, lang)


def head_choices(heads: list[str], lang: str = "en") -> list[tuple[str, str]]:
    """A head menu's entries: the fusions by their name in `lang`, the heads by number (values unchanged)."""
    return [(tr(lang, f"app.compare.fusion_{h}") if h in FUSIONS else h, h) for h in heads]


def build(ui, services) -> None:
    said(gr.Markdown(), value="app.compare.intro")
    with gr.Row():
        for side, method, layer in SIDES:
            with gr.Column():
                S = side.upper()
                ui[f"cmp_{side}_model"] = said(gr.Dropdown(services.manager.choice_pairs(), allow_custom_value=True,
                                                           elem_id=f"compare-{side}-model"),
                                               label=f"app.compare.{side}_model")
                ui[f"cmp_{side}_method"] = said(gr.Dropdown(method_choices(), value=method,
                                                            elem_id=f"compare-{side}-method"),
                                                label=f"app.compare.{side}_method", choices=method_choices)
                with gr.Row():
                    ui[f"cmp_{side}_layer"] = said(gr.Number(layer, precision=0, elem_id=f"compare-{side}-layer"),
                                                   label="app.compare.layer")
                    ui[f"cmp_{side}_head"] = said(gr.Dropdown(head_choices(list(FUSIONS)), value="mean",
                                                              allow_custom_value=True, elem_id=f"compare-{side}-head"),
                                                  label="app.compare.head")
                ui[f"cmp_{side}_img"] = gr.Image(interactive=False, format="png", label=S,
                                                 elem_id=f"compare-{side}", height=340,
                                                 buttons=["download", "fullscreen"])
                ui[f"cmp_{side}_md"] = gr.Markdown("", elem_classes=["caption"], elem_id=f"compare-{side}-md")
    ui.cmp_btn = said(gr.Button(variant="primary", elem_id="compare-btn"), value="app.compare.button")


CONTROLS = tuple(f"cmp_{s}_{c}" for s, _, _ in SIDES for c in ("model", "method", "layer", "head"))
PICTURES = tuple(f"cmp_{s}_{c}" for s, _, _ in SIDES for c in ("img", "md"))


def _head_menu(ctx, model: str, value: str = "mean") -> dict:
    """The head menu of `model`'s last layer (the side's own model: another model has other heads), in the
    page's language; `value` where that model has it, else "mean"."""
    page = ctx.page
    analysis = ctx.app.cb.analysis_of(ctx.session, model, None if model != page.model else page.sha, page.image,
                                      ctx.progress)
    m = main_view.menu.layer_at(analysis.result, -1)
    heads = main_view.menu.head_choices(m, "raw")
    return gr.update(choices=head_choices(heads, page.lang), value=value if value in heads else "mean")


def _side_model(side: str):
    @handler(inputs=(f"cmp_{side}_model",), outputs=(f"cmp_{side}_head",), needs_image=True)
    def on_side_model(ctx) -> dict:
        return {f"cmp_{side}_head": _head_menu(ctx, getattr(ctx.values, f"cmp_{side}_model"))}
    on_side_model.__name__ = f"on_compare_model_{side}"
    return on_side_model


def _compared(ctx, v: dict) -> dict:
    """Both sides' pictures and captions (in the page's language) for the controls' values `v`."""
    page = ctx.page
    base = page.view.with_(click=None, query="auto")
    sides = []
    for side, _, _ in SIDES:
        layer = v[f"cmp_{side}_layer"]
        sides.append((v[f"cmp_{side}_model"] or page.model,
                      base.with_(method=v[f"cmp_{side}_method"], layer=int(layer if layer is not None else -1),
                                 head=str(v[f"cmp_{side}_head"]))))
    (ma, va), (mb, vb) = sides
    (pa, ca), (pb, cb_) = ctx.app.cb.compare(ctx.session, page.image, page.sha, ma, va, mb, vb, ctx.progress,
                                             lang=page.lang)
    said_a = main_view.provenance(ma, page.sha, page.image_name, page.lang)
    said_b = main_view.provenance(mb, page.sha, page.image_name, page.lang)
    return {"cmp_a_img": pa, "cmp_a_md": f"{ca}  \n{said_a}", "cmp_b_img": pb, "cmp_b_md": f"{cb_}  \n{said_b}"}


@handler(inputs=CONTROLS, outputs=PICTURES, needs_image=True)
def on_compare(ctx) -> dict:
    values = {n: getattr(ctx.values, n) for n in CONTROLS}
    out = _compared(ctx, values)
    # the comparison is this page's last: a language switch draws it again (`on_key`)
    ctx.app.cb.remember(ctx.analysis(), "compare", values)
    return out


@handler(outputs=PICTURES + CONTROLS)
def on_key(ctx) -> dict:
    """The page's model, image or language changed. The last comparison made on the page's (model, image) is
    drawn again in the page's language, with its settings (its maps are cached); otherwise both sides start from
    the page's model and the pictures are cleared as out of date."""
    page = ctx.page
    choices = ctx.app.manager.choice_pairs(ctx.session)
    analysis = ctx.app.cb.find(ctx.session, page.model, page.sha) if page.sha else None
    last = ctx.app.cb.recall(analysis, "compare") if analysis is not None else None
    if last is not None:
        out = _compared(ctx, last)
        for side, _, _ in SIDES:
            model = last[f"cmp_{side}_model"] or page.model
            out[f"cmp_{side}_model"] = gr.update(choices=choices, value=model)
            out[f"cmp_{side}_method"] = gr.update(choices=method_choices(page.lang), value=last[f"cmp_{side}_method"])
            out[f"cmp_{side}_layer"] = last[f"cmp_{side}_layer"]
            out[f"cmp_{side}_head"] = _head_menu(ctx, model, str(last[f"cmp_{side}_head"]))
        return out
    text = stale(page.lang)
    out = {"cmp_a_img": None, "cmp_b_img": None, "cmp_a_md": text, "cmp_b_md": text}
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
