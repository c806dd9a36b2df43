"""On a CPU the workers share the cores, and llama.cpp's threads spin: two workers decoding at
once both slow down. Autocomplete is the latency-bound role, so while one of its prompts is
evaluated (request sent → first token) every other CPU worker holds its batch. The hold is
bounded in the worker too (HOLD_S), so a lost release never stalls chat for long."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from assistantd.control.served import Served

HOLD_S = 2.0  # the longest one autocomplete prefill may keep chat waiting


class CoreShare:
    def __init__(self, workers: Callable[[], list[Served]], *, enabled: bool = True) -> None:
        self._workers = workers
        self.enabled = enabled
        self._active = 0
        self.holds = 0  # how often chat gave way (for /status and the benchmark)

    def _others(self, served: Served) -> list[Served]:
        return [
            w
            for w in self._workers()
            if w is not served and w.supervisor.worker is not None and w.on_cpu
        ]

    @contextlib.asynccontextmanager
    async def first_token(self, served: Served) -> AsyncIterator[None]:
        """Other CPU workers hold while `served` (autocomplete) evaluates a prompt."""
        latency_bound = self.enabled and served.role == "autocomplete" and served.on_cpu
        others = self._others(served) if latency_bound else []
        if not others:
            yield
            return
        self._active += 1
        if self._active == 1:
            self.holds += 1
            for other in others:
                await other.supervisor.worker.client.hold(HOLD_S)  # type: ignore[union-attr]
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                for other in self._others(served):
                    await other.supervisor.worker.client.hold(0)  # type: ignore[union-attr]
