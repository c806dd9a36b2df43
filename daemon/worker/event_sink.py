"""A job's slot events shaped on the engine thread as they come, in the place of its queue.

Where the decode threads take every core, a handler thread woken for each token does the same
serial work (its Python holds the GIL, its CPU is taken from a decode thread) plus a wake-up
and a GIL hand-off per token; so there the engine thread shapes and writes each event itself,
between two steps. Where a core is free (a GPU decodes), handler threads shape events while
the engine waits in llama_decode, and the queue stays (engine.Engine.shapes_inline).
"""

from __future__ import annotations

import threading
from typing import Any, Protocol

from assistantd.errors import WorkerFailed
from assistantd.worker.answers import Answer
from assistantd.worker.protocol import Event
from assistantd.worker.slot_state import DONE, SlotEngineError


def reported(exc: BaseException) -> BaseException:
    """A failure as the daemon is told of it: the slot engine's own as the model's failure."""
    if isinstance(exc, SlotEngineError):
        return WorkerFailed(f"the model failed while generating: {exc}")
    return exc


class EventOut(Protocol):
    """Where shaped events go; neither call may block the engine thread."""

    def send(self, event: Event) -> None: ...
    def fail(self, exc: BaseException) -> None: ...


class EventSink:
    """Takes `put` from the slot engine as a job's queue would; hands shaped events to `out`."""

    def __init__(self, answer: Answer, out: EventOut, cancel: threading.Event) -> None:
        self._answer, self._out, self._cancel = answer, out, cancel
        self._done = False

    def put(self, event: Any) -> None:
        if self._done:
            return  # after a failure: the slot engine still ends the job
        try:
            if event is DONE:
                self._done = True
                self._out.send(self._answer.finish())
            elif isinstance(event, BaseException):
                self._done = True
                self._out.fail(reported(event))
            else:
                for chunk in self._answer.feed(event):
                    self._out.send(chunk)
        except Exception as exc:  # this request ends; the engine thread goes on
            self._done = True
            self._cancel.set()
            self._out.fail(exc)
