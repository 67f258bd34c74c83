"""Hugging Face ImageGPT: causal self-attention over the pixels of a small image, one colour-cluster token each.

ImageGPT reads no image tensor: its processor resizes the photo to ``h x w`` (32 x 32 for the released
models, ``h · w <= n_positions``), normalises it to [-1, 1] and replaces every pixel by the index of its
nearest colour cluster (``argmin_k ‖x - c_k‖²`` over the processor's ``clusters``), giving
``input_ids`` of ``h · w`` tokens in raster order (pixel ``(r, c)`` is token ``r · w + c``). Every layer
then runs *causal* softmax attention over those tokens: ``A = softmax(q kᵀ / √d + M)`` with
``M[i, j] = -∞`` for ``j > i``, so pixel ``i`` attends to itself and the pixels before it in raster
order (rows above, and the pixels to its left in its row); there is no CLS token, the classifier
averages every token's final state.

`ColourClusterInput` makes that model take the processor's pixels: its forward computes the ids with
transformers' own ``color_quantize_torch`` and the processor's own ``clusters`` (exactly the
processor's ``input_ids``) and calls the model with them. Its input is then an ordinary
``(B, 3, h, w)`` image tensor, the ``h x w`` pixel grid *is* the token grid (one token per input pixel,
stride 1 in model-input pixels; the loader's resize maps it onto the photo), and `HFImageGPT` lays
every map out as ``self`` attention over that grid. The quantisation is a lookup (piecewise constant):
its derivative by the pixels is 0, and `ColourClusterInput` keeps the autograd graph rooted at the pixels
through a term of value 0, so ``∂y/∂A`` of every map (gradient rollout, Grad-CAM) is exact.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..errors import CheckpointError
from ..layout import KNOWN, SELF, ModelTokens, TokenLayout
from . import register_family
from .base import Family, MapSpec


class ColourClusterInput(nn.Module):
    """``(B, 3, h, w)`` normalised pixels -> the processor's colour-cluster ids -> the ImageGPT model.

    ``processor``: the model's own ``ImageGPTImageProcessor`` (its ``clusters``, ``(K, 3)`` in [-1, 1]).
    The pixels are what that processor gives with ``do_color_quantize=False``; ``h · w`` must not
    exceed the model's ``n_positions``.
    """

    main_input_name = "pixel_values"

    def __init__(self, model: nn.Module, processor):
        super().__init__()
        clusters = getattr(processor, "clusters", None)
        if clusters is None:
            raise CheckpointError(f"{type(model).__name__} reads colour-cluster ids, but its image processor "
                                  f"({type(processor).__name__}) has no colour clusters to compute them with "
                                  f"(save the model's own processor, with its clusters, next to it)")
        clusters = torch.as_tensor(clusters, dtype=torch.float32)
        n_ids = int(getattr(model.config, "vocab_size", 0)) - 1   # the last id is the start-of-sequence token
        if clusters.dim() != 2 or clusters.shape[1] != 3 or clusters.shape[0] != n_ids:
            raise CheckpointError(f"the processor's colour clusters have shape {tuple(clusters.shape)}; "
                                  f"{type(model).__name__} reads {n_ids} colour ids (vocab_size - 1), one per "
                                  f"(r, g, b) cluster")
        self.model = model
        self.register_buffer("clusters", clusters, persistent=False)

    @property
    def config(self):
        return self.model.config

    def input_ids(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, h · w) cluster ids in raster order: transformers' ``color_quantize_torch``, the processor's rule."""
        from transformers.models.imagegpt.image_processing_imagegpt import color_quantize_torch
        B, C, h, w = pixel_values.shape
        n = int(getattr(self.model.config, "n_positions", h * w))
        if C != 3 or h * w > n:
            raise ValueError(f"{type(self.model).__name__} reads at most {n} pixels of 3 colours; got a "
                             f"{C} x {h} x {w} input")
        # float32 as the processor computes it (a half-precision model must not move a pixel to another cluster)
        flat = pixel_values.detach().float().permute(0, 2, 3, 1).reshape(-1, 3)
        return color_quantize_torch(flat, self.clusters.to(flat.device)).reshape(B, h * w)

    def forward(self, pixel_values: torch.Tensor, **kwargs):
        ids = self.input_ids(pixel_values)
        if not (torch.is_grad_enabled() and pixel_values.requires_grad):
            return self.model(input_ids=ids, **kwargs)
        # The ids are a lookup: their derivative by the pixels is 0 almost everywhere. The gradient methods
        # freeze the parameters and root the autograd graph at the input, so without a path from the pixels
        # no attention map would have a graph; a term of value exactly 0 is that path (the embeddings, and
        # so every map and logit, are unchanged; ∂y/∂A is exact and ∂y/∂pixels is the true 0).
        embeds = self.model.get_input_embeddings()(ids) + 0.0 * pixel_values.sum()
        return self.model(inputs_embeds=embeds, **kwargs)


def colour_cluster_model(model: nn.Module, processor) -> ColourClusterInput:
    """The loader's ImageGPT: `model` fed the pixels of `processor`, which from now on gives its normalised
    ``pixel_values`` (``do_color_quantize`` off) while the model computes the same ids from them."""
    wrapped = ColourClusterInput(model, processor)
    processor.do_color_quantize = False
    return wrapped.eval()


def _imagegpt(model: nn.Module) -> Optional[nn.Module]:
    inner = model.model if isinstance(model, ColourClusterInput) else model
    return inner if getattr(getattr(inner, "config", None), "model_type", "") == "imagegpt" else None


@register_family
class HFImageGPT(Family):
    name = "huggingface-imagegpt"
    priority = 45

    def matches(self, model: nn.Module) -> bool:
        return isinstance(model, ColourClusterInput) and _imagegpt(model) is not None

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        return ModelTokens((), (int(hw[0]), int(hw[1])), (1.0, 1.0))   # one token per input pixel

    def describe(self, session, module, weights, site):
        X, heads, nq, nk = weights.shape
        t = session.tokens
        if t.grid is None or nq != nk or nk != t.grid[0] * t.grid[1]:
            return super().describe(session, module, weights, site)
        return MapSpec(SELF, TokenLayout((), t.grid, t.stride), source=KNOWN)   # causal: zeros above the diagonal

    def blocks(self, model: nn.Module):
        inner = _imagegpt(model)
        names = {id(m): n for n, m in model.named_modules()}
        return [(names[id(b)], b) for b in inner.transformer.h]

    def gradcam_target(self, model: nn.Module) -> nn.Module:
        return _imagegpt(model).transformer.h[-1].ln_1

    def position_embedding(self, model: nn.Module):
        return None   # a learned table over raster positions, no prefix: not the ViT patch-table picture
