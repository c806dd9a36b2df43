"""OpenAI's Responses API (`/v1/responses`), stateless: what Codex CLI and the `openai` SDK's
`responses.create` call. A door onto the chat path, like /v1/chat/completions."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from assistantd.api import responses_shapes as shapes
from assistantd.api.deps import State
from assistantd.api.openai_routes import chat_params
from assistantd.api.schemas import ChatRequest
from assistantd.api.shapes import chat_completion
from assistantd.api.streaming import (
    collect,
    guarded,
    opened,
    read_body,
    sse_response,
    validated,
)
from assistantd.errors import AssistantError, NotFound

router = APIRouter(prefix="/v1")


def _error_event(exc: AssistantError) -> bytes:
    data = {"type": "error", "code": exc.code, "message": exc.message, "param": exc.param}
    return f"event: error\ndata: {json.dumps(data)}\n\n".encode()


@router.post("/responses")
async def responses(request: Request, state: State) -> Response:
    body = await read_body(request, shapes.ResponsesRequest, state.settings.max_body_bytes)
    served = state.route(body.model, "chat")
    chat = validated(ChatRequest, shapes.to_chat(body))
    gen = await opened(state, served, "responses", "chat", chat_params(served, chat))
    built = shapes.Builder(body, served.model_id)
    if body.stream:

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            async for event in gen.events():
                yield event["data"]

        return sse_response(guarded(gen, built.stream(chunks(), lambda: gen.end), _error_event))
    got = await collect(request, gen, served.model_id)
    if got is None:
        return Response(status_code=499)
    return JSONResponse(built.whole(chat_completion(got, gen.end, served.model_id), gen.end))


@router.get("/responses/{response_id}")
@router.delete("/responses/{response_id}")
async def stored(response_id: str) -> None:
    raise NotFound(
        f"response '{response_id}' was not stored: responses here are stateless; send the "
        "whole conversation in input each time (store: false)"
    )
