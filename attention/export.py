"""The export contract: one ``<stem>.npz`` + ``<stem>.json`` per image.

npz: ``input`` (1, 3, H, W) float32, exactly the tensor fed to the model; ``logits`` (1, C);
``attn_00``, ``attn_01``, ... one per captured layer in forward order ((1, heads, Nq, Nk), or
(nW, heads, n, n) for windowed attention); ``layer_names``; ``num_prefix_tokens``; ``grid``
[gh, gw]; ``heatmap`` (gh, gw), the map shown first; ``rollout`` (gh, gw) where defined; and one
(gh, gw) array per extra method asked for (any name of `attention.methods.method_names()`), except
``raw``: (layers, heads, gh, gw), the CLS -> patch attention of every layer and head
(`attention.methods.raw.raw_cls_maps`).
json: top-5 ``predictions``, the model, preprocessing (with the photo -> input geometry), the layers
and the token layout.
"""
from __future__ import annotations

import json
import os
from typing import Iterable, Optional

import numpy as np
import torch

from .capture import CaptureResult
from .errors import MethodNotDefinedError
from .methods import compute_map, default_method, get_method
from .models import LoadedModel
from .preprocess import PreparedImage


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def model_layout(result: CaptureResult) -> tuple[int, list[int]]:
    """(num_prefix_tokens, [gh, gw]) of the map grid the model's heatmap is drawn on."""
    spatial = [m for m in result.maps if m.layout is not None and m.layout.num_patches]
    if result.tokens.grid is not None:
        return len(result.tokens.prefix_names), list(result.tokens.grid)
    last = spatial[-1].layout if spatial else None
    return (last.num_prefix, list(last.grid)) if last else (0, [0, 0])


def method_arrays(loaded: LoadedModel, prepared: PreparedImage, result: CaptureResult,
                  methods: Iterable[str], **context) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Extra arrays for ``--methods`` (each (gh, gw), through `compute_map`); methods undefined for the
    model are reported, not faked. ``context``: target, query, layer, start_layer, end_layer, head."""
    arrays, skipped = {}, {}
    for name in methods:
        try:
            if name == "raw":
                # the README's contract: (layers, heads, gh, gw), CLS -> patch attention of every head
                from .methods.raw import raw_cls_maps
                arrays[name] = _np(raw_cls_maps(result))[0]
                continue
            out = compute_map(name, result, model=loaded.model, x=prepared.tensor, **context)
        except MethodNotDefinedError as e:
            skipped[name] = str(e)
            continue
        arrays[name] = _np(out.maps)[0]
    return arrays, skipped


def export_arrays(loaded: LoadedModel, prepared: PreparedImage, result: CaptureResult,
                  methods: Iterable[str] = (), **context) -> tuple[dict[str, np.ndarray], dict]:
    num_prefix, _ = model_layout(result)
    default = default_method(result)
    heatmap = _np(compute_map(default, result).maps)[0]
    arrays: dict[str, np.ndarray] = {
        "input": _np(prepared.tensor),
        "logits": _np(result.logits),
        "layer_names": np.array(result.layer_names, dtype=str),
        # per layer: "known" (family descriptor), "inferred" (fitted to the shapes) or "unknown"
        "layout_sources": np.array([m.layout_source for m in result.maps], dtype=str),
        "num_prefix_tokens": np.array(num_prefix, dtype=np.int64),
        # the grid the maps are drawn on (for Swin: the last stage's, where the heatmap lives)
        "grid": np.array(heatmap.shape, dtype=np.int64),
    }
    for i, m in enumerate(result.maps):
        arrays[f"attn_{i:02d}"] = _np(m.weights)
    arrays["heatmap"] = heatmap
    methods = list(methods)
    if "rollout" not in methods and get_method("rollout").defined_for(result) is None:
        arrays["rollout"] = _np(compute_map("rollout", result).maps)[0]     # always there where defined
    extra, skipped = method_arrays(loaded, prepared, result, methods, **context)
    arrays.update(extra)
    return arrays, skipped


def export_metadata(loaded: LoadedModel, prepared: PreparedImage, result: CaptureResult,
                    image_path: Optional[str] = None, notes: Iterable[str] = (), skipped: Optional[dict] = None) -> dict:
    return {
        "image": image_path,
        "model": loaded.name,
        "model_source": loaded.source,
        "weights": loaded.info.get("weights"),
        "checkpoint": loaded.info.get("checkpoint"),
        "loading_notes": loaded.load_notes(),
        "num_classes": loaded.num_classes,
        "predictions": [{"label": p["label"], "index": p["index"], "probability": p["probability"]}
                        for p in loaded.top_k(result.logits, 5)[0]],
        # why `predictions` is empty (a backbone without classifier, a zero-shot model without classes)
        "no_predictions_reason": loaded.predictions_message() or None,
        "preprocessing": {**loaded.preprocess.describe(), "geometry": prepared.geometry.to_dict()},
        "tokens": {"prefix_names": list(result.tokens.prefix_names),
                   "grid": list(result.tokens.grid) if result.tokens.grid else None,
                   "stride": list(result.tokens.stride)},
        "layers": [m.describe() for m in result.maps],
        "notes": list(notes),
        "methods_not_defined": skipped or {},
    }


def unique_stem(path: str, taken: set[str]) -> str:
    """File stem for an image's outputs: its own name, made unique; never a path (no traversal)."""
    stem = os.path.splitext(os.path.basename(path))[0].strip() or "image"
    stem = stem.replace(os.sep, "_").lstrip(".") or "image"
    candidate, i = stem, 1
    while candidate in taken:
        candidate, i = f"{stem}_{i}", i + 1
    taken.add(candidate)
    return candidate


def write_export(out_dir: str, stem: str, arrays: dict[str, np.ndarray], meta: dict) -> tuple[str, str]:
    os.makedirs(out_dir, exist_ok=True)
    npz = os.path.join(out_dir, stem + ".npz")
    js = os.path.join(out_dir, stem + ".json")
    np.savez(npz, **arrays)
    with open(js, "w", encoding="utf-8") as f:
        json.dump(meta, f, indent=2, ensure_ascii=False)
    return npz, js
