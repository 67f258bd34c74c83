"""The Learn tab: the lesson on attention (its steps: `viz_app.learn.steps`, one file each)."""
from __future__ import annotations

from ..learn import build_learn_tab, on_learn_opened
from . import Tab


def wire(events, ui) -> None:
    """The lesson wires its own steps when it is built (`viz_app.learn`)."""


TAB = Tab("learn", "Learn", 10, build_learn_tab, wire, on_select=on_learn_opened, own_tab=True)
