"""Continuous-batching slot engine over llama-cpp-python's low-level API.

One background thread owns the llama_context and one llama_batch (mirrors llama.cpp
tools/server ``update_slots``). Each step puts one token for every generating slot plus chunks
of pending prompts (priority 0 first) into the batch, calls llama_decode once, then samples.

``SlotEngine.submit(req)`` returns an iterator of token and end events (slot_state.py has their
shape). Failures: ``submit`` raises ValueError (bad request, e.g. prompt too long) or QueueFull;
the iterator raises SlotEngineError (llama_decode error, KV full, close()). Abandoning it
cancels. ``SlotEngine.call(fn)`` runs other llama.cpp work on the engine thread.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import llama_cpp as L
from llama_cpp import Llama

from assistantd.worker.batch_cost import BatchCosts
from assistantd.worker.detok import Pieces, TextStream
from assistantd.worker.draft_model import DraftModel, start_drafter
from assistantd.worker.engine_calls import EngineCalls
from assistantd.worker.hold import HOLD_POLL_S, HoldFlag
from assistantd.worker.logprobs import LogProbs
from assistantd.worker.prompt_cache import PromptCache
from assistantd.worker.sampling import Sampling, build_chain, picker
from assistantd.worker.slot_state import (
    DONE,
    GEN,
    IDLE,
    PREFILL,
    WAITCOPY,
    Job,
    QueueFull,
    Slot,
    SlotEngineError,
    SlotRequest,
    check_request,
    common_prefix,
    drop_cancelled,
    end_event,
    fail_job,
    job_events,
    new_context,
    undo_batch,
)
from assistantd.worker.speculation import Rates

__all__ = ["Sampling", "SlotRequest", "SlotEngine", "QueueFull", "SlotEngineError"]


class SlotEngine:
    """N sequences of one loaded model, decoded together by one thread."""

    def __init__(
        self,
        llm: Llama,
        *,
        n_slots: int,
        n_ctx_per_slot: int,
        n_batch: int = 512,
        threads: int,
        max_queue: int = 64,
        draft: DraftModel | None = None,
        prompt_cache_bytes: int,  # evicted prompts kept in RAM (prompt_cache.py)
    ):
        self._llm = llm  # keeps the model (shared, never decoded with) alive
        self._model = m = llm._model.model
        # A draft's rejected tail must leave the KV cache: recurrent state cannot drop it.
        self.can_draft = not (L.llama_model_is_recurrent(m) or L.llama_model_is_hybrid(m))
        self.n_slots, self.n_ctx_slot, self.n_batch = n_slots, n_ctx_per_slot, n_batch
        self.max_queue = max_queue
        self._ctx = new_context(self._model, n_slots, n_ctx_per_slot, n_batch, threads)
        self._mem = L.llama_get_memory(self._ctx)
        self._kept = PromptCache(self._ctx, prompt_cache_bytes) if self.can_draft else None
        self._vocab = L.llama_model_get_vocab(self._model)
        self.n_vocab = L.llama_vocab_n_tokens(self._vocab)
        self._n_swa = L.llama_model_n_swa(self._model)
        self._batch = L.llama_batch_init(n_batch, 0, n_slots)
        b = self._batch
        for i in range(n_batch):
            b.n_seq_id[i] = 1
        self._seq_ptrs = [b.seq_id[i] for i in range(n_batch)]  # ctypes builds one per access
        self._pieces = Pieces(self._vocab)
        self._logprobs = LogProbs(self._ctx, self._vocab, self._pieces)
        self._slots = [Slot(i) for i in range(n_slots)]
        self.draft = draft  # a smaller model of the same family that guesses (draft_model.py)
        self.costs = BatchCosts()  # llama_decode timed per batch length: what a draft costs
        self._rates: dict[str, Rates] = {}  # per request kind: how often drafts are kept
        self._heap: list = []
        self._seq = itertools.count()
        self._use = itertools.count(1)
        self._cv = threading.Condition()
        self._closing = False
        self._n_busy = 0
        self._calls = EngineCalls()  # other llama.cpp work, run between steps
        self.hold: HoldFlag | None = None  # set by the worker: another worker needs the cores
        self._thread = threading.Thread(target=self._run, name="slot-engine", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ public API
    def submit(self, req: SlotRequest, sink: Any = None) -> Iterator[dict]:
        """The job's events; given a `sink` (event_sink.py), its `put` gets each instead."""
        check_request(req, self.n_ctx_slot, self.n_slots, self.n_vocab)
        with self._cv:
            if self._closing:
                raise SlotEngineError("engine is closed")
            if len(self._heap) >= self.max_queue:
                raise QueueFull(f"{len(self._heap)} requests already waiting")
        chains = []
        try:
            for i in range(req.n):
                chains.append(build_chain(self._vocab, self.n_vocab, req.sampling, i))
        except BaseException:
            for c in chains:
                L.llama_sampler_free(c)
            raise
        job = Job(req, chains, next(self._seq), sink)
        with self._cv:
            if self._closing or len(self._heap) >= self.max_queue:
                for c in chains:
                    L.llama_sampler_free(c)
                if self._closing:
                    raise SlotEngineError("engine is closed")
                raise QueueFull(f"{len(self._heap)} requests already waiting")
            heapq.heappush(self._heap, (req.priority, job.seq, job))
            self._cv.notify()
        return iter(()) if sink is not None else job_events(job)

    def call(self, fn: Callable[[], Any]) -> Any:
        """`fn()`, run on the engine thread between two steps (engine_calls.py says why)."""
        with self._cv:
            if self._closing:
                raise SlotEngineError("engine is closed")
            done = self._calls.add(fn)
            self._cv.notify()
        return done.result()

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify_all()
        self._thread.join()

    # ------------------------------------------------------------------ engine thread
    def _run(self):
        err: BaseException = SlotEngineError("engine closed")
        try:
            while True:
                with self._cv:
                    while not (self._closing or self._heap or self._n_busy or self._calls):
                        self._cv.wait()
                    if self._closing:
                        break
                    if self._heap:
                        self._admit()
                    if self.hold is not None and self.hold.seconds_left() > 0:
                        self._cv.wait(HOLD_POLL_S)  # polled: the daemon writes the flag
                        continue
                    calls = self._calls.take()
                    if not self._n_busy and not calls:
                        self._cv.wait(0.05)
                        continue
                self._calls.run(calls)
                if self._n_busy:
                    self._step()
        except BaseException as e:  # pragma: no cover - unexpected bug: fail everybody
            err = SlotEngineError(f"engine thread crashed: {e!r}")
            raise
        finally:
            with self._cv:
                self._closing = True
                pending, self._heap = [j for _, _, j in self._heap], []
                self._calls.fail(err)
            for job in pending:
                fail_job(job, err, self._release)
            for s in self._slots:
                if s.job is not None:
                    fail_job(s.job, err, self._release)
            L.llama_batch_free(self._batch)
            L.llama_free(self._ctx)
            if self.draft is not None:
                self.draft.close()

    def _admit(self):  # called with self._cv held
        heap = self._heap
        if any(j.req.cancelled.is_set() for _, _, j in heap):
            drop_cancelled(heap)
        while heap:
            job = heap[0][2]
            idle = [s for s in self._slots if s.job is None]
            if len(idle) < job.req.n:
                return
            heapq.heappop(heap)
            self._start(job, idle)

    def _start(self, job: Job, idle: list):
        prompt, mem = job.req.prompt, self._mem
        scored = [(common_prefix(s.cache, prompt), -s.last_used, s) for s in idle]
        n_keep, _, first = max(scored, key=lambda t: (t[0], t[1]))
        if self._kept is not None:
            n_keep = self._kept.reuse(prompt, first.id, n_keep, first.cache)
        n_keep = min(n_keep, len(prompt) - 1)  # always re-evaluate the last prompt token
        if n_keep > 0 and self._n_swa > 0:
            # SWA: keep the cache only if every position the next token attends to is still there
            pmin = L.llama_memory_seq_pos_min(mem, first.id)
            if pmin < 0 or (pmin > 0 and pmin >= n_keep - self._n_swa):
                n_keep = 0
        if not L.llama_memory_seq_rm(mem, first.id, n_keep, -1):
            L.llama_memory_seq_rm(mem, first.id, -1, -1)
            n_keep = 0
        del first.cache[n_keep:]
        others = sorted((s for s in idle if s is not first), key=lambda s: s.last_used)
        others = others[: job.req.n - 1]
        for s in others:
            L.llama_memory_seq_rm(mem, s.id, -1, -1)
            s.cache = []
        job.cached_n, job.prompt_n = n_keep, len(prompt) - n_keep
        job.t0 = time.perf_counter()
        job.slots = [first] + others
        job.n_open = len(job.slots)
        mode = job.req.speculate if job.req.n == 1 and self.can_draft else "off"
        rate = self._rates.get(job.req.kind)
        for i, s in enumerate(job.slots):
            s.job, s.idx, s.chain, s.n_gen, s.i_batch = job, i, job.chains[i], 0, -1
            s.pick = picker(self._ctx, self.n_vocab, s.chain)
            s.spec = start_drafter(mode, prompt, rate, s.id, self.draft)
            s.drafts = []
            s.stream = TextStream(job.req.stop)
            s.state = WAITCOPY
            self._n_busy += 1
        first.state, first.pf_pos = PREFILL, n_keep

    def _step(self):
        b = self._batch
        tok, pos, logits, seqp = b.token, b.pos, b.logits, self._seq_ptrs
        n = 0
        used = []
        # Autocomplete's prompt waiting: no drafts this step, its prefill gets the batch.
        urgent = any(s.state == PREFILL and s.job.req.priority == 0 for s in self._slots)
        others = sum(s.state == GEN for s in self._slots) - 1  # beside each generating slot
        for s in self._slots:
            if s.state == GEN:
                if s.job.req.cancelled.is_set():
                    self._finish(s, "cancelled", "none", False)
                    continue
                p = len(s.cache)
                room = min(self.n_batch - n - self.n_slots, self.n_ctx_slot - p - 2)
                drafts = []
                if s.spec is not None and not urgent:
                    drafts = s.spec.draft(room, self.costs, others + n - len(used))
                for j, t in enumerate([s.last_tok, *drafts]):
                    tok[n + j], pos[n + j], logits[n + j] = t, p + j, 1
                    seqp[n + j][0] = s.id
                s.i_batch, s.drafts = n, drafts
                n += 1 + len(drafts)
                used.append(s)
        pre = [s for s in self._slots if s.state == PREFILL]
        if len(pre) > 1:
            pre.sort(key=lambda s: (s.job.req.priority, s.job.seq))
        for s in pre:
            job = s.job
            if job.req.cancelled.is_set():
                for o in list(job.slots):
                    if o.job is job:
                        self._finish(o, "cancelled", "none", False)
                continue
            room = self.n_batch - n
            if room <= 0:
                s.pf_take, s.i_batch = 0, -1
                continue
            prompt, p0 = job.req.prompt, s.pf_pos
            take = min(room, len(prompt) - p0)
            sid = s.id
            for j in range(take):
                tok[n + j] = prompt[p0 + j]
                pos[n + j] = p0 + j
                seqp[n + j][0] = sid
                logits[n + j] = 0
            n += take
            s.pf_take = take
            s.pf_pos = p0 + take
            if s.pf_pos == len(prompt):
                logits[n - 1] = 1
                s.i_batch = n - 1
            else:
                s.i_batch = -1
            used.append(s)
        if not n:
            return
        b.n_tokens = n
        t0 = time.perf_counter()
        ret = L.llama_decode(self._ctx, b)
        if ret != 0:
            self._decode_failed(ret, used)
            return
        now = time.perf_counter()
        self.costs.record(n, now - t0, bool(pre))
        for s in used:
            if s.state == GEN:
                s.cache.append(s.last_tok)
                self._verify(s, now)
            elif s.state == PREFILL:
                job = s.job
                s.cache.extend(job.req.prompt[s.pf_pos - s.pf_take : s.pf_pos])
                if s.i_batch < 0:
                    continue
                for o in job.slots:  # n > 1: share the prefill
                    if o is not s:
                        L.llama_memory_seq_cp(self._mem, s.id, o.id, -1, -1)
                        o.cache = list(s.cache)
                for o in list(job.slots):
                    o.t1 = now
                    o.state = GEN
                    if job.req.max_tokens is not None and job.req.max_tokens <= 0:
                        self._finish(o, "length", "limit", False)
                    else:
                        self._on_token(o, o.pick(s.i_batch), now, s.i_batch)
                        if o.spec is not None and o.state == GEN:
                            o.spec.push(o.last_tok)

    def _verify(self, s: Slot, now: float):
        """Sample the slot's position, then each drafted one while the sampler chose the
        drafted token; the rest of the draft leaves the KV cache."""
        drafts, spec, at = s.drafts, s.spec, s.i_batch
        s.drafts = []
        kept = 0
        while True:
            t = s.pick(at + kept)
            self._on_token(s, t, now, at + kept)
            if s.state != GEN or spec is None:
                break
            spec.push(t)
            if kept == len(drafts) or t != drafts[kept]:
                break
            s.cache.append(t)  # the drafted token, already in the KV cache, is the answer's
            kept += 1
        if drafts and spec is not None:
            spec.record(len(drafts), kept)
            if s.state == GEN:
                L.llama_memory_seq_rm(self._mem, s.id, len(s.cache), -1)

    def _on_token(self, s: Slot, t: int, now: float, at: int):
        job = s.job
        req = job.req
        if L.llama_vocab_is_eog(self._vocab, t):
            self._finish(s, "stop", "eos", True)
            return
        s.n_gen += 1
        piece = self._pieces.of(t)
        st = s.stream
        text = st.push(piece)
        ev = {"type": "token", "index": s.idx, "text": text, "token": t}
        if req.logprobs is not None:  # only when asked: reads the whole vocabulary's logits
            ev["logprob"] = self._logprobs.entry(at, t, req.logprobs)
        if st.stopped:
            job.q.put(ev)
            self._finish(s, "stop", "word", False)
            return
        end = None
        if req.cancelled.is_set():
            end = ("cancelled", "none")
        elif (
            req.max_tokens is not None
            and s.n_gen >= req.max_tokens
            or len(s.cache) + 1 >= self.n_ctx_slot
            or (
                req.t_max_predict_ms
                and b"\n" in piece
                and (now - s.t1) * 1000.0 > req.t_max_predict_ms
            )
        ):
            end = ("length", "limit")
        if end is not None:
            ev["text"] = text + st.flush()
            job.q.put(ev)
            self._finish(s, end[0], end[1], False)
            return
        job.q.put(ev)
        s.last_tok = t

    def _finish(self, s: Slot, reason: str, stype: str, flush: bool):
        job = s.job
        if flush:
            rest = s.stream.flush()
            if rest:
                job.q.put({"type": "token", "index": s.idx, "text": rest, "token": None})
        now = time.perf_counter()
        if s.t1:
            prompt_ms, pred_ms = (s.t1 - job.t0) * 1000.0, (now - s.t1) * 1000.0
        else:
            prompt_ms, pred_ms = (now - job.t0) * 1000.0, 0.0
        text, word = s.stream.text, s.stream.stopping_word
        if s.spec is not None and s.spec.priced:
            self._rates[job.req.kind] = s.spec.rates
        end = end_event(s.idx, reason, stype, job, s.n_gen, prompt_ms, pred_ms, text, s.spec, word)
        job.q.put(end)
        self._release(s)
        job.n_open -= 1
        if job.n_open == 0:
            job.done = True
            job.q.put(DONE)

    def _release(self, s: Slot):
        if s.chain:
            L.llama_sampler_free(s.chain)
        s.chain = s.job = s.stream = s.pick = None
        s.state, s.i_batch, s.t1 = IDLE, -1, 0.0
        s.last_used = next(self._use)
        self._n_busy -= 1

    def _decode_failed(self, ret: int, used: list):
        for job, err in undo_batch(self._mem, used, ret):
            fail_job(job, err, self._release)
