"""The one place errors become HTTP: status, a body in the shape of the API asked (OpenAI's,
Anthropic's or Ollama's), Retry-After, Allow."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from assistantd.api import anthropic_shapes
from assistantd.errors import AssistantError, Unavailable

log = logging.getLogger("assistantd.api")
ANTHROPIC_PATHS = ("/v1/messages",)
OLLAMA_PATHS = ("/api/",)


def error_response(
    error: AssistantError, headers: dict[str, str] | None = None, path: str = ""
) -> JSONResponse:
    """The OpenAI error shape, or Anthropic's on its routes (its SDK reads error.type)."""
    headers = dict(headers or {})
    if isinstance(error, Unavailable):
        headers["Retry-After"] = str(error.retry_after_s)
    body = error.to_body()
    if path.startswith(ANTHROPIC_PATHS):
        body = anthropic_shapes.error_body(error.status, error.message)
    elif path.startswith(OLLAMA_PATHS):
        body = {"error": error.message}  # Ollama's clients read this one field
    return JSONResponse(body, status_code=error.status, headers=headers)


def install(app: FastAPI) -> None:
    """Every error a request can meet answers in the OpenAI shape."""

    @app.exception_handler(AssistantError)
    async def _assistant_error(request: Request, exc: AssistantError) -> JSONResponse:
        return error_response(exc, path=request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        err = AssistantError(f"{request.method} {request.url.path}: {exc.detail}")
        err.status, err.type, err.code = exc.status_code, "invalid_request_error", None
        return error_response(err, dict(exc.headers or {}), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s", request.url.path)
        error = AssistantError(f"internal error: {exc}; see the daemon log")
        return error_response(error, path=request.url.path)
