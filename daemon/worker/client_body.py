"""The HTTP client's own socket, handed over by the daemon (api/hand_over.py) after the first
chunk of a streamed OpenAI answer: the worker writes the rest of the chunks to it, so the
daemon does no work per token. On a CPU whatever the daemon spends per token is taken from
the decode threads, and each event it was sent woke it on the engine thread's own core."""

from __future__ import annotations

import os
import select
import socket
import threading

from assistantd.worker.protocol import HAND_OVER, ChunkEvent, HandOver, sse_event

_POLL_MS = 100  # how often a wait looks whether the daemon cancelled


class ClientBody:
    """Chunks framed as the daemon's HTTP/1.1 server frames them (chunked transfer coding).
    The socket is the daemon's, non-blocking (the flag is shared with the daemon's copy), so
    a blocking write here waits with poll and gives up when the daemon cancels."""

    def __init__(self, sock: socket.socket, spec: HandOver) -> None:
        self.sock = sock
        self._model = spec["model"]
        self._keep_ids = spec["keep_ids"]

    def frame(self, event: ChunkEvent) -> bytes:
        """The bytes the daemon would have written for this chunk (shapes.restamp, sse)."""
        data = event["data"]
        data["model"] = self._model
        if not self._keep_ids:
            for choice in data["choices"]:
                choice.pop("token_ids", None)
        body = sse_event(data)
        return b"%x\r\n%b\r\n" % (len(body), body)

    def send_all(self, data: bytes, cancelled: threading.Event) -> None:
        """Write all of `data`; OSError when the client is gone or the daemon cancelled."""
        poller = select.poll()
        poller.register(self.sock, select.POLLOUT)
        view = memoryview(data)
        while view:
            if cancelled.is_set():
                raise OSError("the daemon cancelled the generation")
            try:
                view = view[self.sock.send(view, socket.MSG_DONTWAIT) :]
            except BlockingIOError:
                poller.poll(_POLL_MS)

    def close(self) -> None:
        self.sock.close()  # the worker's copy only: the connection stays the daemon's


def wait_for_hand_over(
    daemon: socket.socket, spec: HandOver, cancelled: threading.Event
) -> ClientBody | None:
    """The daemon's word after the first chunk: the client's socket, or None to keep relaying
    (also when it hung up or cancelled the generation meanwhile)."""
    poller = select.poll()
    poller.register(daemon, select.POLLIN)
    while not cancelled.is_set():
        if not poller.poll(_POLL_MS):
            continue
        try:
            word, fds, _, _ = socket.recv_fds(daemon, 1, 1)
        except OSError:
            return None
        if word == HAND_OVER and len(fds) == 1:
            return ClientBody(socket.socket(fileno=fds[0]), spec)
        for fd in fds:
            os.close(fd)
        return None
    return None
