"""Attention over a whole dataset: ``python -m attention audit``.

One module per concept: `dataset` (reading the images, labels and masks), `compute` (per-image
numbers of one shard), `maps` (the only calls into `attention.methods`), `shards` (the output
folder, resuming), `report` (dataset-level numbers), `html` (the self-contained page), `engines`
(local, ray) and `run` (all of it in order).

Outputs in ``--out``: ``report.json`` (every dataset-level number), ``report.html``,
``class_maps.npz`` (per-class mean maps), ``shards/shard-NNNNN.npz`` (per-image results; maps in
float16) and ``audit.json`` (what was asked, for resuming).
"""
from .run import AuditOutcome, run_audit

__all__ = ["run_audit", "AuditOutcome"]
