"""Per-image computation of an audit: one shard of images in, one dict of arrays out.

For every image of a shard (in sub-batches of ``batch_size``; the same shards and sub-batches on
every engine, so every engine computes the same numbers): the logits; each method's map over the
patch grid; the head statistics of `attention.diagnostics.head_stats` for this image alone (entropy,
mean attention distance, prefix and register mass, and with a mask the object fraction); and per
method, with the map ``p`` normalised to sum 1 over its cells (negative values clipped to 0):

* ``border`` mass ``Σ_{c ∈ band} p_c``: the band is the outer ``b = max(1, round(g / 10))`` cells of
  each side of a (gh, gw) grid (``g`` = gh for rows, gw for columns); ``corner`` mass the same over
  the four ``b × b`` corner blocks. The fraction of cells they cover (their mass under a uniform map)
  is ``border_area`` / ``corner_area``;
  A model that takes a shortcut through the image frame or a corner watermark (Geirhos et al.,
  "Shortcut learning in deep neural networks", Nature Machine Intelligence 2020) puts more there;
* with a mask (the photo's mask taken through the same resize and crop as the photo, to the model
  input): ``pointing`` (the map's top cell touches the object; the pointing game of Zhang et al.,
  ECCV 2016) and ``auroc`` (cells covered >= 50 % are positives, cells not touched negatives, partly
  covered cells left out), as `attention.scoring.evaluate_maps` defines them;
* ``deletion`` / ``insertion`` AUC (Petsiuk et al., RISE, BMVC 2018;
  `attention.faithfulness.perturbation_curves`, blur baseline) for the predicted class, when
  ``faithfulness_steps`` > 0 (with or without a mask).
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from .dataset import Item
from ..device import to_model
from .maps import capture_and_maps

HEAD_STATS = ("entropy", "entropy_normalized", "mean_distance", "prefix_mass", "register_mass", "object_fraction")
METRICS = ("border", "corner", "pointing", "auroc", "deletion", "insertion")


@dataclass
class AuditSpec:
    """Everything a worker needs to compute shards (plain data: it travels to Ray workers)."""

    model: str
    methods: list[str]
    checkpoint: Optional[str] = None
    labels: Optional[str] = None
    random_init: bool = False
    batch_size: int = 32
    faithfulness_steps: int = 10
    baseline: str = "blur"
    shard_size: int = 64
    seed: int = 0
    device: str = "cpu"              # attention.device: auto, cpu, cuda, cuda:N, mps (resolved in each worker)
    loader_workers: int = 0          # processes decoding images while the model computes (0: in this process)
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AuditSpec":
        return cls(**d)


def band_masks(grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(border, corner) boolean (gh, gw) masks; definition in the module docstring."""
    gh, gw = grid
    by, bx = max(1, round(gh / 10)), max(1, round(gw / 10))
    r = np.arange(gh)[:, None]
    c = np.arange(gw)[None, :]
    rows = (r < by) | (r >= gh - by)
    cols = (c < bx) | (c >= gw - bx)
    return rows | cols, rows & cols


def _normalised(m: np.ndarray) -> Optional[np.ndarray]:
    p = np.clip(np.asarray(m, np.float64), 0, None)
    s = p.sum()
    return p / s if s > 0 and np.isfinite(s) else None


def border_corner(m: np.ndarray) -> tuple[float, float]:
    p = _normalised(m)
    if p is None:
        return float("nan"), float("nan")
    border, corner = band_masks(p.shape)
    return float(p[border].sum()), float(p[corner].sum())


def cell_coverage(mask: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(gh, gw) fraction of each cell's pixels inside the (H, W) mask; cell (i, j) holds the pixels
    with ``floor(y·gh/H) = i`` and ``floor(x·gw/W) = j`` (the faithfulness curves' cells)."""
    from ..scoring import cell_fractions
    from ..faithfulness import pixel_cells
    H, W = mask.shape
    if H % grid[0] == 0 and W % grid[1] == 0:
        return cell_fractions(mask[None], grid)[0]
    cells = pixel_cells(grid, (H, W)).numpy().ravel()
    n = grid[0] * grid[1]
    inside = np.bincount(cells, weights=(mask.ravel() > 0).astype(np.float64), minlength=n)
    return (inside / np.bincount(cells, minlength=n)).reshape(grid)


def localisation(m: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(pointing hit 0/1, AUROC) of one map against one mask at the model-input size."""
    from ..scoring import auroc
    fr = cell_coverage(mask, m.shape).ravel()
    flat = np.asarray(m, np.float64).ravel()
    hit = float(fr[int(flat.argmax())] > 0)
    pos = fr >= 0.5
    keep = (fr == 0) | pos
    return hit, auroc(flat[keep], pos[keep])


def read_mask(path: str, image_hw: tuple[int, int]) -> np.ndarray:
    """(H0, W0) bool object mask for an image of size ``image_hw`` (non-zero = object; 0/255 masks are
    thresholded at 128). A mask of another size but the same aspect ratio is resized (nearest)."""
    from PIL import Image

    from ..errors import ImageError
    try:
        with Image.open(path) as im:
            im.load()
            a = np.asarray(im.convert("L"))
    except FileNotFoundError:
        raise ImageError(f"mask {path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure is the user's file
        raise ImageError(f"mask {path}: cannot be read ({e})") from None
    m = a > (127 if a.max() > 1 else 0)
    if m.shape != tuple(image_hw):
        h, w = m.shape
        if abs(h / w - image_hw[0] / image_hw[1]) > 0.01:
            raise ImageError(f"mask {path}: {w}x{h} does not match the image's {image_hw[1]}x{image_hw[0]}")
        import cv2
        m = cv2.resize(m.astype(np.uint8), (image_hw[1], image_hw[0]), interpolation=cv2.INTER_NEAREST) > 0
    return m


def mask_to_input(mask: np.ndarray, geometry) -> np.ndarray:
    """The photo mask (H0, W0) as the model saw the photo: (H, W) float 0/1 at the model input; input
    pixel i samples the photo pixel under its centre, ``y = top + (i + ½)(bottom − top)/H``."""
    H, W = geometry.input_size
    top, left, bottom, right = geometry.box
    H0, W0 = mask.shape
    ys = np.floor(top + (np.arange(H) + 0.5) * (bottom - top) / H).astype(np.int64)
    xs = np.floor(left + (np.arange(W) + 0.5) * (right - left) / W).astype(np.int64)
    vy, vx = (ys >= 0) & (ys < H0), (xs >= 0) & (xs < W0)
    out = mask[np.clip(ys, 0, H0 - 1)][:, np.clip(xs, 0, W0 - 1)].astype(np.float64)
    out[~vy] = 0
    out[:, ~vx] = 0
    return out


def slice_result(result, i: int):
    """The capture of batch item ``i`` alone (windowed maps hold ``windows_per_image`` rows per item)."""
    maps = []
    for m in result.maps:
        k = m.window.windows_per_image if getattr(m, "window", None) is not None else 1
        maps.append(dataclasses.replace(m, weights=m.weights[i * k:(i + 1) * k]))
    return dataclasses.replace(result, input=result.input[i:i + 1], logits=result.logits[i:i + 1], maps=maps)


class _Decoded(torch.utils.data.Dataset):
    """The images of a shard, decoded and preprocessed (in DataLoader workers when there are any):
    ``(prepared, mask, notes)`` per item, or ``(None, None, reason)`` for a file that cannot be read."""

    def __init__(self, items: list[Item], preprocess):
        self.items, self.preprocess = items, preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        from ..images import open_image
        from ..preprocess import PreparedImage
        it = self.items[i]
        try:
            img = open_image(it.path)
            prepared = self.preprocess(img.image)
            mask = None
            if it.mask is not None:
                mask = mask_to_input(read_mask(it.mask, (img.image.height, img.image.width)), prepared.geometry)
            # the photo itself stays in the worker: the audit needs the tensor and the geometry
            return PreparedImage(prepared.tensor, None, prepared.geometry), mask, list(img.notes)
        except Exception as e:  # noqa: BLE001 - a bad file is reported by name and skipped
            msg = str(e) or type(e).__name__
            return None, None, msg if it.path in msg or it.id in msg else f"{it.id}: {msg}"


def _as_list(batch):
    return batch


class ShardComputer:
    """Holds one loaded model (on ``spec.device``); ``compute(index, items, labels)`` returns a shard's arrays."""

    def __init__(self, spec: AuditSpec, loaded=None):
        from ..models import load_model
        self.spec = spec
        self.loaded = loaded or load_model(spec.model, checkpoint=spec.checkpoint, labels=spec.labels,
                                           pretrained=not spec.random_init, device=spec.device,
                                           ema=spec.extra.get("ema"))

    def _decoded(self, items: list[Item]):
        """The shard's items decoded in order; with ``loader_workers`` > 0 by a DataLoader whose worker
        processes decode the next images while the model computes the current batch."""
        ds = _Decoded(items, self.loaded.preprocess)
        w = max(0, int(self.spec.loader_workers))
        if w == 0 or len(items) < 2:
            return (ds[i] for i in range(len(ds)))
        return iter(torch.utils.data.DataLoader(ds, batch_size=None, num_workers=min(w, len(items)),
                                                collate_fn=_as_list, prefetch_factor=4))

    def compute(self, shard: int, items: list[Item], labels: list[int], on_batch=None) -> dict:
        """The shard's arrays (keys in the README); ``on_batch(n)`` is called after each sub-batch."""
        t_start = time.time()
        failed, notes, parts = [], [], []
        bs = max(1, self.spec.batch_size)
        chunk: list = []
        start = 0

        def flush():
            nonlocal chunk, start
            # one forward per input size (preprocessing normally gives one size)
            by_shape: dict[tuple, list[int]] = {}
            for j, r in enumerate(chunk):
                by_shape.setdefault(tuple(r[2].tensor.shape), []).append(j)
            for idx in by_shape.values():
                parts.append((idx[0] + start, self._batch([chunk[j] for j in idx])))
            if on_batch is not None:
                on_batch(len(chunk))
            start += len(chunk)
            chunk = []

        for it, lab, (prepared, mask, n) in zip(items, labels, self._decoded(items)):
            if prepared is None:
                failed.append((it.id, n))
                continue
            chunk.append((it, lab, prepared, mask))
            notes.extend(f"{it.id}: {x}" for x in n)
            if len(chunk) == bs:
                flush()
        if chunk:
            flush()
        out = {"shard": np.array(shard, np.int64), "failed_ids": np.array([f[0] for f in failed], dtype=str),
               "failed_reasons": np.array([f[1] for f in failed], dtype=str), "notes": np.array(notes, dtype=str)}
        if on_batch is not None and failed:
            on_batch(len(failed))
        parts.sort(key=lambda p: p[0])
        if parts:
            keys = parts[0][1].keys()
            for k in keys:
                out[k] = np.concatenate([p[1][k] for p in parts])
        else:
            out["ids"] = np.array([], dtype=str)
        # when the shard ran (wall-clock seconds since the epoch): throughput without start-up
        out["time_start"], out["time_end"] = np.array(t_start), np.array(time.time())
        return out

    @torch.no_grad()
    def _batch(self, rows) -> dict:
        from ..diagnostics import head_stats
        from ..faithfulness import perturbation_curves
        loaded, spec = self.loaded, self.spec
        # the batch on the model's device (and in its dtype); maps and statistics come back to the CPU
        x = to_model(loaded.model, torch.cat([r[2].tensor for r in rows]))
        # the capture is the gradient maps' own forward (one forward + one backward for every map)
        result, maps = capture_and_maps(loaded.model, x, spec.methods)
        logits = result.logits.detach().float().cpu()
        pred = logits.argmax(-1)
        B = x.shape[0]
        masks = [r[3] for r in rows]
        out = {
            "ids": np.array([r[0].id for r in rows], dtype=str),
            "label": np.array([r[1] for r in rows], np.int64),
            "logits": logits.numpy().astype(np.float32),
            "pred": pred.numpy().astype(np.int64),
            "original_size": np.array([r[2].geometry.original_size for r in rows], np.int64),
            "box": np.array([r[2].geometry.box for r in rows], np.float64),
            "input_size": np.array([r[2].geometry.input_size for r in rows], np.int64),
            "has_mask": np.array([m is not None for m in masks]),
        }
        stats = []
        for i in range(B):
            st = head_stats(slice_result(result, i), masks[i])
            stats.append(st)
        shape = stats[0].shape
        for k in HEAD_STATS:
            a = np.full((B, *shape), np.nan, np.float32)
            for i, st in enumerate(stats):
                v = getattr(st, k)
                if v is not None:
                    a[i] = v
            out[f"head_{k}"] = a
        out["layer_names"] = np.array(stats[0].layer_names, dtype=str)[None].repeat(B, 0)
        out["num_heads"] = np.asarray(stats[0].num_heads, np.int64)[None].repeat(B, 0)
        for name, m in maps.items():
            mn = m.numpy()
            out[f"map_{name}"] = mn.astype(np.float16)
            met = {k: np.full(B, np.nan) for k in METRICS}
            for i in range(B):
                met["border"][i], met["corner"][i] = border_corner(mn[i])
                if masks[i] is not None:
                    met["pointing"][i], met["auroc"][i] = localisation(mn[i], masks[i])
            if spec.faithfulness_steps > 0:
                c = perturbation_curves(loaded.model, x, m, pred, steps=spec.faithfulness_steps,
                                        baseline=spec.baseline, batch_size=max(spec.batch_size, 8))
                met["deletion"], met["insertion"] = c.deletion_auc, c.insertion_auc
            for k, v in met.items():
                out[f"{k}_{name}"] = np.asarray(v, np.float64)
        return out


def nan_if_empty(values) -> float:
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else math.nan


__all__ = ["AuditSpec", "ShardComputer", "band_masks", "border_corner", "cell_coverage", "localisation",
           "read_mask", "mask_to_input", "slice_result", "HEAD_STATS", "METRICS"]
