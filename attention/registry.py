"""One registry idiom for everything the library enumerates: families, methods, model sources, audit engines.

A `Registry` maps names to entries in registration order. ``register`` works as a decorator
(``@REG.register``) or a call (``REG.register(obj)``, ``REG.register(obj, name="x")``); ``get`` fails
with the list of known names; ``discover(package)`` imports every module of a package (pkgutil), so
that a new file registers itself without an import line anywhere else.

`entry_point(group, name)` loads an installed plugin (``[project.entry-points."<group>"]``), which is
how the library reaches the app (``attention_viz.commands``, ``attention_viz.ui``) without importing it.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Callable, Generic, Iterator, Optional, TypeVar

from .errors import UserError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind, in registration order (later registrations of a name replace it in place)."""

    def __init__(self, kind: str, key: Optional[Callable[[T], str]] = None):
        self.kind = kind
        self._key = key or (lambda obj: getattr(obj, "name", None) or getattr(obj, "__name__", ""))
        self._entries: dict[str, T] = {}

    def register(self, obj: Optional[T] = None, *, name: Optional[str] = None):
        """Add `obj` under `name` (default: its ``name`` attribute, else ``__name__``); returns `obj`.
        Without `obj`, returns a decorator."""
        if obj is None:
            return lambda o: self.register(o, name=name)
        key = name or self._key(obj)
        if not key:
            raise ValueError(f"a {self.kind} needs a name")
        self._entries[key] = obj
        return obj

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(f"unknown {self.kind} {name!r}; available: {', '.join(self.names()) or 'none'}") from None

    def names(self) -> list[str]:
        return list(self._entries)

    def values(self) -> list[T]:
        return list(self._entries.values())

    def __iter__(self) -> Iterator[T]:
        return iter(self.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __repr__(self) -> str:
        return f"<Registry {self.kind}: {', '.join(self.names())}>"


def discover(package: str, skip: tuple[str, ...] = (), suffix: str = "") -> list[str]:
    """Import every module of `package` (a dotted name) whose name ends with `suffix`, in name order, except
    `skip` and private ones (``_x``); returns their names. Each module registers what it defines on import."""
    pkg = importlib.import_module(package)
    done = []
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name in skip or info.name.startswith("_") or not info.name.endswith(suffix):
            continue
        importlib.import_module(f"{package}.{info.name}")
        done.append(info.name)
    return done


class PluginMissingError(UserError):
    """An entry point the library looks up is not installed (e.g. the app package)."""


def entry_point(group: str, name: str, what: str = "") -> Any:
    """The object installed under ``[project.entry-points."<group>"] <name> = "module:attr"``, loaded.

    Raises `PluginMissingError` saying what to install when nothing is registered under that name."""
    from importlib.metadata import entry_points
    found = [ep for ep in entry_points(group=group) if ep.name == name]
    if not found:
        raise PluginMissingError(
            f"{what or name!s} is not installed (no entry point {name!r} in group {group!r}); it comes with the "
            f"attention-viz app package: `pip install -e .` in the project folder (or `pip install attention-viz`)")
    return found[0].load()


__all__ = ["Registry", "discover", "entry_point", "PluginMissingError"]
