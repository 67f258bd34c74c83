"""XCiT: cross-covariance attention (channels x channels per head), then class attention.

XCA's softmax is over the channels of a head, not over positions, so its maps are labelled ``channel``
and spatial views refuse them; the class-attention blocks at the end are ordinary CLS -> tokens maps.
"""
from __future__ import annotations

from torch import nn

from ..layout import CHANNEL, KNOWN
from . import register_family
from .base import MapSpec
from .timm_vit import TimmViT


@register_family
class XCiT(TimmViT):
    name = "timm-xcit"
    priority = 60
    timm_classes = ("Xcit",)

    def describe(self, session, module, weights, site):
        if type(module).__name__ == "XCA":
            return MapSpec(CHANNEL, None, source=KNOWN)
        return super().describe(session, module, weights, site)
