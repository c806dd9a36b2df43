"""Speculative decoding through the real daemon: an edit-like request (the answer repeats its
prompt) is drafted from its own text, and the answer stays the model's own.

llama.cpp's batched kernels can differ from its one-token kernels in the last bits, so a
speculated greedy answer may part from the plain one where two tokens are nearly tied. The
tests tell that apart from a bug: at the first token where the answers differ, both tokens
must be near the top of the plain run's own distribution with almost equal log-probabilities;
a bug (a wrong token kept, a KV entry not dropped) picks tokens the model did not favour."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import openai

from tests.support.daemons import Daemon
from tests.support.near_tie import assert_same_or_tied

CODE = """def total_price(items):
    total = 0
    for item in items:
        total += item.price * item.quantity
    return total


def cheapest(items):
    return min(items, key=lambda item: item.price)
"""
EDIT = [{"role": "user", "content": f"Rename total to amount:\n```python\n{CODE}```"},
        {"role": "assistant", "content": "```python\n"}]  # fmt: skip
FREE = [{"role": "user", "content": "Write a short poem about the sea."}]


def answer(daemon: Daemon, messages: list[dict[str, str]]) -> list[tuple[str, dict[str, float]]]:
    """Each token of a greedy answer with the model's top alternatives (token → logprob)."""
    api = openai.OpenAI(base_url=daemon.v1, api_key="unused", max_retries=0, timeout=120)
    got = api.chat.completions.create(
        model="assistantd-chat", messages=messages, max_tokens=96, temperature=0,
        logprobs=True, top_logprobs=3,
    )  # fmt: skip
    return [
        (e.token, {t.token: t.logprob for t in e.top_logprobs})
        for e in got.choices[0].logprobs.content
    ]


def test_an_edit_is_drafted_from_its_prompt_and_the_answer_is_the_models_own(
    start_daemon, models
) -> None:
    plain = start_daemon(models["smollm2"], ASSISTANT_SPECULATIVE="off")
    drafting = start_daemon(models["smollm2"], ASSISTANT_SPECULATIVE="ngram")
    for messages in (EDIT, FREE):  # each daemon's caches in the same state for each request
        assert_same_or_tied(answer(plain, messages), answer(drafting, messages))
    counts = drafting.status()["speculation"]
    assert counts["draft_tokens"] > 0 and 0 < counts["accepted_tokens"] <= counts["draft_tokens"]
    assert counts["decode_tok_s_with_drafts"] > 0  # answers with drafts, measured apart
    assert plain.status()["speculation"]["draft_tokens"] == 0
    native = httpx.post(drafting.url + "/completion", timeout=120, json={
        "prompt": CODE + "\n\n" + CODE[:60], "n_predict": 40, "temperature": 0}).json()  # fmt: skip
    assert native["timings"]["draft_n_accepted"] > 0  # llama-server's names, per answer
    shown = subprocess.run(
        [sys.executable, "-m", "assistantd.cli.main", "--url", drafting.url, "status"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert "speculate" in shown.stdout and "accepted" in shown.stdout
    metrics = httpx.get(drafting.url + "/metrics").text
    assert 'assistantd_draft_tokens_total{kind="accepted"}' in metrics


def test_auto_the_default_drafts_a_copy_and_keeps_the_answer(start_daemon, models) -> None:
    """`auto` prices drafts by this machine's own batch timings: copied code pays even on
    a CPU, and the answer stays the model's own (see test_draft_pricing for the pricing)."""
    plain = start_daemon(models["smollm2"], ASSISTANT_SPECULATIVE="off")
    auto = start_daemon(models["smollm2"])
    assert_same_or_tied(answer(plain, EDIT), answer(auto, EDIT))
    copy = {"prompt": CODE + "\n\n" + CODE[:60], "n_predict": 80, "temperature": 0}
    got = [httpx.post(d.url + "/completion", json=copy, timeout=120).json() for d in (plain, auto)]
    assert got[1]["timings"]["draft_n_accepted"] > 0
    assert got[0]["content"] == got[1]["content"] or got[1]["content"].startswith(CODE[60:120])


def test_limits_stop_strings_and_json_hold_while_guesses_are_kept(start_daemon, models) -> None:
    """Guesses are kept several tokens a step, so every end a token can bring is checked at
    each kept token: a length limit is never passed, a stop string inside a kept guess ends the
    answer before it, and a grammar (JSON output) still holds."""
    plain = start_daemon(models["smollm2"], ASSISTANT_SPECULATIVE="off")
    drafting = start_daemon(models["smollm2"], ASSISTANT_SPECULATIVE="ngram")
    copy = CODE + "\n\n" + CODE[:60]  # the model copies the rest: guesses are kept whole
    rest = CODE[60:]

    def native(daemon: Daemon, **extra: object) -> dict:
        body = {"prompt": copy, "temperature": 0, **extra}
        return httpx.post(daemon.url + "/completion", json=body, timeout=120).json()

    for limit in (6, 23):
        got = native(drafting, n_predict=limit)
        assert got["tokens_predicted"] == limit and got["stop_type"] == "limit"
        assert got["timings"]["draft_n_accepted"] > 0
        assert got["content"] == native(plain, n_predict=limit)["content"]
    stopped = native(drafting, n_predict=80, stop=["quantity"])
    assert stopped["stop_type"] == "word" and stopped["stopping_word"] == "quantity"
    assert stopped["timings"]["draft_n_accepted"] > 0
    assert rest.startswith(stopped["content"] + "quantity")
    assert stopped["content"] == native(plain, n_predict=80, stop=["quantity"])["content"]
    asked = {"type": "json_object"}
    messages = [{"role": "user", "content": f"Put this code in a JSON object:\n{CODE}"}]
    api = openai.OpenAI(base_url=drafting.v1, api_key="unused", max_retries=0, timeout=120)
    drafted = drafting.status()["speculation"]["draft_tokens"]
    reply = api.chat.completions.create(
        model="assistantd-chat", messages=messages, max_tokens=160, temperature=0,
        response_format=asked,  # type: ignore[arg-type]
    )  # fmt: skip
    assert reply.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(reply.choices[0].message.content or ""), dict)
    assert drafting.status()["speculation"]["draft_tokens"] > drafted  # guesses met the grammar
