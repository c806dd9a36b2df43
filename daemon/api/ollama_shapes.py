"""Ollama's API at the door (what Copilot Chat's "Ollama" provider, Zed, JetBrains, Open WebUI
and Cline speak), the daemon's chat, completion and embeddings inside: Ollama bodies become the
OpenAI-shaped requests the rest of the daemon reads, the worker's chunks become Ollama's
NDJSON lines, and each served model is described as Ollama describes its own."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import gguf
from pydantic import BaseModel, ConfigDict, Field

from assistantd.api.shapes import arguments_of
from assistantd.planning.gguf_header import read_local

VERSION = "0.14.0"  # the Ollama API version these routes follow
# Ollama's option names → ours (num_ctx is fixed per slot here: accepted, not applied).
OPTIONS = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "min_p": "min_p",
    "seed": "seed", "stop": "stop", "presence_penalty": "presence_penalty",
    "frequency_penalty": "frequency_penalty",
}  # fmt: skip


class _Loose(BaseModel):
    model_config = ConfigDict(extra="ignore")  # keep_alive, think, images (refused below)


class OllamaMessage(_Loose):
    role: str
    content: str = ""
    images: list[str] | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None


class ChatBody(_Loose):
    model: str = Field(max_length=256)
    messages: list[OllamaMessage] = Field(default_factory=list, max_length=4096)
    tools: list[dict[str, Any]] | None = Field(None, max_length=512)
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    stream: bool = True


class GenerateBody(_Loose):
    model: str = Field(max_length=256)
    prompt: str = ""
    suffix: str | None = None
    system: str | None = None
    raw: bool = False
    format: str | dict[str, Any] | None = None
    options: dict[str, Any] = Field(default_factory=dict)
    stream: bool = True
    images: list[str] | None = None


class EmbedBody(_Loose):
    model: str = Field(max_length=256)
    input: str | list[str] | None = None
    prompt: str | None = None  # /api/embeddings, the older route


class NameBody(_Loose):
    model: str | None = Field(None, max_length=256)
    name: str | None = Field(None, max_length=256)  # what older clients send

    @property
    def wanted(self) -> str:
        return self.model or self.name or ""


def model_name(name: str) -> str:
    """Ollama's default tag is ':latest'; our ids have none."""
    return name.removesuffix(":latest")


def sampling(options: dict[str, Any]) -> dict[str, Any]:
    out = {ours: options[theirs] for theirs, ours in OPTIONS.items() if theirs in options}
    limit = options.get("num_predict")
    if isinstance(limit, int) and limit >= 0:
        out["max_tokens"] = limit
    return out


def response_format(fmt: str | dict[str, Any] | None) -> dict[str, Any]:
    """`format`: "json" or a JSON schema, as a grammar the answer must follow."""
    if fmt == "json":
        return {"response_format": {"type": "json_object"}}
    if isinstance(fmt, dict):
        return {"response_format": {"type": "json_schema",
                                    "json_schema": {"name": "format", "schema": fmt}}}  # fmt: skip
    return {}


def chat_body(body: ChatBody) -> dict[str, Any]:
    """The OpenAI chat body that asks the same."""
    messages: list[dict[str, Any]] = []
    for index, message in enumerate(body.messages):
        if message.images:
            raise ValueError(f"messages.{index}.images: this model takes text only")
        out: dict[str, Any] = {"role": message.role, "content": message.content}
        if message.tool_calls:
            out["tool_calls"] = [
                {"id": f"call_{index}_{n}", "type": "function",
                 "function": {"name": (c.get("function") or {}).get("name", ""),
                              "arguments": json.dumps((c.get("function") or {}).get("arguments")
                                                      or {})}}
                for n, c in enumerate(message.tool_calls)
            ]  # fmt: skip
        if message.role == "tool":
            out["tool_call_id"] = message.tool_name or ""
        messages.append(out)
    chat: dict[str, Any] = {"messages": messages, "stream": body.stream}
    chat |= sampling(body.options) | response_format(body.format)
    if body.tools:
        chat["tools"] = body.tools
    return chat


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def durations(end: dict[str, Any], started: float) -> dict[str, Any]:
    """Ollama's counts and nanosecond durations, from the generation's timings."""
    timings = end.get("timings") or {}
    usage = end.get("usage") or {}
    return {
        "total_duration": int((time.perf_counter() - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": int(usage.get("prompt_tokens", 0)),
        "prompt_eval_duration": int(float(timings.get("prompt_ms", 0.0)) * 1e6),
        "eval_count": int(usage.get("completion_tokens", 0)),
        "eval_duration": int(float(timings.get("predicted_ms", 0.0)) * 1e6),
    }


def done_reason(end: dict[str, Any]) -> str:
    finish = end.get("finish_reason") or "stop"
    return {"length": "length", "tool_calls": "stop"}.get(finish, str(finish))


def tool_calls(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """OpenAI tool calls (arguments as a JSON string) as Ollama's (arguments as an object)."""
    return [
        {"function": {"name": (c.get("function") or {}).get("name", ""),
                      "arguments": arguments_of(c)}}
        for c in calls
    ]  # fmt: skip


def line(model: str, **fields: Any) -> bytes:
    return (json.dumps({"model": model, "created_at": now(), **fields}) + "\n").encode()


@functools.lru_cache(maxsize=16)
def _header_facts(path: str) -> dict[str, Any]:
    """Family, parameter count and quantization from the GGUF header (read once per file)."""
    try:
        header = read_local(Path(path))
    except Exception:  # a file we cannot read still gets listed, with less detail
        return {}
    meta = header.metadata
    arch = str(meta.get("general.architecture", ""))
    params = sum(math.prod(t.shape) for t in header.tensors)
    try:
        quant = gguf.LlamaFileType(int(meta["general.file_type"])).name.removeprefix("MOSTLY_")
    except (KeyError, ValueError, TypeError):
        quant = "unknown"
    return {
        "arch": arch,
        "parameters": params,
        "quant": quant,
        "ctx_train": meta.get(f"{arch}.context_length"),
        "size": Path(path).stat().st_size,
    }


def _size_label(params: int) -> str:
    return f"{params / 1e9:.1f}B" if params >= 1e9 else f"{params / 1e6:.0f}M"


def details(info: dict[str, Any]) -> dict[str, Any]:
    facts = _header_facts(str(info.get("model_path", "")))
    family = facts.get("arch", "")
    return {
        "parent_model": "",
        "format": "gguf",
        "family": family,
        "families": [family] if family else [],
        "parameter_size": _size_label(facts["parameters"]) if facts else "",
        "quantization_level": facts.get("quant", ""),
    }


def tag(name: str, info: dict[str, Any], created: int) -> dict[str, Any]:
    """One /api/tags entry."""
    facts = _header_facts(str(info.get("model_path", "")))
    return {
        "name": name,
        "model": name,
        "modified_at": datetime.fromtimestamp(created, UTC).isoformat().replace("+00:00", "Z"),
        "size": facts.get("size", 0),
        "digest": hashlib.sha256(str(info.get("model_path", name)).encode()).hexdigest(),
        "details": details(info),
    }


def show(info: dict[str, Any], capabilities: list[str]) -> dict[str, Any]:
    """/api/show: what the served model is and can do, as Ollama reports its own."""
    facts = _header_facts(str(info.get("model_path", "")))
    arch = facts.get("arch", "")
    model_info: dict[str, Any] = {"general.architecture": arch}
    if facts:
        model_info["general.parameter_count"] = facts["parameters"]
        model_info[f"{arch}.context_length"] = facts.get("ctx_train") or info.get("n_ctx")
    return {
        "modelfile": f"# served by assistantd\nFROM {info.get('model_path', '')}\n",
        "parameters": f"num_ctx {info.get('n_ctx', 0)}",
        "template": "",
        "details": details(info),
        "model_info": model_info,
        "capabilities": capabilities,
        "modified_at": now(),
    }
