"""Anthropic's Messages API (`/v1/messages`, `/v1/messages/count_tokens`): what Claude Code
and the `anthropic` SDK call. A door onto the chat path: the body is translated to a chat
request and served by the same roles, slots, shifting, metrics and security."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from assistantd.api import anthropic_shapes as shapes
from assistantd.api.deps import State
from assistantd.api.openai_routes import chat_params, prompt_tokens
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
from assistantd.control.served import Served
from assistantd.control.state import DaemonState
from assistantd.errors import AssistantError, ModelNotFound

router = APIRouter(prefix="/v1")


def _chat(body: shapes.MessagesRequest | shapes.CountRequest) -> ChatRequest:
    return validated(ChatRequest, shapes.to_chat(body))


def _served(state: DaemonState, model: str | None) -> Served:
    """A model this daemon serves, a role id, or (Claude Code names Claude models) chat."""
    try:
        return state.route(model, "chat")
    except ModelNotFound:
        return state.route(None, "chat")


def _error_event(exc: AssistantError) -> bytes:
    data = shapes.error_body(exc.status, exc.message)
    return f"event: error\ndata: {json.dumps(data)}\n\n".encode()


@router.post("/messages")
async def messages(request: Request, state: State) -> Response:
    body = await read_body(request, shapes.MessagesRequest, state.settings.max_body_bytes)
    served = _served(state, body.model)
    params = chat_params(served, _chat(body))
    gen = await opened(state, served, "messages", "chat", params)
    model_id = served.model_id
    if body.stream:

        async def chunks() -> AsyncIterator[dict[str, Any]]:
            async for event in gen.events():
                yield event["data"]

        pieces = shapes.stream(chunks(), lambda: gen.end, model_id)
        return sse_response(guarded(gen, pieces, _error_event))
    got = await collect(request, gen, model_id)
    if got is None:
        return Response(status_code=499)
    return JSONResponse(shapes.message(chat_completion(got, gen.end, model_id), gen.end, model_id))


@router.post("/messages/count_tokens")
async def count_tokens(request: Request, state: State) -> JSONResponse:
    """Counted by the serving model's own template and tokenizer."""
    body = await read_body(request, shapes.CountRequest, state.settings.max_body_bytes)
    served = _served(state, body.model)
    count = await prompt_tokens(request, state, served, chat_params(served, _chat(body)))
    if count is None:
        return JSONResponse({}, status_code=499)
    return JSONResponse({"input_tokens": count})
