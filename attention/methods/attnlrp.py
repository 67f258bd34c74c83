"""AttnLRP (Achtibat et al., "AttnLRP: Attention-Aware Layer-Wise Relevance Propagation for
Transformers", ICML 2024), through the rules of the `lxt` package (see `attention.methods.lrp_rules`).

With the rules in place, one forward and one backward of the explained logit ``y_c`` give the
modified input gradient ``g̃`` (the method takes it from the pass with the rules that transformer
attribution shares, `attention.methods.plan.shared_lrp_pass`; `input_relevance` computes the same
without a capture); the input relevance is ``R_x = x ⊙ g̃`` (Gradient x Input, the form
``lxt.efficient`` uses), per pixel and colour channel. The map sums it over the channels and over
the pixels of each patch cell: ``map[i, j] = Σ_{pixels p in cell (i, j)} Σ_ch R_x[ch, p]`` on the
model's token grid (models without one: the grid of their last spatial attention layer).

Conservation: ``Σ R_x = y_c − Σ_b b ⊙ g̃_b − ½ Σ_softmax (Σ R_s − Σ R_x_s)``: the logit minus the
relevance the biases absorb (every additive parameter: biases, position embeddings, CLS / register
tokens) and minus what the softmax rule keeps as its Taylor bias (Prop. 3.1); the ½ is the
uniform rule on the ``A v`` product, applied in lxt at q and k. The map is signed (negative
relevance speaks against the class) and class-specific.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..capture import CaptureResult
from ..layout import CHANNEL, POOLING
from ..modelstate import preserved
from .base import MapResult, Method, MethodContext, register
from .targets import Target, resolve_targets
from .layers import grid_stride, resolve_layer, spatial_layers
from .lrp_rules import check_covered, lrp_rules, model_lock
from .plan import shared_lrp_pass
from .words import phrase


def attention_modules(model: nn.Module, result: CaptureResult) -> list[nn.Module]:
    modules = dict(model.named_modules())
    names = [m.name for m in result.maps]
    check_covered(model, names)
    return [modules[n] for n in names]


def input_relevance(model: nn.Module, x: torch.Tensor, target: Target = None, attention=None,
                    param_grads: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(R_x (B, 3, H, W), logits (B, C)): AttnLRP input relevance of each item's target logit.

    ``param_grads``: also leave ``g̃`` in the parameters' ``.grad`` (for conservation checks);
    otherwise the weights are frozen during the backward (faster) and left as found.
    """
    with model_lock(model), preserved(model, eval_mode=True, freeze=not param_grads), \
            lrp_rules(model, attention), torch.enable_grad():
        from ..device import to_model
        xg = to_model(model, x.detach()).clone().requires_grad_(True)
        logits = model(xg)
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        t = resolve_targets(logits, target)
        y = logits.gather(1, t[:, None]).sum()
        if param_grads:
            y.backward()
            g = xg.grad
        else:
            g, = torch.autograd.grad(y, xg)
    return (xg.detach() * g).detach(), logits.detach()


def pool_to_grid(r: torch.Tensor, grid: tuple[int, int], stride: Optional[tuple[float, float]] = None) -> torch.Tensor:
    """(B, H, W) per-pixel values -> (B, gh, gw) sums per cell (cell of a pixel: floor(y / stride),
    or floor(y · gh / H) without a stride; pixels past the last cell join it)."""
    B, H, W = r.shape
    gh, gw = grid
    if stride is not None:
        ri = (torch.arange(H) / float(stride[0])).floor().long().clamp_max(gh - 1)
        ci = (torch.arange(W) / float(stride[1])).floor().long().clamp_max(gw - 1)
    else:
        ri = torch.div(torch.arange(H) * gh, H, rounding_mode="floor")
        ci = torch.div(torch.arange(W) * gw, W, rounding_mode="floor")
    cell = (ri[:, None] * gw + ci[None, :]).flatten().to(r.device)
    out = torch.zeros(B, gh * gw, dtype=r.dtype, device=r.device)
    out.index_add_(1, cell, r.reshape(B, -1))
    return out.view(B, gh, gw)


def map_grid(result: CaptureResult) -> tuple[tuple[int, int], Optional[tuple[float, float]]]:
    t = result.tokens
    if t is not None and t.grid is not None:
        return tuple(t.grid), tuple(float(s) for s in t.stride)
    _, _, m = resolve_layer(result, -1)
    grid = tuple(m.window.grid) if m.window is not None else tuple(m.layout.grid)
    return grid, None


def attnlrp(model: nn.Module, x: torch.Tensor, target: Target = None, result: Optional[CaptureResult] = None
            ) -> torch.Tensor:
    """(B, gh, gw) AttnLRP relevance per patch cell for class `target` (default top-1); module docstring."""
    from ..capture import capture
    result = result if result is not None else capture(model, x)
    rel, _ = input_relevance(model, x, target, attention_modules(model, result))
    grid, stride = map_grid(result)
    # summed in float32 at least (bf16 / fp16 models), float64 models keep float64
    return pool_to_grid(rel.to(torch.promote_types(rel.dtype, torch.float32)).sum(1), grid, stride)


class AttnLRP(Method):
    """AttnLRP relevance of the chosen class per patch (module docstring)."""

    name = "attnlrp"
    label = "AttnLRP"
    summary = "layer-wise relevance propagation with attention-aware rules (Achtibat et al. 2024, via lxt)"
    needs_gradients = True
    needs_model = True
    class_specific = True
    uses_query = False
    order = 50

    def defined_for(self, result: CaptureResult) -> Optional[str]:
        why = self.reason(result)
        return None if why is None else why.text()

    def reason(self, result: CaptureResult):
        """Where the rules do not reach: no spatial layer, attention pooling, channel attention."""
        kinds = {m.kind for m in result.maps}
        if not spatial_layers(result):
            return phrase("method.why.attnlrp_no_spatial")
        if POOLING in kinds:
            return phrase("method.why.attnlrp_pooling")
        if CHANNEL in kinds:
            return phrase("method.why.attnlrp_channel")
        return None

    def compute(self, ctx: MethodContext) -> MapResult:
        result = ctx.result
        targets = ctx.targets()

        def run():
            # the pass with the rules on every attention layer (each checked to have a rule), shared
            # with transformer attribution
            lp = shared_lrp_pass(ctx, [m.name for m in result.maps])
            rel = lp.result.input * lp.input_gradient           # R_x = x ⊙ g̃ (Gradient x Input)
            grid, stride = map_grid(result)
            return pool_to_grid(rel.to(torch.promote_types(rel.dtype, torch.float32)).sum(1), grid, stride)
        maps = ctx.memo(("attnlrp", ctx.class_key(targets)), run)
        return MapResult(maps, self.name, None, grid_stride(result, maps.shape[-2:]), None,
                         details={"targets": targets.tolist()}, words=(phrase("method.attnlrp.what"),))


register(AttnLRP())

__all__ = ["AttnLRP", "attnlrp", "input_relevance", "pool_to_grid", "attention_modules"]
