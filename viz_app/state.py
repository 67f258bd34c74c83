"""Per-session results: a bounded, thread-safe LRU of analyses, keyed by (session, model, image).

One `Analysis` is everything one forward pass produced for one (image, model) pair, plus the maps
derived from it so far (rollout per head fusion, gradient maps per target class, ...). Views are
re-rendered from it without running the model again.

Bounds: at most `max_entries` analyses in all, at most `max_per_session` per browser session, and
at most `max_bytes` of tensors; the least recently used entry goes first. Keys start with the
session id, so one browser tab can never read another tab's images or maps.
"""
from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch
from PIL import Image

from attention.capture import CaptureResult
from attention.preprocess import PreparedImage

Key = tuple[str, str, str]   # (session, model key, image sha256)


def _nbytes(value) -> int:
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (tuple, list)):
        return sum(_nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if dataclasses.is_dataclass(value) and not isinstance(value, type):   # e.g. the lesson's cached steps
        return sum(_nbytes(getattr(value, f.name)) for f in dataclasses.fields(value))
    return 0


@dataclass
class Analysis:
    """One forward pass of one model on one image, and what has been derived from it."""

    model_key: str
    image_sha: str
    photo: Image.Image                 # the decoded, upright RGB photo
    display: np.ndarray                # the photo at display size, (h, w, 3) uint8
    prepared: PreparedImage
    result: CaptureResult              # logits + every attention map (float16)
    predictions: list[dict]            # top-5 [{"label", "index", "probability"}]
    class_names: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    derived: dict = field(default_factory=dict)
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    @property
    def top1(self) -> int:
        if not self.predictions:
            from attention.errors import MethodNotDefinedError
            raise MethodNotDefinedError("this model has no classification head, so there is no class to explain; "
                                        "use raw attention or rollout")
        return int(self.predictions[0]["index"])

    def nbytes(self) -> int:
        base = self.result.nbytes() + _nbytes(self.prepared.tensor) + self.display.nbytes
        base += self.photo.width * self.photo.height * 3
        with self.lock:
            return base + sum(_nbytes(v) for v in self.derived.values())

    def cached(self, key, compute: Callable[[], object]):
        """``derived[key]``, computed once (per analysis, under its lock) on first use."""
        with self.lock:
            if key not in self.derived:
                self.derived[key] = compute()
            return self.derived[key]


class SessionStore:
    """Bounded LRU of `Analysis` objects; all methods are thread-safe."""

    def __init__(self, max_entries: int = 12, max_per_session: int = 4, max_bytes: int = 1_500_000_000):
        self.max_entries = max_entries
        self.max_per_session = max_per_session
        self.max_bytes = max_bytes
        self._items: "OrderedDict[Key, Analysis]" = OrderedDict()
        self._sizes: dict[Key, int] = {}
        self._lock = threading.Lock()

    def get(self, session: str, model_key: str, image_sha: str) -> Optional[Analysis]:
        key = (session, model_key, image_sha)
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, session: str, analysis: Analysis) -> None:
        key = (session, analysis.model_key, analysis.image_sha)
        size = analysis.nbytes()
        with self._lock:
            self._items[key] = analysis
            self._items.move_to_end(key)
            self._sizes[key] = size
            self._evict(keep=key)

    def touch(self, session: str, analysis: Analysis) -> None:
        """Re-measure an entry after derived maps were added to it (bytes bound)."""
        key = (session, analysis.model_key, analysis.image_sha)
        size = analysis.nbytes()
        with self._lock:
            if key in self._items:
                self._sizes[key] = size
                self._evict(keep=key)

    def _evict(self, keep: Key) -> None:
        own = [k for k in self._items if k[0] == keep[0]]
        for k in own[: max(0, len(own) - self.max_per_session)]:
            self._drop(k)
        for k in list(self._items):
            if len(self._items) <= self.max_entries and self.total_bytes() <= self.max_bytes:
                break
            if k != keep:
                self._drop(k)

    def _drop(self, key: Key) -> None:
        self._items.pop(key, None)
        self._sizes.pop(key, None)

    def total_bytes(self) -> int:
        """Bytes held (call with the lock held, or accept a momentary value)."""
        return sum(list(self._sizes.values()))

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def sessions(self) -> set[str]:
        with self._lock:
            return {k[0] for k in self._items}

    def clear_session(self, session: str) -> None:
        with self._lock:
            for k in [k for k in self._items if k[0] == session]:
                self._drop(k)

    def stats(self) -> dict:
        with self._lock:
            return {"entries": len(self._items), "bytes": self.total_bytes(), "max_entries": self.max_entries,
                    "max_bytes": self.max_bytes, "sessions": len({k[0] for k in self._items})}
