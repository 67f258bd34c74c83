"""Timing helpers: warm-up, repeated runs, interleaved comparisons, machine description.

Every timing is wall-clock (`time.perf_counter`). A measurement is reported as median, min and max
over its repeats (milliseconds). A comparison of two or more sides runs them *interleaved* (one
call of each side per round, the order alternating between rounds) and reports, for every side,
the median / min / max of its per-round ratio to the base side — so a burst of load from another
process hits both sides of a round instead of one whole series.
"""
from __future__ import annotations

import contextlib
import gc
import os
import platform
import statistics
import time
from typing import Callable, Iterator

import torch


def load() -> list[float]:
    """1, 5 and 15 minute load averages (other processes share this machine)."""
    return [round(v, 2) for v in os.getloadavg()]


def stats(seconds: list[float]) -> dict:
    """Median, min and max in milliseconds."""
    return {"median_ms": round(statistics.median(seconds) * 1e3, 3), "min_ms": round(min(seconds) * 1e3, 3),
            "max_ms": round(max(seconds) * 1e3, 3), "n": len(seconds)}


def ratio_stats(ratios: list[float]) -> dict:
    return {"median": round(statistics.median(ratios), 4), "min": round(min(ratios), 4),
            "max": round(max(ratios), 4), "n": len(ratios)}


def once(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(fn: Callable[[], object], repeat: int = 10, warmup: int = 2) -> dict:
    """Warm up, then time `repeat` calls of `fn`."""
    for _ in range(warmup):
        fn()
    gc.collect()
    return stats([once(fn) for _ in range(repeat)])


def interleaved(sides: dict[str, Callable[[], object]], base: str, rounds: int = 10, warmup: int = 1) -> dict:
    """Time every side once per round (order alternating) and the per-round ratio of each side to `base`.

    Returns ``{"load_before", "load_after", "sides": {name: stats}, "ratio_to_<base>": {name: ratio_stats}}``.
    """
    names = list(sides)
    for _ in range(warmup):
        for n in names:
            sides[n]()
    gc.collect()
    times: dict[str, list[float]] = {n: [] for n in names}
    before = load()
    for r in range(rounds):
        for n in (names if r % 2 == 0 else names[::-1]):
            times[n].append(once(sides[n]))
    ratios = {n: ratio_stats([a / b for a, b in zip(times[n], times[base])]) for n in names if n != base}
    return {"load_before": before, "load_after": load(), "sides": {n: stats(t) for n, t in times.items()},
            f"ratio_to_{base}": ratios, "times": times}


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    import numpy
    import timm
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    mem = None
    try:
        with open("/proc/meminfo", encoding="utf-8") as f:
            mem = round(int(f.readline().split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return {"cpu": cpu_model(), "logical_cores": os.cpu_count(), "usable_cores": usable, "memory_gib": mem,
            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "torch_parallel": torch.__config__.parallel_info().splitlines()[0:3],
            "timm": timm.__version__, "numpy": numpy.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "load_at_start": load()}
