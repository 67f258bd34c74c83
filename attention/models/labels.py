"""Class names: a user's labels file, ImageNet-1k names for 1000 classes, or numbered classes."""
from __future__ import annotations

import json
import os
from typing import Optional

from ..errors import LabelsError


def read_labels(path: str) -> list[str]:
    """A JSON list, or a text file with one name per line (blank lines at the end ignored)."""
    if not os.path.isfile(path):
        raise LabelsError(f"labels file {path!r} does not exist")
    try:
        text = open(path, encoding="utf-8").read()
    except UnicodeDecodeError:
        raise LabelsError(f"labels file {os.path.basename(path)} is not UTF-8 text") from None
    if path.lower().endswith(".json") or text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelsError(f"labels file {os.path.basename(path)} is not valid JSON: {e}") from None
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            raise LabelsError(f"labels file {os.path.basename(path)} must hold a JSON list of names")
        return [str(n) for n in names]
    names = text.splitlines()
    while names and not names[-1].strip():
        names.pop()
    return [n.strip() for n in names]


def imagenet_names() -> list[str]:
    """Short ImageNet-1k names in timm's (standard) class order: "tench", "goldfish", ..."""
    from timm.data import ImageNetInfo
    return [d.split(",")[0].strip() for d in ImageNetInfo("imagenet-1k").label_descriptions()]


def class_names_for(num_classes: int, labels_path: Optional[str] = None, stored: Optional[list[str]] = None,
                    stored_where: str = "") -> list[str]:
    """The labels file's names; else the names a checkpoint stores (``stored``, found at
    ``stored_where``); else ImageNet's for 1000 classes; else "class i". A count that differs from the
    classifier's is an error naming both."""
    if not labels_path and stored:
        if len(stored) != num_classes:
            raise LabelsError(f"the checkpoint's {stored_where or 'class names'} lists {len(stored)} names but its "
                              f"classifier has {num_classes} classes: give a labels file with {num_classes} names")
        return list(stored)
    if labels_path:
        names = read_labels(labels_path)
        if len(names) != num_classes:
            raise LabelsError(f"labels file {os.path.basename(labels_path)} has {len(names)} names but the "
                              f"model has {num_classes} classes")
        return names
    if num_classes == 1000:
        return imagenet_names()
    return [f"class {i}" for i in range(num_classes)]
