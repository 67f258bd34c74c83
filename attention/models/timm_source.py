"""timm models by name: hub weights (cached), a user's checkpoint, or random initialisation."""
from __future__ import annotations

import os

import timm
from timm.data import resolve_data_config

from ..errors import CheckpointError, ModelNotFoundError
from ..preprocess import Preprocessor
from . import LoadedModel, ModelSource, register_source
from .checkpoint import classifier_out_features, load_strict, read_state_dict
from .hub import fetch_weights, unavailable
from .labels import class_names_for


def _claims(name: str) -> bool:
    return timm.is_model(name.split(".")[0]) or timm.is_model(name)


def _classifier_names(arch: str):
    cfg = timm.models.get_pretrained_cfg(arch)
    names = getattr(cfg, "classifier", None) if cfg is not None else None
    return names or ("head", "head.fc", "fc", "classifier")


def load(name: str, checkpoint=None, labels=None, pretrained=True) -> LoadedModel:
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        raise ModelNotFoundError(f"unknown timm model {name!r}")
    info = {"arch": arch}
    if checkpoint:
        sd = read_state_dict(checkpoint)
        num_classes = classifier_out_features(sd, _classifier_names(arch))
        if num_classes is None:
            raise CheckpointError(f"{os.path.basename(checkpoint)} has no classifier weight "
                                  f"({_classifier_names(arch)}) — is it a {arch} checkpoint?")
        model = timm.create_model(arch, pretrained=False, num_classes=num_classes)
        load_strict(model, sd, f"{arch} (from {os.path.basename(checkpoint)})")
        info["weights"] = os.path.abspath(checkpoint)
    elif pretrained:
        cfg = timm.models.get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            raise unavailable(name, "timm knows no hub weights for it")
        path = fetch_weights(repo, name)
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))
        info["weights"] = repo
    else:
        model = timm.create_model(arch, pretrained=False)
        info["weights"] = "random"
    model.eval()
    pre = Preprocessor.from_timm_config(resolve_data_config({}, model=model))
    names = class_names_for(model.num_classes, labels)
    return LoadedModel(name, model, pre, names, "timm", info)


register_source(ModelSource("timm", _claims, load))
