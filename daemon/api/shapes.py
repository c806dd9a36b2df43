"""Response bodies shaped exactly as the OpenAI API and llama.cpp's server shape them."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

from assistantd.worker.client_body import as_probs, text_of
from assistantd.worker.client_body import infill_piece as infill_piece  # the worker's, too
from assistantd.worker.protocol import sse_event

DONE = b"data: [DONE]\n\n"
sse = sse_event  # the worker writes handed-over chunks with the same function


def restamp(chunk: dict[str, Any], model_id: str, keep_ids: bool = False) -> dict[str, Any]:
    """A worker chunk as OpenAI's: the served id, without llama-server's token ids (kept for
    llama-server's own routes)."""
    chunk["model"] = model_id
    if not keep_ids:
        for choice in chunk["choices"]:
            choice.pop("token_ids", None)
    return chunk


def _finish(chunks: list[dict[str, Any]], end: dict[str, Any]) -> str:
    for chunk in reversed(chunks):
        reason = chunk["choices"][0].get("finish_reason")
        if reason:
            return reason
    reason = end.get("finish_reason")
    return "stop" if reason in (None, "cancelled") else reason


def _by_choice(chunks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Chunks grouped by choice index (n > 1 and n_cmpl interleave their alternatives)."""
    groups: dict[int, list[dict[str, Any]]] = {}
    for chunk in chunks:
        groups.setdefault(int(chunk["choices"][0].get("index", 0)), []).append(chunk)
    return [groups[i] for i in sorted(groups)] or [[]]


def _logprobs_of(chunks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """One choice's logprobs, joined from its chunks (None when none were asked for)."""
    parts = [c["choices"][0]["logprobs"] for c in chunks if c["choices"][0].get("logprobs")]
    if not parts:
        return None
    joined: dict[str, Any] = {}
    for part in parts:
        for key, values in part.items():
            joined.setdefault(key, []).extend(values)
    return joined


def arguments_of(call: dict[str, Any]) -> Any:
    """An OpenAI tool call's arguments (a JSON string) as the object other APIs send."""
    try:
        return json.loads((call.get("function") or {}).get("arguments") or "{}")
    except ValueError:
        return {}


def _tool_calls_of(chunks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    calls = []
    for chunk in chunks:
        for call in chunk["choices"][0].get("delta", {}).get("tool_calls") or []:
            calls.append({k: v for k, v in call.items() if k != "index"})
    return calls


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
    choices = []
    for index, group in enumerate(_by_choice(chunks)):
        message: dict[str, Any] = {"role": "assistant", "content": "".join(map(text_of, group))}
        calls = _tool_calls_of(group)
        if calls:
            message["tool_calls"] = calls
            message["content"] = message["content"] or None
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": _logprobs_of(group),
                "finish_reason": _finish(group, end),
            }
        )
    return {
        "id": first["id"],
        "object": "chat.completion",
        "created": first["created"],
        "model": model_id,
        "system_fingerprint": first.get("system_fingerprint"),
        "choices": choices,
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
        "system_fingerprint": first.get("system_fingerprint"),
        "choices": [
            {
                "index": index,
                "text": "".join(map(text_of, group)),
                "logprobs": _logprobs_of(group),
                "finish_reason": _finish(group, end),
            }
            for index, group in enumerate(_by_choice(chunks))
        ],
        "usage": end.get("usage"),
    }


def infill_results(
    chunks: list[dict[str, Any]],
    end: dict[str, Any],
    model_id: str,
    settings: dict[str, Any],
    *,
    streamed: bool,
    return_tokens: bool = False,
) -> list[dict[str, Any]]:
    """llama.cpp's /infill answer, one per alternative (n_cmpl); when streaming, the final
    event with empty content. `settings` become `generation_settings` (llama.vscode reads
    its n_ctx from every answer). `tokens` is always there, as in llama-server: the answer's
    ids when asked for (`return_tokens`) and not streamed, else empty."""
    timings = end.get("timings", {})
    usage = end.get("usage", {})
    results = []
    for index, group in enumerate(_by_choice(chunks)):
        finish = _finish(group, end) if group else end.get("finish_reason")
        stop_type = end.get("stop_type") or "none"
        if finish == "length" or stop_type == "limit":
            stop_type = "limit"
        content = "" if streamed else "".join(map(text_of, group))
        results.append(
            {
                "index": index,
                "content": content,
                "tokens": _ids_of(group) if return_tokens and not streamed else [],
                "id_slot": -1,
                "model": model_id,
                "stop": True,
                "stop_type": stop_type,
                "stopping_word": end.get("stopping_word", "") if stop_type == "word" else "",
                "has_new_line": "\n" in content,
                "tokens_predicted": timings.get("predicted_n", 0),
                "tokens_evaluated": usage.get("prompt_tokens", timings.get("prompt_n", 0)),
                "tokens_cached": timings.get("cache_n", 0),
                "truncated": False,
                "generation_settings": {**settings, "model": model_id},
                "timings": timings,
            }
        )
        probabilities = (_logprobs_of(group) or {}).get("content")
        if probabilities is not None and not streamed:
            post = settings.get("post_sampling_probs")
            results[-1]["completion_probabilities"] = (
                as_probs(probabilities) if post else probabilities
            )
    return results


def _ids_of(group: list[dict[str, Any]]) -> list[int]:
    return [i for chunk in group for i in chunk["choices"][0].get("token_ids") or []]


def pick_fields(result: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """llama.cpp's `response_fields`: only these keys, where "a/b" names result["a"]["b"]
    and is returned under the key "a/b" (as llama.vim reads it)."""
    picked: dict[str, Any] = {}
    for path in fields:
        value: Any = result
        for part in path.split("/"):
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            picked[path] = value
    return picked


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


def model_entry(model_id: str, created: int) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": "assistantd"}


def models_list(model_ids: list[str], created: int) -> dict[str, Any]:
    return {"object": "list", "data": [model_entry(m, created) for m in model_ids]}
