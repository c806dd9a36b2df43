"""The worker process: loads one GGUF and serves it to the daemon over a private Unix socket.

Protocol (daemon ↔ worker only, never exposed):
  GET  /info                 → model facts (n_ctx, fim, ...)
  POST /generate             → NDJSON events: {"type": "chunk"|"end"|"error", ...}
  POST /cancel/{request_id}  → stops that generation; answers its end event once stopped
  POST /embed                → {"data": [[...]], "prompt_tokens": n}
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import gc
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Generator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from socketserver import ThreadingUnixStreamServer
from typing import Any, cast

from assistantd.errors import AssistantError
from assistantd.worker import hold
from assistantd.worker.allocations import ALLOCATIONS
from assistantd.worker.engine import Engine
from assistantd.worker.hold import HoldFlag
from assistantd.worker.model_params import Placement
from assistantd.worker.protocol import (
    PROMPT_CACHE_MAX,
    EndEvent,
    ErrorEvent,
    Event,
    GenerateRequest,
)
from assistantd.worker.socket_events import SocketEvents
from assistantd.worker.speculation import MODES

# Exit code that tells the daemon the model could not be loaded (not worth retrying fast).
EXIT_LOAD_FAILED = 3


def _error_event(exc: BaseException) -> ErrorEvent:
    if isinstance(exc, AssistantError):
        return {
            "type": "error",
            "status": exc.status,
            "message": exc.message,
            "error_type": exc.type,
            "param": exc.param,
            "code": exc.code,
            "details": exc.details,
        }
    traceback.print_exc()
    return {
        "type": "error",
        "status": 500,
        "message": f"the model failed while generating: {exc}",
        "error_type": "server_error",
        "code": "generation_failed",
    }


class _Generation:
    """Book-keeping for one generation: its stop flag, and its end event once done."""

    def __init__(self) -> None:
        self.stop = threading.Event()  # the engine's: also set when the answer is complete
        self.cancelled = threading.Event()  # the daemon's cancel alone
        self.done = threading.Event()
        self.end: EndEvent | None = None


class WorkerState:
    """Shared by the handler threads: the engine and the recent generations."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._lock = threading.Lock()
        # Finished generations are kept too, so a cancel that arrives after the stream
        # closed still answers with the final token count.
        self._generations: collections.OrderedDict[str, _Generation] = collections.OrderedDict()

    def register(self, request_id: str) -> _Generation:
        gen = _Generation()
        with self._lock:
            self._generations[request_id] = gen
            while len(self._generations) > 64:
                self._generations.popitem(last=False)
        return gen

    def find(self, request_id: str) -> _Generation | None:
        with self._lock:
            return self._generations.get(request_id)


class Handler(BaseHTTPRequestHandler):
    """Each request on its own thread; a generation writes its events straight to the socket
    from the thread that decodes, so no token waits for another thread to be scheduled."""

    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass  # the daemon logs requests; the worker's stderr is kept for errors

    def _json_body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(length)) if length else {}

    def _reply(self, payload: dict[str, Any], status: int = 200) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/info":
            self._reply({**self.server.state.engine.info(), "pid": os.getpid()})
        else:
            self._reply({"message": "not found"}, 404)

    def do_POST(self) -> None:
        state = self.server.state
        if self.path == "/generate":
            self._generate(state, cast(GenerateRequest, self._json_body()))
        elif self.path.startswith("/cancel/"):
            gen = state.find(self.path.removeprefix("/cancel/"))
            if gen is not None:
                gen.cancelled.set()
                gen.stop.set()
                gen.done.wait(10.0)
            self._reply({"cancelled": gen is not None, "end": gen.end if gen else None})
        elif self.path == "/text":
            try:
                self._reply(state.engine.text(self._json_body()))
            except Exception as exc:
                event = _error_event(exc)
                self._reply(dict(event), int(event["status"]))
        elif self.path == "/embed":
            try:
                vectors, count = state.engine.embed(self._json_body()["input"])
            except Exception as exc:
                event = _error_event(exc)
                self._reply(dict(event), int(event["status"]))
            else:
                self._reply({"data": vectors, "prompt_tokens": count})
        else:
            self._reply({"message": "not found"}, 404)

    def _generate(self, state: WorkerState, body: GenerateRequest) -> None:
        """Many of these run at once, one per handler thread; the slot engine batches them.
        Events are written by the engine thread where it shapes them (shapes_inline), else by
        a thread that reads them off the engine's queue; this thread writes only what the
        socket could not take at once, and reads the daemon's word on a hand-over."""
        gen = state.register(body["id"])
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Connection", "close")  # the body ends when the stream closes
        self.end_headers()
        self.close_connection = True
        out = SocketEvents(
            self.connection, gen.stop.set, _error_event, body.get("hand_over"), gen.cancelled
        )
        try:
            if state.engine.shapes_inline:
                state.engine.generate_into(body["kind"], body["params"], gen.stop, out)
            else:
                events = state.engine.generate(body["kind"], body["params"], gen.stop)
                threading.Thread(target=_pump, args=(events, out), daemon=True).start()
        except BaseException as exc:  # refused before any token: reported, never swallowed
            out.fail(exc)
        try:
            out.run()
        finally:
            gen.end = out.end
            gen.done.set()


def _pump(events: Generator[Event, None, None], out: SocketEvents) -> None:
    """The engine's queued events into `out`, as the engine thread would hand them."""
    try:
        for event in events:
            out.send(event)
    except BaseException as exc:  # reported to the daemon, never swallowed
        out.fail(exc)
    finally:
        events.close()


class _Server(ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, state: WorkerState) -> None:
        self.state = state
        super().__init__(path, Handler)

    def get_request(self) -> tuple[Any, Any]:
        conn, _ = super().get_request()
        return conn, ("worker", 0)  # BaseHTTPRequestHandler wants a (host, port) address


def _die_with_parent(parent_pid: int) -> None:
    """A worker never outlives its daemon, even after kill -9 of the daemon."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL)

    def watch() -> None:  # portable fallback (macOS has no PDEATHSIG)
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    if os.getppid() != parent_pid:
        os._exit(1)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _words(text: str) -> list[str]:
    return [w for w in text.split(",") if w]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="assistantd-worker")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--n-ctx", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--n-gpu-layers", type=int, default=-1)
    parser.add_argument("--parent-pid", type=int, required=True)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--n-cpu-moe", type=int, default=0)
    parser.add_argument("--nice", type=int, default=0, help="lower OS priority by this much")
    parser.add_argument(
        "--devices", default=None, help="comma-separated llama.cpp devices ('' = CPU only)"
    )
    parser.add_argument("--split", default="", help="share of the layers per device")
    parser.add_argument("--rpc", default="", help="comma-separated RPC servers to register")
    parser.add_argument("--speculative", default="off", choices=MODES)
    parser.add_argument("--draft-model", default=None, help="a smaller model that guesses")
    parser.add_argument(
        "--prompt-cache-mib", type=int, default=PROMPT_CACHE_MAX >> 20, help="evicted prompts"
    )
    parser.add_argument("--seed", type=int, default=None, help="for requests that send none")
    parser.add_argument("--temp", type=float, default=None, help="for requests that send none")
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)
    if args.nice:
        os.nice(args.nice)  # before llama.cpp starts its threads: they inherit it
    try:
        engine = Engine(
            args.model,
            n_ctx=args.n_ctx,
            threads=args.threads,
            n_gpu_layers=args.n_gpu_layers,
            model_id=args.model_id,
            n_slots=args.slots,
            speculative=args.speculative,
            draft_model=args.draft_model,
            prompt_cache_bytes=args.prompt_cache_mib << 20,
            defaults={
                k: v for k, v in (("seed", args.seed), ("temperature", args.temp)) if v is not None
            },  # fmt: skip
            placement=Placement(
                devices=None if args.devices is None else tuple(_words(args.devices)),
                split=tuple(float(s) for s in _words(args.split)),
                n_cpu_moe=args.n_cpu_moe,
                rpc=tuple(_words(args.rpc)),
            ),
        )
    except Exception as exc:
        said = " | ".join(ALLOCATIONS.errors)
        print(
            f"could not load {args.model}: {exc}" + (f" (llama.cpp: {said})" if said else ""),
            file=sys.stderr,
            flush=True,
        )
        sys.exit(EXIT_LOAD_FAILED)
    engine.slots.hold = HoldFlag(hold.path_for(Path(args.socket)), create=True)
    gc.freeze()  # what loading made is kept for good: collections walk only per-request objects
    server = _Server(args.socket, WorkerState(engine))
    os.chmod(args.socket, 0o600)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    server.serve_forever(poll_interval=1.0)


if __name__ == "__main__":
    main()
