"""One admitted generation, from taking a turn to giving it back, exactly once.

The daemon holds the queue; the worker decodes. On a client disconnect the generation is
aborted: the worker's stop flag is set (checked on every token) and the turn is released, so
the next request never waits for an abandoned one.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol

from assistantd.api.admission import Admission
from assistantd.api.fairness import KeyShare
from assistantd.api.hand_over import Asked
from assistantd.control.stats import RequestRecord
from assistantd.errors import AssistantError, Unavailable, UpstreamUnavailable, WorkerFailed
from assistantd.vocab import GenerationKind, Outcome
from assistantd.worker.client import WorkerStream
from assistantd.worker.protocol import priority_of

_background: set[asyncio.Task[None]] = set()


class Held(Protocol):
    """A hold on whatever answers: a local worker's lease or an upstream's."""

    @property
    def client(self) -> Any: ...
    @property
    def spec(self) -> Any: ...
    def release(self) -> None: ...


class Rung(Protocol):
    """What a generation is served by: the Supervisor of a local worker, or an upstream."""

    async def lease(self, timeout_s: float) -> Any: ...


def run_in_background(coro: Any) -> None:
    """Cleanup that must happen even when the calling task is being cancelled."""
    task = asyncio.get_running_loop().create_task(coro)
    _background.add(task)
    task.add_done_callback(_background.discard)


def outcome_of(exc: BaseException) -> Outcome:
    """How a request that raised ended: not admitted (503), the client's mistake (4xx), the
    client gone while it waited, or a failure of ours."""
    if isinstance(exc, Unavailable | UpstreamUnavailable):
        return "rejected"  # not taken: a 503, or an upstream that the local rung stood in for
    if isinstance(exc, AssistantError):
        return "invalid" if exc.status < 500 else "error"
    if isinstance(exc, asyncio.CancelledError):
        return "cancelled"
    return "error"


class Generation:
    def __init__(
        self,
        *,
        admission: Admission,
        supervisor: Rung,
        record: Callable[[RequestRecord], None],
        endpoint: str,
        wait_timeout_s: float,
        on_decode_speed: Callable[[float, int], None] | None = None,
        key: str | None = None,
        share: KeyShare | None = None,
        on_failure: Callable[[str], None] | None = None,
    ) -> None:
        self._on_failure = on_failure
        self._priority = 1
        self._on_decode_speed = on_decode_speed
        self._key = key
        self._share = share
        self._shared = False
        self._lease: Held | None = None
        self._admission = admission
        self._supervisor = supervisor
        self._record = record
        self._endpoint = endpoint
        self._wait_timeout_s = wait_timeout_s
        self._stream: WorkerStream | None = None
        self._holding = False
        self._closed = False
        self._first: dict[str, Any] | None = None
        self._opened_at = time.perf_counter()
        self._queue_ms = 0.0
        self._first_token_at: float | None = None
        self._started_at: float | None = None  # when the worker was asked
        self.end: dict[str, Any] = {}
        self.id = uuid.uuid4().hex
        self._hand_over: Asked | None = None  # until the first chunk is written
        self.handed_over = False  # the worker wrote the chunks to the client itself

    async def open(
        self, kind: GenerationKind, params: dict[str, Any], hand_over: Asked | None = None
    ) -> None:
        """Wait for a turn and the first event, so errors become proper HTTP statuses. With
        `hand_over` (a local worker only) the worker is handed the client's socket once
        `events`' consumer has written the first chunk (api/hand_over.py)."""
        try:
            if self._share is not None:
                self._share.enter(self._key)  # over its share: 429, before any queue
                self._shared = True
            self._priority = priority_of(kind, params)
            await self._admission.acquire(self._priority, self._key)
            self._holding = True
            self._lease = await self._supervisor.lease(self._wait_timeout_s)
            self._started_at = time.perf_counter()
            self._queue_ms = (self._started_at - self._opened_at) * 1000
            self._stream = await self._lease.client.open_generation(
                self.id, kind, params, hand_over.spec if hand_over else None
            )
            self._hand_over = hand_over
            self._events = self._stream.events()
            self._first = await anext(self._events)
        except BaseException as exc:
            self.close(outcome_of(exc))
            raise

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Chunk events; the end event is kept in `self.end`. Asked for the next one, the
        consumer has written the last: after the first, a hand-over asked for happens here,
        and the events that follow are then the end alone."""
        assert self._first is not None
        event: dict[str, Any] | None = self._first
        while event is not None:
            if event["type"] == "end":
                self.end = event
                return
            if self._first_token_at is None:
                self._first_token_at = time.perf_counter()
            yield event
            if self._hand_over is not None and self._stream is not None:
                self.handed_over = self._stream.hand_over(self._hand_over.client())
                self._hand_over = None
            try:
                event = await anext(self._events, None)
            except WorkerFailed as exc:
                if self._on_failure is not None:
                    self._on_failure(exc.message)  # counts against an upstream rung
                raise

    def close(self, outcome: Outcome) -> None:
        """Give the turn back now; stop the worker and record the request in the background.

        Safe to call from a task that is being cancelled (a client that went away)."""
        if self._closed:
            return
        self._closed = True
        if self._holding:
            self._admission.release(self._priority)
        if self._shared and self._share is not None:
            self._share.leave(self._key)
        run_in_background(self._finish(outcome))

    async def _finish(self, outcome: Outcome) -> None:
        try:
            if self._stream is not None:
                end = await self._stream.finish()
                self.end = self.end or end or {}
        finally:
            if self._lease is not None:
                self._lease.release()  # the worker may now be retired by a swap
        usage = self.end.get("usage", {})
        timings = self.end.get("timings", {})
        if outcome == "ok" and timings and self._on_decode_speed is not None:
            self._on_decode_speed(timings["predicted_per_second"], timings["predicted_n"])
        self._record(
            RequestRecord(
                endpoint=self._endpoint,
                outcome=outcome,
                queue_ms=round(self._queue_ms, 2),
                prompt_tokens=usage.get("prompt_tokens", 0),
                completion_tokens=usage.get("completion_tokens", 0),
                ttft_ms=(
                    round((self._first_token_at - self._opened_at) * 1000, 2)
                    if self._first_token_at
                    else None
                ),
                service_ttft_ms=(
                    round((self._first_token_at - self._started_at) * 1000, 2)
                    if self._first_token_at and self._started_at
                    else None
                ),
                prompt_tok_s=round(timings["prompt_per_second"], 1) if timings else None,
                decode_tok_s=round(timings["predicted_per_second"], 2) if timings else None,
                model=self._lease.spec.model_id if self._lease else "",
                key=self._key,
                draft_tokens=int(timings.get("draft_n", 0)) if timings else 0,
                draft_accepted=int(timings.get("draft_n_accepted", 0)) if timings else 0,
                handed_over=self.handed_over,
            )
        )
