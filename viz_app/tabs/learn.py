"""The Learn tab: the lesson on attention (its steps: `viz_app.learn.steps`, one file each)."""
from __future__ import annotations

from . import Tab


def build(ui, events):
    from ..learn import build_learn_tab
    return build_learn_tab(ui, events)


def wire(events, ui) -> None:
    """The lesson wires its own steps when it is built (`viz_app.learn`)."""


def _opened():
    from ..learn import on_learn_opened
    return on_learn_opened


TAB = Tab("learn", "Learn", 10, build, wire, on_select=_opened(), own_tab=True)
