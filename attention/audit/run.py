"""One audit from start to finish: read the data, plan the shards, compute what is missing with
the chosen engine, then aggregate every shard into ``report.json``, ``class_maps.npz`` and
``report.html``.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..errors import UserError
from .compute import AuditSpec
from .dataset import read_dataset, label_indices
from .maps import DEFAULT_METHODS, FALLBACK_METHOD, auditable_methods, not_defined
from . import shards as sh


@dataclass
class AuditOutcome:
    report: dict
    out: str
    skipped: list = field(default_factory=list)     # [(image id, reason)]
    computed_shards: int = 0
    reused_shards: int = 0

    @property
    def exit_code(self) -> int:
        """0: every image audited; 1: some were skipped (named in the report and on stderr)."""
        return 1 if self.skipped else 0


def choose_methods(loaded, requested: Optional[list[str]]) -> tuple[list[str], dict]:
    """The methods to run and {method: reason} for the ones left out. Asked-for methods that have no
    meaning for the model are an error; the defaults quietly keep what is defined (and say so)."""
    import torch
    H, W = loaded.preprocess.input_size
    probe = loaded.capture(torch.zeros(1, 3, H, W))
    names = list(requested) if requested else list(DEFAULT_METHODS)
    known = set(auditable_methods())
    for n in names:
        if n not in known:
            raise UserError(f"unknown audit method {n!r}; available: {', '.join(sorted(known))}")
    missing = not_defined(probe, names)
    if not loaded.has_classifier:
        # a class-specific map explains a class score: a backbone's outputs are features, not scores
        from ..methods import get_method
        missing.update({n: f"it explains a class and {loaded.name} has no classifier" for n in names
                        if n not in missing and get_method(n).class_specific})
    if requested and missing:
        raise UserError("; ".join(f"{k} is not defined for {loaded.name}: {v}" for k, v in missing.items()))
    chosen = [n for n in names if n not in missing]
    if not requested and "rollout" in missing and FALLBACK_METHOD in known and not not_defined(probe, [FALLBACK_METHOD]):
        chosen.insert(0, FALLBACK_METHOD)
    if not chosen:
        raise UserError(f"no map method is defined for {loaded.name}: " + "; ".join(f"{k}: {v}" for k, v in missing.items()))
    return chosen, missing


def data_groups(items, loaded, group_by_folder: bool, log) -> Optional[dict]:
    """The data's own groups (class folders or the CSV's labels) where they are not classes of the model:
    always for a model without classifier, on request (``--group-by-folder``) for a classifier.
    ``{"by", "names", "of": {image id: group index}, "why"}``, or None to read labels as classes."""
    if loaded.has_classifier and not group_by_folder:
        return None
    names = sorted({it.label for it in items if it.label is not None})
    why = ("the model has no classifier: folder names are groups, not classes, and there is no accuracy or "
           "confusion matrix" if not loaded.has_classifier else
           "--group-by-folder: folder names are groups, not the model's classes; no accuracy or confusion matrix")
    if not names:
        log(f"note: {why.split(':')[0]}; the images have no folders or labels, so they form one group")
        return {"by": "all images", "names": ["all images"], "of": {it.id: 0 for it in items}, "why": why}
    log(f"note: {why} ({len(names)} groups: {', '.join(names[:8])}{' ...' if len(names) > 8 else ''})")
    index = {n: i for i, n in enumerate(names)}
    return {"by": "folder", "names": names, "of": {it.id: index[it.label] for it in items if it.label is not None},
            "why": why}


def _progress_bar(total: int, desc: str, quiet: bool):
    from tqdm import tqdm
    return tqdm(total=total, desc=desc, unit="img", disable=quiet, file=sys.stderr, smoothing=0.1)


def run_audit(data: str, out: str, model: str, *, masks: Optional[str] = None, methods: Optional[list[str]] = None,
              checkpoint: Optional[str] = None, labels: Optional[str] = None, random_init: bool = False,
              engine: str = "local", workers: int = 1, ray_address: Optional[str] = None, cpus_per_worker: int = 1,
              batch_size: int = 32, device: str = "auto", gpus_per_worker: float = 0.0,
              loader_workers: Optional[int] = None, group_by_folder: bool = False, ema: Optional[bool] = None,
              shard_size: int = 64, faithfulness_steps: int = 10, fresh: bool = False, html: bool = True,
              quiet: bool = False, log: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> AuditOutcome:
    """Run (or resume) an audit into ``out``; see the package docstring for the outputs."""
    from ..models import load_model
    from .engines import engine_info
    from .report import CLASS_MAPS_FILE, build_report, gather

    eng = engine_info(engine)
    run_engine = eng.run
    if min(batch_size, shard_size, workers, cpus_per_worker) < 1:
        raise UserError("--batch-size, --shard-size, --workers and --cpus-per-worker must be at least 1")
    if gpus_per_worker < 0 or (loader_workers is not None and loader_workers < 0):
        raise UserError("--gpus-per-worker and --loader-workers cannot be negative")
    import torch

    from ..device import describe, parse_device, resolve_device
    if eng.in_process:
        where = resolve_device(device)      # an unavailable device fails here, before any work
    else:                                   # Ray actors resolve --device on their own node; the driver probes on the CPU
        where, device = torch.device("cpu"), parse_device(device)
        if gpus_per_worker > 0 and not ray_address and not torch.cuda.is_available():
            raise UserError(f"--gpus-per-worker {gpus_per_worker:g}: this machine has no CUDA GPU for the Ray "
                            f"workers (join a cluster with GPUs with --ray-address)")
    if loader_workers is None:              # decode in parallel when the model runs elsewhere than the CPU
        on_cpu = where.type == "cpu" if eng.in_process else gpus_per_worker == 0
        loader_workers = 0 if on_cpu else min(4, os.cpu_count() or 1)
    ds = read_dataset(data, masks)
    loaded = load_model(model, checkpoint=checkpoint, labels=labels, pretrained=not random_init, device=where, ema=ema)
    for note in loaded.load_notes():
        log(f"note: {note}")
    groups = data_groups(ds.items, loaded, group_by_folder, log)
    label_idx = [-1] * len(ds.items) if groups is not None else label_indices(ds.items, loaded.class_names)
    if not loaded.has_classifier and faithfulness_steps > 0:
        # deletion / insertion follow a class probability: a backbone has none
        log("note: no deletion / insertion curves: they follow a class probability and this model has no classifier")
        faithfulness_steps = 0
    chosen, missing = choose_methods(loaded, methods)
    if eng.in_process and workers > 1:
        log(f"note: --workers applies to engines with workers; the {engine} engine runs one process")
    for k, v in missing.items():
        log(f"note: {k} left out: {v}")
    spec = AuditSpec(model=loaded.name if not model or model == "auto" else model, methods=chosen, checkpoint=os.path.abspath(checkpoint) if checkpoint else None,
                     labels=os.path.abspath(labels) if labels else None, random_init=random_init,
                     batch_size=batch_size, faithfulness_steps=faithfulness_steps, shard_size=shard_size,
                     device=device, loader_workers=loader_workers, extra={"ema": ema} if ema is not None else {})
    sh.prepare_out(out, spec.to_dict(), ds.items, fresh=fresh)
    planned = sh.plan(ds.items, shard_size)
    offsets = np.cumsum([0] + [len(p) for p in planned])
    todo = [(k, items, label_idx[offsets[k]:offsets[k + 1]]) for k, items in enumerate(planned)
            if not sh.shard_ok(out, k, items)]
    reused = len(planned) - len(todo)
    if reused:
        log(f"resuming {out}: {reused} of {len(planned)} shards done, computing {len(todo)}")
    n_todo = sum(len(t[1]) for t in todo)
    t0 = time.perf_counter()
    bar = _progress_bar(n_todo, f"audit {loaded.name} ({engine})", quiet)
    try:
        run_engine(spec, todo, out, bar.update, workers=workers, address=ray_address,
                   **({"loaded": loaded} if eng.in_process else {"cpus_per_worker": cpus_per_worker,
                                                                    "gpus_per_worker": gpus_per_worker}))
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0

    g = gather(sh.iter_shards(out, len(planned)))
    header = {
        "model": {"name": loaded.name, "source": loaded.source, "weights": loaded.info.get("weights"),
                  "num_classes": loaded.num_classes, "class_names": list(loaded.class_names)},
        "data": {"path": os.path.abspath(data), "layout": ds.layout, "images": len(ds.items),
                 "labels": ds.has_labels, "masks": ds.has_masks},
        "methods": chosen, "methods_not_defined": missing,
        "settings": {k: v for k, v in spec.to_dict().items() if k != "extra"},
        "run": {"engine": engine, "workers": workers,
                # the local engine's device; Ray actors resolve --device on their own node
                "device": describe(where) if eng.in_process else f"{device} (each worker; "
                          f"{gpus_per_worker:g} GPU per worker)", "batch_size": batch_size,
                "loader_workers": loader_workers,
                "shards": len(planned), "shards_computed": len(todo),
                "shards_reused": reused, "seconds": round(elapsed, 3),
                "images_per_second": round(n_todo / elapsed, 3) if n_todo and elapsed > 0 else None},
    }
    if groups is not None:
        header["grouping"] = {"by": groups["by"], "groups": groups["names"], "why": groups["why"]}
    report, class_maps = build_report(g, methods=chosen, class_names=list(loaded.class_names), seed=spec.seed,
                                      header=header, groups=groups)
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1, allow_nan=False)
    if class_maps:
        np.savez(os.path.join(out, CLASS_MAPS_FILE), **class_maps)
    if html:
        from .html import write_html
        write_html(os.path.join(out, "report.html"), report, class_maps, g, ds)
    skipped = list(g["failed"])
    for iid, reason in skipped:
        log(f"skipped: {reason}")
    if skipped:
        log(f"{len(skipped)} of {len(ds.items)} image(s) skipped (listed in {os.path.join(out, 'report.json')})")
    return AuditOutcome(report, out, skipped, len(todo), reused)


__all__ = ["run_audit", "AuditOutcome", "choose_methods"]
