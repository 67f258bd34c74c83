"""CaiT: self-attention blocks with talking heads, then class-attention blocks.

`TalkingHeadAttn` computes ``softmax(proj_l(q kᵀ · scale))`` and then mixes the heads again with
``proj_w``. The map shown is the softmax output (what the capture records): its rows are a
distribution over keys, which the mixed rows are not (``proj_w`` has arbitrary signs). The
self-attention blocks run on the patches alone (the CLS token is appended afterwards); the class
attention blocks have the CLS token as their only query (kind ``class``).
"""
from __future__ import annotations

from torch import nn

from . import register_family
from .timm_vit import TimmViT


@register_family
class CaiT(TimmViT):
    name = "timm-cait"
    priority = 60
    timm_classes = ("Cait",)
