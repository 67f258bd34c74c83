"""Methods: captured attention -> raw float maps over the patch grid, (B, gh, gw).

Every method is one module holding one `Method` subclass (``compute(context) -> MapResult``) and
its ``register(...)`` line; the registry (`methods`, `get_method`, `method_names`) is what the CLI,
the export, the demo evaluation, the faithfulness scores and the app enumerate, and
`compute_map(name, result, **context)` is the one entry point they call. Each method's docstring
states its formula. Per-layer x per-head stacks are their own explicit calls (`layer_head_stack`,
`raw_cls_maps`).

Adding a method: a new file here with ``class MyMethod(Method)`` and ``register(MyMethod())``,
and its import line below.
"""
from __future__ import annotations

from .base import (MapResult, Method, MethodContext, compute_map, get_method, method_names, methods, register,
                   unregister)
from .layers import grid_stride, is_spatial, query_grid, resolve_layer, spatial_layers
from .fusion import FUSIONS, fuse_heads

# the methods, one module each (importing a module registers its method)
from .raw import raw_attention, raw_cls_maps  # noqa: E402
from .rollout import rollout  # noqa: E402
from .grad_rollout import grad_rollout, grad_rollout_from  # noqa: E402
from .gradcam import gradcam  # noqa: E402
from .received import received_attention, default_heatmap, default_method  # noqa: E402
from .transformer_attribution import transformer_attribution  # noqa: E402
from .attnlrp import attnlrp  # noqa: E402

from .stacks import layer_head_stack  # noqa: E402

register_method = register   # the old name

__all__ = ["Method", "MethodContext", "MapResult", "compute_map", "register", "unregister", "register_method", "get_method",
           "methods", "method_names", "is_spatial", "spatial_layers", "resolve_layer", "query_grid", "grid_stride",
           "FUSIONS", "fuse_heads", "rollout", "received_attention", "default_heatmap", "default_method",
           "raw_attention", "raw_cls_maps", "grad_rollout", "grad_rollout_from", "gradcam",
           "transformer_attribution", "attnlrp", "layer_head_stack"]
