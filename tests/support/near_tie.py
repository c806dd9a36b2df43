"""Two greedy answers of one model compared as llama.cpp can promise them: its batched and
one-token kernels can differ in the last bits, so answers computed in different batches (among
other slots, or with drafted tokens) may part where two tokens are nearly tied. A bug (a wrong
token kept, a KV entry not dropped, another slot's state leaking in) picks tokens the model did
not favour; a near-tie does not."""

from __future__ import annotations

NEAR_TIE = 0.1  # log-probability difference that counts as a tie between two tokens

Entry = tuple[str, dict[str, float]]  # a token, and the model's top tokens with logprobs


def assert_same_or_tied(first: list[Entry], second: list[Entry]) -> None:
    """Equal answers, or ones that part at a token where `first`'s top two were tied."""
    for (a, top), (b, _) in zip(first, second, strict=False):
        if a != b:
            assert b in top, f"chose {b!r}, not among the model's top tokens {top}"
            assert abs(top[a] - top[b]) < NEAR_TIE, f"{a!r} vs {b!r} is no near-tie: {top}"
            return
    assert len(first) == len(second)


def entries(logprobs_content: list[dict]) -> list[Entry]:
    """A chat answer's OpenAI `logprobs.content` as entries."""
    return [(e["token"], {t["token"]: t["logprob"] for t in e["top_logprobs"]})
            for e in logprobs_content]  # fmt: skip
