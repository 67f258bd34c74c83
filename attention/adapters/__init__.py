"""Adapters: how each kind of attention module gives up its weights.

An adapter matches modules (`matches`) and installs whatever makes them record into the current
capture session (`install`, which returns the undo callable). Supporting a new family means adding
one small file with an `Adapter` subclass decorated by `@register_adapter`. Each module is handled by
the first adapter (highest priority) that matches it.

Token providers tell, for a whole model and an input size, what the token sequence looks like
(prefix tokens, patch grid, stride); they are registered the same way with `@register_tokens`.
"""
from __future__ import annotations

from typing import Callable, Optional

from torch import nn

from ..layout import ModelTokens
from .base import Adapter

_ADAPTERS: list[Adapter] = []
_TOKEN_PROVIDERS: list[tuple[int, Callable[[nn.Module, tuple[int, int]], Optional[ModelTokens]]]] = []


def register_adapter(cls: type[Adapter]) -> type[Adapter]:
    _ADAPTERS.append(cls())
    _ADAPTERS.sort(key=lambda a: -a.priority)
    return cls


def register_tokens(priority: int = 0):
    """Register ``fn(model, (H, W)) -> ModelTokens | None``; the first non-None answer wins."""
    def deco(fn):
        _TOKEN_PROVIDERS.append((priority, fn))
        _TOKEN_PROVIDERS.sort(key=lambda p: -p[0])
        return fn
    return deco


def adapters() -> list[Adapter]:
    return list(_ADAPTERS)


def adapter_for(module: nn.Module) -> Optional[Adapter]:
    for a in _ADAPTERS:
        if a.matches(module):
            return a
    return None


def attention_modules(model: nn.Module) -> list[tuple[str, nn.Module, Adapter]]:
    """Every module of `model` that some adapter captures, with its path, in registration order."""
    found = []
    for name, m in model.named_modules():
        a = adapter_for(m)
        if a is not None:
            found.append((name, m, a))
    return found


def install_all(model: nn.Module) -> list[Callable[[], None]]:
    undo: list[Callable[[], None]] = []
    try:
        for a in _ADAPTERS:
            undo.extend(a.install_model(model))
        for _, m, a in attention_modules(model):
            undo.append(a.install(m))
    except BaseException:
        for u in reversed(undo):
            u()
        raise
    return undo


def model_tokens(model: nn.Module, input_hw: tuple[int, int]) -> ModelTokens:
    """The token sequence `model` builds for an input of size `input_hw` (H, W)."""
    for _, fn in _TOKEN_PROVIDERS:
        t = fn(model, tuple(input_hw))
        if t is not None:
            return t
    return ModelTokens()


# Importing the adapter modules registers them.
from . import tokens, timm_attention, cait, swin, mha, recorded  # noqa: E402,F401

__all__ = ["Adapter", "register_adapter", "register_tokens", "adapters", "adapter_for",
           "attention_modules", "install_all", "model_tokens"]
