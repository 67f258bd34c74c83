"""torchvision's ViTs, named ``torchvision:vit_b_16`` (and the other ``vit_*`` builders)."""
from __future__ import annotations

import os

from torchvision import models as tvm

from ..errors import CheckpointError, ModelNotFoundError
from ..preprocess import Preprocessor
from . import LoadedModel, ModelSource, register_source
from .checkpoint import checkpoint_info, classifier_out_features, fit_to_model, load_strict, read_checkpoint
from .hub import TORCH_CACHE, offline, reachable, unavailable
from .labels import class_names_for

PREFIX = "torchvision:"


def builders() -> list[str]:
    return sorted(n for n in tvm.list_models(module=tvm) if n.startswith("vit_"))


def _claims(name: str) -> bool:
    return name.startswith(PREFIX)


def load(name: str, checkpoint=None, labels=None, pretrained=True, img_size=None, ema=None) -> LoadedModel:
    if img_size is not None:
        raise CheckpointError("--img-size is for timm ViTs; torchvision models run at their own input size")
    arch = name[len(PREFIX):]
    if arch not in builders():
        raise ModelNotFoundError(f"unknown torchvision model {arch!r}; choose one of: {', '.join(builders())}")
    weights_enum = tvm.get_model_weights(arch)
    default = weights_enum.DEFAULT
    info = {"arch": arch}
    if checkpoint:
        ck = read_checkpoint(checkpoint, ema=ema)
        sd, _ = fit_to_model(ck.state_dict, tvm.get_model(arch, weights=None).state_dict().keys())
        num_classes = classifier_out_features(sd, "heads.head")
        if num_classes is None:
            raise CheckpointError(f"{os.path.basename(checkpoint)} has no 'heads.head.weight' — "
                                  f"is it a torchvision {arch} checkpoint?")
        model = tvm.get_model(arch, weights=None, num_classes=num_classes)
        load_strict(model, sd, f"torchvision {arch} (from {os.path.basename(checkpoint)})")
        info["weights"] = os.path.abspath(checkpoint)
        info["checkpoint"] = checkpoint_info(ck)
    elif pretrained:
        import torch.hub
        cached = os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(default.url))
        if not os.path.isfile(cached):
            if offline():
                raise unavailable(name, f"HF_HUB_OFFLINE is set and {os.path.basename(default.url)} is not in "
                                        f"{torch.hub.get_dir()}/checkpoints", TORCH_CACHE)
            if not reachable(default.url):
                raise unavailable(name, f"{default.url.split('/')[2]} cannot be reached from this machine",
                                  TORCH_CACHE)
        model = tvm.get_model(arch, weights=default)
        info["weights"] = default.url
    else:
        model = tvm.get_model(arch, weights=None)
        info["weights"] = "random"
    model.eval()
    # torchvision's documented eval transform for these weights: resize, centre crop, normalise
    preset = default.transforms()
    crop = preset.crop_size[0]
    config = {"input_size": (3, crop, crop), "interpolation": preset.interpolation.value,
              "mean": tuple(preset.mean), "std": tuple(preset.std), "crop_pct": crop / preset.resize_size[0],
              "crop_mode": "center"}
    names = class_names_for(model.heads.head.out_features, labels)
    return LoadedModel(name, model, Preprocessor(preset, config), names, "torchvision", info)


register_source(ModelSource("torchvision", _claims, load, lambda: [PREFIX + b for b in builders()], order=10,
                             syntax="torchvision:BUILDER: a torchvision ViT or Swin (e.g. torchvision:vit_b_16)"))
