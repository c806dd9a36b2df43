"""Events shaped and written by the engine thread (worker/event_sink.py, socket_events.py):
the engine thread never waits on a slow reader, the events arrive whole and in order, a reader
that hangs up stops the generation, and a real model's answer is the same as through a
handler thread."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

from assistantd.errors import InvalidRequest
from assistantd.worker.engine import Engine
from assistantd.worker.server import _error_event
from assistantd.worker.socket_events import SocketEvents


def _pair() -> tuple[socket.socket, socket.socket]:
    ours, theirs = socket.socketpair()
    ours.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # fills after a few events
    return ours, theirs


def _read_all(sock: socket.socket) -> list[dict[str, Any]]:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return [json.loads(line) for line in data.splitlines()]


def test_what_the_socket_cannot_take_waits_for_the_handler_thread_in_order() -> None:
    ours, theirs = _pair()
    stopped = threading.Event()
    out = SocketEvents(ours, stopped.set, _error_event)
    text = "x" * 150

    def engine() -> None:
        for i in range(2000):  # ~400 KB: far more than the socket holds
            out.send({"type": "chunk", "data": {"i": i, "text": text}})
        out.send({"type": "end", "finish_reason": "stop"})

    thread = threading.Thread(target=engine)
    thread.start()
    thread.join(30)
    assert not thread.is_alive()  # nobody read a byte, and the engine thread went on
    handler = threading.Thread(target=lambda: (out.run(), ours.shutdown(socket.SHUT_WR)))
    handler.start()
    events = _read_all(theirs)
    handler.join(30)
    assert [e["data"]["i"] for e in events[:-1]] == list(range(2000))
    assert events[-1]["type"] == "end" and out.end == events[-1]
    assert not stopped.is_set()


def test_a_reader_that_hangs_up_stops_the_generation() -> None:
    ours, theirs = _pair()
    stopped = threading.Event()
    out = SocketEvents(ours, stopped.set, _error_event)
    theirs.close()
    out.send({"type": "chunk", "data": {}})
    assert stopped.is_set()
    out.send({"type": "end", "finish_reason": "cancelled"})
    out.run()  # returns: nothing is left to write to nobody


def _generate(engine: Engine, body: dict[str, Any], inline: bool) -> list[dict[str, Any]]:
    if not inline:
        try:
            return list(engine.generate("chat", body, threading.Event()))
        except InvalidRequest as exc:
            return [dict(_error_event(exc))]
    ours, theirs = socket.socketpair()
    out = SocketEvents(ours, lambda: None, _error_event)
    try:
        engine.generate_into("chat", body, threading.Event(), out)
    except InvalidRequest as exc:
        out.fail(exc)
    out.run()
    ours.close()
    return _read_all(theirs)


def _said(events: list[dict[str, Any]]) -> tuple[Any, ...]:
    """What a client reads: each choice's text and finish, the usage; or the error."""
    if events[-1]["type"] == "error":
        return (events[-1]["message"],)
    texts: dict[int, str] = {}
    finish = {}
    for e in events[:-1]:
        choice = e["data"]["choices"][0]
        texts[choice["index"]] = texts.get(choice["index"], "") + (
            choice["delta"].get("content") or ""
        )
        finish[choice["index"]] = choice["finish_reason"] or finish.get(choice["index"])
    usage = events[-1]["usage"]
    return texts, finish, usage["prompt_tokens"], usage["completion_tokens"]  # not the cached


def test_a_real_answer_is_the_same_shaped_on_the_engine_thread(models: dict[str, Path]) -> None:
    engine = Engine(
        str(models["smollm2"]), n_ctx=1024, threads=1, n_gpu_layers=0, model_id="smol", n_slots=2
    )
    try:
        ask = [{"role": "user", "content": "Name three colours."}]
        bodies = [
            {"messages": ask, "max_tokens": 24, "temperature": 0},
            {"messages": ask, "max_tokens": 16, "temperature": 0.8, "seed": 7, "n": 2},
            {"messages": ask, "max_tokens": 16, "temperature": 0, "stop": [","]},
            {"messages": ask, "max_tokens": 16, "temperature": 0, "grammar": "root ::= ("},
        ]
        for body in bodies:
            assert _said(_generate(engine, body, True)) == _said(_generate(engine, body, False))
    finally:
        engine.close()
