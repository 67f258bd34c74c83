"""The Faithfulness tab: delete (or insert) patches in the order of the current map and follow the explained
class's probability. It needs a classifier: on a backbone the tab says so at once (not after a press)."""
from __future__ import annotations

import gradio as gr

from attention.errors import UserError

from .. import main_view
from ..events import handler, message_of
from . import Tab
from .grid import STALE

NEEDS_A_CLASSIFIER = ("**Not available for this model.** Faithfulness follows the probability of the explained "
                      "class as patches are deleted or inserted; `{model}` has no classifier, so there is no class "
                      "probability to follow. Load a model with a classification head (or type classes for a "
                      "zero-shot model) to use this tab.")


def build(ui, services) -> None:
    gr.Markdown("Delete (or insert) patches in the order of the current map and follow the probability of the "
                "explained class. A faithful map: steep deletion, fast insertion.")
    with gr.Row():
        ui.f_steps = gr.Slider(5, 40, value=20, step=1, label="Steps", elem_id="faith-steps")
        ui.f_random = gr.Checkbox(True, label="Also a random patch order (reference)", elem_id="faith-random")
    ui.f_btn = gr.Button("Run deletion / insertion", variant="primary", elem_id="faith-btn")
    ui.f_plot = gr.Plot(show_label=False, elem_id="faith-plot")
    ui.f_md = gr.Markdown("", elem_classes=["caption"], elem_id="faith-md")


@handler(inputs=("f_steps", "f_random"), outputs=("f_plot", "f_md"), needs_image=True)
def on_faithfulness(ctx) -> dict:
    page = ctx.page
    analysis = ctx.analysis()
    if not analysis.predictions:
        return {"f_plot": None, "f_md": NEEDS_A_CLASSIFIER.format(model=analysis.model_key)}
    view = main_view.resolve_view(page, analysis)
    try:
        fig, md = ctx.app.cb.faithfulness(ctx.session, page.model, page.sha, view, int(ctx.values.f_steps),
                                          page.image, ctx.progress, bool(ctx.values.f_random))
    except (UserError, gr.Error) as e:      # not defined here: the reason stays in the panel, not only a toast
        return {"f_plot": None, "f_md": f"**Not available here.** {message_of(e)}"}
    return {"f_plot": fig, "f_md": main_view.signed(md, analysis, page)}


@handler(outputs=("f_plot", "f_md"))
def on_key(ctx) -> dict:
    page = ctx.page
    if page.sha:
        analysis = ctx.analysis()
        if not analysis.predictions:
            return {"f_plot": None, "f_md": NEEDS_A_CLASSIFIER.format(model=analysis.model_key)}
    return {"f_plot": None, "f_md": STALE}


def wire(events, ui) -> None:
    events.bind(ui.f_btn.click, on_faithfulness)


TAB = Tab("faithfulness", "Faithfulness", 50, build, wire, on_key=on_key)
