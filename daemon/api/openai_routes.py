"""OpenAI-compatible routes (`/v1/...`): what Continue, aider, the SDKs and LangChain call."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from assistantd.api import hand_over, openapi, shapes
from assistantd.api.admission import Admission
from assistantd.api.deps import State
from assistantd.api.fim_prompt import split_fim
from assistantd.api.proxy import Generation, Rung, outcome_of
from assistantd.api.schemas import ChatRequest, CompletionRequest, EmbeddingRequest
from assistantd.api.streaming import collect, guarded, opened, read_body, sse_response
from assistantd.control.served import Served
from assistantd.control.state import DaemonState
from assistantd.control.stats import RequestRecord
from assistantd.errors import UpstreamUnavailable
from assistantd.vocab import GenerationKind, Outcome

Shape = Callable[[list[dict[str, Any]], dict[str, Any], str], dict[str, Any]]

router = APIRouter(prefix="/v1")


async def _openai_stream(
    gen: Generation, model_id: str, include_usage: bool, timings: bool = False
) -> AsyncIterator[bytes]:
    """The chunks (after the first, the worker's own where it was handed the socket), then
    usage and [DONE]."""
    first: dict[str, Any] | None = None
    async for event in gen.events():
        chunk = shapes.restamp(event["data"], model_id)
        first = first or chunk
        yield shapes.sse(chunk)
    if include_usage and first is not None:
        last = shapes.usage_chunk(first, model_id, gen.end["usage"])
        if timings:  # llama-server's timings_per_token: the answer's timings ride along
            last["timings"] = gen.end.get("timings", {})
        yield shapes.sse(last)
    yield shapes.DONE


async def _generation(
    state: DaemonState,
    served: Served,
    request: Request,
    endpoint: str,
    kind: GenerationKind,
    params: dict[str, Any],
    body: ChatRequest | CompletionRequest,
    shape: Shape,
) -> Response:
    model_id = served.model_id
    enabled = body.stream and state.settings.hand_over_streams
    asked = hand_over.asked(request.scope, enabled, model_id, "openai")
    gen = await opened(state, served, endpoint, kind, params, asked)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        timings = isinstance(body, ChatRequest) and body.timings_per_token
        return sse_response(guarded(gen, _openai_stream(gen, model_id, include_usage, timings)))
    chunks = await collect(request, gen, model_id)
    if chunks is None:
        return Response(status_code=499)
    return JSONResponse(shape(chunks, gen.end, model_id))


def chat_params(served: Served, body: ChatRequest) -> dict[str, Any]:
    """A chat request as the worker reads it; every API's chat door (OpenAI, Anthropic,
    Ollama) builds a ChatRequest and comes through here."""
    served.check_n(body.n)
    return {
        "messages": [m.for_template() for m in body.messages],
        "max_tokens": served.check_limit(body.token_limit),
        "n": body.n,
        **body.sampling(),
        **body.constraints(),
    }


def completion_params(
    served: Served, body: CompletionRequest, prompt: str, suffix: str | None
) -> dict[str, Any]:
    """A completion (fill-in-the-middle when `suffix` is given) as the worker reads it."""
    served.check_n(body.n)
    return {
        "prompt": prompt,
        "suffix": suffix,
        "max_tokens": served.check_limit(body.token_limit),
        "n": body.n,
        **body.sampling(),
        **({"logprobs": body.logprobs} if body.logprobs is not None else {}),
    }


@router.get("/models")
async def list_models(state: State) -> dict[str, Any]:
    return shapes.models_list(state.listed_ids(), state.created)


@router.get("/models/{model_id:path}")
async def retrieve_model(model_id: str, state: State) -> dict[str, Any]:
    """What the SDKs' `models.retrieve(id)` asks; ids served earlier in this run resolve too."""
    state.route(model_id)
    return shapes.model_entry(model_id, state.created)


@router.post("/chat/completions", openapi_extra=openapi.body(ChatRequest))
async def chat_completions(request: Request, state: State) -> Response:
    body = await read_body(request, ChatRequest, state.settings.max_body_bytes)
    served = state.route(body.model, "chat")
    params = chat_params(served, body)
    return await _generation(
        state, served, request, "chat", "chat", params, body, shapes.chat_completion
    )


@router.post("/chat/completions/input_tokens", openapi_extra=openapi.body(ChatRequest))
async def chat_input_tokens(request: Request, state: State) -> JSONResponse:
    """llama-server's count of a chat's prompt tokens, by the serving model's template."""
    body = await read_body(request, ChatRequest, state.settings.max_body_bytes)
    served = state.route(body.model, "chat")
    count = await prompt_tokens(request, state, served, chat_params(served, body))
    return JSONResponse({"input_tokens": count}, status_code=200 if count is not None else 499)


async def prompt_tokens(
    request: Request, state: DaemonState, served: Served, params: dict[str, Any]
) -> int | None:
    """A chat's prompt tokens, counted by a generation of no tokens (its prompt stays cached
    for the request that usually follows); None when the client left."""
    gen = await opened(state, served, "count_tokens", "chat", {**params, "max_tokens": 0})
    if await collect(request, gen, served.model_id) is None:
        return None
    return int(gen.end["usage"]["prompt_tokens"])


@router.post("/completions", openapi_extra=openapi.body(CompletionRequest))
async def completions(request: Request, state: State) -> Response:
    body = await read_body(request, CompletionRequest, state.settings.max_body_bytes)
    # Fill-in-the-middle (a suffix, or a raw FIM prompt) with no model named is autocomplete's.
    prompt, suffix = body.prompt_text, body.suffix
    raw_fim = split_fim(prompt) if suffix is None else None
    served = state.route(body.model, "chat" if suffix is None and not raw_fim else "autocomplete")
    if raw_fim and served.fim:
        prompt, suffix = raw_fim  # rendered with the serving model's own FIM tokens
    params = completion_params(served, body, prompt, suffix)
    return await _generation(
        state, served, request, "completions", "completion", params, body, shapes.text_completion
    )


@router.post("/embeddings", openapi_extra=openapi.body(EmbeddingRequest))
async def embeddings(request: Request, state: State) -> JSONResponse:
    body = await read_body(request, EmbeddingRequest, state.settings.max_body_bytes)
    served = state.route(body.model, "embeddings")
    result = await embed(state, served, body.inputs)
    return _vectors(result, served.model_id, body.encoding_format)


async def embed(state: DaemonState, served: Served, inputs: Any) -> dict[str, Any]:
    """Vectors for the embeddings role: from its upstreams in order while they answer, then
    from `served`, the local worker; every API's embeddings door comes through here."""
    for rung in state.upstreams.get("embeddings", []):
        if rung.in_use:
            try:
                return await _embed(state, rung.admission, rung, rung.label, inputs)
            except UpstreamUnavailable as exc:
                rung.failed(exc.message)  # the next rung (the local worker last) answers
    return await _embed(state, served.admission, served.supervisor, served.model_id, inputs)


def _vectors(result: dict[str, Any], model_id: str, encoding: str) -> JSONResponse:
    return JSONResponse(
        shapes.embeddings(result["data"], result["prompt_tokens"], model_id, encoding)
    )


async def _embed(
    state: DaemonState, admission: Admission, rung: Rung, label: str, inputs: Any
) -> dict[str, Any]:
    """Vectors from one rung (a local worker or an upstream), recorded under its label."""
    started = time.perf_counter()
    outcome: Outcome = "error"
    lease = None
    admitted = False
    try:
        await admission.acquire()
        admitted = True
        lease = await rung.lease(state.settings.queue_timeout_s)
        result: dict[str, Any] = await lease.client.embed(inputs)
        outcome = "ok"
        return result
    except Exception as exc:
        outcome = outcome_of(exc)
        raise
    finally:
        if lease is not None:
            lease.release()
        if admitted:
            admission.release()
        state.record(
            RequestRecord(
                endpoint="embeddings",
                outcome=outcome,
                queue_ms=round((time.perf_counter() - started) * 1000, 2),
                model=label,
            )
        )
