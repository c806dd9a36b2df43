"""A hold on a worker's batch as 8 bytes in a file beside its socket: a CLOCK_MONOTONIC
deadline (system-wide on Linux and macOS) that the daemon writes and the slot engine reads
before every step. Until it passes, the engine steps no batch and its threads sleep, so another
worker has the cores. No request on the way: a busy worker answers HTTP in tens of
milliseconds, a memory-mapped read costs nothing."""

from __future__ import annotations

import mmap
import struct
import time
from pathlib import Path

_FORMAT = "d"
SIZE = struct.calcsize(_FORMAT)
LONGEST_S = 5.0  # a hold never outlasts this, whatever was written
# How often a held engine looks again. Not shorter: on a 2-core machine every wake-up of the
# held worker preempts a thread of the worker that has the cores, and llama.cpp's threads wait
# for each other at every barrier (a 3 ms poll cost autocomplete ~40% of its TTFT).
HOLD_POLL_S = 0.05


def path_for(socket_path: Path) -> Path:
    return socket_path.with_suffix(".hold")


class HoldFlag:
    def __init__(self, path: Path, *, create: bool = False) -> None:
        if create:
            path.write_bytes(bytes(SIZE))
            path.chmod(0o600)
        with path.open("r+b") as handle:
            self._map = mmap.mmap(handle.fileno(), SIZE)

    def seconds_left(self) -> float:
        """How long the batch is still held (0 when not)."""
        (deadline,) = struct.unpack_from(_FORMAT, self._map)
        return min(max(deadline - time.monotonic(), 0.0), LONGEST_S)

    def hold(self, seconds: float) -> None:
        """Hold for `seconds` from now; 0 releases."""
        deadline = time.monotonic() + seconds if seconds > 0 else 0.0
        struct.pack_into(_FORMAT, self._map, 0, deadline)

    def close(self) -> None:
        self._map.close()
