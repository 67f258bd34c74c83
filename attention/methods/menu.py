"""What applies to what: which methods a capture offers, what the head and query menus hold.

The one place these decisions live; a UI only lays them out. A method is *offered* for a capture
when ``Method.defined_for(result)`` is None and, if it is class-specific, the model has a
classifier (otherwise the reason is `NO_CLASSIFIER`). Methods that fuse the heads themselves
(``Method.uses_heads`` false: rollout, gradient chains) offer one head entry, "mean".

Every text here takes ``lang`` (default English, the words of the catalogue ``method.…``, `attention.i18n`):
the reasons a method is not offered, the head and query menu entries, "fused by the method".
"""
from __future__ import annotations

from typing import Optional, Union

import numpy as np

from ..capture import CaptureResult
from ..errors import MethodNotDefinedError
from ..layout import POOLING
from .base import get_method, methods
from .fusion import FUSIONS
from .layers import is_spatial, resolve_layer
from .words import head_words, phrase

NO_CLASSIFIER = "class-specific, and this model has no classifier"

QUERY_LABELS = {"cls": "CLS", "dist": "DIST", "cls+dist": "CLS+DIST (mean)", "patch_mean": "all patches (mean)",
                "query": "learned pooling query", "patch": "clicked patch"}


# ---------------------------------------------------------------------------- methods

def no_classifier(lang: str = "en") -> str:
    """`NO_CLASSIFIER` in `lang`."""
    return phrase("method.why.no_classifier").text(lang)


def _why_not(method, result: CaptureResult, has_classifier: bool, lang: str = "en") -> Optional[str]:
    why = method.why_not(result, lang)
    if why is None and method.class_specific and not has_classifier:
        why = no_classifier(lang)
    return why


def offered_methods(result: CaptureResult, has_classifier: bool = True, lang: str = "en"
                    ) -> tuple[list[str], list[tuple[str, str]]]:
    """(names offered for this capture, in registry order; (name, reason in `lang`) of each method not offered)."""
    names, missing = [], []
    for m in methods():
        why = _why_not(m, result, has_classifier, lang)
        if why is None:
            names.append(m.name)
        else:
            missing.append((m.name, why))
    return names, missing


def fallback_method(result: CaptureResult, wanted: str, has_classifier: bool = True) -> str:
    """`wanted` if offered, else "raw" if offered, else the first offered method."""
    names, missing = offered_methods(result, has_classifier)
    if wanted in names:
        return wanted
    if "raw" in names:
        return "raw"
    if not names:
        raise MethodNotDefinedError("no method applies to this model: "
                                    + "; ".join(f"{n}: {why}" for n, why in missing))
    return names[0]


def is_class_specific(method: str) -> bool:
    return get_method(method).class_specific


def needs_model(method: str) -> bool:
    return get_method(method).needs_model


def class_method(result: CaptureResult, current: str, has_classifier: bool = True) -> str:
    """The method to show when a class is picked: `current` if class-specific and offered, else the
    first offered class-specific method (`current` when there is none)."""
    names, _ = offered_methods(result, has_classifier)
    if current in names and is_class_specific(current):
        return current
    return next((n for n in names if is_class_specific(n)), current)


def click_method(result: CaptureResult, current: str) -> str:
    """The method a click on the picture shows the clicked patch's view with: `current` when it reads a
    query from the attention alone (raw, rollout), else raw attention."""
    try:
        m = get_method(current)
    except KeyError:
        return "raw"
    ok = m.uses_query and not m.needs_model and m.defined_for(result) is None
    return current if ok else "raw"


# ---------------------------------------------------------------------------- layers

def layer_at(result: CaptureResult, layer: Union[int, str]):
    """The `AttentionMap` at a slider position (clamped) or layer name."""
    return resolve_layer(result, layer)[2]


def layer_position(result: CaptureResult, layer: Union[int, str]) -> int:
    """The slider position (0 … n-1 among the spatial layers) of a position or a layer name."""
    return resolve_layer(result, layer)[0]


# ---------------------------------------------------------------------------- heads

def fuses_heads(method: str, lang: str = "en") -> str:
    """"" when `method` lets one choose a head; else the sentence saying it combines the heads itself."""
    m = get_method(method)
    return "" if m.uses_heads else phrase("method.menu.fuses_heads", title=m.title_in(lang)).text(lang)


def fused_entry(lang: str = "en") -> str:
    """The one head menu entry of a method that fuses the heads itself: "fused by the method"."""
    return phrase("method.menu.fused_by_method").text(lang)


def head_choices(layer_map, method: str = "raw") -> list[str]:
    """The head menu for one layer: ["mean"] when the method fuses heads, else the fusions then each head."""
    if fuses_heads(method):
        return ["mean"]
    return list(FUSIONS) + [str(h) for h in range(layer_map.num_heads)]


def parse_head(head: Union[str, int]) -> Union[str, int]:
    """A head menu entry ("mean", "head 3", "3", 3) -> a fusion name or a head index."""
    if isinstance(head, (int, np.integer)):
        return int(head)
    h = str(head).strip().lower().removeprefix("head").strip()
    if h in FUSIONS:
        return h
    try:
        return int(h)
    except ValueError:
        raise MethodNotDefinedError(f"unknown head {head!r}: use a head number or one of {', '.join(FUSIONS)}") from None


def head_label(head, lang: str = "en") -> str:
    """A head menu entry's text: "head 3", "mean over heads" (in `lang`)."""
    return head_words(parse_head(head)).text(lang)


# ---------------------------------------------------------------------------- queries

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


def query_label(q: str, result: Optional[CaptureResult] = None, lang: str = "en") -> str:
    """A query menu entry's text (in `lang`): "CLS (default)", "register 0", "all patches (mean)" …"""
    if q == "auto":
        cls = result is not None and "cls" in result.tokens.prefix_names
        return phrase("method.menu.query.auto_cls" if cls else "method.menu.query.auto").text(lang)
    if q.startswith("reg"):
        return phrase("method.menu.query.register", n=q[3:]).text(lang)
    return phrase(f"method.menu.query.{q}").text(lang) if q in QUERY_LABELS else q


__all__ = ["NO_CLASSIFIER", "QUERY_LABELS", "no_classifier", "fused_entry", "offered_methods", "fallback_method", "is_class_specific", "needs_model",
           "class_method", "click_method", "layer_at", "layer_position", "fuses_heads", "head_choices", "parse_head",
           "head_label", "query_choices", "query_label"]
