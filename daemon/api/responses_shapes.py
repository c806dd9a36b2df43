"""OpenAI's Responses API at the door (what Codex CLI speaks), the daemon's chat inside. Only
stateless use: the whole conversation comes in `input` each time; `previous_response_id` and
stored responses are refused with what to do instead. A response is built from the worker's
chunks: message and function_call output items, and in a stream the events the `openai` SDK
reads (response.created … output_text.delta … response.completed)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from assistantd.errors import InvalidRequest


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")  # reasoning, metadata, truncation, include, …


class ResponsesRequest(_Loose):
    model: str | None = Field(None, max_length=256)
    input: str | list[dict[str, Any]] = Field(max_length=4096)
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    tools: list[dict[str, Any]] | None = Field(None, max_length=512)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool = True
    text: dict[str, Any] | None = None
    stream: bool = False
    previous_response_id: str | None = None
    store: bool | None = None


def _text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        kind = part.get("type")
        if kind not in ("input_text", "output_text", "text"):
            raise InvalidRequest(f"{where}: this model takes text only; remove the {kind} part")
        parts.append(str(part.get("text", "")))
    return "".join(parts)


def _messages(body: ResponsesRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = []
    if body.instructions:
        messages.append({"role": "system", "content": body.instructions})
    if isinstance(body.input, str):
        return [*messages, {"role": "user", "content": body.input}]
    for index, item in enumerate(body.input):
        kind, where = item.get("type", "message"), f"input.{index}"
        if kind == "message":
            role = "system" if item.get("role") == "developer" else item.get("role", "user")
            text = _text(item.get("content"), f"{where}.content")
            messages.append({"role": role, "content": text})
        elif kind == "function_call":
            call = {"id": item.get("call_id", ""), "type": "function",
                    "function": {"name": item.get("name", ""),
                                 "arguments": item.get("arguments", "{}")}}  # fmt: skip
            last = messages[-1] if messages else None
            if last and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)  # parallel calls: one assistant turn
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text(output, f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id", ""),
                             "content": text})  # fmt: skip
        elif kind == "reasoning":
            continue  # earlier reasoning the client echoes back: not part of the prompt
        else:
            raise InvalidRequest(f"{where}: items of type '{kind}' are not served here")
    return messages


def _tools(body: ResponsesRequest) -> dict[str, Any]:
    functions = [t for t in body.tools or [] if t.get("type") == "function"]
    others = [t.get("type") for t in body.tools or [] if t.get("type") != "function"]
    if others:
        raise InvalidRequest(f"tools: only function tools are served here, not {others[0]}")
    if not functions or body.tool_choice == "none":
        return {}
    out: dict[str, Any] = {
        "tools": [{"type": "function", "function": {
            "name": t.get("name", ""), "description": t.get("description") or "",
            "parameters": t.get("parameters") or {"type": "object"}}} for t in functions]
    }  # fmt: skip
    choice = body.tool_choice
    if choice == "required":
        out["tool_choice"] = "required"
    elif isinstance(choice, dict) and choice.get("type") == "function":
        out["tool_choice"] = {"type": "function", "function": {"name": choice.get("name", "")}}
    return out


def _format(body: ResponsesRequest) -> dict[str, Any]:
    fmt = (body.text or {}).get("format") or {}
    if fmt.get("type") == "json_object":
        return {"response_format": {"type": "json_object"}}
    if fmt.get("type") == "json_schema":
        schema = {"name": fmt.get("name", "format"), "schema": fmt.get("schema") or {}}
        return {"response_format": {"type": "json_schema", "json_schema": schema}}
    return {}


def to_chat(body: ResponsesRequest) -> dict[str, Any]:
    """The OpenAI chat body that asks the same."""
    if body.previous_response_id:
        raise InvalidRequest(
            "previous_response_id: responses are not stored here (stateless); send the whole "
            "conversation in input (and store: false)",
            param="previous_response_id",
        )
    chat: dict[str, Any] = {"messages": _messages(body)}
    for ours, value in (("max_tokens", body.max_output_tokens),
                        ("temperature", body.temperature), ("top_p", body.top_p)):  # fmt: skip
        if value is not None:
            chat[ours] = value
    return chat | _tools(body) | _format(body)


class Builder:
    """One response: its id, its output items, and (streamed) the events that make them."""

    def __init__(self, body: ResponsesRequest, model_id: str) -> None:
        self.body, self.model_id = body, model_id
        self.id = f"resp_{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.output: list[dict[str, Any]] = []
        self._seq = 0

    def response(self, status: str, end: dict[str, Any] | None = None) -> dict[str, Any]:
        usage = (end or {}).get("usage") or {}
        cut = (end or {}).get("finish_reason") == "length"
        return {
            "id": self.id, "object": "response", "created_at": self.created, "model": self.model_id,
            "status": "incomplete" if cut and status == "completed" else status,
            "incomplete_details": {"reason": "max_output_tokens"} if cut else None,
            "output": self.output, "error": None, "instructions": self.body.instructions,
            "max_output_tokens": self.body.max_output_tokens,
            "parallel_tool_calls": self.body.parallel_tool_calls,
            "tool_choice": self.body.tool_choice or "auto", "tools": self.body.tools or [],
            "temperature": self.body.temperature, "top_p": self.body.top_p,
            "text": self.body.text or {"format": {"type": "text"}},
            "previous_response_id": None, "store": False,
            "usage": {
                "input_tokens": int(usage.get("prompt_tokens", 0)),
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": int(usage.get("completion_tokens", 0)),
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": int(usage.get("total_tokens", 0)),
            } if end else None,
        }  # fmt: skip

    def message_item(self, text: str, status: str = "completed") -> dict[str, Any]:
        part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
        content = [part] if status == "completed" else []
        return {"type": "message", "id": f"msg_{self.id[5:]}", "status": status,
                "role": "assistant", "content": content}  # fmt: skip

    @staticmethod
    def call_item(call: dict[str, Any]) -> dict[str, Any]:
        function = call.get("function") or {}
        call_id = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        return {"type": "function_call", "id": f"fc_{call_id}", "call_id": call_id,
                "name": function.get("name", ""), "arguments": function.get("arguments") or "{}",
                "status": "completed"}  # fmt: skip

    def whole(self, openai: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
        """A whole answer (the chat.completion shape) as a response."""
        message = openai["choices"][0]["message"]
        if message.get("content"):
            self.output.append(self.message_item(message["content"]))
        self.output += [self.call_item(c) for c in message.get("tool_calls") or []]
        return self.response("completed", end)

    def event(self, kind: str, **data: Any) -> bytes:
        self._seq += 1
        payload = {"type": kind, "sequence_number": self._seq, **data}
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

    async def stream(
        self, chunks: AsyncIterator[dict[str, Any]], ended: Callable[[], dict[str, Any]]
    ) -> AsyncIterator[bytes]:
        yield self.event("response.created", response=self.response("in_progress"))
        yield self.event("response.in_progress", response=self.response("in_progress"))
        text: list[str] = []
        closed = False
        item = self.message_item("", "in_progress")
        where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        async for chunk in chunks:
            delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
            if delta.get("content"):
                if not text:
                    yield self.event("response.output_item.added", output_index=0, item=item)
                    part = {"type": "output_text", "text": "", "annotations": []}
                    yield self.event("response.content_part.added", **where, part=part)
                text.append(delta["content"])
                yield self.event("response.output_text.delta", **where, delta=delta["content"],
                                 logprobs=[])  # fmt: skip
            calls = delta.get("tool_calls") or []
            if calls and text and not closed:
                for piece in self._text_done("".join(text), where):
                    yield piece
                closed = True
            for call in calls:
                for piece in self._call_events(call):
                    yield piece
        if text and not closed:
            for piece in self._text_done("".join(text), where):
                yield piece
        end = ended()
        yield self.event("response.completed", response=self.response("completed", end))

    def _text_done(self, text: str, where: dict[str, Any]) -> list[bytes]:
        done = self.message_item(text)
        self.output.insert(0, done)
        return [
            self.event("response.output_text.done", **where, text=text, logprobs=[]),
            self.event("response.content_part.done", **where, part=done["content"][0]),
            self.event("response.output_item.done", output_index=0, item=done),
        ]

    def _call_events(self, call: dict[str, Any]) -> list[bytes]:
        done = self.call_item(call)
        index = len(self.output)
        added = {**done, "arguments": "", "status": "in_progress"}
        self.output.append(done)
        return [
            self.event("response.output_item.added", output_index=index, item=added),
            self.event("response.function_call_arguments.delta", item_id=done["id"],
                       output_index=index, delta=done["arguments"]),
            self.event("response.function_call_arguments.done", item_id=done["id"],
                       output_index=index, arguments=done["arguments"]),
            self.event("response.output_item.done", output_index=index, item=done),
        ]  # fmt: skip
