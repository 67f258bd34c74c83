"""One view of an analysis: which map (method, layer, head, query, target class) and how it is drawn.

Every map comes from the library's one entry point, `attention.methods.compute_map`, with the
analysis' cache as the method cache (gradient methods run one forward + backward per target class,
so a second query or a colour change is free). This module only turns a `View` into that call,
writes the caption, and draws the map on the photo. The menu of methods is the library's registry.

Captions, help and messages are written in the page's language (``lang``; catalogue keys ``app.views.…`` and
the library's ``method.…``). The analysis' cache keeps a map with the language-independent account of what
was computed (`attention.methods.MapResult.words`), never a caption: a page that switches language writes
the caption of the same cached map again, without computing it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from collections.abc import Mapping
from typing import Callable, Optional, Union

import numpy as np

from attention.capture import CaptureResult
from attention.errors import MethodNotDefinedError
from attention.methods import (FUSIONS, compute_map as library_map, get_method, grid_stride, is_spatial, method_names,
                               methods, query_grid, resolve_layer, spatial_layers)  # noqa: F401 (re-exported)
from attention.methods.menu import (QUERY_LABELS, class_method, click_method, fallback_method, head_choices,  # noqa: F401
                                    head_label, is_class_specific, needs_model, offered_methods, parse_head,
                                    query_choices, query_label)
from attention.i18n import t
from attention.methods.words import describe
from attention.render import overlay, photo_to_patch

from .state import Analysis

class _MethodMenu(Mapping):
    """name -> label of every registered method, in menu order, read live from the registry."""

    def __getitem__(self, name: str) -> str:
        if name not in method_names():
            raise KeyError(name)
        return get_method(name).label

    def __iter__(self):
        return iter(method_names())

    def __len__(self) -> int:
        return len(method_names())


METHODS = _MethodMenu()
COLORMAPS = ("inferno", "viridis", "magma", "plasma", "jet", "turbo", "gray")
MODES = ("smooth", "blocky")
NORMS = (("min–max", "minmax"), ("clip top 1%", "percentile"))

@dataclass(frozen=True)
class View:
    """Everything that selects and draws one map. ``layer`` indexes `spatial_layers`; -1 is the last."""

    method: str = "rollout"
    layer: int = -1
    head: str = "mean"                      # "mean" | "max" | "min" | "0", "1", ...
    query: str = "auto"                     # "auto" | "cls" | "dist" | "reg0" | "cls+dist" | "patch_mean" | "patch"
    click: Optional[tuple[float, float]] = None   # clicked point (y, x) in ORIGINAL photo pixels
    target: Optional[int] = None            # class for class-specific methods (None: top-1)
    cmap: str = "inferno"
    alpha: float = 0.5
    mode: str = "smooth"
    mass: Optional[float] = None            # keep the patches holding this fraction of the mass
    norm: str = "minmax"                    # "minmax" | "percentile" (clip the top 1%: tames artifact patches)
    contour: bool = False
    start_layer: Optional[int] = None       # first layer of chaining methods (rollout, ...); None: the first

    def with_(self, **kw) -> "View":
        return replace(self, **kw)


@dataclass
class MapResult:
    """What the page shows for one view: the map as numpy, its geometry, and the caption."""

    heat: np.ndarray                         # (gh, gw) float32
    stride: Optional[tuple[float, float]]    # model-input pixels per cell (None: input size / grid)
    patch: Optional[tuple[int, int]]         # the query patch on this map's grid, to mark
    caption: str


def method_help(lang: str = "en") -> str:
    """One line per registered method (label: summary), for the page's help text, in `lang`."""
    return "  \n".join(t("app.views.help_line_class" if m.class_specific else "app.views.help_line", lang,
                         label=m.label_in(lang), summary=m.summary_in(lang)) for m in methods())


def not_offered_text(result: CaptureResult, has_classifier: bool = True, lang: str = "en") -> str:
    """"Rollout (why); Grad-CAM (why)": each method not offered for this capture and the reason, in `lang`."""
    _, missing = offered_methods(result, has_classifier=has_classifier, lang=lang)
    return t("app.views.not_offered_sep", lang).join(
        t("app.views.not_offered_item", lang, label=get_method(k).label_in(lang), why=why) for k, why in missing)


def method_choices(names, lang: str = "en") -> list[tuple[str, str]]:
    """(label in `lang`, name) menu entries of the methods `names`."""
    return [(get_method(n).label_in(lang), n) for n in names]


# ---------------------------------------------------------------------------- layers, heads, queries

def layer_map(result: CaptureResult, layer: int):
    """(position, index into result.maps, the layer) of a slider position (clamped)."""
    return resolve_layer(result, layer)


def click_to_patch(analysis: Analysis, m, click: tuple[float, float]) -> Optional[tuple[int, int]]:
    """The patch of layer `m`'s query grid under a click given in original-photo pixels."""
    grid = query_grid(m)
    if grid is None:
        return None
    return photo_to_patch(analysis.prepared.geometry, grid, click[0], click[1], grid_stride(analysis.result, grid))


# ---------------------------------------------------------------------------- computing maps

ModelGetter = Callable[[], object]   # () -> LoadedModel, for gradient methods


def _query_for(analysis: Analysis, m, view: View, lang: str = "en"):
    """The query argument for the attention library, and the patch to mark (or None)."""
    if view.query == "patch":
        if view.click is None:
            raise MethodNotDefinedError(t("app.views.click_first", lang))
        patch = click_to_patch(analysis, m, view.click)
        if patch is None:
            raise MethodNotDefinedError(t("app.views.click_outside", lang))
        return patch
    return view.query


def target_of(analysis: Analysis, view: View) -> int:
    return analysis.top1 if view.target is None else int(view.target)


def compute_map(analysis: Analysis, view: View, model: Optional[ModelGetter] = None,
                grad_lock: Optional[threading.Lock] = None, lang: str = "en") -> MapResult:
    """The (gh, gw) map a view asks for, through `attention.methods.compute_map`, and its caption in `lang`.

    The analysis' cache holds the map with the facts of its caption (the library's words, the English
    description): another language is another caption of the same cached map."""
    if view.method not in METHODS:
        raise MethodNotDefinedError(t("app.views.unknown_method", lang, method=view.method, names=", ".join(METHODS)))
    method = get_method(view.method)
    result = analysis.result
    why = method.why_not(result, lang)
    if why:
        raise MethodNotDefinedError(t("app.views.not_defined", lang, label=method.label_in(lang), why=why))
    _, _, m = layer_map(result, view.layer)
    query = _query_for(analysis, m, view, lang) if method.uses_query else "auto"
    target = None
    if method.class_specific:
        if not analysis.predictions:
            raise MethodNotDefinedError(t("app.views.no_classifier", lang, label=method.label_in(lang)))
        target = target_of(analysis, view)
    if method.needs_model and model is None:
        raise MethodNotDefinedError(t("app.views.needs_model", lang))
    qkey = query if isinstance(query, str) else tuple(query)
    key = ("map", method.name, view.layer, view.start_layer, str(view.head), qkey, target)

    def run():
        out = library_map(method, result, model=(lambda: model().model) if model is not None else None,
                          x=analysis.prepared.tensor, target=target, query=query, layer=view.layer,
                          start_layer=view.start_layer, end_layer=view.layer, head=parse_head(view.head),
                          cache=analysis.cached, grad_lock=grad_lock)
        return out.numpy(0), out.stride, out.query_patch, out.words, out.description
    heat, stride, patch, words, desc = analysis.cached(key, run)
    caption = caption_of(analysis, method, target, words, desc, patch, view, m.layout_source == "inferred", lang)
    return MapResult(heat, stride, patch, caption)


def caption_of(analysis: Analysis, method, target: Optional[int], words: tuple, description: str,
               patch: Optional[tuple[int, int]], view: View, inferred: bool, lang: str = "en") -> str:
    """A map's caption in `lang`: the method, the class it explains, what was computed (`words`, else the English
    `description`), the query patch, whether the token layout was inferred."""
    caption = f"**{method.title_in(lang)}**"
    if target is not None:
        caption = t("app.views.for_class", lang, title=caption, name=_class_name(analysis, target, lang))
    desc = describe(words, lang) if words else description
    caption += f" · {desc}" if desc else ""
    if patch is not None and "patch" not in description:        # the English account names the patch itself
        caption += t("app.views.at_patch", lang, patch=patch)
    if view.query == "patch" and method.uses_query:
        caption += t("app.views.clicked", lang)
    if inferred:
        caption += " · " + t("app.views.inferred", lang)
    return caption


def _class_name(analysis: Analysis, index: int, lang: str = "en") -> str:
    names = analysis.class_names
    return names[index] if 0 <= index < len(names) else t("app.views.class_n", lang, index=index)


# ---------------------------------------------------------------------------- drawing

def draw(analysis: Analysis, mapped: MapResult, view: View) -> np.ndarray:
    """The map on the photo at display size, with the query patch marked. (h, w, 3) uint8."""
    return overlay(analysis.display, mapped.heat, analysis.prepared.geometry, cmap=view.cmap,
                   alpha=float(view.alpha), mode=view.mode, norm=view.norm, percentile=99.0,
                   mass_threshold=view.mass, contour=view.contour,
                   query_patch=mapped.patch, stride=mapped.stride)


def display_to_photo(analysis: Analysis, x: float, y: float) -> tuple[float, float]:
    """A click at (x, y) on the displayed picture -> (y, x) in original-photo pixels."""
    h, w = analysis.display.shape[:2]
    H, W = analysis.prepared.geometry.original_size
    return (y + 0.5) * H / h - 0.5, (x + 0.5) * W / w - 0.5


# ---------------------------------------------------------------------------- the layer x head grid

def layer_heads(analysis: Analysis, view: View, lang: str = "en"):
    """Per spatial layer a (heads, gh, gw) array for the view's query (cached), the layer names, and
    texts describing the query (`attention.methods.layer_head_stack`), in `lang`."""
    from attention.methods import layer_head_stack
    result = analysis.result
    click = view.click if view.query == "patch" else None
    query = view.query
    if query == "patch":
        query = (lambda m: click_to_patch(analysis, m, click) if click is not None else None)
    key = ("grid", view.query, click)
    maps, names = analysis.cached(key, lambda: tuple(
        ([a.astype(np.float16) for a in st[0]], st[1]) for st in [layer_head_stack(result, query)])[0])
    qtext = t("app.views.grid_query", lang, query=query_label("patch" if view.query == "patch" else view.query,
                                                                result, lang))
    note = "" if view.query != "patch" else t("app.views.grid_marked", lang)
    return [m.astype(np.float32) for m in maps], names, qtext, note
