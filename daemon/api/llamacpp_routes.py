"""llama.cpp-server-compatible routes: `/infill`, as llama.vscode and llama.vim call it, and
llama-server's own `/completion`, `/tokenize`, `/detokenize` and `/apply-template` (what
Continue's llama.cpp provider, Tabby-style clients and scripts for llama-server call)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import Field

from assistantd.api import hand_over, openapi, shapes
from assistantd.api.deps import State
from assistantd.api.llamacpp_schemas import InfillRequest, NativeCompletion
from assistantd.api.proxy import Generation
from assistantd.api.schemas import MAX_TEXT, Message, _Body, grammar_keys
from assistantd.api.streaming import (
    ClosingStreamingResponse,
    collect,
    guarded,
    opened,
    read_body,
)
from assistantd.control.state import DaemonState
from assistantd.errors import InvalidRequest, TurnedOff
from assistantd.worker.protocol import SAMPLING_KEYS, Sampling

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
    """llama-server's pieces (after the first, the worker's own where it was handed the
    socket), then its final answer."""
    chunks: list[dict[str, Any]] = []
    post = bool(settings.get("post_sampling_probs"))
    async for event in gen.events():
        chunks.append(event["data"])
        piece = shapes.infill_piece(event["data"], post)
        if piece is not None:
            yield shapes.sse(piece)
    for result in shapes.infill_results(chunks, gen.end, model_id, settings, streamed=True):
        yield shapes.sse(result)


def _asked(
    request: Request, state: DaemonState, stream: bool, model_id: str, settings: dict[str, Any]
) -> hand_over.Asked | None:
    """The hand-over a streamed answer of one choice asks for (api/hand_over.py): its final
    answer is built from the end event alone."""
    enabled = stream and state.settings.hand_over_streams
    post = bool(settings.get("post_sampling_probs"))
    return hand_over.asked(request.scope, enabled, model_id, "llama", post)


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
    model_id = served.model_id
    asked = _asked(request, state, body.stream and body.n_cmpl == 1, model_id, settings)
    gen = await opened(state, served, "infill", "infill", params, asked)
    if body.stream:
        return ClosingStreamingResponse(
            guarded(gen, _infill_stream(gen, model_id, settings)),
            media_type="text/event-stream",
        )
    chunks = await collect(request, gen, model_id, keep_ids=True)
    if chunks is None:
        return Response(status_code=499)
    results = shapes.infill_results(
        chunks, gen.end, model_id, settings, streamed=False, return_tokens=body.return_tokens
    )
    if body.response_fields is not None:
        results = [shapes.pick_fields(r, body.response_fields) for r in results]
    return JSONResponse(results if body.n_cmpl > 1 else results[0])


@router.get("/props")
async def props(state: State) -> dict[str, Any]:
    """llama-server's /props, as llama.vscode reads it (the context size before agent work)."""
    served = state.for_role("chat")
    info = served.supervisor.worker_info
    given = {"seed": state.settings.seed, "temperature": state.settings.temperature}
    sampling = asdict(Sampling()) | {k: v for k, v in given.items() if v is not None}
    settings = {"n_ctx": served.n_ctx, "model": served.model_id, **sampling}
    return {
        "default_generation_settings": {**settings, "params": settings},
        "total_slots": served.slots,
        "model_alias": served.model_id,
        "model_path": info.get("model_path", ""),
        "chat_template": info.get("chat_template", ""),
        "modalities": {"vision": False, "audio": False},
        "build_info": "assistantd",
    }


# -- llama-server's native routes: /completion, /tokenize, /detokenize, /apply-template --------


async def _text_op(state: DaemonState, body: dict[str, Any]) -> dict[str, Any]:
    served = state.for_role("chat")
    lease = await served.supervisor.lease(state.settings.queue_timeout_s)
    try:
        answer: dict[str, Any] = await lease.client.text(body)
        return answer
    finally:
        lease.release()


async def _prompt_text(state: DaemonState, prompt: str | list[Any]) -> str:
    """A prompt given as text, token ids or a mix, as text in the served model's vocabulary."""
    if isinstance(prompt, str):
        return prompt
    answer = await _text_op(state, {"op": "text_of", "prompt": prompt})
    return str(answer["content"])


@router.post("/completion")
@router.post("/completions", include_in_schema=False)
async def completion(request: Request, state: State) -> Response:
    """One prompt, or several (token ids, texts, `{"prompt_string"}` objects) answered as a
    list in order, as llama-server does."""
    body = await read_body(request, NativeCompletion, state.settings.max_body_bytes)
    prompts = body.prompts()
    if len(prompts) > 1 and body.stream:
        raise InvalidRequest("stream one prompt per request; send several without stream")
    if len(prompts) == 1:
        return await _complete(request, state, body, prompts[0])
    answers = [await _complete(request, state, body, p) for p in prompts]
    if any(not isinstance(a, JSONResponse) for a in answers):
        return Response(status_code=499)
    return JSONResponse([json.loads(bytes(a.body)) for a in answers])


async def _complete(
    request: Request, state: State, body: NativeCompletion, given: str | list[Any]
) -> Response:
    served = state.for_role("chat")
    prompt = await _prompt_text(state, given)
    params = body.model_dump(include=set(SAMPLING_KEYS) | {"logit_bias"}, exclude_none=True)
    params |= grammar_keys(body) | {"prompt": prompt, "n": 1}
    if body.n_probs > 0:
        params["logprobs"] = body.n_probs
    params["max_tokens"] = served.check_limit(body.token_limit, "n_predict")
    settings = {"n_ctx": served.n_ctx, "n_predict": body.n_predict, "seed": body.seed or -1}
    if body.post_sampling_probs:
        settings["post_sampling_probs"] = True
    model_id = served.model_id
    asked = _asked(request, state, body.stream, model_id, settings)
    gen = await opened(state, served, "completion", "completion", params, asked)
    if body.stream:
        return ClosingStreamingResponse(
            guarded(gen, _infill_stream(gen, model_id, settings)), media_type="text/event-stream"
        )
    chunks = await collect(request, gen, model_id, keep_ids=True)
    if chunks is None:
        return Response(status_code=499)
    result = shapes.infill_results(
        chunks, gen.end, model_id, settings, streamed=False, return_tokens=body.return_tokens
    )[0]
    result["prompt"] = prompt
    if body.response_fields:  # an empty list asks for everything, as llama-server reads it
        result = shapes.pick_fields(result, body.response_fields)
    return JSONResponse(result)


class TokenizeBody(_Body):
    content: str = Field("", max_length=MAX_TEXT)
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False


class DetokenizeBody(_Body):
    tokens: list[Annotated[int, Field(ge=0)]] = Field(default_factory=list, max_length=1_000_000)


class TemplateBody(_Body):
    messages: list[Message] = Field(min_length=1, max_length=4096)


@router.post("/tokenize")
async def tokenize(request: Request, state: State) -> dict[str, Any]:
    body = await read_body(request, TokenizeBody, state.settings.max_body_bytes)
    return await _text_op(state, {"op": "tokenize", **body.model_dump()})


@router.post("/detokenize")
async def detokenize(request: Request, state: State) -> dict[str, Any]:
    body = await read_body(request, DetokenizeBody, state.settings.max_body_bytes)
    return await _text_op(state, {"op": "detokenize", "tokens": body.tokens})


@router.post("/apply-template")
async def apply_template(request: Request, state: State) -> dict[str, Any]:
    body = await read_body(request, TemplateBody, state.settings.max_body_bytes)
    messages = [m.for_template() for m in body.messages]
    return await _text_op(state, {"op": "apply_template", "messages": messages})


@router.get("/slots")
async def slots(state: State) -> list[dict[str, Any]]:
    """llama-server's /slots, as far as the daemon knows them: each slot of the chat worker,
    busy or idle (what it decodes is the worker's own business)."""
    if not state.settings.slots_endpoint:
        raise TurnedOff("/slots is turned off here (ASSISTANT_SLOTS_ENDPOINT=false)")
    served = state.for_role("chat")
    busy = served.admission.active
    return [
        {"id": i, "id_task": -1, "n_ctx": served.n_ctx, "is_processing": i < busy}
        for i in range(served.slots)
    ]
