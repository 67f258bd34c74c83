"""Hugging Face Perceiver image classifiers: latents are no positions.

The encoder's cross-attention reads the image (its preprocessed pixels or conv features, flattened
row-major from (B, H', W', C)) into ``num_latents`` learned latents: latents (queries) x image
positions (keys), the spatial map of the model, one map per latent. The latents' self-attention and
the decoder's query over the latents are attention among latents: token matrices.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..layout import KNOWN, POOLING, TOKENS, ModelTokens, TokenLayout
from . import register_family
from .base import Family, MapSpec, infer_grid
from .huggingface import is_hf


@register_family
class HFPerceiver(Family):
    name = "huggingface-perceiver"
    priority = 45

    def matches(self, model: nn.Module) -> bool:
        return is_hf(model) and type(model).__name__.startswith("Perceiver") and hasattr(model, "perceiver")

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        return ModelTokens()   # the image positions' grid depends on the preprocessor: read off each map

    def describe(self, session, module, weights, site):
        X, heads, nq, nk = weights.shape
        cross = ".encoder.cross_attention." in "." + session.name_of(module) + "."
        g = infer_grid(nk, session.input_hw) if cross else None
        if g is None:
            return MapSpec(TOKENS, None, source=KNOWN)
        keys = TokenLayout((), g[0], g[1])
        return MapSpec(POOLING, keys, TokenLayout(tuple(f"latent{i}" for i in range(nq)), (0, 0), g[1]),
                       source=KNOWN)
