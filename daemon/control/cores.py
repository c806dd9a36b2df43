"""On a CPU the workers share the cores, and llama.cpp's threads spin: two workers decoding at
once both slow down. Autocomplete is the latency-bound role, so while one of its prompts is
evaluated (request sent → first token) every other CPU worker holds its batch: a deadline in
the worker's hold flag (worker/hold.py), read before every step, so the hold takes effect
within one step and a lost release never stalls chat for more than HOLD_S."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from assistantd.control.served import Served
from assistantd.worker.client import WorkerClient

HOLD_S = 2.0  # the longest one autocomplete prefill may keep chat waiting


class CoreShare:
    def __init__(self, workers: Callable[[], list[Served]], *, enabled: bool = True) -> None:
        self._workers = workers
        self.enabled = enabled
        self._active = 0
        self.holds = 0  # how often the other workers gave way

    def _others(self, served: Served) -> list[WorkerClient]:
        return [
            w.supervisor.worker.client
            for w in self._workers()
            if w is not served and w.supervisor.worker is not None and w.on_cpu
        ]

    @contextlib.contextmanager
    def first_token(self, served: Served) -> Iterator[None]:
        """Other CPU workers hold while `served` (autocomplete) evaluates a prompt."""
        latency_bound = self.enabled and served.role == "autocomplete" and served.on_cpu
        others = self._others(served) if latency_bound else []
        if not others:
            yield
            return
        self._active += 1
        if self._active == 1:
            self.holds += 1
            for client in others:
                client.hold(HOLD_S)
        try:
            yield
        finally:
            self._active -= 1
            if self._active == 0:
                for client in self._others(served):
                    client.hold(0)
