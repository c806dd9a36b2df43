"""A generation on another OpenAI-compatible server (a team's assistantd, llama-server, vLLM,
Ollama), spoken to like a local worker: the same `open_generation` → events (chunk… end) the
worker's socket gives, so one proxy path serves local and remote rungs alike.

The network's failure modes are told apart here, in one place: a failed connect, a timeout to
the first byte, a 4xx/5xx or a malformed stream before any chunk is `UpstreamUnavailable`
(nothing reached the client: the request may be retried on a local rung); a stream cut after
its first chunk is `WorkerFailed` (the client gets an error event, as for a local crash).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx

from assistantd.errors import UpstreamUnavailable, WorkerFailed
from assistantd.vocab import GenerationKind
from assistantd.worker.protocol import HandOver

UPSTREAM_KINDS = ("chat", "completion")  # generations an OpenAI-compatible server takes
FIRST_BYTE_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 3.0
# What the daemon's normalised parameters may carry to an OpenAI-compatible server.
PASSED = (
    "messages", "prompt", "suffix", "max_tokens", "temperature", "top_p", "stop", "seed",
    "presence_penalty", "frequency_penalty", "n", "tools", "tool_choice", "response_format",
    "logit_bias",
)  # fmt: skip


class UpstreamClient:
    def __init__(self, base_url: str, api_key: str | None, model: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=headers,
            timeout=httpx.Timeout(FIRST_BYTE_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def models(self) -> list[str]:
        """The upstream's model ids (its health check)."""
        try:
            response = await self._http.get("/models", timeout=CONNECT_TIMEOUT_S)
            response.raise_for_status()
            return [m["id"] for m in response.json()["data"]]
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise UpstreamUnavailable(f"{self.base_url}/models: {_why(exc)}") from None

    async def about(self) -> dict[str, Any]:
        """What kind of server it is and what it serves, where it says: an assistantd's
        /status (its roles' models), else llama-server's /props (model file, context)."""
        root = self.base_url.removesuffix("/v1")
        for path in ("/status", "/props"):
            try:
                response = await self._http.get(root + path, timeout=CONNECT_TIMEOUT_S)
                body = response.json() if response.status_code == 200 else None
            except (httpx.HTTPError, ValueError):
                body = None
            if not isinstance(body, dict):
                continue
            if path == "/status" and isinstance(body.get("roles"), dict):
                roles = {r: (v or {}).get("model") for r, v in body["roles"].items()}
                return {"server": "assistantd", "roles": roles}
            if path == "/props":
                settings = body.get("default_generation_settings") or {}
                model_path = str(body.get("model_path") or settings.get("model") or "")
                return {
                    "server": "llama-server" if body.get("model_path") else "llama.cpp-compatible",
                    "model_file": model_path.rsplit("/", 1)[-1] or None,
                    "n_ctx": settings.get("n_ctx"),
                }
        return {"server": "openai-compatible"}

    async def embed(self, inputs: list[str | list[int | str]]) -> dict[str, Any]:
        """Vectors from the upstream, in the worker's shape: data (vectors), prompt_tokens.
        Anything short of that is `UpstreamUnavailable`: nothing reached the client yet."""
        try:
            response = await self._http.post(
                "/embeddings", json={"model": self.model, "input": inputs}
            )
            response.raise_for_status()
            body = response.json()
            items = sorted(body["data"], key=lambda item: item["index"])
            vectors = [[float(x) for x in item["embedding"]] for item in items]
            tokens = int((body.get("usage") or {}).get("prompt_tokens") or 0)
        except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
            raise UpstreamUnavailable(f"{self.base_url}/embeddings: {_why(exc)}") from None
        if len(vectors) != len(inputs):
            raise UpstreamUnavailable(
                f"{self.base_url}/embeddings: {len(vectors)} vectors for {len(inputs)} inputs"
            )
        return {"data": vectors, "prompt_tokens": tokens}

    async def open_generation(
        self,
        request_id: str,
        kind: GenerationKind,
        params: dict[str, Any],
        hand_over: HandOver | None = None,  # never asked of an upstream: its answer is relayed
    ) -> UpstreamStream:
        if kind not in UPSTREAM_KINDS:
            raise UpstreamUnavailable(f"{kind} is not sent upstream")
        path = "/chat/completions" if kind == "chat" else "/completions"
        body = {k: params[k] for k in PASSED if params.get(k) is not None}
        body |= {"model": self.model, "stream": True, "stream_options": {"include_usage": True}}
        started = time.perf_counter()
        try:
            request = self._http.build_request("POST", path, json=body)
            response = await self._http.send(request, stream=True)
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"{self.base_url}{path}: {_why(exc)}") from None
        if response.status_code != 200:
            text = (await response.aread()).decode(errors="replace")[:300]
            await response.aclose()
            raise UpstreamUnavailable(
                f"{self.base_url}{path} answered {response.status_code}: {text}"
            )
        return UpstreamStream(response, started)


class UpstreamStream:
    """One upstream answer as worker events; timings measured here, as the client sees them."""

    def __init__(self, response: httpx.Response, started: float) -> None:
        self._response = response
        self._started = started
        self.finished = False

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        first_at: float | None = None
        finish: str | None = None
        usage: dict[str, Any] = {}
        chunks = 0
        try:
            async for line in self._response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                chunk = json.loads(data)
                if "error" in chunk:
                    raise ValueError(chunk["error"].get("message", "an error event"))
                usage = chunk.get("usage") or usage
                choices = chunk.get("choices") or []
                if not choices:
                    continue
                finish = choices[0].get("finish_reason") or finish
                first_at = first_at or time.perf_counter()
                chunks += 1
                yield {"type": "chunk", "data": chunk}
        except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
            failure = f"the upstream's answer broke off: {_why(exc)}"
            if chunks == 0:
                raise UpstreamUnavailable(failure) from None
            raise WorkerFailed(failure) from None
        if chunks == 0 or finish is None:
            failure = "the upstream's answer ended without a finish reason"
            if chunks == 0:
                raise UpstreamUnavailable(failure)
            raise WorkerFailed(failure)
        self.finished = True
        yield {"type": "end", "finish_reason": finish, **_accounting(usage, self._started,
                                                                     first_at, chunks)}  # fmt: skip

    async def finish(self) -> dict[str, Any] | None:
        """Closing the response closes the upstream request (its server stops decoding)."""
        await self._response.aclose()
        return None


def _accounting(
    usage: dict[str, Any], started: float, first_at: float | None, chunks: int
) -> dict[str, Any]:
    now = time.perf_counter()
    first = first_at or now
    completion = int(usage.get("completion_tokens") or chunks)
    prompt = int(usage.get("prompt_tokens") or 0)
    prompt_ms = (first - started) * 1000
    decode_ms = max((now - first) * 1000, 1e-3)
    return {
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        "timings": {
            "prompt_n": prompt,
            "prompt_ms": prompt_ms,
            "prompt_per_second": prompt / max(prompt_ms / 1000, 1e-6),
            "predicted_n": completion,
            "predicted_ms": decode_ms,
            "predicted_per_second": max(completion - 1, 1) / (decode_ms / 1000),
        },
    }


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
