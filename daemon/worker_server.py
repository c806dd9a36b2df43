"""The worker process: loads one GGUF and serves it to the daemon over a private Unix socket.

Protocol (daemon ↔ worker only, never exposed):
  GET  /info                 → model facts (n_ctx, fim, ...)
  POST /generate             → NDJSON events: {"type": "chunk"|"end"|"error", ...}
  POST /cancel/{request_id}  → sets that generation's stop flag
  POST /embed                → {"data": [[...]], "prompt_tokens": n}
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import AsyncIterator
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from daemon.engine import Engine
from daemon.errors import AssistantError

# Exit code that tells the daemon the model could not be loaded (not worth retrying fast).
EXIT_LOAD_FAILED = 3


def _error_event(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, AssistantError):
        return {
            "type": "error",
            "status": exc.status,
            "message": exc.message,
            "error_type": exc.type,
            "param": exc.param,
            "code": exc.code,
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
        self.stop = threading.Event()
        self.done = asyncio.Event()
        self.end: dict[str, Any] | None = None


def build_app(engine: Engine) -> Starlette:
    generation_lock = threading.Lock()
    # Recent generations by request id, finished ones included, so a cancel arriving after
    # the stream closed still finds the final token count.
    generations: collections.OrderedDict[str, _Generation] = collections.OrderedDict()

    async def info(request: Request) -> JSONResponse:
        return JSONResponse({**engine.info(), "pid": os.getpid()})

    async def cancel(request: Request) -> JSONResponse:
        """Stop a generation and answer with its end event once decoding has stopped."""
        gen = generations.get(request.path_params["request_id"])
        if gen is None:
            return JSONResponse({"cancelled": False, "end": None})
        gen.stop.set()
        try:
            await asyncio.wait_for(gen.done.wait(), 10.0)
        except TimeoutError:
            pass
        return JSONResponse({"cancelled": True, "end": gen.end})

    async def generate(request: Request) -> StreamingResponse:
        body = await request.json()
        gen = _Generation()
        generations[body["id"]] = gen
        while len(generations) > 64:
            generations.popitem(last=False)
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

        def run() -> None:
            with generation_lock:
                try:
                    if not gen.stop.is_set():
                        for event in engine.generate(body["kind"], body["params"], gen.stop.is_set):
                            if event["type"] == "end":
                                gen.end = event
                            loop.call_soon_threadsafe(queue.put_nowait, event)
                except BaseException as exc:  # reported to the daemon, never swallowed
                    loop.call_soon_threadsafe(queue.put_nowait, _error_event(exc))
                finally:
                    loop.call_soon_threadsafe(queue.put_nowait, None)
                    loop.call_soon_threadsafe(gen.done.set)

        threading.Thread(target=run, name=f"gen-{body['id']}", daemon=True).start()

        async def events() -> AsyncIterator[bytes]:
            try:
                while (event := await queue.get()) is not None:
                    yield json.dumps(event).encode() + b"\n"
            finally:
                # Also reached when the daemon drops the connection: stop decoding.
                gen.stop.set()

        return StreamingResponse(events(), media_type="application/x-ndjson")

    async def embed(request: Request) -> JSONResponse:
        body = await request.json()
        try:
            vectors, count = await asyncio.to_thread(engine.embed, body["input"])
        except Exception as exc:
            event = _error_event(exc)
            return JSONResponse(event, status_code=int(event["status"]))
        return JSONResponse({"data": vectors, "prompt_tokens": count})

    return Starlette(
        routes=[
            Route("/info", info),
            Route("/generate", generate, methods=["POST"]),
            Route("/cancel/{request_id}", cancel, methods=["POST"]),
            Route("/embed", embed, methods=["POST"]),
        ]
    )


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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="assistantd-worker")
    parser.add_argument("--model", required=True)
    parser.add_argument("--model-id", required=True)
    parser.add_argument("--socket", required=True)
    parser.add_argument("--n-ctx", type=int, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--n-gpu-layers", type=int, default=-1)
    parser.add_argument("--parent-pid", type=int, required=True)
    args = parser.parse_args(argv)
    _die_with_parent(args.parent_pid)
    try:
        engine = Engine(
            args.model,
            n_ctx=args.n_ctx,
            threads=args.threads,
            n_gpu_layers=args.n_gpu_layers,
            model_id=args.model_id,
        )
    except Exception as exc:
        print(f"could not load {args.model}: {exc}", file=sys.stderr, flush=True)
        sys.exit(EXIT_LOAD_FAILED)
    config = uvicorn.Config(
        build_app(engine), uds=args.socket, log_level="warning", access_log=False, lifespan="off"
    )
    uvicorn.Server(config).run()


if __name__ == "__main__":
    main()
