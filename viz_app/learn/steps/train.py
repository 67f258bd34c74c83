"""Step 6 · Train: train the demo ViT from scratch here, on the CPU, and watch its attention move to the object.

One training run at a time in the whole app (`viz_app.training.TrainingRoom`), owned by the browser session
that started it; its pictures belong to that run, not to the page's image or model.
"""
from __future__ import annotations

import gradio as gr

from attention.lesson.learning import LESSON_RECIPE

from ...events import handler
from ...training import MAX_STEPS, MIN_STEPS, describe, progress_bar
from ..step import Step, picture_box, scale_of, text_box

VIEW = ("learn_train_bar", "learn_train_md", "learn_train_curves", "learn_train_probes", "learn_train_timer")


def pictures(ctx, st=None, probes: bool = True) -> dict:
    """The session's run's curves (and, with `probes`, its probe maps) in state `st` (default: now)."""
    from attention.lesson.learning_pictures import curves_picture, probes_picture
    room, scale = ctx.app.room, scale_of(ctx)
    st = st if st is not None else room.state(ctx.session)
    if st is None:
        return {"learn_train_curves": None, "learn_train_probes": None}
    out = {"learn_train_curves": curves_picture(st, scale)}
    if probes:
        out["learn_train_probes"] = probes_picture(room.run_of(ctx.session).probes, st.snapshots, scale=scale)
    return out


def training_view(ctx, seen: int) -> dict:
    """Status, bar, timer and pictures; the probes are only redrawn when a new snapshot arrived (drawing costs
    CPU the training needs; the page remembers how many it has drawn)."""
    st = ctx.app.room.state(ctx.session)
    if st is None:
        return {"page": ctx.page.with_(train_seen=0), "learn_train_bar": progress_bar(None),
                "learn_train_md": describe(None), "learn_train_curves": None, "learn_train_probes": None,
                "learn_train_timer": gr.Timer(active=False)}
    n = len(st.snapshots)
    return {"page": ctx.page.with_(train_seen=n), "learn_train_bar": progress_bar(st), "learn_train_md": describe(st),
            "learn_train_timer": gr.Timer(active=st.active), **pictures(ctx, st, probes=n != seen or not st.active)}


class TrainStep(Step):
    id, title, order = "train", "6 · Train", 60
    pictures = ("learn_train_curves", "learn_train_probes")
    needs_image = False

    def build(self, ui) -> None:
        text_box("Train the demo ViT **from scratch, here, on the CPU**, on fresh shapes: its attention on fixed "
                 "probe images moves from diffuse to the object. The other tabs keep working.",
                 elem_id="learn-train-intro")
        with gr.Row(elem_id="learn-train-controls"):
            ui.learn_train_steps = gr.Slider(MIN_STEPS, MAX_STEPS, value=LESSON_RECIPE["steps"], step=10,
                                             label=f"Training steps (batches of {LESSON_RECIPE['batch_size']} "
                                                   f"images)", elem_id="learn-train-steps")
            ui.learn_train_start = gr.Button("Start", variant="primary", elem_id="learn-train-start")
            ui.learn_train_stop = gr.Button("Stop", variant="stop", elem_id="learn-train-stop")
            ui.learn_train_save = gr.Button("Save and use this model", elem_id="learn-train-save")
        ui.learn_train_bar = gr.HTML(progress_bar(None), elem_id="learn-train-bar")
        ui.learn_train_md = text_box(describe(None), elem_id="learn-train-md")
        with gr.Row(elem_id="learn-train-pics"):
            # boxes of learning_pictures.BOX (+ the picture's frame): drawn at their own size
            ui.learn_train_curves = picture_box("Loss, accuracy, probe maps on the object", "learn-train-curves",
                                                330)
            ui.learn_train_probes = picture_box("Attention (rollout) on the probes as training goes",
                                                "learn-train-probes", 330)
        ui.learn_train_timer = gr.Timer(1.5, active=False)

    def compute(self, ctx) -> dict:
        return pictures(ctx)

    def wire(self, events, ui, opener) -> None:
        @handler(inputs=("learn_train_steps",), outputs=VIEW)
        def on_train_start(ctx) -> dict:
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
            name = ctx.app.room.save(ctx.session)
            gr.Info(f"Saved: {name} is now the model of every tab")
            from ...inputs import switch_model
            out = switch_model(ctx, name, lambda: ctx.app.manager.get(name, ctx.progress))
            out["learn_train_md"] = (f"Saved as **{name}** and selected in the Model menu: every tab now shows its "
                                     f"attention.")
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
