"""Engines compute the shards an audit still needs; all run the same `ShardComputer` on the same
shards and sub-batches, so they write the same numbers.

An engine is one module here that registers an `Engine` (``register_engine(Engine(...))``); the
package imports each of its modules (`attention.registry.discover`), so a new engine is one file.
``run(spec, todo, out, progress, workers, address, **options)`` with ``todo`` a list of
``(shard_index, items, label_indices)``; each finished shard is written with
`attention.audit.shards.write_shard` as soon as it is done and ``progress(n_images)`` is called.
``in_process``: the engine computes in this process with the model already loaded (it gets
``loaded=``; the device is resolved here); otherwise it starts its own workers (which get
``cpus_per_worker=`` / ``gpus_per_worker=`` and resolve the device on their node).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...registry import Registry, discover


@dataclass(frozen=True)
class Engine:
    name: str
    run: Callable
    in_process: bool
    help: str = ""


ENGINE_REGISTRY: Registry[Engine] = Registry("engine")


def register_engine(engine: Engine) -> Engine:
    return ENGINE_REGISTRY.register(engine)


discover(__name__)
ENGINES = tuple(ENGINE_REGISTRY.names())


def engine_info(name: str) -> Engine:
    """The registered `Engine` called `name` (KeyError listing the engines otherwise)."""
    return ENGINE_REGISTRY.get(name)


def get_engine(name: str):
    """The engine's ``run`` function."""
    return engine_info(name).run


__all__ = ["ENGINES", "ENGINE_REGISTRY", "Engine", "register_engine", "engine_info", "get_engine"]
