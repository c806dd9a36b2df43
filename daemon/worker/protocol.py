"""The daemon ↔ worker wire protocol, typed once and imported by both sides (as Ollama's
llm/server.go declares its completion structs). One request per stream:

  GET  /info                 → WorkerInfo
  POST /generate             ← GenerateRequest; → NDJSON Event lines, the last one `end` or `error`
  POST /cancel/{request_id}  → CancelReply (stops that generation, once stopped)
  POST /embed                ← EmbedRequest; → EmbedReply
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NotRequired, TypedDict

from assistantd.vocab import GenerationKind

# Sampling parameters a request may pass through to the worker, defined once.
SAMPLING_KEYS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "repeat_penalty",
)


@dataclass(frozen=True)
class Sampling:
    """The sampling a slot runs with: llama.cpp's defaults for what a request leaves out. Kept
    here, free of llama_cpp, so the daemon can report them without loading the library."""

    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    seed: int | None = None  # None = random; alternative i of n uses seed + i
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    grammar: str | None = None  # GBNF text, root rule "root"
    logit_bias: Mapping[int, float] | Sequence[tuple[int, float]] | None = None  # token id -> bias


# Short completions are autocomplete-like: admitted ahead of waiting chat answers.
AUTOCOMPLETE_MAX_TOKENS = 128
# The most RAM a worker keeps evicted prompts in (worker/prompt_cache.py); the plan gives each
# worker what the models leave, up to this.
PROMPT_CACHE_MAX = 512 << 20


def priority_of(kind: GenerationKind, params: dict[str, Any]) -> int:
    """0 for autocomplete (/infill, FIM or short completions), 1 for chat and the rest; the
    daemon's queue and the worker's slots both admit by it."""
    if kind == "infill":
        return 0
    if kind == "completion":
        limit = params.get("max_tokens")
        if params.get("suffix") is not None or (
            limit is not None and limit <= AUTOCOMPLETE_MAX_TOKENS
        ):
            return 0
    return 1


class Usage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: NotRequired[dict[str, int]]


class Timings(TypedDict):
    prompt_n: int
    prompt_ms: float
    prompt_per_second: float
    predicted_n: int
    predicted_ms: float
    predicted_per_second: float
    cache_n: NotRequired[int]
    prompt_per_token_ms: NotRequired[float]
    predicted_per_token_ms: NotRequired[float]
    draft_n: NotRequired[int]
    draft_n_accepted: NotRequired[int]


class ChunkEvent(TypedDict):
    type: Literal["chunk"]
    data: dict[str, Any]  # an OpenAI completion or chat.completion.chunk object


class EndEvent(TypedDict):
    type: Literal["end"]
    finish_reason: str | None
    usage: Usage
    timings: Timings
    stop_type: NotRequired[str]
    stopping_word: NotRequired[str]  # the stop string that ended the answer


class ErrorEvent(TypedDict):
    type: Literal["error"]
    status: int
    message: str
    error_type: str
    param: NotRequired[str | None]
    code: NotRequired[str | None]
    details: NotRequired[dict[str, int]]


Event = ChunkEvent | EndEvent | ErrorEvent


def ndjson(event: Event) -> bytes:
    """One event as a line of the worker's stream."""
    return json.dumps(event).encode() + b"\n"


# One encoder for every event: json.dumps with any option builds a new encoder per call.
_compact = json.JSONEncoder(separators=(",", ":")).encode


def sse_event(payload: dict[str, Any]) -> bytes:
    """One server-sent event, byte for byte the same whether the daemon or the worker
    writes it to the client."""
    return b"data: " + _compact(payload).encode() + b"\n\n"


class HandOver(TypedDict):
    """Asked with a streamed answer of one choice (api/hand_over.py): after the first chunk
    the worker waits for the daemon's word. HAND_OVER with the client's socket attached (the
    worker then writes the chunks to the client itself, as HTTP/1.1 chunks in the door's
    `shape`: OpenAI's stamped with `model`, or llama-server's pieces), or KEEP_RELAYING."""

    model: str
    shape: Literal["openai", "llama"]
    post_sampling_probs: bool  # llama-server's pieces: probabilities, not log-probabilities


HAND_OVER = b"H"
KEEP_RELAYING = b"R"


class GenerateRequest(TypedDict):
    id: str
    kind: GenerationKind
    params: dict[str, Any]
    hand_over: NotRequired[HandOver]


class CancelReply(TypedDict):
    cancelled: bool
    end: EndEvent | None


class EmbedRequest(TypedDict):
    input: list[str] | list[list[int]]


class EmbedReply(TypedDict):
    data: list[list[float]]
    prompt_tokens: int


class WorkerInfo(TypedDict, total=False):
    model_id: str
    model_path: str
    n_ctx: int
    n_ctx_train: int
    fim: bool
    chat_template: str
    gpu_offload: bool
    threads: int
    n_slots: int
    pid: int
