"""The demo's four architectures: they live in `attention.models.demo_architectures` (the model source
`demo:` builds them, and a source sits below the demo); this name stays for existing imports."""
from __future__ import annotations

from ..models.demo_architectures import (DEMO_ARCHS, AttentionPool2d, BasicBlock, CNNAttentionPool,  # noqa: F401
                                         CNNSelfAttention, SelfAttention2d, TorchViT, build_model, conv_stem,
                                         default_config, hmlp_stem, sincos_pos_embed)
from ..models.demo_architectures import __all__  # noqa: F401
