"""Keeps one worker serving: starts it, restarts it with backoff, gives up on a crash loop, and
swaps it for another model without failing an admitted request.

Requests hold a lease on the worker they were given; a retired worker is stopped only once its
leases are returned. Swaps either overlap (start the new worker, switch, drain the old one) or,
when both models do not fit at once, drain first (new leases wait, bounded, and go to the new
worker).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from assistantd.errors import WorkerStartFailed, WorkerUnavailable
from assistantd.vocab import WorkerState
from assistantd.worker.client import WorkerClient
from assistantd.worker.process import WorkerProcess, WorkerSpec

log = logging.getLogger("assistantd.supervisor")

WorkerFactory = Callable[[WorkerSpec], WorkerProcess]


class Running:
    """A ready worker and how many requests hold it."""

    def __init__(self, worker: WorkerProcess, info: dict[str, Any]) -> None:
        self.worker = worker
        self.info = info
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def stop_when_idle(self) -> None:
        await self.idle.wait()
        await self.worker.stop()


class Lease:
    """A request's hold on one worker; release exactly once, after its last byte."""

    def __init__(self, running: Running) -> None:
        self._running = running
        self._released = False
        running.in_flight += 1
        running.idle.clear()

    @property
    def client(self) -> WorkerClient:
        return self._running.worker.client

    @property
    def spec(self) -> WorkerSpec:
        return self._running.worker.spec

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        self._running.in_flight -= 1
        if self._running.in_flight == 0:
            self._running.idle.set()


class Supervisor:
    """States: loading → serving ⇄ restarting | shifting → failed; stopping at shutdown."""

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
        self._spec = spec
        self._factory = factory
        self._start_timeout_s = start_timeout_s
        self._backoff_s = backoff_s
        self._max_restarts = max_restarts
        self._window_s = restart_window_s
        self._crashes: collections.deque[float] = collections.deque()
        self._ready = asyncio.Event()
        self._changed = asyncio.Event()
        self._lifecycle = asyncio.Lock()  # one start, restart or swap at a time
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._retiring: dict[asyncio.Task[None], Running] = {}
        self._sockets = itertools.count()
        self._current: Running | None = None
        self.state: WorkerState = "loading"
        self.last_error: str | None = None
        self.restarts = 0
        self.ever_ready = False
        # Asked before a restart: the spec to start instead (a device that went away).
        self.respec: Callable[[WorkerSpec], Awaitable[WorkerSpec]] | None = None

    @property
    def spec(self) -> WorkerSpec:
        return self._current.worker.spec if self._current else self._spec

    @property
    def worker(self) -> WorkerProcess | None:
        return self._current.worker if self._current else None

    @property
    def worker_info(self) -> dict[str, Any]:
        return self._current.info if self._current else {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="supervisor")

    def _with_socket(self, spec: WorkerSpec) -> WorkerSpec:
        """Each worker gets its own socket, so two can run side by side during a swap."""
        base: Path = spec.socket_path
        name = f"{base.stem}-{next(self._sockets)}.sock"  # one stem per role: no collisions
        return dataclasses.replace(spec, socket_path=base.with_name(name))

    async def _launch(self, spec: WorkerSpec) -> Running:
        worker = self._factory(self._with_socket(spec))
        await worker.start()
        try:
            info = await worker.wait_ready(self._start_timeout_s)
        except BaseException:
            await worker.stop()
            raise
        return Running(worker, info)

    def _install(self, running: Running) -> None:
        self._current = running
        self.ever_ready = True
        self._set_state("serving")
        self._ready.set()
        log.info("worker %s serving %s", running.worker.pid, running.worker.spec.model_id)

    async def _run(self) -> None:
        backoff = self._backoff_s
        while not self._stopping:
            async with self._lifecycle:
                if self._current is None:
                    self._set_state("restarting" if self.ever_ready else "loading")
                    if self.ever_ready and self.respec is not None:
                        self._spec = await self.respec(self._spec)
                    try:
                        self._install(await self._launch(self._spec))
                        backoff = self._backoff_s
                    except WorkerStartFailed as exc:
                        self.last_error = exc.message
                        log.error("%s", exc.message)
                running = self._current
            if running is not None:
                code = await running.worker.wait_exit()
                if self._stopping:
                    break
                if running is not self._current:
                    continue  # retired by a swap, not a crash
                self._current = None
                self._ready.clear()
                tail = running.worker.stderr_tail(3)
                self.last_error = f"the model worker (pid {running.worker.pid}) exited with " + (
                    f"status {code}" + (f": {tail}" if tail else "")
                )
                log.error("%s", self.last_error)
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

    async def swap(self, spec: WorkerSpec, *, overlap: bool) -> None:
        """Serve `spec` instead; raises WorkerStartFailed (the old model keeps or resumes
        serving) if the new worker cannot start."""
        async with self._lifecycle:
            old = self._current
            if old is None:
                self._spec = spec
                return  # nothing serving: the run loop starts `spec` next
            self._set_state("shifting")
            if overlap:
                try:
                    new = await self._launch(spec)
                except WorkerStartFailed as exc:
                    self._set_state("serving")
                    message = f"kept {old.worker.spec.model_id}: {exc.message}"
                    raise WorkerStartFailed(message) from None
                self._spec = spec
                self._install(new)
                self._retire(old)
                return
            self._ready.clear()  # new requests wait for the new worker
            await old.idle.wait()
            self._current = None
            await old.worker.stop()
            try:
                self._spec = spec
                self._install(await self._launch(spec))
            except WorkerStartFailed as exc:
                self._spec = old.worker.spec  # the run loop brings the old model back
                raise WorkerStartFailed(
                    f"{exc.message}; going back to {old.worker.spec.model_id}"
                ) from None

    def _retire(self, running: Running) -> None:
        task = asyncio.create_task(running.stop_when_idle())
        self._retiring[task] = running
        task.add_done_callback(lambda done: self._retiring.pop(done, None))

    def _set_state(self, state: WorkerState) -> None:
        self.state = state
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait_settled(self) -> str:
        """Wait until the first load has either succeeded or failed for good."""
        while self.state not in ("serving", "failed") and not self.ever_ready:
            await self._changed.wait()
        return self.state

    async def lease(self, timeout_s: float) -> Lease:
        """A hold on the serving worker, waiting (bounded) through a load, restart or swap."""
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
        assert self._current is not None
        return Lease(self._current)

    async def stop(self) -> None:
        self._stopping = True
        self._set_state("stopping")
        for task, running in list(self._retiring.items()):
            task.cancel()
            await running.worker.stop()
        if self._current is not None:
            await self._current.worker.stop()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
