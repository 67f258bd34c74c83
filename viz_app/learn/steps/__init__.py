"""The lesson's steps, one module each: a module here defines ``STEP = MyStep()`` (a `viz_app.learn.step.Step`);
`steps()` finds them all, in lesson order. Adding a step: one file here (and its picture module in
`attention.lesson`)."""
from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

from ..step import Step


@lru_cache(maxsize=1)
def steps() -> tuple[Step, ...]:
    """Every step of this package, in lesson order."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(module, "STEP", None), Step):
            found.append(module.STEP)
    ordered = tuple(sorted(found, key=lambda s: s.order))
    ids = [s.id for s in ordered]
    if len(set(ids)) != len(ids):
        raise RuntimeError(f"two lesson steps share an id: {ids}")
    return ordered


def step_named(step_id: str) -> Step:
    for s in steps():
        if s.id == step_id:
            return s
    return steps()[0]
