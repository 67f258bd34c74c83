"""The Attention tab's view as a function of the page: the view that exists for the page's model, every
control's range and value, the picture and its caption. Every event that changes the main view ends here,
so the controls are always those of the model shown (no layer range, head or query of another model).
"""
from __future__ import annotations

import os
from typing import Optional

import gradio as gr

from attention.methods import menu, spatial_layers

from .page import Page
from .views import View, head_label, not_offered_text
from .words import tr

#: the controls `controls` derives from the page (besides the picture and caption)
CONTROLS = ("method", "layer", "start_layer", "head", "query", "target_md")



def short_sha(sha: Optional[str]) -> str:
    return (sha or "")[:8]


def provenance(model_key: str, sha: Optional[str], name: Optional[str] = None, lang: str = "en") -> str:
    """The line every caption carries: which image (short hash of its pixels, and file name) and which model."""
    file = f" ({name})" if name else ""
    return tr(lang, "app.main.provenance", sha=short_sha(sha), file=file, model=model_key)


def signed(text: str, analysis, page: Page) -> str:
    """A caption, signed with the image and model it was computed on."""
    return f"{text}  \n{provenance(analysis.model_key, analysis.image_sha, page.image_name, page.lang)}"


def image_name(image) -> Optional[str]:
    """The uploaded file's name (Gradio keeps it as the last part of the cached path)."""
    if isinstance(image, dict):
        image = image.get("orig_name") or image.get("path")
    if isinstance(image, str) and image.strip():
        return os.path.basename(image)
    return None


def slider_range(n: int, value: int) -> dict:
    """A 0..n-1 slider update that is always valid: with fewer than two positions the slider is hidden
    (a 0-0 slider is refused by the browser: "Slider minimum must be less than maximum")."""
    n = max(int(n), 0)
    value = min(max(int(value), 0), max(n - 1, 0))
    return gr.update(minimum=0, maximum=max(n - 1, 1), value=value, visible=n > 1, interactive=n > 1)


def resolve_view(page: Page, analysis) -> View:
    """The page's view made valid for its model: the method where it applies (else the fallback), the layer
    the user chose for this model where it exists (else the last), a head the layer has, a query it has;
    a method that fuses the heads shows "mean"."""
    result, has_classes = analysis.result, bool(analysis.predictions)
    view = page.view
    n_layers = len(spatial_layers(result))
    chosen = page.chosen_layer(analysis.model_key)
    layer = chosen if chosen is not None and 0 <= chosen < n_layers else -1
    start = view.start_layer if view.start_layer is not None and 0 <= view.start_layer < n_layers else None
    method = menu.fallback_method(result, view.method, has_classifier=has_classes)
    view = view.with_(method=method, layer=layer, start_layer=start)
    queries = menu.query_choices(result)
    query = view.query if view.query in queries else queries[0]
    if query == "auto" and "cls+dist" in queries:
        query = "cls+dist"     # distilled DeiT predicts with the mean of both heads: look at both rows
    if query == "patch" and view.click is None:
        query = queries[0]
    heads = menu.head_choices(menu.layer_at(result, layer), method)
    head = view.head if view.head in heads else "mean"
    target = view.target if has_classes and (view.target is None or 0 <= view.target < len(analysis.class_names)) \
        else None
    return view.with_(query=query, head=head, target=target, click=view.click if query == "patch" else None)


def target_text(analysis, view: View, lang: str = "en") -> str:
    if not analysis.predictions:
        return tr(lang, "app.main.no_classifier")
    t = analysis.top1 if view.target is None else int(view.target)
    name = analysis.class_names[t] if 0 <= t < len(analysis.class_names) else str(t)
    which = tr(lang, "app.main.top1" if view.target is None or t == analysis.top1 else "app.main.clicked")
    return tr(lang, "app.main.explains", name=name, which=which)


def head_update(analysis, view: View, lang: str = "en") -> dict:
    """The head menu of the view's layer; disabled (on "mean") for a method that fuses the heads itself."""
    m = menu.layer_at(analysis.result, view.layer)
    fused = menu.fuses_heads(view.method, lang)
    if fused:
        return gr.update(choices=[(menu.fused_entry(lang), "mean")], value="mean", interactive=False,
                         info=fused)
    heads = menu.head_choices(m, view.method)
    return gr.update(choices=[(head_label(h, lang), h) for h in heads], value=view.head, interactive=True, info=None)


def query_update(analysis, view: View, lang: str = "en") -> dict:
    result = analysis.result
    labels = [(menu.query_label(q, result, lang), q) for q in menu.query_choices(result)]
    if any(q == "auto" for _, q in labels) and menu.query_label("auto", result) == "CLS (default)":   # already CLS
        labels = [x for x in labels if x[1] != "cls"]
    value = view.query if view.query in [q for _, q in labels] else labels[0][1]
    return gr.update(choices=labels, value=value, interactive=menu.get_method(view.method).uses_query)


def controls(analysis, view: View, skip: tuple[str, ...] = (), lang: str = "en") -> dict:
    """Every view control's update for this model and view, by name (``skip``: the control being dragged)."""
    result = analysis.result
    offered, _ = menu.offered_methods(result, has_classifier=bool(analysis.predictions))
    n_layers = len(spatial_layers(result))
    pos = menu.layer_position(result, view.layer)
    out = {
        "method": gr.update(choices=[(menu.get_method(k).label_in(lang), k) for k in offered], value=view.method),
        "layer": slider_range(n_layers, pos),
        "start_layer": slider_range(n_layers, view.start_layer or 0),
        "head": head_update(analysis, view, lang),
        "query": query_update(analysis, view, lang),
        "target_md": target_text(analysis, view, lang),
    }
    return {k: v for k, v in out.items() if k not in skip}


def notes_text(analysis, lang: str = "en") -> str:
    result = analysis.result
    notes = list(analysis.notes)
    _, not_offered = menu.offered_methods(result, has_classifier=bool(analysis.predictions))
    if not_offered:
        notes.append(tr(lang, "app.main.not_offered",
                        what=not_offered_text(result, bool(analysis.predictions), lang)))
    if len(spatial_layers(result)) <= 1:
        notes.append(tr(lang, "app.main.one_layer"))
    return "  \n".join(tr(lang, "app.main.note", text=n) for n in notes)


def show(ctx, page: Page, analysis, skip: tuple[str, ...] = ()) -> dict:
    """The Attention tab for `page`: the page with its view made valid, the picture, the caption and every
    control, by name."""
    view = resolve_view(page, analysis)
    page = page.with_(view=view, sha=analysis.image_sha)
    picture, caption = ctx.app.cb.draw_view(ctx.session, analysis, view, page.lang)
    out = {"page": page, "heatmap": picture, "caption": signed(caption, analysis, page)}
    out.update(controls(analysis, view, skip, page.lang))
    return out
