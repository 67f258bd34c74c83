"""One query, step by step: the real q, k, v of one attention layer and what softmax does with them.

For head h of layer l with input tokens X (the layer's own input in the forward that gave the
captured maps), the layer's own weights give ``q_i = W_q x_i``, ``k_j = W_k x_j``, ``v_j = W_v x_j``
(per head, ``d`` channels each). For the chosen query token i:

    scores        s_j = q_i · k_j
    scaled        s_j / √d
    weights       a_j(T) = exp(s_j / (√d T)) / Σ_k exp(s_k / (√d T))        (T = 1: the model)
    output        z_i = Σ_j a_j(1) v_j

`layer_projections` recomputes this for every head and token and checks it against the model before
anything is shown: ``softmax(q kᵀ / √d)`` must equal the captured attention, and projecting the heads'
outputs ``z`` through the layer's output projection must give the layer's real output. Layers that add
anything else before the softmax (a relative position bias, rotary embeddings) fail that check and
are refused with a message rather than shown with wrong numbers.

Supported layers: timm's ``Attention`` family (a fused ``qkv`` projection: ViT, DeiT, register ViTs)
and ``torch.nn.MultiheadAttention`` (torchvision's ViT, ``nn.TransformerEncoder``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
import torch
from torch import nn

from ..capture import AttentionMap, CaptureResult, capture
from ..errors import MethodNotDefinedError
from ..families import Recorded, projector_for
from ..i18n import t as tr
from ..layout import SELF, TokenLayout

TOLERANCE = 1e-4          # max |recomputed - captured| accepted (float32 forward vs float64 recompute)
QueryToken = Union[int, str, tuple[int, int]]


@dataclass(frozen=True)
class LayerProjections:
    """q, k, v (B, heads, N, d) of one self-attention layer, float64, and the attention captured in the same
    forward pass."""

    layer: int                      # index among the model's self-attention layers
    name: str
    layout: TokenLayout
    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    scale: float                    # the layer's own 1/√d
    captured: torch.Tensor          # (B, heads, N, N) the captured attention of this layer
    attention_error: float          # max |softmax(q kᵀ scale) - captured|
    output_error: Optional[float]   # max |proj(concat_h Σ_j a_j v_j) - layer output| (None: not checkable)

    @property
    def num_heads(self) -> int:
        return self.q.shape[1]

    @property
    def head_dim(self) -> int:
        return self.q.shape[-1]

    def token_index(self, query: QueryToken) -> int:
        """A token index from an index, a prefix name ("cls", "dist", "reg0") or a patch (row, col)."""
        if isinstance(query, (tuple, list)):
            return self.layout.patch_index(int(query[0]), int(query[1]))
        if isinstance(query, str):
            i = self.layout.index(query.lower())
            if i is None:
                raise ValueError(f"this model has no {query!r} token; its prefix tokens: "
                                 f"{', '.join(self.layout.prefix_names) or 'none'}")
            return i
        i = int(query)
        if not 0 <= i < self.layout.num_tokens:
            raise IndexError(f"token {i} is outside 0..{self.layout.num_tokens - 1}")
        return i

    def step(self, head: int, query: QueryToken, item: int = 0) -> "QueryStep":
        if not 0 <= head < self.num_heads:
            raise IndexError(f"head {head} is outside 0..{self.num_heads - 1}")
        i = self.token_index(query)
        q, k, v = (t[item, head].numpy() for t in (self.q, self.k, self.v))
        scores = k @ q[i]
        weights = softmax(scores * self.scale)
        return QueryStep(layer=self.layer, name=self.name, head=head, query=i, layout=self.layout,
                         scale=self.scale, q=q[i], k=k, v=v, scores=scores, weights=weights,
                         captured=self.captured[item, head, i].double().numpy(), output=weights @ v)


@dataclass(frozen=True)
class QueryStep:
    """Every number of one query in one head: see the module docstring for the formulas."""

    layer: int
    name: str
    head: int
    query: int                      # token index of the query
    layout: TokenLayout
    scale: float
    q: np.ndarray                   # (d,)
    k: np.ndarray                   # (N, d)
    v: np.ndarray                   # (N, d)
    scores: np.ndarray              # (N,) q · k_j
    weights: np.ndarray             # (N,) softmax(scores · scale): the recomputed attention row
    captured: np.ndarray            # (N,) the captured attention row of the same query and head
    output: np.ndarray              # (d,) Σ_j a_j v_j

    @property
    def head_dim(self) -> int:
        return self.q.shape[0]

    @property
    def sqrt_d(self) -> float:
        return 1.0 / self.scale

    def scaled(self, temperature: float = 1.0) -> np.ndarray:
        """The softmax's inputs at temperature T: ``s_j / (√d · T)``."""
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        return self.scores * self.scale / temperature

    def weights_at(self, temperature: float = 1.0) -> np.ndarray:
        """``softmax(s / (√d T))``: sharper for T < 1, flatter for T > 1, the model's own at T = 1."""
        return softmax(self.scaled(temperature))

    def patch_grid(self, values: np.ndarray) -> np.ndarray:
        """The patch part of a per-token vector as a (gh, gw) map."""
        return np.asarray(values)[self.layout.num_prefix:].reshape(self.layout.grid)

    def prefix_values(self, values: np.ndarray) -> dict[str, float]:
        return {n: float(values[i]) for i, n in enumerate(self.layout.prefix_names)}

    def token_name(self, index: int, lang: str = "en") -> str:
        return token_name(self.layout, index, lang)

    def top_contributors(self, k: int = 5, temperature: float = 1.0) -> list[tuple[int, float]]:
        """The k tokens with the largest weights at `temperature` (1: the model's): [(token index, a_j)]."""
        w = self.weights if temperature == 1.0 else self.weights_at(temperature)
        order = np.argsort(-w)[:k]
        return [(int(j), float(w[j])) for j in order]


def token_name(layout: TokenLayout, index: int, lang: str = "en") -> str:
    """"CLS", "DIST", "REG0" or "patch (r, c)" (in `lang`)."""
    if index < layout.num_prefix:
        return layout.prefix_names[index].upper()
    r, c = divmod(index - layout.num_prefix, layout.grid[1])
    return tr("common.patch_rc", lang, r=r, c=c)


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - np.max(x))
    return e / e.sum()


def entropy_bits(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


# ----------------------------------------------------------------------------- per layer type

def self_attention_layers(result: CaptureResult) -> list[AttentionMap]:
    """The global self-attention layers the step-by-step view can show, in forward order."""
    return [m for m in result.maps if m.kind == SELF and m.layout is not None]


def layer_projections(model: nn.Module, x: torch.Tensor, layer: int, lang: str = "en") -> LayerProjections:
    """Run the model once on `x` (capturing all attention) and recompute q, k, v of self-attention
    layer `layer` (index among `self_attention_layers`; negative counts from the end) from its input."""
    records: dict[str, Recorded] = {}
    handles = []
    for mod_name, mod in model.named_modules():
        if projector_for(model, mod) is not None:
            def hook(mod, args, kwargs, output, _name=mod_name):
                records[_name] = Recorded(args, kwargs, output)
            handles.append(mod.register_forward_hook(hook, with_kwargs=True))
    try:
        result = capture(model, x)
    finally:
        for h in handles:
            h.remove()
    maps = self_attention_layers(result)
    if not maps:
        raise MethodNotDefinedError(tr("query.no_layer", lang))
    if not -len(maps) <= layer < len(maps):
        raise IndexError(f"layer {layer} is outside 0..{len(maps) - 1}")
    layer = layer % len(maps)
    m = maps[layer]
    module = model.get_submodule(m.name)
    how, rec = projector_for(model, module), records.get(m.name)
    if how is None or rec is None:
        raise MethodNotDefinedError(tr("query.not_plain", lang, name=m.name, kind=type(module).__name__))
    name = m.name
    with torch.no_grad():
        q, k, v, scale, project, out = how(module, rec)
        q, k, v = (t.detach().double() for t in (q, k, v))
        attn = ((q @ k.transpose(-2, -1)) * scale).softmax(dim=-1)
        captured = m.weights.detach().clone()    # this layer only: the rest of the capture is not kept
        att_err = float((attn - captured.double()).abs().max())
        if att_err > TOLERANCE:
            raise MethodNotDefinedError(tr("query.adds_more", lang, name=name, err=att_err))
        z = attn @ v
        try:
            rebuilt = project(z.float())
            out_err = float((rebuilt.double() - out.detach().double()).abs().max())
        except Exception:     # an exotic projection: the attention check above still holds
            out_err = None
    return LayerProjections(layer, name, m.layout, q, k, v, scale, captured, att_err, out_err)


__all__ = ["LayerProjections", "QueryStep", "layer_projections", "self_attention_layers", "softmax",
           "entropy_bits", "token_name", "TOLERANCE"]
