"""A generation's events written to the daemon's socket from the engine thread, which must
never wait: what the socket cannot take at once is queued, and the request's handler thread
writes it, in order, blocking on its own time."""

from __future__ import annotations

import collections
import socket
import threading
from collections.abc import Callable

from assistantd.worker.protocol import EndEvent, ErrorEvent, Event, ndjson


class SocketEvents:
    """One generation's NDJSON events on `sock`; `run` (the handler thread) returns once the
    last event is written or the daemon has hung up."""

    def __init__(
        self,
        sock: socket.socket,
        hang_up: Callable[[], None],
        error_event: Callable[[BaseException], ErrorEvent],
    ) -> None:
        self._sock = sock
        self._hang_up = hang_up  # stops the decoding: nobody reads it any more
        self._error_event = error_event
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._waiting: collections.deque[bytes] = collections.deque()
        self._writing = False  # the handler thread is writing what waited
        self._ended = False
        self._broken = False
        self.end: EndEvent | None = None

    def send(self, event: Event) -> None:
        if event["type"] == "end":
            self.end = event
        self._write(ndjson(event), last=event["type"] == "end")

    def fail(self, exc: BaseException) -> None:
        self._write(ndjson(self._error_event(exc)), last=True)

    def _write(self, data: bytes, last: bool) -> None:
        with self._lock:
            self._ended = self._ended or last
            if self._broken:
                pass
            elif self._waiting or self._writing:
                self._waiting.append(data)
            else:
                try:
                    sent = self._sock.send(data, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    sent = 0
                except OSError:
                    self._broke()
                    sent = len(data)
                if sent < len(data):
                    self._waiting.append(data[sent:])
            if self._waiting or self._ended or self._broken:
                self._ready.notify()  # only then: a wake-up per token is what this saves

    def _broke(self) -> None:
        self._broken = True
        self._waiting.clear()
        self._hang_up()

    def run(self) -> None:
        """Write what waits until the last event is out (on the handler thread)."""
        while True:
            with self._lock:
                while not self._waiting and not self._ended and not self._broken:
                    self._ready.wait()
                if not self._waiting or self._broken:
                    return
                data = self._waiting.popleft()
                self._writing = True
            try:
                self._sock.sendall(data)
            except OSError:
                with self._lock:
                    self._broke()
            finally:
                with self._lock:
                    self._writing = False
