"""Log-probabilities of a sampled token and its most likely alternatives, read from the logits
llama.cpp left for that batch position (before sampling, as OpenAI and llama-server report
them). Computed only for requests that ask (`logprobs`, `top_logprobs`, `n_probs`)."""

from __future__ import annotations

from typing import Any

import llama_cpp as L
import numpy as np

from assistantd.worker.detok import Pieces


class LogProbs:
    def __init__(self, ctx: Any, vocab: Any, pieces: Pieces) -> None:
        self._ctx = ctx
        self._n_vocab = int(L.llama_vocab_n_tokens(vocab))
        self._pieces = pieces

    def _token(self, token: int, logprob: float) -> dict[str, Any]:
        raw = self._pieces.of(token)
        return {
            "id": token,
            "token": raw.decode("utf-8", "replace"),
            "bytes": list(raw),
            "logprob": logprob,
        }

    def entry(self, batch_index: int, token: int, top: int) -> dict[str, Any]:
        """The chosen token's entry, with `top` alternatives (most likely first)."""
        pointer = L.llama_get_logits_ith(self._ctx, batch_index)
        logits = np.ctypeslib.as_array(pointer, shape=(self._n_vocab,)).astype(np.float64)
        peak = logits.max()
        normal = peak + np.log(np.exp(logits - peak).sum())
        chosen = self._token(token, float(logits[token] - normal))
        alternatives = []
        if top > 0:
            ids = np.argpartition(-logits, top)[:top]
            ids = ids[np.argsort(-logits[ids])]
            alternatives = [self._token(int(i), float(logits[i] - normal)) for i in ids]
        return {**chosen, "top_logprobs": alternatives}
