"""Reading users' checkpoints safely and loading them strictly.

Never unpickles arbitrary objects: ``.safetensors`` through safetensors, ``.pth`` / ``.pt`` / ``.bin``
through ``torch.load(weights_only=True)``, which refuses any pickle that would run code.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping

import torch
from torch import nn

from ..errors import CheckpointError

_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module", "net", "model_ema", "state_dict_ema")
_PREFIXES = ("module.", "_orig_mod.", "model.")


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint file, unwrapped from ``state_dict`` / ``model`` nesting and
    ``module.`` (DataParallel) / ``_orig_mod.`` (torch.compile) prefixes."""
    if not os.path.exists(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} is a directory, not a file")
    ext = os.path.splitext(path)[1].lower()
    kind = sniff(path)
    problem = _not_weights(kind, os.path.basename(path), ext)
    if problem:
        raise CheckpointError(problem)
    try:
        if kind == "safetensors":
            from safetensors.torch import load_file
            raw = load_file(path, device="cpu")
        else:
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"refused to load {os.path.basename(path)}: it is not a plain weights file — either it holds Python "
            f"objects other than tensors, whose loading could run code, or it is not a PyTorch checkpoint at all "
            f"(only weights are accepted; torch.load(weights_only=True) said: "
            f"{str(e).splitlines()[0]})") from None
    except Exception as e:  # noqa: BLE001 - report any decode failure as the user's file problem
        said = str(e).splitlines()[0].split(". ")[0][:200] if str(e) else ""
        if kind in ("zip", "pickle", "safetensors"):
            raise CheckpointError(f"cannot read checkpoint {os.path.basename(path)}: it is truncated or corrupt "
                                  f"({type(e).__name__}: {said}) — an incomplete upload or download?") from None
        raise CheckpointError(f"cannot read checkpoint {os.path.basename(path)}: {type(e).__name__}: {said}") from None
    return unwrap_state_dict(raw, path)


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


def _not_weights(kind: str, base: str, ext: str) -> str:
    """A specific message for files that cannot be a checkpoint, else ''."""
    if kind == "empty":
        return f"{base} is empty (0 bytes): the upload or download did not finish"
    if kind == "text":
        return f"{base} is a text file, not a checkpoint (weights are binary: .safetensors, .pth, .pt, .bin)"
    if kind == "html":
        return (f"{base} is a web page (HTML), not a checkpoint — probably a download that saved an error or "
                f"login page instead of the file")
    if kind == "lfs":
        return (f"{base} is a Git LFS pointer, not the weights: fetch the real file (`git lfs pull`) and "
                f"load that")
    if kind == "onnx" or ext == ".onnx":
        return f"{base} is an ONNX model, not a PyTorch checkpoint: load it as a model with --model onnx:PATH"
    if ext == ".safetensors" and kind != "safetensors":
        return f"{base} is not a safetensors file (its header is not a safetensors header)"
    if kind == "unknown":
        return (f"{base} is not a checkpoint this tool can read: neither safetensors nor a torch.save file "
                f"(.pth / .pt / .bin)")
    return ""


def unwrap_state_dict(raw, path: str = "checkpoint") -> dict[str, torch.Tensor]:
    sd = raw
    for _ in range(3):
        if isinstance(sd, Mapping) and not _all_tensors(sd):
            nested = next((sd[k] for k in _NESTED_KEYS if k in sd and isinstance(sd[k], Mapping)), None)
            if nested is None:
                break
            sd = nested
    if not isinstance(sd, Mapping) or not sd:
        raise CheckpointError(f"{os.path.basename(path)} holds no state dict (a mapping of names to tensors)")
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise CheckpointError(f"{os.path.basename(path)} holds no tensors")
    for prefix in _PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def _all_tensors(d: Mapping) -> bool:
    return all(isinstance(v, torch.Tensor) for v in d.values())


def load_strict(model: nn.Module, sd: dict[str, torch.Tensor], what: str) -> None:
    """Load every tensor or fail listing what did not match (never a silent partial load)."""
    own = model.state_dict()
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
        raise CheckpointError(f"checkpoint does not fit {what}: " + "; ".join(parts))
    model.load_state_dict(sd, strict=True)


def classifier_out_features(sd: dict[str, torch.Tensor], classifier_names) -> int | None:
    """Number of classes from the classifier's weight shape in a state dict."""
    names = [classifier_names] if isinstance(classifier_names, str) else list(classifier_names or ())
    for name in names:
        w = sd.get(f"{name}.weight")
        if w is not None and w.dim() == 2:
            return int(w.shape[0])
    return None
