"""No code from a model folder, ever: a folder (or hub repository) that asks to run its own Python is refused.

A Hugging Face ``config.json`` (or ``preprocessor_config.json``) with an ``auto_map`` entry names
classes in ``.py`` files next to it; transformers runs them when ``trust_remote_code`` is set, and
*asks on the terminal* when it is left unset ("Do you wish to run the custom code? [y/N]"). We pass
``trust_remote_code=False`` on every call, and refuse such a folder before transformers sees it, with
a message instead of a prompt: the folder could hold anything, and one keystroke should not run it.
"""
from __future__ import annotations

import json
import os

from ..errors import CheckpointError

#: the files whose ``auto_map`` transformers follows into the folder's own code
CONFIG_FILES = ("config.json", "preprocessor_config.json", "processor_config.json", "tokenizer_config.json")


def code_references(folder: str) -> list[str]:
    """``file: auto_map -> module.Class`` for every class the folder's configs want loaded from its own code."""
    found = []
    for name in CONFIG_FILES:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as f:
                cfg = json.load(f)
        except (OSError, ValueError):
            continue          # an unreadable config gets its own message from the loader
        auto_map = cfg.get("auto_map") if isinstance(cfg, dict) else None
        if auto_map:
            targets = auto_map.values() if isinstance(auto_map, dict) else [auto_map]
            shown = sorted({t if isinstance(t, str) else str(next((x for x in t if x), t)) for t in targets})
            found.append(f"{name}: auto_map -> {', '.join(shown)[:160]}")
    return found


def refuse_remote_code(folder: str, shown_as: str | None = None) -> None:
    """Raise `CheckpointError` when the folder asks for its own code to be run (``auto_map``)."""
    refs = code_references(folder)
    if refs:
        raise CheckpointError(
            f"{shown_as or folder}: this model needs its own Python code ({'; '.join(refs)}). "
            f"attention-viz never runs code from a model folder or repository (trust_remote_code is always off); "
            f"use a model whose architecture transformers, timm, torchvision or open_clip already ship")
