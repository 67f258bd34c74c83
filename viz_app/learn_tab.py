"""The Learn tab: a lesson on attention, step by step, on the image and model chosen on the left.

Layout and wiring only; the computations are in `viz_app.lesson` (steps 1-5) and
`viz_app.training` (step 6, "watch it learn").
"""
from __future__ import annotations

from dataclasses import dataclass

import gradio as gr

from attention.lesson.learning import LESSON_RECIPE

from .errors import as_gr_error
from .handlers import _session
from .lesson import Lesson, QueryChoice
from .training import MAX_STEPS, MIN_STEPS, TrainingRoom, describe, progress_bar

LEARN_CSS = """
.kbd-hidden { display: none !important; }
body.presenter .prose, body.presenter .prose p, body.presenter .prose li { font-size: 1.45rem !important; line-height: 1.5; }
body.presenter label span, body.presenter button { font-size: 1.25rem !important; }
body.presenter #input-column { display: none !important; }
body.presenter .katex { font-size: 1.3em !important; }
.train-bar { height: 22px; background: #e5e7eb; border-radius: 11px; overflow: hidden; }
.train-bar > div { height: 100%; background: #f97316; transition: width 0.8s linear; }
#learn-pick img { image-rendering: pixelated; cursor: crosshair; }
"""

# Shift + arrow keys move the lesson's query patch (when no text field has the focus).
LEARN_JS = """
() => {
  document.addEventListener('keydown', (e) => {
    if (!e.shiftKey || e.ctrlKey || e.altKey || e.metaKey) return;
    const t = e.target;
    if (t && (t.tagName === 'INPUT' || t.tagName === 'TEXTAREA' || t.isContentEditable)) return;
    const ids = {ArrowUp: 'learn-up', ArrowDown: 'learn-down', ArrowLeft: 'learn-left', ArrowRight: 'learn-right'};
    const id = ids[e.key];
    if (!id) return;
    const b = document.querySelector('#' + id);
    if (b) { e.preventDefault(); b.click(); }
  });
}
"""

LESSON_STEPS = LESSON_RECIPE["steps"]
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

INTRO = """### A lesson on attention, on this image and this model
Six steps, in order (the tabs below). Every number is the model's own: computed from its weights on this image and checked against
the attention captured in the forward pass. **Presenter tips:** large text below; every picture has a download
button (PNG for slides) and full-screen; presenter mode gives large text and the full width; **Shift + arrow keys** move the query patch; all controls work from the
keyboard (Tab, arrows, Enter)."""


def _md(value: str = "", **kw) -> gr.Markdown:
    return gr.Markdown(value, latex_delimiters=LATEX, **kw)


def _pic(label: str, elem_id: str, height=None) -> gr.Image:
    # the pictures carry their own titles; Gradio's label badge would cover them
    return gr.Image(label=label, show_label=False, interactive=False, format="png", elem_id=elem_id, height=height,
                    buttons=["download", "fullscreen"])


@dataclass
class PictureStep:
    """A lesson tab that shows pictures and an explanation when opened or when its button is pressed."""

    tab: gr.Tab
    button: gr.Button
    outputs: list            # the pictures, then the Markdown


def _picture_step(title: str, tab_id: str, button_text: str, pictures: list[tuple[str, str]]) -> PictureStep:
    """The tab `title` (id `tab_id`): a button, the pictures side by side (label, elem_id), the explanation
    (elem_id ``<tab_id>-md``); call inside the lesson's `gr.Tabs`."""
    with gr.Tab(title, id=tab_id) as tab:
        button = gr.Button(button_text, variant="primary", elem_id=f"{tab_id}-btn")
        with gr.Row():
            images = [_pic(label, elem_id) for label, elem_id in pictures]
        md = _md(elem_id=f"{tab_id}-md")
    return PictureStep(tab, button, images + [md])


class LearnHandlers:
    """Gradio-side handlers of the Learn tab (Requests, updates, SelectData -> plain `Lesson` calls)."""

    def __init__(self, lesson: Lesson, room: TrainingRoom):
        self.lesson, self.room = lesson, room

    @staticmethod
    def _choice(layer, head, token, row, col, temperature) -> QueryChoice:
        return QueryChoice(int(layer), int(head), str(token or "patch"), int(row), int(col),
                           float(temperature or 1.0))

    def on_image(self, model, sha, image, layer, head, token, row, col, request: gr.Request):
        """A new image or model: the controls' ranges and the patch picker (cheap; steps run on demand)."""
        if not sha and image is None:
            return (gr.skip(),) * 7
        session = _session(request)
        c = self.lesson.controls(session, model, sha, image)
        gh, gw = c["grid"]
        choice = self._choice(min(int(layer), c["layers"] - 1) if c["layers"] else 0,
                              min(int(head), max(c["heads"] - 1, 0)),
                              token if token in ["patch"] + c["prefix"] else "patch",
                              min(int(row), gh - 1), min(int(col), gw - 1), 1.0)
        tokens = [("a patch (click it)", "patch")] + [(p.upper(), p) for p in c["prefix"]]
        pick = self.lesson.picker(session, model, sha, choice, image) if c["layers"] else None
        return (pick,
                gr.update(maximum=max(c["layers"] - 1, 0), value=choice.layer if choice.layer >= 0 else
                          max(c["layers"] - 1, 0), interactive=c["layers"] > 1),
                gr.update(maximum=max(c["heads"] - 1, 0), value=choice.head, interactive=c["heads"] > 1),
                gr.update(choices=tokens, value=choice.token),
                gr.update(maximum=gh - 1, value=choice.row),
                gr.update(maximum=gw - 1, value=choice.col),
                "")

    def on_steps(self, model, sha, image, layer, head, token, row, col, temperature, request: gr.Request):
        session = _session(request)
        choice = self._choice(layer, head, token, row, col, temperature)
        pick = self.lesson.picker(session, model, sha, choice, image)
        return [pick] + self.lesson.query_steps(session, model, sha, choice, image)

    def on_temperature(self, model, sha, image, layer, head, token, row, col, temperature, request: gr.Request):
        choice = self._choice(layer, head, token, row, col, temperature)
        return self.lesson.temperature(_session(request), model, sha, choice, image)

    def on_pick(self, model, sha, image, pick, evt: gr.SelectData, request: gr.Request):
        if pick is None:
            raise gr.Error("no image yet: pick one on the left")
        x, y = evt.index
        row, col = self.lesson.click(_session(request), model, sha, pick.shape[:2], x, y, image)
        return "patch", row, col

    def on_move(self, dr: int, dc: int):
        """A keyboard move of the query patch by (dr, dc), kept inside the grid."""
        def move(model, sha, image, row, col, request: gr.Request):
            c = self.lesson.controls(_session(request), model, sha, image)
            gh, gw = c["grid"]
            return "patch", min(max(int(row) + dr, 0), gh - 1), min(max(int(col) + dc, 0), gw - 1)
        return move

    def on_slide(self, model, sha, image, layer, head, token, row, col, temperature, request: gr.Request):
        choice = self._choice(layer, head, token, row, col, temperature)
        return self.lesson.slide(_session(request), model, sha, choice, image)

    def on_heads(self, model, sha, image, layer, head, token, row, col, request: gr.Request):
        choice = self._choice(layer, head, token, row, col, 1.0)
        return self.lesson.heads(_session(request), model, sha, choice, image)

    def on_tokens(self, model, sha, image, request: gr.Request):
        return self.lesson.tokens(_session(request), model, sha, image)

    def on_layers(self, model, sha, image, request: gr.Request):
        return self.lesson.across_layers(_session(request), model, sha, image)

    def on_special(self, model, sha, image, request: gr.Request):
        return self.lesson.special_tokens(_session(request), model, sha, image)


    # ------------------------------------------------------------------ step 6: watch it learn
    def _training_view(self, session: str, seen):
        """(status, curves, probes or skip, timer, seen) for the session's run; the probe picture is only
        redrawn when a new snapshot arrived (drawing costs CPU the training needs)."""
        from attention.lesson.learning_pictures import curves_picture, probes_picture
        st = self.room.state(session)
        if st is None:
            return progress_bar(None), describe(None), None, None, gr.Timer(active=False), 0
        run = self.room.run_of(session)
        n = len(st.snapshots)
        probes = probes_picture(run.probes, st.snapshots) if n != seen or not st.active else gr.skip()
        return progress_bar(st), describe(st), curves_picture(st), probes, gr.Timer(active=st.active), n

    def on_train_start(self, steps, request: gr.Request):
        session = _session(request)
        try:
            self.room.start(session, int(steps))
        except Exception as e:  # noqa: BLE001
            raise as_gr_error(e) from None
        return self._training_view(session, -1)

    def on_train_tick(self, seen, request: gr.Request):
        return self._training_view(_session(request), seen)

    def on_train_stop(self, seen, request: gr.Request):
        session = _session(request)
        self.room.stop(session)
        return self._training_view(session, seen)

    def on_unload(self, request: gr.Request):
        """The browser tab closed or reloaded: its training run, if any, stops (freeing the one slot)."""
        self.room.stop(_session(request))

    def on_train_save(self, request: gr.Request):
        try:
            name = self.room.save(_session(request))
        except Exception as e:  # noqa: BLE001
            raise as_gr_error(e) from None
        gr.Info(f"Saved: {name} is now the model of every tab")
        choices = self.room.manager.choice_pairs()
        return (gr.update(choices=choices, value=name), name,
                f"Saved as **{name}** and selected in the Model menu: every tab now shows its attention.")


def build_learn_tab(demo: gr.Blocks, lesson: Lesson, room: TrainingRoom, image_in, model_state, sha_state, model_dd):
    """The Learn tab's components and wiring (call inside the page's `gr.Tabs`). Returns the event of
    "save and use", for the page to re-analyse the current image with the saved model."""
    h = LearnHandlers(lesson, room)
    private = dict(api_visibility="private")
    with gr.Tab("Learn", id="learn") as learn_tab:
        with gr.Row():
            _md(INTRO)
            presenter = gr.Checkbox(False, label="Presenter mode (large text, full width)", elem_id="presenter",
                                    scale=0, min_width=240,
                                    info="hides the input column; untick it to change the image or model")
        with gr.Tabs():
            tokens_step = _picture_step("1 · Tokens", "learn-tokens", "Show how this image becomes tokens",
                                        [("Patches and the token sequence", "learn-tokens-img"),
                                         ("Position embeddings: similarity of each patch's to all others",
                                          "learn-pos-img")])

            # ---------------------------------------------------------------- 2 one query
            with gr.Tab("2 · One query", id="learn-query") as tab_query:
                with gr.Row():
                    with gr.Column(scale=2, min_width=300):
                        pick = gr.Image(label="The query patch (click another one)", interactive=False,
                                        format="png", elem_id="learn-pick", height=340, buttons=["fullscreen"])
                        token = gr.Radio([("a patch (click it)", "patch")], value="patch", label="Query token",
                                         elem_id="learn-token")
                        with gr.Row():
                            row = gr.Slider(0, 7, value=3, step=1, label="Patch row", elem_id="learn-row")
                            col = gr.Slider(0, 7, value=3, step=1, label="Patch column", elem_id="learn-col")
                        with gr.Row():
                            layer = gr.Slider(0, 3, value=3, step=1, label="Layer", elem_id="learn-layer")
                            head = gr.Slider(0, 3, value=0, step=1, label="Head", elem_id="learn-head")
                        temperature = gr.Slider(0.1, 5.0, value=1.0, step=0.05,
                                                label="Temperature T (1 = the model)", elem_id="learn-temperature")
                        run_btn = gr.Button("Show the steps", variant="primary", elem_id="learn-run")
                        slide_btn = gr.Button("One picture of all four steps (for a slide)", elem_id="learn-slide-btn")
                        with gr.Row(elem_classes=["kbd-hidden"]):
                            moves = {k: gr.Button(k, elem_id=f"learn-{k}") for k in ("up", "down", "left", "right")}
                        status_md = _md(elem_id="learn-status")
                    with gr.Column(scale=5):
                        step_outputs = []
                        for k, label in enumerate(["1 · scores q·k", "2 · scale, temperature, softmax",
                                                   "3 · attention weights", "4 · weighted sum of values"]):
                            with gr.Row(equal_height=False):
                                with gr.Column(scale=3, min_width=320):
                                    img = _pic(label, f"learn-step{k + 1}-img", height=420)
                                with gr.Column(scale=2, min_width=240):
                                    md = _md(elem_id=f"learn-step{k + 1}-md")
                            step_outputs += [img, md]
                        slide_img = _pic("All four steps", "learn-slide")

            # ---------------------------------------------------------------- 3 many heads
            with gr.Tab("3 · Heads", id="learn-heads") as tab_heads:
                _md("The query, layer and patch of step 2, in **every head** of that layer; and each head's mean "
                    "attention distance against depth.")
                heads_btn = gr.Button("Show all heads", variant="primary", elem_id="learn-heads-btn")
                heads_img = _pic("One query, every head", "learn-heads-img")
                with gr.Row():
                    depth_img = _pic("Mean attention distance vs. depth", "learn-depth-img")
                    heads_md = _md(elem_id="learn-heads-md")

            layers_step = _picture_step("4 · Layers", "learn-layers", "Compare raw attention and rollout",
                                        [("Raw attention and rollout, layer by layer", "learn-layers-img")])
            special_step = _picture_step("5 · Special tokens", "learn-special", "Show the special tokens",
                                         [("CLS / DIST / register tokens", "learn-prefix-img"),
                                          ("Token norms: high-norm tokens", "learn-norms-img")])

            # ---------------------------------------------------------------- 6 watch it learn
            with gr.Tab("6 · Watch it learn", id="learn-train"):
                _md("Train the demo ViT **from scratch, here, on the CPU**, on freshly drawn shapes, and watch its "
                    "attention on a few fixed probe images move from diffuse (random weights) to the object. The other "
                    "tabs keep working meanwhile (a little slower).")
                with gr.Row():
                    train_steps = gr.Slider(MIN_STEPS, MAX_STEPS, value=LESSON_STEPS, step=10,
                                            label=f"Training steps (batches of {LESSON_RECIPE['batch_size']} images)",
                                            elem_id="learn-train-steps")
                    train_start = gr.Button("Start", variant="primary", elem_id="learn-train-start")
                    train_stop = gr.Button("Stop", variant="stop", elem_id="learn-train-stop")
                    train_save = gr.Button("Save and use this model", elem_id="learn-train-save")
                train_bar = gr.HTML(progress_bar(None), elem_id="learn-train-bar")
                train_md = _md(describe(None), elem_id="learn-train-md")
                with gr.Row():
                    train_curves = _pic("Loss, accuracy, probe maps on the object", "learn-train-curves")
                    train_probes = _pic("Attention (rollout) on the probes as training goes", "learn-train-probes")
                train_timer = gr.Timer(1.5, active=False)
                train_seen = gr.State(0)

    # ==================================================================== wiring
    presenter.change(None, presenter, None, js="(v) => { document.body.classList.toggle('presenter', v); return []; }",
                     **private)
    base = [model_state, sha_state, image_in]
    q_in = base + [layer, head, token, row, col]
    sha_state.change(h.on_image, q_in, [pick, layer, head, token, row, col, status_md], **private)
    steps = dict(fn=h.on_steps, inputs=q_in + [temperature], outputs=[pick] + step_outputs,
                 trigger_mode="always_last", **private)
    run_btn.click(**steps)
    tab_query.select(**steps)
    for comp in (layer, head, row, col):
        comp.release(**steps)
    token.input(**steps)
    for event in (temperature.input, temperature.release):
        event(h.on_temperature, q_in + [temperature], step_outputs[2:6], trigger_mode="always_last",
              show_progress="hidden", **private)
    pick.select(h.on_pick, base + [pick], [token, row, col], **private).then(**steps)
    for name, (dr, dc) in {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}.items():
        moves[name].click(h.on_move(dr, dc), base + [row, col], [token, row, col], **private).then(**steps)
    slide_btn.click(h.on_slide, q_in + [temperature], slide_img, **private)
    heads_in = q_in
    for trigger in (heads_btn.click, tab_heads.select):
        trigger(h.on_heads, heads_in, [heads_img, depth_img, heads_md], **private)
    learn_tab.select(h.on_tokens, base, tokens_step.outputs, **private)
    for step, fn in ((tokens_step, h.on_tokens), (layers_step, h.on_layers), (special_step, h.on_special)):
        for trigger in (step.button.click, step.tab.select):
            trigger(fn, base, step.outputs, **private)
    train_out = [train_bar, train_md, train_curves, train_probes, train_timer, train_seen]
    train_start.click(h.on_train_start, train_steps, train_out, **private)
    train_timer.tick(h.on_train_tick, train_seen, train_out, show_progress="hidden", **private)
    train_stop.click(h.on_train_stop, train_seen, train_out, **private)
    demo.unload(h.on_unload)
    return train_save.click(h.on_train_save, None, [model_dd, model_state, train_md], **private)


__all__ = ["build_learn_tab", "LearnHandlers", "LEARN_CSS", "LEARN_JS"]
