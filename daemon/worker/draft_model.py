"""Draft-model speculation: a smaller model with the same vocabulary guesses what comes next.

The draft model decodes in a context of its own, one sequence per slot, holding the tokens that
slot holds. Before a slot's step it catches up on what the slot kept since (its prompt, the
tokens it accepted), forgets what was rejected, and decodes its guess greedily, token by token;
the target then verifies the guess in its own batch exactly as it verifies an n-gram guess
(speculation.py), so the answer stays the target's own.

Where an n-gram guess exists and pays, it is used first: it costs nothing to make. A model guess
costs a draft decode per guessed token, so `auto` prices it with that cost added
(batch_cost.BatchCosts), and probes now and then while it does not pay, to keep its acceptance
measured. On a GPU a 0.5B draft for a 7B target costs a few percent of a target step; on a CPU
a draft of similar size costs most of one, and `auto` leaves it unused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import llama_cpp as L
from llama_cpp import Llama

from assistantd.worker.sampling import argmax_token
from assistantd.worker.slot_state import common_prefix, new_context
from assistantd.worker.speculation import MAX_DRAFT, MIN_DRAFT, DraftPricing, NgramDrafter, Rates

PROBE_EVERY = 64  # steps without a model guess before one is tried anyway (auto)
SAMPLE_IDS = 997  # token ids compared between the two vocabularies, spread over the range
VOCAB_SLACK = 128  # vocabulary sizes may differ by this much (padding), as llama.cpp allows


class DraftModelError(ValueError):
    """The draft model cannot draft for this target."""


def check_vocab(target: Any, draft: Any) -> None:
    """The same pieces at sampled ids and the same end of generation, sizes within
    VOCAB_SLACK (llama.cpp's rule: Qwen2.5-Coder 0.5B-3B list 151,936 tokens, 7B and up
    152,064, the same tokenizer padded otherwise): guesses mean the same."""
    n_target, n_draft = L.llama_vocab_n_tokens(target), L.llama_vocab_n_tokens(draft)
    if abs(n_target - n_draft) > VOCAB_SLACK:
        raise DraftModelError(
            f"the draft model's vocabulary has {n_draft} tokens and the model's {n_target}: "
            f"a draft model must come from the same family (same tokenizer)"
        )
    n = min(n_target, n_draft)
    step = max(1, n // SAMPLE_IDS)
    buf_a, buf_b = (L.ctypes.create_string_buffer(256) for _ in range(2))
    for i in [*range(0, n, step), n - 1]:
        a = L.llama_token_to_piece(target, i, buf_a, 256, 0, True)
        b = L.llama_token_to_piece(draft, i, buf_b, 256, 0, True)
        same_end = L.llama_vocab_is_eog(target, i) == L.llama_vocab_is_eog(draft, i)
        if buf_a.raw[:a] != buf_b.raw[:b] or not same_end:
            raise DraftModelError(
                f"token {i} differs between the model and the draft model: a draft model must "
                f"share the model's tokenizer"
            )


class DraftModel:
    """The draft model's weights, its context and what each slot's sequence holds."""

    def __init__(
        self, llm: Llama, target_vocab: Any, *, n_slots: int, n_ctx_per_slot: int, threads: int
    ) -> None:
        self.llm = llm  # the draft's weights (the engine loads them as it loads the model's)
        model = llm._model.model
        self._vocab = L.llama_model_get_vocab(model)
        check_vocab(target_vocab, self._vocab)
        self._n_target = L.llama_vocab_n_tokens(target_vocab)  # a guess past it is cut
        self.n_batch = 512
        self._ctx = new_context(model, n_slots, n_ctx_per_slot, self.n_batch, threads)
        self._mem = L.llama_get_memory(self._ctx)
        self._batch = L.llama_batch_init(self.n_batch, 0, n_slots)
        for i in range(self.n_batch):
            self._batch.n_seq_id[i] = 1
        self._n_draft_vocab = L.llama_vocab_n_tokens(self._vocab)
        self._held: list[list[int]] = [[] for _ in range(n_slots)]
        self.token_seconds = 0.0  # one draft decode of one token, a moving average

    def close(self) -> None:
        L.llama_batch_free(self._batch)
        L.llama_free(self._ctx)

    def calibrate(self, slot: int) -> None:
        """Time a one-token decode before the first guess, so auto prices guesses from the
        start. Called on the engine's thread: llama.cpp decodes from a second thread would
        start a second OpenMP team, and the target decoded 35% slower beside it."""
        held = self._held[slot]
        L.llama_memory_seq_rm(self._mem, slot, -1, -1)
        held.clear()
        for at in range(3):
            self._decode(slot, [max(L.llama_vocab_bos(self._vocab), 0)], at)
        L.llama_memory_seq_rm(self._mem, slot, -1, -1)
        held.clear()

    def guess(self, slot: int, text: list[int], n: int) -> list[int]:
        """Up to n greedy tokens after `text` (the slot's tokens, its last sampled one too)."""
        held = self._held[slot]
        keep = min(common_prefix(held, text), len(text) - 1)
        if not L.llama_memory_seq_rm(self._mem, slot, keep, -1):
            L.llama_memory_seq_rm(self._mem, slot, -1, -1)
            keep = 0
        del held[keep:]
        for at in range(keep, len(text), self.n_batch):
            if not self._decode(slot, text[at : at + self.n_batch], at):
                return []
        out: list[int] = []
        while True:
            t = argmax_token(self._ctx, self._n_draft_vocab, -1)
            if t >= self._n_target:
                return out  # a padding id of a larger vocabulary: not the model's to verify
            out.append(t)
            if len(out) == n or L.llama_vocab_is_eog(self._vocab, t):
                return out
            if not self._decode(slot, [t], len(held)):
                return out

    def _decode(self, slot: int, tokens: list[int], pos: int) -> bool:
        b = self._batch
        for j, t in enumerate(tokens):
            b.token[j], b.pos[j], b.logits[j] = t, pos + j, 0
            b.seq_id[j][0] = slot
        b.logits[len(tokens) - 1] = 1
        b.n_tokens = len(tokens)
        start = time.perf_counter()
        if L.llama_decode(self._ctx, b) != 0:  # a full draft cache: no guess, never an error
            L.llama_memory_seq_rm(self._mem, slot, -1, -1)
            self._held[slot] = []
            return False
        if len(tokens) == 1:
            took = time.perf_counter() - start
            old = self.token_seconds
            self.token_seconds = took if not old else old + 0.2 * (took - old)
        self._held[slot].extend(tokens)
        return True


@dataclass
class ModelDrafter(NgramDrafter):
    """A slot's guesses: an n-gram's where one pays, else the draft model's."""

    model: DraftModel | None = None
    slot: int = 0
    model_rates: Rates = field(default_factory=Rates)
    _from_model: bool = False
    _idle: int = 0
    k: int = MIN_DRAFT  # draft mode's next length: doubles on full acceptance, shrinks on a miss

    def draft(self, room: int, pricing: DraftPricing, others: int) -> list[int]:
        self._from_model = False
        if self.priced:
            guess = super().draft(room, pricing, others)
            if guess:
                return guess
        longest = min(MAX_DRAFT, room)
        if self.model is None or longest < 1:
            return []
        if self.priced:
            if not self.model.token_seconds:
                self.model.calibrate(self.slot)
            cost = self.model.token_seconds
            if not pricing.best_draft(others, 1.0, longest, cost):
                return []  # here even guesses always kept would not pay: no probes either
            n = pricing.best_draft(others, self.model_rates.rate, longest, cost)
            self._idle = 0 if n else self._idle + 1
            if not n and self._idle < PROBE_EVERY:
                return []
            n = n or min(MIN_DRAFT, longest)  # a probe: acceptance stays measured
        else:
            n = min(self.k, longest)
        self._from_model = True
        return self.model.guess(self.slot, self.tokens, n)

    def record(self, drafted: int, accepted: int) -> None:
        super().record(drafted, accepted)
        if self._from_model and not self.priced:
            whole = accepted == drafted
            self.k = min(MAX_DRAFT, self.k * 2) if whole else max(MIN_DRAFT, accepted + 1)

    def _rates_of_last(self) -> Rates:
        return self.model_rates if self._from_model else self.rates


def start_drafter(
    mode: str, prompt: list[int], rate: Rates | None, slot: int, model: DraftModel | None
) -> NgramDrafter | None:
    """A request's drafter for `mode` (None: it does not draft), seeded with its kind's rate."""
    if mode == "off":
        return None
    if model is None or mode == "ngram":  # a role without the draft model: draft mode is auto
        return NgramDrafter.start("auto" if mode == "draft" else mode, prompt, rate)
    drafter = ModelDrafter(priced=mode == "auto", rates=rate.as_prior() if rate else Rates())
    drafter.model, drafter.slot = model, slot
    for t in prompt:
        drafter.push(t)
    return drafter
