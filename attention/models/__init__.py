"""Loading models by name: timm, torchvision (``torchvision:vit_b_16``) and the bundled demo models.

`load_model` returns a `LoadedModel`: the module in eval mode, its class names, and its
`Preprocessor`. Where a name comes from is decided by a registry of sources (one file each); the
first source that claims a name loads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch
from PIL import Image
from torch import nn

from ..capture import CaptureResult, capture
from ..errors import ModelNotFoundError
from ..preprocess import PreparedImage, Preprocessor


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    preprocess: Preprocessor
    class_names: list[str]
    source: str
    info: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def prepare(self, image: Image.Image) -> PreparedImage:
        return self.preprocess(image)

    def capture(self, image: Union[Image.Image, PreparedImage, torch.Tensor], **kwargs) -> CaptureResult:
        """Forward pass with every attention matrix; accepts a photo, a prepared image or a tensor."""
        if isinstance(image, Image.Image):
            image = self.prepare(image)
        x = image.tensor if isinstance(image, PreparedImage) else image
        return capture(self.model, x, **kwargs)

    def top_k(self, logits: torch.Tensor, k: int = 5) -> list[list[dict]]:
        """Top-k predictions per batch item: ``[{"label", "index", "probability"}, ...]``."""
        if logits.shape[-1] == 0 or not self.class_names:  # feature extractors (e.g. DINOv2) have no classes
            return [[] for _ in range(logits.shape[0])]
        probs = logits.float().softmax(-1)
        p, idx = probs.topk(min(k, probs.shape[-1]), dim=-1)
        return [[{"label": self.class_names[int(i)], "index": int(i), "probability": float(v)}
                 for v, i in zip(pr, ir)] for pr, ir in zip(p, idx)]


@dataclass
class ModelSource:
    name: str
    claims: Callable[[str], bool]
    load: Callable[..., LoadedModel]
    choices: Callable[[], list[str]] = lambda: []


_SOURCES: list[ModelSource] = []


def register_source(source: ModelSource) -> ModelSource:
    _SOURCES.append(source)
    return source


def load_model(name: str, checkpoint: Optional[str] = None, labels: Optional[str] = None,
               pretrained: bool = True) -> LoadedModel:
    """Load a model by name.

    - ``checkpoint``: your own weights for that architecture (.safetensors, or .pth/.pt loaded with
      ``weights_only=True``); the number of classes comes from the head's weight shape.
    - ``labels``: a text file (one name per line) or a JSON list of class names.
    - ``pretrained=False``: random initialisation (no download), e.g. for tests and benchmarks.
    """
    name = name.strip()
    for src in _SOURCES:
        if src.claims(name):
            return src.load(name, checkpoint=checkpoint, labels=labels, pretrained=pretrained)
    raise ModelNotFoundError(
        f"unknown model {name!r}: not a bundled demo model ({', '.join(demo_names()) or 'none found'}), "
        f"not 'torchvision:vit_*', and not a timm model name (see timm.list_models('*vit*'))")


def demo_names() -> list[str]:
    from .demo_source import available
    return available()


from . import demo_source, torchvision_source, timm_source  # noqa: E402,F401  (registers the sources)

__all__ = ["LoadedModel", "load_model", "register_source", "ModelSource", "demo_names"]
