"""llama.cpp work other than decoding slots, run on the slot engine's thread between steps.

llama.cpp work started from any other thread (an embeddings batch on a request's handler
thread) starts a second OpenMP team, and the model then decoded about 30% slower for the rest
of the process (SmolLM2 on 2 cores: 110 tok/s before one /v1/embeddings request, 77 after).
So such work is handed to the engine thread, which runs it between two steps."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any


class EngineCalls:
    """Calls waiting for the engine thread; every method but `run` under the engine's lock."""

    def __init__(self) -> None:
        self._pending: list[tuple[Callable[[], Any], Future[Any]]] = []

    def __bool__(self) -> bool:
        return bool(self._pending)

    def add(self, fn: Callable[[], Any]) -> Future[Any]:
        done: Future[Any] = Future()
        self._pending.append((fn, done))
        return done

    def take(self) -> list[tuple[Callable[[], Any], Future[Any]]]:
        taken, self._pending = self._pending, []
        return taken

    def fail(self, err: BaseException) -> None:
        for _, done in self.take():
            done.set_exception(err)

    @staticmethod
    def run(calls: list[tuple[Callable[[], Any], Future[Any]]]) -> None:
        """On the engine thread: each call's result or exception goes to its caller."""
        for fn, done in calls:
            try:
                done.set_result(fn())
            except BaseException as exc:  # the caller's to handle; the engine goes on
                done.set_exception(exc)
