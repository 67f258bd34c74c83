"""Running test code in several threads at once."""
from __future__ import annotations

import threading
import time
from typing import Callable, Hashable, Iterable


def run_in_threads(fn: Callable[[Hashable], object], keys: Iterable[Hashable],
                   timeout: float = 120.0) -> dict[Hashable, BaseException]:
    """Call ``fn(key)`` for every key, each in its own thread named ``str(key)``, all started together, and
    wait for all of them (`timeout` seconds in total; a thread still running then fails the test).

    Returns ``{key: exception}`` for the calls that raised — any BaseException, since a test may raise
    KeyboardInterrupt on purpose.
    """
    errors: dict[Hashable, BaseException] = {}

    def call(key):
        try:
            fn(key)
        except BaseException as e:  # noqa: BLE001 - handed to the test
            errors[key] = e

    threads = [threading.Thread(target=call, args=(k,), name=str(k)) for k in keys]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still running after {timeout:.0f} s: {alive}"
    return errors
