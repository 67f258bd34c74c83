"""timm models by name: hub weights (cached), a user's checkpoint, or random initialisation.

- A checkpoint without a classifier weight is a backbone (DINOv2, EVA02-MIM, SigLIP, MAE are saved
  that way): the model is built with ``num_classes=0`` and has no predictions.
- A ViT checkpoint's absolute position embedding says at which grid it was trained. When that grid
  is not the architecture's default (DINOv2 fine-tuned at 224 px: 16 × 16 instead of 37 × 37), the
  model is built at the checkpoint's resolution, ``img_size = grid · patch``, and preprocessing
  follows. ``img_size=`` overrides: the checkpoint's position embedding is then resampled to the
  new grid (bicubic, timm's `resample_abs_pos_embed`).
"""
from __future__ import annotations

import math
import os
from typing import Optional

import timm
import torch
from timm.data import resolve_data_config

from ..errors import CheckpointError, ModelNotFoundError
from ..preprocess import Preprocessor
from . import LoadedModel, ModelSource, no_classifier, register_source
from .checkpoint import checkpoint_info, classifier_out_features, fit_to_model, load_strict, read_checkpoint
from .hub import fetch_weights, unavailable
from .labels import class_names_for


def _claims(name: str) -> bool:
    return timm.is_model(name.split(".")[0]) or timm.is_model(name)


def _classifier_names(arch: str):
    cfg = timm.models.get_pretrained_cfg(arch)
    names = getattr(cfg, "classifier", None) if cfg is not None else None
    return names or ("head", "head.fc", "fc", "classifier")


def _pos_prefix(model) -> int:
    """How many prefix tokens (CLS, DIST, registers) have a row in the absolute position embedding."""
    return 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 0))


def _patch(model) -> Optional[tuple[int, int]]:
    pe = getattr(model, "patch_embed", None)
    size = getattr(pe, "patch_size", None)
    if size is None:
        return None
    return tuple(size) if isinstance(size, (tuple, list)) else (int(size), int(size))


def checkpoint_grid(model, sd: dict) -> Optional[tuple[int, int]]:
    """The (square) patch grid a checkpoint's ``pos_embed`` was trained at, or None when it has none
    or its token count is not a square once the prefix rows are removed."""
    pe = sd.get("pos_embed")
    if pe is None or pe.dim() != 3 or _patch(model) is None or getattr(model, "pos_embed", None) is None:
        return None
    tokens = pe.shape[1] - _pos_prefix(model)
    g = math.isqrt(max(tokens, 0))
    return (g, g) if g > 0 and g * g == tokens else None


def _model_grid(model) -> Optional[tuple[int, int]]:
    grid = getattr(getattr(model, "patch_embed", None), "grid_size", None)
    return tuple(grid) if grid is not None else None


def _create(arch: str, what: str, **kwargs):
    try:
        return timm.create_model(arch, **kwargs)
    except TypeError as e:      # an architecture without `img_size`
        if "img_size" in kwargs:
            raise CheckpointError(f"{what}: {arch} cannot be built at another input size ({e})") from None
        raise


def _check_img_size(model, img_size: int, arch: str) -> None:
    patch = _patch(model)
    if patch is None:
        raise CheckpointError(f"--img-size applies to ViT-style models with a patch embedding; {arch} has none")
    if img_size <= 0 or img_size % patch[0] or img_size % patch[1]:
        raise CheckpointError(f"--img-size {img_size} is not a positive multiple of {arch}'s patch size "
                              f"{patch[0]}")


def _resample_pos_embed(sd: dict, model, old_grid, what: str) -> dict:
    from timm.layers import resample_abs_pos_embed
    new_grid = _model_grid(model)
    if old_grid is None or new_grid is None or tuple(old_grid) == tuple(new_grid):
        return sd
    sd = dict(sd)
    sd["pos_embed"] = resample_abs_pos_embed(sd["pos_embed"], new_size=list(new_grid), old_size=list(old_grid),
                                             num_prefix_tokens=_pos_prefix(model), interpolation="bicubic",
                                             antialias=True, verbose=False)
    return sd


def _from_checkpoint(arch: str, ck, img_size: Optional[int], info: dict, model_kwargs: Optional[dict] = None):
    from .architecture import described, fitting
    base = ck.name
    what = f"{arch} (from {base})"
    probe_keys = _structure(arch, pretrained=False).state_dict().keys()
    sd, prefix = fit_to_model(ck.state_dict, probe_keys)
    if prefix:
        info["prefix_removed"] = prefix
    num_classes = classifier_out_features(sd, _classifier_names(arch))
    kwargs = {**(model_kwargs or {}), "pretrained": False, "num_classes": num_classes if num_classes is not None else 0}
    if model_kwargs:
        info["model_kwargs"] = dict(model_kwargs)
    probe = _structure(arch, **kwargs)
    grid = checkpoint_grid(probe, sd)
    if img_size is not None:
        _check_img_size(probe, img_size, arch)
        kwargs["img_size"] = img_size
    elif grid is not None and grid != _model_grid(probe):
        kwargs["img_size"] = grid[0] * _patch(probe)[0]
        info["img_size_from_checkpoint"] = kwargs["img_size"]
    model = _create(arch, what, **kwargs)
    if img_size is not None and grid is not None:
        if grid != _model_grid(model):
            info["pos_embed_resampled"] = {"from": list(grid), "to": list(_model_grid(model))}
        sd = _resample_pos_embed(sd, model, grid, what)
    try:
        load_strict(model, sd, what)
    except CheckpointError as e:
        said = described(ck)
        if said.name and said.name.split(".")[0] != arch:
            hint = (f"{base} says it was trained as {said.name} ({said.said_by}): load it as that (or leave the "
                    f"architecture empty to take it from the file)")
        else:
            fits = fitting(ck.state_dict, num_classes)
            hint = (f"architectures whose every weight shape fits {base}: {', '.join(fits)}" if fits else
                    f"no timm architecture of the same patch size and width fits {base}")
        raise CheckpointError(f"{base} does not fit {arch}. {hint}. Details: {e.args[0]}") from None
    info["weights"] = os.path.abspath(ck.path)
    if num_classes is None:
        info["headless"] = f"{base} has no classifier weight ({', '.join(_names(arch))})"
    return model


def _structure(arch: str, **kwargs):
    """The model's structure (patch size, prefix tokens, grid) without allocating weights where the
    architecture builds on the meta device; a normal build otherwise."""
    try:
        with torch.device("meta"):
            return timm.create_model(arch, **kwargs)
    except Exception:  # noqa: BLE001 - some constructors compute on their tensors
        return timm.create_model(arch, **kwargs)


def _names(arch: str) -> list[str]:
    n = _classifier_names(arch)
    return [n] if isinstance(n, str) else list(n)


def load(name: str, checkpoint=None, labels=None, pretrained=True, img_size: Optional[int] = None,
         ema: Optional[bool] = None) -> LoadedModel:
    arch = name.split(".")[0]
    if not timm.is_model(arch):
        raise ModelNotFoundError(f"unknown timm model {name!r}")
    info = {"arch": arch}
    extra = {}
    ck = stored = None
    if img_size is not None and not checkpoint:
        _check_img_size(_structure(arch, pretrained=False), img_size, arch)
        extra["img_size"] = img_size
    data_args: dict = {}
    if checkpoint:
        from .architecture import described
        ck = read_checkpoint(checkpoint, ema=ema)
        stored = described(ck)
        # what timm's train.py built and fed: its args' model_kwargs and data settings, when the file is of this arch
        same = bool(stored.name) and stored.name.split(".")[0] == arch
        model = _from_checkpoint(arch, ck, img_size, info, stored.model_kwargs if same else {})
        info["checkpoint"] = checkpoint_info(ck)
        data_args = stored.data_args if same and img_size is None else {}
    elif pretrained:
        cfg = timm.models.get_pretrained_cfg(name)
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not repo:
            raise unavailable(name, "timm knows no hub weights for it")
        path = fetch_weights(repo, name)
        # timm's own loader resamples the position embedding when img_size differs
        model = _create(name, name, pretrained=True, pretrained_cfg_overlay=dict(file=path), **extra)
        info["weights"] = repo
    else:
        model = _create(arch, arch, pretrained=False, **extra)
        info["weights"] = "random"
    model.eval()
    config = resolve_data_config(dict(data_args), model=model)
    built = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if data_args:
        info["preprocessing_from"] = f"{ck.name}'s args ({', '.join(sorted(data_args))})"
    if built is not None and not (data_args and getattr(model, "dynamic_img_size", False)):
        # built at another size than the pretrained config's: preprocessing follows
        config["input_size"] = (3, *(tuple(built) if isinstance(built, (tuple, list)) else (built, built)))
    pre = Preprocessor.from_timm_config(config)
    reason = ""
    if model.num_classes == 0:
        reason = no_classifier(info.get("headless") or f"{arch} is built with num_classes=0")
        names = []
    else:
        names = class_names_for(model.num_classes, labels, stored.labels if stored else None,
                                stored.labels_from if stored else "")
    if labels and not names:
        from ..errors import LabelsError
        raise LabelsError(f"labels were given but {arch} has no classifier: {reason}")
    return LoadedModel(name, model, pre, names, "timm", info, no_classifier_reason=reason)


register_source(ModelSource("timm", _claims, load, order=90,
                             syntax="any timm ViT name, downloaded once from the Hugging Face hub (e.g. "
                                    "deit_small_patch16_224, vit_small_patch14_reg4_dinov2, swin_tiny_patch4_window7_224)"))
