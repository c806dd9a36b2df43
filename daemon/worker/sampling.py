"""Sampling parameters and llama.cpp sampler-chain construction (stdlib + llama_cpp)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import llama_cpp as L
import numpy as np

from assistantd.worker.protocol import Sampling


def build_chain(vocab, n_vocab: int, s: Sampling, alt: int = 0):
    """Return a new llama_sampler chain (caller frees with llama_sampler_free).

    Order: grammar, logit bias, penalties, then greedy or top_k, top_p, min_p, temp, dist(seed).
    Raises ValueError for an invalid grammar or token id in logit_bias."""
    ch = L.llama_sampler_chain_init(L.llama_sampler_chain_default_params())
    try:
        if s.grammar:
            g = L.llama_sampler_init_grammar(vocab, s.grammar.encode("utf-8"), b"root")
            if not g:
                raise ValueError(
                    "grammar: llama.cpp could not parse this GBNF grammar; check that every "
                    "rule it uses is defined and the start rule is named 'root'"
                )
            L.llama_sampler_chain_add(ch, g)
        if s.logit_bias:
            items = list(
                s.logit_bias.items() if isinstance(s.logit_bias, Mapping) else s.logit_bias
            )
            arr = (L.llama_logit_bias * len(items))()
            for i, (tok, bias) in enumerate(items):
                if not 0 <= int(tok) < n_vocab:
                    raise ValueError(f"logit_bias token {tok} out of range")
                arr[i].token, arr[i].bias = int(tok), float(bias)  # type: ignore[assignment]
            L.llama_sampler_chain_add(ch, L.llama_sampler_init_logit_bias(n_vocab, len(items), arr))
        if s.repeat_penalty != 1.0 or s.presence_penalty != 0.0 or s.frequency_penalty != 0.0:
            L.llama_sampler_chain_add(
                ch,
                L.llama_sampler_init_penalties(
                    n_vocab,
                    s.penalty_last_n,
                    s.repeat_penalty,
                    s.frequency_penalty,
                    s.presence_penalty,
                ),
            )
        if s.temperature <= 0:
            L.llama_sampler_chain_add(ch, L.llama_sampler_init_greedy())
        else:
            if s.top_k > 0:
                L.llama_sampler_chain_add(ch, L.llama_sampler_init_top_k(s.top_k))
            if 0.0 < s.top_p < 1.0:
                L.llama_sampler_chain_add(ch, L.llama_sampler_init_top_p(s.top_p, 1))
            if s.min_p > 0.0:
                L.llama_sampler_chain_add(ch, L.llama_sampler_init_min_p(s.min_p, 1))
            L.llama_sampler_chain_add(ch, L.llama_sampler_init_temp(s.temperature))
            seed = L.LLAMA_DEFAULT_SEED if s.seed is None else (s.seed + alt) & 0xFFFFFFFF
            if seed == L.LLAMA_DEFAULT_SEED and s.seed is not None:
                seed = 0
            L.llama_sampler_chain_add(ch, L.llama_sampler_init_dist(seed))
    except BaseException:
        L.llama_sampler_free(ch)
        raise
    return ch


def argmax_token(ctx, n_vocab: int, i: int) -> int:
    """The most likely token at output `i`, first of ties as llama.cpp's greedy sampler picks.
    llama_sampler_sample first copies every logit into a candidate array: 51 µs a token for
    SmolLM2's 49k vocabulary on this machine, against 7 µs for this read."""
    logits = L.llama_get_logits_ith(ctx, i)
    if not logits:
        raise RuntimeError(f"llama.cpp has no logits for output {i}")
    return int(np.ctypeslib.as_array(logits, shape=(n_vocab,)).argmax())


def picker(ctx, n_vocab: int, chain) -> Callable[[int], int]:
    """The slot's token at output i: the chain's choice, or the argmax when the chain
    build_chain made holds the greedy sampler alone (nothing else changes the logits it
    reads). Read from the chain itself, so a sampler build_chain adds later is never skipped."""
    if (
        L.llama_sampler_chain_n(chain) == 1
        and L.llama_sampler_name(L.llama_sampler_chain_get(chain, 0)) == b"greedy"
    ):
        return functools.partial(argmax_token, ctx, n_vocab)
    return functools.partial(L.llama_sampler_sample, chain, ctx)
