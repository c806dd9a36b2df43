"""llama.cpp-server-compatible routes: `/infill`, as llama.vscode and llama.vim call it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from assistantd.api import shapes
from assistantd.api.deps import State
from assistantd.api.proxy import Generation
from assistantd.api.schemas import InfillRequest
from assistantd.api.streaming import (
    ClosingStreamingResponse,
    collect,
    guarded,
    opened,
    read_body,
)

router = APIRouter()

_INFILL_KEYS = {
    "input_prefix",
    "input_suffix",
    "input_extra",
    "prompt",
    "temperature",
    "top_k",
    "top_p",
    "min_p",
    "stop",
    "seed",
    "t_max_predict_ms",
}


async def _infill_stream(gen: Generation, model_id: str) -> AsyncIterator[bytes]:
    chunks: list[dict[str, Any]] = []
    async for event in gen.events():
        chunks.append(event["data"])
        yield shapes.sse(shapes.infill_piece(event["data"]))
    yield shapes.sse(shapes.infill_result(chunks, gen.end, model_id, streamed=True))


@router.post("/infill")
async def infill(request: Request, state: State) -> Response:
    body = await read_body(request, InfillRequest, state.settings.max_body_bytes)
    state.check_model(body.model)
    params = body.model_dump(include=_INFILL_KEYS, exclude_none=True)
    params["max_tokens"] = state.check_limit(body.token_limit, "n_predict")
    gen = await opened(state, "infill", "infill", params)
    if body.stream:
        return ClosingStreamingResponse(
            guarded(gen, _infill_stream(gen, state.model_id)), media_type="text/event-stream"
        )
    chunks = await collect(request, gen, state.model_id)
    if chunks is None:
        return Response(status_code=499)
    return JSONResponse(shapes.infill_result(chunks, gen.end, state.model_id, streamed=False))
