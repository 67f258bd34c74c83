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

Two forwards with the graph kept and two backwards, parameters frozen: the plain pass shared with
the other gradient maps and the pass with the rules shared with AttnLRP (`attention.methods.plan`). Defined where
rollout is (a stack of square self-attention layers over one token layout) and where the rules
reach every attention layer.
"""
from __future__ import annotations

import torch
from torch import nn

from ..capture import capture
from .base import MethodContext, register
from .chained import ChainedGradientMethod, chain_weighted
from .grad_rollout import chained_gradients
from .targets import Target
from .plan import GradientPass, Needs, gradient_pass, lrp_pass, shared_lrp_pass, shared_pass
from .rollout import rollout_layers


def attention_relevance(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, names: list[str]
                        ) -> list[torch.Tensor]:
    """``R_A = ½ A ⊙ g̃_A`` (B, heads, N, N), float32, for every chained layer (module ``names``): one
    forward and one backward (parameters frozen) with the AttnLRP rules in place on those modules."""
    return relevance_from(lrp_pass(model, x, targets, names))


def relevance_from(lp: GradientPass) -> list[torch.Tensor]:
    """``R_A = ½ A ⊙ g̃_A`` of the chained layers from a pass with the rules (`attention.methods.plan.lrp_pass`)."""
    layers, grads = chained_gradients(lp)
    # ½: the uniform rule's share of A in the product A·v (lxt applies both halves at q and k)
    return [0.5 * m.weights.float() * g.float() for m, g in zip(layers, grads)]


def weighted_from(gp: GradientPass, rel: list[torch.Tensor]) -> list[torch.Tensor]:
    """``Ā_l = mean_h( (∇A_l^h ⊙ R_{A_l^h})⁺ )`` from the plain pass's gradients and the relevances."""
    _, grads = chained_gradients(gp)
    return [(g.float() * r).clamp_min(0).mean(dim=1) for g, r in zip(grads, rel)]


def relevance_weighted_layers(model: nn.Module, x: torch.Tensor, target: Target = None) -> list[torch.Tensor]:
    """``Ā_l`` (B, N, N) for every chained layer (module docstring)."""
    gp = gradient_pass(model, x, target, Needs(attention_gradients=True))
    names = [m.name for m in rollout_layers(gp.result)]
    return weighted_from(gp, attention_relevance(model, x, gp.targets, names))


def transformer_attribution(model: nn.Module, x: torch.Tensor, target: Target = None, *, query="auto",
                            start_layer: int = 0) -> torch.Tensor:
    """(B, gh, gw) transformer attribution for class `target` (default top-1); module docstring."""
    result = capture(model, x)
    mats = relevance_weighted_layers(model, x, target)
    return chain_weighted(result, mats, query, start_layer, None)


class TransformerAttribution(ChainedGradientMethod):
    """Chefer et al. 2021 transformer attribution (module docstring). The plain gradients ``∇A`` come
    from the shared pass (`attention.methods.plan`, with gradient-weighted rollout and Grad-CAM); the
    relevances from one pass with the rules, memoised per class."""

    name = "transformer_attribution"
    label = "Transformer attribution (Chefer 2021)"
    summary = "rollout of attention gradients x LRP relevance of the attention, for the chosen class (CVPR 2021)"
    order = 25

    def requirements(self, ctx: MethodContext) -> Needs:
        return Needs(attention_gradients=True, lrp_attention=True)

    def layer_weights(self, ctx: MethodContext, targets: torch.Tensor) -> list[torch.Tensor]:
        gp = shared_pass(ctx, self.requirements(ctx))
        # the pass with the rules on the chained layers: AttnLRP shares it where those are all the layers
        lp = shared_lrp_pass(ctx, [m.name for m in rollout_layers(ctx.result)])
        return weighted_from(gp, relevance_from(lp))


register(TransformerAttribution())

__all__ = ["TransformerAttribution", "transformer_attribution", "relevance_weighted_layers", "attention_relevance",
           "relevance_from"]
