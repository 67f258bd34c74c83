"""The Learn tab: a lesson on attention, step by step, on the image and model chosen on the left.

A generic loop over the lesson's steps (`viz_app.learn.steps`, one file each): their tabs, Previous / Next
through them in order (step 2 part by part), presenter mode, and what happens when the page's model or image
changes (every step's controls re-fitted to the new model, the step on screen redrawn, the others cleared, so
no picture or number of another image or model is ever shown). Where the lesson is lives in the page's one
state (`Page.lesson`, `Page.presenter`).

Made for a projector: each step fits one 1280×720 screen, every picture is drawn at the size it is shown
(text >= 14 px; >= 20 px in presenter mode), and presenter mode keeps a way to change the image and the model
(the ☰ drawer: the input column over the lesson).

Every word of it is the page's language (`Page.lang`): fixed texts are `said` components (relabelled by the
language switch), the steps draw their pictures and explanations in ``ctx.lang``, and after a switch `on_key`
(a follower) redraws the step on screen in the new language at the same place (step, part, layer, head, query).
The whole lesson can be downloaded as slides (`viz_app.learn.deck`).
"""
from __future__ import annotations

import gradio as gr

from ..events import handler
from ..words import said, tr
from . import deck
from .step import STALE, Step, text_box
from .steps import step_named
from .steps import steps as lesson_steps     # (the name `steps` stays the subpackage's)

INTRO = "app.learn.intro"


def _names(step: Step) -> tuple[str, ...]:
    return step.outputs + step.extra


def all_outputs() -> tuple[str, ...]:
    """Every name any step fills, each once."""
    return tuple(dict.fromkeys(n for s in lesson_steps() for n in _names(s)))


def all_controls() -> tuple[str, ...]:
    return tuple(dict.fromkeys(n for s in lesson_steps() for n in s.controls))


def opener(step: Step):
    """The handler that opens `step`: the page's lesson moves there and the step is drawn."""
    @handler(outputs=_names(step))
    def on_open(ctx) -> dict:
        ctx.page = ctx.page.with_lesson(step=step.id)
        return {"page": ctx.page, **step.draw(ctx)}
    on_open.__name__ = f"on_open_{step.id}"
    return on_open


@handler(outputs=all_outputs())
def on_learn_opened(ctx) -> dict:
    """The Learn tab was opened: its current step is drawn for the page shown."""
    return step_named(ctx.page.lesson.step).draw(ctx)


def navigator(delta: int):
    """Previous (-1) / Next (+1): through the steps in order, a step's parts one by one."""
    @handler(outputs=("learn_tabs", "learn_part") + all_outputs())
    def on_nav(ctx) -> dict:
        order = lesson_steps()
        place = ctx.page.lesson
        here = step_named(place.step)
        if place.part in here.parts:
            i = here.parts.index(place.part) + delta
            if 0 <= i < len(here.parts):
                ctx.page = ctx.page.with_lesson(part=here.parts[i])
                return {"page": ctx.page, "learn_part": here.parts[i]}
        i = min(max(order.index(here) + delta, 0), len(order) - 1)
        new = order[i]
        out = {"learn_tabs": gr.Tabs(selected=new.tab_id)}
        part = place.part
        if new.parts:
            part = new.parts[0] if delta > 0 else new.parts[-1]
            out["learn_part"] = part
        ctx.page = ctx.page.with_lesson(step=new.id, part=part)
        if new is not here:
            out.update(new.draw(ctx))
        return {"page": ctx.page, **out}
    on_nav.__name__ = "on_previous" if delta < 0 else "on_next"
    return on_nav


@handler(inputs=("presenter",), outputs=all_outputs())
def on_presenter(ctx) -> dict:
    """Presenter mode on / off: the step on screen redrawn at the new size."""
    ctx.page = ctx.page.with_(presenter=bool(ctx.values.presenter))
    out = step_named(ctx.page.lesson.step).draw(ctx) if ctx.page.tab == "learn" else {}
    return {"page": ctx.page, **out}


@handler(outputs=all_outputs() + all_controls() + deck.DECK_OUT)
def on_key(ctx) -> dict:
    """A new image, model or language: every step's controls fitted to it, the step on screen redrawn (when the
    Learn tab is open) at the lesson's place, every other step cleared, no deck of the old one offered."""
    out = deck.cleared()
    for s in lesson_steps():
        out.update(s.cleared(tr(ctx, STALE)))
    if ctx.page.key is None:        # no model's tokens to offer yet: the query menu's one entry, in the page's words
        out["learn_token"] = gr.update(choices=[(tr(ctx, "app.learn.token_patch"), "patch")], value="patch")
        return out
    try:
        analysis = ctx.analysis()
    except Exception:  # noqa: BLE001 - the page's own handler said why
        return out
    for s in lesson_steps():
        updates, place = s.fit(ctx, analysis)
        out.update(updates)
        ctx.page = ctx.page.with_(lesson=place)
    if ctx.page.tab == "learn":
        out.update(step_named(ctx.page.lesson.step).draw(ctx))
    return {"page": ctx.page, **out}


def build_learn_tab(ui, events) -> gr.Tab:
    """The Learn tab's components and wiring (inside the page's `gr.Tabs`); returns the tab."""
    with said(gr.Tab("Learn", id="learn", elem_id="learn-tab"), label="app.tab.learn") as learn_tab:
        with gr.Row(equal_height=False, elem_id="learn-nav"):
            ui.learn_prev = said(gr.Button(elem_id="learn-prev", size="sm", scale=0, min_width=110),
                                 value="app.learn.previous")
            ui.learn_next = said(gr.Button(elem_id="learn-next", size="sm", variant="primary", scale=0,
                                           min_width=90), value="app.learn.next")
            said(text_box(elem_id="learn-intro"), value=INTRO)
            ui.learn_deck_btn = said(gr.Button(elem_id="learn-deck-btn", size="sm", scale=0, min_width=130),
                                     value="app.learn.deck_btn")
            # presenter mode hides the input column; this opens it as a drawer over the lesson
            # (an icon: the step tabs keep the header line in presenter mode)
            ui.learn_inputs_btn = gr.Button("☰", elem_id="learn-inputs-btn", size="sm", scale=0, min_width=48)
            ui.presenter = said(gr.Checkbox(False, elem_id="presenter", scale=0, min_width=160, container=False),
                                label="app.learn.presenter")
        with gr.Row(equal_height=False, elem_id="learn-deck-row"):
            ui.learn_deck_md = gr.Markdown(elem_id="learn-deck-md", visible=False)
            ui.learn_deck_files = said(gr.File(file_count="multiple", interactive=False, visible=False,
                                               elem_id="learn-deck-files"), label="app.learn.deck_files")
        with gr.Tabs(elem_id="learn-tabs") as ui.learn_tabs:
            tabs = {}
            for step in lesson_steps():
                with said(gr.Tab(step.title, id=step.tab_id, elem_id=f"{step.tab_id}-tab"),
                          label=step.title_key) as tabs[step.id]:
                    step.build(ui)

    private = dict(api_visibility="private")
    ui.presenter.change(None, ui.presenter, None, js="(v) => { window.vizPresenter(v); return []; }", **private)
    ui.learn_inputs_btn.click(None, None, None, js="() => { window.vizToggleInputs(); return []; }", **private)
    events.bind(ui.presenter.change, on_presenter)
    events.bind(ui.learn_prev.click, navigator(-1))
    events.bind(ui.learn_next.click, navigator(+1))
    events.bind(ui.learn_deck_btn.click, deck.on_deck)
    events.follow_key(on_key)
    for step in lesson_steps():
        open_step = opener(step)
        events.bind(tabs[step.id].select, open_step)
        step.wire(events, ui, open_step)
    return learn_tab


__all__ = ["build_learn_tab", "lesson_steps", "on_key", "on_learn_opened", "navigator", "opener"]
