"""Hugging Face SigLIP 2 with NaFlex inputs: the photo's own patch grid, padding masked and not drawn.

SigLIP 2's processor resizes each photo to an (h*p, w*p) image that keeps its aspect ratio with at
most ``max_num_patches`` patches, cuts it into h*w patches (row-major, p x p pixels, channels last),
pads them with zeros to ``max_num_patches`` and gives ``pixel_attention_mask`` (1: a patch, 0:
padding) and ``spatial_shapes`` (h, w). `NaFlexImageModel` takes that image as an ordinary
(B, 3, h*p, w*p) tensor and hands the model exactly those three inputs, so the token grid of a map
is the input's size over p (the processor's grid, per photo).

The encoder's attention is (B, heads, max, max) with the padding keys masked (their weights are
exactly 0: the mask adds the dtype's minimum before the softmax) and padding query rows that are no
positions; the pooling head attends from one learned probe to all ``max`` keys. The token layout
says so (the padding tokens are the layout's ``suffix_names`` ``pad0 …``), and ``finish`` shows
each map over the real patches only: the leading (h*w) rows and columns, a view of the recorded
tensor (the records keep the padded matrices).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Optional

import torch
from torch import nn

from ..layout import KNOWN, ModelTokens, TokenLayout
from . import register_family
from .huggingface import HuggingFace


def naflex_patches(x: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, h*p, w*p) -> (B, h*w, p*p*C): row-major patches, each p x p pixels with the channels last
    (transformers' ``convert_image_to_patches``: ``(C, h, p, w, p) -> (h, w, p, p, C)``)."""
    B, C, H, W = x.shape
    p = int(patch_size)
    h, w = H // p, W // p
    return x.reshape(B, C, h, p, w, p).permute(0, 2, 4, 3, 5, 1).reshape(B, h * w, p * p * C)


def naflex_image(patches: torch.Tensor, spatial_shape, patch_size: int) -> torch.Tensor:
    """The inverse of `naflex_patches` for one photo: its first h*w patches (the rest is padding) -> (C, h*p, w*p)."""
    h, w = (int(v) for v in spatial_shape)
    p = int(patch_size)
    C = patches.shape[-1] // (p * p)
    return patches[: h * w].reshape(h, w, p, p, C).permute(4, 0, 2, 1, 3).reshape(C, h * p, w * p)


class NaFlexImageModel(nn.Module):
    """A NaFlex model (SigLIP 2) fed an image: ``forward(x)`` with x (B, 3, h*p, w*p) gives the model what
    its processor gives it: the h*w patches (`naflex_patches`) padded with zeros to ``max_num_patches``,
    ``pixel_attention_mask`` 1 on the patches and 0 on the padding, and ``spatial_shapes`` (h, w). So every
    view (capture, gradients, occlusion) runs on an ordinary image tensor whose size is the photo's grid."""

    naflex = True

    def __init__(self, model: nn.Module, patch_size: int, max_num_patches: int):
        super().__init__()
        self.model = model
        self.patch_size = int(patch_size)
        self.max_num_patches = int(max_num_patches)
        self.config = model.config
        self.main_input_name = "pixel_values"

    def grid(self, hw) -> tuple[int, int]:
        """The patch grid of an (H, W) input; a clear error where it is no whole grid within max_num_patches."""
        H, W = (int(v) for v in hw)
        p = self.patch_size
        if H % p or W % p:
            raise ValueError(f"a NaFlex input must be whole {p} x {p} patches: got {H} x {W} (prepare the photo "
                             f"with the model's processor)")
        if (H // p) * (W // p) > self.max_num_patches:
            raise ValueError(f"{H // p} x {W // p} patches exceed the processor's max_num_patches="
                             f"{self.max_num_patches}")
        return H // p, W // p

    def naflex_inputs(self, x: torch.Tensor) -> dict:
        """pixel_values, pixel_attention_mask and spatial_shapes of an image batch, as the processor makes them."""
        h, w = self.grid(x.shape[-2:])
        B, n = x.shape[0], h * w
        patches = naflex_patches(x, self.patch_size)
        if self.max_num_patches > n:
            patches = nn.functional.pad(patches, (0, 0, 0, self.max_num_patches - n))
        mask = torch.ones(B, self.max_num_patches, dtype=torch.int32, device=x.device)
        mask[:, n:] = 0
        shapes = torch.tensor([[h, w]] * B, dtype=torch.long, device=x.device)
        return {"pixel_values": patches, "pixel_attention_mask": mask, "spatial_shapes": shapes}

    def forward(self, x: torch.Tensor, **kwargs):
        return self.model(**self.naflex_inputs(x), **kwargs)


def is_naflex(model: nn.Module) -> bool:
    return isinstance(model, NaFlexImageModel)


@register_family
class HFSiglip2NaFlex(HuggingFace):
    name = "huggingface-siglip2-naflex"
    priority = 46

    def matches(self, model: nn.Module) -> bool:
        return is_naflex(model)

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        h, w = model.grid(hw)
        p = float(model.patch_size)
        pad = model.max_num_patches - h * w
        return ModelTokens((), (h, w), (p, p), suffix_names=tuple(f"pad{i}" for i in range(pad)))

    def finish(self, session, maps: list) -> list:
        out = []
        for m in maps:
            L = m.layout
            if L is None or not L.num_suffix or L.num_prefix:
                out.append(m)
                continue
            n = L.num_patches
            grid = TokenLayout((), L.grid, L.stride)
            Q = m.query_layout
            if Q is not None and Q.num_patches:      # patch queries: the padding rows go too
                out.append(replace(m, weights=m.weights[:, :, :n, :n], layout=grid, query_layout=grid,
                                   layout_source=KNOWN))
            else:                                     # the pooling head's probe over the patches
                out.append(replace(m, weights=m.weights[..., :n], layout=grid, query_layout=Q, layout_source=KNOWN))
        return out


@register_family
class HFSiglip2Bare(HuggingFace):
    """A SigLIP 2 model not wrapped: its forward needs the processor's patches, mask and spatial_shapes, which
    ``capture(model, x)`` (one image tensor) does not give; say how instead of failing inside the forward."""

    name = "huggingface-siglip2"
    priority = 45

    def matches(self, model: nn.Module) -> bool:
        from .huggingface import is_hf, vision_config
        return is_hf(model) and getattr(vision_config(model), "model_type", "").startswith("siglip2")

    def instrument(self, model: nn.Module):
        p = int(model.config.vision_config.patch_size if hasattr(model.config, "vision_config")
                else model.config.patch_size)
        raise ValueError(
            f"{type(model).__name__} takes NaFlex inputs (the processor's patches, pixel_attention_mask and "
            f"spatial_shapes), not an image tensor: capture NaFlexImageModel(model, patch_size={p}, "
            f"max_num_patches=<the processor's>) with the image its patches tile (attention.families.hf_siglip2), "
            f"or load the folder with load_model, which does this")


__all__ = ["HFSiglip2NaFlex", "HFSiglip2Bare", "NaFlexImageModel", "naflex_patches", "naflex_image", "is_naflex"]
