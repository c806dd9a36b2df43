"""Prompts pushed out of the slots, kept in RAM so they come back (llama-server's --cache-ram).

An editor's autocomplete prompt is long (the file around the cursor) and grows as the user
types; a few concurrent chats can push it out of every slot, and evaluating it again costs
seconds on a CPU (1,200 tokens of SmolLM2 on 2 cores: 2.5 s, against 0.3 s with it cached).
Before a slot's cached tokens are overwritten they are copied out (its KV cells, through
llama_state_seq_get_data), and a request whose prompt shares a longer prefix with a kept one
than with any slot gets it copied back into the slot it takes.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import llama_cpp as L

from assistantd.worker.slot_state import common_prefix

MIN_TOKENS = 256  # fewer are cheaper to evaluate again than to keep and copy back


@dataclass
class Kept:
    tokens: list[int]
    state: Any  # ctypes array of the sequence's state


class PromptCache:
    def __init__(self, ctx: Any, budget: int) -> None:
        self._ctx = ctx
        self._budget = budget  # bytes of KV kept in RAM (what the plan gives), oldest dropped
        self._kept: list[Kept] = []  # oldest first

    def reuse(self, prompt: list[int], seq: int, n_keep: int, held: list[int]) -> int:
        """How many of `prompt`'s tokens slot `seq` holds once a kept prompt sharing more
        came back into it; what it held is kept first if the new prompt cuts much of it."""
        back = self.take(prompt, seq, n_keep, held)
        if back is not None:
            return back
        if len(held) - n_keep >= MIN_TOKENS:
            self.save(seq, held)
        return n_keep

    def save(self, seq: int, tokens: list[int]) -> None:
        """Copy a slot's cached tokens out before they are overwritten (if worth keeping)."""
        if len(tokens) < MIN_TOKENS or self._budget <= 0:
            return
        self._kept = [k for k in self._kept if common_prefix(k.tokens, tokens) < len(k.tokens)]
        size = L.llama_state_seq_get_size(self._ctx, seq)
        if not 0 < size <= self._budget:
            return
        state = (ctypes.c_uint8 * size)()
        if L.llama_state_seq_get_data(self._ctx, state, size, seq) != size:
            return
        self._kept.append(Kept(list(tokens), state))
        while sum(len(k.state) for k in self._kept) > self._budget:
            self._kept.pop(0)

    def take(self, prompt: list[int], seq: int, better_than: int, held: list[int]) -> int | None:
        """If a kept prompt shares more than `better_than` + MIN_TOKENS tokens with `prompt`,
        put it into `seq` (saving what `held` there first) and return how many it shares."""
        best, have = None, better_than + MIN_TOKENS
        for k in self._kept:
            n = common_prefix(k.tokens, prompt)
            if n > have:
                best, have = k, n
        if best is None:
            return None
        self.save(seq, held)
        self._kept = [k for k in self._kept if k is not best]
        mem = L.llama_get_memory(self._ctx)
        L.llama_memory_seq_rm(mem, seq, -1, -1)
        if L.llama_state_seq_set_data(self._ctx, best.state, len(best.state), seq) == 0:
            L.llama_memory_seq_rm(mem, seq, -1, -1)
            held[:] = []
            return 0
        held[:] = best.tokens
        return have
