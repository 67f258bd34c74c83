"""The shared body of the chained gradient methods (gradient-weighted rollout, transformer attribution).

Both compute one weighted matrix ``Ā_l`` (B, N, N) per chained layer for the chosen class (each its
own formula, `ChainedGradientMethod.layer_weights`), then chain them as rollout does with the
identity for the residual: ``qᵀ (I + Ā_last) ⋯ (I + Ā_first)`` over the layers ``start_layer …
end_layer`` (`chain_weighted`), the query's row over the patches. The ``Ā`` of one class are
memoised (``context.cache``), so another query or layer range costs one cheap chain.
"""
from __future__ import annotations

from typing import Optional

import torch

from ..capture import CaptureResult
from .base import MapResult, Method, MethodContext
from .layers import grid_stride
from .queries import Query, query_weights, resolve_query
from .rollout import (chain_ops, chained_range, finish, joint_layout, propagate, rollout_defined, rollout_layers,
                      rollout_reason)
from .words import query_words, range_words


def chain_weighted(result: CaptureResult, mats: list[torch.Tensor], query: Query = "auto", first: int = 0,
                   last: Optional[int] = None) -> torch.Tensor:
    """(B, gh, gw) ``qᵀ (I + Ā_last) ⋯ (I + Ā_first)`` from precomputed ``Ā`` (layers of `rollout_layers`)."""
    layers = rollout_layers(result)
    last = len(layers) - 1 if last is None else last
    full = joint_layout(layers)
    q0 = query_weights(full, resolve_query(full, query), "this model")
    ops = chain_ops(layers[first:last + 1], full, mats[first:last + 1], identity=True)
    B = mats[0].shape[0]
    return finish(propagate(ops, q0.to(mats[0].device).expand(B, -1).contiguous()), full)


class ChainedGradientMethod(Method):
    """A method whose map is the chain of per-layer weighted attention ``Ā_l`` (module docstring).

    Subclasses implement ``layer_weights(context, targets) -> [Ā_l (B, N, N)]`` for the layers of
    `rollout_layers` (float32), and ``requirements``.
    """

    needs_gradients = True
    needs_model = True
    class_specific = True
    uses_layer_range = True

    def defined_for(self, result: CaptureResult) -> Optional[str]:
        return rollout_defined(result)

    def reason(self, result: CaptureResult):
        return rollout_reason(result)

    def layer_weights(self, ctx: MethodContext, targets: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover
        raise NotImplementedError

    def compute(self, ctx: MethodContext) -> MapResult:
        result = ctx.result
        layers = rollout_layers(result)
        targets = ctx.targets()
        mats = ctx.memo((self.name, ctx.class_key(targets)), lambda: self.layer_weights(ctx, targets))
        first, last = chained_range(result, layers, ctx.start_layer, ctx.end_layer)
        maps = chain_weighted(result, mats, ctx.query, first, last)
        q = ctx.query
        return MapResult(maps, self.name, joint_layout(layers), grid_stride(result, maps.shape[-2:]),
                         None if isinstance(q, str) else tuple(int(v) for v in q),
                         details={"targets": targets.tolist(), "start_layer": first, "end_layer": last},
                         words=(range_words(first, last, len(layers)), query_words(q)))


__all__ = ["ChainedGradientMethod", "chain_weighted"]
