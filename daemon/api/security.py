"""Who may talk to the daemon: Host allowlist (DNS rebinding), Origin allowlist (no wildcard
CORS unless asked for with `*`; `localhost` allows every loopback page), and an optional API
key. A plain ASGI middleware, so streaming and disconnects pass through untouched."""

from __future__ import annotations

import ipaddress
import json
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from assistantd.api.keys import KeyRing, request_key
from assistantd.errors import ConfigError
from assistantd.settings import Settings

LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}
OPEN_PATHS = {"/health"}  # readiness probes carry no key
WEBVIEW_SCHEME = "vscode-webview://"


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, keys_required: bool) -> None:
    """Refuse to listen beyond this machine without a key."""
    if not is_loopback(host) and not keys_required:
        raise ConfigError(
            f"refusing to listen on {host} without an API key: anyone on the network could use "
            "the model. Set ASSISTANT_API_KEY (clients send it as a bearer token) or "
            "ASSISTANT_API_KEYS_FILE (one NAME:KEY per line), or bind 127.0.0.1"
        )


def check_tls(settings: Settings) -> None:
    """Both halves of a certificate, readable, or neither."""
    cert, key = settings.ssl_certfile, settings.ssl_keyfile
    if (cert is None) != (key is None):
        raise ConfigError("TLS needs both --ssl-certfile and --ssl-keyfile (PEM files)")
    for path in (cert, key):
        if path is not None and not path.is_file():
            raise ConfigError(f"TLS file {path} does not exist")


def _host_name(header: str) -> str:
    if header.startswith("["):
        return header[1 : header.find("]")]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


class Guard:
    def __init__(
        self,
        app: ASGIApp,
        *,
        bind_host: str,
        keys: KeyRing,
        allowed_hosts: list[str],
        allowed_origins: list[str],
    ) -> None:
        self.app = app
        self._check_host = is_loopback(bind_host)
        self._hosts = LOOPBACK_NAMES | {h.lower() for h in allowed_hosts}
        self._origins = {o.rstrip("/") for o in allowed_origins}
        self._keys = keys

    def _origin_allowed(self, origin: str) -> bool:
        if origin.startswith(WEBVIEW_SCHEME) or "*" in self._origins:
            return True
        if "localhost" in self._origins and _is_loopback_page(origin):
            return True
        return origin.rstrip("/") in self._origins

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = _host_name(headers.get("host", "")).lower()
        if self._check_host and host not in self._hosts:
            await _deny(
                send,
                403,
                f"Host '{host}' is not allowed (DNS rebinding protection); "
                "use http://127.0.0.1 or add it to ASSISTANT_ALLOWED_HOSTS",
            )
            return
        origin = headers.get("origin")
        if scope["method"] == "OPTIONS" and origin is not None:
            # A preflight runs nothing: a foreign page gets an answer without CORS headers
            # (as llama-server), and its browser then refuses to send the request.
            await _preflight(send, origin if self._origin_allowed(origin) else None)
            return
        if origin is not None and not self._origin_allowed(origin):
            await _deny(
                send,
                403,
                f"Origin '{origin}' is not allowed; add it to "
                "ASSISTANT_ALLOWED_ORIGINS if a web page really needs this daemon",
            )
            return
        if self._keys.required and scope["path"] not in OPEN_PATHS:
            auth = headers.get("authorization", "")
            given = auth[7:] if auth.lower().startswith("bearer ") else headers.get("x-api-key")
            name = self._keys.name_of(given.strip()) if given else None
            if name is None:
                await _deny(
                    send,
                    401,
                    "missing or wrong API key: send it as 'Authorization: Bearer <KEY>' "
                    "(or 'x-api-key: <KEY>')",
                    code="invalid_api_key",
                )
                return
            request_key.set(name)

        if origin is None:  # not a browser: every streamed chunk skips one wrapper
            await self.app(scope, receive, send)
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"Access-Control-Allow-Origin", origin.encode()),
                    (b"Vary", b"Origin"),
                ]
            await send(message)

        await self.app(scope, receive, send_with_cors)


async def _deny(send: Send, status: int, message: str, code: str = "forbidden") -> None:
    body = json.dumps(
        {
            "error": {
                "message": message,
                "type": "authentication_error" if status == 401 else "invalid_request_error",
                "param": None,
                "code": code,
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _is_loopback_page(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and is_loopback(parts.hostname or "")
    except ValueError:
        return False


async def _preflight(send: Send, origin: str | None) -> None:
    """200 as llama-server answers; CORS headers only for an allowed origin. The headers are
    listed, not `*`: browsers never let `*` cover Authorization. Names in their usual case:
    HTTP says case does not matter, but some clients compare them as written."""
    allowed = [
        (b"Access-Control-Allow-Origin", (origin or "").encode()),
        (b"Access-Control-Allow-Credentials", b"true"),
        (b"Access-Control-Allow-Methods", b"GET, POST, DELETE, OPTIONS"),
        (b"Access-Control-Allow-Headers", b"authorization, content-type, x-api-key"),
        (b"Access-Control-Max-Age", b"600"),
    ]
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [*(allowed if origin is not None else []), (b"Vary", b"Origin")],
        }
    )
    await send({"type": "http.response.body", "body": b""})
