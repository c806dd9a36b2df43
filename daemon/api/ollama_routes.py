"""Ollama's API (`/api/...`) on the daemon's own port: a door onto the same chat, completion
and embeddings paths as /v1 (roles, slots, shifting, metrics and the guard all apply). Model
management that belongs to Ollama's own store answers with what to do here instead."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from assistantd.api import ollama_shapes as shapes
from assistantd.api.deps import State
from assistantd.api.openai_routes import chat_params, completion_params, embed
from assistantd.api.proxy import Generation
from assistantd.api.schemas import ChatRequest, CompletionRequest
from assistantd.api.streaming import (
    ClosingStreamingResponse,
    collect,
    guarded,
    opened,
    read_body,
    validated,
)
from assistantd.control.served import Served
from assistantd.control.state import DaemonState
from assistantd.errors import AssistantError, InvalidRequest
from assistantd.planning.catalog import load_catalog
from assistantd.vocab import ROLE_IDS

router = APIRouter(prefix="/api")


def _served(state: DaemonState, name: str, role: Any = "chat") -> Served:
    return state.route(shapes.model_name(name) or None, role)


def _capabilities(state: DaemonState, served: Served) -> list[str]:
    info = served.supervisor.worker_info
    caps = ["completion"]
    if info.get("tools"):
        caps.append("tools")
    if served.fim:
        caps.append("insert")
    if state.served.get("embeddings") is served:
        caps.append("embedding")
    return caps


def _ndjson(pieces: AsyncIterator[bytes]) -> ClosingStreamingResponse:
    return ClosingStreamingResponse(pieces, media_type="application/x-ndjson")


def _error_line(exc: AssistantError) -> bytes:
    return (json.dumps({"error": exc.message}) + "\n").encode()


async def _answer(
    request: Request, gen: Generation, model: str, body: Any, started: float, as_message: bool
) -> Response:
    """Ollama's NDJSON lines (or one object) from the generation's chunks: a chat `message`
    (/api/chat) or a `response` string (/api/generate)."""

    def final(end: dict[str, Any], **fields: Any) -> dict[str, Any]:
        return {"done": True, "done_reason": shapes.done_reason(end), **fields,
                **shapes.durations(end, started)}  # fmt: skip

    def said(text: str, calls: list[dict[str, Any]] | None) -> dict[str, Any]:
        if not as_message:
            return {"response": text}
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = shapes.tool_calls(calls)
        return {"message": message}

    if body.stream:

        async def lines() -> AsyncIterator[bytes]:
            async for event in gen.events():
                choice = (event["data"].get("choices") or [{}])[0]
                delta = choice.get("delta") or {}
                text = delta.get("content") or choice.get("text") or ""
                calls = delta.get("tool_calls")
                if text or calls:
                    yield shapes.line(model, **said(text, calls), done=False)
            yield shapes.line(model, **final(gen.end, **said("", None)))

        return _ndjson(guarded(gen, lines(), _error_line))
    got = await collect(request, gen, model)
    if got is None:
        return Response(status_code=499)
    text = "".join(
        (c["choices"][0].get("delta") or {}).get("content") or c["choices"][0].get("text") or ""
        for c in got
        if c.get("choices")
    )
    calls = [
        call
        for c in got
        if c.get("choices")
        for call in (c["choices"][0].get("delta") or {}).get("tool_calls") or []
    ]
    answer = {"model": model, "created_at": shapes.now(), **final(gen.end, **said(text, calls))}
    return JSONResponse(answer)


@router.post("/chat")
async def chat(request: Request, state: State) -> Response:
    body = await read_body(request, shapes.ChatBody, state.settings.max_body_bytes)
    served = _served(state, body.model)
    if not body.messages:  # Ollama's way to load a model: it is loaded
        return JSONResponse({"model": body.model, "created_at": shapes.now(), "done": True,
                             "done_reason": "load", "message": {"role": "assistant",
                                                                "content": ""}})  # fmt: skip
    try:
        wanted = shapes.chat_body(body)
    except ValueError as exc:
        raise InvalidRequest(str(exc)) from None
    params = chat_params(served, validated(ChatRequest, wanted))
    started = time.perf_counter()
    gen = await opened(state, served, "ollama_chat", "chat", params)
    return await _answer(request, gen, body.model, body, started, as_message=True)


@router.post("/generate")
async def generate(request: Request, state: State) -> Response:
    """A prompt with the model's chat template, `raw` text as is, or with `suffix`
    fill-in-the-middle (the autocomplete role's when no model is named)."""
    body = await read_body(request, shapes.GenerateBody, state.settings.max_body_bytes)
    if body.images:
        raise InvalidRequest("images: this model takes text only")
    served = _served(state, body.model, "autocomplete" if body.suffix is not None else "chat")
    if not body.prompt and body.suffix is None:
        return JSONResponse({"model": body.model, "created_at": shapes.now(), "response": "",
                             "done": True, "done_reason": "load"})  # fmt: skip
    started = time.perf_counter()
    sampling = shapes.sampling(body.options) | shapes.response_format(body.format)
    if body.suffix is not None or body.raw:
        request_body = validated(CompletionRequest, {"prompt": body.prompt, **sampling})
        request_body.max_tokens = sampling.get("max_tokens")  # Ollama's default: no limit
        params = completion_params(served, request_body, body.prompt, body.suffix)
        gen = await opened(state, served, "ollama_generate", "completion", params)
        return await _answer(request, gen, body.model, body, started, as_message=False)
    messages = ([{"role": "system", "content": body.system}] if body.system else []) + [
        {"role": "user", "content": body.prompt}
    ]
    params = chat_params(served, validated(ChatRequest, {"messages": messages, **sampling}))
    gen = await opened(state, served, "ollama_generate", "chat", params)
    return await _answer(request, gen, body.model, body, started, as_message=False)


@router.post("/embed")
async def embed_route(request: Request, state: State) -> JSONResponse:
    body = await read_body(request, shapes.EmbedBody, state.settings.max_body_bytes)
    texts = [body.input] if isinstance(body.input, str) else list(body.input or [])
    if not texts or any(not t for t in texts):
        raise InvalidRequest("input: send at least one non-empty text")
    served = _served(state, body.model, "embeddings")
    started = time.perf_counter()
    result = await embed(state, served, texts)
    took_ns = int((time.perf_counter() - started) * 1e9)
    return JSONResponse({"model": body.model, "embeddings": result["data"],
                         "total_duration": took_ns, "load_duration": 0,
                         "prompt_eval_count": result["prompt_tokens"]})  # fmt: skip


@router.post("/embeddings")
async def embeddings_route(request: Request, state: State) -> JSONResponse:
    """The older route: one prompt, one vector."""
    body = await read_body(request, shapes.EmbedBody, state.settings.max_body_bytes)
    if not body.prompt:
        raise InvalidRequest("prompt: send a non-empty text")
    result = await embed(state, _served(state, body.model, "embeddings"), [body.prompt])
    return JSONResponse({"embedding": result["data"][0]})


@router.get("/tags")
async def tags(state: State) -> dict[str, Any]:
    """Each served model, then the role ids (which follow their role across shifts)."""
    models = [shapes.tag(s.model_id, s.supervisor.worker_info, state.created)
              for s in state.workers]  # fmt: skip
    for role_id, role in ROLE_IDS.items():
        if state.served:
            info = state.for_role(role).supervisor.worker_info
            models.append(shapes.tag(role_id, info, state.created))
    return {"models": models}


@router.post("/show")
async def show(request: Request, state: State) -> dict[str, Any]:
    body = await read_body(request, shapes.NameBody, state.settings.max_body_bytes)
    served = _served(state, body.wanted)
    return shapes.show(served.supervisor.worker_info, _capabilities(state, served))


@router.get("/ps")
async def ps(state: State) -> dict[str, Any]:
    running = []
    for served in state.workers:
        info = served.supervisor.worker_info
        entry = shapes.tag(served.model_id, info, state.created)
        on_devices = info.get("allocated") or {}
        vram = sum(sum(kinds.values()) for name, kinds in on_devices.items()
                   if not name.upper().startswith("CPU"))  # fmt: skip
        entry |= {"expires_at": "2999-01-01T00:00:00Z", "size_vram": vram,
                  "context_length": served.n_ctx}  # fmt: skip
        running.append(entry)
    return {"models": running}


@router.get("/version")
async def version() -> dict[str, str]:
    return {"version": shapes.VERSION}


@router.post("/pull")
async def pull(request: Request, state: State) -> JSONResponse:
    """Ollama's pull names a model; here the catalog's models come as rungs that `assistantctl
    use` pins (downloading it first), so the answer says which catalog entry and how."""
    try:
        name = str((await request.json()).get("model") or "")
    except (ValueError, AttributeError):
        name = ""
    wanted = re.sub(r"[^a-z0-9.]+", "-", name.lower()).strip("-")
    catalog = {m.id: m.roles for m in load_catalog(state.settings.catalog)}
    ids = list(catalog)
    matches = [i for i in ids if wanted and (i == wanted or i.startswith(wanted))]
    if not matches and wanted:
        words = wanted.split("-")
        matches = [i for i in ids if all(w in i for w in words)]
    if matches:
        pins = "; ".join(f"assistantctl use {_role_of(catalog[i])} {i}" for i in matches[:3])
        raise InvalidRequest(
            f"'{name}' is in assistantd's catalog as {', '.join(matches[:3])}. assistantd "
            f"downloads and serves models itself; to pin this one: {pins} (`assistantctl "
            "use --auto` hands the choice back)"
        )
    raise InvalidRequest(
        f"'{name}' is not in assistantd's catalog; `assistantctl plan` lists the models that "
        "fit this machine, and `assistantctl use chat MODEL` pins one"
    )


def _role_of(roles: tuple[str, ...]) -> str:
    return next((r for r in ("autocomplete", "embeddings") if r in roles and "chat" not in roles),
                "chat")  # fmt: skip


@router.post("/create")
@router.post("/push")
@router.post("/delete")
@router.delete("/delete")
@router.post("/copy")
async def model_store(request: Request) -> JSONResponse:
    """Ollama's own model store: not how models get here."""
    action = request.url.path.rsplit("/", 1)[-1]
    raise InvalidRequest(
        f"/api/{action} manages Ollama's model store; assistantd picks, downloads and shifts "
        "models itself. To pin a model: assistantctl use chat MODEL (assistantctl plan lists "
        "what fits)"
    )
