"""Generation requests take turns in arrival order; a bounded number may wait."""

from __future__ import annotations

import asyncio

from assistantd.errors import QueueFull, WorkerUnavailable


class Admission:
    """One generation runs at a time (the worker decodes one sequence); others queue, bounded."""

    def __init__(self, max_waiting: int, timeout_s: float) -> None:
        self._lock = asyncio.Lock()  # wakes waiters first-in, first-out
        self._max_waiting = max_waiting
        self._timeout_s = timeout_s
        self.waiting = 0

    @property
    def active(self) -> int:
        return 1 if self._lock.locked() else 0

    async def acquire(self) -> None:
        if self._lock.locked() and self.waiting >= self._max_waiting:
            raise QueueFull(
                f"{self.waiting} requests are already waiting (ASSISTANT_QUEUE_SIZE="
                f"{self._max_waiting}); retry shortly",
                retry_after_s=2,
            )
        self.waiting += 1
        try:
            await asyncio.wait_for(self._lock.acquire(), self._timeout_s)
        except TimeoutError:
            raise WorkerUnavailable(
                f"waited {self._timeout_s:.0f} s for a turn; the daemon is overloaded, retry later",
                retry_after_s=5,
            ) from None
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._lock.release()
