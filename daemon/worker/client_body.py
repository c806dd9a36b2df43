"""The HTTP client's own socket, handed over by the daemon (api/hand_over.py) after the first
chunk of a streamed OpenAI answer: the worker writes the rest of the chunks to it, so the
daemon does no work per token. On a CPU whatever the daemon spends per token is taken from
the decode threads, and each event it was sent woke it on the engine thread's own core."""

from __future__ import annotations

import math
import os
import select
import socket
import threading
from typing import Any

from assistantd.worker.protocol import HAND_OVER, ChunkEvent, HandOver, sse_event

_POLL_MS = 100  # how often a wait looks whether the daemon cancelled


class ClientBody:
    """Chunks framed as the daemon's HTTP/1.1 server frames them (chunked transfer coding).
    The socket is the daemon's, non-blocking (the flag is shared with the daemon's copy), so
    a blocking write here waits with poll and gives up when the daemon cancels."""

    def __init__(self, sock: socket.socket, spec: HandOver) -> None:
        self.sock = sock
        self._model = spec["model"]
        self._llama = spec["shape"] == "llama"
        self._post_sampling = spec["post_sampling_probs"]

    def frame(self, event: ChunkEvent) -> bytes | None:
        """The bytes the daemon would have written for this chunk (None: none): OpenAI's
        chunk (shapes.restamp) or llama-server's piece (infill_piece), as an SSE event."""
        data = event["data"]
        if self._llama:
            piece = infill_piece(data, self._post_sampling)
            if piece is None:
                return None
            body = sse_event(piece)
        else:
            data["model"] = self._model
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


def infill_piece(chunk: dict[str, Any], post_sampling: bool = False) -> dict[str, Any] | None:
    """A streamed llama-server piece, or None for a chunk that says nothing (a finish)."""
    choice = chunk["choices"][0]
    text, ids = text_of(chunk), choice.get("token_ids") or []
    if not text and not ids and not choice.get("logprobs"):
        return None
    piece = {"index": choice.get("index", 0), "content": text, "tokens": ids, "stop": False}
    if choice.get("logprobs"):
        entries = choice["logprobs"].get("content", [])
        piece["completion_probabilities"] = as_probs(entries) if post_sampling else entries
    return piece


def text_of(chunk: dict[str, Any]) -> str:
    """A chunk's text, a chat delta's or a completion's."""
    choice = chunk["choices"][0]
    if "delta" in choice:
        return choice["delta"].get("content") or ""
    return choice.get("text") or ""


def as_probs(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """llama-server's `post_sampling_probs` form: probabilities, not log-probabilities."""

    def prob(entry: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in entry.items() if k not in ("logprob", "top_logprobs")}
        return out | {"prob": math.exp(entry["logprob"])}

    return [prob(e) | {"top_probs": [prob(t) for t in e.get("top_logprobs", [])]} for e in entries]
