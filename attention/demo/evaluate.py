"""Every method's localisation on the demo models, through the same path users take.

Models load by name (`load_model`), images go through the model's own preprocessing, maps come
from `capture` + the registered methods: exactly what the app and the CLI show. Scores are those of
`quality.evaluate_maps` (accuracy, pointing game, AUROC against the ground-truth masks).
"""
from __future__ import annotations

from typing import Callable, Iterable, Optional

import numpy as np
import torch
from PIL import Image

from ..errors import MethodNotDefinedError
from ..methods import default_heatmap, get_method
from ..methods.raw import raw_attention
from ..models import LoadedModel, load_model
from .quality import evaluate_maps
from .shapes import make_dataset

# map name -> how to compute it: from the capture, or (needs_model) from the model and input
MAPS: dict[str, Callable] = {
    "heatmap": lambda lm, x, res: default_heatmap(res),
    "rollout": lambda lm, x, res: get_method("rollout")(res),
    "grad_rollout": lambda lm, x, res: get_method("grad_rollout")(lm.model, x),
    "gradcam": lambda lm, x, res: get_method("gradcam")(lm.model, x),
    "last_layer_cls": lambda lm, x, res: raw_attention(res, layer=-1),
    "received": lambda lm, x, res: get_method("received")(res),
}
DEFAULT_MAPS = ("heatmap", "rollout", "grad_rollout", "gradcam", "last_layer_cls", "received")


def batch_tensor(lm: LoadedModel, images: np.ndarray) -> torch.Tensor:
    """The model's own preprocessing applied to each (H, W, 3) uint8 image."""
    return torch.cat([lm.prepare(Image.fromarray(im)).tensor for im in images])


def evaluate(names: Iterable[str], n: int = 1000, seed: int = 999, maps: Iterable[str] = DEFAULT_MAPS,
             batch_size: int = 100, progress: Optional[Callable[[str], None]] = None) -> list[dict]:
    """Rows ``{"model", "map", "accuracy", "pointing_game", "auroc", ...}``; undefined maps are left out."""
    images, masks, labels = make_dataset(n, seed)
    rows = []
    for name in names:
        lm = load_model(name)
        xs = [batch_tensor(lm, images[i:i + batch_size]) for i in range(0, n, batch_size)]
        results = [lm.capture(x) for x in xs]
        logits = torch.cat([r.logits for r in results])
        for map_name in maps:
            try:
                out = [MAPS[map_name](lm, x, r) for x, r in zip(xs, results)]
            except MethodNotDefinedError as e:
                if progress:
                    progress(f"{name}: {map_name} not defined ({str(e).split(';')[0]})")
                continue
            m = torch.cat([o.detach().float() for o in out]).numpy()
            q = evaluate_maps(m, masks, labels, logits)
            rows.append({"model": name, "map": map_name, **q})
            if progress:
                progress(f"{name} {map_name}: pointing {q['pointing_game']:.3f} AUROC {q['auroc']:.3f}")
    return rows


def markdown(rows: list[dict]) -> str:
    out = ["| model | map | accuracy | pointing game | AUROC |", "|---|---|---|---|---|"]
    for r in rows:
        label = r["map"] + (" (default)" if r["map"] == "heatmap" else "")
        out.append(f"| {r['model']} | {label} | {r['accuracy']:.3f} | {r['pointing_game']:.3f} | {r['auroc']:.3f} |")
    return "\n".join(out)
