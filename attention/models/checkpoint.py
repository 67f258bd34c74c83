"""Reading users' checkpoints safely and loading them strictly.

Never unpickles code: ``.safetensors`` through safetensors; ``.pth`` / ``.pt`` / ``.bin`` / ``.ckpt`` /
``.pth.tar`` through ``torch.load(weights_only=True)``, whose unpickler builds only tensors, plain
containers and the types on an allow-list. The allow-list (`SAFE_TYPES`) holds the plain data that
training scripts store beside the weights — ``argparse.Namespace`` (timm's and torchvision's
``train.py`` save their ``args``), paths, numpy scalars and arrays, Lightning's ``AttributeDict`` (read
as a plain dict, Lightning is never imported) — all of which only hold values and run no code when
built. A file that needs any other type is refused with the type's name, the entries that hold
weights, and the one line that re-saves only the weights.

What a checkpoint holds is read into a `Checkpoint`: the chosen weights (the EMA weights where the
file has them, as timm's own loader does, unless ``ema=False``), the other weights entries, and what
the file says about the model (architecture, number of classes, image size, class names; see
`attention.models.architecture`).

Prefixes added by wrappers (``module.`` from DDP / DataParallel, ``_orig_mod.`` from
``torch.compile``, a Lightning module's attribute such as ``model.``), in any nesting and order, are
removed by matching the model's own keys (`fit_to_model`), not in a fixed order.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import pickle
import re
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional

import torch
from torch import nn

from ..errors import CheckpointError

# entries that hold a model's weights, most specific first; EMA entries separately (timm's
# `state_dict_ema`, torchvision references' `model_ema`, common spellings of others)
LIVE_KEYS = ("state_dict", "model", "model_state_dict", "model_state", "module", "net", "network", "weights")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema", "ema_model", "model_ema_state_dict")
# wrapper prefixes that never belong to a model's own parameter names
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# bookkeeping tensors of averaging wrappers (torch.optim.swa_utils.AveragedModel, torchvision's EMA)
BOOKKEEPING_KEYS = ("n_averaged",)

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def clean_text(s: str) -> str:
    """A message without terminal colour codes (they show as garbage in a browser)."""
    return _ANSI.sub("", s)


class _AttributeDict(dict):
    """Stands in for Lightning's ``AttributeDict`` (a dict subclass holding hyper-parameters)."""


def _numpy_safe_types() -> list:
    import numpy as np
    try:
        multiarray = np._core.multiarray
    except AttributeError:      # numpy < 2
        multiarray = np.core.multiarray
    out: list = [np.dtype, np.ndarray]
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):     # the name depends on the writer's numpy
        out += [(multiarray.scalar, f"{mod}.scalar"), (multiarray._reconstruct, f"{mod}._reconstruct")]
    for name in dir(getattr(np, "dtypes", object)):
        t = getattr(np.dtypes, name)
        if isinstance(t, type) and name.endswith("DType"):
            out.append(t)
    return out


def _safe_types() -> list:
    """The allow-list handed to torch's weights-only unpickler (see the module docstring)."""
    types: list = [argparse.Namespace, pathlib.PosixPath, pathlib.PurePosixPath,
                   (pathlib.PureWindowsPath, "pathlib.WindowsPath"), pathlib.PureWindowsPath, torch.Size]
    types += [(_AttributeDict, f"{m}.AttributeDict") for m in (
        "lightning.fabric.utilities.data", "lightning_fabric.utilities.data", "pytorch_lightning.utilities.parsing",
        "lightning.pytorch.utilities.parsing")]
    types += _numpy_safe_types()
    return types


SAFE_TYPES = _safe_types()
SAFE_TYPE_NAMES = sorted({t[1] if isinstance(t, tuple) else f"{t.__module__}.{t.__qualname__}" for t in SAFE_TYPES})
# torch's allow-list is process-wide: loads that change it are serialised
_LOAD_LOCK = threading.Lock()


@dataclass
class Checkpoint:
    """What a checkpoint file holds: the weights to load and what it says about the model."""

    path: str
    state_dict: dict[str, torch.Tensor]
    entry: str = ""                      # where the weights came from ("state_dict_ema", "" = top level)
    entries: dict[str, str] = field(default_factory=dict)   # other weights entries: {name: "live"/"ema"}
    meta: dict[str, Any] = field(default_factory=dict)      # the file's other entries (no tensors)
    notes: list[str] = field(default_factory=list)          # what the user should be told

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def read_state_dict(path: str, ema: Optional[bool] = None) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file (see `read_checkpoint`)."""
    return read_checkpoint(path, ema=ema).state_dict


def read_checkpoint(path: str, ema: Optional[bool] = None) -> Checkpoint:
    """Read a checkpoint file without running code from it.

    ``ema``: None (default) takes the EMA weights where the file has them and says so; False the live
    weights; True requires EMA weights."""
    if not os.path.exists(path):
        raise CheckpointError.said("checkpoint.no_such_file", path=repr(path))
    if os.path.isdir(path):
        raise CheckpointError.said("checkpoint.directory", path=repr(path))
    ext = os.path.splitext(path)[1].lower()
    kind = sniff(path)
    base = os.path.basename(path)
    problem = _not_weights(kind, base, ext)
    if problem is not None:
        raise problem
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file
            raw = load_file(path, device="cpu")
        else:
            raw = _weights_only_load(path)
    except pickle.UnpicklingError as e:
        raise _refusal(path, e) from None
    except CheckpointError:
        raise
    except Exception as e:  # noqa: BLE001 - report any decode failure as the user's file problem
        said = clean_text(str(e)).splitlines()[0].split(". ")[0][:200] if str(e) else ""
        if kind in ("zip", "pickle", "safetensors"):
            raise CheckpointError.said("checkpoint.truncated", base=base, error=f"{type(e).__name__}: {said}") from None
        raise CheckpointError.said("checkpoint.unreadable", base=base, error=f"{type(e).__name__}: {said}") from None
    return unwrap_checkpoint(raw, path, ema=ema)


def _weights_only_load(path: str):
    with _LOAD_LOCK, torch.serialization.safe_globals(SAFE_TYPES):
        return torch.load(path, map_location="cpu", weights_only=True)


class _Stub:
    """Stands in for every global of a refused file while it is described (`_describe`): it keeps
    the arguments it is given and runs nothing."""

    name = ""

    def __new__(cls, *args, **kwargs):     # NEWOBJ calls __new__ only
        obj = object.__new__(cls)
        obj.args, obj.entries = args, {}
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __setitem__(self, key, value):     # a dict subclass's items (SETITEMS)
        self.entries[key] = value

    def append(self, value):               # a list subclass's items (APPENDS)
        self.entries[len(self.entries)] = value

    def extend(self, values):
        for v in values:
            self.append(v)


class _Describer(pickle.Unpickler):
    """Reads a refused pickle's structure only: every global becomes a `_Stub` subclass named after
    it (nothing is imported), every storage a placeholder (nothing is read)."""

    # plain containers are built for real: calling them runs nothing of the file's
    REAL = {("collections", "OrderedDict"): OrderedDict, ("builtins", "set"): set, ("builtins", "frozenset"): frozenset,
            ("builtins", "list"): list, ("builtins", "dict"): dict, ("builtins", "tuple"): tuple}

    def find_class(self, module, name):
        return self.REAL.get((module, name)) or type(name, (_Stub,), {"name": f"{module}.{name}"})

    def persistent_load(self, pid):
        return None


def _unsafe_globals(path: str) -> list[str]:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # noqa: BLE001 - legacy (non-zip) files cannot be listed without loading
        return []
    allowed = set(SAFE_TYPE_NAMES)
    return [n for n in names if n not in allowed]


def _is_tensor(o) -> bool:
    return isinstance(o, torch.Tensor) or (isinstance(o, _Stub) and o.name.startswith("torch._utils._rebuild"))


def _weights_entries(path: str) -> tuple[list[str], bool]:
    """(entries of a refused file that hold tensors, whether the file is one pickled object), from its
    structure alone (`_Describer`); nothing of the file's own types is imported or run."""
    import zipfile
    try:
        with zipfile.ZipFile(path) as z:
            pkl = next(n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            with z.open(pkl) as f:
                obj = _Describer(f).load()
    except Exception:  # noqa: BLE001 - the description is best effort; the refusal stands anyway
        return [], False
    try:
        return _describe(obj)
    except Exception:  # noqa: BLE001
        return [], False


def _describe(obj) -> tuple[list[str], bool]:
    found: list[tuple[str, int]] = []

    def walk(o, where: str, depth: int):
        if depth > 8 or len(found) >= 6:
            return
        if isinstance(o, _Stub) and not _is_tensor(o):
            walk(o.entries or getattr(o, "state", None), where, depth + 1)
            return
        if isinstance(o, Mapping):
            n = sum(_is_tensor(v) for v in o.values())
            if n and n >= len(o) / 2:
                found.append((where, n))
                return
            for k, v in o.items():
                walk(v, f"{where}.{k}" if where else str(k), depth + 1)

    whole = isinstance(obj, _Stub) and not _is_tensor(obj) and not obj.entries
    if whole:
        return [obj.name], True
    walk(obj, "", 0)
    return [f"'{w}' ({n} tensors)" if w else f"the top level ({n} tensors)" for w, n in found], False


def _refusal(path: str, e: Exception) -> CheckpointError:
    """The refusal of a pickle that would build objects of its own types: what it met, where its weights are,
    and the one command that saves them as plain weights (a catalogue text per case)."""
    base = os.path.basename(path)
    said = clean_text(str(e))
    unsafe = _unsafe_globals(path)
    if not unsafe:
        m = re.search(r"GLOBAL ([\w.]+)", said)
        unsafe = [m.group(1)] if m else []
    if not unsafe:
        first = next((ln.strip() for ln in said.splitlines() if ln.strip() and "Weights only load failed" not in ln), "")
        return CheckpointError.said("checkpoint.refused_unreadable", base=base, why=first[:300] or type(e).__name__)
    met = ", ".join(unsafe[:6]) + (f" and {len(unsafe) - 6} more" if len(unsafe) > 6 else "")
    entries, one_object = _weights_entries(path)
    listed = ", ".join(entries)
    if one_object:
        return CheckpointError.said("checkpoint.refused_object", base=base, met=entries[0], what="c.state_dict()")
    if entries and entries[0].startswith("'") and "." not in entries[0].split("'")[1]:
        return CheckpointError.said("checkpoint.refused_in", base=base, met=met, entries=listed,
                                    what=f"c[{entries[0].split(chr(39))[1]!r}]")
    if entries:
        return CheckpointError.said("checkpoint.refused_in_key", base=base, met=met, entries=listed, what="c[KEY]")
    return CheckpointError.said("checkpoint.refused_key", base=base, met=met, what="c[KEY]")


def sniff(path: str) -> str:
    """What a file is, from its first bytes: "empty", "safetensors", "zip" (torch.save's format),
    "pickle" (legacy torch.save), "html", "lfs" (a Git LFS pointer), "text", "onnx" or "unknown"."""
    with open(path, "rb") as f:
        head = f.read(4096)
        size = os.fstat(f.fileno()).st_size
    if not head:
        return "empty"
    if len(head) >= 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        if 0 < n <= size - 8:
            return "safetensors"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if b"\x00" not in head:
        try:
            text = head.decode("utf-8").lstrip().lower()
        except UnicodeDecodeError:
            text = None
        if text is not None:
            if text.startswith("version https://git-lfs"):
                return "lfs"
            if text.startswith(("<!doctype html", "<html", "<?xml", "<head", "<body")):
                return "html"
            return "text"
    if path.lower().endswith(".onnx"):
        return "onnx"
    return "unknown"


def _not_weights(kind: str, base: str, ext: str) -> Optional[CheckpointError]:
    """A specific error (a catalogue text) for files that cannot be a checkpoint, else None."""
    key = {"empty": "checkpoint.empty", "text": "checkpoint.text", "html": "checkpoint.html",
           "lfs": "checkpoint.lfs"}.get(kind)
    if key:
        return CheckpointError.said(key, base=base)
    if kind == "onnx" or ext == ".onnx":
        return CheckpointError.said("checkpoint.onnx", base=base)
    if ext == ".safetensors" and kind != "safetensors":
        return CheckpointError.said("checkpoint.not_safetensors", base=base)
    if kind == "unknown":
        return CheckpointError.said("checkpoint.unknown", base=base)
    return None


def _is_weights(d) -> bool:
    """A mapping of names to tensors (a state dict); non-tensor bookkeeping values are tolerated."""
    return isinstance(d, Mapping) and bool(d) and sum(isinstance(v, torch.Tensor) for v in d.values()) >= len(d) / 2


def unwrap_checkpoint(raw, path: str = "checkpoint", ema: Optional[bool] = None) -> Checkpoint:
    """The weights entry of a loaded checkpoint object (see `read_checkpoint`)."""
    base = os.path.basename(path)
    if _is_weights(raw) and all(isinstance(v, torch.Tensor) for v in raw.values()):
        if ema:
            raise CheckpointError.said("checkpoint.no_ema_one_set", base=base)
        return Checkpoint(path, strip_wrappers(dict(raw)))
    if not isinstance(raw, Mapping):
        raise CheckpointError.said("checkpoint.no_state_dict", base=base, type=type(raw).__name__)
    live = [k for k in LIVE_KEYS if _is_weights(raw.get(k))]
    emas = [k for k in EMA_KEYS if _is_weights(raw.get(k))]
    nested = None
    if not live and not emas:
        # one more level (e.g. {"model": {"state_dict": ...}})
        for k in LIVE_KEYS:
            if isinstance(raw.get(k), Mapping) and not _is_weights(raw[k]):
                inner = unwrap_checkpoint(raw[k], path, ema=ema)
                inner.entry = f"{k}.{inner.entry}" if inner.entry else k
                nested = inner
                break
        if nested is None:
            others = [k for k, v in raw.items() if _is_weights(v)]
            if len(others) == 1:
                live = others
            else:
                raise CheckpointError.said("checkpoint.no_weights_entry", base=base, known=", ".join(LIVE_KEYS + EMA_KEYS),
                                               entries=", ".join(map(str, list(raw)[:12])))
    if nested is not None:
        nested.meta = {**_meta(raw), **nested.meta}
        return nested
    notes = []
    if ema is False or (ema is None and not emas):
        if not live:
            raise CheckpointError.said("checkpoint.only_ema", base=base, entry=emas[0])
        chosen = live[0]
    else:
        if not emas:
            raise CheckpointError.said("checkpoint.no_ema", base=base, entries=", ".join(map(str, list(raw)[:12])))
        chosen = emas[0]
        if live:
            notes.append(f"using the EMA weights of {base} ('{chosen}'), as timm does; the live weights "
                         f"('{live[0]}') are loaded with --live-weights (Python: ema=False)")
    sd = {k: v for k, v in raw[chosen].items() if isinstance(v, torch.Tensor)}
    entries = {k: "live" for k in live} | {k: "ema" for k in emas}
    return Checkpoint(path, strip_wrappers(sd), chosen, entries, _meta(raw), notes)


def unwrap_state_dict(raw, path: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The weights of an already loaded checkpoint object (EMA where present)."""
    return unwrap_checkpoint(raw, path).state_dict


def _meta(raw: Mapping) -> dict:
    """The entries that are not tensors or weights (args, arch, hyper-parameters, ...)."""
    skip = set(LIVE_KEYS) | set(EMA_KEYS) | {"optimizer", "optimizer_states", "lr_scheduler", "lr_schedulers",
                                             "scaler", "amp_scaler", "callbacks", "loops"}
    return {k: v for k, v in raw.items() if k not in skip and not isinstance(v, torch.Tensor) and not _is_weights(v)}


def strip_wrappers(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove ``module.`` / ``_orig_mod.`` shared by every key, in any nesting and order."""
    changed = True
    while changed and sd:
        changed = False
        for p in WRAPPER_PREFIXES:
            keys = [k for k in sd if k not in BOOKKEEPING_KEYS]
            if keys and all(k.startswith(p) for k in keys):
                sd = {(k[len(p):] if k.startswith(p) else k): v for k, v in sd.items()}
                changed = True
    return sd


def fit_to_model(sd: dict[str, torch.Tensor], model_keys) -> tuple[dict[str, torch.Tensor], str]:
    """The state dict with the prefix removed that makes most of its keys the model's own keys
    (``net.`` of a Lightning module, ``backbone.module.`` …), and that prefix ('' when none helps).
    Keys outside the prefix are dropped only when a prefix is removed (another sub-module of a
    Lightning module, e.g. its loss); averaging bookkeeping (``n_averaged``) is dropped."""
    own = set(model_keys)
    sd = {k: v for k, v in sd.items() if k not in BOOKKEEPING_KEYS or k in own}
    base = sum(k in own for k in sd)
    counts: dict[str, int] = {}
    for k in sd:
        i = k.find(".")
        while i >= 0:
            if k[i + 1:] in own:
                counts[k[:i + 1]] = counts.get(k[:i + 1], 0) + 1
            i = k.find(".", i + 1)
    if not counts:
        return sd, ""
    prefix, n = max(counts.items(), key=lambda t: (t[1], -len(t[0])))
    if n <= base:
        return sd, ""
    return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}, prefix


def load_strict(model: nn.Module, sd: dict[str, torch.Tensor], what: str, hint: str = "") -> None:
    """Load every tensor or fail listing what did not match (never a silent partial load). Wrapper
    prefixes are fitted to the model's keys first; ``hint`` ends the message (e.g. the architectures
    that fit the checkpoint)."""
    own = model.state_dict()
    sd, _ = fit_to_model(sd, own.keys())
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    wrong = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
             for k in own if k in sd and sd[k].shape != own[k].shape]
    if missing or unexpected or wrong:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("wrong shapes", wrong)):
            if items:
                shown = ", ".join(items[:8]) + (f", ... ({len(items) - 8} more)" if len(items) > 8 else "")
                parts.append(f"{len(items)} {label}: {shown}")
        if hint:
            raise CheckpointError(f"checkpoint does not fit {what}: " + "; ".join(parts) + f". {hint}")
        raise CheckpointError.said("checkpoint.does_not_fit", what=what, details="; ".join(parts))
    model.load_state_dict(sd, strict=True)


def checkpoint_info(ck: Checkpoint) -> dict:
    """What a loaded model's ``info["checkpoint"]`` says of its file (shown and exported)."""
    return {"file": ck.name, "entry": ck.entry or "(top level)", "weights_entries": dict(ck.entries),
            "notes": list(ck.notes)}


def classifier_out_features(sd: dict[str, torch.Tensor], classifier_names) -> int | None:
    """Number of classes from the classifier's weight shape in a state dict."""
    names = [classifier_names] if isinstance(classifier_names, str) else list(classifier_names or ())
    for name in names:
        w = sd.get(f"{name}.weight")
        if w is not None and w.dim() == 2:
            return int(w.shape[0])
    return None


__all__ = ["Checkpoint", "read_checkpoint", "read_state_dict", "unwrap_checkpoint", "unwrap_state_dict", "sniff",
           "strip_wrappers", "fit_to_model", "checkpoint_info", "load_strict", "classifier_out_features", "clean_text", "SAFE_TYPE_NAMES"]
