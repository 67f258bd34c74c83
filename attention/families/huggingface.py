"""Hugging Face ``transformers`` vision models: ViT, DeiT (with teacher), BEiT, DINOv2 (+ registers),
CLIP and SigLIP vision towers, Swin.

Eager attention computes ``nn.functional.softmax(scores, dim=-1)`` inside a function, and the default
SDPA attention calls ``F.scaled_dot_product_attention``: the capture records either, attributed to the
``...SelfAttention`` module whose forward ran it, so ``output_attentions`` is not needed. Token
layout from the config: prefix tokens (CLS; DeiT's distillation token; DINOv2's registers; none for
SigLIP, whose attention-pooling head is one learned query), then the patch grid. Swin pads the map to
whole windows first, then rolls it (read from the enclosing ``SwinLayer``).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..layout import KNOWN, WINDOW, ModelTokens, TokenLayout, WindowInfo
from . import register_family
from .base import Family, MapSpec, PositionEmbedding


def is_hf(model: nn.Module) -> bool:
    return type(model).__module__.startswith("transformers.")


def vision_config(model: nn.Module):
    cfg = getattr(model, "config", None)
    return getattr(cfg, "vision_config", None) or cfg


def backbone(model: nn.Module) -> nn.Module:
    """The module holding ``embeddings`` and ``encoder`` (the model itself or its vit/deit/... attribute)."""
    return next((m for m in model.modules() if hasattr(m, "embeddings") and hasattr(m, "encoder")), model)


def prefix_names(model: nn.Module) -> tuple[str, ...]:
    cfg = vision_config(model)
    kind = getattr(cfg, "model_type", "")
    if kind.startswith("siglip") or kind == "swin":
        return ()
    if kind == "deit":
        return ("cls", "dist")
    n_reg = int(getattr(cfg, "num_register_tokens", 0) or 0)
    return ("cls",) + tuple(f"reg{i}" for i in range(n_reg))


@register_family
class HuggingFace(Family):
    name = "huggingface"
    priority = 40

    def matches(self, model: nn.Module) -> bool:
        return is_hf(model) and vision_config(model) is not None and hasattr(vision_config(model), "patch_size")

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        p = vision_config(model).patch_size
        ph, pw = (p, p) if isinstance(p, int) else (int(p[0]), int(p[1]))
        if getattr(vision_config(model), "model_type", "") == "swin":  # pads the image to whole patches
            grid = (-(-hw[0] // ph), -(-hw[1] // pw))
        else:
            grid = (hw[0] // ph, hw[1] // pw)
        # YOLOS appends its detection tokens after the patches
        n_det = int(getattr(vision_config(model), "num_detection_tokens", 0) or 0)
        return ModelTokens(prefix_names(model), grid, (float(ph), float(pw)),
                           suffix_names=tuple(f"det{i}" for i in range(n_det)))

    def describe(self, session, module, weights, site):
        windowed = self._plain_windows(session, module, weights, site)
        if windowed is not None:
            return windowed
        # a windowed layer (a Swin stage that is a single window included) runs inside a SwinLayer
        layer = next(((m, f) for m, f in site.chain() if hasattr(m, "shift_size") and hasattr(m, "window_size")
                      and hasattr(m, "maybe_pad")), None)
        if layer is None:
            return super().describe(session, module, weights, site)
        m, f = layer
        H, W = (int(v) for v in f.f_locals["input_dimensions"])
        ws, shift = int(m.window_size), int(m.shift_size)
        padded = (H + (ws - H % ws) % ws, W + (ws - W % ws) % ws)
        info = WindowInfo((ws, ws), (shift, shift), (H, W), padded, roll_after_pad=True)
        return MapSpec(WINDOW, TokenLayout((), (H, W), session.stride_for((H, W))), window=info, source=KNOWN)

    def _plain_windows(self, session, module, weights, site) -> Optional[MapSpec]:
        """ViTDet, SAM and SAM-HQ: a layer with ``window_size`` w > 0 pads the (H, W) token map to whole
        w x w windows (bottom / right) and runs attention per window, no shift; their kernels fold the
        windows into the head axis ((B*nW*heads, n, n)), so `MapSpec.heads` unfolds them. ``window_size``
        0 is a global layer (the plain token grid, no prefix token)."""
        layer = site.enclosing(lambda m: isinstance(getattr(m, "window_size", None), int)
                               and not hasattr(m, "shift_size") and m is not module)
        grid = session.tokens.grid
        if layer is None or not grid or int(layer.window_size) <= 0:
            return None
        ws, (H, W) = int(layer.window_size), grid
        padded = (-(-H // ws) * ws, -(-W // ws) * ws)
        info = WindowInfo((ws, ws), (0, 0), (H, W), padded)
        X, h, nq, nk = weights.shape
        heads = next((int(getattr(module, a)) for a in ("num_heads", "num_attention_heads")
                      if isinstance(getattr(module, a, None), int)), None)
        if nq != ws * ws or nk != ws * ws:
            return None
        layout = TokenLayout((), (H, W), session.stride_for((H, W)))
        if X == session.batch * info.windows_per_image:   # already one window per batch row
            return MapSpec(WINDOW, layout, window=info, source=KNOWN)
        if heads and X == session.batch and h == heads * info.windows_per_image:
            return MapSpec(WINDOW, layout, window=info, source=KNOWN, heads=heads)
        return None

    def _layers(self, model: nn.Module):
        enc = backbone(model).encoder
        return getattr(enc, "layer", None) or getattr(enc, "layers", None)

    def blocks(self, model: nn.Module):
        layers = self._layers(model)
        if getattr(vision_config(model), "model_type", "") == "swin" or layers is None:
            return super().blocks(model)
        names = {id(m): n for n, m in model.named_modules()}
        return [(names[id(b)], b) for b in layers]

    def gradcam_target(self, model: nn.Module) -> nn.Module:
        layers = self._layers(model)
        last = layers[-1] if layers is not None else None
        if last is not None and hasattr(last, "blocks"):  # Swin stages
            last = last.blocks[-1]
        for attr in ("layernorm_before", "layer_norm1", "norm1"):
            if last is not None and hasattr(last, attr):
                return getattr(last, attr)
        return super().gradcam_target(model)

    def position_embedding(self, model: nn.Module) -> Optional[PositionEmbedding]:
        emb = getattr(backbone(model), "embeddings", None)
        pe = getattr(emb, "position_embeddings", None)
        if isinstance(pe, torch.Tensor) and pe.dim() == 3:
            table, learned = pe[0], isinstance(pe, nn.Parameter) and pe.requires_grad
        else:
            pe = getattr(emb, "position_embedding", None)
            if not isinstance(pe, nn.Embedding):
                return None
            table, learned = pe.weight, pe.weight.requires_grad
        n_prefix = len(prefix_names(model)) - int(getattr(vision_config(model), "num_register_tokens", 0) or 0)
        g = int(round((table.shape[0] - n_prefix) ** 0.5))
        if g * g != table.shape[0] - n_prefix:
            return None
        return PositionEmbedding(table.detach().float().cpu(), n_prefix, (g, g), learned, "embeddings.position_embedding")
