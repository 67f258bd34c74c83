"""Keep freed memory in the process, so that a capture's maps do not cost fresh pages every time.

A capture keeps every attention matrix of the forward (ViT-Ti: 12 × 3 × 197 × 197 floats, 5.6 MB).
With glibc's default settings the memory of the previous capture's maps, once freed, is handed back to
the operating system (heap trimming, and ``mmap`` for blocks above its threshold), so the next capture
gets fresh zeroed pages: measured 4-5 ms on ViT-Ti (≈ 15 % of its 30 ms forward, one thread) spent on
page faults. Raising glibc's trim and mmap thresholds keeps that memory for reuse.

This is a process-wide setting, so the library never makes it on import: the app and the CLIs call
`keep_freed_memory()` at start (they own their process); a script of yours may call it too. It does
nothing where the C library is not glibc. Cost: up to ``trim_mb`` of freed memory stays mapped.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_done = False


def keep_freed_memory(trim_mb: int = 256, mmap_mb: int = 32) -> bool:
    """Set glibc's ``M_TRIM_THRESHOLD`` and ``M_MMAP_THRESHOLD`` (``mallopt``); True if it took effect.

    ``mmap_mb`` is capped at 32 MB (glibc's own upper bound for its dynamic threshold on 64-bit), so
    large image buffers still come from ``mmap`` and go back to the system when freed.
    """
    global _done
    if _done:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = (mallopt(_M_TRIM_THRESHOLD, int(trim_mb) << 20) == 1
          and mallopt(_M_MMAP_THRESHOLD, min(int(mmap_mb), 32) << 20) == 1)
    _done = ok
    return ok


__all__ = ["keep_freed_memory"]
