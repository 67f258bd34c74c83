"""Methods: captured attention -> raw float maps over the patch grid, (B, gh, gw).

One small module per method, all behind one registry: ``get_method(name)(result, **options)``.
Each method's docstring states its formula.
"""
from __future__ import annotations

from typing import Callable

_METHODS: dict[str, Callable] = {}


def register_method(name: str):
    def deco(fn):
        _METHODS[name] = fn
        fn.method_name = name
        return fn
    return deco


def get_method(name: str) -> Callable:
    try:
        return _METHODS[name]
    except KeyError:
        raise KeyError(f"unknown method {name!r}; available: {', '.join(sorted(_METHODS))}") from None


def method_names() -> list[str]:
    return sorted(_METHODS)


from .fusion import fuse_heads  # noqa: E402
from .rollout import rollout  # noqa: E402
from .received import received_attention, default_heatmap  # noqa: E402
from .raw import raw_attention, raw_cls_maps  # noqa: E402
from .grad_rollout import grad_rollout, grad_rollout_from  # noqa: E402
from .gradcam import gradcam  # noqa: E402

__all__ = ["register_method", "get_method", "method_names", "fuse_heads", "rollout",
           "received_attention", "default_heatmap", "raw_attention", "raw_cls_maps", "grad_rollout",
           "grad_rollout_from", "gradcam"]
