"""Draft-model speculation through the real daemon, on a real draft pair: SmolLM2 requantized
to Q8_0 by llama.cpp's own quantizer is the model, the shipped Q4_1 file drafts for it (one
vocabulary, llama-server's `-md` setup).

Greedy answers with the draft model guessing equal the plain ones, or part from them only at
a near-tie (see test_speculation.py for why batched kernels allow that); rejected guesses leave
no trace (the next request on the slot reuses exactly its prompt's tokens and answers alike)."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

import httpx

from tests.support.daemons import launch
from tests.support.near_tie import assert_same_or_tied
from tests.test_speculation import CODE, EDIT, FREE, answer


def test_a_draft_model_guesses_and_the_answers_stay_the_models_own(
    start_daemon, models, quant_ladder
) -> None:
    target = quant_ladder["Q8_0"]
    plain = start_daemon(target, ASSISTANT_SPECULATIVE="off")
    drafting = start_daemon(
        target, ASSISTANT_SPECULATIVE="draft", ASSISTANT_DRAFT_MODEL=str(models["smollm2"])
    )
    for messages in (EDIT, FREE):
        assert_same_or_tied(answer(plain, messages), answer(drafting, messages))
    counts = drafting.status()["speculation"]
    assert counts["draft_tokens"] > 0
    assert counts["accepted_tokens"] >= 0.5 * counts["draft_tokens"]  # Q4_1 of the same weights
    assert counts["draft_model"] == models["smollm2"].name and counts["mode"] == "draft"
    # The same prompt twice: the second reuses every prompt token but the last, and the
    # guesses rejected during the first left nothing behind that would change the answer.
    body = {"prompt": CODE[:200], "n_predict": 48, "temperature": 0}
    first, second = (
        httpx.post(drafting.url + "/completion", json=body, timeout=120).json() for _ in range(2)
    )
    reference = httpx.post(plain.url + "/completion", json=body, timeout=120).json()
    assert second["timings"]["prompt_n"] == 1
    assert second["content"] == first["content"]
    assert second["timings"]["draft_n"] > 0
    assert (
        first["content"] == reference["content"]
        or first["content"][:40] == reference["content"][:40]
    )  # a near-tie further on, as above


def test_a_draft_model_of_another_family_is_refused_with_what_to_do(models, tmp_path: Path) -> None:
    daemon = launch(
        models["smollm2"],
        tmp_path / "daemon.log",
        {"ASSISTANT_SPECULATIVE": "draft", "ASSISTANT_DRAFT_MODEL": str(models["gemma270m"])},
    )
    try:
        deadline = time.monotonic() + 120
        said = ""
        while time.monotonic() < deadline and "same family" not in said:
            if daemon.proc.poll() is not None:
                said = daemon.log()
                break
            with contextlib.suppress(httpx.TransportError):
                said = httpx.get(daemon.url + "/status", timeout=2).text
            time.sleep(0.5)
        said = said if "same family" in said else daemon.log()
        assert "same family" in said or "tokenizer" in said, said
    finally:
        daemon.stop()


def test_speculative_draft_without_a_draft_model_is_refused(models, tmp_path: Path) -> None:
    daemon = launch(models["smollm2"], tmp_path / "daemon.log", {"ASSISTANT_SPECULATIVE": "draft"})
    assert daemon.proc.wait(60) != 0
    assert "--draft-model" in daemon.log()
