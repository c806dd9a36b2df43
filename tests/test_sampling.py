"""The greedy fast path (sampling.picker) reads the argmax of the logits instead of running
llama.cpp's greedy sampler: on the real model it must pick the same token at every step, ties
included, and any request whose chain changes the logits must still go through the chain."""

from __future__ import annotations

from pathlib import Path

import llama_cpp as L
import pytest
from llama_cpp import Llama

from assistantd.worker.protocol import Sampling
from assistantd.worker.sampling import argmax_token, build_chain, picker


@pytest.fixture(scope="module")
def smol(models: dict[str, Path]):
    llm = Llama(str(models["smollm2"]), n_ctx=256, n_threads=2, verbose=False)
    vocab = L.llama_model_get_vocab(llm._model.model)
    yield llm, llm._ctx.ctx, vocab, L.llama_vocab_n_tokens(vocab)
    llm.close()


def test_the_argmax_is_the_greedy_samplers_token_at_every_step(smol) -> None:
    llm, ctx, vocab, n_vocab = smol
    greedy = build_chain(vocab, n_vocab, Sampling(temperature=0.0))
    llm.reset()
    llm.eval(llm.tokenize(b"def fibonacci(n):\n    "))
    try:
        for _ in range(24):
            token = argmax_token(ctx, n_vocab, -1)
            assert token == L.llama_sampler_sample(greedy, ctx, -1)
            llm.eval([token])
        logits = L.llama_get_logits_ith(ctx, -1)
        top = argmax_token(ctx, n_vocab, -1)
        logits[7] = logits[top]  # a tie: llama.cpp's greedy sampler keeps the first
        assert argmax_token(ctx, n_vocab, -1) == min(7, top)
        assert L.llama_sampler_sample(greedy, ctx, -1) == min(7, top)
    finally:
        L.llama_sampler_free(greedy)


@pytest.mark.parametrize(
    "sampling",
    [
        Sampling(temperature=0.0, logit_bias={1: -100.0}),
        Sampling(temperature=0.0, repeat_penalty=1.3),
        Sampling(temperature=0.0, grammar='root ::= "yes" | "no"'),
        Sampling(temperature=0.7, seed=1),
    ],
)
def test_a_chain_that_changes_the_logits_is_never_skipped(smol, sampling: Sampling) -> None:
    _, ctx, vocab, n_vocab = smol
    chain = build_chain(vocab, n_vocab, sampling)
    greedy = build_chain(vocab, n_vocab, Sampling(temperature=0.0))
    try:
        assert picker(ctx, n_vocab, chain).func is L.llama_sampler_sample  # type: ignore[attr-defined]
        assert picker(ctx, n_vocab, greedy).func is argmax_token  # type: ignore[attr-defined]
    finally:
        L.llama_sampler_free(chain)
        L.llama_sampler_free(greedy)
