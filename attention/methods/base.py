"""The one interface every map method implements, its context, its result, and the registry.

In the spirit of captum's ``attribute()`` and pytorch-grad-cam's ``BaseCAM``: a method is an object
with ``compute(context) -> MapResult``. The `MethodContext` carries everything a method may read
(the capture, the model and its input, the target class, the query, one layer or a layer range,
the head choice, an optional cache); the `MapResult` carries the maps ``(B, gh, gw)`` with the
geometry they live on. Capability flags say what a method needs (``needs_gradients``,
``needs_model``, ``class_specific``) and ``defined_for(result)`` says, *before* any work, why a
method has no meaning for a model (``None`` when it has one).

Adding a method is one file that subclasses `Method` and ends with ``register(MyMethod())``: the
package imports every module of itself (`attention.registry.discover`), so no import line is needed. Everything else (CLI, export, demo
evaluation, faithfulness, the app) enumerates `methods()` and calls `compute_map`.

Layer numbering (``layer``, ``start_layer``, ``end_layer``) is the one of `spatial_layers`:
position among the captured layers that have a spatial view, negative counting from the end.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import torch
from torch import nn

from ..capture import CaptureResult
from ..errors import MethodNotDefinedError
from ..i18n import normalize_lang
from ..layout import TokenLayout
from ..registry import Registry
from .needs import NOTHING
from .queries import Query
from .targets import Target, resolve_targets
from .words import _field, describe

Head = Union[str, int]
Cache = Callable[[tuple, Callable[[], Any]], Any]     # (key, compute) -> value, e.g. Analysis.cached


@dataclass
class MethodContext:
    """What a method may read. Only ``result`` is required; the rest has defaults.

    ``model``: the ``nn.Module`` (or a zero-argument callable returning it, resolved on first
    use, so that cheap methods never load it); ``x``: the input batch (default ``result.input``).
    ``target``: class per item (None: top-1). ``query``: see `attention.methods.queries`.
    ``layer``: the layer of single-layer methods; ``start_layer`` / ``end_layer``: the range of
    chaining methods (None: first / last), all in `spatial_layers` numbering. ``head``: a head
    index or a fusion ("mean", "max", "min"). ``cache``: ``cache(key, compute)`` memoises
    intermediate results across calls (the app passes its per-analysis cache). ``grad_lock``:
    held around gradient computations (one backward at a time per model). ``options``: method
    specific extras (e.g. ``discard_ratio``, ``target_layer``).
    """

    result: CaptureResult
    model: Union[nn.Module, Callable[[], nn.Module], None] = None
    x: Optional[torch.Tensor] = None
    target: Target = None
    query: Query = "auto"
    layer: Union[int, str] = -1
    start_layer: Optional[int] = None
    end_layer: Optional[int] = None
    head: Head = "mean"
    cache: Optional[Cache] = None
    grad_lock: Optional[threading.Lock] = None
    options: dict = field(default_factory=dict)

    @property
    def input(self) -> torch.Tensor:
        return self.result.input if self.x is None else self.x

    def get_model(self) -> nn.Module:
        if self.model is None:
            raise MethodNotDefinedError("this method needs the model, not only the captured attention")
        if not isinstance(self.model, nn.Module):
            self.model = self.model()
            self.model = getattr(self.model, "model", self.model)   # a LoadedModel -> its module
        return self.model

    def memo(self, key: tuple, compute: Callable[[], Any]) -> Any:
        return compute() if self.cache is None else self.cache(key, compute)

    def targets(self) -> torch.Tensor:
        """(B,) class per item: ``target`` resolved against the capture's logits (top-1 when None)."""
        return resolve_targets(self.result.logits, self.target)

    @staticmethod
    def class_key(targets: torch.Tensor):
        """A cache key for resolved targets: the class for one item, a tuple for a batch."""
        t = [int(v) for v in targets.flatten().tolist()]
        return t[0] if len(t) == 1 else tuple(t)

    def gradient_section(self):
        """A context manager around a gradient computation: the shared lock (if any) and grad mode."""
        return _GradSection(self.grad_lock)


class _GradSection:
    def __init__(self, lock):
        self.lock, self.grad = lock, None

    def __enter__(self):
        if self.lock is not None:
            self.lock.acquire()
        self.grad = torch.enable_grad()
        self.grad.__enter__()

    def __exit__(self, *exc):
        self.grad.__exit__(*exc)
        if self.lock is not None:
            self.lock.release()


@dataclass
class MapResult:
    """Maps ``(B, gh, gw)`` and the geometry they live on.

    ``layout``: the token layout whose patch grid the maps cover (None for maps on a grid that
    is no token layout, e.g. Grad-CAM at a conv layer). ``stride``: model-input pixels per cell
    when the grid is the model's token grid (None: input size / grid). ``query_patch``: the
    (row, col) query the map was read from, to mark. ``description``: a short plain-text account
    of what was computed (layer, range, heads, query, class), for captions, in English. ``details``: facts
    for programs (layer names, the range used, the classes explained). ``words``: the same account as
    language-independent phrases (`attention.methods.words`): ``describe(lang)`` writes it in any language
    (``description`` is its English text; a method that gives no words has only the English description).
    """

    maps: torch.Tensor
    method: str
    layout: Optional[TokenLayout] = None
    stride: Optional[tuple[float, float]] = None
    query_patch: Optional[tuple[int, int]] = None
    description: str = ""
    details: dict = field(default_factory=dict)
    words: tuple = ()

    def __post_init__(self):
        if self.words and not self.description:
            self.description = describe(self.words)

    def describe(self, lang: str = "en") -> str:
        """The account of what was computed in `lang` (the English ``description`` where there are no words)."""
        return describe(self.words, lang) if self.words else self.description

    @property
    def grid(self) -> tuple[int, int]:
        return tuple(self.maps.shape[-2:])

    def numpy(self, item: int = 0):
        import numpy as np
        return np.ascontiguousarray(self.maps[item].detach().float().cpu().numpy(), dtype=np.float32)


class Method:
    """Base class of every map method; see the module docstring.

    Subclasses set ``name``, ``label`` (for menus), ``title`` (for captions, default the label),
    ``summary`` (one line: what it shows), the
    capability flags, and implement ``compute``; ``defined_for`` defaults to "always defined".
    ``uses_layer``: reads ``context.layer``; ``uses_layer_range``: reads ``start_layer`` /
    ``end_layer``; ``uses_heads``: accepts a single head index (otherwise only fusions, or
    nothing); ``uses_query``: reads ``context.query``. ``order``: position in menus.

    The words in another language: ``label_in(lang)``, ``title_in(lang)``, ``summary_in(lang)`` (the
    catalogue's ``method.<name>.label`` … , `attention.methods.words`; the attributes are the English
    defaults), ``why_not(result, lang)`` (``defined_for`` in `lang`, from the phrase ``reason(result)``).
    """

    name: str = ""
    label: str = ""
    title: str = ""          # the name in captions (default: the label)
    summary: str = ""
    needs_gradients: bool = False
    needs_model: bool = False
    class_specific: bool = False
    uses_layer: bool = False
    uses_layer_range: bool = False
    uses_heads: bool = False
    uses_query: bool = True
    order: int = 100

    def defined_for(self, result: CaptureResult) -> Optional[str]:
        """None when the method has a meaning for this capture, else the reason it has none."""
        return None

    def reason(self, result: CaptureResult):
        """`defined_for`'s reason as a `attention.methods.words.Phrase` (None: no phrase, the English reason
        serves every language). Methods whose reason has catalogue entries override this."""
        return None

    def why_not(self, result: CaptureResult, lang: str = "en") -> Optional[str]:
        """`defined_for` in `lang`: None when the method has a meaning for this capture, else the reason."""
        why = self.defined_for(result)
        if why is None or normalize_lang(lang) == "en":
            return why
        phrase = self.reason(result)
        return why if phrase is None else phrase.text(lang)

    def label_in(self, lang: str = "en") -> str:
        """The name in menus, in `lang`."""
        return _field(self, "label", lang)

    def title_in(self, lang: str = "en") -> str:
        """The name in captions (the label where there is no title), in `lang`."""
        return _field(self, "title", lang)

    def summary_in(self, lang: str = "en") -> str:
        """One line, what the method shows, in `lang`."""
        return _field(self, "summary", lang)

    def requirements(self, context: MethodContext):
        """What this method needs from the shared forward + backward (`attention.methods.plan.Needs`);
        the default: nothing (the method computes from the capture alone, or runs its own pass)."""
        return NOTHING

    def compute(self, context: MethodContext) -> MapResult:  # pragma: no cover - abstract
        raise NotImplementedError

    # Legacy call forms: ``method(result, **options)`` and ``method(model, x, **options)`` -> tensor.
    def __call__(self, first, *args, **kwargs):
        if isinstance(first, MethodContext):
            return self.compute(first)
        if isinstance(first, nn.Module):
            from ..capture import capture
            x = args[0] if args else kwargs.pop("x")
            result = capture(first, x)
            return compute_map(self, result, model=first, x=x, **kwargs).maps
        return compute_map(self, first, **kwargs).maps

    def __repr__(self) -> str:
        return f"<method {self.name}>"


METHODS: Registry[Method] = Registry("method")
_METHODS = METHODS._entries          # the old name of the registry's dict


def register(method: Method) -> Method:
    """Add a method instance (or class, instantiated here) to the registry; returns it."""
    if isinstance(method, type):
        method = method()
    return METHODS.register(method)


def unregister(name: str) -> None:
    """Remove a method from the registry (plugins, tests)."""
    METHODS.unregister(name)


def get_method(name: Union[str, Method]) -> Method:
    if isinstance(name, Method):
        return name
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(method_names())}") from None


def method_label(method: Union[str, Method], lang: str = "en") -> str:
    """The method's name in menus, in `lang`."""
    return get_method(method).label_in(lang)


def method_title(method: Union[str, Method], lang: str = "en") -> str:
    """The method's name in captions (its label where it has no title), in `lang`."""
    return get_method(method).title_in(lang)


def method_summary(method: Union[str, Method], lang: str = "en") -> str:
    """One line, what the method shows, in `lang`."""
    return get_method(method).summary_in(lang)


def methods() -> list[Method]:
    """Every registered method, in menu order."""
    return sorted(METHODS, key=lambda m: (m.order, m.name))


def method_names() -> list[str]:
    return [m.name for m in methods()]


_CONTEXT_FIELDS = {"model", "x", "target", "query", "layer", "start_layer", "end_layer", "head", "cache",
                   "grad_lock"}


def compute_map(method: Union[str, Method], result: CaptureResult, **kwargs) -> MapResult:
    """The one entry point the app, the CLI, the export and the evaluation use.

    ``kwargs``: `MethodContext` fields (model, x, target, query, layer, start_layer, end_layer,
    head, cache, grad_lock); anything else goes to ``options``. Raises MethodNotDefinedError with
    the method's own reason where it is not defined for this capture.
    """
    m = get_method(method)
    why = m.defined_for(result)
    if why:
        raise MethodNotDefinedError(f"{m.label or m.name}: {why}")
    ctx_kw = {k: kwargs.pop(k) for k in list(kwargs) if k in _CONTEXT_FIELDS}
    options = kwargs.pop("options", {})
    options.update(kwargs)
    ctx = MethodContext(result, options=options, **ctx_kw)
    if m.needs_model and ctx.model is None:
        raise MethodNotDefinedError(f"{m.label or m.name} needs the model, not only the captured attention")
    out = m.compute(ctx)
    out.method = m.name
    return out


__all__ = ["METHODS", "Method", "MethodContext", "MapResult", "register", "unregister", "get_method", "methods", "method_names",
           "compute_map", "method_label", "method_title", "method_summary", "Target", "Head"]
