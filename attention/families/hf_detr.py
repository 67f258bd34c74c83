"""Hugging Face DETR, Table Transformer, Conditional DETR and DAB-DETR: a CNN's feature map, then object queries.

The backbone (a ResNet, timm's or transformers') turns the (H, W) input into its last feature map
(B, C, gh, gw); a 1 x 1 convolution and ``flatten(2).transpose(1, 2)`` make it gh·gw tokens, row-major,
no CLS token. Three kinds of attention follow:

- encoder self-attention: feature-map positions x feature-map positions (``self``), on the (gh, gw) grid;
- decoder self-attention: the ``num_queries`` object queries among themselves. They are learned slots,
  not positions, so it is a token matrix (``tokens``), never fitted to a grid;
- decoder cross-attention (``encoder_attn``; DAB-DETR's ``cross_attn``): object queries x feature-map
  positions, one spatial map per object query (``pooling`` with the queries named ``query0 …``).

The grid is the feature map the backbone really made: read off the running ``...Model.forward``
(its ``feature_map`` local), and before the forward from a FakeTensor run of the backbone (shapes only,
no arithmetic). The stride is the backbone's output stride s: a stride-2 network gives
``gh = ceil(H / s)``, so s is the power of two for which that holds on both sides (32 for the ResNets);
cell (i, j) covers input rows ``s·i … s·(i+1)`` (the last row and column may reach past the input).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..layout import KNOWN, POOLING, SELF, TOKENS, ModelTokens, TokenLayout
from . import register_family
from .base import Family, MapSpec
from .huggingface import is_hf

#: the model types whose decoders run object queries over one feature map (deformable DETR samples
#: points instead: its softmax is over sampling offsets, not positions)
DETR_TYPES = ("detr", "table-transformer", "conditional_detr", "dab-detr")
#: names of the decoder's query x feature-map attention modules
_CROSS = (".encoder_attn", ".cross_attn")


def feature_stride(hw: tuple[int, int], grid: tuple[int, int]) -> tuple[float, float]:
    """The output stride of a stride-2 backbone: the power of two s with ``ceil(n / s) == g`` (or
    ``n // s == g``, unpadded convolutions) on both sides; the even spread ``n / g`` if none fits."""
    for k in range(13):
        s = 2 ** k
        if all(-(-n // s) == g or n // s == g for n, g in zip(hw, grid)):
            return float(s), float(s)
    return hw[0] / grid[0], hw[1] / grid[1]


def _conv_encoder(model: nn.Module) -> Optional[nn.Module]:
    return next((m for m in model.modules() if type(m).__name__.endswith("ConvEncoder")), None)


def _last_map(out) -> Optional[torch.Tensor]:
    """The last 4-D tensor of a backbone's (nested) output: its last feature map."""
    if isinstance(out, torch.Tensor):
        return out if out.dim() == 4 else None
    found = None
    for v in (out.values() if isinstance(out, dict) else out if isinstance(out, (list, tuple)) else ()):
        last = _last_map(v)
        found = last if last is not None else found
    return found


def running_grid(site) -> Optional[tuple[int, int]]:
    """(gh, gw) of the feature map the running forward made (its ``feature_map`` local)."""
    for _, frame in site.chain():
        fm = frame.f_locals.get("feature_map")
        if isinstance(fm, torch.Tensor) and fm.dim() == 4:
            return int(fm.shape[-2]), int(fm.shape[-1])
    return None


@register_family
class HFDetr(Family):
    name = "huggingface-detr"
    priority = 45

    def matches(self, model: nn.Module) -> bool:
        return is_hf(model) and getattr(getattr(model, "config", None), "model_type", "") in DETR_TYPES \
            and _conv_encoder(model) is not None

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        """The feature grid for an (H, W) input, from a shapes-only (FakeTensor) run of the backbone."""
        from torch._subclasses.fake_tensor import FakeTensorMode
        enc = _conv_encoder(model)
        p = next(enc.parameters())
        with FakeTensorMode(allow_non_fake_inputs=True):
            out = enc(torch.empty(1, 3, *hw, device=p.device, dtype=p.dtype),
                      torch.ones(1, *hw, dtype=torch.long, device=p.device))
        fm = _last_map(out)
        if fm is None:
            return None
        grid = (int(fm.shape[-2]), int(fm.shape[-1]))
        return ModelTokens((), grid, feature_stride(hw, grid))

    def describe(self, session, module, weights, site):
        X, heads, nq, nk = weights.shape
        grid = running_grid(site) or session.tokens.grid
        if grid is None:
            return super().describe(session, module, weights, site)
        stride = (tuple(session.tokens.stride) if session.tokens.grid == grid
                  else feature_stride(session.input_hw, grid))
        positions = TokenLayout((), grid, stride)
        n_pos = grid[0] * grid[1]
        name = "." + session.name_of(module)
        in_decoder = site.enclosing(lambda m: type(m).__name__.endswith("Decoder")) is not None
        if not in_decoder and nq == nk == n_pos:
            return MapSpec(SELF, positions, source=KNOWN)
        if in_decoder and any(c in name for c in _CROSS) and nk == n_pos:
            queries = TokenLayout(tuple(f"query{i}" for i in range(nq)), (0, 0), stride)
            return MapSpec(POOLING, positions, queries, source=KNOWN)
        if in_decoder and nq == nk:
            return MapSpec(TOKENS, None, source=KNOWN)   # object queries among themselves: no positions
        return super().describe(session, module, weights, site)

    def blocks(self, model: nn.Module):
        """The encoder's layers: each outputs one token per feature-map cell, row-major (the decoder's tokens
        are object queries, no positions)."""
        names = {id(m): n for n, m in model.named_modules()}
        enc = next((m for m in model.modules() if type(m).__name__.endswith("Encoder")
                    and not type(m).__name__.endswith("ConvEncoder") and len(getattr(m, "layers", ()) or ())), None)
        if enc is None:
            return super().blocks(model)
        return [(names[id(b)], b) for b in enc.layers]

    def position_embedding(self, model: nn.Module):
        return None   # sine embeddings computed per feature map, no table
