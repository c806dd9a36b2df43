"""A generation's events written from the engine thread, which must never wait: what a socket
cannot take at once is queued, and the request's handler thread writes it, in order, blocking
on its own time.

Events go to the daemon's socket as NDJSON; once the daemon has handed over the client's
socket (worker/client_body.py), chunks go to the client instead and only the end (or an
error) to the daemon, after every chunk before it is written."""

from __future__ import annotations

import collections
import socket
import threading
from collections.abc import Callable

from assistantd.worker.client_body import ClientBody, wait_for_hand_over
from assistantd.worker.protocol import EndEvent, ErrorEvent, Event, HandOver, ndjson

# (for the client, bytes): where queued data goes is fixed when it is queued.
_Item = tuple[bool, bytes]


class SocketEvents:
    """One generation's events on `sock` (the daemon's); `run` (the handler thread) returns
    once the last event is written or the daemon has hung up."""

    def __init__(
        self,
        sock: socket.socket,
        hang_up: Callable[[], None],
        error_event: Callable[[BaseException], ErrorEvent],
        hand_over: HandOver | None = None,
        cancelled: threading.Event | None = None,
    ) -> None:
        self._sock = sock
        self._hang_up = hang_up  # stops the decoding: nobody reads it any more
        # The daemon's cancel: a wait for its word, or on a client that does not read, ends.
        self._cancelled = cancelled or threading.Event()
        self._error_event = error_event
        self._hand_over = hand_over  # asked for, and the first chunk not out yet
        self._client: ClientBody | None = None
        self._held: list[Event] | None = None  # after the first chunk, until the daemon says
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._waiting: collections.deque[_Item] = collections.deque()
        self._writing = False  # the handler thread is writing what waited
        self._ended = False
        self._broken = False  # the daemon hung up: nothing more is written anywhere
        self._client_gone = False  # the client hung up: its chunks are dropped
        self.end: EndEvent | None = None

    @property
    def handed_over(self) -> bool:
        return self._client is not None

    def send(self, event: Event) -> None:
        if event["type"] == "end":
            self.end = event
        self._put(event, last=event["type"] == "end")

    def fail(self, exc: BaseException) -> None:
        self._put(self._error_event(exc), last=True)

    def _put(self, event: Event, last: bool) -> None:
        with self._lock:
            self._ended = self._ended or last
            if self._broken:
                pass
            elif self._held is not None:
                self._held.append(event)
            else:
                item = self._encode(event)
                if item is None:
                    pass
                elif self._waiting or self._writing:
                    self._waiting.append(item)
                else:
                    self._send_now(item)
                if self._hand_over is not None and event["type"] == "chunk":
                    self._held = []  # the first chunk is out: the rest waits for the daemon
            if self._waiting or self._ended or self._broken or self._held == []:
                self._ready.notify()  # only then: a wake-up per token is what this saves

    def _encode(self, event: Event) -> _Item | None:
        if event["type"] != "chunk" or self._client is None:
            return False, ndjson(event)
        data = None if self._client_gone else self._client.frame(event)
        return None if data is None else (True, data)

    def _send_now(self, item: _Item) -> None:
        to_client, data = item
        sock = self._client.sock if to_client and self._client else self._sock
        try:
            sent = sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost(to_client)
            return
        if sent < len(data):
            self._waiting.append((to_client, data[sent:]))

    def _lost(self, to_client: bool) -> None:
        """A reader hung up (under the lock): stop decoding. Without the client the daemon
        still gets the end event; without the daemon nothing more is written."""
        if to_client:
            self._client_gone = True
            self._waiting = collections.deque(i for i in self._waiting if not i[0])
        else:
            self._broken = True
            self._waiting.clear()
        self._hang_up()

    def run(self) -> None:
        """Write what waits until the last event is out (on the handler thread)."""
        try:
            while True:
                with self._lock:
                    while not (
                        self._waiting or self._ended or self._broken or self._held is not None
                    ):
                        self._ready.wait()
                    if self._broken:
                        return
                    # What is queued goes first: the daemon answers only after a whole chunk.
                    deciding = not self._waiting and self._held is not None
                    if not deciding:
                        if not self._waiting:
                            return
                        item = self._waiting.popleft()
                        self._writing = True
                if deciding:
                    self._decide()
                    continue
                try:
                    self._write(item)
                finally:
                    with self._lock:
                        self._writing = False
        finally:
            if self._client is not None:
                self._client.close()

    def _decide(self) -> None:
        """Wait for the daemon's word; then what was held goes where it says."""
        assert self._hand_over is not None
        client = wait_for_hand_over(self._sock, self._hand_over, self._cancelled)
        with self._lock:
            self._client = client
            held, self._held, self._hand_over = self._held or [], None, None
            for event in held:
                item = self._encode(event)
                if item is not None:
                    self._waiting.append(item)

    def _write(self, item: _Item) -> None:
        to_client, data = item
        try:
            if to_client and self._client is not None:
                self._client.send_all(data, self._cancelled)
            else:
                self._sock.sendall(data)
        except OSError:
            with self._lock:
                self._lost(to_client)
