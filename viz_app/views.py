"""One view of an analysis: which map (method, layer, head, query, target class) and how it is drawn.

`compute_map` reads everything from the cached `Analysis` (no forward pass for raw attention and
rollout); gradient methods run one forward + backward per target class and cache what they need,
so a second query or a colour change is free. `render_view` draws the map on the photo.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Callable, Optional, Union

import numpy as np
import torch

from attention.capture import CaptureResult
from attention.errors import MethodNotDefinedError
from attention.layout import CHANNEL, CLASS, POOLING, REDUCED, SELF, WINDOW
from attention.render import overlay, photo_to_patch

from .state import Analysis

METHODS = {
    "raw": "Raw attention",
    "rollout": "Rollout",
    "grad_rollout": "Gradient-weighted (Chefer)",
    "gradcam": "Grad-CAM",
}
CLASS_SPECIFIC = ("grad_rollout", "gradcam")
FUSIONS = ("mean", "max", "min")
COLORMAPS = ("inferno", "viridis", "magma", "plasma", "jet", "turbo", "gray")
MODES = ("smooth", "blocky")
NORMS = (("min–max", "minmax"), ("clip top 1%", "percentile"))

QUERY_LABELS = {"cls": "CLS", "dist": "DIST", "cls+dist": "CLS+DIST (mean)", "patch_mean": "all patches (mean)",
                "query": "learned pooling query", "patch": "clicked patch"}


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

    def with_(self, **kw) -> "View":
        return replace(self, **kw)


@dataclass
class MapResult:
    heat: np.ndarray                         # (gh, gw) float32
    stride: Optional[tuple[float, float]]    # model-input pixels per cell (None: input size / grid)
    patch: Optional[tuple[int, int]]         # the query patch on this map's grid, to mark
    caption: str


# ---------------------------------------------------------------------------- layers, heads, queries

def is_spatial(m) -> bool:
    if m.kind == WINDOW:
        return m.window is not None
    return m.kind in (SELF, CLASS, POOLING, REDUCED) and m.layout is not None and m.layout.num_patches > 0


def spatial_layers(result: CaptureResult) -> list[int]:
    """Indices into ``result.maps`` of the layers that have a spatial view (what the layer slider walks)."""
    return [i for i, m in enumerate(result.maps) if is_spatial(m)]


def layer_map(result: CaptureResult, layer: int):
    idx = spatial_layers(result)
    if not idx:
        kinds = sorted({m.kind for m in result.maps}) or ["none"]
        raise MethodNotDefinedError(
            f"this model has no spatial attention to show (captured layers: {len(result.maps)}, kinds: "
            f"{', '.join(kinds)})" + (" — XCiT's attention is channel x channel" if CHANNEL in kinds else ""))
    layer = int(layer)
    if layer < 0:
        layer += len(idx)
    layer = min(max(layer, 0), len(idx) - 1)
    return layer, idx[layer], result.maps[idx[layer]]


def head_choices(m) -> list[str]:
    return list(FUSIONS) + [str(h) for h in range(m.num_heads)]


def query_choices(result: CaptureResult) -> list[str]:
    """The queries this model has: its prefix tokens (CLS, DIST, registers), the patch mean, a clicked patch."""
    names = list(result.tokens.prefix_names)
    out = []
    if names:
        out.append("auto")
        out += names
        if "cls" in names and "dist" in names:
            out.append("cls+dist")
    elif any(m.kind == POOLING for m in result.maps):
        out.append("auto")
    out += ["patch_mean", "patch"] if any(m.kind != POOLING for m in result.maps if is_spatial(m)) else []
    if not out:
        out = ["auto"]
    return out


def query_label(q: str, result: Optional[CaptureResult] = None) -> str:
    if q == "auto":
        if result is not None and "cls" in result.tokens.prefix_names:
            return "CLS (default)"
        return "default"
    if q.startswith("reg"):
        return f"register {q[3:]}"
    return QUERY_LABELS.get(q, q)


def parse_head(head: Union[str, int]) -> Union[str, int]:
    if isinstance(head, (int, np.integer)):
        return int(head)
    h = str(head).strip().lower().removeprefix("head").strip()
    if h in FUSIONS:
        return h
    try:
        return int(h)
    except ValueError:
        raise MethodNotDefinedError(f"unknown head {head!r}: use a head number or one of {', '.join(FUSIONS)}") from None


def head_label(head) -> str:
    h = parse_head(head)
    return f"head {h}" if isinstance(h, int) else f"{h} over heads"


def click_to_patch(analysis: Analysis, m, click: tuple[float, float]) -> Optional[tuple[int, int]]:
    """The patch of layer `m`'s query grid under a click given in original-photo pixels."""
    grid = _query_grid(m)
    if grid is None:
        return None
    stride = _stride(analysis.result, grid)
    return photo_to_patch(analysis.prepared.geometry, grid, click[0], click[1], stride)


def _query_grid(m) -> Optional[tuple[int, int]]:
    if m.kind == WINDOW:
        return tuple(m.window.grid)
    lay = m.query_layout if m.kind == REDUCED else m.layout
    if lay is None or lay.num_patches == 0 or m.kind in (POOLING, CLASS):
        return None
    return tuple(lay.grid)


def _stride(result: CaptureResult, grid) -> Optional[tuple[float, float]]:
    t = result.tokens
    if t.grid is not None and tuple(t.grid) == tuple(grid):
        return tuple(float(s) for s in t.stride)
    return None


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
        return patch, patch
    return view.query, None


def compute_map(analysis: Analysis, view: View, model: Optional[ModelGetter] = None,
                grad_lock: Optional[threading.Lock] = None) -> MapResult:
    """The (gh, gw) map a view asks for, from the analysis' cache where possible."""
    method = view.method
    if method == "raw":
        return _raw(analysis, view)
    if method == "rollout":
        return _rollout(analysis, view)
    if method == "grad_rollout":
        return _grad_rollout(analysis, view, model, grad_lock)
    if method == "gradcam":
        return _gradcam(analysis, view, model, grad_lock)
    raise MethodNotDefinedError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")


def _raw(analysis: Analysis, view: View) -> MapResult:
    from attention.methods.raw import raw_attention
    result = analysis.result
    pos, i, m = layer_map(result, view.layer)
    query, patch = _query_for(analysis, m, view)
    if m.kind == WINDOW and not isinstance(query, tuple):
        heat = _window_received(m, parse_head(view.head))
        qtext = "attention each position receives (Swin has no CLS token; click a patch for its own view)"
    else:
        if m.kind == POOLING:
            query = "auto"
        heat = raw_attention(result, i, parse_head(view.head), query)[0]
        qtext = f"query {query_label(view.query, result)}" + (f" at patch {patch}" if patch else "")
    n = len(spatial_layers(result))
    grid = tuple(heat.shape)
    return MapResult(_np(heat), _stride(result, grid), patch,
                     f"**Raw attention** · layer {pos} of 0–{n - 1} (`{m.name}`) · {head_label(view.head)} · {qtext}")


def _window_received(m, head) -> torch.Tensor:
    """(H, W) attention received per stage position of a Swin layer, one head or the heads fused."""
    from attention.render.files import _window_heads
    per_head = torch.from_numpy(_window_heads(m))
    if isinstance(head, int):
        if not -per_head.shape[0] <= head < per_head.shape[0]:
            raise MethodNotDefinedError(f"head {head} out of range: {m.name} has {per_head.shape[0]} heads")
        return per_head[head]
    return {"mean": per_head.mean, "max": lambda dim: per_head.amax(dim), "min": lambda dim: per_head.amin(dim)}[head](dim=0)


def _rollout(analysis: Analysis, view: View) -> MapResult:
    from attention.methods.rollout import rollout, rollout_layers
    result = analysis.result
    layers = rollout_layers(result)           # raises MethodNotDefinedError where rollout has no meaning
    fusion = parse_head(view.head)
    if not isinstance(fusion, str):
        fusion = "mean"
    pos, i, m = layer_map(result, view.layer)
    order = {id(mm): k for k, mm in enumerate(result.maps)}
    upto = max(1, sum(1 for lm in layers if order[id(lm)] <= i))
    query, patch = _query_for(analysis, m, view)
    key = ("rollout", fusion, upto, query if isinstance(query, str) else tuple(query))

    heat = analysis.cached(key, lambda: _np(rollout(result, head_fusion=fusion, query=query, end_layer=upto - 1)[0]))
    grid = tuple(heat.shape)
    note = "" if isinstance(parse_head(view.head), str) else " (rollout fuses the heads: mean used)"
    return MapResult(heat, _stride(result, grid), patch,
                     f"**Attention rollout** through layer {upto - 1} of 0–{len(layers) - 1} · {fusion} over heads{note} · "
                     f"query {query_label(view.query, result)}" + (f" at patch {patch}" if patch else ""))


def target_of(analysis: Analysis, view: View) -> int:
    return analysis.top1 if view.target is None else int(view.target)


def _with_grad_lock(lock: Optional[threading.Lock], fn):
    if lock is None:
        return fn()
    with lock:
        return fn()


def _grad_rollout(analysis: Analysis, view: View, model: Optional[ModelGetter], lock) -> MapResult:
    from attention.capture import capture
    from attention.methods.grad_rollout import attention_gradients
    from attention.methods.rollout import chain_ops, finish, joint_layout, propagate, rollout_layers
    from attention.methods.queries import query_weights, resolve_query

    result = analysis.result
    rollout_layers(result)                      # clear error up front (Swin, single-layer CNNs)
    target = target_of(analysis, view)
    if model is None:
        raise MethodNotDefinedError("gradient methods need the model; reload the image")

    def compute():
        loaded = model()

        def run():
            with torch.enable_grad():
                live = capture(loaded.model, analysis.prepared.tensor, keep_graph=True)
                layers = rollout_layers(live)
                grads = attention_gradients(live, layers, target)
                mats = [(g.detach().float() * lm.weights.detach().float()).clamp_min(0).mean(dim=1)
                        for lm, g in zip(layers, grads)]
                return {"mats": [x.to(torch.float16) for x in mats], "names": [lm.name for lm in layers]}
        return _with_grad_lock(lock, run)

    cached = analysis.cached(("grad_rollout", target), compute)
    layers = rollout_layers(result)
    full = joint_layout(layers)
    pos, i, m = layer_map(result, view.layer)
    query, patch = _query_for(analysis, m, view)
    query = resolve_query(full, query)
    qkey = ("grad_rollout_map", target, query if isinstance(query, str) else tuple(query))

    def finish_map():
        mats = [x.float() for x in cached["mats"]]
        ops = chain_ops(layers, full, mats, identity=True)
        q0 = query_weights(full, query, "this model")[None]
        return _np(finish(propagate(ops, q0), full)[0])
    heat = analysis.cached(qkey, finish_map)
    return MapResult(heat, _stride(result, heat.shape), patch,
                     f"**Gradient-weighted attention** (Chefer et al. 2021) for class "
                     f"**{_class_name(analysis, target)}** · query {query_label(view.query, result)}"
                     + (f" at patch {patch}" if patch else ""))


def _gradcam(analysis: Analysis, view: View, model: Optional[ModelGetter], lock) -> MapResult:
    from attention.methods.gradcam import default_target_layer, gradcam
    target = target_of(analysis, view)
    if model is None:
        raise MethodNotDefinedError("gradient methods need the model; reload the image")
    where = {}

    def compute():
        loaded = model()
        layer = default_target_layer(loaded.model)
        where["layer"] = next((n for n, mod in loaded.model.named_modules() if mod is layer), type(layer).__name__)
        heat = _with_grad_lock(lock, lambda: gradcam(loaded.model, analysis.prepared.tensor, target,
                                                     tokens=analysis.result.tokens)[0])
        return _np(heat), where["layer"]
    heat, layer_name = analysis.cached(("gradcam", target), compute)
    return MapResult(heat, _stride(analysis.result, heat.shape), None,
                     f"**Grad-CAM** for class **{_class_name(analysis, target)}** at `{layer_name}` "
                     f"({heat.shape[0]}x{heat.shape[1]} grid)")


def _class_name(analysis: Analysis, index: int) -> str:
    names = analysis.class_names
    return names[index] if 0 <= index < len(names) else f"class {index}"


def _np(t) -> np.ndarray:
    if isinstance(t, torch.Tensor):
        t = t.detach().float().cpu().numpy()
    return np.ascontiguousarray(t, dtype=np.float32)


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
    texts describing the query. CLS where the model has one; Swin and CNNs: attention received."""
    from attention.methods.raw import raw_attention
    from attention.render.files import _window_heads
    result = analysis.result
    idx = spatial_layers(result)
    if not idx:
        layer_map(result, 0)   # raises the clear "no spatial attention" error
    click = view.click if view.query == "patch" else None
    query = view.query if view.query != "patch" else "patch"
    key = ("grid", query, click)

    def compute():
        maps, names, marked = [], [], None
        for i in idx:
            m = result.maps[i]
            if query == "patch":
                q = click_to_patch(analysis, m, click) if click is not None else None
                if q is None or m.kind == POOLING:
                    q = "auto" if m.kind == POOLING else None
                marked = marked or (q if isinstance(q, tuple) else None)
            else:
                q = "auto" if m.kind == POOLING else query
            if m.kind == WINDOW and not isinstance(q, tuple):
                a = _window_heads(m)
            elif q is None or (m.kind == CLASS and isinstance(q, tuple)):
                lay = m.layout
                a = np.full((m.num_heads, *lay.grid), np.nan, np.float32)
            else:
                try:
                    a = np.stack([_np(raw_attention(result, i, h, q)[0]) for h in range(m.num_heads)])
                except MethodNotDefinedError:
                    a = np.stack([_np(raw_attention(result, i, h, "patch_mean")[0]) for h in range(m.num_heads)])
            maps.append(a.astype(np.float16))
            names.append(m.name)
        return maps, names
    maps, names = analysis.cached(key, compute)
    qtext = "query " + ("clicked patch" if query == "patch" else query_label(query, result))
    note = "" if query != "patch" else " (marked in the Attention tab)"
    return [m.astype(np.float32) for m in maps], names, qtext, note
