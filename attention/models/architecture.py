"""Which architecture a checkpoint belongs to: what the file says, else what its weight shapes fit.

- **What the file says** (`described`): timm's ``train.py`` stores ``arch`` and ``args`` (``args.model``,
  ``args.num_classes``, ``args.img_size`` / ``args.input_size``); torchvision's reference ``train.py``
  stores ``args.model`` (a torchvision name, e.g. ``vit_b_16``); Lightning stores the module's
  ``hyper_parameters`` (a timm name under ``model_name`` / ``arch`` / ``backbone`` …, ``num_classes``);
  class names come from ``class_names`` / ``classes`` / ``id2label`` / ``class_to_idx`` entries.
  (A transformers folder says it in ``config.json``; `hf_source` reads that.)
- **What the shapes fit** (`fitting`): the patch size and width are read off the patch embedding; the
  timm architectures of that patch size and width (the size word timm's names use: 384 = small, 768 =
  base …) are built on the meta device (no memory, no download) and kept when every key and shape
  matches, at their default grid or at the checkpoint's grid. Weights do not tell the number of heads:
  an inferred architecture is a proposal, said as such.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Optional

import torch

from .checkpoint import Checkpoint, fit_to_model

_ARCH_KEYS = ("model_name", "arch", "architecture", "model", "backbone", "timm_model", "model_type", "net", "encoder")
_CLASSES_KEYS = ("num_classes", "n_classes", "classes_num", "num_labels")
_LABEL_KEYS = ("class_names", "classes", "labels", "label_names", "id2label", "idx_to_class", "class_to_idx")
# timm's size words by width (the first matching word in a name is the model's size)
_SIZE_WORDS = {192: ("tiny",), 384: ("small",), 512: ("medium", "mediumd"), 768: ("base",), 1024: ("large",),
               1280: ("huge",), 1408: ("giant",), 1536: ("giant", "gigantic"), 1664: ("gigantic",)}
MAX_BUILDS = 48


@dataclass
class Described:
    """What a checkpoint file says about its model (each field None where it says nothing)."""

    name: Optional[str] = None          # a load_model name: a timm name or "torchvision:vit_b_16"
    said_by: str = ""                   # where: "its 'arch' entry", "args.model", "hyper_parameters.model_name"
    num_classes: Optional[int] = None
    img_size: Optional[int] = None
    labels: Optional[list[str]] = None
    labels_from: str = ""
    model_kwargs: dict = field(default_factory=dict)   # timm args.model_kwargs (create_model's extra arguments)
    data_args: dict = field(default_factory=dict)      # timm args' preprocessing (for resolve_data_config)


def _get(obj, key):
    if isinstance(obj, Mapping):
        return obj.get(key)
    return getattr(obj, key, None) if obj is not None and not isinstance(obj, (str, bytes, int, float)) else None


def _as_name(value) -> Optional[str]:
    """A loadable model name for a string the file holds, or None."""
    import timm
    if not isinstance(value, str) or not value.strip():
        return None
    v = value.strip()
    if timm.is_model(v.split(".")[0]):
        return v
    if v.startswith("timm/") and timm.is_model(v[5:].split(".")[0]):
        return v[5:]
    try:
        import torchvision
        if v in torchvision.models.list_models():
            return f"torchvision:{v}"
    except Exception:  # noqa: BLE001 - torchvision without its registry
        pass
    return None


def _labels(obj) -> tuple[Optional[list[str]], str]:
    for key in _LABEL_KEYS:
        v = _get(obj, key)
        if isinstance(v, (list, tuple)) and v and all(isinstance(x, str) for x in v):
            return list(v), key
        if isinstance(v, Mapping) and v:
            items = list(v.items())
            try:
                if all(isinstance(k, str) for k, _ in items) and all(isinstance(i, int) for _, i in items):
                    inv = {int(i): k for k, i in items}          # class_to_idx: name -> index
                else:
                    inv = {int(k): str(n) for k, n in items}     # id2label: index -> name
            except (TypeError, ValueError):
                continue
            if sorted(inv) == list(range(len(inv))):
                return [inv[i] for i in range(len(inv))], key
    return None, ""


def _int(v) -> Optional[int]:
    if isinstance(v, bool):
        return None
    if isinstance(v, int) and v > 0:
        return v
    if isinstance(v, (list, tuple)) and len(v) in (2, 3) and all(isinstance(x, int) for x in v) and v[-1] == v[-2]:
        return int(v[-1])          # timm's args.input_size (3, H, W), square only
    return None


def described(ck: Checkpoint) -> Described:
    """What the checkpoint's own entries say about the model (module docstring)."""
    meta = ck.meta
    out = Described()
    args = meta.get("args")
    hp = meta.get("hyper_parameters") or meta.get("hparams")
    places = [("its 'arch' entry", meta.get("arch"))]
    places += [(f"args.{k}", _get(args, k)) for k in ("model", "arch", "model_name")]
    places += [(f"hyper_parameters.{k}", _get(hp, k)) for k in _ARCH_KEYS]
    places += [(f"hyper_parameters.{k}.{j}", _get(_get(hp, k), j)) for k in ("model", "net", "model_cfg", "config")
               for j in _ARCH_KEYS if not isinstance(_get(hp, k), str)]
    for said_by, value in places:
        name = _as_name(value)
        if name:
            out.name, out.said_by = name, said_by
            break
    for obj in (args, hp, meta):
        for k in _CLASSES_KEYS:
            n = _int(_get(obj, k))
            if n and out.num_classes is None:
                out.num_classes = n
    for obj in (args, hp):
        for k in ("img_size", "image_size", "input_size", "crop_size", "val_crop_size"):
            n = _int(_get(obj, k))
            if n and out.img_size is None:
                out.img_size = n
    kw = _get(args, "model_kwargs")
    if isinstance(kw, Mapping) and all(isinstance(v, (str, int, float, bool, type(None), list, tuple)) for v in kw.values()):
        out.model_kwargs = dict(kw)
    for k in ("input_size", "img_size", "mean", "std", "crop_pct", "interpolation", "crop_mode"):
        v = _get(args, k)
        if v is not None and v != "":
            out.data_args[k] = tuple(v) if isinstance(v, list) else v
    for where, obj in (("", meta), ("hyper_parameters.", hp), ("args.", args)):
        labels, key = _labels(obj)
        if labels:
            out.labels, out.labels_from = labels, where + key
            break
    return out


def _patch_and_width(sd: dict[str, torch.Tensor]) -> tuple[Optional[int], Optional[int]]:
    for key in ("patch_embed.proj.weight", "conv_proj.weight", "patch_embed.projection.weight",
                "stem.conv.weight", "patch_embed.conv.weight"):
        w = sd.get(key)
        if w is not None and w.dim() == 4 and w.shape[-1] == w.shape[-2]:
            return int(w.shape[-1]), int(w.shape[0])
    return None, None


def _grid(sd) -> Optional[int]:
    pe = sd.get("pos_embed")
    if pe is None or pe.dim() != 3:
        return None
    for prefix in range(0, 9):
        g = math.isqrt(max(pe.shape[1] - prefix, 0))
        if g > 0 and g * g == pe.shape[1] - prefix:
            return g
    return None


def _fits(model, sd) -> bool:
    own = model.state_dict()
    fitted, _ = fit_to_model(sd, own.keys())
    return set(fitted) == set(own) and all(tuple(fitted[k].shape) == tuple(own[k].shape) for k in own)


def _candidate_names(patch: Optional[int], width: Optional[int]) -> list[str]:
    import timm
    pool = timm.list_models(f"*patch{patch}*") if patch else []
    words = _SIZE_WORDS.get(width or -1)
    if words:
        sized = [n for n in pool if any(f"_{w}_" in f"_{n}_" or f"_{w}" in n.split("_patch")[0] for w in words)]
        pool = sized or pool
    # the plain names first (vit_small_patch16_224 before vit_small_patch16_rope_mixed_224)
    return sorted(pool, key=lambda n: (not n.startswith(("vit_", "deit_")), len(n), n))


def fitting(sd: dict[str, torch.Tensor], num_classes: Optional[int] = None, limit: int = 5) -> list[str]:
    """timm architecture names (or ``torchvision:…``) whose keys and shapes all match ``sd``
    (module docstring); a name that fits only at the checkpoint's grid is listed as
    ``name (img_size N)``. At most ``limit``, the plainest names first."""
    import timm
    patch, width = _patch_and_width(sd)
    if patch is None:
        return []
    grid = _grid(sd)
    out: list[str] = []
    kwargs = {"pretrained": False}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if "conv_proj.weight" in sd:        # torchvision's ViT
        import torchvision
        for name in (n for n in torchvision.models.list_models() if n.startswith("vit_") and n.endswith(str(patch))):
            try:
                with torch.device("meta"):
                    m = torchvision.models.get_model(name, weights=None, **({"num_classes": num_classes}
                                                                            if num_classes else {}))
            except Exception:  # noqa: BLE001
                continue
            if _fits(m, sd):
                out.append(f"torchvision:{name}")
        return out[:limit]
    for name in _candidate_names(patch, width)[:MAX_BUILDS]:
        for extra in ({}, {"img_size": grid * patch} if grid else None):
            if extra is None:
                continue
            try:
                with torch.device("meta"):
                    m = timm.create_model(name, **kwargs, **extra)
            except Exception:  # noqa: BLE001 - a constructor that cannot run on meta or take img_size
                continue
            if _fits(m, sd):
                out.append(name if not extra else f"{name} (img_size {extra['img_size']})")
                break
        if len(out) >= limit:
            break
    return out


def classes_in(sd: dict[str, torch.Tensor]) -> Optional[int]:
    """The number of classes of a timm-style classifier weight ('head.weight', 'head.fc.weight',
    'fc.weight', 'classifier.weight', 'heads.head.weight'), whatever the prefix."""
    for key, w in sd.items():
        if key.endswith(("head.weight", "head.fc.weight", "fc.weight", "classifier.weight")) and w.dim() == 2 \
                and "blocks." not in key and "layers." not in key and "mlp" not in key:
            return int(w.shape[0])
    return None


def candidates(ck: Checkpoint, said: Optional[Described] = None, limit: Optional[int] = None) -> list[str]:
    """The architectures for a checkpoint: the one it names, else those whose every weight shape fits it."""
    said = said or described(ck)
    if said.name:
        return [said.name]
    fits = fitting(ck.state_dict, said.num_classes or classes_in(ck.state_dict))
    return fits if limit is None else fits[:limit]


def proposal(ck: Checkpoint, said: Optional[Described] = None) -> tuple[Optional[str], str]:
    """(the architecture to build, how it was found) for a checkpoint loaded without a model name."""
    said = said or described(ck)
    if said.name:
        return said.name, f"named by {ck.name} ({said.said_by.replace('its ', '')})"
    fits = candidates(ck, said)
    if not fits:
        return None, ""
    first = fits[0].split(" (img_size")[0]
    also = f"; also fit: {', '.join(fits[1:])}" if len(fits) > 1 else ""
    return first, (f"inferred from the weights' shapes (the number of heads cannot be read from weights; give the "
                   f"architecture if it differs{also})")


__all__ = ["Described", "described", "fitting", "candidates", "proposal", "classes_in"]
