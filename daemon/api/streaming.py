"""Reading request bodies and writing answers: bounded JSON in, SSE or JSON out, with one
place that ends a streamed answer (error line, cancelled outcome, close once)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from assistantd.api import shapes
from assistantd.api.admission import Admission
from assistantd.api.hand_over import Asked
from assistantd.api.keys import request_key
from assistantd.api.proxy import Generation, Rung
from assistantd.api.upstream_client import UPSTREAM_KINDS
from assistantd.control.served import Served
from assistantd.control.state import DaemonState
from assistantd.errors import AssistantError, InvalidRequest, PayloadTooLarge, UpstreamUnavailable
from assistantd.vocab import GenerationKind, Outcome, Role
from assistantd.worker.protocol import priority_of

Body = TypeVar("Body", bound=BaseModel)


async def read_body(request: Request, model: type[Body], limit: int) -> Body:
    """The body, size-bounded before it is parsed, validated into `model`."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit} bytes")
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    return validated(model, data)


def validated(model: type[Body], data: dict[str, Any]) -> Body:
    """`data` as `model`, or a 400 naming the first field that is wrong (also for a body one
    API's door translated into another's request)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise InvalidRequest(f"{where}: {err['msg']}", param=where) from None


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body iterator even when the client disconnected mid-stream."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


def sse_response(pieces: AsyncIterator[bytes]) -> ClosingStreamingResponse:
    return ClosingStreamingResponse(
        pieces,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def opened(
    state: DaemonState,
    served: Served,
    endpoint: str,
    kind: GenerationKind,
    params: dict[str, Any],
    hand_over: Asked | None = None,
) -> Generation:
    """A generation admitted to the worker's queue and started on it. The request's role
    (autocomplete for what the queue ranks first, else chat) may have upstreams in use: it is
    started on the first, and on the next rung (the local worker last) when one fails before
    its first byte. A local worker is asked to take over the client's socket after the first
    chunk when `hand_over` is given (api/hand_over.py)."""

    def generation(admission: Admission, rung: Rung, **hooks: Any) -> Generation:
        return Generation(
            admission=admission,
            supervisor=rung,
            record=state.record,
            endpoint=endpoint,
            wait_timeout_s=state.settings.queue_timeout_s,
            key=request_key.get(),
            share=state.share,
            **hooks,
        )

    role: Role = "autocomplete" if priority_of(kind, params) == 0 else "chat"
    if kind in UPSTREAM_KINDS:  # llama.cpp's /infill has no OpenAI-compatible twin to send
        for rung in state.upstreams.get(role, []):
            if not rung.in_use:
                continue
            remote = generation(rung.admission, rung, on_failure=rung.failed)
            try:
                await remote.open(kind, params)
                return remote
            except UpstreamUnavailable as exc:
                rung.failed(exc.message)  # the next rung (the local worker last) answers
    gen = generation(served.admission, served.supervisor, on_decode_speed=served.observe_speed)
    with state.cores.first_token(served):  # other CPU workers yield to autocomplete
        await gen.open(kind, params, hand_over)  # a refusal is recorded by the generation
    return gen


async def collect(
    request: Request, gen: Generation, model_id: str, keep_ids: bool = False
) -> list[dict[str, Any]] | None:
    """All chunks of a non-streaming answer, or None if the client left first."""

    async def gather() -> list[dict[str, Any]]:
        return [shapes.restamp(ev["data"], model_id, keep_ids) async for ev in gen.events()]

    task = asyncio.create_task(gather())
    watcher = asyncio.create_task(_wait_disconnect(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            task.cancel()
            gen.close("cancelled")
            return None
        chunks = task.result()
        gen.close("cancelled" if gen.end.get("finish_reason") == "cancelled" else "ok")
        return chunks
    finally:
        watcher.cancel()
        gen.close("error")  # no-op unless something above raised


def _openai_error(exc: AssistantError) -> bytes:
    return shapes.sse(exc.to_body())


async def guarded(
    gen: Generation,
    pieces: AsyncIterator[bytes],
    error_event: Callable[[AssistantError], bytes] = _openai_error,
) -> AsyncIterator[bytes]:
    """One place for a streamed answer's ending: an error becomes an event in the API's own
    shape, a client that left counts as cancelled, and the generation is closed exactly once."""
    outcome: Outcome = "error"
    try:
        async for piece in pieces:
            yield piece
        outcome = "ok"
    except AssistantError as exc:
        yield error_event(exc)
    except BaseException:
        outcome = "cancelled"
        raise
    finally:
        gen.close(outcome)
