"""Hugging Face GroupViT: group tokens *after* the patches, and stages whose tokens are no positions.

Stage 0 runs self-attention over the patches followed by its learned group tokens (a layout with
``suffix_names`` ``group0 …``), then its grouping block: a cross-attention from the output groups
(queries) to the patches (keys: a map over the image per group) and the assignment of every patch
to a group (a softmax over the groups; shown as a token matrix). From stage 1 on the tokens are the
previous stage's groups (image segments, not grid positions) plus new group tokens: token matrices.
"""
from __future__ import annotations

from typing import Optional

from torch import nn

from ..layout import KNOWN, POOLING, SELF, TOKENS, ModelTokens, TokenLayout
from . import register_family
from .base import MapSpec
from .huggingface import HuggingFace, is_hf, vision_config


def _stages(model: nn.Module) -> list:
    return [m for m in model.modules() if type(m).__name__ == "GroupViTStage"]


@register_family
class HFGroupViT(HuggingFace):
    name = "huggingface-groupvit"
    priority = 45

    def matches(self, model: nn.Module) -> bool:
        return is_hf(model) and type(model).__name__.startswith("GroupViT") and vision_config(model) is not None

    def tokens(self, model: nn.Module, hw) -> Optional[ModelTokens]:
        cfg = vision_config(model)
        p = int(cfg.patch_size)
        groups = int(cfg.num_group_tokens[0])
        return ModelTokens((), (hw[0] // p, hw[1] // p), (float(p), float(p)),
                           suffix_names=tuple(f"group{i}" for i in range(groups)))

    def describe(self, session, module, weights, site):
        stage = site.enclosing(lambda m: type(m).__name__ == "GroupViTStage")
        stages = _stages(session.model)
        first = stage is not None and stages and stage is stages[0]
        X, heads, nq, nk = weights.shape
        grid, stride = session.tokens.grid, session.tokens.stride
        n_patch = grid[0] * grid[1] if grid else -1
        if first and nq == nk and session.layout_for(nk) is not None and session.layout_for(nk).num_suffix:
            return MapSpec(SELF, session.layout_for(nk), source=KNOWN)
        if first and nk == n_patch and nq < nk and site.enclosing(
                lambda m: type(m).__name__ == "GroupViTCrossAttentionLayer") is not None:
            keys = TokenLayout((), grid, stride)
            return MapSpec(POOLING, keys, TokenLayout(tuple(f"group{i}" for i in range(nq)), (0, 0), stride),
                           source=KNOWN)
        return MapSpec(TOKENS, None, source=KNOWN)   # patch -> group assignment, and every later stage

    def blocks(self, model: nn.Module):
        return super(HuggingFace, self).blocks(model)   # stages merge tokens: no flat stack

    def position_embedding(self, model: nn.Module):
        return None
