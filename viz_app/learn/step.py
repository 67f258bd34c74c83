"""A lesson step: what every step of the Learn tab is, and what they share.

A step is one file of `viz_app.learn.steps` holding its title, its place, its controls and outputs (`build`),
its events (`wire`), its compute (`compute`: calling `attention.lesson`) and its text. The Learn tab
(`viz_app.learn`) is a loop over them: it opens, clears and redraws a step by these names, so adding a step
touches its file (and the picture module it draws with), nothing else.

Everything a step shows is a function of the page (`viz_app.page.Page`: its image, its model, the lesson's
place) and the session's cached analysis of that image on that model; every explanation is signed with the
image and model it was computed on.
"""
from __future__ import annotations

from typing import Optional

import gradio as gr
import numpy as np

from attention.i18n.fonts import needs_cjk
from attention.lesson.figure import PRESENTER_SCALE, message_picture

from ..events import Ctx, message_of
from ..main_view import provenance
from ..words import said, tr

LATEX = [{"left": "$$", "right": "$$", "display": True}, {"left": "$", "right": "$", "display": False}]
#: the catalogue key of what a step that is not on screen says after the image, model or language changed
STALE = "app.learn.stale"


def text_box(value: str = "", **kw) -> gr.Markdown:
    """A step's explanation (Markdown with LaTeX)."""
    return gr.Markdown(value, latex_delimiters=LATEX, elem_classes=["learn-text"], **kw)


def picture_box(label: str, elem_id: str, height=None, wide: bool = False) -> gr.Image:
    """A step's picture; the pictures carry their own titles (Gradio's label badge would cover them).
    `label`: the catalogue key of its label (what a screen reader and the download say)."""
    return said(gr.Image(show_label=False, interactive=False, format="png", elem_id=elem_id, height=height,
                         buttons=["download", "fullscreen"], elem_classes=["learn-fig-wide" if wide else "learn-fig"]),
                label=label)


def pictures_beside_text(ui, step: "Step", pictures: list[tuple[str, str, str]], button: str,
                         height: int = 470) -> None:
    """The common layout of a step: its pictures (name, label key, elem_id) side by side, its "show" button
    (`button`: a catalogue key) and its explanation beside them; the button is ``ui.learn_<id>_btn``."""
    with gr.Row(equal_height=False):
        with gr.Column(scale=3 * len(pictures)):
            with gr.Row():
                for name, label, elem_id in pictures:
                    ui[name] = picture_box(label, elem_id, height)
        with gr.Column(scale=3, min_width=260):
            ui[f"learn_{step.id}_btn"] = said(gr.Button(variant="primary", elem_id=f"{step.tab_id}-btn", size="sm"),
                                              value=button)
            ui[step.texts[0]] = text_box(elem_id=f"{step.tab_id}-md")


class Step:
    """One lesson step. Subclasses set the class attributes and override `build` and `compute`."""

    id: str = ""                 # short id ("tokens"); its tab is ``learn-<id>``
    title: str = ""              # the tab's title in English ("1 · Tokens"); in every language: `title_key`
    order: int = 0               # place in the lesson
    pictures: tuple[str, ...] = ()   # names (on `ui`) of the pictures `compute` fills
    texts: tuple[str, ...] = ()      # names of the explanations `compute` fills
    extra: tuple[str, ...] = ()      # other names `compute` / `cleared` may update (step 2's picker, slide)
    controls: tuple[str, ...] = ()   # the step's controls whose ranges `fit` re-derives for a new model
    parts: tuple[str, ...] = ()      # parts Previous / Next walk through inside the step (step 2)
    needs_image: bool = True     # False: the step shows no image or model (step 6, training)
    #: the catalogue key of why the step cannot be shown, said when the error's own words are not in the page's
    #: language (a library method's errors are English only)
    why: str = "app.learn.why_generic"

    @property
    def tab_id(self) -> str:
        return f"learn-{self.id}"

    @property
    def title_key(self) -> str:
        """The catalogue key of the tab's title."""
        return f"app.learn.step_{self.id}"

    @property
    def outputs(self) -> tuple[str, ...]:
        return self.pictures + self.texts

    # ------------------------------------------------------------------ what a step defines
    def build(self, ui) -> None:
        """The step's layout inside its tab; components registered on `ui` by name."""
        raise NotImplementedError

    def compute(self, ctx: Ctx) -> dict:
        """The step's outputs (name -> value) for the page in `ctx`."""
        raise NotImplementedError

    def wire(self, events, ui, opener) -> None:
        """The step's own events; `opener` is the handler that draws it (default: its "show" button)."""
        button = f"learn_{self.id}_btn"
        if button in ui:
            events.bind(ui[button].click, opener)

    def fit(self, ctx: Ctx, analysis) -> tuple[dict, object]:
        """After a new model or image: (control updates, the lesson's place kept inside the new ranges)."""
        return {}, ctx.page.lesson

    # ------------------------------------------------------------------ what the Learn tab asks of every step
    def cleared(self, text: str = "") -> dict:
        """The step's pictures empty and its explanations replaced by `text`."""
        if not self.needs_image:    # its pictures belong to no image or model
            return {}
        return {**{p: None for p in self.pictures}, **{t: text for t in self.texts}}

    def failed(self, e: BaseException, lang: str = "en") -> dict:
        """A step that cannot be shown for this model or image: its pictures say why (in `lang`), no Error badge."""
        text = reason_of(e, lang, self.why)
        out = self.cleared(tr(lang, "app.learn.not_available", reason=text))
        if self.pictures:
            out[self.pictures[0]] = message_picture(text, width=6.0, height=2.6)
        return out

    def draw(self, ctx: Ctx) -> dict:
        """`compute`, or the reason it cannot be shown."""
        try:
            return self.compute(ctx)
        except Exception as e:  # noqa: BLE001 - not defined for this model, no image yet, ...
            return self.failed(e, ctx.lang)


# ---------------------------------------------------------------------- what the steps share
def scale_of(ctx: Ctx) -> float:
    """Presenter mode draws every picture larger (text >= 20 px)."""
    return PRESENTER_SCALE if ctx.page.presenter else 1.0


def analysis_and_model(ctx: Ctx):
    """(the session's analysis of the page, the loaded model it was computed with)."""
    a = ctx.analysis()
    return a, ctx.app.manager.get(a.model_key)


def cached(ctx: Ctx, analysis, key: tuple, compute):
    """The lesson's derived data, cached with the analysis (the session cache keeps its byte bound)."""
    value = analysis.cached(("lesson",) + tuple(key), compute)
    ctx.app.cb.store.touch(ctx.session, analysis)
    return value


def reason_of(e: BaseException, lang: str = "en", why: str = "app.learn.why_generic") -> str:
    """Why a step (or a picture of it) cannot be shown, in `lang`: the error's own words when they are in that
    language (the lesson's errors are), else the catalogue's reason `why` (a library method's or a loader's
    errors speak English only)."""
    text = message_of(e, lang)          # (an error that names its catalogue text is said in `lang`)
    return text if lang == "en" or needs_cjk(text) else tr(lang, why)


def signed(md: str, ctx: Ctx, analysis) -> str:
    """An explanation, signed with the image and model it was computed on (in the page's language)."""
    where = provenance(analysis.model_key, analysis.image_sha, ctx.page.image_name, lang=ctx.lang)
    return f"{md}  \n\n{tr(ctx, 'app.learn.computed_on', source=where)}"


def model_view(ctx: Ctx, analysis) -> np.ndarray:
    """What the model saw, as RGB (the photo cut to the input's box, at the input size)."""
    from attention.lesson.tokens import model_input_image
    return cached(ctx, analysis, ("view",), lambda: model_input_image(analysis.prepared))


def self_attention(analysis) -> list:
    from attention.lesson.query import self_attention_layers
    return self_attention_layers(analysis.result)


def layer_index(place, n_layers: int) -> int:
    """The lesson's layer among `n_layers` self-attention layers (None: the last)."""
    layer: Optional[int] = place.layer
    if layer is None or not 0 <= int(layer) < n_layers:
        return max(n_layers - 1, 0)
    return int(layer)


__all__ = ["Step", "pictures_beside_text", "text_box", "picture_box", "scale_of", "analysis_and_model", "cached",
           "signed", "reason_of", "model_view", "self_attention", "layer_index", "STALE", "LATEX"]
