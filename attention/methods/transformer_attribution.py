"""Transformer attribution (Chefer, Gur & Wolf, "Transformer Interpretability Beyond Attention
Visualization", CVPR 2021): relevance-weighted attention gradients, rolled out.

For target class c, per chained attention layer l: ``Ā_l = mean_h( (∇A_l^h ⊙ R_{A_l^h})⁺ )`` with
``∇A = ∂y_c/∂A`` (the ordinary gradient) and ``R_A`` the LRP relevance of the attention map (here
from AttnLRP's rules via lxt, `attention.methods.lrp_rules`, where the paper used its own LRP
rules): the uniform rule gives A half the relevance of the product ``A v``, ``R_A = ½ A ⊙ g̃_A``
in the Gradient x Input form (lxt applies A's half at q and k, so ``A ⊙ g̃_A`` is the whole);
then ``R = I``, ``R ← R + Ā_l · R`` over the layers
``start_layer … end_layer``, and the map is the query's row of R over the patches (CLS by default),
computed as in `attention.methods.grad_rollout` (``qᵀ (I + Ā_L) ⋯ (I + Ā_s)``).

Two forwards with the graph kept (one plain, one with the rules) and two backwards. Defined where
rollout is (a stack of square self-attention layers over one token layout) and where the rules
reach every attention layer.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..capture import CaptureResult, capture
from .base import MapResult, Method, MethodContext, register
from .grad_rollout import Target, attention_gradients, chain_weighted
from .layers import grid_stride
from .lrp_rules import check_covered, lrp_rules, model_lock
from .rollout import chained_range, joint_layout, layer_range_words, query_words, rollout_defined, rollout_layers


def relevance_weighted_layers(model: nn.Module, x: torch.Tensor, target: Target = None) -> list[torch.Tensor]:
    """``Ā_l`` (B, N, N) for every chained layer (module docstring)."""
    with torch.enable_grad():
        plain = capture(model, x, keep_graph=True)
        layers = rollout_layers(plain)
        check_covered(model, [m.name for m in layers])
        targets = plain.logits.detach().argmax(-1) if target is None else target
        grads = attention_gradients(plain, layers, targets)
        del plain
        modules = dict(model.named_modules())
        with model_lock(model), lrp_rules(model, [modules[m.name] for m in layers]):
            live = capture(model, x, keep_graph=True)
            lrp_layers = rollout_layers(live)
            mod_grads = attention_gradients(live, lrp_layers, targets)
            # ½: the uniform rule's share of A in the product A·v (lxt applies both halves at q and k)
            rel = [0.5 * m.weights.detach().float() * g.detach().float() for m, g in zip(lrp_layers, mod_grads)]
            del live
    return [(g.detach().float() * r).clamp_min(0).mean(dim=1) for g, r in zip(grads, rel)]


def transformer_attribution(model: nn.Module, x: torch.Tensor, target: Target = None, *, query="auto",
                            start_layer: int = 0) -> torch.Tensor:
    """(B, gh, gw) transformer attribution for class `target` (default top-1); module docstring."""
    result = capture(model, x)
    mats = relevance_weighted_layers(model, x, target)
    return chain_weighted(result, mats, query, start_layer, None)


class TransformerAttribution(Method):
    """Chefer et al. 2021 transformer attribution (module docstring)."""

    name = "transformer_attribution"
    label = "Transformer attribution (Chefer 2021)"
    summary = "rollout of attention gradients x LRP relevance of the attention, for the chosen class (CVPR 2021)"
    needs_gradients = True
    needs_model = True
    class_specific = True
    uses_layer_range = True
    order = 25

    def defined_for(self, result: CaptureResult) -> Optional[str]:
        return rollout_defined(result)

    def compute(self, ctx: MethodContext) -> MapResult:
        result = ctx.result
        layers = rollout_layers(result)
        targets = ctx.targets()

        def run():
            model = ctx.get_model()
            with ctx.gradient_section():
                return relevance_weighted_layers(model, ctx.input, targets)
        mats = ctx.memo(("transformer_attribution", ctx.class_key(targets)), run)
        first, last = chained_range(result, layers, ctx.start_layer, ctx.end_layer)
        maps = chain_weighted(result, mats, ctx.query, first, last)
        q = ctx.query
        return MapResult(maps, self.name, joint_layout(layers), grid_stride(result, maps.shape[-2:]),
                         None if isinstance(q, str) else tuple(int(v) for v in q),
                         f"{layer_range_words(first, last, len(layers))} · {query_words(q)}",
                         {"targets": targets.tolist(), "start_layer": first, "end_layer": last})


register(TransformerAttribution())

__all__ = ["TransformerAttribution", "transformer_attribution", "relevance_weighted_layers"]
