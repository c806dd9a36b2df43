"""Real clients, run as their users run them, against a real daemon: simonw's `llm` CLI,
LangChain's ChatOpenAI/OpenAIEmbeddings, and the OpenAI Node SDK (aider and Continue's `cn`
are heavy: scripts/try_clients.sh runs them by hand)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from pydantic import BaseModel

from tests.support.daemons import Daemon

SMOL_ID = "smollm2-135m-instruct-q4_1"
# A question this small model answers in a few dozen tokens and then stops (greedy).
COUNT = "Explain in three sentences what a Python list is."


def _llm(tmp_path: Path, daemon: Daemon, *args: str) -> subprocess.CompletedProcess[str]:
    home = tmp_path / "llm"
    home.mkdir(exist_ok=True)
    (home / "extra-openai-models.yaml").write_text(
        f"- model_id: local\n  model_name: {SMOL_ID}\n  api_base: {daemon.v1}\n"
        "  supports_schema: true\n"
    )
    return subprocess.run(
        [str(Path(sys.executable).with_name("llm")), "-m", "local", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "LLM_USER_PATH": str(home)},
    )


def test_llm_cli_gets_a_whole_answer_streamed_and_not(smol: Daemon, tmp_path: Path) -> None:
    for extra in ([], ["--no-stream"]):
        result = _llm(tmp_path, smol, *extra, "-o", "temperature", "0", COUNT)
        assert result.returncode == 0, result.stderr
        assert len(result.stdout.split()) > 16, result.stdout  # not cut at 16 tokens


def test_llm_cli_schema_gives_json(smol: Daemon, tmp_path: Path) -> None:
    result = _llm(
        tmp_path, smol, "--schema", "name, age int", "-o", "temperature", "0", "Invent a dog."
    )
    assert result.returncode == 0, result.stderr
    dog = json.loads(result.stdout)
    assert isinstance(dog["name"], str) and isinstance(dog["age"], int)


def test_langchain_chat_is_whole(smol: Daemon) -> None:
    chat = ChatOpenAI(base_url=smol.v1, api_key="unused", model=SMOL_ID, temperature=0)
    reply = chat.invoke(COUNT)
    assert reply.usage_metadata and reply.usage_metadata["output_tokens"] > 16
    assert reply.response_metadata["finish_reason"] == "stop"
    streamed = "".join(str(chunk.content) for chunk in chat.stream(COUNT))
    assert streamed == reply.content


@tool
def get_weather(city: str, unit: str) -> str:
    """Current weather for a city, in celsius or fahrenheit."""
    return "sunny"


class Joke(BaseModel):
    setup: str
    punchline: str


def test_langchain_tools_and_structured_output(smol_tools: Daemon) -> None:
    chat = ChatOpenAI(
        base_url=smol_tools.v1, api_key="unused", model=_served_id(smol_tools), temperature=0
    )
    forced = chat.bind_tools([get_weather], tool_choice="get_weather")
    reply = forced.invoke("What is the weather in Paris?")
    [call] = reply.tool_calls
    assert call["name"] == "get_weather" and set(call["args"]) == {"city", "unit"}
    joke = chat.with_structured_output(Joke, method="json_schema").invoke("Tell me a joke")
    assert isinstance(joke, Joke)


def test_langchain_embeddings(smol: Daemon) -> None:
    embeddings = OpenAIEmbeddings(
        base_url=smol.v1, api_key="unused", model=SMOL_ID, check_embedding_ctx_length=False
    )
    vectors = embeddings.embed_documents(["def add(a, b):", "return a + b"])
    assert len(vectors) == 2 and len(vectors[0]) == len(vectors[1]) > 100


def _served_id(daemon: Daemon) -> str:
    import httpx

    return str(httpx.get(daemon.v1 + "/models", timeout=10).json()["data"][0]["id"])


NODE_SCRIPT = """
import OpenAI from "openai";
const client = new OpenAI({ baseURL: process.env.BASE_URL, apiKey: "unused" });
const model = (await client.models.list()).data[0].id;
const one = await client.models.retrieve(model);
const chat = await client.chat.completions.create({
  model, messages: [{ role: "user", content: process.env.PROMPT }], temperature: 0 });
let streamed = "";
const stream = await client.chat.completions.create({
  model, messages: [{ role: "user", content: process.env.PROMPT }], temperature: 0,
  stream: true, stream_options: { include_usage: true } });
let usage = null;
for await (const chunk of stream) {
  streamed += chunk.choices[0]?.delta?.content ?? "";
  usage = chunk.usage ?? usage;
}
const emb = await client.embeddings.create({ model, input: ["hello", "world"] });
console.log(JSON.stringify({
  retrieved: one.id, text: chat.choices[0].message.content, finish: chat.choices[0].finish_reason,
  tokens: chat.usage.completion_tokens, streamed, usage, dims: emb.data[0].embedding.length }));
"""


@pytest.fixture(scope="module")
def node_openai(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The OpenAI Node SDK from the npm registry, in a folder of its own."""
    if shutil.which("npm") is None or shutil.which("node") is None:
        pytest.skip("Node.js and npm are not installed here")
    folder = tmp_path_factory.mktemp("node")
    (folder / "package.json").write_text('{"type": "module", "private": true}')
    subprocess.run(
        ["npm", "install", "--silent", "--no-audit", "--no-fund", "openai@5"],
        cwd=folder,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (folder / "client.mjs").write_text(NODE_SCRIPT)
    return folder


def test_openai_node_sdk(smol: Daemon, node_openai: Path) -> None:
    result = subprocess.run(
        ["node", "client.mjs"],
        cwd=node_openai,
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "BASE_URL": smol.v1, "PROMPT": COUNT},
    )
    assert result.returncode == 0, result.stderr
    got = json.loads(result.stdout)
    assert got["retrieved"] == SMOL_ID
    assert got["finish"] == "stop" and got["tokens"] > 16
    assert got["streamed"] == got["text"]
    assert got["usage"]["completion_tokens"] == got["tokens"]
    assert got["dims"] > 100  # base64 by default in the Node SDK, decoded by it
