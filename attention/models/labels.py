"""Class names: a user's labels file, ImageNet-1k names for 1000 classes, or numbered classes."""
from __future__ import annotations

import json
import os
from typing import Optional

from ..errors import LabelsError


def read_labels(path: str) -> list[str]:
    """A JSON list, or a text file with one name per line (blank lines at the end ignored)."""
    if not os.path.isfile(path):
        raise LabelsError.said("labels.no_such_file", path=repr(path))
    try:
        text = open(path, encoding="utf-8").read()
    except UnicodeDecodeError:
        raise LabelsError.said("labels.not_utf8", name=os.path.basename(path)) from None
    if path.lower().endswith(".json") or text.lstrip().startswith("["):
        try:
            names = json.loads(text)
        except json.JSONDecodeError as e:
            raise LabelsError.said("labels.bad_json", name=os.path.basename(path), error=e) from None
        if not isinstance(names, list) or not all(isinstance(n, (str, int)) for n in names):
            raise LabelsError.said("labels.not_a_list", name=os.path.basename(path))
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
            counts = {"stored": len(stored), "classes": num_classes}
            if stored_where:
                raise LabelsError.said("labels.stored_count", where=stored_where, **counts)
            raise LabelsError.said("labels.stored_count_unnamed", **counts)
        return list(stored)
    if labels_path:
        names = read_labels(labels_path)
        if len(names) != num_classes:
            raise LabelsError.said("labels.count", name=os.path.basename(labels_path), names=len(names),
                                   classes=num_classes)
        return names
    if num_classes == 1000:
        return imagenet_names()
    return [f"class {i}" for i in range(num_classes)]
