"""Request bodies as real clients send them (read from each client's own source), replayed
against a real daemon, checking what each client reads from the answer."""

from __future__ import annotations

import base64
import json
import re

import httpx

from tests.support.daemons import FIM_MID, FIM_PRE, FIM_SUF, Daemon

LIST_QUESTION = "Explain in three sentences what a Python list is."  # ends by itself (greedy)
EXTRA = [{"text": "import os\nimport sys\n", "time": 1718000000000, "filename": "util.py"}]


def served(daemon: Daemon) -> str:
    return str(httpx.get(daemon.v1 + "/models", timeout=10).json()["data"][0]["id"])


def post(daemon: Daemon, path: str, body: dict) -> httpx.Response:
    return httpx.post(daemon.url + path, json=body, timeout=120)


def test_llama_vscode_fim_with_alternatives(smol_fim: Daemon) -> None:
    """llama.vscode src/llama-server.ts: n_cmpl 3, reads [i].content, tokens_cached,
    timings.* and generation_settings.n_ctx (without a null check)."""
    body = {
        "id_slot": 0, "input_prefix": "def add(a, b):\n", "input_suffix": "\n\nprint(add(1, 2))\n",
        "input_extra": EXTRA, "prompt": "    return", "n_predict": 16, "n_cmpl": 3, "top_k": 40,
        "top_p": 0.99, "stream": False, "samplers": ["top_k", "top_p", "infill"],
        "cache_prompt": True, "t_max_prompt_ms": 500, "t_max_predict_ms": 500,
        "model": "google/gemini-2.5-flash",
    }  # fmt: skip
    response = post(smol_fim, "/infill", body)
    assert response.status_code == 200, response.text
    results = response.json()
    assert isinstance(results, list) and len(results) == 3
    for result in results:
        assert isinstance(result["content"], str)
        assert result["generation_settings"]["n_ctx"] == 2048
        assert result["tokens_cached"] >= 0
        for key in ("prompt_n", "prompt_ms", "prompt_per_second", "predicted_n", "predicted_ms",
                    "predicted_per_second"):  # fmt: skip
            assert key in result["timings"]


def test_llama_vscode_warm_up_generates_nothing_and_caches(smol_fim: Daemon) -> None:
    warm = {
        "id_slot": 0, "input_prefix": "def f(x):\n", "input_suffix": "", "input_extra": EXTRA,
        "prompt": "", "n_predict": 0, "samplers": [], "cache_prompt": True,
        "t_max_prompt_ms": 500, "t_max_predict_ms": 1,
    }  # fmt: skip
    first = post(smol_fim, "/infill", warm).json()
    assert first["content"] == "" and first["tokens_predicted"] == 0
    again = post(smol_fim, "/infill", {**warm, "n_predict": 4}).json()
    assert again["tokens_cached"] > 0  # the warm-up's prompt was kept


def test_llama_vim_fim_with_response_fields(smol_fim: Daemon) -> None:
    """llama.vim autoload/llama.vim: flattened response_fields, and a raw body that matches
    '"content"\\s*:"' (it drops answers with a space after the colon)."""
    fields = ["content", "timings/prompt_n", "timings/prompt_ms", "timings/prompt_per_second",
              "timings/predicted_n", "timings/predicted_ms", "timings/predicted_per_second",
              "truncated", "tokens_cached"]  # fmt: skip
    body = {
        "id_slot": 0, "input_prefix": "def add(a, b):\n", "input_suffix": "\n",
        "input_extra": EXTRA, "prompt": "    return", "n_predict": 8, "stop": [], "n_indent": 4,
        "top_k": 40, "top_p": 0.9, "samplers": ["top_k", "top_p", "infill"], "stream": False,
        "cache_prompt": True, "t_max_prompt_ms": 500, "t_max_predict_ms": 1000,
        "response_fields": fields, "model": "",
    }  # fmt: skip
    response = post(smol_fim, "/infill", body)
    assert response.status_code == 200, response.text
    assert re.search(r'"content"\s*:"', response.text)
    assert set(response.json()) == set(fields)


def test_llama_vim_instruct_warm_up_and_edit(smol_fim: Daemon) -> None:
    system = "You are a text-editing assistant.\n--- SELECTION\nx = 1\n"
    warm = {
        "id_slot": 0, "messages": [{"role": "system", "content": system},
                                   {"role": "user", "content": ""}],
        "samplers": [], "n_predict": 0, "stream": False, "cache_prompt": True,
        "response_fields": [""], "model": "",
    }  # fmt: skip
    assert post(smol_fim, "/v1/chat/completions", warm).status_code == 200
    edit = {
        **warm, "min_p": 0.1, "temperature": 0.1, "samplers": ["min_p", "temperature"],
        "stream": True, "messages": [{"role": "system", "content": system},
                                     {"role": "user", "content": "INSTRUCTION: rename x to y"}],
    }  # fmt: skip
    del edit["n_predict"], edit["response_fields"]
    with httpx.stream("POST", smol_fim.v1 + "/chat/completions", json=edit, timeout=120) as resp:
        deltas = [json.loads(line[6:]) for line in resp.iter_lines() if line.startswith("data: {")]
    text = "".join(d["choices"][0]["delta"].get("content") or "" for d in deltas)
    assert text and deltas[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert len(deltas) > 16 or deltas[-1]["choices"][0]["finish_reason"] == "stop"


def test_continue_autocomplete_completion(smol_fim: Daemon) -> None:
    """Continue core/llm/llms/OpenAI.ts with provider openai: /v1/completions, streamed, its
    own FIM prompt, max_tokens 4096, the FIM markers as stops."""
    stops = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>",
             "<|fim_pad|>", "<|repo_name|>", "<|file_sep|>", "<|im_start|>", "<|im_end|>",
             "/src/", "#- coding: utf-8", "```"]  # fmt: skip
    body = {
        "model": served(smol_fim), "max_tokens": 4096, "temperature": 0.01, "stream": True,
        "stop": stops, "prompt": f"{FIM_PRE}def add(a, b):\n    return{FIM_SUF}\n{FIM_MID}",
    }  # fmt: skip
    with httpx.stream("POST", smol_fim.v1 + "/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    finish = [json.loads(x[6:])["choices"][0]["finish_reason"] for x in lines[:-1]]
    assert finish[-1] in ("stop", "length")


def test_continue_chat_with_tools_and_usage(smol_fim: Daemon) -> None:
    tools = [{"type": "function", "function": {"name": "read_file", "description": "Read a file",
              "parameters": {"type": "object", "properties": {"path": {"type": "string"}},
                             "required": ["path"]}}}]  # fmt: skip
    body = {
        "messages": [{"role": "system", "content": "<system>"}, {"role": "user", "content": "hi"}],
        "model": served(smol_fim), "max_tokens": 64, "stream": True,
        "stream_options": {"include_usage": True}, "tools": tools, "parallel_tool_calls": False,
    }  # fmt: skip
    with httpx.stream("POST", smol_fim.v1 + "/chat/completions", json=body, timeout=120) as resp:
        chunks = [json.loads(x[6:]) for x in resp.iter_lines() if x.startswith("data: {")]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0


def test_continue_and_langchain_embeddings(smol_fim: Daemon) -> None:
    """openai-node asks for base64; LangChain's default OpenAIEmbeddings sends token ids."""
    asked = {"model": served(smol_fim), "input": ["one", "two"], "encoding_format": "base64"}
    b64 = post(smol_fim, "/v1/embeddings", asked).json()
    vector = base64.b64decode(b64["data"][0]["embedding"])
    assert len(vector) % 4 == 0 and len(vector) > 400
    ids = post(smol_fim, "/v1/embeddings", {"input": [[1, 2, 3, 4]], "encoding_format": "float"})
    assert ids.status_code == 200 and len(ids.json()["data"]) == 1
    foreign = post(smol_fim, "/v1/embeddings", {"input": [[15339, 100000]]})
    assert foreign.status_code == 400 and "check_embedding_ctx_length" in foreign.text
    for nothing in ("", [[""]], [["", ""]]):  # [[""]]: found by tests/test_fuzz.py (was a 500)
        empty = post(smol_fim, "/v1/embeddings", {"input": nothing})
        assert empty.status_code == 400 and empty.json()["error"]["param"] == "input"
        assert "empty" in empty.json()["error"]["message"]


def test_aider_chat_without_max_tokens_is_whole(smol_fim: Daemon) -> None:
    """aider via litellm: stream, temperature 0, no max_tokens; 'length' is an error to it."""
    body = {
        "model": served(smol_fim), "stream": False, "temperature": 0,
        "messages": [{"role": "system", "content": "Act as an expert developer."},
                     {"role": "user", "content": LIST_QUESTION}],
    }  # fmt: skip
    answer = post(smol_fim, "/v1/chat/completions", body).json()
    assert answer["choices"][0]["finish_reason"] == "stop"
    assert answer["usage"]["completion_tokens"] > 16


def test_sdk_helpers_and_http_details(smol_fim: Daemon) -> None:
    model = served(smol_fim)
    one = httpx.get(smol_fim.v1 + f"/models/{model}", timeout=10)
    assert one.status_code == 200 and one.json()["id"] == model
    assert httpx.get(smol_fim.v1 + "/models/nope", timeout=10).status_code == 404
    wrong_method = httpx.get(smol_fim.v1 + "/chat/completions", timeout=10)
    assert wrong_method.status_code == 405 and "POST" in wrong_method.headers["allow"]
    spec = httpx.get(smol_fim.url + "/openapi.json", timeout=10).json()
    body = spec["paths"]["/v1/chat/completions"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/ChatRequest")
    assert "tools" in spec["components"]["schemas"]["ChatRequest"]["properties"]
    props = httpx.get(smol_fim.url + "/props", timeout=10).json()
    assert props["default_generation_settings"]["n_ctx"] == 2048
    assert smol_fim.status()["provision"]["state"] == "given"
