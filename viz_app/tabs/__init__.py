"""The page's tabs, one module each. A module of this package defines ``TAB = Tab(...)``: its id, title and
place, `build` (the layout, components registered on `ui` by name) and `wire` (its events, through
`viz_app.events`); `tabs()` finds them all, in order. Adding a tab: one file here."""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass
from typing import Callable, Optional


@dataclass(frozen=True)
class Tab:
    id: str
    title: str
    order: int
    build: Callable                        # build(ui, services) inside the tab
    wire: Callable                         # wire(events, ui) after the whole page is laid out
    #: a handler run after every change of the page's (model, image): refresh or clear what depends on them
    on_key: Optional[Callable] = None
    #: a handler run when the tab is opened
    on_select: Optional[Callable] = None
    #: build the `gr.Tab` itself (the Learn tab has its own); default: ``gr.Tab(title, id=id)`` around `build`
    own_tab: bool = False


def tabs() -> list[Tab]:
    """Every tab of this package, in page order."""
    found = []
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(module, "TAB", None), Tab):
            found.append(module.TAB)
    return sorted(found, key=lambda t: t.order)
