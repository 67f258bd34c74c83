"""Every registered method's localisation and faithfulness on the demo models, through the same path users take.

Models load by name (`load_model`), images go through the model's own preprocessing, maps come
from `capture` + `attention.methods.compute_map` for every method of the registry (plus
``heatmap``, the map the model shows first): exactly what the app and the CLI show. Scores:
`quality.evaluate_maps` (accuracy, pointing game, AUROC against the ground-truth masks) and, on
the first ``faith_n`` images, `attention.faithfulness.perturbation_curves` (deletion and insertion
AUC of the top-1 class probability, ``steps`` steps, blur baseline; lower deletion / higher
insertion is more faithful). Images: the shapes set (`make_dataset`) or a folder laid out like
`shapes.write_dataset` writes it (``images/``, ``masks/`` with the same file names, optional
``labels.csv`` with ``file,label``).
"""
from __future__ import annotations

import csv
import os
from typing import Callable, Iterable, Optional

import numpy as np
import torch
from PIL import Image

from ..errors import MethodNotDefinedError
from ..faithfulness import perturbation_curves
from ..methods import compute_map, default_method, method_names
from ..models import LoadedModel, load_model
from .quality import evaluate_maps
from .shapes import make_dataset

HEATMAP = "heatmap"


def default_maps() -> list[str]:
    """``heatmap`` (the default map) and every registered method, in menu order."""
    return [HEATMAP] + method_names()


DEFAULT_MAPS = tuple(default_maps())


def batch_tensor(lm: LoadedModel, images: np.ndarray) -> torch.Tensor:
    """The model's own preprocessing applied to each (H, W, 3) uint8 image."""
    return torch.cat([lm.prepare(Image.fromarray(im)).tensor for im in images])


def load_folder(path: str, class_names: Optional[list[str]] = None):
    """(images (N, H, W, 3) uint8, masks (N, H, W) uint8, labels (N,) or None) from a folder with
    ``images/`` and ``masks/`` (same file names) and an optional ``labels.csv`` (``file,label``)."""
    img_dir, mask_dir = os.path.join(path, "images"), os.path.join(path, "masks")
    if not os.path.isdir(img_dir) or not os.path.isdir(mask_dir):
        raise FileNotFoundError(f"{path}: expected the folders images/ and masks/ (same file names)")
    names = sorted(f for f in os.listdir(img_dir) if os.path.exists(os.path.join(mask_dir, f)))
    if not names:
        raise FileNotFoundError(f"{path}: no image in images/ has a mask of the same name in masks/")
    images = np.stack([np.asarray(Image.open(os.path.join(img_dir, f)).convert("RGB")) for f in names])
    masks = np.stack([np.asarray(Image.open(os.path.join(mask_dir, f)).convert("L")) for f in names])
    labels = None
    lab_path = os.path.join(path, "labels.csv")
    if os.path.exists(lab_path) and class_names:
        with open(lab_path, newline="") as f:
            by_file = {r["file"]: r["label"] for r in csv.DictReader(f)}
        labels = np.array([class_names.index(by_file[f]) if by_file.get(f) in class_names else -1 for f in names])
    return images, masks, labels


def method_maps(lm: LoadedModel, x: torch.Tensor, result, name: str) -> torch.Tensor:
    """(B, gh, gw) of one map name for a batch, through `compute_map` (what the app and CLI call)."""
    method = default_method(result) if name == HEATMAP else name
    return compute_map(method, result, model=lm.model, x=x).maps.detach().float()


def evaluate(names: Iterable[str], n: int = 1000, seed: int = 999, maps: Optional[Iterable[str]] = None,
             batch_size: int = 100, progress: Optional[Callable[[str], None]] = None, faith_n: int = 0,
             steps: int = 16, folder: Optional[str] = None) -> list[dict]:
    """Rows ``{"model", "map", "accuracy", "pointing_game", "auroc", "deletion_auc", "insertion_auc", ...}``
    (``faith_n=0``: no faithfulness columns); undefined maps are left out (reported to `progress`)."""
    maps = list(maps) if maps else default_maps()
    rows = []
    for name in names:
        lm = load_model(name)
        if folder:
            images, masks, labels = load_folder(folder, list(lm.class_names))
        else:
            images, masks, labels = make_dataset(n, seed)
        N = len(images)
        xs = [batch_tensor(lm, images[i:i + batch_size]) for i in range(0, N, batch_size)]
        results = [lm.capture(x) for x in xs]
        logits = torch.cat([r.logits for r in results])
        fn = min(faith_n, N)
        for map_name in maps:
            try:
                m = torch.cat([method_maps(lm, x, r, map_name) for x, r in zip(xs, results)])
            except MethodNotDefinedError as e:
                if progress:
                    progress(f"{name}: {map_name} not defined ({str(e).split(';')[0]})")
                continue
            q = evaluate_maps(m.numpy(), masks, labels, logits if labels is not None else None)
            row = {"model": name, "map": map_name, **q}
            if fn:
                x_all = torch.cat(xs)[:fn]
                c = perturbation_curves(lm.model, x_all, m[:fn], None, steps=steps, batch_size=128)
                row.update({"faith_n": fn, "deletion_auc": float(np.mean(c.deletion_auc)),
                            "insertion_auc": float(np.mean(c.insertion_auc))})
            rows.append(row)
            if progress:
                extra = (f" deletion {row['deletion_auc']:.3f} insertion {row['insertion_auc']:.3f}" if fn else "")
                progress(f"{name} {map_name}: pointing {q['pointing_game']:.3f} AUROC {q['auroc']:.3f}{extra}")
    return rows


def markdown(rows: list[dict]) -> str:
    faith = any("deletion_auc" in r for r in rows)
    head = "| model | map | accuracy | pointing game | AUROC |" + (" deletion AUC ↓ | insertion AUC ↑ |" if faith else "")
    out = [head, "|---|---|---|---|---|" + ("---|---|" if faith else "")]
    for r in rows:
        label = r["map"] + (" (default)" if r["map"] == HEATMAP else "")
        acc = f"{r['accuracy']:.3f}" if r.get("accuracy") is not None else "–"
        line = f"| {r['model']} | {label} | {acc} | {r['pointing_game']:.3f} | {r['auroc']:.3f} |"
        if faith:
            line += (f" {r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} |" if "deletion_auc" in r else " – | – |")
        out.append(line)
    return "\n".join(out)
