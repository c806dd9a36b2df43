"""A worker's resident memory, read the same way by /status and the memory-pressure check."""

from __future__ import annotations

import contextlib

import psutil


def resident_bytes(pid: int | None) -> int | None:
    """Resident set size of a process, or None when there is none (or it just exited)."""
    if pid is None:
        return None
    with contextlib.suppress(psutil.Error):
        return int(psutil.Process(pid).memory_info().rss)
    return None
