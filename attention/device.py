"""Where a model runs: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, and the device and dtype of a model.

``auto`` picks CUDA where ``torch.cuda.is_available()``, else Apple's MPS where
``torch.backends.mps.is_available()``, else the CPU. A device that is named but not available (no
CUDA build, no such GPU index, no MPS) is a `DeviceUnavailableError`: one line saying which and what
there is (the CLIs print it and exit 2).

The model's device and floating dtype are those of its first parameter (or buffer); `capture` moves
its input there, so a caller never has to. Maps are decided in float32 whatever the model's dtype
(float16 / bfloat16 models included), and pictures are drawn on the CPU.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn

from .errors import UserError

CHOICES = ("auto", "cpu", "cuda", "cuda:N", "mps")


class DeviceUnavailableError(UserError):
    """A device was asked for that this machine does not have."""


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def available() -> list[str]:
    """The devices this machine can run on, e.g. ``["cpu", "cuda:0", "cuda:1"]``."""
    out = ["cpu"]
    if torch.cuda.is_available():
        out += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if _mps_available():
        out.append("mps")
    return out


def parse_device(spec: Union[None, str, torch.device]) -> str:
    """``spec`` checked for its form only (auto, cpu, cuda, cuda:N, mps), lower-cased: for a device that
    is resolved elsewhere (each Ray worker on its own node)."""
    s = (str(spec) if spec is not None else "auto").strip().lower()
    if s == "auto":
        return s
    try:
        dev = torch.device(s)
    except (RuntimeError, ValueError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda", "mps"):
        raise DeviceUnavailableError(f"unknown device {spec!r}: use one of {', '.join(CHOICES)}")
    return s


def resolve_device(spec: Union[None, str, torch.device] = "auto") -> torch.device:
    """The `torch.device` for ``spec`` (module docstring); DeviceUnavailableError where it is missing."""
    if isinstance(spec, torch.device):
        spec = str(spec)
    s = (spec or "auto").strip().lower()
    if s == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("mps") if _mps_available() else torch.device("cpu")
    try:
        dev = torch.device(s)
    except (RuntimeError, ValueError):
        raise DeviceUnavailableError(f"unknown device {spec!r}: use one of {', '.join(CHOICES)}") from None
    have = ", ".join(available())
    if dev.type == "cpu":
        return dev
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceUnavailableError(f"device {spec!r} is not available: this machine (or this torch build) "
                                         f"has no CUDA GPU; available: {have}")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailableError(f"device {spec!r} is not available: there are {torch.cuda.device_count()} "
                                         f"CUDA GPU(s); available: {have}")
        return dev
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceUnavailableError(f"device {spec!r} is not available: no Apple MPS here; available: {have}")
        return dev
    raise DeviceUnavailableError(f"unknown device {spec!r}: use one of {', '.join(CHOICES)}")


def model_device(model: nn.Module) -> Optional[torch.device]:
    """The device of the model's first parameter (or buffer); None for a model without tensors."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return None


def model_dtype(model: nn.Module) -> Optional[torch.dtype]:
    """The dtype of the model's first floating-point parameter; None if it has none."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return None


def to_model(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``x`` on the model's device and, for a floating input, in the model's floating dtype."""
    dev, dt = model_device(model), model_dtype(model)
    if dev is not None and x.device != dev:
        x = x.to(dev)
    if dt is not None and x.is_floating_point() and x.dtype != dt:
        x = x.to(dt)
    return x


def describe(device: torch.device) -> str:
    """A short name for reports: ``cpu``, ``cuda:0 (NVIDIA H100)``, ``mps``."""
    if device.type == "cuda":
        i = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{i} ({torch.cuda.get_device_name(i)})"
    return str(device)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (timings); a no-op on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


__all__ = ["resolve_device", "parse_device", "available", "model_device", "model_dtype", "to_model", "describe", "synchronize",
           "DeviceUnavailableError", "CHOICES"]
