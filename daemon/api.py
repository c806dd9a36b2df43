"""The front door: OpenAI- and llama.cpp-compatible HTTP API, proxied to the worker.

Cheap endpoints (/v1/models, /health, /status) never touch the generation queue, so they answer
while a long generation runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import psutil
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from daemon import shapes
from daemon.admission import Admission
from daemon.controller import Controller
from daemon.errors import (
    AssistantError,
    ContextOverflow,
    InvalidRequest,
    ModelNotFound,
    PayloadTooLarge,
    ShiftRefused,
    Unavailable,
    WorkerUnavailable,
)
from daemon.monitor import Monitor
from daemon.provision import ProvisionStatus
from daemon.proxy import Generation
from daemon.schemas import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    InfillRequest,
    ProfileRequest,
    UseRequest,
)
from daemon.security import Guard
from daemon.settings import Settings
from daemon.speeds import MeasuredSpeeds
from daemon.stats import RequestRecord, Stats
from daemon.supervisor import Supervisor

log = logging.getLogger("assistantd.api")

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

Body = TypeVar("Body", bound=BaseModel)
Shape = Callable[[list[dict[str, Any]], dict[str, Any], str], dict[str, Any]]


@dataclass
class DaemonState:
    """What the front door needs from the rest of the daemon. Until a model is chosen and
    fetched (no --model), there is no supervisor and `provision` says what is happening."""

    settings: Settings
    admission: Admission
    provision: ProvisionStatus = field(default_factory=ProvisionStatus)
    supervisor: Supervisor | None = None
    model_id: str = ""
    speeds: MeasuredSpeeds | None = None
    speed_key: tuple[str, str, str] | None = None  # set when the model came from the catalog
    stats: Stats = field(default_factory=Stats)
    monitor: Monitor = field(default_factory=Monitor)
    control: Controller | None = None
    served_ids: set[str] = field(default_factory=set)  # every id served in this run
    created: int = field(default_factory=lambda: int(time.time()))

    def record(self, rec: RequestRecord) -> None:
        """One finished request: counters, rolling windows, and a nudge to the policy."""
        self.stats.record(rec)
        self.monitor.observe(rec)
        if self.control is not None:
            self.control.wake()

    @property
    def state(self) -> str:
        return self.supervisor.state if self.supervisor else self.provision.state

    @property
    def n_ctx(self) -> int:
        if self.supervisor is None:
            return self.settings.n_ctx or 0  # no model yet: nothing to check against
        return int(self.supervisor.worker_info.get("n_ctx", self.supervisor.spec.n_ctx))

    def require_supervisor(self) -> Supervisor:
        if self.supervisor is None:
            progress = self.provision.download
            detail = (
                f" ({100 * progress.done_bytes / progress.total_bytes:.0f}%)"
                if progress and progress.total_bytes
                else ""
            )
            raise WorkerUnavailable(
                f"no model is loaded yet: assistantd is {self.provision.state}{detail}; "
                "`assistantctl status` shows progress",
                retry_after_s=10,
            )
        return self.supervisor

    def observe_speed(self, tok_s: float, tokens: int) -> None:
        """Measured decode speed replaces the planner's prediction next time it plans."""
        if self.speeds is not None and self.speed_key is not None:
            self.speeds.observe(self.speed_key, tok_s, tokens)

    def check_model(self, requested: str | None) -> None:
        """Any id this daemon has served in this run is accepted (an editor configured before
        a shift keeps working) and answered by the model serving now."""
        self.require_supervisor()
        self.served_ids.add(self.model_id)
        if requested is not None and requested not in self.served_ids:
            raise ModelNotFound(requested, self.model_id)

    def check_limit(self, max_tokens: int | None, param: str = "max_tokens") -> int | None:
        if max_tokens is not None and max_tokens > self.n_ctx:
            raise ContextOverflow(
                f"{param}={max_tokens} is beyond this model's context of {self.n_ctx} tokens; "
                f"ask for at most {self.n_ctx}",
                param=param,
            )
        return max_tokens


def error_response(error: AssistantError) -> JSONResponse:
    """The one place errors become HTTP: status, OpenAI-shaped body, Retry-After."""
    headers = {}
    if isinstance(error, Unavailable):
        headers["Retry-After"] = str(error.retry_after_s)
    return JSONResponse(error.to_body(), status_code=error.status, headers=headers)


async def read_body(request: Request, model: type[Body], limit: int) -> Body:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body is {declared} bytes; the limit is {limit} bytes")
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > limit:
            raise PayloadTooLarge(f"request body exceeds the limit of {limit} bytes")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "body"
        raise InvalidRequest(f"{where}: {err['msg']}", param=where) from None


class ClosingStreamingResponse(StreamingResponse):
    """Closes its body iterator even when the client disconnected mid-stream."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]


async def _wait_disconnect(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def create_app(state: DaemonState) -> FastAPI:
    app = FastAPI(title="assistantd", version="0.1.0", docs_url=None, redoc_url=None)
    settings = state.settings
    app.add_middleware(
        Guard,
        bind_host=settings.host,
        api_key=settings.api_key.get_secret_value() if settings.api_key else None,
        allowed_hosts=settings.allowed_hosts,
        allowed_origins=settings.allowed_origins,
    )

    @app.exception_handler(AssistantError)
    async def _assistant_error(request: Request, exc: AssistantError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = AssistantError(f"{request.method} {request.url.path}: {exc.detail}")
        err.status, err.type, err.code = exc.status_code, "invalid_request_error", None
        return error_response(err)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        return error_response(AssistantError(f"internal error: {exc}; see the daemon log"))

    def generation(endpoint: str) -> Generation:
        return Generation(
            admission=state.admission,
            supervisor=state.require_supervisor(),
            record=state.record,
            endpoint=endpoint,
            wait_timeout_s=settings.queue_timeout_s,
            on_decode_speed=state.observe_speed,
        )

    async def opened(endpoint: str, kind: str, params: dict[str, Any]) -> Generation:
        gen = generation(endpoint)
        try:
            await gen.open(kind, params)
        except Unavailable:
            state.stats.rejected += 1
            raise
        return gen

    async def collect(request: Request, gen: Generation) -> list[dict[str, Any]] | None:
        """All chunks of a non-streaming answer, or None if the client left first."""

        async def gather() -> list[dict[str, Any]]:
            return [shapes.restamp(ev["data"], state.model_id) async for ev in gen.events()]

        task = asyncio.create_task(gather())
        watcher = asyncio.create_task(_wait_disconnect(request))
        try:
            await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                task.cancel()
                gen.close("cancelled")
                return None
            chunks = task.result()
            gen.close("cancelled" if gen.end.get("finish_reason") == "cancelled" else "ok")
            return chunks
        finally:
            watcher.cancel()
            gen.close("error")  # no-op unless something above raised

    async def guarded(gen: Generation, pieces: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """One place for a streamed answer's ending: an error becomes a data line, a client
        that left counts as cancelled, and the generation is closed exactly once."""
        outcome = "error"
        try:
            async for piece in pieces:
                yield piece
            outcome = "ok"
        except AssistantError as exc:
            yield shapes.sse(exc.to_body())
        except BaseException:
            outcome = "cancelled"
            raise
        finally:
            gen.close(outcome)

    async def openai_stream(gen: Generation, include_usage: bool) -> AsyncIterator[bytes]:
        first: dict[str, Any] | None = None
        async for event in gen.events():
            chunk = shapes.restamp(event["data"], state.model_id)
            first = first or chunk
            yield shapes.sse(chunk)
        if include_usage and first is not None:
            yield shapes.sse(shapes.usage_chunk(first, state.model_id, gen.end["usage"]))
        yield shapes.DONE

    async def openai_generation(
        request: Request,
        endpoint: str,
        kind: str,
        params: dict[str, Any],
        body: ChatRequest | CompletionRequest,
        shape: Shape,
    ) -> Response:
        gen = await opened(endpoint, kind, params)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return ClosingStreamingResponse(
                guarded(gen, openai_stream(gen, include_usage)),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        chunks = await collect(request, gen)
        if chunks is None:
            return Response(status_code=499)
        return JSONResponse(shape(chunks, gen.end, state.model_id))

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return shapes.models_list(state.model_id, state.created)

    @app.get("/health")
    async def health() -> JSONResponse:
        current = state.state
        if current == "serving":
            return JSONResponse({"status": "ok"})
        body = {
            "status": current,
            "error": {"code": 503, "message": f"model is {current}", "type": "unavailable_error"},
        }
        return JSONResponse(body, status_code=503)

    @app.get("/status")
    async def status() -> dict[str, Any]:
        common = {
            "state": state.state,
            "endpoint": f"{settings.base_url}/v1",
            "pid": os.getpid(),
            "provision": state.provision.to_json(),
            "queue": {
                "active": state.admission.active,
                "waiting": state.admission.waiting,
                "capacity": settings.queue_size,
            },
            **state.stats.snapshot(),
        }
        if state.control is not None:
            common["control"] = state.control.to_json()
        sup = state.supervisor
        if sup is None:
            return {**common, "model": None, "worker": None}
        worker = sup.worker
        info = sup.worker_info
        return {
            **common,
            "model": {
                "id": state.model_id,
                "path": str(sup.spec.model_path),
                "n_ctx": state.n_ctx,
                "fim": info.get("fim"),
                "chat_template": info.get("chat_template"),
                "gpu_offload": info.get("gpu_offload"),
                "threads": sup.spec.threads,
            },
            "worker": {
                "pid": worker.pid if worker and not worker.exited else None,
                "restarts": sup.restarts,
                "last_error": sup.last_error,
            },
            "memory": _memory(worker.pid if worker and not worker.exited else None),
        }

    def _memory(pid: int | None) -> dict[str, Any]:
        """The worker's resident memory against the RAM budget the plan used (if planned)."""
        plan = state.provision.plan or {}
        rss = None
        if pid is not None:
            with contextlib.suppress(psutil.Error):
                rss = psutil.Process(pid).memory_info().rss
        return {
            "worker_rss_bytes": rss,
            "ram_budget_bytes": (plan.get("budget") or {}).get("ram_bytes"),
            "estimated_bytes": (plan.get("chosen") or {}).get("estimated_bytes"),
        }

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(state.monitor.prometheus(), media_type=PROMETHEUS_TEXT)

    def control() -> Controller:
        if state.control is None:
            raise ShiftRefused(f"assistantd is still {state.state}; try again once it serves")
        return state.control

    @app.post("/control/use")
    async def use(request: Request) -> dict[str, Any]:
        body = await read_body(request, UseRequest, 4096)
        event = await control().use(None if body.auto else body.model)
        return {"event": asdict(event) if event else None, "control": control().to_json()}

    @app.post("/control/profile")
    async def switch_profile(request: Request) -> dict[str, Any]:
        body = await read_body(request, ProfileRequest, 4096)
        await control().switch_profile(body.name)
        return {"control": control().to_json()}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await read_body(request, ChatRequest, settings.max_body_bytes)
        state.check_model(body.model)
        params = {
            "messages": [m.for_template() for m in body.messages],
            "max_tokens": state.check_limit(body.token_limit),
            **body.sampling(),
        }
        return await openai_generation(
            request, "chat", "chat", params, body, shapes.chat_completion
        )

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        body = await read_body(request, CompletionRequest, settings.max_body_bytes)
        state.check_model(body.model)
        params = {
            "prompt": body.prompt_text,
            "suffix": body.suffix,
            "max_tokens": state.check_limit(body.token_limit),
            **body.sampling(),
        }
        return await openai_generation(
            request, "completions", "completion", params, body, shapes.text_completion
        )

    @app.post("/infill")
    async def infill(request: Request) -> Response:
        body = await read_body(request, InfillRequest, settings.max_body_bytes)
        state.check_model(body.model)
        params = body.model_dump(
            include={
                "input_prefix",
                "input_suffix",
                "input_extra",
                "prompt",
                "temperature",
                "top_k",
                "top_p",
                "min_p",
                "stop",
                "seed",
                "t_max_predict_ms",
            },
            exclude_none=True,
        )
        params["max_tokens"] = state.check_limit(body.token_limit, "n_predict")
        gen = await opened("infill", "infill", params)
        if body.stream:
            return ClosingStreamingResponse(
                guarded(gen, infill_stream(gen)), media_type="text/event-stream"
            )
        chunks = await collect(request, gen)
        if chunks is None:
            return Response(status_code=499)
        return JSONResponse(shapes.infill_result(chunks, gen.end, state.model_id, streamed=False))

    async def infill_stream(gen: Generation) -> AsyncIterator[bytes]:
        chunks: list[dict[str, Any]] = []
        async for event in gen.events():
            chunks.append(event["data"])
            yield shapes.sse(shapes.infill_piece(event["data"]))
        yield shapes.sse(shapes.infill_result(chunks, gen.end, state.model_id, streamed=True))

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> JSONResponse:
        body = await read_body(request, EmbeddingRequest, settings.max_body_bytes)
        state.check_model(body.model)
        started = time.perf_counter()
        await state.admission.acquire()
        outcome = "error"
        lease = None
        try:
            lease = await state.require_supervisor().lease(settings.queue_timeout_s)
            result = await lease.client.embed(body.inputs)
            outcome = "ok"
        finally:
            if lease is not None:
                lease.release()
            state.admission.release()
            state.record(
                RequestRecord(
                    endpoint="embeddings",
                    outcome=outcome,
                    queue_ms=round((time.perf_counter() - started) * 1000, 2),
                )
            )
        return JSONResponse(
            shapes.embeddings(
                result["data"], result["prompt_tokens"], state.model_id, body.encoding_format
            )
        )

    return app
