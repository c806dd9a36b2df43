"""What the slot engine keeps per request and per slot, and the request a caller submits."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as L

from assistantd.worker.protocol import Sampling


class QueueFull(Exception):
    """The waiting queue already holds max_queue requests."""


class PromptTooLong(ValueError):
    """The prompt does not fit a slot's context."""


class SlotEngineError(RuntimeError):
    """Runtime failure of a request (decode error, KV cache full, engine closed)."""


@dataclass
class SlotRequest:
    prompt: list[int]
    sampling: Sampling = field(default_factory=Sampling)
    max_tokens: int | None = None
    stop: list[str] = field(default_factory=list)
    priority: int = 1
    n: int = 1
    t_max_predict_ms: float | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)
    logprobs: int | None = None  # None: off; k: each token's logprob and its k alternatives


IDLE, PREFILL, GEN, WAITCOPY = 0, 1, 2, 3
DONE = object()


class Job:
    __slots__ = (
        "req",
        "q",
        "seq",
        "chains",
        "slots",
        "n_open",
        "done",
        "cached_n",
        "prompt_n",
        "t0",
    )

    def __init__(self, req, chains, seq):
        self.req, self.chains, self.seq = req, chains, seq
        self.q = queue.SimpleQueue()
        self.slots, self.n_open, self.done = [], 0, False
        self.cached_n = self.prompt_n = 0
        self.t0 = 0.0


class Slot:
    __slots__ = (
        "id",
        "cache",
        "last_used",
        "job",
        "idx",
        "chain",
        "state",
        "pf_pos",
        "pf_take",
        "last_tok",
        "i_batch",
        "n_gen",
        "stream",
        "t1",
        "in_batch",
    )

    def __init__(self, i):
        self.id, self.cache, self.last_used = i, [], 0
        self.job = self.chain = self.stream = None
        self.state, self.idx, self.pf_pos, self.pf_take = IDLE, 0, 0, 0
        self.last_tok, self.i_batch, self.n_gen, self.t1, self.in_batch = 0, -1, 0, 0.0, False


def common_prefix(a: list, b: list) -> int:
    """Length of the common prefix (binary search on C-level slice compares)."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def end_event(
    i: int,
    reason: str,
    stype: str,
    job: Job,
    n_gen: int,
    prompt_ms: float,
    pred_ms: float,
    text: str,
) -> dict[str, Any]:
    """The end of one alternative, with its counts and times."""
    return {
        "type": "end",
        "index": i,
        "finish_reason": reason,
        "stop_type": stype,
        "prompt_n": job.prompt_n,
        "cached_n": job.cached_n,
        "predicted_n": n_gen,
        "prompt_ms": prompt_ms,
        "predicted_ms": pred_ms,
        "text": text,
    }


def new_context(model: Any, n_slots: int, n_ctx_per_slot: int, n_batch: int, threads: int) -> Any:
    """A context for `n_slots` sequences. `Llama(...)` sets n_seq_max and kv_unified only for
    embeddings, so it is made here from llama.cpp's defaults (which carry every new field).
    Each slot gets its own n_ctx of a unified KV cache, so slots never starve each other."""
    cp = L.llama_context_default_params()
    cp.n_ctx = n_slots * n_ctx_per_slot
    cp.n_batch = n_batch
    cp.n_ubatch = min(n_batch, 512)
    cp.n_seq_max = n_slots
    cp.kv_unified = True
    cp.n_threads = cp.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        raise RuntimeError("llama_init_from_model failed (out of memory for the KV cache?)")
    return ctx
