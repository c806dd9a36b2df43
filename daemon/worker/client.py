"""Talks to a worker over its Unix socket; turns transport failures into WorkerFailed.

A generation's events are read from a plain asyncio stream, not httpx: every token passes
here, and on a CPU whatever the daemon spends per token is taken from the decode threads
(httpx's per-read reader registration cost 0.1-0.2 ms a token). Other calls use httpx."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from assistantd.errors import ReportedError, WorkerFailed
from assistantd.vocab import GenerationKind
from assistantd.worker import hold
from assistantd.worker.hold import HoldFlag
from assistantd.worker.protocol import HAND_OVER, KEEP_RELAYING, GenerateRequest, HandOver

_DIED = (
    "the model worker stopped while answering this request; it is being restarted, "
    "so retrying in a moment will work"
)


class WorkerClient:
    def __init__(self, socket_path: Path) -> None:
        self._socket_path = socket_path
        self._hold: HoldFlag | None = None
        self._http = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(socket_path)),
            base_url="http://worker",
            timeout=httpx.Timeout(None, connect=5.0),
        )

    async def aclose(self) -> None:
        await self._http.aclose()
        if self._hold is not None:
            self._hold.close()
            self._hold = None

    async def info(self) -> dict[str, Any]:
        try:
            response = await self._http.get("/info", timeout=5.0)
        except httpx.TransportError as exc:
            raise OSError(str(exc)) from exc
        return response.json()

    async def cancel(self, request_id: str) -> dict[str, Any] | None:
        """Stop a generation; returns its end event (tokens actually generated) if known."""
        try:
            response = await self._http.post(f"/cancel/{request_id}", timeout=15.0)
            return response.json().get("end")
        except (httpx.HTTPError, ValueError):
            return None  # the worker is gone or dying: nothing left to cancel

    def hold(self, seconds: float) -> None:
        """Pause the worker's batch for up to `seconds` (0 resumes): written to its hold flag,
        read before every step (best effort: no flag yet, no hold)."""
        if self._hold is None:
            with contextlib.suppress(OSError, ValueError):
                self._hold = HoldFlag(hold.path_for(self._socket_path))
        if self._hold is not None:
            self._hold.hold(seconds)

    async def open_generation(
        self,
        request_id: str,
        kind: GenerationKind,
        params: dict[str, Any],
        hand_over: HandOver | None = None,
    ) -> WorkerStream:
        """Start a generation; read its events from the returned stream, then close it. With
        `hand_over`, the stream's `hand_over` must be called after the first chunk."""
        body: GenerateRequest = {"id": request_id, "kind": kind, "params": params}
        if hand_over is not None:
            body["hand_over"] = hand_over
        data = json.dumps(body).encode()
        head = (
            b"POST /generate HTTP/1.1\r\nHost: worker\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(data)
        )
        writer = None
        try:
            async with asyncio.timeout(5.0):
                reader, writer = await asyncio.open_unix_connection(
                    str(self._socket_path), limit=_LINE_LIMIT
                )
                writer.write(head + data)
                await writer.drain()
                status = await reader.readline()
                while (await reader.readline()).strip():
                    pass  # headers: the body is NDJSON until the worker closes
        except (OSError, TimeoutError, ValueError):
            if writer is not None:
                writer.close()
            raise WorkerFailed(_DIED) from None
        if status.split(b" ", 2)[1:2] != [b"200"]:
            writer.close()
            raise WorkerFailed(_DIED)
        return WorkerStream(self, request_id, reader, writer)

    async def embed(self, inputs: list[str | list[int | str]]) -> dict[str, Any]:
        return await self._call("/embed", {"input": inputs})

    async def text(self, body: dict[str, Any]) -> dict[str, Any]:
        """Tokenize, detokenize or render a chat template in the worker's own vocabulary."""
        return await self._call("/text", body)

    async def _call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """One JSON request and its answer; an error the worker reports is raised."""
        try:
            response = await self._http.post(path, json=body)
        except httpx.TransportError:
            raise WorkerFailed(_DIED) from None
        answer: dict[str, Any] = response.json()
        if answer.get("type") == "error":
            raise ReportedError(answer)
        return answer


class WorkerStream:
    """One generation's events. `abort` stops decoding in the worker and drops the stream."""

    def __init__(
        self,
        client: WorkerClient,
        request_id: str,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self._client = client
        self.request_id = request_id
        self._reader, self._writer = reader, writer
        self.finished = False

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Events until the end event; a stream that stops short means the worker died."""
        readline, loads = self._reader.readline, json.loads
        try:
            while line := await readline():
                if line == b"\n":
                    continue
                event = loads(line)
                kind = event["type"]
                if kind == "error":
                    raise ReportedError(event)
                if kind == "end":
                    self.finished = True
                    yield event
                    return
                yield event
        except (OSError, ValueError):  # ValueError: a line past _LINE_LIMIT
            raise WorkerFailed(_DIED) from None
        raise WorkerFailed(_DIED)

    def hand_over(self, client: Any | None) -> bool:
        """The worker's word after the first chunk: write the chunks to `client` (a socket;
        its descriptor is sent along) or keep relaying them here (None, or it failed)."""
        if client is not None:
            ours = self._writer.get_extra_info("socket")
            try:
                with socket.fromfd(ours.fileno(), socket.AF_UNIX, socket.SOCK_STREAM) as raw:
                    socket.send_fds(raw, [HAND_OVER], [client.fileno()])
                return True
            except OSError:
                pass  # nothing was sent: relaying is still the way
        self._writer.write(KEEP_RELAYING)
        return False

    async def finish(self) -> dict[str, Any] | None:
        """Stop decoding if still running; return the worker's end event, if it has one."""
        try:
            return None if self.finished else await self._client.cancel(self.request_id)
        finally:
            self._writer.close()


_LINE_LIMIT = 64 << 20  # one event per line; an end event with every logprob can be long
