"""llama-server's request forms and answers, as scripts and clients written for it send and read
them (what llama.cpp's own server tests check): embeddings inputs of every form, several
prompts in one /completion, top-level grammar and json_schema, the streamed chat's opening
chunk, context-overflow numbers, token counting, CORS for chosen origins, /slots turned off."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.support.daemons import Daemon

ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def post(daemon: Daemon, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(daemon.url + path, json=body, timeout=60)


def test_embeddings_take_every_input_form_and_refuse_what_they_cannot_read(smol: Daemon) -> None:
    ids = post(smol, "/tokenize", {"content": "hello world"}).json()["tokens"]
    forms: list[Any] = [
        "hello world",
        ids,  # token ids
        [ids[0], " world"] if len(ids) == 2 else ids,  # ids and text in one prompt
        {"prompt_string": "hello world"},
        {"content": [{"type": "text", "text": "hello "}, {"type": "text", "text": "world"}]},
    ]
    answer = post(smol, "/v1/embeddings", {"input": forms})
    assert answer.status_code == 200, answer.text
    vectors = [d["embedding"] for d in answer.json()["data"]]
    assert len(vectors) == len(forms)
    for vector in vectors[1:]:  # each form is the same text, so the same vector
        assert vector == pytest.approx(vectors[0], abs=1e-5)
    for bad in ({"content": "string"}, {"content": [{"type": "image_url"}]}, [], ""):
        refused = post(smol, "/v1/embeddings", {"input": bad})
        assert refused.status_code == 400 and refused.json()["error"]["param"] == "input"
    too_long = post(smol, "/v1/embeddings", {"input": "This is a test " * 1200})
    assert too_long.status_code == 400
    assert "too large" in too_long.json()["error"]["message"]  # refused, not cut silently


def test_completion_prompts_grammar_and_token_ids(smol: Daemon) -> None:
    prompt = "1, 2, 3, 4,"
    ids = post(smol, "/tokenize", {"content": prompt}).json()["tokens"]
    ask = {"n_predict": 4, "temperature": 0}
    several = post(smol, "/completion", {**ask, "prompt": [ids, prompt, {"prompt_string": prompt}]})
    answers = several.json()
    assert isinstance(answers, list) and len(answers) == 3
    assert answers[0]["content"] == answers[1]["content"] == answers[2]["content"] != ""
    with httpx.stream(
        "POST", smol.url + "/completion", json={**ask, "prompt": prompt, "stream": True}
    ) as streamed:
        pieces = [json.loads(x[5:]) for x in streamed.iter_lines() if x.startswith("data:")]
    tokens = [t for p in pieces[:-1] for t in p["tokens"]]
    assert all(not p["stop"] and p["tokens"] for p in pieces[:-1]) and pieces[-1]["stop"]
    said = post(smol, "/detokenize", {"tokens": tokens}).json()["content"]
    assert said == "".join(p["content"] for p in pieces) == answers[0]["content"]
    assert answers[0]["tokens"] == []  # always there, filled only when asked for
    returned = post(smol, "/completion", {**ask, "prompt": prompt, "return_tokens": True})
    assert returned.json()["tokens"] == tokens
    forced = post(smol, "/completion", {**ask, "prompt": "Hi", "grammar": 'root ::= "a"{3,3}'})
    assert forced.json()["content"] == "aaa"
    bad = post(smol, "/completion", {**ask, "prompt": "Hi", "grammar": "root ::= undefined"})
    assert bad.status_code == 400 and "grammar" in bad.json()["error"]["message"]
    probs = post(smol, "/completion", {"prompt": "Hi", "n_predict": 2, "n_probs": 3,
                                       "post_sampling_probs": True}).json()  # fmt: skip
    for entry in probs["completion_probabilities"]:
        assert 0 < entry["prob"] <= 1 and len(entry["top_probs"]) == 3
        assert sum(p["prob"] for p in entry["top_probs"]) <= 1 + 1e-6


def test_chat_json_schema_stream_opening_overflow_and_token_count(smol: Daemon) -> None:
    chat = {"messages": ASK, "max_tokens": 6, "temperature": 0}
    number = post(smol, "/v1/chat/completions", {**chat, "json_schema": {"type": "integer"}})
    assert isinstance(json.loads(number.json()["choices"][0]["message"]["content"]), int)
    with httpx.stream(
        "POST", smol.v1 + "/chat/completions", json={**chat, "stream": True}, timeout=60
    ) as streamed:
        chunks = [json.loads(x[5:]) for x in streamed.iter_lines() if x.startswith("data: {")]
    opening = chunks[0]["choices"][0]["delta"]
    assert opening == {"role": "assistant", "content": None}  # as OpenAI and llama-server
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:])
    whole = post(smol, "/v1/chat/completions", chat).json()
    counted = post(smol, "/chat/completions/input_tokens", {"messages": ASK}).json()
    assert counted["input_tokens"] == whole["usage"]["prompt_tokens"] > 5
    n_ctx = smol.status()["roles"]["chat"]["n_ctx"]
    long = [{"role": "user", "content": "word " * (n_ctx + 10)}]
    overflow = post(smol, "/v1/chat/completions", {"messages": long})
    error = overflow.json()["error"]
    assert overflow.status_code == 400 and error["type"] == "exceed_context_size_error"
    assert error["n_prompt_tokens"] > error["n_ctx"] > 0


def test_cors_for_chosen_origins_and_slots_turned_off(start_daemon, models) -> None:
    """ASSISTANT_ALLOWED_ORIGINS=localhost: every loopback page may call, others may not; a
    foreign page's preflight is answered without CORS headers, so its browser sends nothing."""
    daemon = start_daemon(
        models["smollm2"], ASSISTANT_ALLOWED_ORIGINS="localhost", ASSISTANT_SLOTS_ENDPOINT="false"
    )
    ask = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "x"}
    for page in ("http://localhost:3000", "http://127.0.0.1", "http://[::1]:8080"):
        preflight = httpx.options(daemon.v1 + "/chat/completions", headers={"Origin": page, **ask})
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == page
    for page in ("http://evil.com", "http://localhost.evil.com"):
        preflight = httpx.options(daemon.v1 + "/chat/completions", headers={"Origin": page, **ask})
        assert preflight.status_code == 200
        assert "access-control-allow-origin" not in preflight.headers
        sent = httpx.get(daemon.v1 + "/models", headers={"Origin": page})
        assert sent.status_code == 403 and "ASSISTANT_ALLOWED_ORIGINS" in sent.text
    slots = httpx.get(daemon.url + "/slots")
    assert slots.status_code == 501 and "ASSISTANT_SLOTS_ENDPOINT" in slots.text
