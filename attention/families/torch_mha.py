"""``torch.nn.MultiheadAttention`` ViTs: torchvision's `VisionTransformer` and ``nn.TransformerEncoder`` models.

``nn.MultiheadAttention`` runs ``F.multi_head_attention_forward``, which computes its weights with the
module-level ``softmax`` (``need_weights=True``) or ``scaled_dot_product_attention`` of
``torch.nn.functional`` (``need_weights=False``, as ``TransformerEncoderLayer`` and torchvision call it):
both are what the capture records. Its fused fast path (and the encoder layer's) never reaches Python,
so the capture switches it off while it runs (`attention.interception`).
"""
from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn

from ..errors import MethodNotDefinedError
from ..layout import ModelTokens
from . import register_family
from .base import Family, PositionEmbedding, Recorded


def mha_qkv(module: nn.MultiheadAttention, rec: Recorded):
    """q, k, v of an ``nn.MultiheadAttention`` call from its inputs and in-projection weights."""
    names = ("query", "key", "value")
    kwargs = rec.kwargs or {}
    inputs = [rec.args[i] if len(rec.args) > i else kwargs[n] for i, n in enumerate(names)]
    if module.bias_k is not None or module.add_zero_attn:
        raise MethodNotDefinedError("this nn.MultiheadAttention adds extra key/value slots (add_bias_kv or "
                                    "add_zero_attn), which the step-by-step view does not show")
    if not module.batch_first:
        inputs = [t.transpose(0, 1) for t in inputs]
    E, H = module.embed_dim, module.num_heads
    d = E // H
    if module._qkv_same_embed_dim:
        ws = module.in_proj_weight.chunk(3)
    else:
        ws = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
    bs = module.in_proj_bias.chunk(3) if module.in_proj_bias is not None else (None,) * 3
    B, N = inputs[0].shape[:2]
    q, k, v = (nn.functional.linear(t, w, b).reshape(B, t.shape[1], H, d).transpose(1, 2)
               for t, w, b in zip(inputs, ws, bs))
    out = rec.output[0] if isinstance(rec.output, tuple) else rec.output
    if not module.batch_first:
        out = out.transpose(0, 1)

    def project(z: torch.Tensor) -> torch.Tensor:
        return module.out_proj(z.transpose(1, 2).reshape(B, N, E).to(inputs[0].dtype))

    return q, k, v, 1.0 / math.sqrt(d), project, out


def is_torchvision_vit(model: nn.Module) -> bool:
    return hasattr(model, "class_token") and hasattr(model, "conv_proj") and hasattr(model, "patch_size")


@register_family
class TorchMHA(Family):
    """torchvision's ViT (class token + (H/p, W/p) patches) and any model built on ``nn.MultiheadAttention``."""

    name = "torch-mha"
    priority = 40

    def matches(self, model: nn.Module) -> bool:
        return is_torchvision_vit(model)

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        p = int(model.patch_size)
        return ModelTokens(("cls",), (hw[0] // p, hw[1] // p), (float(p), float(p)))

    def blocks(self, model: nn.Module):
        names = {id(m): n for n, m in model.named_modules()}
        return [(names[id(b)], b) for b in model.encoder.layers]

    def gradcam_target(self, model: nn.Module) -> nn.Module:
        return model.encoder.layers[-1].ln_1

    def position_embedding(self, model: nn.Module) -> Optional[PositionEmbedding]:
        pe = model.encoder.pos_embedding  # (1, 1 + N, D), class-token position first
        g = int(model.image_size) // int(model.patch_size)
        return PositionEmbedding(pe.detach().float().cpu()[0], pe.shape[1] - g * g, (g, g),
                                 isinstance(pe, nn.Parameter) and pe.requires_grad, "encoder.pos_embedding")

    def projector(self, module: nn.Module):
        return mha_qkv if isinstance(module, nn.MultiheadAttention) else None
