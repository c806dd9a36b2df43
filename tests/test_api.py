"""The front door, with the official openai client against a real daemon and real models."""

from __future__ import annotations

import base64
import json
import math
import struct
import threading
import time

import httpx
import openai
import psutil
import pytest

from tests.support.daemons import FIM_MID, FIM_PRE, FIM_SUF, Daemon


def client(daemon: Daemon) -> openai.OpenAI:
    # Any bearer token is accepted: the SDK refuses to start without one.
    return openai.OpenAI(base_url=daemon.v1, api_key="unused", max_retries=0, timeout=120)


def model_id(daemon: Daemon) -> str:
    return client(daemon).models.list().data[0].id


def wait_for_record(daemon: Daemon, count_before: int, timeout_s: float = 20) -> dict:
    """The newest request record once the daemon has recorded one more than before."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = daemon.status()
        done = status["requests_served"] + status["requests_cancelled"] + status["requests_failed"]
        if done > count_before:
            return status["recent"][-1]
        time.sleep(0.05)
    raise AssertionError(f"no new request record in /status: {daemon.status()}")


def records(daemon: Daemon) -> int:
    s = daemon.status()
    return s["requests_served"] + s["requests_cancelled"] + s["requests_failed"]


def test_models_lists_the_served_id_and_it_is_not_chat_only_for_continue(smol: Daemon) -> None:
    models = client(smol).models.list().data
    # The served model, then the stable role ids (one model serves every role here).
    assert [m.id for m in models] == [
        "smollm2-135m-instruct-q4_1",
        "assistantd-chat",
        "assistantd-autocomplete",
        "assistantd-embed",
    ]
    assert not any(m.id.startswith(("gpt", "o")) for m in models)


def test_chat_completion(smol: Daemon) -> None:
    reply = client(smol).chat.completions.create(
        model=model_id(smol),
        messages=[{"role": "user", "content": "Write a Python function that adds two numbers."}],
        max_tokens=24,
        temperature=0,
    )
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 10
    assert 0 < reply.usage.completion_tokens <= 24


def test_chat_without_max_tokens_runs_until_a_stop_not_16_tokens(smol: Daemon) -> None:
    """What cn, aider, llm and LangChain send: no max_tokens means up to the context end."""
    reply = client(smol).chat.completions.create(
        model=model_id(smol),
        messages=[{"role": "user", "content": "Count from 1 to 40, one number per line."}],
        temperature=0,
    )
    assert reply.usage.completion_tokens > 16, reply
    assert reply.choices[0].finish_reason == "stop"
    words = len(reply.choices[0].message.content.split())
    assert words > 16


def test_chat_stream_with_usage_matches_non_streamed_answer(smol: Daemon) -> None:
    api = client(smol)
    messages = [{"role": "user", "content": "Name three sorting algorithms."}]
    chunks = list(
        api.chat.completions.create(
            model=model_id(smol),
            messages=messages,
            max_tokens=20,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = api.chat.completions.create(
        model=model_id(smol), messages=messages, max_tokens=20, temperature=0
    )
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_completion_prompt_is_tokenized_with_special_tokens(smol: Daemon) -> None:
    """Continue builds FIM prompts itself: marker texts must become single special tokens."""
    api = client(smol)
    plain = api.completions.create(model=model_id(smol), prompt="def add(a, b):", max_tokens=1)
    marked = api.completions.create(
        model=model_id(smol), prompt="<|im_start|>def add(a, b):<|im_end|>", max_tokens=1
    )
    assert marked.usage.prompt_tokens == plain.usage.prompt_tokens + 2


def test_suffix_on_a_model_without_fim_tokens_is_a_clear_400(smol: Daemon) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(smol).completions.create(
            model=model_id(smol), prompt="def f(", suffix="\n", max_tokens=4
        )
    assert caught.value.code == "fim_unsupported"
    assert "fill-in-the-middle" in caught.value.message


def test_suffix_builds_the_prompt_from_the_models_own_fim_tokens(smol_fim: Daemon) -> None:
    api = client(smol_fim)
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    via_suffix = api.completions.create(
        model=model_id(smol_fim), prompt=prefix, suffix=suffix, max_tokens=12, temperature=0
    )
    raw = api.completions.create(
        model=model_id(smol_fim),
        prompt=f"{FIM_PRE}{prefix}{FIM_SUF}{suffix}{FIM_MID}",
        max_tokens=12,
        temperature=0,
    )
    assert via_suffix.usage.prompt_tokens == raw.usage.prompt_tokens
    assert via_suffix.choices[0].text == raw.choices[0].text


def test_infill_speaks_the_llama_cpp_schema(smol_fim: Daemon) -> None:
    response = httpx.post(
        smol_fim.url + "/infill",
        json={
            # Greedy, with a prefix this small model continues instead of ending at once.
            "input_prefix": "# A greeting\ndef greet(name):\n    ",
            "input_suffix": "\n",
            "input_extra": [{"filename": "util.py", "text": "def helper():\n    pass\n"}],
            "prompt": 'print(f"Hello',
            "temperature": 0,
            "n_predict": 8,
            "cache_prompt": True,
            "t_max_prompt_ms": 500,
            "t_max_predict_ms": 2000,
            "samplers": ["top_k", "top_p", "infill"],
            "n_indent": 4,
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["content"], str)
    assert body["stop"] is True
    assert 0 < body["tokens_predicted"] <= 8
    assert body["timings"]["predicted_n"] == body["tokens_predicted"]
    assert body["tokens_evaluated"] > 10  # extra context, prefix, prompt and suffix


def test_infill_without_fim_tokens_is_a_clear_400(smol: Daemon) -> None:
    response = httpx.post(smol.url + "/infill", json={"input_prefix": "x = ", "n_predict": 4})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "fim_unsupported"


def test_embeddings_in_float_and_base64(smol: Daemon) -> None:
    # The SDK asks for base64 and decodes it; a raw request asks for floats.
    via_sdk = client(smol).embeddings.create(model=model_id(smol), input=["hello world", "bye"])
    assert len(via_sdk.data) == 2
    vector = via_sdk.data[0].embedding
    assert len(vector) == 576  # SmolLM2-135M's embedding width
    assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-3)

    raw = httpx.post(
        smol.v1 + "/embeddings", json={"input": "hello world", "encoding_format": "float"}
    ).json()
    floats = raw["data"][0]["embedding"]
    assert floats == pytest.approx(vector, abs=1e-5)
    b64 = httpx.post(
        smol.v1 + "/embeddings", json={"input": "hello world", "encoding_format": "base64"}
    ).json()["data"][0]["embedding"]
    decoded = struct.unpack(f"<{len(floats)}f", base64.b64decode(b64))
    assert list(decoded) == pytest.approx(floats, abs=1e-6)


def test_embeddings_from_the_chat_model_start_no_second_thread_team(smol: Daemon) -> None:
    """llama.cpp work on a request's handler thread starts a second OpenMP team (a thread that
    stays), and the model then decoded 30% slower for good (110 tok/s before one embeddings
    request, 77 after): embeddings run on the slot engine's thread (worker/engine_calls.py)."""
    worker = psutil.Process(smol.status()["roles"]["chat"]["worker_pid"])
    api = client(smol)
    api.chat.completions.create(
        model=model_id(smol), messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )

    def settled() -> int:  # finished requests' handler threads have exited
        deadline, count = time.monotonic() + 5, worker.num_threads()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            count, before = worker.num_threads(), count
            if count == before:
                break
        return count

    threads = settled()
    for text in ("def add(a, b):", "class Stack:", "import os"):
        assert api.embeddings.create(model=model_id(smol), input=[text]).data[0].embedding
    assert settled() == threads
    answer = api.chat.completions.create(
        model=model_id(smol), messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert answer.choices[0].message.content and settled() == threads


def test_disconnect_mid_stream_stops_decoding_and_frees_the_queue(smol: Daemon) -> None:
    before = records(smol)
    received = 0
    with httpx.stream(
        "POST",
        smol.v1 + "/completions",
        json={"prompt": "Once upon a time", "max_tokens": 1500, "stream": True},
        timeout=60,
    ) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                received += 1
            if received == 5:
                break
    record = wait_for_record(smol, before)
    assert record["outcome"] == "cancelled"
    # Decoding stopped within a few tokens of the disconnect, far short of 1500.
    assert record["completion_tokens"] < received + 30, record

    nxt = client(smol).completions.create(model=model_id(smol), prompt="1, 2, 3,", max_tokens=4)
    assert nxt.choices[0].text
    assert smol.status()["recent"][-1]["queue_ms"] < 1000


def test_disconnect_while_waiting_for_a_whole_answer_stops_decoding(smol: Daemon) -> None:
    before = records(smol)
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(
            smol.v1 + "/completions",
            # Counting never ends by itself (greedy), so only the disconnect can stop it.
            json={"prompt": "Count: 1, 2, 3,", "max_tokens": 1500, "temperature": 0},
            timeout=httpx.Timeout(60, read=0.5),
        )
    record = wait_for_record(smol, before)
    assert record["outcome"] == "cancelled"
    assert record["completion_tokens"] < 300, record


def test_cheap_endpoints_answer_while_a_long_generation_runs(smol: Daemon) -> None:
    started = threading.Event()
    done = threading.Event()

    def long_stream() -> None:
        with httpx.stream(
            "POST",
            smol.v1 + "/completions",
            json={
                "prompt": "Count: 1, 2, 3,",
                "max_tokens": 300,
                "stream": True,
                "stop": ["never"],
            },
            timeout=120,
        ) as response:
            for _ in response.iter_lines():
                started.set()
        done.set()

    thread = threading.Thread(target=long_stream)
    thread.start()
    assert started.wait(60)
    assert smol.status()["queue"]["active"] == 1
    assert httpx.get(smol.v1 + "/models", timeout=5).status_code == 200
    assert httpx.get(smol.url + "/health", timeout=5).json() == {"status": "ok"}
    assert not done.is_set(), "generation finished too soon to show anything"
    thread.join(120)


BAD_REQUESTS = [
    ("malformed json", "/v1/chat/completions", b"{not json", 400, "not valid JSON"),
    ("not an object", "/v1/completions", b"[1, 2]", 400, "JSON object"),
    (
        "wrong type",
        "/v1/chat/completions",
        json.dumps({"messages": "hi"}).encode(),
        400,
        "messages",
    ),
    (
        "bad role",
        "/v1/chat/completions",
        json.dumps({"messages": [{"role": "wizard", "content": "x"}]}).encode(),
        400,
        "role",
    ),
    (
        "zero max_tokens",
        "/v1/completions",
        json.dumps({"prompt": "x", "max_tokens": 0}).encode(),
        400,
        "max_tokens",
    ),
    # A max_tokens beyond the context is served up to the context end (Continue sends 4096
    # whatever the model): tests/test_conformance.py.
    (
        "temperature out of range",
        "/v1/completions",
        json.dumps({"prompt": "x", "temperature": 7}).encode(),
        400,
        "temperature",
    ),
    # n > 1 is served (one slot per choice), but not more choices than slots.
    (
        "more choices than slots",
        "/v1/completions",
        json.dumps({"prompt": "x", "n": 9}).encode(),
        400,
        "n",
    ),
    (
        "unknown model",
        "/v1/chat/completions",
        json.dumps({"model": "llama-70b", "messages": [{"role": "user", "content": "x"}]}).encode(),
        404,
        "llama-70b",
    ),
    (
        "oversized body",
        "/v1/completions",
        json.dumps({"prompt": "x" * (9 * 1024 * 1024)}).encode(),
        413,
        "limit",
    ),
    ("unknown route", "/v1/nothing", b"{}", 404, "Not Found"),
]


@pytest.mark.parametrize(
    ("path", "body", "status", "mentions"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_input_gets_an_openai_shaped_4xx(
    smol: Daemon, path: str, body: bytes, status: int, mentions: str
) -> None:
    response = httpx.post(
        smol.url + path, content=body, headers={"content-type": "application/json"}, timeout=30
    )
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert mentions in error["message"]
    assert httpx.get(smol.url + "/health").json() == {"status": "ok"}


def test_prompt_longer_than_the_context_is_a_400(smol: Daemon) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client(smol).completions.create(model=model_id(smol), prompt="word " * 5000, max_tokens=4)
    assert caught.value.code == "context_length_exceeded"


def test_kill_9_of_the_worker_fails_in_flight_at_once_and_recovers(start_daemon, models) -> None:
    import os
    import signal

    daemon = start_daemon(models["smollm2"], ASSISTANT_RESTART_BACKOFF_S="0.1")
    api = client(daemon)
    worker_pid = daemon.status()["worker"]["pid"]
    stream = api.chat.completions.create(
        model=model_id(daemon),
        messages=[{"role": "user", "content": "Tell me a long story."}],
        max_tokens=1500,
        stream=True,
    )
    with pytest.raises(openai.APIError) as caught:
        for n, _chunk in enumerate(stream):
            if n == 3:
                os.kill(worker_pid, signal.SIGKILL)
    assert "worker stopped" in str(caught.value)

    daemon.wait_healthy(timeout_s=60)
    reply = api.chat.completions.create(
        model=model_id(daemon), messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert reply.choices[0].message.content is not None
    status = daemon.status()
    assert status["worker"]["restarts"] == 1
    assert status["worker"]["pid"] != worker_pid
    assert "exited with status -9" in status["worker"]["last_error"]


def test_queue_overflow_answers_503_with_retry_after(start_daemon, models) -> None:
    # One slot, so one request runs and one waits.
    daemon = start_daemon(models["smollm2"], ASSISTANT_QUEUE_SIZE="1", ASSISTANT_SLOTS="1")
    body = {"prompt": "Once upon a time", "max_tokens": 400, "stream": True, "stop": ["never"]}
    first_token = threading.Event()
    results: list[int] = []

    def streamer() -> None:
        with httpx.stream("POST", daemon.v1 + "/completions", json=body, timeout=120) as resp:
            results.append(resp.status_code)
            for _ in resp.iter_lines():
                first_token.set()

    running = threading.Thread(target=streamer)
    running.start()
    assert first_token.wait(60)
    waiting = threading.Thread(target=streamer)
    waiting.start()
    deadline = time.monotonic() + 30
    while daemon.status()["queue"]["waiting"] < 1:
        assert time.monotonic() < deadline, daemon.status()
        time.sleep(0.02)

    overflow = httpx.post(daemon.v1 + "/completions", json=body, timeout=30)
    assert overflow.status_code == 503
    assert int(overflow.headers["Retry-After"]) >= 1
    assert overflow.json()["error"]["code"] == "queue_full"

    running.join(120)
    waiting.join(120)
    assert results == [200, 200]
    assert daemon.status()["requests_rejected"] == 1


def test_base_model_without_a_chat_template_chats_through_chatml(start_daemon, models) -> None:
    daemon = start_daemon(models["gemma270m"])
    assert daemon.status()["model"]["chat_template"].startswith("chatml")
    reply = client(daemon).chat.completions.create(
        model=model_id(daemon), messages=[{"role": "user", "content": "Hello"}], max_tokens=8
    )
    assert reply.usage.completion_tokens > 0
