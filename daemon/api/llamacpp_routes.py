"""llama.cpp-server-compatible routes: `/infill`, as llama.vscode and llama.vim call it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from assistantd.api import openapi, shapes
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
from assistantd.worker.protocol import Sampling

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


async def _infill_stream(
    gen: Generation, model_id: str, settings: dict[str, Any]
) -> AsyncIterator[bytes]:
    chunks: list[dict[str, Any]] = []
    async for event in gen.events():
        chunks.append(event["data"])
        yield shapes.sse(shapes.infill_piece(event["data"]))
    for result in shapes.infill_results(chunks, gen.end, model_id, settings, streamed=True):
        yield shapes.sse(result)


def _generation_settings(body: InfillRequest, n_ctx: int) -> dict[str, Any]:
    """What llama.cpp reports as generation_settings: n_ctx and the sampling actually used."""
    used = Sampling()
    return {
        "n_ctx": n_ctx,
        "n_predict": body.n_predict,
        "temperature": body.temperature if body.temperature is not None else used.temperature,
        "top_k": body.top_k if body.top_k is not None else used.top_k,
        "top_p": body.top_p if body.top_p is not None else used.top_p,
        "min_p": body.min_p if body.min_p is not None else used.min_p,
        "seed": body.seed if body.seed is not None else -1,
        "stop": [body.stop] if isinstance(body.stop, str) else list(body.stop or []),
        "t_max_predict_ms": body.t_max_predict_ms or -1,
        "n_cmpl": body.n_cmpl,
    }


@router.post("/infill", openapi_extra=openapi.body(InfillRequest))
async def infill(request: Request, state: State) -> Response:
    body = await read_body(request, InfillRequest, state.settings.max_body_bytes)
    # Always the autocomplete role: llama.vscode sends its chat model's name here and llama.vim
    # an empty one, so the name is not checked.
    served = state.for_role("autocomplete")
    served.check_n(body.n_cmpl, "n_cmpl")
    params = body.model_dump(include=_INFILL_KEYS, exclude_none=True)
    params["max_tokens"] = served.check_limit(body.token_limit, "n_predict")
    params["n"] = body.n_cmpl
    settings = _generation_settings(body, served.n_ctx)
    gen = await opened(state, served, "infill", "infill", params)
    model_id = served.model_id
    if body.stream:
        return ClosingStreamingResponse(
            guarded(gen, _infill_stream(gen, model_id, settings)),
            media_type="text/event-stream",
        )
    chunks = await collect(request, gen, model_id)
    if chunks is None:
        return Response(status_code=499)
    results = shapes.infill_results(chunks, gen.end, model_id, settings, streamed=False)
    if body.response_fields is not None:
        results = [shapes.pick_fields(r, body.response_fields) for r in results]
    return JSONResponse(results if body.n_cmpl > 1 else results[0])


@router.get("/props")
async def props(state: State) -> dict[str, Any]:
    """llama-server's /props, as llama.vscode reads it (the context size before agent work)."""
    served = state.for_role("chat")
    return {
        "default_generation_settings": {"n_ctx": served.n_ctx, "model": served.model_id},
        "total_slots": served.slots,
        "model_alias": served.model_id,
    }
