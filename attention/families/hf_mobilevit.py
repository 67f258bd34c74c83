"""Hugging Face MobileViT (v1) and MobileViTv2: attention over unfolded patches, one map per pixel offset.

Both cut a stage's ``(H, W)`` feature map into ``ph x pw`` patches (``patch_size``, 2 by default);
``(nh, nw) = (H / ph, W / pw)`` patches, ``N = nh · nw`` of them, ``P = ph · pw`` pixels in each. Pixel
offset ``p = py · pw + px`` of patch ``n = i · nw + j`` is feature pixel ``(i · ph + py, j · pw + px)``.
Attention runs across the patches *at one offset*: the N pixels that share an offset attend to each
other, never to a pixel at another offset.

**MobileViT (v1)** unfolds to ``(B · P, N, C)`` (``MobileViTLayer.unfolding``: batch row ``b · P + p``)
and runs multi-head softmax attention ``(B · P, heads, N, N)``: P full maps, each over the N pixels of
its offset, which lie on the feature grid at a step of the patch size. They are windows that are no
rectangles of the grid: window ``p`` holds the feature pixels ``(i · ph + py, j · pw + px)``, so each
map is kept as a window of a `TokenWindows` table on the feature grid and every view scatters each
pixel's value back to the feature pixel it is (a click on a pixel shows its row over the pixels at its
own offset, zeros elsewhere). A feature map that is no whole number of patches is first resized
(bilinear) to ``(⌈H/ph⌉·ph, ⌈W/pw⌉·pw)``: the grid is that resized map, laid over the same input.

**MobileViTv2** unfolds to ``(B, C, P, N)`` (``F.unfold`` with stride = kernel: remainder rows and
columns are dropped) and its *separable* attention has no query x key matrix: one 1x1-conv channel
scores every pixel and a softmax over the N patches per offset gives the context scores
``(B, 1, P, N)``, ``c = softmax_n(q)``, ``out = relu(v) · Σ_n c_n k_n``. That is attention pooling: per
offset one learned query over the patches. The map is kind ``pooling`` with the P offsets as its
queries (``offset{py}{px}``) and the patch grid ``(nh, nw)`` as its keys, a cell being ``ph x pw``
feature pixels (stride = feature stride · patch size): key ``n`` of offset ``p`` is the pixel at that
offset inside patch cell ``(i, j)``, so on the patch grid each offset's map is exact to the patch.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..layout import KNOWN, POOLING, WINDOW, ModelTokens, TokenLayout, TokenWindows
from . import register_family
from .base import Family, MapSpec
from .huggingface import is_hf


def unfold_table(grid: tuple[int, int], patch: tuple[int, int]) -> tuple[tuple[int, ...], ...]:
    """``table[p][n]``: flat index ``row · W + col`` on the ``grid`` of pixel offset ``p`` of patch ``n``
    (``p = py · pw + px``, ``n = i · nw + j``; row ``i · ph + py``, column ``j · pw + px``)."""
    (H, W), (ph, pw) = grid, patch
    nh, nw = H // ph, W // pw
    return tuple(tuple((i * ph + py) * W + (j * pw + px) for i in range(nh) for j in range(nw))
                 for py in range(ph) for px in range(pw))


def _model_type(model: nn.Module) -> str:
    return getattr(getattr(model, "config", None), "model_type", "")


@register_family
class HFMobileViT(Family):
    name = "huggingface-mobilevit"
    priority = 45

    def matches(self, model: nn.Module) -> bool:
        return is_hf(model) and _model_type(model) == "mobilevit"

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        return ModelTokens()   # a convolutional stem: each stage's grid is read off its own feature map

    def describe(self, session, module, weights, site):
        found = next(((m, f) for m, f in site.chain() if hasattr(m, "unfolding") and "info_dict" in f.f_locals),
                     None)
        if found is None:
            return super().describe(session, module, weights, site)
        layer, frame = found
        info = frame.f_locals["info_dict"]
        ph, pw = int(layer.patch_height), int(layer.patch_width)
        nh, nw = int(info["num_patches_height"]), int(info["num_patches_width"])
        grid = (nh * ph, nw * pw)   # the (resized) map the patches were cut from
        X, heads, nq, nk = weights.shape
        if X != session.batch * ph * pw or nq != nk or nk != nh * nw:
            return super().describe(session, module, weights, site)
        windows = TokenWindows((nh, nw), (0, 0), grid, grid, table=unfold_table(grid, (ph, pw)),
                               special=((),) * (ph * pw))
        return MapSpec(WINDOW, TokenLayout((), grid, session.stride_for(grid)), window=windows, source=KNOWN)

    def blocks(self, model: nn.Module):
        return super().blocks(model)   # a CNN with attention stages: no flat stack (the base says why)


@register_family
class HFMobileViTV2(HFMobileViT):
    name = "huggingface-mobilevitv2"

    def matches(self, model: nn.Module) -> bool:
        return is_hf(model) and _model_type(model) == "mobilevitv2"

    def describe(self, session, module, weights, site):
        found = next(((m, f) for m, f in site.chain() if hasattr(m, "unfolding") and "output_size" in f.f_locals),
                     None)
        if found is None:
            return super(HFMobileViT, self).describe(session, module, weights, site)
        layer, frame = found
        H, W = (int(v) for v in frame.f_locals["output_size"])   # the feature map before unfolding
        ph, pw = int(layer.patch_height), int(layer.patch_width)
        nh, nw = H // ph, W // pw   # F.unfold with stride = kernel drops the remainder
        X, heads, nq, nk = weights.shape
        if X != session.batch or heads != 1 or nq != ph * pw or nk != nh * nw:
            return super(HFMobileViT, self).describe(session, module, weights, site)
        fy, fx = session.stride_for((H, W))   # input pixels per feature pixel
        stride = (fy * ph, fx * pw)
        keys = TokenLayout((), (nh, nw), stride)
        offsets = TokenLayout(tuple(f"offset{py}{px}" for py in range(ph) for px in range(pw)), (0, 0), stride)
        return MapSpec(POOLING, keys, offsets, source=KNOWN)
