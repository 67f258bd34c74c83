"""Gradient-weighted attention rollout (Chefer, Gur & Wolf, ICCV 2021, "Generic attention-model
explainability for interpreting bi-modal and encoder-decoder transformers"), for self-attention.

For a target class c with logit ``y_c``: ``R = I``; for each attention layer l in forward order,
``Ā_l = mean_h( (∂y_c/∂A_l^h) ⊙ A_l^h )⁺`` (elementwise product, clamp at 0, then the mean over
heads) and ``R ← R + Ā_l · R``. The map is the CLS row of R over the patch tokens (models without
CLS: the mean over the patch query rows; other queries as in `attention.methods.queries`).

One forward (``capture(model, x, keep_graph=True)``) and one backward: ``torch.autograd.grad`` of
``Σ_b y_{b, c_b}`` with respect to every captured map at once (items of a batch do not interact,
so each item gets the gradient of its own target logit). Only one row of R is needed, so it is
computed as ``qᵀ (I + Ā_L) ⋯ (I + Ā_1)`` pushed from the last layer to the first.

CaiT: the self-attention layers act on the patch rows and the class-attention layers on the CLS
row of the joint [cls, patches] space (the other rows are the identity), exactly as in
`attention.methods.rollout`. Where rollout is not defined (Swin, PVT, XCiT, a single attention
layer) this is not either (MethodNotDefinedError).
"""
from __future__ import annotations

import torch
from torch import nn

from ..capture import AttentionMap, CaptureResult, capture
from ..errors import MethodNotDefinedError
from .base import MethodContext, register
from .chained import ChainedGradientMethod, chain_weighted
from .plan import GradientPass, Needs, shared_pass
from .queries import Query, query_weights, resolve_query
from .rollout import chain_ops, finish, joint_layout, propagate, rollout_layers
from .targets import Target, resolve_targets  # noqa: F401  (re-exported: the old home)


def attention_gradients(result: CaptureResult, maps: list[AttentionMap], target: Target = None) -> list[torch.Tensor]:
    """``∂(Σ_b y_{b,c_b}) / ∂A`` for every map in `maps`, from one backward through ``result``'s graph.

    Maps recorded as a view of the tensor the forward used (a permute, an unsqueeze) get the
    gradient of that tensor, viewed the same way.
    """
    if not result.logits.requires_grad:
        raise ValueError("the capture has no autograd graph: use capture(model, x, keep_graph=True)")
    t = resolve_targets(result.logits, target)
    y = result.logits.gather(1, t[:, None]).sum()
    sources: list[torch.Tensor] = []
    slot: dict[int, int] = {}

    def add(t: torch.Tensor) -> int:
        if id(t) not in slot:
            slot[id(t)] = len(sources)
            sources.append(t)
        return slot[id(t)]

    pairs = [(add(m.weights), add(m.weights._base) if m.weights._base is not None else None) for m in maps]
    grads = torch.autograd.grad(y, sources, allow_unused=True)
    if all(g is None for g in grads):
        raise MethodNotDefinedError(
            "the class score does not depend on any captured attention tensor (the adapter recorded a copy "
            "of the weights, not the tensor the forward used), so gradients cannot be taken")
    out = []
    for (i, j), m in zip(pairs, maps):
        w, g = m.weights, grads[i]
        if g is None and j is not None and grads[j] is not None and w._base.is_contiguous():
            gb = grads[j].contiguous()
            g = gb.as_strided(w.size(), w.stride(), w.storage_offset() - w._base.storage_offset())
        if g is None:
            g = torch.zeros_like(w)  # the map does not influence y_c
        out.append(g)
    return out


def grad_rollout_from(result: CaptureResult, target: Target = None, *, query: Query = "auto",
                      start_layer: int = 0) -> torch.Tensor:
    """(B, gh, gw) from a capture taken with ``keep_graph=True``; formula in the module docstring."""
    try:
        layers = rollout_layers(result)
    except MethodNotDefinedError as e:
        raise MethodNotDefinedError(f"gradient-weighted attention (a gradient-weighted rollout): {e}") from None
    full = joint_layout(layers)
    query = resolve_query(full, query)
    q0 = query_weights(full, query, "this model")
    grads = attention_gradients(result, layers, target)
    layers, grads = layers[start_layer:], grads[start_layer:]
    if not layers:
        raise ValueError(f"start_layer {start_layer} is past the last layer")
    mats = [(g.detach().float() * m.weights.detach().float()).clamp_min(0).mean(dim=1) for m, g in zip(layers, grads)]
    ops = chain_ops(layers, full, mats, identity=True)
    B = mats[0].shape[0]
    v = propagate(ops, q0.to(mats[0].device).expand(B, -1).contiguous())
    return finish(v, full)


def grad_rollout(model: nn.Module, x: torch.Tensor, target: Target = None, *, query: Query = "auto",
                 start_layer: int = 0) -> torch.Tensor:
    """(B, gh, gw) gradient-weighted attention for class `target` (default: top-1 per item).

    One ``capture(model, x, keep_graph=True)`` and one backward; formula in the module docstring.
    """
    with torch.enable_grad():
        result = capture(model, x, keep_graph=True)
        try:
            return grad_rollout_from(result, target, query=query, start_layer=start_layer).detach()
        finally:
            del result


def weighted_layers(result: CaptureResult, target: Target = None) -> list[torch.Tensor]:
    """``Ā_l = mean_h((∂y_c/∂A_l^h) ⊙ A_l^h)⁺`` (B, N, N) for every chained layer, from a capture with its graph."""
    layers = rollout_layers(result)
    grads = attention_gradients(result, layers, target)
    return [(g.detach().float() * m.weights.detach().float()).clamp_min(0).mean(dim=1) for m, g in zip(layers, grads)]


class GradRollout(ChainedGradientMethod):
    """Gradient-weighted attention rollout (Chefer, Gur & Wolf, ICCV 2021); formula in the module docstring.

    The ``A_l`` and ``∂y_c/∂A_l`` come from the shared pass (`attention.methods.plan`), so Grad-CAM and
    transformer attribution for the same class cost no further forward or backward.
    """

    name = "grad_rollout"
    label = "Gradient-weighted (Chefer)"
    title = "Gradient-weighted attention (Chefer et al. 2021)"
    summary = "rollout of attention x its gradient for the chosen class (Chefer, Gur & Wolf 2021)"
    order = 20

    def requirements(self, ctx: MethodContext) -> Needs:
        return Needs(attention_gradients=True)

    def layer_weights(self, ctx: MethodContext, targets: torch.Tensor) -> list[torch.Tensor]:
        return weights_from_pass(shared_pass(ctx, self.requirements(ctx)))


def chained_gradients(gp: GradientPass) -> tuple[list[AttentionMap], list[torch.Tensor]]:
    """(the chained layers of the pass's capture, ``∂y/∂A`` of each), or MethodNotDefinedError."""
    layers = rollout_layers(gp.result)
    index = {id(m): k for k, m in enumerate(gp.result.maps)}
    grads = [gp.attention_gradients[index[id(m)]] for m in layers]
    if all(g is None for g in grads):
        raise MethodNotDefinedError(
            "the class score does not depend on any captured attention tensor (the adapter recorded a copy "
            "of the weights, not the tensor the forward used), so gradients cannot be taken")
    grads = [torch.zeros_like(m.weights) if g is None else g for m, g in zip(layers, grads)]
    return layers, grads


def weights_from_pass(gp: GradientPass) -> list[torch.Tensor]:
    """``Ā_l = mean_h((∂y_c/∂A_l^h) ⊙ A_l^h)⁺`` (B, N, N), float32, for every chained layer of the pass."""
    layers, grads = chained_gradients(gp)
    return [(g.float() * m.weights.float()).clamp_min(0).mean(dim=1) for m, g in zip(layers, grads)]


register(GradRollout())

__all__ = ["GradRollout", "grad_rollout", "grad_rollout_from", "attention_gradients", "resolve_targets", "Target",
           "weighted_layers", "chain_weighted", "weights_from_pass", "chained_gradients"]
