"""The local engine: one process, one model, shards in order, images in batches."""
from __future__ import annotations

from . import Engine, register_engine
from ..compute import AuditSpec, ShardComputer
from ..shards import encode, write_shard


def run(spec: AuditSpec, todo, out: str, progress, workers: int = 1, address=None, loaded=None) -> None:
    """Every shard of ``todo`` in this process, on the loaded model's device (``spec.device``)."""
    computer = ShardComputer(spec, loaded)
    for k, items, labels in todo:
        arrays = computer.compute(k, items, labels, on_batch=progress)
        write_shard(out, k, encode(arrays))

register_engine(Engine("local", run, in_process=True, help="one process"))
