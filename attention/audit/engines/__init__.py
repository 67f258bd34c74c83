"""Engines compute the shards an audit still needs; both run the same `ShardComputer` on the same
shards and sub-batches, so they write the same numbers.

``run(spec, todo, out, progress, workers, address)`` with ``todo`` a list of
``(shard_index, items, label_indices)``; each finished shard is written with
`attention.audit.shards.write_shard` as soon as it is done and ``progress(n_images)`` is called.
"""
from __future__ import annotations

ENGINES = ("local", "ray")


def get_engine(name: str):
    if name == "local":
        from .local import run
        return run
    if name == "ray":
        from .ray_engine import run
        return run
    raise KeyError(f"unknown engine {name!r}; available: {', '.join(ENGINES)}")


__all__ = ["ENGINES", "get_engine"]
