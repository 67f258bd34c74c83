"""Hugging Face masked-image encoders (ViTMAE): run unmasked while capturing.

ViTMAE's forward keeps a random ``1 - mask_ratio`` of the patches (75 % dropped by default) *and*
shuffles the kept ones (``argsort`` of random noise), so each forward attends over a different,
scrambled subset: no fixed token grid to draw. For viewing, every capture runs it unmasked and in
order: ``mask_ratio`` 0 and the noise ``0, 1, 2, …`` (whose argsort is the identity), so the tokens
are [CLS, all patches row-major] as in a ViT. Outside a capture the model is untouched; the loader
says so in the model's info ("masking").
"""
from __future__ import annotations

import threading

import torch
from torch import nn

from . import register_family
from .huggingface import HuggingFace

_lock = threading.Lock()
_active: dict[int, list] = {}   # id(embeddings) -> [captures running, the saved mask_ratio]


def masking_embeddings(model: nn.Module):
    """The module whose ``random_masking`` drops and shuffles patches (ViTMAE's embeddings), or None."""
    return next((m for m in model.modules() if callable(getattr(type(m), "random_masking", None))
                 and hasattr(getattr(m, "config", None), "mask_ratio")), None)


@register_family
class HFMaskedEncoder(HuggingFace):
    name = "huggingface-masked"
    priority = 45

    def matches(self, model: nn.Module) -> bool:
        return super().matches(model) and masking_embeddings(model) is not None

    def instrument(self, model: nn.Module):
        emb = masking_embeddings(model)
        original = type(emb).random_masking

        def in_order(sequence, noise=None):
            if noise is None:   # argsort(0, 1, 2, ...) is the identity: every patch kept, in place
                b, n = sequence.shape[:2]
                noise = torch.arange(n, device=sequence.device, dtype=torch.float32).expand(b, n)
            return original(emb, sequence, noise)

        with _lock:   # concurrent captures share one unmasked state; the last one restores
            entry = _active.setdefault(id(emb), [0, emb.config.mask_ratio])
            entry[0] += 1
            emb.config.mask_ratio = 0.0
            emb.random_masking = in_order

        def undo():
            with _lock:
                entry[0] -= 1
                if entry[0] == 0:
                    emb.config.mask_ratio = entry[1]
                    emb.__dict__.pop("random_masking", None)
                    del _active[id(emb)]
        return [undo]
