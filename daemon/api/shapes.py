"""Response bodies shaped exactly as the OpenAI API and llama.cpp's server shape them."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def restamp(chunk: dict[str, Any], model_id: str) -> dict[str, Any]:
    chunk["model"] = model_id
    return chunk


def _text_of(chunk: dict[str, Any]) -> str:
    choice = chunk["choices"][0]
    if "delta" in choice:
        return choice["delta"].get("content") or ""
    return choice.get("text") or ""


def _finish(chunks: list[dict[str, Any]], end: dict[str, Any]) -> str:
    for chunk in reversed(chunks):
        reason = chunk["choices"][0].get("finish_reason")
        if reason:
            return reason
    return end.get("finish_reason") or "length"


def usage_chunk(first: dict[str, Any], model_id: str, usage: dict[str, Any]) -> dict[str, Any]:
    """The extra final chunk `stream_options.include_usage` asks for: no choices, usage set."""
    return {
        "id": first["id"],
        "object": first["object"],
        "created": first["created"],
        "model": model_id,
        "choices": [],
        "usage": usage,
    }


def chat_completion(
    chunks: list[dict[str, Any]], end: dict[str, Any], model_id: str
) -> dict[str, Any]:
    first = chunks[0]
    return {
        "id": first["id"],
        "object": "chat.completion",
        "created": first["created"],
        "model": model_id,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(map(_text_of, chunks))},
                "logprobs": None,
                "finish_reason": _finish(chunks, end),
            }
        ],
        "usage": end.get("usage"),
    }


def text_completion(
    chunks: list[dict[str, Any]], end: dict[str, Any], model_id: str
) -> dict[str, Any]:
    first = chunks[0]
    return {
        "id": first["id"],
        "object": "text_completion",
        "created": first["created"],
        "model": model_id,
        "choices": [
            {
                "index": 0,
                "text": "".join(map(_text_of, chunks)),
                "logprobs": None,
                "finish_reason": _finish(chunks, end),
            }
        ],
        "usage": end.get("usage"),
    }


def infill_piece(chunk: dict[str, Any]) -> dict[str, Any]:
    return {"content": _text_of(chunk), "stop": False}


def infill_result(
    chunks: list[dict[str, Any]], end: dict[str, Any], model_id: str, *, streamed: bool
) -> dict[str, Any]:
    """llama.cpp's /infill answer (the final event when streaming, with empty content)."""
    timings = end.get("timings", {})
    finish = _finish(chunks, end) if chunks else end.get("finish_reason")
    return {
        "content": "" if streamed else "".join(map(_text_of, chunks)),
        "model": model_id,
        "stop": True,
        "stop_type": "limit" if finish == "length" else "eos",
        "tokens_predicted": timings.get("predicted_n", 0),
        "tokens_evaluated": timings.get("prompt_n", 0),
        "tokens_cached": 0,
        "truncated": False,
        "timings": timings,
    }


def embeddings(
    vectors: list[list[float]], prompt_tokens: int, model_id: str, encoding: str
) -> dict[str, Any]:
    def encode(vector: list[float]) -> list[float] | str:
        if encoding == "base64":
            return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
        return vector

    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode(v)}
            for i, v in enumerate(vectors)
        ],
        "model": model_id,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def models_list(model_id: str, created: int) -> dict[str, Any]:
    models = [{"id": model_id, "object": "model", "created": created, "owned_by": "assistantd"}]
    return {"object": "list", "data": models if model_id else []}
