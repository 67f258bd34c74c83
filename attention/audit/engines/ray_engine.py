"""The Ray engine: Ray Data, one model actor per worker.

The shards to compute become a Ray dataset (``ray.data.from_items``, one row per shard: its index
and its images), and ``map_batches`` runs them through a pool of ``workers`` actors (a callable
class, ``ActorPoolStrategy(size=workers)``), each of which loads the model once and computes whole shards with
the same `ShardComputer` as the local engine. The actors return each shard encoded as npz bytes and
the driver writes it, so ``--out`` need only exist on the driver; the images (and a
``--checkpoint``) must be readable at the same paths on every node (a shared file system).

``gpus_per_worker`` (``--gpus-per-worker``, fractions allowed) reserves that share of a GPU for each actor;
each actor resolves the spec's ``device`` (``auto``: the GPU Ray gave it) and runs its batches there.

Ray Data restarts an actor that dies and retries its shard; a shard lost with the whole run is
computed again by the next run with the same ``--out``. ``ray.init()`` starts a local Ray with
``workers`` CPUs unless ``address`` names a running cluster (``ray://host:10001`` or ``auto``).
"""
from __future__ import annotations

import json
import logging
import os

from . import Engine, register_engine
from ..compute import AuditSpec
from ..dataset import Item
from ..shards import write_shard


class ShardActor:
    """A Ray Data map_batches callable: loads the model once, computes one shard per call."""

    def __init__(self, spec: dict, threads: int = 1):
        import torch
        torch.set_num_threads(max(1, threads))
        from ..compute import ShardComputer
        self.computer = ShardComputer(AuditSpec.from_dict(spec))

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        from ..shards import encode
        shards, payloads, counts = [], [], []
        for k, items_json, labels_json in zip(batch["shard"], batch["items"], batch["labels"]):
            items = [Item(**d) for d in json.loads(str(items_json))]
            arrays = self.computer.compute(int(k), items, json.loads(str(labels_json)))
            shards.append(int(k))
            payloads.append(encode(arrays))
            counts.append(len(items))
        return {"shard": np.array(shards, np.int64), "payload": np.array(payloads, dtype=object),
                "count": np.array(counts, np.int64)}


def run(spec: AuditSpec, todo, out: str, progress, workers: int = 1, address=None, loaded=None,
        cpus_per_worker: int = 1, gpus_per_worker: float = 0.0) -> None:
    try:
        import ray
    except ImportError:
        from ...errors import UserError
        raise UserError("--engine ray needs Ray: pip install 'ray[data]'") from None
    workers = max(1, int(workers))
    started = False
    if not ray.is_initialized():
        package_parent = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        kw = dict(include_dashboard=False, log_to_driver=False, logging_level="ERROR", configure_logging=True)
        if address:
            ray.init(address=address, **kw)
        else:
            path = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
            ray.init(num_cpus=workers * cpus_per_worker, runtime_env={"env_vars": {"PYTHONPATH": path}}, **kw)
        started = True
    try:
        if gpus_per_worker > 0 and ray.cluster_resources().get("GPU", 0) < gpus_per_worker:
            from ...errors import UserError   # the actors could never be placed: say so instead of waiting
            raise UserError(f"--gpus-per-worker {gpus_per_worker:g}: the Ray cluster has "
                            f"{ray.cluster_resources().get('GPU', 0):g} GPU(s)")
        ctx = ray.data.DataContext.get_current()                 # (imports ray.data, which sets up its logging)
        logging.getLogger("ray.data").setLevel(logging.ERROR)    # no per-run INFO lines across the progress bar
        ctx.enable_progress_bars = False          # the audit draws its own, in images/s
        rows = [{"shard": k, "items": json.dumps([it.to_dict() for it in items]), "labels": json.dumps(list(labels))}
                for k, items, labels in todo]
        if not rows:
            return
        cpus = max(1, int(cpus_per_worker))
        ds = ray.data.from_items(rows, override_num_blocks=len(rows))
        # a fraction of a GPU per actor lets several actors share one (Ray sets CUDA_VISIBLE_DEVICES)
        gpus = {"num_gpus": float(gpus_per_worker)} if gpus_per_worker > 0 else {}
        ds = ds.map_batches(ShardActor, fn_constructor_kwargs={"spec": spec.to_dict(), "threads": cpus},
                            batch_size=1, compute=ray.data.ActorPoolStrategy(size=workers), num_cpus=cpus,
                            batch_format="numpy", **gpus)
        for row in ds.iter_rows():
            write_shard(out, int(row["shard"]), bytes(row["payload"]))
            progress(int(row["count"]))
    finally:
        if started:
            ray.shutdown()

register_engine(Engine("ray", run, in_process=False, help="Ray Data workers"))
