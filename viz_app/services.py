"""What the page's handlers share, made once per app: the computations (`Callbacks`), the default model, the
examples, and the live stream's frame rates."""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional

from .callbacks import Callbacks
from .models import choose_default


class DefaultModel:
    """The default model and its notice, decided once (a hub probe takes a few seconds at most)."""

    def __init__(self, model: Optional[str], notice: Optional[str]):
        self.model, self.notice = model, notice
        self._lock = threading.Lock()

    def get(self) -> tuple[str, str]:
        with self._lock:
            if self.model is None:
                self.model, self.notice = choose_default()
            return self.model, self.notice or ""


class FrameRate:
    """Frames per second of each browser session's live stream over its last few frames (thread-safe; the
    `max_sessions` most recent streams are remembered, so a long-running server does not grow)."""

    def __init__(self, window: int = 10, max_sessions: int = 64):
        self.window, self.max_sessions = window, max_sessions
        self._times: "OrderedDict[str, list[float]]" = OrderedDict()
        self._lock = threading.Lock()

    def tick(self, session: str) -> float:
        now = time.perf_counter()
        with self._lock:
            t = self._times.setdefault(session, [])
            self._times.move_to_end(session)
            while len(self._times) > self.max_sessions:
                self._times.popitem(last=False)
            if t and now - t[-1] > 2.0:     # a new recording: do not average over the pause
                t.clear()
            t.append(now)
            del t[:-self.window]
            return (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._times)


@dataclass
class Services:
    cb: Callbacks
    default: DefaultModel
    examples: list = field(default_factory=list)          # [(path, caption)]
    live_rate: FrameRate = field(default_factory=FrameRate)
    room: Any = None                                       # the lesson's one training slot (TrainingRoom)

    @property
    def manager(self):
        return self.cb.manager
