"""Hugging Face CvT (Convolutional vision Transformer): queries on the stage grid, keys on a strided grid.

Each ``CvtSelfAttention`` gets the stage's tokens ``(B, [CLS +] H*W, C)`` with the stage grid
``(H, W)`` as arguments, folds the patch tokens back to a ``(B, C, H, W)`` map and projects queries,
keys and values each through its own depth-wise convolution (``convolution_projection_query`` /
``_key`` / ``_value``: kernel ``kernel_qkv``, stride ``stride_q`` / ``stride_kv``, padding
``padding_q`` / ``padding_kv``); the CLS token (``cls_token`` of the stage, in CvT the last stage
only) bypasses the convolutions and is put back *first*. So the attention is

    A = softmax(q kᵀ · scale),  q: [CLS] + grid_q tokens,  k: [CLS] + grid_k tokens,

with ``grid = (⌊(H + 2p - d(k-1) - 1) / s⌋ + 1, …)`` of each convolution (``stride_kv = 2`` by default:
a key grid half the size of the query grid, like PVT's spatial reduction). The map is kind ``reduced``:
queries on the stage grid, keys on the coarser grid, each grid's cells laid evenly over the input
(stride = input size / grid), both with the CLS prefix where the stage has one; a stage whose keys keep
the query grid (``stride_kv`` 1) is plain ``self`` attention. The stage grid is read
from the module's own ``height`` / ``width`` arguments and each grid from its convolution, not from
the config, so a checkpoint with other strides is laid out by what it computes.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..layout import KNOWN, REDUCED, SELF, ModelTokens, TokenLayout
from . import register_family
from .base import Family, MapSpec
from .huggingface import is_hf


def conv_grid(conv: Optional[nn.Module], grid: tuple[int, int]) -> tuple[int, int]:
    """Output grid of ``conv`` applied to a ``grid`` map; a missing convolution (CvT's ``"linear"``
    projection flattens the map as is) keeps the grid."""
    if not isinstance(conv, nn.Conv2d) or isinstance(conv.padding, str):
        return tuple(grid)
    return tuple((n + 2 * p - d * (k - 1) - 1) // s + 1
                 for n, k, s, p, d in zip(grid, conv.kernel_size, conv.stride, conv.padding, conv.dilation))


def projection_conv(attention: nn.Module, which: str) -> Optional[nn.Conv2d]:
    """The depth-wise convolution of CvT's query / key / value projection (None for a linear projection)."""
    proj = getattr(attention, f"convolution_projection_{which}", None)
    return getattr(getattr(proj, "convolution_projection", None), "convolution", None)


@register_family
class HFCvt(Family):
    name = "huggingface-cvt"
    priority = 45

    def matches(self, model: nn.Module) -> bool:
        return is_hf(model) and getattr(getattr(model, "config", None), "model_type", "") == "cvt"

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        """Stage 0's grid (the first convolutional embedding; no CLS token before the last stage)."""
        cfg = model.config
        k, s, p = int(cfg.patch_sizes[0]), int(cfg.patch_stride[0]), int(cfg.patch_padding[0])
        grid = tuple((n + 2 * p - k) // s + 1 for n in hw)
        return ModelTokens((), grid, (hw[0] / grid[0], hw[1] / grid[1]))

    def describe(self, session, module, weights, site):
        args = site.inputs(module)
        if type(module).__name__ != "CvtSelfAttention" or len(args) < 3:
            return super().describe(session, module, weights, site)
        H, W = int(args[1]), int(args[2])
        prefix = ("cls",) if getattr(module, "with_cls_token", False) else ()
        q_grid = conv_grid(projection_conv(module, "query"), (H, W))
        k_grid = conv_grid(projection_conv(module, "key"), (H, W))
        X, heads, nq, nk = weights.shape
        if nq != len(prefix) + q_grid[0] * q_grid[1] or nk != len(prefix) + k_grid[0] * k_grid[1]:
            return super().describe(session, module, weights, site)
        # cells laid evenly over the input: the stage grid's cell is input / (H, W) pixels
        queries = TokenLayout(prefix, q_grid, session.stride_for(q_grid))
        keys = TokenLayout(prefix, k_grid, session.stride_for(k_grid))
        if q_grid == k_grid:
            return MapSpec(SELF, keys, source=KNOWN)
        return MapSpec(REDUCED, keys, queries, source=KNOWN)

    def blocks(self, model: nn.Module):
        return super().blocks(model)   # stages change the grid: no flat stack (the base says why)
