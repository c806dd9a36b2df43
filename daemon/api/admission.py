"""Generation requests take a slot of the worker; when all are busy they wait, bounded, with
autocomplete admitted ahead of waiting chat answers, then the API keys in turn (then arrival
order): each waiter gets a tag one past its key's last, or past the last one admitted, so a key
with twenty queued requests and a key with one alternate (start-time fair queuing).

A worker that serves autocomplete keeps one slot for it (`reserve`): chat answers take the
others, so a flood of chat (one person's agent loop, or four streams at once) never leaves an
autocomplete request waiting for a whole answer to end."""

from __future__ import annotations

import asyncio
import heapq
import itertools

from assistantd.errors import QueueFull, WorkerUnavailable


class Admission:
    """Up to `slots` generations run at once (the worker decodes them in one batch)."""

    def __init__(self, slots: int, max_waiting: int, timeout_s: float) -> None:
        self.capacity = slots
        self.active = 0
        self.active_chat = 0  # priority-1 turns held
        self.reserve = 0  # slots only autocomplete (priority 0) may take
        self._max_waiting = max_waiting
        self._timeout_s = timeout_s
        self._waiters: list[tuple[int, int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._virtual = 0  # the tag of the waiter admitted last
        self._last_tag: dict[str | None, int] = {}

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    async def acquire(self, priority: int = 1, key: str | None = None) -> None:
        """A turn; `priority` 0 (autocomplete) goes ahead of 1 (chat) in the queue, and the
        keys take turns within a priority."""
        if self._fits(priority) and not any(w[0] <= priority for w in self._waiters):
            self._take(priority)
            return
        if len(self._waiters) >= self._max_waiting:
            raise QueueFull(
                f"{self.waiting} requests are already waiting (ASSISTANT_QUEUE_SIZE="
                f"{self._max_waiting}); retry shortly",
                retry_after_s=2,
            )
        turn: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        tag = max(self._virtual, self._last_tag.get(key, 0)) + 1
        self._last_tag[key] = tag
        entry = (priority, tag, next(self._order), turn)
        heapq.heappush(self._waiters, entry)
        try:
            await asyncio.wait_for(asyncio.shield(turn), self._timeout_s)
        except BaseException as exc:
            if turn.done() and not turn.cancelled():
                self.release(priority)  # granted just as we gave up: pass it on
            else:
                turn.cancel()
                self._waiters.remove(entry)
                heapq.heapify(self._waiters)
            if isinstance(exc, TimeoutError):
                raise WorkerUnavailable(
                    f"waited {self._timeout_s:.0f} s for a turn; the daemon is overloaded, "
                    "retry later",
                    retry_after_s=5,
                ) from None
            raise

    def _fits(self, priority: int) -> bool:
        if self.active >= self.capacity:
            return False
        return priority == 0 or self.active_chat < self.capacity - self.reserve

    def _take(self, priority: int) -> None:
        self.active += 1
        self.active_chat += priority != 0

    def release(self, priority: int = 1) -> None:
        """Give a turn back, then hand turns to the first waiters that may take one."""
        self.active -= 1
        self.active_chat -= priority != 0
        while self._waiters and self._fits(self._waiters[0][0]):
            waiter_priority, tag, _, turn = heapq.heappop(self._waiters)
            if not turn.done():
                self._virtual = max(self._virtual, tag)
                self._take(waiter_priority)
                turn.set_result(None)
