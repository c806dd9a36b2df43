"""Anthropic's Messages API at the door, the daemon's chat inside: a Messages body becomes the
OpenAI-shaped chat body the rest of the daemon reads, and the worker's chunks become a Message
or the event stream the `anthropic` SDK (and Claude Code) expects:
message_start, per block content_block_start / _delta / _stop, message_delta, message_stop."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from assistantd.api.shapes import arguments_of
from assistantd.errors import InvalidRequest

STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}
ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")  # cache_control, metadata, betas: not needed here


class Block(_Loose):
    type: str
    text: str | None = None
    id: str | None = None  # tool_use
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None  # tool_result
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


class MessageIn(_Loose):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolIn(_Loose):
    name: str = Field(max_length=256)
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class MessagesRequest(_Loose):
    model: str | None = Field(None, max_length=256)
    max_tokens: int = Field(ge=1)
    messages: list[MessageIn] = Field(min_length=1, max_length=4096)
    system: str | list[Block] | None = None
    stop_sequences: list[str] | None = Field(None, max_length=16)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1000)
    stream: bool = False
    tools: list[ToolIn] | None = Field(None, max_length=512)
    tool_choice: dict[str, Any] | None = None


class CountRequest(_Loose):
    """count_tokens takes what create takes, without max_tokens."""

    model: str | None = Field(None, max_length=256)
    messages: list[MessageIn] = Field(min_length=1, max_length=4096)
    system: str | list[Block] | None = None
    tools: list[ToolIn] | None = Field(None, max_length=512)


def _text(blocks: str | list[Block] | list[dict[str, Any]] | None, where: str) -> str:
    if blocks is None or isinstance(blocks, str):
        return blocks or ""
    parts = []
    for block in blocks:
        kind = block.type if isinstance(block, Block) else block.get("type")
        if kind != "text":
            raise InvalidRequest(f"{where}: this model takes text only; remove the {kind} block")
        parts.append((block.text if isinstance(block, Block) else block.get("text")) or "")
    return "".join(parts)


def _message(message: MessageIn, index: int) -> list[dict[str, Any]]:
    """One Anthropic message as OpenAI chat messages: tool results become tool messages,
    tool_use blocks the assistant's tool_calls."""
    where = f"messages.{index}.content"
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    out: list[dict[str, Any]] = []
    text: list[Block] = []
    calls: list[dict[str, Any]] = []
    for block in message.content:
        if block.type == "tool_result":
            out.append({"role": "tool", "tool_call_id": block.tool_use_id or "",
                        "content": _text(block.content, where)})  # fmt: skip
        elif block.type == "tool_use":
            function = {"name": block.name or "", "arguments": json.dumps(block.input or {})}
            calls.append({"id": block.id or _id("toolu"), "type": "function", "function": function})
        elif block.type == "thinking":
            continue  # earlier reasoning the client echoes back: not part of the prompt
        else:
            text.append(block)
    said = _text(text, where)
    if message.role == "assistant":
        out.append(
            {"role": "assistant", "content": said, **({"tool_calls": calls} if calls else {})}
        )
    elif said or not out:
        out.append({"role": "user", "content": said})
    return out


def _tools(tools: list[ToolIn] | None, choice: dict[str, Any] | None) -> dict[str, Any]:
    if not tools or (choice or {}).get("type") == "none":
        return {}
    out: dict[str, Any] = {
        "tools": [
            {"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.input_schema}}
            for t in tools
        ]
    }  # fmt: skip
    kind = (choice or {}).get("type", "auto")
    if kind == "any":
        out["tool_choice"] = "required"
    elif kind == "tool":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}  # type: ignore[union-attr]
    return out


def to_chat(body: MessagesRequest | CountRequest) -> dict[str, Any]:
    """The OpenAI chat body that asks the same."""
    messages: list[dict[str, Any]] = []
    system = _text(body.system, "system")
    if system:
        messages.append({"role": "system", "content": system})
    for index, message in enumerate(body.messages):
        messages.extend(_message(message, index))
    chat: dict[str, Any] = {"messages": messages}
    if isinstance(body, MessagesRequest):
        chat |= {"max_tokens": body.max_tokens, "stream": body.stream}
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"),
                             ("top_k", "top_k"), ("stop", "stop_sequences")):  # fmt: skip
            if getattr(body, theirs) is not None:
                chat[ours] = getattr(body, theirs)
        chat |= _tools(body.tools, body.tool_choice)
    else:
        chat |= _tools(body.tools, None)
    return chat


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def _usage(end: dict[str, Any]) -> dict[str, int]:
    usage = end.get("usage") or {}
    return {
        "input_tokens": int(usage.get("prompt_tokens", 0)),
        "output_tokens": int(usage.get("completion_tokens", 0)),
    }


def _stop(end: dict[str, Any], finish: str | None) -> tuple[str, None]:
    if end.get("stop_type") == "word":
        return "stop_sequence", None  # which sequence matched is not told by the worker
    return STOP_REASONS.get(finish or "stop", "end_turn"), None


def _blocks(calls: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for call in calls:
        name = (call.get("function") or {}).get("name", "")
        yield {"type": "tool_use", "id": call.get("id") or _id("toolu"), "name": name,
               "input": arguments_of(call)}  # fmt: skip


def message(openai: dict[str, Any], end: dict[str, Any], model_id: str) -> dict[str, Any]:
    """A whole answer (the OpenAI chat.completion shape) as an Anthropic Message."""
    choice = openai["choices"][0]
    said = choice["message"].get("content") or ""
    content: list[dict[str, Any]] = [{"type": "text", "text": said}] if said else []
    content += list(_blocks(choice["message"].get("tool_calls") or []))
    reason, sequence = _stop(end, choice.get("finish_reason"))
    return {
        "id": _id("msg"),
        "type": "message",
        "role": "assistant",
        "model": model_id,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": _usage(end),
    }


def _event(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()


async def stream(
    chunks: AsyncIterator[dict[str, Any]], ended: Callable[[], dict[str, Any]], model_id: str
) -> AsyncIterator[bytes]:
    """The worker's chunks as Anthropic's event stream; `ended()` gives the generation's end
    (usage, stop) once its chunks are done."""
    start: dict[str, Any] = {
        "id": _id("msg"), "type": "message", "role": "assistant", "model": model_id,
        "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 0, "output_tokens": 0},
    }  # fmt: skip
    yield _event("message_start", {"message": start})
    index, text_open, finish = 0, False, None
    async for chunk in chunks:
        choice = (chunk.get("choices") or [{}])[0]
        delta = choice.get("delta") or {}
        finish = choice.get("finish_reason") or finish
        if delta.get("content"):
            if not text_open:
                empty = {"type": "text", "text": ""}
                yield _event("content_block_start", {"index": index, "content_block": empty})
                text_open = True
            text = {"type": "text_delta", "text": delta["content"]}
            yield _event("content_block_delta", {"index": index, "delta": text})
        for call in _blocks(delta.get("tool_calls") or []):
            if text_open:
                yield _event("content_block_stop", {"index": index})
                index, text_open = index + 1, False
            arguments = json.dumps(call.pop("input"))
            block: dict[str, Any] = {**call, "input": {}}
            yield _event("content_block_start", {"index": index, "content_block": block})
            partial = {"type": "input_json_delta", "partial_json": arguments}
            yield _event("content_block_delta", {"index": index, "delta": partial})
            yield _event("content_block_stop", {"index": index})
            index += 1
    if text_open:
        yield _event("content_block_stop", {"index": index})
    end = ended()
    reason, sequence = _stop(end, finish)
    delta = {"stop_reason": reason, "stop_sequence": sequence}
    yield _event("message_delta", {"delta": delta, "usage": _usage(end)})
    yield _event("message_stop", {})


def error_body(status: int, text: str) -> dict[str, Any]:
    kind = ERROR_TYPES.get(status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": text}}
