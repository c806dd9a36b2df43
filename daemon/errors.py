"""A small error hierarchy whose messages tell people what to do next.

Each error knows its HTTP status and OpenAI error `type`/`code`, so the front door maps any of
them to an OpenAI-shaped body in one place (`api.error_response`).
"""

from __future__ import annotations


class AssistantError(Exception):
    """Base of every error the daemon reports to a person or a client."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.details: dict[str, int] = {}  # numbers a client reads (llama-server's n_ctx)

    def to_body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
                **self.details,
            }
        }


class ConfigError(AssistantError):
    """Settings or a config file a person wrote are wrong; the daemon cannot start."""

    code = "invalid_config"


class ProfileError(ConfigError):
    """A profile file is missing or wrong; at run time the previous profile keeps running."""

    status = 400
    type = "invalid_request_error"
    code = "invalid_profile"

    def __init__(self, message: str, *, path: object = None, line: int | None = None) -> None:
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")
        self.path = str(path) if path else None
        self.line = line
        self.detail = message


class DownloadStopped(AssistantError):
    """The daemon is shutting down; the partial file is kept for the next start."""

    code = "download_stopped"


class ModelFileError(AssistantError):
    """The model file is missing, unreadable or not a GGUF."""

    code = "model_file_error"


class InvalidRequest(AssistantError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_request"


class ContextOverflow(InvalidRequest):
    type = "exceed_context_size_error"  # llama-server's type; the code is OpenAI's
    code = "context_length_exceeded"

    def __init__(self, message: str, *, param: str | None, n_prompt_tokens: int, n_ctx: int):
        super().__init__(message, param=param)
        self.details = {"n_prompt_tokens": n_prompt_tokens, "n_ctx": n_ctx}


class ShiftRefused(InvalidRequest):
    """A manual `use` that cannot be honoured (unknown model, does not fit)."""

    status = 409
    code = "shift_refused"


class FimUnsupported(InvalidRequest):
    code = "fim_unsupported"


class NotFound(AssistantError):
    """Something the client asks for by id does not exist here."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class TurnedOff(AssistantError):
    """An endpoint the settings turned off (llama-server answers these 501)."""

    status = 501
    type = "not_supported_error"
    code = "turned_off"


class ModelNotFound(AssistantError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"

    def __init__(self, requested: str, served: str) -> None:
        super().__init__(
            f"model '{requested}' is not served here; this daemon serves '{served}' "
            "(GET /v1/models lists it)",
            param="model",
        )


class PayloadTooLarge(AssistantError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class Unavailable(AssistantError):
    """The request was not admitted; retrying later will work. Carries Retry-After."""

    status = 503
    type = "server_error"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class QueueFull(Unavailable):
    code = "queue_full"


class TooManyRequests(Unavailable):
    """One API key over its share; other keys are not affected."""

    status = 429
    type = "rate_limit_error"
    code = "too_many_requests"


class WorkerUnavailable(Unavailable):
    code = "model_unavailable"


class WorkerFailed(AssistantError):
    """The worker died or misbehaved while serving an admitted request."""

    status = 502
    code = "worker_failed"


class UpstreamUnavailable(WorkerFailed):
    """An upstream server failed before any of its answer reached the client: the request
    may go to a local rung instead."""

    code = "upstream_failed"


class WorkerStartFailed(AssistantError):
    """The worker could not load the model; carries its exit status and stderr tail."""

    code = "model_load_failed"


class ReportedError(AssistantError):
    """An error the worker reported for one request, re-raised in the daemon as it was."""

    def __init__(self, event: dict[str, object]) -> None:
        super().__init__(str(event.get("message", "the model worker reported an error")))
        self.status = int(event.get("status", 500))  # type: ignore[call-overload]
        self.type = str(event.get("error_type", "server_error"))
        self.code = event.get("code")  # type: ignore[assignment]
        self.param = event.get("param")  # type: ignore[assignment]
        self.details = dict(event.get("details") or {})  # type: ignore[call-overload]


class GGUFError(ModelFileError):
    """A GGUF header that is malformed, truncated or crafted; never handed to llama.cpp."""

    code = "invalid_gguf"


class HubUnavailable(AssistantError):
    """The hub (or HF_ENDPOINT) cannot be reached or refused; cached files may still serve."""

    status = 503
    code = "hub_unavailable"


class DiskFull(AssistantError):
    code = "disk_full"


class ChecksumMismatch(AssistantError):
    code = "checksum_mismatch"
