"""Keeps one worker running: starts it, restarts it with backoff, gives up on a crash loop."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from daemon.errors import WorkerStartFailed, WorkerUnavailable
from daemon.worker import WorkerProcess, WorkerSpec
from daemon.worker_client import WorkerClient

log = logging.getLogger("assistantd.supervisor")

WorkerFactory = Callable[[WorkerSpec], WorkerProcess]


class Supervisor:
    """States: loading → serving ⇄ restarting → failed; stopping at shutdown."""

    def __init__(
        self,
        spec: WorkerSpec,
        *,
        start_timeout_s: float,
        backoff_s: float,
        max_restarts: int,
        restart_window_s: float,
        factory: WorkerFactory = WorkerProcess,
    ) -> None:
        self.spec = spec
        self._factory = factory
        self._start_timeout_s = start_timeout_s
        self._backoff_s = backoff_s
        self._max_restarts = max_restarts
        self._window_s = restart_window_s
        self._crashes: collections.deque[float] = collections.deque()
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self.worker: WorkerProcess | None = None
        self.worker_info: dict[str, Any] = {}
        self.state = "loading"
        self.last_error: str | None = None
        self.restarts = 0
        self.ever_ready = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="supervisor")

    async def _run(self) -> None:
        backoff = self._backoff_s
        while not self._stopping:
            self._set_state("loading" if not self.ever_ready else "restarting")
            worker = self._factory(self.spec)
            self.worker = worker
            await worker.start()
            try:
                self.worker_info = await worker.wait_ready(self._start_timeout_s)
            except WorkerStartFailed as exc:
                self.last_error = exc.message
                log.error("%s", exc.message)
            else:
                self.ever_ready = True
                self._set_state("serving")
                self._ready.set()
                log.info("worker %s serving %s", worker.pid, self.spec.model_id)
                backoff = self._backoff_s
                code = await worker.wait_exit()
                self._ready.clear()
                if self._stopping:
                    break
                self.last_error = (
                    f"the model worker (pid {worker.pid}) exited with status {code}"
                    + (f": {worker.stderr_tail(3)}" if worker.stderr_tail(3) else "")
                )
                log.error("%s", self.last_error)
            await worker.stop()
            if self._stopping:
                break
            now = time.monotonic()
            self._crashes.append(now)
            while self._crashes and now - self._crashes[0] > self._window_s:
                self._crashes.popleft()
            if not self.ever_ready or len(self._crashes) > self._max_restarts:
                self._set_state("failed")
                log.error("giving up on the model worker: %s", self.last_error)
                return
            self._set_state("restarting")
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 30.0)
            self.restarts += 1

    def _set_state(self, state: str) -> None:
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_settled(self) -> str:
        """Wait until the first load has either succeeded or failed for good."""
        while self.state not in ("serving", "failed") and not self.ever_ready:
            await self._changed.wait()
        return self.state

    async def client(self, timeout_s: float) -> WorkerClient:
        """The serving worker's client, waiting (bounded) through a load or restart."""
        if self.state == "failed":
            raise WorkerUnavailable(
                f"the model worker crashed repeatedly and assistantd gave up: {self.last_error}. "
                "Fix the cause and restart assistantd.",
                retry_after_s=60,
            )
        if not self._ready.is_set():
            try:
                await asyncio.wait_for(self._ready.wait(), timeout_s)
            except TimeoutError:
                raise WorkerUnavailable(
                    f"the model is {self.state}; try again shortly", retry_after_s=5
                ) from None
        assert self.worker is not None
        return self.worker.client

    async def stop(self) -> None:
        self._stopping = True
        self._set_state("stopping")
        if self.worker is not None:
            await self.worker.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
