"""One view of an analysis: which map (method, layer, head, query, target class) and how it is drawn.

Every map comes from the library's one entry point, `attention.methods.compute_map`, with the
analysis' cache as the method cache (gradient methods run one forward + backward per target class,
so a second query or a colour change is free). This module only turns a `View` into that call,
writes the caption, and draws the map on the photo. The menu of methods is the library's registry.
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


def method_help() -> str:
    """One line per registered method (label: summary), for the page's help text."""
    return "  \n".join(f"**{m.label}**: {m.summary}" + (" — class-specific." if m.class_specific else ".")
                       for m in methods())


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


def _query_for(analysis: Analysis, m, view: View):
    """The query argument for the attention library, and the patch to mark (or None)."""
    if view.query == "patch":
        if view.click is None:
            raise MethodNotDefinedError("click a patch on the picture first to choose the query patch")
        patch = click_to_patch(analysis, m, view.click)
        if patch is None:
            raise MethodNotDefinedError("the clicked point is outside the part of the photo the model saw "
                                        "(the dimmed area was cropped away by the preprocessing)")
        return patch
    return view.query


def target_of(analysis: Analysis, view: View) -> int:
    return analysis.top1 if view.target is None else int(view.target)


def compute_map(analysis: Analysis, view: View, model: Optional[ModelGetter] = None,
                grad_lock: Optional[threading.Lock] = None) -> MapResult:
    """The (gh, gw) map a view asks for, through `attention.methods.compute_map`, and its caption."""
    if view.method not in METHODS:
        raise MethodNotDefinedError(f"unknown method {view.method!r}; choose one of {', '.join(METHODS)}")
    method = get_method(view.method)
    result = analysis.result
    why = method.defined_for(result)
    if why:
        raise MethodNotDefinedError(f"{method.label}: {why}")
    _, _, m = layer_map(result, view.layer)
    query = _query_for(analysis, m, view) if method.uses_query else "auto"
    target = None
    if method.class_specific:
        if not analysis.predictions:
            raise MethodNotDefinedError(f"{method.label} explains a class; this model has no classifier")
        target = target_of(analysis, view)
    if method.needs_model and model is None:
        raise MethodNotDefinedError("gradient methods need the model; reload the image")
    qkey = query if isinstance(query, str) else tuple(query)
    key = ("map", method.name, view.layer, view.start_layer, str(view.head), qkey, target)

    def run():
        out = library_map(method, result, model=(lambda: model().model) if model is not None else None,
                          x=analysis.prepared.tensor, target=target, query=query, layer=view.layer,
                          start_layer=view.start_layer, end_layer=view.layer, head=parse_head(view.head),
                          cache=analysis.cached, grad_lock=grad_lock)
        return out.numpy(0), out.stride, out.query_patch, out.description
    heat, stride, patch, desc = analysis.cached(key, run)
    caption = f"**{method.title or method.label}**"
    if target is not None:
        caption += f" for class **{_class_name(analysis, target)}**"
    caption += f" · {desc}" if desc else ""
    if patch is not None and "patch" not in desc:
        caption += f" at patch {patch}"
    if view.query == "patch" and method.uses_query:
        caption += " (clicked patch)"
    if m.layout_source == "inferred":
        caption += " · token layout *inferred* from the shapes (no family descriptor for this model)"
    return MapResult(heat, stride, patch, caption)


def _class_name(analysis: Analysis, index: int) -> str:
    names = analysis.class_names
    return names[index] if 0 <= index < len(names) else f"class {index}"


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

def layer_heads(analysis: Analysis, view: View):
    """Per spatial layer a (heads, gh, gw) array for the view's query (cached), the layer names, and
    texts describing the query (`attention.methods.layer_head_stack`)."""
    from attention.methods import layer_head_stack
    result = analysis.result
    click = view.click if view.query == "patch" else None
    query = view.query
    if query == "patch":
        query = (lambda m: click_to_patch(analysis, m, click) if click is not None else None)
    key = ("grid", view.query, click)
    maps, names = analysis.cached(key, lambda: tuple(
        ([a.astype(np.float16) for a in st[0]], st[1]) for st in [layer_head_stack(result, query)])[0])
    qtext = "query " + ("clicked patch" if view.query == "patch" else query_label(view.query, result))
    note = "" if view.query != "patch" else " (marked in the Attention tab)"
    return [m.astype(np.float32) for m in maps], names, qtext, note
