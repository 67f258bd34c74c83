"""The adapter interface and the small hook helpers the adapters share."""
from __future__ import annotations

from typing import Callable

from torch import nn


class Adapter:
    """Makes one kind of attention module record its weights into the current capture session."""

    #: Higher runs first; a specific family adapter outranks the generic timm one.
    priority: int = 0

    def matches(self, module: nn.Module) -> bool:
        raise NotImplementedError

    def install(self, module: nn.Module) -> Callable[[], None]:
        """Instrument `module`; return a callable that restores it exactly."""
        raise NotImplementedError

    def install_model(self, model: nn.Module) -> list[Callable[[], None]]:
        """Model-wide set-up (e.g. global flags); most adapters need none."""
        return []


def set_attr(obj, name: str, value) -> Callable[[], None]:
    """Set ``obj.name = value`` and return the undo (which also removes an attribute that was absent)."""
    had = name in vars(obj)
    old = vars(obj).get(name)
    setattr(obj, name, value)

    def undo():
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)
    return undo


def chain(*undos: Callable[[], None]) -> Callable[[], None]:
    def undo():
        for u in reversed(undos):
            u()
    return undo
