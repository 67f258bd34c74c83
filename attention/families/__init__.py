"""Model families: one descriptor per family, one file each (see `base.Family`).

`family_of(model)` picks the descriptor with the highest priority that matches the model, or the
base `Family`, which infers layouts from shapes. Adding a family = one file with a `Family` subclass
decorated by `@register_family` in this package (every module of the package is imported).
"""
from __future__ import annotations

from torch import nn

from ..registry import Registry, discover
from .base import Family, MapSpec, PositionEmbedding, Recorded, infer_layout

FAMILIES: Registry[Family] = Registry("model family")
_FAMILIES: list[Family] = []        # the registry's entries, highest priority first (the lookup order)
_GENERIC = Family()


def register_family(cls: type[Family]) -> type[Family]:
    FAMILIES.register(cls())
    _FAMILIES[:] = sorted(FAMILIES, key=lambda f: -f.priority)
    return cls


def families() -> list[Family]:
    """Every registered descriptor, highest priority first."""
    return list(_FAMILIES)


def generic() -> Family:
    """The descriptor of unknown models (layouts inferred from shapes)."""
    return _GENERIC


def family_of(model: nn.Module) -> Family:
    """The descriptor of `model`'s family (the generic, inferring one if none matches)."""
    for f in _FAMILIES:
        if f.matches(model):
            return f
    return _GENERIC


discover(__name__, skip=("base",))   # every module registers its family: a new family is one new file

__all__ = ["Family", "MapSpec", "PositionEmbedding", "Recorded", "register_family", "families", "family_of", "generic", "infer_layout",
           "FAMILIES"]


def projector_for(model: nn.Module, module: nn.Module):
    """How to recompute q, k, v of `module` (see `Family.projector`): the model's family first, then any
    family that knows the module's type (e.g. an ``nn.MultiheadAttention`` inside a model of your own)."""
    for f in [family_of(model)] + _FAMILIES:
        fn = f.projector(module)
        if fn is not None:
            return fn
    return None


__all__ += ["projector_for"]


def model_tokens(model: nn.Module, input_hw: tuple[int, int]):
    """The token sequence `model` builds for an (H, W) input, as its family knows it (empty if unknown)."""
    from ..layout import ModelTokens
    return family_of(model).tokens(model, (int(input_hw[0]), int(input_hw[1]))) or ModelTokens()


__all__ += ["model_tokens"]
