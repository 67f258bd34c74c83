"""Reading an audit's input: which images, their labels and their object masks.

Three layouts are read as they are:

* the shapes dataset's own layout (`attention.demo.shapes.write_dataset`): ``DIR/images/``,
  ``DIR/masks/`` (same file names) and ``DIR/labels.csv`` (header ``file,label``);
* a CSV file with a header naming ``path`` (or ``file``/``image``), optionally ``label`` and
  ``mask``; relative paths are relative to the CSV's folder;
* a folder of images: with one sub-folder per class (torchvision's ImageFolder convention) the
  sub-folder names are the labels, otherwise there are no labels.

``--masks DIR`` adds masks to any layout: the mask of ``a/b/x.jpg`` is the file of ``DIR`` with the
same relative path or stem (any image extension). Items are sorted by their id (the path relative
to the data root), so a dataset is always cut into the same shards.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from typing import Optional

from ..errors import UserError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
PATH_COLUMNS = ("path", "file", "image", "filename")


@dataclass(frozen=True)
class Item:
    """One image of the audit: ``id`` (relative path, unique), absolute ``path``, ``label`` (a class
    name or index as text, or None) and ``mask`` (absolute path or None)."""

    id: str
    path: str
    label: Optional[str] = None
    mask: Optional[str] = None

    def to_dict(self) -> dict:
        return {"id": self.id, "path": self.path, "label": self.label, "mask": self.mask}


@dataclass
class Dataset:
    items: list[Item]
    layout: str            # "shapes", "csv", "folder", "class-folders"
    root: str

    @property
    def has_labels(self) -> bool:
        return any(it.label is not None for it in self.items)

    @property
    def has_masks(self) -> bool:
        return any(it.mask is not None for it in self.items)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _rel(path: str, root: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _mask_index(mask_dir: str) -> dict[str, str]:
    """relative path without extension -> mask path (and plain stem -> path where unambiguous)."""
    if not os.path.isdir(mask_dir):
        raise UserError(f"--masks {mask_dir}: no such folder")
    index, stems = {}, {}
    for dirpath, _, files in os.walk(mask_dir):
        for f in files:
            if _is_image(f):
                p = os.path.join(dirpath, f)
                index[os.path.splitext(_rel(p, mask_dir))[0]] = p
                stems.setdefault(os.path.splitext(f)[0], []).append(p)
    for s, ps in stems.items():
        if len(ps) == 1:
            index.setdefault(s, ps[0])
    return index


def _attach_masks(items: list[Item], mask_dir: Optional[str]) -> list[Item]:
    if not mask_dir:
        return items
    index = _mask_index(mask_dir)
    out = []
    for it in items:
        key = os.path.splitext(it.id)[0]
        m = index.get(key) or index.get(os.path.basename(key))
        out.append(Item(it.id, it.path, it.label, m))
    if not any(it.mask for it in out):
        raise UserError(f"--masks {mask_dir}: no mask matches any image (a mask has the image's relative path or file name)")
    return out


def _read_csv(path: str, root: str, path_keys=PATH_COLUMNS) -> list[Item]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise UserError(f"{path}: empty CSV")
    header = [h.strip().lower() for h in rows[0]]
    col = next((header.index(k) for k in path_keys if k in header), None)
    if col is None:
        raise UserError(f"{path}: the header must name the image column ({', '.join(PATH_COLUMNS)}); got {rows[0]}")
    lab = header.index("label") if "label" in header else None
    msk = header.index("mask") if "mask" in header else None
    items, seen = [], set()
    for n, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) <= col:
            raise UserError(f"{path}: line {n} has no image path")
        p = row[col].strip()
        full = p if os.path.isabs(p) else os.path.normpath(os.path.join(root, p))
        iid = _rel(full, root) if not os.path.isabs(p) else p
        if iid in seen:
            raise UserError(f"{path}: line {n}: {p} is listed twice")
        seen.add(iid)
        label = row[lab].strip() if lab is not None and len(row) > lab and row[lab].strip() else None
        mask = None
        if msk is not None and len(row) > msk and row[msk].strip():
            m = row[msk].strip()
            mask = m if os.path.isabs(m) else os.path.normpath(os.path.join(root, m))
        items.append(Item(iid, full, label, mask))
    if not items:
        raise UserError(f"{path}: no images listed")
    return items


def read_dataset(data: str, masks: Optional[str] = None) -> Dataset:
    """The items of ``data`` (a folder or a CSV file; layouts in the module docstring)."""
    data = os.path.abspath(data)
    if os.path.isfile(data):
        if not data.lower().endswith((".csv", ".tsv", ".txt")):
            raise UserError(f"--data {data}: give a folder of images or a CSV of path,label[,mask]")
        items, layout, root = _read_csv(data, os.path.dirname(data)), "csv", os.path.dirname(data)
    elif os.path.isdir(data):
        root = data
        img_dir, csv_path = os.path.join(data, "images"), os.path.join(data, "labels.csv")
        if os.path.isdir(img_dir) and os.path.isfile(csv_path):
            # the shapes layout: labels.csv names files inside images/, masks/ holds the same names
            items = [Item(it.id, it.path, it.label, None) for it in _read_csv(csv_path, img_dir)]
            layout = "shapes"
            if masks is None and os.path.isdir(os.path.join(data, "masks")):
                masks = os.path.join(data, "masks")
        else:
            subdirs = sorted(d for d in os.listdir(data) if os.path.isdir(os.path.join(data, d)) and not d.startswith("."))
            top = [f for f in os.listdir(data) if _is_image(f) and os.path.isfile(os.path.join(data, f))]
            items = []
            if subdirs and not top:
                layout = "class-folders"
                for d in subdirs:
                    for dirpath, _, files in os.walk(os.path.join(data, d)):
                        for f in files:
                            if _is_image(f):
                                p = os.path.join(dirpath, f)
                                items.append(Item(_rel(p, data), p, d, None))
            else:
                layout = "folder"
                items = [Item(f, os.path.join(data, f), None, None) for f in top]
            if not items:
                raise UserError(f"--data {data}: no images found ({', '.join(IMAGE_EXTENSIONS)})")
    else:
        raise UserError(f"--data {data}: no such file or folder")
    items = _attach_masks(items, masks)
    items.sort(key=lambda it: it.id)
    return Dataset(items, layout, root)


def label_indices(items: list[Item], class_names: list[str]) -> list[int]:
    """Class index per item (-1 without a label). A label is a class name of the model or an index."""
    lookup = {n: i for i, n in enumerate(class_names)}
    lower = {n.lower(): i for i, n in enumerate(class_names)}
    out, unknown = [], []
    for it in items:
        if it.label is None:
            out.append(-1)
            continue
        k = lookup.get(it.label, lower.get(it.label.lower()))
        if k is None and it.label.lstrip("-").isdigit() and 0 <= int(it.label) < len(class_names):
            k = int(it.label)
        if k is None:
            unknown.append(it.label)
            out.append(-1)
        else:
            out.append(k)
    if unknown:
        names = sorted(set(unknown))
        shown = ", ".join(names[:8]) + (" ..." if len(names) > 8 else "")
        raise UserError(f"{len(unknown)} label(s) are not classes of the model ({shown}); the model's classes: "
                        f"{', '.join(class_names[:10])}{' ...' if len(class_names) > 10 else ''} (give class names or "
                        f"indices, --labels with the model's class names, or --group-by-folder to read the folders as "
                        f"groups, not classes)")
    return out


__all__ = ["Item", "Dataset", "read_dataset", "label_indices", "IMAGE_EXTENSIONS"]
