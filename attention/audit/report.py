"""Dataset-level numbers of an audit, from its shards alone.

* **Classification** (items with a label): accuracy with a bootstrap 95 % interval, the confusion
  matrix (rows: true class, columns: predicted class, over the classes that occur), per-class
  recall and precision.
* **Per-class mean maps**: each image's map ``p`` (clipped at 0, normalised to sum 1 over its gh·gw
  cells) is placed on the photo through the image's geometry (the box of the photo the model input
  covers) and sampled on an S × S canvas spanning the whole photo (photos of any shape are
  stretched to the square): canvas pixel (u, v) takes the cell under photo point
  ``((u + ½) H0 / S, (v + ½) W0 / S)``, in units of the uniform map (``gh·gw·p``: 1 = uniform), and
  nothing where the preprocessing cropped the photo away. A class's map is the mean over its images
  of each canvas pixel over the images that saw it. Classes are the true labels where given, else the
  predictions. For a model without classifier (or with ``--group-by-folder``) the data's own groups
  (class folders, the CSV's label column) take the place of classes, one group of all images
  without them; there is then no classification section.
* **Per-head statistics** (`attention.diagnostics.head_stats` per image): for every (layer, head)
  the mean, standard deviation and the 5/25/50/75/95 % quantiles over the images.
* **Shortcut signal**: per method and class, the mean border and corner mass (see
  `attention.audit.compute`) with bootstrap intervals and their lift over a uniform map
  (``mass / area``); classes ranked by lift, flagged when the interval's lower end is above the
  area (more than a uniform map puts there, beyond sampling noise).
* **Localisation and faithfulness** per method: pointing game, AUROC (images with a mask), deletion
  and insertion AUC, each a mean with a bootstrap 95 % interval.

Bootstrap (Efron & Tibshirani, "An Introduction to the Bootstrap", 1993): ``resamples`` draws of the
images with replacement, the percentile interval of the mean;
the generator is seeded from ``seed`` and the quantity's name, so every run gives the same interval.
"""
from __future__ import annotations

import zlib
from typing import Optional

import numpy as np

from .compute import HEAD_STATS, band_masks

CANVAS = 48
CLASS_MAPS_FILE = "class_maps.npz"


def gather(shards) -> dict:
    """Concatenate shard dicts (in shard order) into one dict of per-image arrays + failures."""
    shards = list(shards)
    out: dict = {"failed": [], "notes": []}
    parts: dict[str, list] = {}
    for z in shards:
        out["failed"].extend(zip(z["failed_ids"].tolist(), z["failed_reasons"].tolist()))
        out["notes"].extend(z["notes"].tolist())
        if z.get("ids") is None or len(z["ids"]) == 0:
            continue
        for k, v in z.items():
            if k in ("shard", "failed_ids", "failed_reasons", "notes") or k.startswith("time_"):
                continue
            parts.setdefault(k, []).append(v)
    for k, v in parts.items():
        out[k] = np.concatenate(v)
    return out


def bootstrap_ci(values, name: str, seed: int = 0, resamples: int = 1000, level: float = 0.95) -> dict:
    """{"mean", "low", "high", "n"} of the finite values; percentile bootstrap of the mean."""
    v = np.asarray(values, np.float64)
    v = v[np.isfinite(v)]
    n = int(v.size)
    if n == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
    means = np.empty(resamples)
    step = max(1, 2_000_000 // n)
    for s in range(0, resamples, step):
        k = min(step, resamples - s)
        means[s:s + k] = v[rng.integers(0, n, (k, n))].mean(1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return {"mean": float(v.mean()), "low": float(lo), "high": float(hi), "n": n}


def _num(x) -> Optional[float]:
    return None if x is None or not np.isfinite(x) else float(x)


def _nan_list(a: np.ndarray) -> list:
    """A 2-D array as nested lists, None for NaN (JSON has no NaN)."""
    return [[_num(v) for v in row] for row in np.asarray(a, np.float64)]


def classification(label: np.ndarray, pred: np.ndarray, class_names: list[str], seed: int) -> Optional[dict]:
    has = label >= 0
    if not has.any():
        return None
    y, p = label[has], pred[has]
    present = sorted(set(y.tolist()) | set(p.tolist()))
    pos = {c: i for i, c in enumerate(present)}
    cm = np.zeros((len(present), len(present)), np.int64)
    np.add.at(cm, ([pos[c] for c in y], [pos[c] for c in p]), 1)
    per_class = {}
    for c in present:
        i = pos[c]
        n_true, n_pred = int(cm[i].sum()), int(cm[:, i].sum())
        per_class[class_names[c]] = {"n": n_true, "recall": _num(cm[i, i] / n_true) if n_true else None,
                                     "precision": _num(cm[i, i] / n_pred) if n_pred else None}
    return {"n": int(has.sum()), "accuracy": bootstrap_ci((y == p).astype(np.float64), "accuracy", seed),
            "confusion": {"labels": [class_names[c] for c in present], "matrix": cm.tolist(),
                          "rows": "true class", "columns": "predicted class"},
            "per_class": per_class}


def canvas_map(m: np.ndarray, original_size, box, canvas: int = CANVAS) -> np.ndarray:
    """(S, S) map of one image on the photo canvas (units of the uniform map; NaN where unseen)."""
    p = np.clip(np.asarray(m, np.float64), 0, None)
    s = p.sum()
    gh, gw = p.shape
    if not (s > 0 and np.isfinite(s)):
        return np.full((canvas, canvas), np.nan)
    p = p / s * (gh * gw)
    H0, W0 = original_size
    top, left, bottom, right = box
    y = (np.arange(canvas) + 0.5) * H0 / canvas
    x = (np.arange(canvas) + 0.5) * W0 / canvas
    r = np.floor((y - top) / ((bottom - top) / gh)).astype(np.int64)
    c = np.floor((x - left) / ((right - left) / gw)).astype(np.int64)
    vr, vc = (r >= 0) & (r < gh), (c >= 0) & (c < gw)
    out = p[np.clip(r, 0, gh - 1)][:, np.clip(c, 0, gw - 1)]
    out[~vr] = np.nan
    out[:, ~vc] = np.nan
    return out


def grouping(g: dict, class_names: list[str], groups: Optional[dict] = None) -> tuple[str, np.ndarray, list[str]]:
    """(by, group index per image (-1: none), group names) for the per-group sections.

    ``groups`` (``{"by": "folder", "names": [...], "of": {image id: index}}``) are the data's own
    groups (folders, CSV labels) for a model without classifier, or when grouping was asked instead
    of labels; else the true labels where given, else the predictions of a classifier; else one
    group of every image."""
    n = len(g["label"])
    if groups is not None:
        idx = np.array([groups["of"].get(str(i), -1) for i in g["ids"]], np.int64)
        if (idx >= 0).any():
            return groups["by"], idx, list(groups["names"])
    if (g["label"] >= 0).any():
        return "label", np.asarray(g["label"], np.int64), list(class_names)
    if class_names:
        return "prediction", np.asarray(g["pred"], np.int64), list(class_names)
    return "all images", np.zeros(n, np.int64), ["all images"]


def class_mean_maps(g: dict, methods: list[str], class_names: list[str], canvas: int = CANVAS,
                    groups: Optional[dict] = None) -> dict:
    """{"by", "classes", "counts", method: (K, S, S)} mean canvas maps per class (or group, `grouping`)."""
    by, cls, names = grouping(g, class_names, groups)
    present = sorted(c for c in set(cls.tolist()) if c >= 0)
    out = {"by": by, "classes": [names[c] for c in present],
           "class_index": present, "counts": [int((cls == c).sum()) for c in present]}
    for name in methods:
        maps = g[f"map_{name}"]
        res = np.full((len(present), canvas, canvas), np.nan)
        for k, c in enumerate(present):
            idx = np.flatnonzero(cls == c)
            tot = np.zeros((canvas, canvas))
            cnt = np.zeros((canvas, canvas))
            for i in idx:
                cm = canvas_map(maps[i], g["original_size"][i], g["box"][i], canvas)
                ok = np.isfinite(cm)
                tot[ok] += cm[ok]
                cnt[ok] += 1
            with np.errstate(invalid="ignore", divide="ignore"):
                res[k] = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
        out[name] = res
    return out


def head_summary(g: dict) -> dict:
    out = {"layer_names": g["layer_names"][0].tolist(), "num_heads": g["num_heads"][0].tolist(), "stats": {}}
    for k in HEAD_STATS:
        a = g[f"head_{k}"].astype(np.float64)          # (N, L, H)
        if not np.isfinite(a).any():
            continue
        with np.errstate(invalid="ignore"), _quiet():
            q = np.nanquantile(a, [0.05, 0.25, 0.5, 0.75, 0.95], axis=0)
            st = {"mean": _nan_list(np.nanmean(a, 0)), "std": _nan_list(np.nanstd(a, 0)),
                  "n": np.isfinite(a).sum(0).tolist()}
        for name, qq in zip(("p05", "p25", "p50", "p75", "p95"), q):
            st[name] = _nan_list(qq)
        out["stats"][k] = st
    # rankings on the set means: which heads look at the object, which look far or near
    rank = {}
    for key, stat, desc in (("most_object_focused", "object_fraction", True), ("most_global", "mean_distance", True),
                            ("most_local", "mean_distance", False), ("most_register_mass", "register_mass", True)):
        if stat not in out["stats"]:
            continue
        m = np.array([[np.nan if v is None else v for v in row] for row in out["stats"][stat]["mean"]])
        flat = [(int(i), int(h), float(v)) for (i, h), v in np.ndenumerate(m) if np.isfinite(v)]
        flat.sort(key=lambda t: (-t[2] if desc else t[2], t[0], t[1]))
        rank[key] = [{"layer": i, "head": h, stat: v} for i, h, v in flat[:5]]
    out["rankings"] = rank
    return out


class _quiet:
    def __enter__(self):
        import warnings
        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *a):
        self._w.__exit__(*a)


def shortcuts(g: dict, methods: list[str], class_names: list[str], seed: int, groups: Optional[dict] = None) -> dict:
    _, cls, class_names = grouping(g, class_names, groups)
    out = {}
    for name in methods:
        grid = g[f"map_{name}"].shape[1:]
        border, corner = band_masks(grid)
        b_area, c_area = float(border.mean()), float(corner.mean())
        per = {}
        for c in sorted(c for c in set(cls.tolist()) if c >= 0):
            sel = cls == c
            cn = class_names[c]
            b = bootstrap_ci(g[f"border_{name}"][sel], f"border/{name}/{cn}", seed)
            k = bootstrap_ci(g[f"corner_{name}"][sel], f"corner/{name}/{cn}", seed)
            per[cn] = {"n": int(sel.sum()), "border_mass": b, "corner_mass": k,
                       "border_lift": _num(b["mean"] / b_area) if b["mean"] is not None else None,
                       "corner_lift": _num(k["mean"] / c_area) if k["mean"] is not None else None,
                       # above the uniform share beyond sampling noise (and beyond float rounding)
                       "border_flag": bool(b["low"] is not None and b["low"] > b_area * (1 + 1e-9)),
                       "corner_flag": bool(k["low"] is not None and k["low"] > c_area * (1 + 1e-9))}

        def lean(key):
            ranked = sorted((v[f"{key}_lift"], cn) for cn, v in per.items() if v[f"{key}_lift"] is not None)
            return [{"class": cn, "lift": lift, "flag": per[cn][f"{key}_flag"]} for lift, cn in ranked[::-1][:5]]

        out[name] = {"grid": list(grid), "band_cells": [max(1, round(grid[0] / 10)), max(1, round(grid[1] / 10))],
                     "border_area": b_area, "corner_area": c_area,
                     "all": {"border_mass": bootstrap_ci(g[f"border_{name}"], f"border/{name}", seed),
                             "corner_mass": bootstrap_ci(g[f"corner_{name}"], f"corner/{name}", seed)},
                     "per_class": per, "leaning_most": {"border": lean("border"), "corner": lean("corner")}}
    return out


def localisation(g: dict, methods: list[str], seed: int) -> dict:
    out = {}
    for name in methods:
        out[name] = {"images_with_mask": int(g["has_mask"].sum()),
                     "pointing_game": bootstrap_ci(g[f"pointing_{name}"], f"pointing/{name}", seed),
                     "auroc": bootstrap_ci(g[f"auroc_{name}"], f"auroc/{name}", seed),
                     "deletion_auc": bootstrap_ci(g[f"deletion_{name}"], f"deletion/{name}", seed),
                     "insertion_auc": bootstrap_ci(g[f"insertion_{name}"], f"insertion/{name}", seed)}
    return out


def build_report(g: dict, *, methods: list[str], class_names: list[str], seed: int = 0, header: Optional[dict] = None,
                 canvas: int = CANVAS, groups: Optional[dict] = None) -> tuple[dict, dict]:
    """(report dict for report.json, class mean maps for class_maps.npz) from gathered shards.

    ``groups``: the data's own groups (see `grouping`); then there is no classification section."""
    n = int(len(g.get("ids", [])))
    report = dict(header or {})
    report["images"] = {"computed": n, "skipped": len(g["failed"]),
                        "skipped_list": [{"image": i, "reason": r} for i, r in g["failed"]],
                        "notes": g["notes"][:200]}
    if n == 0:
        return report, {}
    report["classification"] = classification(g["label"], g["pred"], class_names, seed) if class_names else None
    cm = class_mean_maps(g, methods, class_names, canvas, groups)
    report["class_maps"] = {"file": CLASS_MAPS_FILE, "by": cm["by"], "canvas": [canvas, canvas],
                            "units": "times the uniform map (1 = uniform)", "classes": cm["classes"],
                            "counts": cm["counts"]}
    report["heads"] = head_summary(g)
    report["shortcuts"] = shortcuts(g, methods, class_names, seed, groups)
    report["localisation"] = localisation(g, methods, seed)
    arrays = {"classes": np.array(cm["classes"], dtype=str), "counts": np.array(cm["counts"], np.int64)}
    for name in methods:
        arrays[name] = cm[name].astype(np.float32)
    return report, arrays


__all__ = ["gather", "bootstrap_ci", "classification", "canvas_map", "class_mean_maps", "grouping", "head_summary", "shortcuts",
           "localisation", "build_report", "CANVAS", "CLASS_MAPS_FILE"]
