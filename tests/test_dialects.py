"""Other APIs at the same door, driven by their official clients as users do: Anthropic's
Messages API with the `anthropic` SDK (what Claude Code speaks) and Ollama's API with the
`ollama` client (what Copilot Chat, Zed and Open WebUI speak), OpenAI's Responses API with
the `openai` SDK (what Codex CLI speaks). SmolLM2 with a tool-capable
template serves, through the same chat path as /v1/chat/completions; its FIM copy serves
Ollama's suffix."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import anthropic
import httpx
import ollama
import openai
import pytest

from tests.support.daemons import Daemon, free_port

WEATHER = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


def claude(daemon: Daemon) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=daemon.url, api_key="unused", max_retries=0, timeout=60)


def test_anthropic_create_stream_and_count_tokens(smol_tools: Daemon) -> None:
    api = claude(smol_tools)
    served = smol_tools.status()["roles"]["chat"]["model"]
    answer = api.messages.create(
        model="claude-sonnet-4-5", max_tokens=12, system="Answer briefly.", messages=ASK,
        extra_body={"temperature": 0},  # the SDK no longer sends sampling parameters itself
    )  # fmt: skip
    assert answer.model == served  # a Claude model name reaches the chat role
    assert answer.stop_reason in ("end_turn", "max_tokens") and answer.usage.output_tokens > 0
    assert answer.content and answer.content[0].type == "text" and answer.content[0].text
    counted = api.messages.count_tokens(model="x", system="Answer briefly.", messages=ASK)
    assert counted.input_tokens == answer.usage.input_tokens > 0  # the same template's tokens
    with api.messages.stream(model="x", max_tokens=12, messages=ASK) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text and final.usage.output_tokens > 0
    assert final.stop_reason in ("end_turn", "max_tokens")


def test_anthropic_tool_round_trip(smol_tools: Daemon) -> None:
    api = claude(smol_tools)
    first = api.messages.create(
        model="x", max_tokens=64, messages=ASK, tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"},
    )  # fmt: skip
    assert first.stop_reason == "tool_use"
    [call] = [b for b in first.content if b.type == "tool_use"]
    assert call.name == "get_weather" and isinstance(call.input["city"], str)
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "Sunny, 21 C"}
    follow = [*ASK, {"role": "assistant", "content": first.content},
              {"role": "user", "content": [result]}]  # fmt: skip
    with api.messages.stream(model="x", max_tokens=16, messages=follow, tools=[WEATHER]) as s:
        final = s.get_final_message()
    assert final.stop_reason in ("end_turn", "max_tokens", "tool_use")
    streamed = api.messages.create(
        model="x", max_tokens=64, messages=ASK, tools=[WEATHER], stream=True,
        tool_choice={"type": "any"},
    )  # fmt: skip
    kinds = [event.type for event in streamed]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "content_block_start" in kinds and "message_delta" in kinds


def test_anthropic_errors_in_its_own_shape(smol_tools: Daemon) -> None:
    api = claude(smol_tools)
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": ""}}
    with pytest.raises(anthropic.BadRequestError, match="text only") as caught:
        api.messages.create(
            model="x", max_tokens=8, messages=[{"role": "user", "content": [image]}]
        )
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == "invalid_request_error"
    missing = httpx.post(smol_tools.url + "/v1/messages", json={"messages": ASK})
    assert missing.status_code == 400 and "max_tokens" in missing.json()["error"]["message"]
    foreign = httpx.post(
        smol_tools.url + "/v1/messages",
        json={"max_tokens": 4, "messages": ASK},
        headers={"Origin": "https://evil.example"},
    )
    assert foreign.status_code == 403  # the same guard as every other route


def test_ollama_list_show_chat_generate_embed_and_ps(smol_tools: Daemon) -> None:
    api = ollama.Client(host=smol_tools.url, timeout=60)
    served = smol_tools.status()["roles"]["chat"]["model"]
    names = [m.model for m in api.list().models]
    assert served in names and "assistantd-chat" in names
    listed = next(m for m in api.list().models if m.model == served)
    assert listed.details.family == "llama" and listed.details.quantization_level == "Q4_1"
    shown = api.show(served)
    assert "completion" in shown.capabilities and "tools" in shown.capabilities
    assert shown.modelinfo["llama.context_length"] == 8192
    said = api.chat(model=served, messages=ASK, options={"num_predict": 8, "temperature": 0})
    assert said.message.role == "assistant" and said.message.content and said.done
    assert said.eval_count and said.prompt_eval_count and said.done_reason in ("stop", "length")
    parts = list(api.chat(model="assistantd-chat", messages=ASK, stream=True,
                          options={"num_predict": 8}))  # fmt: skip
    assert parts[-1].done and "".join(p.message.content for p in parts[:-1])
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    shaped = api.generate(model=served, prompt="Name a city in France.", format=schema,
                          options={"num_predict": 40, "temperature": 0})  # fmt: skip
    assert isinstance(json.loads(shaped.response)["city"], str)  # the answer follows the schema
    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Weather",
              "parameters": WEATHER["input_schema"]}}]  # fmt: skip
    called = api.chat(model=served, messages=ASK, tools=tools, options={"num_predict": 64})
    for call in called.message.tool_calls or []:  # a small model may answer in words instead
        assert call.function.name == "get_weather" and isinstance(call.function.arguments, dict)
    vectors = api.embed(model=served, input=["def f(): pass", "x"])
    assert len(vectors.embeddings) == 2 and len(vectors.embeddings[0]) == 576
    assert [m.model for m in api.ps().models] == [served]
    with pytest.raises(ollama.ResponseError, match="assistantctl use"):
        api.pull("llama3")
    with pytest.raises(ollama.ResponseError) as missing:
        api.chat(model="nope", messages=ASK)
    assert missing.value.status_code == 404


def test_ollama_generate_with_suffix_fills_in_the_middle(smol_fim: Daemon) -> None:
    """The same fill-in-the-middle answer as /v1/completions with a suffix gives."""
    api = ollama.Client(host=smol_fim.url, timeout=60)
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    middle = api.generate(model="assistantd-autocomplete", prompt=prefix, suffix=suffix,
                          options={"num_predict": 8, "temperature": 0})  # fmt: skip
    same = httpx.post(smol_fim.v1 + "/completions", timeout=60, json={
        "model": "assistantd-autocomplete", "prompt": prefix, "suffix": suffix, "max_tokens": 8,
        "temperature": 0}).json()  # fmt: skip
    assert middle.done and middle.response == same["choices"][0]["text"]
    assert middle.prompt_eval_count == same["usage"]["prompt_tokens"]
    assert "insert" in api.show("assistantd-autocomplete").capabilities


def test_openai_responses_create_stream_and_a_function_call(smol_tools: Daemon) -> None:
    api = openai.OpenAI(base_url=smol_tools.v1, api_key="unused", max_retries=0, timeout=60)
    answer = api.responses.create(
        model="assistantd-chat", instructions="Answer briefly.", input="What is 2 + 2?",
        max_output_tokens=12, temperature=0, store=False,
    )  # fmt: skip
    assert answer.output_text and answer.usage.output_tokens > 0
    assert answer.status in ("completed", "incomplete")
    with api.responses.stream(model="assistantd-chat", input="Say hi", max_output_tokens=8,
                              temperature=0) as stream:  # fmt: skip
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert deltas and final.output_text == "".join(deltas)
    tool = {"type": "function", "name": "get_weather", "description": "The weather in a city",
            "parameters": WEATHER["input_schema"]}  # fmt: skip
    called = api.responses.create(
        model="assistantd-chat", input=ASK, tools=[tool],
        tool_choice={"type": "function", "name": "get_weather"}, max_output_tokens=64,
    )  # fmt: skip
    [call] = [item for item in called.output if item.type == "function_call"]
    assert call.name == "get_weather" and isinstance(json.loads(call.arguments)["city"], str)
    asked = {"type": "function_call", "call_id": call.call_id, "name": call.name,
             "arguments": call.arguments}  # fmt: skip
    output = {"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}
    follow = [*ASK, asked, output]
    assert api.responses.create(model="assistantd-chat", input=follow, max_output_tokens=8)
    with pytest.raises(openai.BadRequestError, match="not stored"):
        api.responses.create(model="assistantd-chat", input="x", previous_response_id="resp_1")
    with pytest.raises(openai.NotFoundError, match="stateless"):
        api.responses.retrieve("resp_1")


def test_llama_server_native_routes(smol_tools: Daemon) -> None:
    """/tokenize, /detokenize, /apply-template, /completion (text, token ids, streamed,
    logit_bias) and the OpenAI routes without /v1, as scripts written for llama-server call."""
    url = smol_tools.url
    http = httpx.Client(timeout=60)  # a slow machine: a call may wait for a busy worker
    ids = http.post(url + "/tokenize", json={"content": "Hello world"}).json()["tokens"]
    assert ids and all(isinstance(i, int) for i in ids)
    pieces = http.post(url + "/tokenize", json={"content": "Hello world", "with_pieces": True})
    assert "".join(p["piece"] for p in pieces.json()["tokens"]) == "Hello world"
    assert http.post(url + "/detokenize", json={"tokens": ids}).json()["content"] == "Hello world"
    rendered = http.post(url + "/apply-template", json={"messages": ASK}).json()["prompt"]
    assert "<|im_start|>user\nWhat is the weather in Paris?" in rendered
    ask = {"prompt": "1, 2, 3, 4,", "n_predict": 6, "temperature": 0}
    text = http.post(url + "/completion", json=ask, timeout=60).json()
    assert text["stop"] and text["content"] and 0 < text["tokens_predicted"] <= 6
    assert text["timings"]["predicted_n"] == text["tokens_predicted"]
    prompt_ids = http.post(url + "/tokenize", json={"content": ask["prompt"]}).json()["tokens"]
    same = http.post(url + "/completion", json={**ask, "prompt": prompt_ids}, timeout=60).json()
    assert same["content"] == text["content"]  # the prompt as token ids
    with http.stream("POST", url + "/completion", json={**ask, "stream": True}) as streamed:
        events = [
            json.loads(line[5:]) for line in streamed.iter_lines() if line.startswith("data:")
        ]
    assert "".join(e["content"] for e in events) == text["content"] and events[-1]["stop"]
    first = http.post(url + "/tokenize", json={"content": text["content"]}).json()["tokens"][0]
    banned = {**ask, "n_predict": 1, "logit_bias": [[first, False]]}
    other = http.post(url + "/completion", json=banned, timeout=60).json()["content"]
    assert not text["content"].startswith(other)  # that token can no longer come first
    chat = http.post(url + "/chat/completions", json={"messages": ASK, "max_tokens": 4})
    assert chat.json()["choices"][0]["message"]["role"] == "assistant"
    assert http.get(url + "/models").json()["data"]
    props = http.get(url + "/props").json()
    assert props["model_path"].endswith(".gguf") and props["total_slots"] >= 1


def test_ollama_listen_serves_the_same_api_on_a_second_address(start_daemon, models) -> None:
    """--ollama-listen: Ollama's address too (a free port stands in for 11434 here); a taken
    one is refused at start, naming who holds it."""
    port = free_port()
    daemon = start_daemon(models["smollm2"], ASSISTANT_OLLAMA_LISTEN=f"127.0.0.1:{port}")
    api = ollama.Client(host=f"http://127.0.0.1:{port}", timeout=60)
    assert daemon.status()["roles"]["chat"]["model"] in [m.model for m in api.list().models]
    taken = run_daemon("--model", str(models["smollm2"]), "--port", str(free_port()),
                           "--ollama-listen", f"127.0.0.1:{port}")  # fmt: skip
    assert taken.returncode == 2 and f"port {port} on 127.0.0.1 is already in use" in taken.stderr
    assert "--ollama-listen" in taken.stderr and "python" in taken.stderr  # the holder, named


def run_daemon(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    return subprocess.run([sys.executable, "-m", "assistantd", *args], capture_output=True,
                          text=True, timeout=60, env=env)  # fmt: skip


def test_logprobs_in_every_shape(smol_tools: Daemon) -> None:
    """Chat (logprobs + top_logprobs), completions (logprobs=k) and llama-server's n_probs:
    the chosen token's log-probability and its most likely alternatives, as each API shapes
    them, streamed or whole."""
    api = openai.OpenAI(base_url=smol_tools.v1, api_key="unused", max_retries=0, timeout=60)
    chat = api.chat.completions.create(
        model="assistantd-chat", messages=ASK, max_tokens=5, temperature=0, logprobs=True,
        top_logprobs=3,
    )  # fmt: skip
    entries = chat.choices[0].logprobs.content
    assert "".join(e.token for e in entries) == chat.choices[0].message.content
    for entry in entries:  # greedy: the chosen token is the most likely one
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        assert entry.top_logprobs[0].logprob == pytest.approx(entry.logprob, abs=1e-4)
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
    banned = api.chat.completions.create(
        model="assistantd-chat", messages=ASK, max_tokens=1, temperature=0,
        logit_bias={str(_id(smol_tools, entries[0].token)): -100},
    )  # fmt: skip
    assert banned.choices[0].message.content != entries[0].token  # logit_bias reaches chat
    streamed = api.chat.completions.create(
        model="assistantd-chat", messages=ASK, max_tokens=5, temperature=0, logprobs=True,
        stream=True,
    )  # fmt: skip
    tokens = [e.token for c in streamed if c.choices and c.choices[0].logprobs
              for e in c.choices[0].logprobs.content]  # fmt: skip
    assert tokens == [e.token for e in entries]
    text = api.completions.create(
        model="assistantd-chat", prompt="1, 2, 3,", max_tokens=4, temperature=0, logprobs=2
    ).choices[0]
    assert "".join(text.logprobs.tokens) == text.text and len(text.logprobs.top_logprobs) == 4
    assert text.logprobs.text_offset[0] == 0 and all(p <= 0 for p in text.logprobs.token_logprobs)
    native = httpx.post(smol_tools.url + "/completion", timeout=60, json={
        "prompt": "1, 2, 3,", "n_predict": 4, "temperature": 0, "n_probs": 2}).json()  # fmt: skip
    probabilities = native["completion_probabilities"]
    assert [p["token"] for p in probabilities] == text.logprobs.tokens
    assert all(len(p["top_logprobs"]) == 2 and isinstance(p["id"], int) for p in probabilities)


def _id(daemon: Daemon, piece: str) -> int:
    """The id of a one-token piece, from the daemon's own /tokenize."""
    [token] = httpx.post(daemon.url + "/tokenize", json={"content": piece}, timeout=60).json()[
        "tokens"
    ]
    return int(token)
