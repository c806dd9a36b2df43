"""A streamed OpenAI answer's chunks written by the worker to the client's own socket
(api/hand_over.py, worker/client_body.py): the same bytes as relayed through the daemon, the
connection still the daemon's afterwards, nothing lost or reordered while the daemon decides,
and a client or daemon that leaves stops the generation."""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from assistantd.worker.protocol import HAND_OVER, KEEP_RELAYING, Event, HandOver
from assistantd.worker.server import _error_event
from assistantd.worker.socket_events import SocketEvents
from tests.support.daemons import Daemon

SPEC: HandOver = {"model": "served-id", "shape": "openai", "post_sampling_probs": False}


def _chunk(i: int) -> Event:
    choice = {"index": 0, "text": f"t{i}", "token_ids": [i], "finish_reason": None}
    return {"type": "chunk", "data": {"id": "cmpl-1", "model": "worker-id", "choices": [choice]}}


def _tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A real client connection: the server's end (non-blocking, as uvicorn keeps it) and
    the client's."""
    with socket.create_server(("127.0.0.1", 0)) as listener:
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    return server, client


def _read_until_closed(sock: socket.socket) -> bytes:
    data = b""
    while part := sock.recv(65536):
        data += part
    return data


def _dechunk(data: bytes) -> list[bytes]:
    """HTTP/1.1 chunks, checking each one's length."""
    out = []
    while data:
        size, _, rest = data.partition(b"\r\n")
        n = int(size, 16)
        out.append(rest[:n])
        assert rest[n : n + 2] == b"\r\n"
        data = rest[n + 2 :]
    return out


def _lines(data: bytes) -> list[dict]:
    return [json.loads(line) for line in data.splitlines()]


@pytest.fixture
def wires() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket]]:
    worker_end, daemon_end = socket.socketpair()
    server, client = _tcp_pair()
    yield worker_end, daemon_end, server, client
    for sock in (worker_end, daemon_end, server, client):
        sock.close()


def _writing(
    worker_end: socket.socket, hang_up=lambda: None, cancelled: threading.Event | None = None
) -> tuple[SocketEvents, threading.Thread]:
    """A generation's events asking for a hand-over, its handler thread writing them."""
    out = SocketEvents(worker_end, hang_up, _error_event, SPEC, cancelled)
    handler = threading.Thread(target=out.run)
    handler.start()
    return out, handler


def test_after_the_handover_chunks_go_to_the_client_and_the_end_to_the_daemon(wires) -> None:
    worker_end, daemon_end, server, client = wires
    stop = threading.Event()
    out, handler = _writing(worker_end, stop.set)
    out.send(_chunk(0))
    for i in range(1, 200):  # while the daemon has not answered: held, the engine goes on
        out.send(_chunk(i))
    out.send({"type": "end", "finish_reason": "length"})
    first = daemon_end.recv(65536)
    assert [e["data"]["choices"][0]["text"] for e in _lines(first)] == ["t0"]
    socket.send_fds(daemon_end, [HAND_OVER], [server.fileno()])
    handler.join(30)
    assert not handler.is_alive() and out.handed_over and not stop.is_set()
    server.close()  # the daemon's copy; the worker closed its own
    daemon_end.shutdown(socket.SHUT_WR)
    worker_end.close()
    assert [e["type"] for e in _lines(_read_until_closed(daemon_end))] == ["end"]
    chunks = _dechunk(_read_until_closed(client))
    assert len(chunks) == 199
    for i, chunk in enumerate(chunks, start=1):
        assert chunk.startswith(b"data: {") and chunk.endswith(b"}\n\n")
        data = json.loads(chunk[6:])
        assert data["model"] == "served-id" and data["choices"][0]["text"] == f"t{i}"
        assert "token_ids" not in data["choices"][0]  # the OpenAI door's shape


def test_a_daemon_that_keeps_relaying_gets_everything_in_order(wires) -> None:
    worker_end, daemon_end, _, _ = wires
    out, handler = _writing(worker_end)
    for i in range(50):
        out.send(_chunk(i))
    out.send({"type": "end", "finish_reason": "stop"})
    daemon_end.recv(1)  # the first chunk's first byte: it is out
    daemon_end.sendall(KEEP_RELAYING)
    handler.join(30)
    worker_end.close()
    events = _lines(b"{" + _read_until_closed(daemon_end))
    assert [e["data"]["choices"][0]["text"] for e in events[:-1]] == [f"t{i}" for i in range(50)]
    assert events[-1]["type"] == "end" and not out.handed_over


def test_a_generation_cancelled_before_the_daemon_answers_is_relayed(wires) -> None:
    worker_end, daemon_end, _, _ = wires
    cancelled = threading.Event()
    out, handler = _writing(worker_end, cancelled=cancelled)
    out.send(_chunk(0))
    out.send(_chunk(1))
    cancelled.set()  # the daemon cancelled: its word will never come
    out.send({"type": "end", "finish_reason": "cancelled"})
    handler.join(30)
    assert not handler.is_alive()
    worker_end.close()
    assert [e["type"] for e in _lines(_read_until_closed(daemon_end))] == ["chunk"] * 2 + ["end"]


def test_a_client_that_hangs_up_stops_the_generation_and_the_daemon_gets_the_end(wires) -> None:
    worker_end, daemon_end, server, client = wires
    stop = threading.Event()
    out, handler = _writing(worker_end, stop.set)
    out.send(_chunk(0))
    daemon_end.recv(65536)
    socket.send_fds(daemon_end, [HAND_OVER], [server.fileno()])
    deadline = time.monotonic() + 10
    while not out.handed_over and time.monotonic() < deadline:
        time.sleep(0.01)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    client.close()  # reset: the next write fails
    for i in range(1, 2000):
        out.send(_chunk(i))
        if stop.is_set():
            break
    assert stop.is_set()
    out.send({"type": "end", "finish_reason": "cancelled"})
    handler.join(30)
    assert not handler.is_alive()
    worker_end.close()
    assert [e["type"] for e in _lines(_read_until_closed(daemon_end))] == ["end"]


def _raw_stream(daemon: Daemon, body: dict, version: str, path: str = "/v1/completions") -> bytes:
    """The response body as the bytes on the wire, over a plain socket."""
    data = json.dumps({**body, "stream": True}).encode()
    port = int(daemon.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(
            f"POST {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n\r\n".encode()
            + data
        )
        raw = _read_until_closed(sock)
    head, _, payload = raw.partition(b"\r\n\r\n")
    assert head.split(b" ")[1] == b"200", head
    if b"transfer-encoding: chunked" in head.lower():
        return b"".join(_dechunk(payload))
    return payload


def _handed_over(daemon: Daemon) -> float:
    metrics = httpx.get(daemon.url + "/metrics", timeout=10).text
    return float(re.search(r"^assistantd_streams_handed_over_total (\S+)$", metrics, re.M)[1])


def test_a_handed_over_stream_has_the_bytes_a_relayed_one_has(smol: Daemon) -> None:
    body = {"prompt": "def add(a, b):", "max_tokens": 40, "temperature": 0,
            "stream_options": {"include_usage": True}}  # fmt: skip
    before = _handed_over(smol)
    relayed = _raw_stream(smol, body, "1.0")  # no chunked coding: the daemon relays
    assert _handed_over(smol) == before
    handed = _raw_stream(smol, body, "1.1")
    assert _handed_over(smol) == before + 1

    def same(data: bytes) -> bytes:  # ids, clocks and the prompt cache differ per answer
        data = re.sub(rb'"id":"[^"]+"', b'"id":""', data)
        return re.sub(rb'"(created|cached_tokens)":[0-9]+', rb'"\1":0', data)

    assert same(handed) == same(relayed)
    assert handed.count(b"data: ") > 20 and handed.endswith(b"data: [DONE]\n\n")


def test_llama_servers_pieces_handed_over_are_the_relayed_ones(smol: Daemon) -> None:
    """llama-server's own /completion (Continue's llama.cpp provider): its pieces with token
    ids and post-sampling probabilities, then the final answer from the end event alone."""
    body = {"prompt": "def add(a, b):", "n_predict": 24, "temperature": 0, "n_probs": 2,
            "post_sampling_probs": True, "cache_prompt": False}  # fmt: skip
    before = _handed_over(smol)
    relayed = _raw_stream(smol, body, "1.0", "/completion")
    handed = _raw_stream(smol, body, "1.1", "/completion")
    assert _handed_over(smol) == before + 1

    def events(data: bytes) -> list[dict]:
        out = [json.loads(line[6:]) for line in data.split(b"\n\n") if line.startswith(b"data: ")]
        for event in out:  # clocks differ per answer
            event.pop("timings", None)
        return out

    assert events(handed) == events(relayed)
    pieces = events(handed)
    assert len(pieces) == 25 and all(len(p["tokens"]) == 1 for p in pieces[:-1])
    assert pieces[1]["completion_probabilities"][0]["prob"] > 0  # post-sampling, not logprob
    assert pieces[-1]["stop"] is True and pieces[-1]["stop_type"] == "limit"


def test_a_connection_is_reused_after_handed_over_streams(smol: Daemon) -> None:
    before = _handed_over(smol)
    with httpx.Client(base_url=smol.v1, timeout=60) as http:
        texts = []
        for _ in range(3):
            body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 12,
                    "temperature": 0, "stream": True}  # fmt: skip
            with http.stream("POST", "/chat/completions", json=body) as response:
                lines = [line for line in response.iter_lines() if line.startswith("data: {")]
            text = "".join(json.loads(x[6:])["choices"][0]["delta"].get("content") or ""
                           for x in lines)  # fmt: skip
            texts.append(text)
        whole = http.post("/chat/completions", json={**body, "stream": False}).json()
    assert texts == [whole["choices"][0]["message"]["content"]] * 3
    assert _handed_over(smol) == before + 3


def test_a_worker_whose_handler_threads_shape_the_events_hands_over_too(
    start_daemon, models
) -> None:
    """One decode thread on 2 cores: events come off the engine's queue on a thread of their
    own (as beside a GPU), and the engine marks the answer stopped once it is complete."""
    daemon = start_daemon(models["smollm2"], ASSISTANT_THREADS="1")
    api = openai.OpenAI(base_url=daemon.v1, api_key="x", max_retries=0, timeout=60)
    model = api.models.list().data[0].id
    ask = {"model": model, "prompt": "1, 2, 3, 4,", "max_tokens": 16, "temperature": 0}
    whole = api.completions.create(**ask).choices[0].text
    for _ in range(3):
        chunks = list(api.completions.create(**ask, stream=True))
        assert "".join(c.choices[0].text for c in chunks) == whole
        assert chunks[-1].choices[0].finish_reason == "length"
    assert _handed_over(daemon) == 3
