"""Methods: captured attention -> raw float maps over the patch grid, (B, gh, gw).

Every method is one module holding one `Method` subclass (``compute(context) -> MapResult``) and
its ``register(...)`` line; the registry (`methods`, `get_method`, `method_names`) is what the CLI,
the export, the demo evaluation, the faithfulness scores and the app enumerate, and
`compute_map(name, result, **context)` is the one entry point they call. Each method's docstring
states its formula. Per-layer x per-head stacks are their own explicit calls (`layer_head_stack`,
`raw_cls_maps`).

Adding a method: a new file here with ``class MyMethod(Method)`` (its ``order`` places it in menus)
and ``register(MyMethod())``; every module of this package is imported below (`discover`), so no
import line is needed. `attention.methods.menu` says which methods, heads and queries a capture offers.
`attention.methods.words`: the methods' words in any language (names, the account of a map, reasons).
"""
from __future__ import annotations

from ..registry import discover
from .base import (METHODS, MapResult, Method, MethodContext, compute_map, get_method, method_label, method_names,
                   method_summary, method_title, methods, register, unregister)
from .layers import grid_stride, is_spatial, query_grid, resolve_layer, spatial_layers
from .fusion import FUSIONS, fuse_heads

discover(__name__)     # the methods, one module each: importing a module registers its method

# the functional forms, re-exported (the registry does not need these lines)
from .raw import raw_attention, raw_cls_maps  # noqa: E402
from .rollout import rollout  # noqa: E402
from .grad_rollout import grad_rollout, grad_rollout_from  # noqa: E402
from .gradcam import gradcam  # noqa: E402
from .received import received_attention, default_heatmap, default_method  # noqa: E402
from .transformer_attribution import transformer_attribution  # noqa: E402
from .attnlrp import attnlrp  # noqa: E402

from .stacks import layer_head_stack  # noqa: E402

register_method = register   # the old name

__all__ = ["METHODS", "Method", "MethodContext", "MapResult", "compute_map", "register", "unregister", "register_method", "get_method",
           "methods", "method_names", "method_label", "method_title", "method_summary", "is_spatial", "spatial_layers", "resolve_layer", "query_grid", "grid_stride",
           "FUSIONS", "fuse_heads", "rollout", "received_attention", "default_heatmap", "default_method",
           "raw_attention", "raw_cls_maps", "grad_rollout", "grad_rollout_from", "gradcam",
           "transformer_attribution", "attnlrp", "layer_head_stack"]
