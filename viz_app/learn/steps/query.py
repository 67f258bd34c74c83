"""Step 2 · One query: q·k, softmax, the weights and the weighted sum of values, for one query on this image.

Every number comes from one extra forward of the same model on the same input that recomputes q, k, v and is
checked against the captured attention before it is shown (`attention.lesson.query`). Its four parts are
shown one at a time (Previous / Next walk through them), and a slide draws all four in one picture.
"""
from __future__ import annotations

import cv2
import gradio as gr
import numpy as np

from attention.errors import MethodNotDefinedError
from attention.lesson.query import QueryStep, layer_projections
from attention.lesson.query_pictures import (output_picture, query_steps_picture, scores_picture, softmax_picture,
                                             weights_picture)

from ...events import handler
from ...main_view import slider_range
from ...words import said, tr
from ..step import (Step, analysis_and_model, cached, layer_index, model_view, picture_box, scale_of,
                    self_attention, signed, text_box)

PICK_SIZE = 384          # long side of the clickable patch picker
#: step 2's parts: (catalogue key of the label, value); handlers and the page's script use the values
PARTS = (("app.learn.part_1", "1"), ("app.learn.part_2", "2"), ("app.learn.part_3", "3"), ("app.learn.part_4", "4"),
         ("app.learn.part_slide", "slide"))
PICTURE_LABELS = ("app.learn.fig_scores", "app.learn.fig_softmax", "app.learn.fig_weights", "app.learn.fig_output")
STEP_PICTURES = ("learn_step1_img", "learn_step2_img", "learn_step3_img", "learn_step4_img")
STEP_TEXTS = ("learn_step1_md", "learn_step2_md", "learn_step3_md", "learn_step4_md")
CONTROLS = ("learn_layer", "learn_head", "learn_token", "learn_row", "learn_col", "learn_temperature")


# ---------------------------------------------------------------------- the picker
def picker_size(view: np.ndarray) -> tuple[int, int]:
    """(height, width) of the picker picture of the model's view (its long side PICK_SIZE)."""
    H, W = view.shape[:2]
    f = PICK_SIZE / max(H, W)
    return round(H * f), round(W * f)


def picker_picture(view: np.ndarray, grid: tuple[int, int], row: int, col: int, active: bool = True) -> np.ndarray:
    """The model's view enlarged, with the patch grid and the chosen patch outlined (click to choose)."""
    h, w = picker_size(view)
    f = PICK_SIZE / max(view.shape[:2])
    big = cv2.resize(view, (w, h), interpolation=cv2.INTER_NEAREST if f >= 2 else cv2.INTER_AREA)
    out = big.copy()
    gh, gw = grid
    h, w = out.shape[:2]
    for r in range(1, gh):
        y = round(r * h / gh)
        out[max(0, y - 1):y + 1] = (out[max(0, y - 1):y + 1] * 0.4 + 255 * 0.6).astype(np.uint8)
    for c in range(1, gw):
        x = round(c * w / gw)
        out[:, max(0, x - 1):x + 1] = (out[:, max(0, x - 1):x + 1] * 0.4 + 255 * 0.6).astype(np.uint8)
    if active:
        y0, y1 = round(row * h / gh), round((row + 1) * h / gh)
        x0, x1 = round(col * w / gw), round((col + 1) * w / gw)
        cv2.rectangle(out, (x0, y0), (x1 - 1, y1 - 1), (255, 45, 85), max(2, round(h / 128)))
    return out


def picker_cell(shape: tuple[int, int], grid: tuple[int, int], x: float, y: float) -> tuple[int, int]:
    """(row, col) of a click at pixel (x, y) of a picker picture of `shape` (H, W)."""
    h, w = shape
    gh, gw = grid
    return min(gh - 1, max(0, int(y * gh / h))), min(gw - 1, max(0, int(x * gw / w)))


# ---------------------------------------------------------------------- the texts
# (the library's explanations, in the page's language: the same words as the deck's slides)
def explain_scores(step: QueryStep, lang: str = "en") -> str:
    """``s_j = q_i · k_j``, with this query's numbers."""
    from attention.lesson.explain import explain_scores as explanation
    return explanation(step, lang).markdown()


def explain_softmax(step: QueryStep, temperature: float, lang: str = "en") -> str:
    """``a_j(T) = exp(s_j / (√d T)) / Σ_k exp(s_k / (√d T))``, at T = 1 and at `temperature`."""
    from attention.lesson.explain import explain_softmax as explanation
    return explanation(step, temperature, lang).markdown()


def explain_weights(step: QueryStep, temperature: float, lang: str = "en") -> str:
    """The top weights at `temperature` (those of the picture beside it) and the check against the capture."""
    from attention.lesson.explain import explain_weights as explanation
    return explanation(step, temperature, lang).markdown()


def explain_output(step: QueryStep, lang: str = "en") -> str:
    """``z_i = Σ_j a_j v_j``."""
    from attention.lesson.explain import explain_output as explanation
    return explanation(step, lang).markdown()


# ---------------------------------------------------------------------- the computation
def query_of(place):
    return (int(place.row), int(place.col)) if place.token == "patch" else place.token


def query_step(ctx, analysis, loaded, place) -> QueryStep:
    """The lesson's query at the page's place: q, k, v of its layer recomputed (cached per layer)."""
    layers = self_attention(analysis)
    if not layers:
        raise MethodNotDefinedError(tr(ctx, "app.learn.no_query"))
    k = layer_index(place, len(layers))
    # (the projections hold no words: one entry for every language; an error is raised in the page's)
    proj = cached(ctx, analysis, ("projections", k),
                  lambda: layer_projections(loaded.model, analysis.prepared.tensor, k, ctx.lang))
    head = min(max(0, int(place.head)), proj.num_heads - 1)
    return proj.step(head, query_of(place))


def _pictures(ctx, analysis, step: QueryStep, place, which=(0, 1, 2, 3)) -> list:
    """The parts' pictures (cached with the analysis, per language: a revisit costs nothing)."""
    view = model_view(ctx, analysis)
    T, scale, lang = float(place.temperature), scale_of(ctx), ctx.lang
    layer = layer_index(place, len(self_attention(analysis)))     # None and the last layer: one entry
    key = ("query", layer, step.head, str(query_of(place)), scale, lang)
    draw = {0: (("scores",), lambda: scores_picture(step, view, scale, lang)),
            1: (("softmax", T), lambda: softmax_picture(step, T, scale, lang)),
            2: (("weights", T), lambda: weights_picture(step, view, T, scale, lang)),
            3: (("output",), lambda: output_picture(step, scale=scale, lang=lang))}
    return [cached(ctx, analysis, key + draw[k][0], draw[k][1]) for k in which]


def picker(ctx, analysis, place) -> np.ndarray:
    layers = self_attention(analysis)
    grid = layers[0].layout.grid if layers else analysis.result.tokens.grid or (1, 1)
    return picker_picture(model_view(ctx, analysis), grid, place.row, place.col, place.token == "patch")


def the_parts(ctx, temperature_only: bool = False) -> dict:
    """The four parts (or, after a temperature change, only the two it changes) of the page's query."""
    a, loaded = analysis_and_model(ctx)
    place = ctx.page.lesson
    step = query_step(ctx, a, loaded, place)
    T, lang = float(place.temperature), ctx.lang
    if temperature_only:
        pics = _pictures(ctx, a, step, place, which=(1, 2))
        return {"learn_step2_img": pics[0], "learn_step2_md": signed(explain_softmax(step, T, lang), ctx, a),
                "learn_step3_img": pics[1], "learn_step3_md": signed(explain_weights(step, T, lang), ctx, a)}
    pics = _pictures(ctx, a, step, place)
    texts = [explain_scores(step, lang), explain_softmax(step, T, lang), explain_weights(step, T, lang),
             explain_output(step, lang)]
    return {"learn_pick": picker(ctx, a, place), **dict(zip(STEP_PICTURES, pics)),
            **{name: signed(md, ctx, a) for name, md in zip(STEP_TEXTS, texts)}}


class QueryStepPage(Step):
    id, title, order = "query", "2 · One query", 20
    pictures = STEP_PICTURES
    texts = STEP_TEXTS
    parts = ("1", "2", "3", "4")
    extra = ("learn_pick", "learn_slide")
    controls = CONTROLS
    why = "deck.why_query"

    def build(self, ui) -> None:
        with gr.Row(equal_height=False):
            with gr.Column(scale=2, min_width=200, elem_id="learn-query-controls"):
                ui.learn_pick = said(gr.Image(interactive=False, format="png", elem_id="learn-pick", height=210,
                                              buttons=["fullscreen"]), label="app.learn.pick")
                # its entries depend on the model's prefix tokens: `fit` gives them in the page's language
                ui.learn_token = said(gr.Radio([(tr(None, "app.learn.token_patch"), "patch")], value="patch",
                                               elem_id="learn-token"), label="app.learn.token")
                with gr.Row():
                    ui.learn_row = said(gr.Slider(0, 7, value=0, step=1, elem_id="learn-row", min_width=100),
                                        label="app.learn.row")
                    ui.learn_col = said(gr.Slider(0, 7, value=0, step=1, elem_id="learn-col", min_width=100),
                                        label="app.learn.col")
                with gr.Row():
                    ui.learn_layer = said(gr.Slider(0, 3, value=3, step=1, elem_id="learn-layer", min_width=100),
                                          label="app.learn.layer")
                    ui.learn_head = said(gr.Slider(0, 3, value=0, step=1, elem_id="learn-head", min_width=100),
                                         label="app.learn.head")
                with gr.Row(elem_classes=["kbd-hidden"]):
                    for k in ("up", "down", "left", "right"):
                        ui[f"learn_{k}"] = said(gr.Button(elem_id=f"learn-{k}"), value=f"app.learn.{k}")
            with gr.Column(scale=7, elem_id="learn-query-pane"):
                with gr.Row(equal_height=True, elem_id="learn-part-row"):
                    ui.learn_part = said(gr.Radio([v for _, v in PARTS], value="1", show_label=False,
                                                  elem_id="learn-part", scale=4, container=False),
                                         choices=list(PARTS), label="app.learn.part")
                    ui.learn_temperature = said(gr.Slider(0.1, 5.0, value=1.0, step=0.05,
                                                          elem_id="learn-temperature", scale=2, min_width=160),
                                                label="app.learn.temperature", info="app.learn.temperature_info")
                with gr.Row(elem_classes=["kbd-hidden"]):
                    ui.learn_run = said(gr.Button(elem_id="learn-run"), value="app.learn.run")
                for k, label in enumerate(PICTURE_LABELS):
                    with gr.Row(equal_height=False, elem_classes=["substep", f"s{k + 1}"]):
                        with gr.Column(scale=3, min_width=300, elem_classes=["learn-step-fig"]):
                            ui[STEP_PICTURES[k]] = picture_box(label, f"learn-step{k + 1}-img", height=400)
                        with gr.Column(scale=2, min_width=200, elem_classes=["learn-step-text"]):
                            ui[STEP_TEXTS[k]] = text_box(elem_id=f"learn-step{k + 1}-md")
                with gr.Row(elem_classes=["substep", "s5"]):
                    with gr.Column():
                        ui.learn_slide_btn = said(gr.Button(elem_id="learn-slide-btn", size="sm"),
                                                  value="app.learn.slide_btn")
                        # shown at the size it is drawn (the box scrolls): its text stays >= 14 / 20 px
                        ui.learn_slide = said(gr.Image(show_label=False, interactive=False, format="png",
                                                       elem_id="learn-slide", buttons=["download", "fullscreen"],
                                                       elem_classes=["learn-slide"]), label="app.learn.slide")

    def compute(self, ctx) -> dict:
        return the_parts(ctx)

    def cleared(self, text: str = "") -> dict:
        return {**super().cleared(text), "learn_slide": None}

    def failed(self, e: BaseException, lang: str = "en") -> dict:
        out = super().failed(e, lang)
        pic = out.get(self.pictures[0])
        for name in self.pictures[1:]:
            out[name] = pic
        return out

    def fit(self, ctx, analysis) -> tuple[dict, object]:
        """The controls' ranges from the new model's layers, heads and grid; the query kept inside them."""
        place = ctx.page.lesson
        layers = self_attention(analysis)
        if not layers:
            return {}, place
        m = layers[0]
        (gh, gw), n_layers, n_heads = m.layout.grid, len(layers), m.num_heads
        prefix = list(m.layout.prefix_names)
        place = place.with_(layer=place.layer if place.layer is not None and place.layer < n_layers else None,
                            head=min(int(place.head), n_heads - 1),
                            token=place.token if place.token in ["patch"] + prefix else "patch",
                            row=min(int(place.row), gh - 1), col=min(int(place.col), gw - 1))
        tokens = [(tr(ctx, "app.learn.token_patch"), "patch")] + [(p.upper(), p) for p in prefix]
        return {"learn_layer": slider_range(n_layers, layer_index(place, n_layers)),
                "learn_head": slider_range(n_heads, place.head),
                "learn_token": gr.update(choices=tokens, value=place.token),
                "learn_row": slider_range(gh, place.row), "learn_col": slider_range(gw, place.col),
                "learn_temperature": gr.update(value=place.temperature)}, place

    def wire(self, events, ui, opener) -> None:
        quick = dict(trigger_mode="always_last", show_progress="hidden")
        events.bind(ui.learn_run.click, on_query, **quick)
        for name in ("learn_layer", "learn_head", "learn_row", "learn_col"):
            events.bind(ui[name].input, on_query, **quick)
            events.bind(ui[name].release, on_query, **quick)
        events.bind(ui.learn_token.input, on_query, **quick)
        events.bind(ui.learn_temperature.input, on_temperature, **quick)
        events.bind(ui.learn_temperature.release, on_temperature, **quick)
        events.bind(ui.learn_pick.select, on_pick, show_progress="hidden")
        for name, (dr, dc) in {"up": (-1, 0), "down": (1, 0), "left": (0, -1), "right": (0, 1)}.items():
            events.bind(ui[f"learn_{name}"].click, mover(dr, dc), **quick)
        events.bind(ui.learn_slide_btn.click, on_slide)
        ui.learn_part.change(None, ui.learn_part, None, js="(v) => { window.vizShowPart(v); return []; }",
                             api_visibility="private")
        events.bind(ui.learn_part.input, on_part, show_progress="hidden")


QUERY_OUT = ("learn_pick",) + STEP_PICTURES + STEP_TEXTS


@handler(inputs=CONTROLS, outputs=QUERY_OUT)
def on_query(ctx) -> dict:
    """A control of the query changed: the page's place, and the four parts drawn for it."""
    v = ctx.values
    ctx.page = ctx.page.with_lesson(layer=int(v.learn_layer), head=int(v.learn_head),
                                    token=str(v.learn_token or "patch"), row=int(v.learn_row),
                                    col=int(v.learn_col), temperature=float(v.learn_temperature))
    return {"page": ctx.page, **STEP.draw(ctx)}


@handler(inputs=("learn_temperature",), outputs=QUERY_OUT)
def on_temperature(ctx) -> dict:
    ctx.page = ctx.page.with_lesson(temperature=float(ctx.values.learn_temperature))
    try:
        return {"page": ctx.page, **the_parts(ctx, temperature_only=True)}
    except Exception as e:  # noqa: BLE001
        return {"page": ctx.page, **STEP.failed(e, ctx.lang)}


@handler(outputs=("learn_token", "learn_row", "learn_col") + QUERY_OUT, needs_image=True, select=True)
def on_pick(ctx) -> dict:
    """A click on the patch picker: that patch becomes the query, drawn in the same answer."""
    a = ctx.analysis()
    layers = self_attention(a)
    if not layers:
        raise MethodNotDefinedError(tr(ctx, "app.learn.no_query"))
    x, y = ctx.event.index
    row, col = picker_cell(picker_size(model_view(ctx, a)), layers[0].layout.grid, x, y)
    ctx.page = ctx.page.with_lesson(token="patch", row=row, col=col)
    return {"page": ctx.page, "learn_token": "patch", "learn_row": row, "learn_col": col,
            **STEP.draw(ctx)}


def mover(dr: int, dc: int):
    @handler(outputs=("learn_token", "learn_row", "learn_col") + QUERY_OUT, needs_image=True)
    def on_move(ctx) -> dict:
        """A keyboard move of the query patch, kept inside the grid, drawn in the same answer."""
        layers = self_attention(ctx.analysis())
        if not layers:
            raise MethodNotDefinedError(tr(ctx, "app.learn.no_query"))
        gh, gw = layers[0].layout.grid
        place = ctx.page.lesson
        r, c = min(max(place.row + dr, 0), gh - 1), min(max(place.col + dc, 0), gw - 1)
        ctx.page = ctx.page.with_lesson(token="patch", row=r, col=c)
        return {"page": ctx.page, "learn_token": "patch", "learn_row": r, "learn_col": c,
                **STEP.draw(ctx)}
    return on_move


@handler(outputs=("learn_slide", "learn_part"), needs_image=True)
def on_slide(ctx) -> dict:
    """All four parts in one picture, for a slide."""
    a, loaded = analysis_and_model(ctx)
    place = ctx.page.lesson
    step = query_step(ctx, a, loaded, place)
    pic = query_steps_picture(step, model_view(ctx, a), float(place.temperature), scale_of(ctx), ctx.lang)
    return {"page": ctx.page.with_lesson(part="slide"), "learn_slide": pic, "learn_part": "slide"}


@handler(inputs=("learn_part",))
def on_part(ctx) -> dict:
    """The part shown (the radio shows it in the browser at once; the page remembers it)."""
    return {"page": ctx.page.with_lesson(part=str(ctx.values.learn_part))}


STEP = QueryStepPage()
