"""The Learn tab: a lesson on attention, step by step, on the image and model chosen on the left.

Layout and wiring only; the computations are in `viz_app.lesson` (steps 1-5) and
`viz_app.training` (step 6, "watch it learn").

Made for a projector: each step fits one 1280×720 screen (a large figure, its formula and numbers
beside it, the controls grouped above), and **Previous / Next** walk through the steps in order
(step 2's four parts one by one). The lesson follows the page's one source of truth (`key_state`,
the (model, image) the page shows): when it changes, every control range is re-derived, the step on
screen is recomputed and every other step is cleared, so no picture or number of another image or
model is ever shown. Every explanation ends with the image (short hash) and model it was computed on.
Handlers return named updates; a failure is one message in the step (or a toast), never an Error badge.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import gradio as gr

from attention.lesson.figure import PRESENTER_SCALE, message_picture
from attention.lesson.learning import LESSON_RECIPE

from .handlers import _session, message_of, provenance, slider_range, timed, warn
from .lesson import Lesson, QueryChoice
from .training import MAX_STEPS, MIN_STEPS, TrainingRoom, describe, progress_bar

LEARN_CSS = """
.kbd-hidden { display: none !important; }
body.presenter .prose, body.presenter .prose p, body.presenter .prose li { font-size: 1.2rem !important; line-height: 1.4; }
body.presenter label span, body.presenter button { font-size: 1.25rem !important; }
body.presenter #input-column { display: none !important; }
body.presenter .katex { font-size: 1.3em !important; }
.train-bar { height: 22px; background: #e5e7eb; border-radius: 11px; overflow: hidden; }
.train-bar > div { height: 100%; background: #f97316; transition: width 0.8s linear; }
#learn-pick img { image-rendering: pixelated; cursor: crosshair; }
/* formulas wrap instead of running off the right edge */
.learn-text .katex-display { overflow-x: auto; overflow-y: hidden; padding: 2px 0; }
.learn-text .katex-display > .katex { white-space: normal; }
/* step 2 shows one of its parts at a time, chosen by the part radio (client side, instant) */
#learn-query-pane .substep { display: none; }
#learn-query-pane[data-show="1"] .s1, #learn-query-pane[data-show="2"] .s2, #learn-query-pane[data-show="3"] .s3,
#learn-query-pane[data-show="4"] .s4, #learn-query-pane[data-show="slide"] .s5 { display: flex; }
#learn-query-pane:not([data-show]) .s1 { display: flex; }
#learn-nav { align-items: center; }
#learn-nav .prose p { margin: 0; font-size: 0.9rem; }
/* the lesson on a projector: the input column narrows while the Learn tab is open (presenter mode hides it),
   the pictures are drawn at the size of their box and shown at their own size (text >= 14 px at 1280x720;
   steps 1, 3, 4, 5 size them from the boxes below, attention/lesson: TOKENS_BOX, HEADS_BOX, ...) */
body.learning #input-column { max-width: 250px !important; min-width: 250px !important; }
body.learning #intro { display: none; }
#learn-part .wrap { flex-wrap: nowrap; gap: 4px; }
#learn-part label { padding: 4px 6px; white-space: nowrap; }
#learn-part .wrap { gap: 3px; }
body.presenter #intro, body.presenter #notice { display: none !important; }
body.presenter .learn-fig { height: 600px !important; }
body.presenter .learn-fig-wide { height: 620px !important; }
/* step 3's pictures are wide and low: their presenter box keeps the explanation below them on the screen */
body.presenter #learn-heads-img.learn-fig, body.presenter #learn-depth-img.learn-fig { height: 342px !important; }
/* presenter mode fits each step (each part of step 2) on one 1280x720 screen, pictures' text >= 20 px: a one-line
   header (the page's tabs, intro, API help and footer hidden; the step tabs on the left, Previous / Next and the
   Presenter box on the right of the same line), picture boxes sized from the space left, explanations that
   scroll inside their column if they would not fit (presenter boxes: HEADS_PRESENTER_BOX, ... in attention/lesson) */
body.presenter #main-tabs > .tab-wrapper, body.presenter footer, body.presenter #about { display: none !important; }
body.presenter #learn-nav > .learn-text, body.presenter #learn-train-intro { display: none !important; }
body.presenter .main { padding-top: 6px !important; padding-bottom: 0 !important; }
body.presenter .column:has(> #learn-nav) { position: relative; }
body.presenter #learn-nav { position: absolute; top: 0; left: 0; right: 0; width: auto !important; z-index: 5; gap: 8px;
  flex-wrap: nowrap; pointer-events: none; }
body.presenter #learn-nav > * { flex: 0 0 auto !important; pointer-events: auto; }
body.presenter #learn-nav > #learn-prev { margin-left: auto !important; }
body.presenter #learn-nav > #presenter { margin: 0 !important; width: auto !important; min-width: max-content !important;
  padding: 4px 8px; }
body.presenter #learn-tabs > .tab-wrapper { padding-right: 440px; }
body.presenter #learn-tabs button[role=tab] { font-size: 1.2rem !important; padding: 4px 10px; }
@media (max-width: 1199px) {   /* no room for one line: the header keeps its two rows */
  body.presenter #learn-nav { position: static; }
  body.presenter #learn-tabs > .tab-wrapper { padding-right: 0; }
}
body.presenter #learn-tokens-md, body.presenter #learn-layers-md, body.presenter #learn-special-md {
  max-height: calc(100vh - 120px); overflow-y: auto; }
body.presenter #learn-heads-md { max-height: calc(100vh - 412px); overflow-y: auto; }
/* step 2: narrower controls, the part selector and the temperature on one low row, the picture at its own size */
body.presenter #learn-query-controls { flex: 0 0 240px !important; min-width: 240px !important; }
body.presenter #learn-query-controls label span, body.presenter #learn-query-controls button { font-size: 1rem !important; }
body.presenter #learn-part-row { display: grid !important; grid-template-columns: max-content minmax(0, 1fr);
  align-items: center; }
body.presenter #learn-temperature { padding: 4px 10px !important; }
body.presenter #learn-temperature .info-text { display: none; }
body.presenter #learn-query-pane .learn-step-fig { flex: 0 0 612px !important; }
body.presenter #learn-query-pane .learn-fig { height: calc(100vh - 140px) !important; }
body.presenter #learn-query-pane .learn-fig-wide { height: calc(100vh - 190px) !important; }
body.presenter #learn-query-pane .learn-step-text .learn-text { max-height: calc(100vh - 145px); overflow-y: auto; }
/* step 6 on one 1280x720 screen in both modes: the intro, then the controls (left) beside the run's state and
   bar (right), then the two pictures (presenter mode below re-places them without the intro) */
#learn-train-tab > .column { display: grid !important; grid-template-columns: minmax(0, 1fr) minmax(0, 1fr);
  column-gap: 16px; row-gap: 8px; align-items: start; }
#learn-train-intro { grid-column: 1 / 3; grid-row: 1; }
#learn-train-controls { grid-column: 1; grid-row: 2 / 4; display: grid !important; gap: 8px;
  grid-template-columns: minmax(0, 1.6fr) minmax(0, 1fr) minmax(0, 1fr); }
#learn-train-controls > * { min-width: 0 !important; width: auto !important; margin: 0 !important; }
#learn-train-controls > :has(#learn-train-steps) { grid-column: 1; grid-row: 1 / 3; }
#learn-train-start { grid-column: 2; grid-row: 1; }
#learn-train-stop { grid-column: 3; grid-row: 1; }
#learn-train-save { grid-column: 2 / 4; grid-row: 2; }
#learn-train-md { grid-column: 2; grid-row: 2; max-height: 96px; overflow-y: auto; }
#learn-train-bar { grid-column: 2; grid-row: 3; }
#learn-train-pics { grid-column: 1 / 3; grid-row: 4; }
/* step 6 in presenter mode: the same grid without the intro, larger text, taller pictures */
body.presenter #learn-train-controls { grid-row: 1 / 3; }     /* no intro row in presenter mode */
body.presenter #learn-train-md { grid-row: 1; }
body.presenter #learn-train-bar { grid-row: 2; }
body.presenter #learn-train-pics { grid-row: 3; }
body.presenter #learn-train-steps { padding: 4px 10px !important; }
body.presenter #learn-train-controls button, body.presenter #learn-train-controls label span { font-size: 1.05rem !important; }
body.presenter #learn-train-md .prose, body.presenter #learn-train-md .prose p { font-size: 1.05rem !important; }
body.presenter #learn-train-bar, body.presenter #learn-train-bar .html-container { padding: 2px 6px !important; }
body.presenter #learn-train-pics .learn-fig { height: calc(100vh - 206px) !important; }
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

SHOW_PART_JS = ("(v) => { const p = document.querySelector('#learn-query-pane'); if (p) p.dataset.show = String(v);"
                " return []; }")

LESSON_STEPS = LESSON_RECIPE["steps"]
LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]

# the lesson in order: (tab id, tab title). Short titles: all six fit at 1024 px (no overflow menu).
STEPS = [("learn-tokens", "1 · Tokens"), ("learn-query", "2 · One query"), ("learn-heads", "3 · Heads"),
         ("learn-layers", "4 · Layers"), ("learn-special", "5 · Special tokens"), ("learn-train", "6 · Train")]
STEP_IDS = [s for s, _ in STEPS]
PARTS = [("1 scores", "1"), ("2 softmax", "2"), ("3 weights", "3"), ("4 output", "4"), ("slide", "slide")]
PART_IDS = [p for _, p in PARTS]

INTRO = "**A lesson on attention** on this image and model: every number is the model's own."


def _md(value: str = "", **kw) -> gr.Markdown:
    return gr.Markdown(value, latex_delimiters=LATEX, elem_classes=["learn-text"], **kw)


def _pic(label: str, elem_id: str, height=None, wide: bool = False) -> gr.Image:
    # the pictures carry their own titles; Gradio's label badge would cover them
    return gr.Image(label=label, show_label=False, interactive=False, format="png", elem_id=elem_id, height=height,
                    buttons=["download", "fullscreen"], elem_classes=["learn-fig-wide" if wide else "learn-fig"])


@dataclass
class PictureStep:
    """A lesson tab that shows pictures and an explanation when opened or when its button is pressed."""

    tab: gr.Tab
    button: gr.Button
    outputs: list            # the pictures, then the Markdown


def _picture_step(title: str, tab_id: str, button_text: str, pictures: list[tuple[str, str]],
                  height: int = 470) -> PictureStep:
    """The tab `title` (id `tab_id`): the pictures side by side (label, elem_id) with the explanation
    (elem_id ``<tab_id>-md``) beside them; call inside the lesson's `gr.Tabs`."""
    with gr.Tab(title, id=tab_id) as tab:
        with gr.Row(equal_height=False):
            with gr.Column(scale=3 * len(pictures)):
                with gr.Row():
                    images = [_pic(label, elem_id, height=height) for label, elem_id in pictures]
            with gr.Column(scale=3, min_width=260):
                button = gr.Button(button_text, variant="primary", elem_id=f"{tab_id}-btn", size="sm")
                md = _md(elem_id=f"{tab_id}-md")
    return PictureStep(tab, button, images + [md])


def _signed(md: str, key) -> str:
    """An explanation, signed with the image and model it was computed on."""
    if not key:
        return md
    return f"{md}  \n\n*Computed on {provenance(key[0], key[1])}.*"


class LearnHandlers:
    """Gradio-side handlers of the Learn tab (Requests, updates, SelectData -> plain `Lesson` calls).
    `ui` holds the tab's components by name; every handler returns {component: update}."""

    def __init__(self, lesson: Lesson, room: TrainingRoom):
        self.lesson, self.room = lesson, room
        self.ui = SimpleNamespace()

    @staticmethod
    def _choice(layer, head, token, row, col, temperature) -> QueryChoice:
        return QueryChoice(int(layer or 0), int(head or 0), str(token or "patch"), int(row or 0), int(col or 0),
                           float(temperature or 1.0))

    def _key(self, session, model, sha, image):
        a = self.lesson.analysis(session, model, sha, image)
        return a.model_key, a.image_sha

    # ------------------------------------------------------------------ outputs of each step
    def step_outputs(self, step: str) -> list:
        L = self.ui
        return {"learn-tokens": L.tokens_step.outputs, "learn-query": [L.pick] + L.step_outputs + [L.slide_img],
                "learn-heads": [L.heads_img, L.depth_img, L.heads_md], "learn-layers": L.layers_step.outputs,
                "learn-special": L.special_step.outputs, "learn-train": [L.train_curves, L.train_probes]}[step]

    def all_outputs(self) -> list:
        return [c for s in STEP_IDS for c in self.step_outputs(s)]

    def cleared(self, step: str, text: str = "") -> dict:
        """The step's pictures empty and its explanation replaced by `text`."""
        outs = self.step_outputs(step)
        if not outs or step == "learn-train":   # the training run's pictures belong to no image or model
            return {}
        out = {c: None for c in outs}
        mds = [self.ui.heads_md] if step == "learn-heads" else [outs[-1]]
        if step == "learn-query":
            mds = self.ui.step_outputs[1::2]
            out[self.ui.pick] = gr.skip()
        for md in mds:
            out[md] = text
        return out

    def failed(self, step: str, e: BaseException) -> dict:
        """A step that cannot be shown for this model or image: its pictures say why, no Error badge."""
        text = message_of(e)
        if step == "learn-train":
            return {}
        outs = self.step_outputs(step)
        out = self.cleared(step, f"**Not available here.** {text}")
        pictures = [c for c in outs if isinstance(c, gr.Image) and c is not self.ui.pick]
        if pictures:
            pic = message_picture(text, width=6.0, height=2.6)
            for p in pictures[:1] if step != "learn-query" else self.ui.step_outputs[0::2]:
                out[p] = pic
        return out

    def compute(self, step: str, session, model, sha, image, choice: QueryChoice, presenter: bool = False) -> dict:
        """The outputs of lesson step `step` for this session's (image, model), as named updates
        (``presenter``: the pictures drawn larger, text >= 20 px)."""
        scale = PRESENTER_SCALE if presenter else 1.0
        L, lesson = self.ui, self.lesson
        try:
            if step == "learn-train":              # needs no image or model: the session's training run
                return self._training_pictures(session, scale)
            key = self._key(session, model, sha, image)
            if step == "learn-tokens":
                pic, pos, md = lesson.tokens(session, model, sha, image, scale=scale)
                return dict(zip(L.tokens_step.outputs, [pic, pos, _signed(md, key)]))
            if step == "learn-query":
                out = {L.pick: lesson.picker(session, model, sha, choice, image)}
                values = lesson.query_steps(session, model, sha, choice, image, scale=scale)
                values[1::2] = [_signed(md, key) for md in values[1::2]]
                out.update(zip(L.step_outputs, values))
                return out
            if step == "learn-heads":
                pic, depth, md = lesson.heads(session, model, sha, choice, image, scale=scale)
                return {L.heads_img: pic, L.depth_img: depth, L.heads_md: _signed(md, key)}
            if step == "learn-layers":
                pic, md = lesson.across_layers(session, model, sha, image, scale=scale)
                return dict(zip(L.layers_step.outputs, [pic, _signed(md, key)]))
            if step == "learn-special":
                a, b, md = lesson.special_tokens(session, model, sha, image, scale=scale)
                return dict(zip(L.special_step.outputs, [a, b, _signed(md, key)]))
            return {}
        except Exception as e:  # noqa: BLE001 - not defined for this model, no image yet, ...
            return self.failed(step, e)

    # ------------------------------------------------------------------ the source of truth changed
    def ranges(self, session, model, sha, image, layer, head, token, row, col) -> tuple[dict, QueryChoice]:
        """Every control's range re-derived from the (model, image) shown; the choice kept inside them."""
        L = self.ui
        c = self.lesson.controls(session, model, sha, image)
        gh, gw = c["grid"]
        n_layers, n_heads = c["layers"], c["heads"]
        lay = int(layer if layer is not None else -1)
        lay = n_layers - 1 if lay < 0 or lay >= n_layers else lay
        choice = QueryChoice(max(lay, 0), min(int(head or 0), max(n_heads - 1, 0)),
                             token if token in ["patch"] + c["prefix"] else "patch",
                             min(int(row or 0), gh - 1), min(int(col or 0), gw - 1), 1.0)
        tokens = [("a patch (click it)", "patch")] + [(p.upper(), p) for p in c["prefix"]]
        return {L.layer: slider_range(n_layers, choice.layer), L.head: slider_range(n_heads, choice.head),
                L.token: gr.update(choices=tokens, value=choice.token), L.row: slider_range(gh, choice.row),
                L.col: slider_range(gw, choice.col), L.temperature: gr.update(value=1.0)}, choice

    @timed
    def on_key(self, key, page_tab, step, part, model, sha, image, layer, head, token, row, col, presenter=False,
               request: gr.Request = None):
        """A new image or model: ranges re-derived, the step on screen recomputed, the others cleared."""
        out = {}
        for s in STEP_IDS:
            out.update(self.cleared(s, "*Out of date: the image or model changed; open this step again.*"))
        out[self.ui.pick] = None
        if not key:
            return out
        session = _session(request)
        try:
            upd, choice = self.ranges(session, model, sha, image, layer, head, token, row, col)
        except Exception as e:  # noqa: BLE001
            warn(e)
            return out
        out.update(upd)
        if page_tab == "learn":
            out.update(self.compute(step, session, model, sha, image, choice, bool(presenter)))
        else:
            try:
                out[self.ui.pick] = self.lesson.picker(session, model, sha, choice, image)
            except Exception:  # noqa: BLE001 - no patch grid: the query step says why when opened
                pass
        return out

    # ------------------------------------------------------------------ navigation
    def on_open(self, step):
        """The Learn tab or one of its steps was opened (by a click on its tab)."""
        def handler(current, model, sha, image, layer, head, token, row, col, temperature, presenter=False,
                    request: gr.Request = None):
            s = current if step is None else step
            # the Learn tab itself re-opens the current step and leaves the step state alone: a quick click on
            # a step's tab right after it must not be overwritten by this (slower) answer
            out = {} if step is None else {self.ui.step: s}
            out.update(self.compute(s, _session(request), model, sha, image,
                                    self._choice(layer, head, token, row, col, temperature), bool(presenter)))
            # nothing to redraw (step 6 draws its own pictures): an empty dict would read as one output value
            return out or gr.skip()
        return timed(handler)

    def on_nav(self, delta: int):
        """Previous / Next: through the steps in order, step 2 part by part."""
        def handler(step, part, model, sha, image, layer, head, token, row, col, temperature, presenter=False,
                    request: gr.Request = None):
            L = self.ui
            i = STEP_IDS.index(step) if step in STEP_IDS else 0
            part = part if part in PART_IDS[:4] else "1"
            if step == "learn-query" and 0 <= int(part) - 1 + delta < 4:
                new_part = str(int(part) + delta)
                return {L.part: new_part}
            j = min(max(i + delta, 0), len(STEP_IDS) - 1)
            new = STEP_IDS[j]
            out = {L.tabs: gr.Tabs(selected=new), L.step: new}
            if new == "learn-query":
                out[L.part] = "1" if delta > 0 else "4"
            if new != step:
                out.update(self.compute(new, _session(request), model, sha, image,
                                        self._choice(layer, head, token, row, col, temperature), bool(presenter)))
            return out
        return timed(handler)

    # ------------------------------------------------------------------ step 2: one query
    @timed
    def on_steps(self, model, sha, image, layer, head, token, row, col, temperature, presenter=False,
                 request: gr.Request = None):
        return self.compute("learn-query", _session(request), model, sha, image,
                            self._choice(layer, head, token, row, col, temperature), bool(presenter))

    @timed
    def on_temperature(self, model, sha, image, layer, head, token, row, col, temperature, presenter=False,
                       request: gr.Request = None):
        L = self.ui
        session = _session(request)
        choice = self._choice(layer, head, token, row, col, temperature)
        try:
            key = self._key(session, model, sha, image)
            values = self.lesson.temperature(session, model, sha, choice, image,
                                             scale=PRESENTER_SCALE if presenter else 1.0)
        except Exception as e:  # noqa: BLE001
            return self.failed("learn-query", e)
        values[1::2] = [_signed(md, key) for md in values[1::2]]
        return dict(zip(L.step_outputs[2:6], values))

    @timed
    def on_pick(self, model, sha, image, pick, layer, head, temperature, presenter, evt: gr.SelectData,
                request: gr.Request):
        """A click on the patch picker: that patch becomes the query, and its steps are drawn in the same answer
        (one round trip, not two)."""
        L = self.ui
        if pick is None:
            gr.Warning("No image yet: pick one on the left.")
            return gr.skip()
        x, y = evt.index
        session = _session(request)
        try:
            row, col = self.lesson.click(session, model, sha, pick.shape[:2], x, y, image)
        except Exception as e:  # noqa: BLE001
            warn(e)
            return gr.skip()
        out = {L.token: "patch", L.row: row, L.col: col}
        out.update(self.compute("learn-query", session, model, sha, image,
                                self._choice(layer, head, "patch", row, col, temperature), bool(presenter)))
        return out

    def on_move(self, dr: int, dc: int):
        """A keyboard move of the query patch by (dr, dc), kept inside the grid, drawn in the same answer."""
        def move(model, sha, image, row, col, layer, head, temperature, presenter, request: gr.Request):
            L = self.ui
            session = _session(request)
            try:
                c = self.lesson.controls(session, model, sha, image)
            except Exception as e:  # noqa: BLE001
                warn(e)
                return gr.skip()
            gh, gw = c["grid"]
            r, k = min(max(int(row) + dr, 0), gh - 1), min(max(int(col) + dc, 0), gw - 1)
            out = {L.token: "patch", L.row: r, L.col: k}
            out.update(self.compute("learn-query", session, model, sha, image,
                                    self._choice(layer, head, "patch", r, k, temperature), bool(presenter)))
            return out
        return timed(move)

    @timed
    def on_slide(self, model, sha, image, layer, head, token, row, col, temperature, presenter=False,
                 request: gr.Request = None):
        L = self.ui
        choice = self._choice(layer, head, token, row, col, temperature)
        try:
            pic = self.lesson.slide(_session(request), model, sha, choice, image,
                                    scale=PRESENTER_SCALE if presenter else 1.0)
        except Exception as e:  # noqa: BLE001
            warn(e)
            return gr.skip()
        return {L.slide_img: pic, L.part: "slide"}

    # ------------------------------------------------------------------ step 6: watch it learn
    def _training_pictures(self, session: str, scale: float, st=None, probes: bool = True) -> dict:
        """The training curves (and, with `probes`, the probe maps) of the session's run in state `st` (default:
        its state now) drawn at `scale` (presenter mode: larger); no run: none."""
        from attention.lesson.learning_pictures import curves_picture, probes_picture
        L = self.ui
        st = st if st is not None else self.room.state(session)
        if st is None:
            return {L.train_curves: None, L.train_probes: None}
        out = {L.train_curves: curves_picture(st, scale)}
        if probes:
            out[L.train_probes] = probes_picture(self.room.run_of(session).probes, st.snapshots, scale=scale)
        return out

    def _training_view(self, session: str, seen, presenter=False) -> dict:
        """Status, curves, probes (only redrawn when a new snapshot arrived: drawing costs CPU the training
        needs), timer, seen; the pictures at presenter mode's scale when it is on."""
        L = self.ui
        st = self.room.state(session)
        if st is None:
            return {L.train_bar: progress_bar(None), L.train_md: describe(None), L.train_curves: None,
                    L.train_probes: None, L.train_timer: gr.Timer(active=False), L.train_seen: 0}
        n = len(st.snapshots)
        out = {L.train_bar: progress_bar(st), L.train_md: describe(st), L.train_timer: gr.Timer(active=st.active),
               L.train_seen: n}
        out.update(self._training_pictures(session, PRESENTER_SCALE if presenter else 1.0, st,
                                           probes=n != seen or not st.active))
        return out

    def on_train_start(self, steps, presenter, request: gr.Request):
        session = _session(request)
        try:
            self.room.start(session, int(steps))
        except Exception as e:  # noqa: BLE001
            warn(e)
            return gr.skip()
        return self._training_view(session, -1, presenter)

    def on_train_tick(self, seen, presenter, request: gr.Request):
        return self._training_view(_session(request), seen, presenter)

    def on_train_stop(self, seen, presenter, request: gr.Request):
        session = _session(request)
        self.room.stop(session)
        return self._training_view(session, seen, presenter)

    def on_unload(self, request: gr.Request):
        """The browser tab closed or reloaded: its training run, if any, stops (freeing the one slot)."""
        self.room.stop(_session(request))

    def on_train_save(self, request: gr.Request):
        L = self.ui
        try:
            name = self.room.save(_session(request))
        except Exception as e:  # noqa: BLE001
            warn(e)
            return gr.skip()
        gr.Info(f"Saved: {name} is now the model of every tab")
        choices = self.room.manager.choice_pairs()
        return {L.model_dd: gr.update(choices=choices, value=name), L.model_state: name,
                L.train_md: f"Saved as **{name}** and selected in the Model menu: every tab now shows its attention."}


def build_learn_tab(demo: gr.Blocks, lesson: Lesson, room: TrainingRoom, page):
    """The Learn tab's components and wiring (call inside the page's `gr.Tabs`); `page` holds the page's
    components by name (image_in, model_state, sha_state, key_state, page_tab, model_dd). Returns (the event
    of "save and use", for the page to re-analyse the current image with the saved model; the Learn tab)."""
    h = LearnHandlers(lesson, room)
    page.learn = h
    L = h.ui
    L.model_dd, L.model_state = page.model_dd, page.model_state
    private = dict(api_visibility="private")
    with gr.Tab("Learn", id="learn") as learn_tab:
        L.step = gr.State(STEP_IDS[0])
        with gr.Row(equal_height=False, elem_id="learn-nav"):
            L.prev_btn = gr.Button("◀ Previous", elem_id="learn-prev", size="sm", scale=0, min_width=110)
            L.next_btn = gr.Button("Next ▶", elem_id="learn-next", size="sm", variant="primary", scale=0,
                                   min_width=90)
            _md(INTRO)
            L.presenter = gr.Checkbox(False, label="Presenter mode", elem_id="presenter", scale=0, min_width=160,
                                      container=False)
        with gr.Tabs(elem_id="learn-tabs") as L.tabs:
            L.tokens_step = _picture_step(STEPS[0][1], "learn-tokens", "Show how this image becomes tokens",
                                          [("Patches and the token sequence", "learn-tokens-img"),
                                           ("Position embeddings: similarity of each patch's to all others",
                                            "learn-pos-img")], height=520)

            # ---------------------------------------------------------------- 2 one query
            with gr.Tab(STEPS[1][1], id="learn-query") as tab_query:
                with gr.Row(equal_height=False):
                    with gr.Column(scale=2, min_width=200, elem_id="learn-query-controls"):
                        L.pick = gr.Image(label="The query patch (click another one)", interactive=False,
                                          format="png", elem_id="learn-pick", height=210, buttons=["fullscreen"])
                        L.token = gr.Radio([("a patch (click it)", "patch")], value="patch", label="Query token",
                                           elem_id="learn-token")
                        with gr.Row():
                            L.row = gr.Slider(0, 7, value=3, step=1, label="Patch row", elem_id="learn-row",
                                              min_width=100)
                            L.col = gr.Slider(0, 7, value=3, step=1, label="Patch column", elem_id="learn-col",
                                              min_width=100)
                        with gr.Row():
                            L.layer = gr.Slider(0, 3, value=3, step=1, label="Layer", elem_id="learn-layer",
                                                min_width=100)
                            L.head = gr.Slider(0, 3, value=0, step=1, label="Head", elem_id="learn-head",
                                               min_width=100)
                        with gr.Row(elem_classes=["kbd-hidden"]):
                            moves = {k: gr.Button(k, elem_id=f"learn-{k}") for k in ("up", "down", "left", "right")}
                    with gr.Column(scale=7, elem_id="learn-query-pane"):
                        with gr.Row(equal_height=True, elem_id="learn-part-row"):
                            L.part = gr.Radio(PARTS, value="1", label="Part", show_label=False,
                                              elem_id="learn-part", scale=4, container=False)
                            L.temperature = gr.Slider(0.1, 5.0, value=1.0, step=0.05, label="Temperature T",
                                                      info="1 = the model", elem_id="learn-temperature", scale=2,
                                                      min_width=160)
                        with gr.Row(elem_classes=["kbd-hidden"]):
                            run_btn = gr.Button("Show the steps", elem_id="learn-run")
                        L.step_outputs = []
                        for k, label in enumerate(["1 · scores q·k", "2 · scale, temperature, softmax",
                                                   "3 · attention weights", "4 · weighted sum of values"]):
                            with gr.Row(equal_height=False, elem_classes=["substep", f"s{k + 1}"]):
                                with gr.Column(scale=3, min_width=300, elem_classes=["learn-step-fig"]):
                                    img = _pic(label, f"learn-step{k + 1}-img", height=400)
                                with gr.Column(scale=2, min_width=200, elem_classes=["learn-step-text"]):
                                    md = _md(elem_id=f"learn-step{k + 1}-md")
                            L.step_outputs += [img, md]
                        with gr.Row(elem_classes=["substep", "s5"]):
                            with gr.Column():
                                L.slide_btn = gr.Button("Draw the slide: all four steps in one picture",
                                                        elem_id="learn-slide-btn", size="sm")
                                L.slide_img = _pic("All four steps", "learn-slide", height=440, wide=True)

            # ---------------------------------------------------------------- 3 many heads
            with gr.Tab(STEPS[2][1], id="learn-heads") as tab_heads:
                with gr.Row(equal_height=False, elem_id="learn-heads-pics"):
                    L.heads_img = _pic("One query, every head", "learn-heads-img", height=300)
                    L.depth_img = _pic("Mean attention distance vs. depth", "learn-depth-img", height=300)
                with gr.Row(equal_height=False):
                    heads_btn = gr.Button("Show all heads", variant="primary", elem_id="learn-heads-btn",
                                          size="sm", scale=0, min_width=150)
                    L.heads_md = _md(elem_id="learn-heads-md")

            L.layers_step = _picture_step(STEPS[3][1], "learn-layers", "Compare raw attention and rollout",
                                          [("Raw attention and rollout, layer by layer", "learn-layers-img")])
            L.special_step = _picture_step(STEPS[4][1], "learn-special", "Show the special tokens",
                                           [("CLS / DIST / register tokens", "learn-prefix-img"),
                                            ("Token norms: high-norm tokens", "learn-norms-img")], height=520)

            # ---------------------------------------------------------------- 6 watch it learn
            with gr.Tab(STEPS[5][1], id="learn-train", elem_id="learn-train-tab") as tab_train:
                _md("Train the demo ViT **from scratch, here, on the CPU**, on fresh shapes: its attention on fixed probe "
                    "images moves from diffuse to the object. The other tabs keep working.", elem_id="learn-train-intro")
                with gr.Row(elem_id="learn-train-controls"):
                    train_steps = gr.Slider(MIN_STEPS, MAX_STEPS, value=LESSON_STEPS, step=10,
                                            label=f"Training steps (batches of {LESSON_RECIPE['batch_size']} images)",
                                            elem_id="learn-train-steps")
                    train_start = gr.Button("Start", variant="primary", elem_id="learn-train-start")
                    train_stop = gr.Button("Stop", variant="stop", elem_id="learn-train-stop")
                    train_save = gr.Button("Save and use this model", elem_id="learn-train-save")
                L.train_bar = gr.HTML(progress_bar(None), elem_id="learn-train-bar")
                L.train_md = _md(describe(None), elem_id="learn-train-md")
                with gr.Row(elem_id="learn-train-pics"):
                    # boxes of learning_pictures.BOX (+ the picture's frame): drawn at their own size
                    L.train_curves = _pic("Loss, accuracy, probe maps on the object", "learn-train-curves",
                                          height=330)
                    L.train_probes = _pic("Attention (rollout) on the probes as training goes", "learn-train-probes",
                                          height=330)
                L.train_timer = gr.Timer(1.5, active=False)
                L.train_seen = gr.State(0)

    # ==================================================================== wiring
    L.presenter.change(None, L.presenter, None,
                       js="(v) => { document.body.classList.toggle('presenter', v); return []; }", **private)
    L.part.change(None, L.part, None, js=SHOW_PART_JS, **private)
    base = [page.model_state, page.sha_state, page.image_in]
    q_in = base + [L.layer, L.head, L.token, L.row, L.col]
    everything = h.all_outputs()
    controls = [L.layer, L.head, L.token, L.row, L.col, L.temperature]
    page.key_state.change(h.on_key, [page.key_state, page.page_tab, L.step, L.part] + q_in + [L.presenter],
                          everything + controls, **private)
    tq = [L.temperature, L.presenter]
    open_in = [L.step] + q_in + tq
    learn_tab.select(h.on_open(None), open_in, [L.step] + everything, **private)
    for (step_id, _), tab in zip(STEPS, (L.tokens_step.tab, tab_query, tab_heads, L.layers_step.tab,
                                         L.special_step.tab, tab_train)):
        tab.select(h.on_open(step_id), open_in, [L.step] + h.step_outputs(step_id), **private)
    nav_out = [L.tabs, L.step, L.part] + everything
    L.prev_btn.click(h.on_nav(-1), [L.step, L.part] + q_in + tq, nav_out, **private)
    L.next_btn.click(h.on_nav(+1), [L.step, L.part] + q_in + tq, nav_out, **private)
    L.presenter.change(h.on_open(None), open_in, [L.step] + everything, **private)   # redraw larger / smaller
    query_out = h.step_outputs("learn-query")
    steps = dict(fn=h.on_steps, inputs=q_in + tq, outputs=query_out, trigger_mode="always_last",
                 show_progress="hidden", **private)
    run_btn.click(**steps)
    for comp in (L.layer, L.head, L.row, L.col):
        comp.input(**steps)
        comp.release(**steps)
    L.token.input(**steps)
    for event in (L.temperature.input, L.temperature.release):
        event(h.on_temperature, q_in + tq, query_out,
              trigger_mode="always_last", show_progress="hidden", **private)
    pick_out = [L.token, L.row, L.col] + query_out
    L.pick.select(h.on_pick, base + [L.pick, L.layer, L.head] + tq, pick_out, show_progress="hidden", **private)
    for name, (dr, dc) in {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}.items():
        moves[name].click(h.on_move(dr, dc), base + [L.row, L.col, L.layer, L.head] + tq, pick_out,
                          trigger_mode="always_last", show_progress="hidden", **private)
    L.slide_btn.click(h.on_slide, q_in + tq, [L.slide_img, L.part], **private)
    for button, step_id, outs in ((heads_btn, "learn-heads", h.step_outputs("learn-heads")),
                                  (L.tokens_step.button, "learn-tokens", L.tokens_step.outputs),
                                  (L.layers_step.button, "learn-layers", L.layers_step.outputs),
                                  (L.special_step.button, "learn-special", L.special_step.outputs)):
        button.click(_opener(h, step_id), q_in + tq, outs, **private)
    train_out = [L.train_bar, L.train_md, L.train_curves, L.train_probes, L.train_timer, L.train_seen]
    train_start.click(h.on_train_start, [train_steps, L.presenter], train_out, **private)
    L.train_timer.tick(h.on_train_tick, [L.train_seen, L.presenter], train_out, show_progress="hidden", **private)
    train_stop.click(h.on_train_stop, [L.train_seen, L.presenter], train_out, **private)
    demo.unload(h.on_unload)
    saved = train_save.click(h.on_train_save, None, [page.model_dd, page.model_state, L.train_md], **private)
    return saved, learn_tab


def _opener(h: LearnHandlers, step_id: str):
    """A button's handler: compute `step_id` (same inputs as a tab opening, without the current step)."""
    def handler(model, sha, image, layer, head, token, row, col, temperature, presenter=False,
                request: gr.Request = None):
        return h.compute(step_id, _session(request), model, sha, image,
                         h._choice(layer, head, token, row, col, temperature), bool(presenter))
    return handler


__all__ = ["build_learn_tab", "LearnHandlers", "LEARN_CSS", "LEARN_JS", "STEPS"]
