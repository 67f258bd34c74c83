"""One forward and one backward for many maps: what each method needs, and the one pass that provides it.

Each method declares its needs (`Method.requirements(context) -> Needs`): the attention weights
``A_l`` and their gradients ``∂y_c/∂A_l`` (gradient-weighted rollout, transformer attribution), the
output ``F`` of a named layer and its gradient ``∂y_c/∂F`` (Grad-CAM), the LRP relevances of the
attention (transformer attribution) and of the input (AttnLRP). Maps that explain the same class then share

* **one forward** with the attention kept (``capture(model, x, keep_graph=True)``) and forward hooks
  on the named layers, and
* **one backward** of ``y = Σ_b y_{b, c_b}`` (each item its own class ``c_b``; items of a batch do not
  interact) with respect to every captured attention tensor and every hooked output at once
  (``torch.autograd.grad``), with the parameters frozen (``requires_grad_(False)`` for the pass,
  restored afterwards): no parameter gradient is computed, and the backward stops at the earliest
  attention map; it never reaches the input.

`shared_pass(context, needs)` gives that pass, memoised through ``context.cache`` under
``("gradient_pass", class)``; it always provides what every registered method asks for with its
default options (`standard_needs`; the cost is the same: the backward to the first layer's
attention runs through every later layer anyway), so in the app switching between gradient methods
for the same image and class reuses one pass. The LRP relevances need the AttnLRP rules in place, so
they come from a second pass (`lrp_pass`: one forward with the rules and one backward to the attention
and the input, ``R_A = A ⊙ g̃_A``, ``R_x = x ⊙ g̃_x``), shared in the same way by transformer
attribution and AttnLRP (`shared_lrp_pass`). `compute_maps(names, ...)` is the batch form the
audit uses: the pass's own capture serves as the capture of the batch (no separate forward).

Values: the pass computes exactly the tensors each method computed in its own forward and backward
before (the same graph; freezing the parameters removes only their gradients), so the maps are
unchanged. Gradients and products are taken in float32 (``.float()``) whatever the model's dtype.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import torch
from torch import nn

from ..capture import CaptureResult, capture
from ..modelstate import preserved
from .needs import NOTHING, Needs


@dataclass
class GradientPass:
    """The products of one forward + one backward for classes ``targets``.

    ``result``: the forward's capture, detached (logits and every attention map, as `capture` gives
    them). ``attention_gradients[i]``: ``∂y/∂A`` of ``result.maps[i]`` (None where the class score
    does not depend on that tensor, e.g. a family recorded a copy). ``activations[name]``: the
    layer's output ``F`` and ``∂y/∂F`` (the first call of the layer, as pytorch-grad-cam keeps).
    """

    result: CaptureResult
    targets: torch.Tensor
    attention_gradients: list = field(default_factory=list)
    activations: dict = field(default_factory=dict)
    needs: Needs = NOTHING
    input_gradient: Optional[torch.Tensor] = None     # ∂y/∂x where asked (the LRP pass: g̃ of the input)


def _hook_outputs(model: nn.Module, names: Sequence[str], store: dict) -> list:
    modules = dict(model.named_modules())
    handles = []
    for name in names:
        mod = modules.get(name)
        if mod is None:
            raise KeyError(f"no layer named {name!r} in the model")

        def keep(m, inp, out, name=name):
            if name not in store and isinstance(out, torch.Tensor):
                store[name] = out
        handles.append(mod.register_forward_hook(keep))
    return handles


def gradient_pass(model: nn.Module, x: torch.Tensor, target=None, needs: Needs = Needs(True),
                  input_gradient: bool = False) -> GradientPass:
    """One forward with the attention kept and one backward of the chosen classes (module docstring).

    ``target``: class per item (None: each item's top-1 from this forward's logits).
    ``input_gradient``: also ``∂y/∂x`` (the backward then runs down to the input).
    """
    from .targets import resolve_targets
    store: dict = {}
    handles = _hook_outputs(model, needs.activations, store)
    try:
        with preserved(model, eval_mode=False, freeze=True), torch.enable_grad():
            # parameters frozen: the graph exists only through the input
            xg = x.detach().requires_grad_(True)
            live = capture(model, xg, keep_graph=True)
            targets = resolve_targets(live.logits, target)
            y = live.logits.gather(1, targets[:, None]).sum()
            sources: list[torch.Tensor] = []
            slot: dict[int, int] = {}

            def add(t: Optional[torch.Tensor]) -> Optional[int]:
                if t is None or not t.requires_grad:
                    return None
                if id(t) not in slot:
                    slot[id(t)] = len(sources)
                    sources.append(t)
                return slot[id(t)]

            pairs = []
            if needs.attention_gradients:
                pairs = [(add(m.weights), add(m.weights._base)) for m in live.maps]
            acts = {n: add(t) for n, t in store.items()}
            xi = add(live.input) if input_gradient else None
            grads = torch.autograd.grad(y, sources, allow_unused=True) if sources else ()
    finally:
        for h in handles:
            h.remove()
    att = []
    for (i, j), m in zip(pairs, live.maps):
        w = m.weights
        g = grads[i] if i is not None else None
        if g is None and j is not None and grads[j] is not None and w._base.is_contiguous():
            # a map recorded as a view of the tensor the forward used: that tensor's gradient, viewed the same way
            gb = grads[j].contiguous()
            g = gb.as_strided(w.size(), w.stride(), w.storage_offset() - w._base.storage_offset())
        att.append(None if g is None else g.detach())
    activations = {n: (store[n].detach(), grads[k].detach() if k is not None and grads[k] is not None else None)
                   for n, k in acts.items()}
    detached: dict = {}

    def plain(m):      # one detached copy per map (``records`` mostly holds the same maps)
        if id(m) not in detached:
            detached[id(m)] = replace(m, weights=m.weights.detach())
        return detached[id(m)]
    gx = grads[xi].detach() if xi is not None and grads[xi] is not None else None
    result = replace(live, input=live.input.detach(), logits=live.logits.detach(), output=None,
                     maps=[plain(m) for m in live.maps], records=[plain(m) for m in live.records])
    del live, sources, grads, y
    return GradientPass(result, targets.detach(), att, activations, needs, gx)


def lrp_pass(model: nn.Module, x: torch.Tensor, target, names: Sequence[str]) -> GradientPass:
    """The pass with AttnLRP's rules on the attention modules ``names`` (`attention.methods.lrp_rules`):
    ``attention_gradients`` are the modified gradients ``g̃_A`` and ``input_gradient`` is ``g̃_x``, so
    ``R_A = A ⊙ g̃_A`` (transformer attribution) and ``R_x = x ⊙ g̃_x`` (AttnLRP) come from one
    forward and one backward."""
    from .lrp_rules import check_covered, lrp_rules, model_lock
    check_covered(model, names)
    modules = dict(model.named_modules())
    with model_lock(model), lrp_rules(model, [modules[n] for n in names]):
        return gradient_pass(model, x, target, Needs(attention_gradients=True), input_gradient=True)


def shared_lrp_pass(ctx, names: Sequence[str]) -> GradientPass:
    """`lrp_pass` for ``ctx``'s classes, memoised (``("lrp_pass", class, names)``): transformer attribution
    and AttnLRP share it where they put the rules on the same modules (every ViT)."""
    targets = ctx.targets()

    def run():
        with ctx.gradient_section():
            return lrp_pass(ctx.get_model(), ctx.input, targets, list(names))
    return ctx.memo(("lrp_pass", ctx.class_key(targets), tuple(names)), run)


def standard_needs(ctx) -> Needs:
    """The union of what every registered method defined for ``ctx.result`` needs from the plain pass with
    its default options (where gradient-weighted rollout has no meaning, e.g. Swin, the backward for
    Grad-CAM alone stops at its layer)."""
    from .base import MethodContext, methods
    plain = MethodContext(ctx.result, model=ctx.model, x=ctx.x, target=ctx.target, cache=ctx.cache,
                          grad_lock=ctx.grad_lock)
    out = NOTHING
    for m in methods():
        try:
            if m.defined_for(ctx.result):
                continue
            n = m.requirements(plain)
        except Exception:  # noqa: BLE001 - e.g. no Grad-CAM layer in this model: that method says so itself
            continue
        out = out | Needs(n.attention_gradients, n.activations)
    return out


def shared_pass(ctx, needs: Needs) -> GradientPass:
    """The pass for ``ctx``'s classes providing ``needs``, computed once per (classes, needs) and cached
    through ``ctx.cache`` (the app's per-analysis cache, the audit's per-batch one)."""
    targets = ctx.targets()
    # what this pass provides: the caller's plan (compute_maps: exactly the maps asked for), else every
    # registered method's needs (the app: the next method the user picks finds its pass)
    full = ctx.options.get("pass_needs") or standard_needs(ctx)
    if not full.covers(needs):
        full = full | needs

    def run():
        with ctx.gradient_section():
            return gradient_pass(ctx.get_model(), ctx.input, targets, full)
    return ctx.memo(("gradient_pass", ctx.class_key(targets), full.key()), run)


class DictCache:
    """``cache(key, compute)`` over a dict: pass one per input as ``cache=`` to `compute_map` and the maps
    of that input share their passes (the audit's per-batch cache, the CLI export's per-image one)."""

    def __init__(self, seed: Optional[dict] = None):
        self.values = dict(seed or {})

    def __call__(self, key, compute):
        if key not in self.values:
            self.values[key] = compute()
        return self.values[key]


def compute_maps(names: Sequence[str], model: nn.Module, x: torch.Tensor, result: Optional[CaptureResult] = None,
                 target=None, **kwargs) -> tuple[CaptureResult, dict]:
    """``(capture, {name: MapResult})``: every map of ``names`` for the batch ``x``, the gradient maps from
    one shared forward + backward. Without ``result`` the capture is the pass's own forward when any map
    needs gradients (else one plain `capture`). ``kwargs`` go to `compute_map` (e.g. ``query``)."""
    from .base import MethodContext, compute_map, get_method
    cache = DictCache()
    if result is None:
        probe = MethodContext(CaptureResult(x, torch.empty(0), []), model=model, x=x, target=target)
        needs = NOTHING
        for n in names:
            needs = needs | get_method(n).requirements(probe)
        if needs.gradient_pass:
            # exactly what the maps asked for need (Grad-CAM alone: the backward stops at its layer)
            gp = gradient_pass(model, x, target, needs)
            result = gp.result
            ctx = MethodContext(result, model=model, x=x, target=target)
            cache.values[("gradient_pass", ctx.class_key(ctx.targets()), needs.key())] = gp
            kwargs["pass_needs"] = needs
        else:
            result = capture(model, x)
    maps = {n: compute_map(n, result, model=model, x=x, target=target, cache=cache, **kwargs) for n in names}
    return result, maps


__all__ = ["Needs", "NOTHING", "GradientPass", "DictCache", "gradient_pass", "shared_pass", "lrp_pass", "shared_lrp_pass",
           "standard_needs", "compute_maps"]
