"""The Faithfulness tab: delete (or insert) patches in the order of the current map and follow the explained
class's probability. It needs a classifier: on a backbone the tab says so at once (not after a press)."""
from __future__ import annotations

import gradio as gr

from attention.errors import UserError

from .. import main_view
from ..events import handler, message_of
from ..words import said, tr
from . import Tab
from .grid import stale

#: what the tab says on a model without a classifier (``{model}``: its name); `needs_a_classifier` in a language
NEEDS_A_CLASSIFIER = tr("en", "app.faithfulness.needs_classifier")


def needs_a_classifier(model: str, lang: str = "en") -> str:
    return tr(lang, "app.faithfulness.needs_classifier", model=model)


def build(ui, services) -> None:
    said(gr.Markdown(), value="app.faithfulness.intro")
    with gr.Row():
        ui.f_steps = said(gr.Slider(5, 40, value=20, step=1, elem_id="faith-steps"), label="app.faithfulness.steps")
        ui.f_random = said(gr.Checkbox(True, elem_id="faith-random"), label="app.faithfulness.random_order")
    ui.f_btn = said(gr.Button(variant="primary", elem_id="faith-btn"), value="app.faithfulness.button")
    ui.f_plot = gr.Plot(show_label=False, elem_id="faith-plot")
    ui.f_md = gr.Markdown("", elem_classes=["caption"], elem_id="faith-md")


def _run(ctx, analysis, view, steps: int, with_random: bool) -> dict:
    page = ctx.page
    try:
        fig, md = ctx.app.cb.faithfulness(ctx.session, page.model, page.sha, view, steps, page.image, ctx.progress,
                                          with_random, lang=page.lang)
    except (UserError, gr.Error) as e:      # not defined here: the reason stays in the panel, not only a toast
        return {"f_plot": None, "f_md": tr(page.lang, "app.faithfulness.not_here", why=message_of(e, page.lang))}
    return {"f_plot": fig, "f_md": main_view.signed(md, analysis, page)}


@handler(inputs=("f_steps", "f_random"), outputs=("f_plot", "f_md"), needs_image=True)
def on_faithfulness(ctx) -> dict:
    page = ctx.page
    analysis = ctx.analysis()
    if not analysis.predictions:
        return {"f_plot": None, "f_md": needs_a_classifier(analysis.model_key, page.lang)}
    view = main_view.resolve_view(page, analysis)
    return _run(ctx, analysis, view, int(ctx.values.f_steps), bool(ctx.values.f_random))


@handler(outputs=("f_plot", "f_md"))
def on_key(ctx) -> dict:
    """The image, model or language changed: a model without a classifier is said at once; the last run on the
    page's analysis is drawn again in the page's language (its curves are cached: no forward pass), else the
    panel is cleared as out of date."""
    page = ctx.page
    if page.sha:
        analysis = ctx.analysis()
        if not analysis.predictions:
            return {"f_plot": None, "f_md": needs_a_classifier(analysis.model_key, page.lang)}
        last = ctx.app.cb.last_faithfulness(analysis)
        if last is not None:
            view, steps, with_random = last
            return _run(ctx, analysis, view, steps, with_random)
    return {"f_plot": None, "f_md": stale(ctx.lang)}


def wire(events, ui) -> None:
    events.bind(ui.f_btn.click, on_faithfulness)


TAB = Tab("faithfulness", "Faithfulness", 50, build, wire, on_key=on_key)
