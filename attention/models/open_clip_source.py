"""open_clip models as zero-shot classifiers: ``open_clip:ARCH/PRETRAINED`` (e.g. ``open_clip:ViT-B-32/openai``).

The user types the classes ("cat, dog, teapot"). Each class gets a text embedding: the class name
in every prompt template the CLIP paper evaluates ImageNet with (open_clip's
``OPENAI_IMAGENET_TEMPLATES``, "a photo of a {}." and 79 more), each embedding L2-normalised, averaged,
normalised again (prompt ensembling, Radford et al. 2021, §3.1.4; open_clip's
``build_zero_shot_classifier``). For an image with normalised embedding ``f``, the logits are the
scaled cosine similarities

    logits_c = exp(t) · ⟨f, g_c⟩  (+ b for SigLIP-style models with a logit bias)

and the predictions their softmax — so class-specific maps (gradient-weighted attention, Grad-CAM)
explain the chosen class's similarity. Without classes the model is a backbone (image embeddings,
no predictions) until `LoadedModel.with_classes` is called.

Weights: ``PRETRAINED`` tags are fetched from the Hugging Face hub through huggingface_hub (cached;
offline or unreachable gives the same fast, clear error as timm models), read as safetensors or
``torch.load(weights_only=True)`` and loaded strictly. ``--checkpoint`` loads a full CLIP state dict
of your own; no tag (or ``pretrained=False``) is random initialisation. The tokenizer's BPE
vocabulary ships inside open_clip, so CLIP-text models run offline.
"""
from __future__ import annotations

import os
import re
import threading
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms as T

from ..errors import CheckpointError, LabelsError, ModelNotFoundError, ModelUnavailableError
from ..preprocess import Preprocessor
from . import LoadedModel, ModelSource, register_source
from .checkpoint import load_strict, read_state_dict
from .hub import fetch_weights, unavailable

PREFIX = "open_clip:"
HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
MAX_CLASSES = 1000
NEEDS_CLASSES = ("this is a zero-shot model with no fixed classes: type the classes it should choose between "
                 "(e.g. \"cat, dog, teapot\").")


def _claims(name: str) -> bool:
    return name.startswith(PREFIX)


def parse_classes(classes) -> list[str]:
    """"cat, dog, teapot" (commas or new lines) or a list -> ["cat", "dog", "teapot"]; at least two, no duplicates."""
    items = re.split(r"[,\n;]", classes) if isinstance(classes, str) else list(classes or [])
    names, seen = [], set()
    for c in items:
        c = " ".join(str(c).split())
        if c and c.lower() not in seen:
            seen.add(c.lower())
            names.append(c)
    if len(names) < 2:
        raise LabelsError("type at least two classes, separated by commas, e.g. \"cat, dog, teapot\" "
                          "(a softmax over one class is always 1)")
    if len(names) > MAX_CLASSES:
        raise LabelsError(f"{len(names)} classes typed; at most {MAX_CLASSES}")
    return names


class ZeroShotClassifier(nn.Module):
    """Image tower + fixed class text embeddings: ``forward(x)`` = exp(t)·cos(image, class) (+ bias)."""

    def __init__(self, visual: nn.Module, text_features: torch.Tensor, logit_scale: float, logit_bias: float = 0.0):
        super().__init__()
        self.visual = visual
        self.register_buffer("text_features", text_features, persistent=False)   # (C, D), unit rows
        self.logit_scale = float(logit_scale)
        self.logit_bias = float(logit_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.normalize(self.visual(x), dim=-1)
        return self.logit_scale * f @ self.text_features.T + self.logit_bias


class ImageEmbedder(nn.Module):
    """The image tower alone: ``forward(x)`` = the normalised image embedding (no classes yet)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(x), dim=-1)


class ZeroShot:
    """What a zero-shot `LoadedModel` needs to classify among typed classes (text features cached)."""

    def __init__(self, clip: nn.Module, tokenizer, templates, max_cached: int = 32):
        self.clip = clip
        self.tokenizer = tokenizer
        self.templates = tuple(templates)
        self._cache: "OrderedDict[tuple, torch.Tensor]" = OrderedDict()
        self._lock = threading.Lock()
        self.max_cached = max_cached

    def text_features(self, names: list[str]) -> torch.Tensor:
        key = tuple(names)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        from open_clip import build_zero_shot_classifier
        with torch.no_grad():
            w = build_zero_shot_classifier(self.clip, self.tokenizer, names, self.templates,
                                           num_classes_per_batch=8, device="cpu")      # (D, C)
        feats = w.T.contiguous()
        with self._lock:
            self._cache[key] = feats
            while len(self._cache) > self.max_cached:
                self._cache.popitem(last=False)
        return feats

    def with_classes(self, loaded: LoadedModel, classes) -> LoadedModel:
        names = parse_classes(classes)
        scale = float(self.clip.logit_scale.detach().exp()) if hasattr(self.clip, "logit_scale") else 100.0
        bias = getattr(self.clip, "logit_bias", None)
        bias = float(bias.detach()) if isinstance(bias, torch.Tensor) else 0.0
        model = ZeroShotClassifier(self.clip.visual, self.text_features(names), scale, bias).eval()
        info = {**loaded.info, "classes": names, "logit_scale": scale, "logit_bias": bias,
                "prompt_templates": len(self.templates)}
        return LoadedModel(loaded.name, model, loaded.preprocess, names, loaded.source, info,
                           no_classifier_reason="", zero_shot=self)


def _templates():
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    return OPENAI_IMAGENET_TEMPLATES


def _preprocess(clip: nn.Module) -> Preprocessor:
    """open_clip's eval transform (resize the shortest side, centre crop, normalise), as torchvision steps."""
    from open_clip.model import get_model_preprocess_cfg
    cfg = get_model_preprocess_cfg(clip)
    size = cfg.get("size", 224)
    size = (size, size) if isinstance(size, int) else tuple(size)
    mode = cfg.get("resize_mode", "shortest")
    if mode != "shortest":
        raise CheckpointError(f"open_clip resize_mode {mode!r} is not supported (only 'shortest')")
    interp = {"bicubic": T.InterpolationMode.BICUBIC, "bilinear": T.InterpolationMode.BILINEAR}.get(
        cfg.get("interpolation", "bicubic"), T.InterpolationMode.BICUBIC)
    mean, std = tuple(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))), tuple(
        cfg.get("std", (0.26862954, 0.26130258, 0.27577711)))
    resize = size[0] if size[0] == size[1] else size
    transform = T.Compose([T.Resize(resize, interpolation=interp), T.CenterCrop(size), T.ToTensor(),
                           T.Normalize(mean, std)])
    config = {"input_size": (3, *size), "interpolation": cfg.get("interpolation", "bicubic"), "mean": mean,
              "std": std, "crop_pct": 1.0, "crop_mode": "center"}
    return Preprocessor(transform, config)


def load(name: str, checkpoint=None, labels=None, pretrained=True, img_size=None) -> LoadedModel:
    try:
        import open_clip
    except ImportError:
        raise ModelUnavailableError("open_clip models need the open_clip_torch package: "
                                    "pip install open_clip_torch") from None
    if img_size is not None:
        raise CheckpointError("--img-size does not apply to open_clip models")
    if labels:
        raise LabelsError("open_clip models are zero-shot: give the classes (--classes \"cat, dog\"), not --labels")
    ref = name[len(PREFIX):].strip()
    arch, _, tag = ref.partition("/")
    if arch not in open_clip.list_models():
        raise ModelNotFoundError(f"unknown open_clip architecture {arch!r}; e.g. ViT-B-32, ViT-B-16, ViT-L-14 "
                                 f"(open_clip.list_models())")
    info = {"arch": arch, "pretrained": tag or None}
    pcfg = open_clip.get_pretrained_cfg(arch, tag) if tag else {}
    if tag and not pcfg:
        raise ModelNotFoundError(f"open_clip has no pretrained weights {tag!r} for {arch}; available: "
                                 f"{', '.join(open_clip.list_pretrained_tags_by_model(arch)[:12])}")
    kwargs = {"force_quick_gelu": bool(pcfg.get("quick_gelu", False))} if pcfg else {}
    clip = open_clip.create_model(arch, pretrained=None, **kwargs)
    if checkpoint:
        load_strict(clip, read_state_dict(checkpoint), f"open_clip {arch} (from {os.path.basename(checkpoint)})")
        info["weights"] = os.path.abspath(checkpoint)
    elif tag and pretrained:
        repo = (pcfg.get("hf_hub") or "").strip("/")
        if not repo:
            raise unavailable(name, "its weights are not on the Hugging Face hub (only at "
                                    f"{pcfg.get('url', 'an unknown URL')}); pass them with --checkpoint")
        path = fetch_weights(repo, name, HUB_FILES)
        load_strict(clip, read_state_dict(path), f"open_clip {arch}/{tag}")
        info["weights"] = repo
    else:
        info["weights"] = "random"
    clip.eval()
    if pcfg:   # the pretrained tag's normalisation and interpolation
        from open_clip.model import get_model_preprocess_cfg, set_model_preprocess_cfg
        cfg = get_model_preprocess_cfg(clip)
        cfg.update({k: pcfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pcfg})
        set_model_preprocess_cfg(clip, cfg)
    try:
        tokenizer = open_clip.get_tokenizer(arch)
    except Exception as e:  # noqa: BLE001 - e.g. an HF tokenizer that is not cached offline
        raise ModelUnavailableError(f"the text tokenizer of {arch} is not available ({type(e).__name__}: "
                                    f"{str(e).splitlines()[0][:160] if str(e) else ''})") from None
    zs = ZeroShot(clip, tokenizer, _templates())
    return LoadedModel(name, ImageEmbedder(clip.visual).eval(), _preprocess(clip), [], "open_clip", info,
                       no_classifier_reason=NEEDS_CLASSES, zero_shot=zs)


register_source(ModelSource("open_clip", _claims, load, order=40,
                             syntax="open_clip:ARCH/PRETRAINED: open_clip zero-shot, with --classes \"cat, dog, teapot\" "
                                    "(e.g. open_clip:ViT-B-32/openai)"))
