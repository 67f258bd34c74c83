"""The demo models this project trains and ships in ``assets/``: ``<name>.safetensors`` + ``<name>.json``.

The JSON holds the architecture config, class names and preprocessing; the architectures live in
`attention.models.demo_architectures`.
"""
from __future__ import annotations

import json
import os

from ..errors import CheckpointError, ModelNotFoundError
from ..preprocess import Preprocessor
from . import LoadedModel, ModelSource, register_source
from .checkpoint import load_strict, read_state_dict
from .labels import class_names_for



def _assets_dir() -> str:
    """``$ATTENTION_ASSETS``, else the repository's ``assets/`` (a checkout), else the copy installed
    with the package (``pip install .`` puts it at ``<prefix>/share/attention-viz/assets``)."""
    if os.environ.get("ATTENTION_ASSETS"):
        return os.environ["ATTENTION_ASSETS"]
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.join(here, "..", "..", "assets")
    if os.path.isdir(repo):
        return repo
    for prefix in (sys.prefix, sys.base_prefix, os.path.expanduser("~/.local")):
        installed = os.path.join(prefix, "share", "attention-viz", "assets")
        if os.path.isdir(installed):
            return installed
    return repo


ASSETS = _assets_dir()


def available() -> list[str]:
    if not os.path.isdir(ASSETS):
        return []
    return sorted(f[:-5] for f in os.listdir(ASSETS)
                  if f.startswith("demo-") and f.endswith(".json")
                  and os.path.isfile(os.path.join(ASSETS, f[:-5] + ".safetensors")))


def _claims(name: str) -> bool:
    return name.startswith("demo-")


def read_spec(name: str) -> dict:
    path = os.path.join(ASSETS, name + ".json")
    if not os.path.isfile(path):
        raise ModelNotFoundError(f"unknown demo model {name!r}; bundled: {', '.join(available()) or 'none'}")
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load(name: str, checkpoint=None, labels=None, pretrained=True, img_size=None) -> LoadedModel:
    if img_size is not None:
        raise CheckpointError("--img-size is for timm ViTs; demo models run at their own input size")
    from .demo_architectures import build_model
    spec = read_spec(name)
    class_names = spec["class_names"]
    model = build_model(spec["arch"], spec.get("config", {}), len(class_names))
    weights = checkpoint or os.path.join(ASSETS, name + ".safetensors")
    if checkpoint or pretrained:
        if not os.path.isfile(weights):
            raise CheckpointError(f"weights of {name} are missing: {weights}")
        load_strict(model, read_state_dict(weights), name)
    model.eval()
    names = class_names_for(len(class_names), labels) if labels else list(class_names)
    info = {"arch": spec["arch"], "weights": os.path.abspath(weights) if pretrained or checkpoint else "random",
            "training": spec.get("training", {})}
    return LoadedModel(name, model, Preprocessor.from_timm_config(spec["preprocess"]), names, "demo", info)


register_source(ModelSource("demo", _claims, load, available, order=0,
                             syntax="demo-NAME: a bundled demo model, offline (demo-vit, demo-torch-vit, demo-cnn-selfattn, "
                                    "demo-cnn-attnpool)"))
