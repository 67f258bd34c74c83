"""Step 6 · Train: train the demo ViT from scratch here, on the CPU, and watch its attention move to the object.

One training run at a time in the whole app (`viz_app.training.TrainingRoom`), owned by the browser session
that started it; its pictures belong to that run, not to the page's image or model.
"""
from __future__ import annotations

import gradio as gr

from attention.i18n import t
from attention.lesson.learning import LESSON_RECIPE

from ...events import handler
from ...training import MAX_STEPS, MIN_STEPS, describe, progress_bar
from ...words import build_language, said, tr
from ..step import Step, picture_box, scale_of, text_box

VIEW = ("learn_train_bar", "learn_train_md", "learn_train_curves", "learn_train_probes", "learn_train_timer")


def pictures(ctx, st=None, probes: bool = True) -> dict:
    """The session's run's curves (and, with `probes`, its probe maps) in state `st` (default: now), drawn in
    the page's language."""
    from attention.lesson.learning_pictures import curves_picture, probes_picture
    room, scale, lang = ctx.app.room, scale_of(ctx), ctx.lang
    st = st if st is not None else room.state(ctx.session)
    if st is None:
        return {"learn_train_curves": None, "learn_train_probes": None}
    out = {"learn_train_curves": curves_picture(st, scale, lang)}
    if probes:
        out["learn_train_probes"] = probes_picture(room.run_of(ctx.session).probes, st.snapshots, scale=scale,
                                                   lang=lang)
    return out


def training_view(ctx, seen: int) -> dict:
    """Status, bar, timer and pictures; the probes are only redrawn when a new snapshot arrived (drawing costs
    CPU the training needs; the page remembers how many it has drawn)."""
    st = ctx.app.room.state(ctx.session)
    if st is None:
        return {"page": ctx.page.with_(train_seen=0), "learn_train_bar": progress_bar(None),
                "learn_train_md": describe(None, ctx.lang), "learn_train_curves": None, "learn_train_probes": None,
                "learn_train_timer": gr.Timer(active=False)}
    n = len(st.snapshots)
    return {"page": ctx.page.with_(train_seen=n), "learn_train_bar": progress_bar(st),
            "learn_train_md": describe(st, ctx.lang),
            "learn_train_timer": gr.Timer(active=st.active), **pictures(ctx, st, probes=n != seen or not st.active)}


class TrainStep(Step):
    id, title, order = "train", "6 · Train", 60
    pictures = ("learn_train_curves", "learn_train_probes")
    texts = ("learn_train_md",)
    needs_image = False

    def build(self, ui) -> None:
        said(text_box(elem_id="learn-train-intro"), value="app.learn.train_intro")
        with gr.Row(elem_id="learn-train-controls"):
            ui.learn_train_steps = said(gr.Slider(MIN_STEPS, MAX_STEPS, value=LESSON_RECIPE["steps"], step=10,
                                                  elem_id="learn-train-steps"),
                                        label=lambda lang: t("app.learn.train_steps", lang,
                                                             batch=LESSON_RECIPE["batch_size"]))
            ui.learn_train_start = said(gr.Button(variant="primary", elem_id="learn-train-start"),
                                        value="app.learn.train_start")
            ui.learn_train_stop = said(gr.Button(variant="stop", elem_id="learn-train-stop"),
                                       value="app.learn.train_stop")
            ui.learn_train_save = said(gr.Button(elem_id="learn-train-save"), value="app.learn.train_save")
        ui.learn_train_bar = gr.HTML(progress_bar(None), elem_id="learn-train-bar")
        ui.learn_train_md = text_box(describe(None, build_language()), elem_id="learn-train-md")
        with gr.Row(elem_id="learn-train-pics"):
            # boxes of learning_pictures.BOX (+ the picture's frame): drawn at their own size
            ui.learn_train_curves = picture_box("app.learn.curves_pic", "learn-train-curves", 330)
            ui.learn_train_probes = picture_box("app.learn.probes_pic", "learn-train-probes", 330)
        ui.learn_train_timer = gr.Timer(1.5, active=False)

    def compute(self, ctx) -> dict:
        """The session's run (if any) as it is now, in the page's language (also after a language switch)."""
        st = ctx.app.room.state(ctx.session)
        return {**pictures(ctx, st), "learn_train_md": describe(st, ctx.lang)}

    def wire(self, events, ui, opener) -> None:
        @handler(inputs=("learn_train_steps",), outputs=VIEW)
        def on_train_start(ctx) -> dict:
            # (a refusal names its catalogue text: the page's toast says it in the page's language)
            ctx.app.room.start(ctx.session, int(ctx.values.learn_train_steps))
            return training_view(ctx, -1)

        @handler(outputs=VIEW)
        def on_train_tick(ctx) -> dict:
            return training_view(ctx, ctx.page.train_seen)

        @handler(outputs=VIEW)
        def on_train_stop(ctx) -> dict:
            ctx.app.room.stop(ctx.session)
            return training_view(ctx, ctx.page.train_seen)

        @handler(outputs=("model_dd", "learn_train_md"))
        def on_train_save(ctx) -> dict:
            """The trained model becomes the page's model (every tab follows: a key change)."""
            name = ctx.app.room.save(ctx.session, ctx.lang)
            gr.Info(tr(ctx, "app.learn.train_saved_toast", name=name))
            from ...inputs import switch_model
            out = switch_model(ctx, name, lambda: ctx.app.manager.get(name, ctx.progress))
            out["learn_train_md"] = tr(ctx, "app.learn.train_saved", name=name)
            return out

        events.bind(ui.learn_train_start.click, on_train_start)
        events.bind(ui.learn_train_timer.tick, on_train_tick, show_progress="hidden")
        events.bind(ui.learn_train_stop.click, on_train_stop)
        events.bind(ui.learn_train_save.click, on_train_save, key_change=True)

        def on_unload(request: gr.Request):
            """The browser tab closed or reloaded: its training run, if any, stops (freeing the one slot)."""
            ctx_session = getattr(request, "session_hash", None) or "local"
            events.app.room.stop(ctx_session)
        events.demo.unload(on_unload)


STEP = TrainStep()
