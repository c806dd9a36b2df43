"""What the slot engine keeps per request and per slot, and the request a caller submits.

A request's events (plain dicts, from `job_events`):

* ``{"type": "token", "index": i, "text": str, "token": int | None}``: alternative i's valid
  UTF-8 text released by this token ("" while a multibyte char or stop prefix is held back;
  token None: a final flush of held-back text, just before an "eos" end).
* ``{"type": "end", "index": i, "finish_reason": "stop"|"length"|"cancelled",
  "stop_type": "eos"|"word"|"limit"|"none", "prompt_n", "cached_n", "predicted_n",
  "prompt_ms", "predicted_ms", "text", "stopping_word", "draft_n", "draft_n_accepted"}`` -- one
  per alternative; the iterator ends after all n.
"""

from __future__ import annotations

import heapq
import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as L

from assistantd.worker.protocol import Sampling
from assistantd.worker.speculation import NgramDrafter


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
    speculate: str = "off"  # n-gram drafts from the slot's own tokens: off | ngram | auto
    kind: str = ""  # chat, completion, infill: drafts are priced by how often each kind's are kept


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

    def __init__(self, req, chains, seq, sink=None):
        self.req, self.chains, self.seq = req, chains, seq
        self.q = sink or queue.SimpleQueue()  # a sink: events shaped on the engine thread
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
        "pick",
        "state",
        "pf_pos",
        "pf_take",
        "last_tok",
        "i_batch",
        "n_gen",
        "stream",
        "t1",
        "in_batch",
        "spec",
        "drafts",
    )

    def __init__(self, i):
        self.id, self.cache, self.last_used = i, [], 0
        self.job = self.chain = self.stream = self.pick = None
        self.state, self.idx, self.pf_pos, self.pf_take = IDLE, 0, 0, 0
        self.last_tok, self.i_batch, self.n_gen, self.t1, self.in_batch = 0, -1, 0, 0.0, False
        self.spec: NgramDrafter | None = None
        self.drafts: list[int] = []  # in this step's batch after last_tok, to be verified


def check_request(req: SlotRequest, n_ctx_slot: int, n_slots: int, n_vocab: int) -> None:
    """Refuse what no slot could answer, before it waits in the queue."""
    p = req.prompt
    if not p:
        raise ValueError("empty prompt")
    if len(p) >= n_ctx_slot:
        raise PromptTooLong(
            f"prompt has {len(p)} tokens but the slot context is {n_ctx_slot} "
            f"tokens (prompt must be shorter than n_ctx_per_slot)"
        )
    if not 1 <= req.n <= n_slots:
        raise ValueError(f"n={req.n} must be between 1 and n_slots={n_slots}")
    if min(p) < 0 or max(p) >= n_vocab:
        raise ValueError("prompt contains a token id outside the vocabulary")


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


def job_events(job: Job) -> Iterator[dict]:
    """A job's events as its queue delivers them; abandoning the iterator cancels the job."""
    try:
        while True:
            ev = job.q.get()
            if ev is DONE:
                return
            if isinstance(ev, BaseException):
                raise ev
            yield ev
    finally:
        if not job.done:
            job.req.cancelled.set()


def fail_job(job: Job, err: BaseException, release: Callable[[Slot], None]) -> None:
    """End a job with `err` (raised from its events iterator), giving back its slots."""
    if job.done:
        return
    if not job.slots:  # never admitted
        for c in job.chains:
            L.llama_sampler_free(c)
    for s in job.slots:
        if s.job is job:
            release(s)
    job.done = True
    job.q.put(err)


def drop_cancelled(heap: list) -> None:
    """Answer and remove the queued jobs whose clients left before a slot was free."""
    keep = []
    for item in heap:
        job = item[2]
        if job.req.cancelled.is_set():
            for i, c in enumerate(job.chains):
                L.llama_sampler_free(c)
                job.q.put(end_event(i, "cancelled", "none", job, 0, 0.0, 0.0, ""))
            job.done = True
            job.q.put(DONE)
        else:
            keep.append(item)
    heap[:] = keep
    heapq.heapify(heap)


def end_event(
    i: int,
    reason: str,
    stype: str,
    job: Job,
    n_gen: int,
    prompt_ms: float,
    pred_ms: float,
    text: str,
    spec: NgramDrafter | None = None,
    word: str = "",
) -> dict[str, Any]:
    """The end of one alternative, with its counts and times (drafted and accepted tokens
    as llama-server names them)."""
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
        "stopping_word": word,
        "draft_n": spec.drafted if spec else 0,
        "draft_n_accepted": spec.accepted if spec else 0,
    }


def new_context(model: Any, n_slots: int, n_ctx_per_slot: int, n_batch: int, threads: int) -> Any:
    """A context for `n_slots` sequences. `Llama(...)` sets n_seq_max and kv_unified only for
    embeddings, so it is made here from llama.cpp's defaults (which carry every new field).
    Each slot gets its own stream of n_ctx cells (llama-server's layout with -np), so slots never
    starve each other and a slot's attention spans only its own cells: in one unified cache the
    cells other slots keep cached stretch every slot's attention (5% slower decode with four
    cached ~300-token prompts, SmolLM2 on 2 cores)."""
    cp = L.llama_context_default_params()
    cp.n_ctx = n_slots * n_ctx_per_slot
    cp.n_batch = n_batch
    cp.n_ubatch = min(n_batch, 512)
    cp.n_seq_max = n_slots
    cp.kv_unified = False
    cp.n_threads = cp.n_threads_batch = threads
    ctx = L.llama_init_from_model(model, cp)
    if not ctx:
        raise RuntimeError("llama_init_from_model failed (out of memory for the KV cache?)")
    return ctx


def undo_batch(mem: Any, used: list, ret: int) -> list[tuple[Job, SlotEngineError]]:
    """After a failed llama_decode: drop whatever part of the batch reached the KV cache, and
    say which jobs fail (on a full cache with several jobs, only the least urgent one)."""
    for s in used:
        L.llama_memory_seq_rm(mem, s.id, len(s.cache), -1)
        s.drafts = []
        if s.state == PREFILL:
            s.pf_pos -= s.pf_take
    jobs = {s.job.seq: s.job for s in used}
    if ret == 1 and len(jobs) > 1:
        victim = max(jobs.values(), key=lambda j: (j.req.priority, j.seq))
        return [(victim, SlotEngineError("KV cache full (llama_decode returned 1)"))]
    msg = "KV cache full" if ret == 1 else "llama_decode failed"
    return [(job, SlotEngineError(f"{msg} (llama_decode returned {ret})")) for job in jobs.values()]
