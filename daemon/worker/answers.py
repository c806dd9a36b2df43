"""Slot events → the worker protocol: OpenAI-shaped chunks (text or chat deltas, tool calls
included), then one end event with exact usage and llama.cpp-style timings."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

from assistantd.worker import tool_calls
from assistantd.worker.protocol import ChunkEvent, EndEvent, Event
from assistantd.worker.tool_calls import Family


class ToolWatch:
    """Holds back output that is (or may turn into) a tool call; lets the rest through."""

    def __init__(self, family: Family, *, forced: bool) -> None:
        self.family = family
        self.text = ""
        self.sent = 0
        self.in_call = forced

    def feed(self, piece: str) -> str:
        self.text += piece
        if self.in_call:
            return ""
        pending = self.text[self.sent :]
        at_start = not self.text[: self.sent].strip()
        cut, full = _opener_at(pending, self.family, at_start)
        if cut is None:
            self.sent = len(self.text)
            return pending
        self.sent += cut
        self.in_call = full
        return pending[:cut]

    def finish(self) -> tuple[str, list[tool_calls.ToolCall]]:
        rest = self.text[self.sent :]
        if not rest:
            return "", []
        content, calls = tool_calls.parse(rest, self.family)
        if not calls and self.family not in ("generic", "llama3"):
            content, calls = tool_calls.parse(rest, "generic")
        return (content, calls) if calls else (rest, [])


def _opener_at(text: str, family: Family, at_start: bool) -> tuple[int | None, bool]:
    """Where a tool call (or the start of one) begins in `text`, and whether it is whole."""
    best: tuple[int | None, bool] = (None, False)
    for opener in tool_calls.OPENERS[family]:
        if opener in ("{", "["):
            stripped = text.lstrip()
            if at_start and stripped.startswith(opener):
                return len(text) - len(stripped), True
            continue
        index = text.find(opener)
        if index >= 0:
            if best[0] is None or index < best[0]:
                best = (index, True)
            continue
        for k in range(min(len(opener) - 1, len(text)), 0, -1):
            if text.endswith(opener[:k]):
                index = len(text) - k
                if best[0] is None or index < best[0]:
                    best = (index, False)
                break
    return best


FINGERPRINT = "b0-assistantd"  # which build answered (llama-server's form: b<build>-<commit>)


class Answer:
    """Shapes one request's slot events. `chat` makes chat.completion.chunk deltas."""

    def __init__(
        self,
        *,
        chat: bool,
        model_id: str,
        prompt_tokens: int,
        n: int,
        family: Family | None = None,
        forced_call: bool = False,
    ) -> None:
        self.chat = chat
        self.model_id = model_id
        self.prompt_tokens = prompt_tokens
        self.id = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        self.created = int(time.time())
        self._watch = [ToolWatch(family, forced=forced_call) if family else None for _ in range(n)]
        self._opened = [False] * n
        self._logprobs: list[list[dict[str, Any]]] = [[] for _ in range(n)]  # not yet sent
        self._ids: list[list[int]] = [[] for _ in range(n)]  # token ids not yet sent
        self._offset = [0] * n  # characters of the answer before the next token
        self._ends: list[dict[str, Any]] = []

    def _chunk(self, index: int, text: str, finish: str | None, **delta: Any) -> ChunkEvent:
        if self.chat:
            body: dict[str, Any] = {}
            if text:  # a chunk that says nothing has no content (a finish)
                body["content"] = text
            body.update(delta)
            choice: dict[str, Any] = {"index": index, "delta": body}
            obj = "chat.completion.chunk"
        else:  # ids for llama-server's `tokens`; the OpenAI door drops them
            choice = {"index": index, "text": text, "token_ids": self._ids[index]}
            self._ids[index] = []
            obj = "text_completion"
        choice.update({"logprobs": self._take_logprobs(index), "finish_reason": finish})
        return self._wrap(obj, choice)

    def _opening(self, index: int) -> Iterator[ChunkEvent]:
        """A chat choice's first chunk: its role alone, content null (as OpenAI and
        llama-server stream it; llama.cpp's tests check it)."""
        if self.chat and not self._opened[index]:
            self._opened[index] = True
            delta = {"role": "assistant", "content": None}
            choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
            yield self._wrap("chat.completion.chunk", choice)

    def _wrap(self, obj: str, choice: dict[str, Any]) -> ChunkEvent:
        data = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model_id,
            "system_fingerprint": FINGERPRINT,
            "choices": [choice],
        }
        return {"type": "chunk", "data": data}

    def _take_logprobs(self, index: int) -> dict[str, Any] | None:
        """The entries of the tokens since the last chunk: `content` (chat's shape, kept for
        completions too, with ids) and, for completions, OpenAI's legacy lists."""
        taken, self._logprobs[index] = self._logprobs[index], []
        if not taken:
            return None
        content = [
            {
                **e,
                "top_logprobs": [
                    {k: v for k, v in t.items() if k != "id"} for t in e["top_logprobs"]
                ],
            }  # fmt: skip
            for e in taken
        ]
        if self.chat:
            return {"content": [{k: v for k, v in e.items() if k != "id"} for e in content]}
        return {
            "tokens": [e["token"] for e in taken],
            "token_logprobs": [e["logprob"] for e in taken],
            "top_logprobs": [{t["token"]: t["logprob"] for t in e["top_logprobs"]} for e in taken],
            "text_offset": [self._advance(index, e["token"]) for e in taken],
            "content": taken,
        }

    def _advance(self, index: int, token: str) -> int:
        at = self._offset[index]
        self._offset[index] += len(token)
        return at

    def events(self, slot_events: Iterator[dict[str, Any]]) -> Iterator[Event]:
        for event in slot_events:
            yield from self.feed(event)
        yield self.finish()

    def feed(self, event: dict[str, Any]) -> Iterator[ChunkEvent]:
        """The chunks one slot event makes (none while a tool call is being held back)."""
        index = int(event.get("index", 0))
        if event["type"] == "token":
            if "logprob" in event:
                self._logprobs[index].append(event["logprob"])
            if event.get("token") is not None:
                self._ids[index].append(event["token"])
            text = event["text"]
            watch = self._watch[index]
            if watch is not None:
                text = watch.feed(text)
            if text:
                yield from self._opening(index)
                yield self._chunk(index, text, None)
        elif event["type"] == "end":
            self._ends.append(event)
            yield from self._close(index, event)

    def finish(self) -> EndEvent:
        """The end event, once every choice has ended."""
        return self._end(self._ends)

    def _close(self, index: int, end: dict[str, Any]) -> Iterator[ChunkEvent]:
        finish = end["finish_reason"]
        yield from self._opening(index)
        watch = self._watch[index]
        if watch is not None:
            content, calls = watch.finish()
            if calls:
                deltas = [call.to_json(i) for i, call in enumerate(calls)]
                yield self._chunk(index, content, "tool_calls", tool_calls=deltas)
                end["finish_reason"] = "tool_calls"
                return
            if content:
                yield self._chunk(index, content, None)
        yield self._chunk(index, "", None if finish == "cancelled" else finish)

    def _end(self, ends: list[dict[str, Any]]) -> EndEvent:
        first = ends[0] if ends else {}
        predicted = sum(int(e["predicted_n"]) for e in ends)
        prompt_n = int(first.get("prompt_n", 0))
        cached = int(first.get("cached_n", 0))
        prompt_ms = float(first.get("prompt_ms", 0.0))
        predicted_ms = max((float(e["predicted_ms"]) for e in ends), default=0.0)
        cancelled = any(e["finish_reason"] == "cancelled" for e in ends)
        finish = "cancelled" if cancelled else first.get("finish_reason")
        return {
            "type": "end",
            "finish_reason": finish,
            "stop_type": first.get("stop_type", "none"),
            "stopping_word": first.get("stopping_word", ""),
            "usage": {
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": predicted,
                "total_tokens": self.prompt_tokens + predicted,
                "prompt_tokens_details": {"cached_tokens": cached},
            },
            "timings": {
                "cache_n": cached,
                "prompt_n": prompt_n,
                "prompt_ms": prompt_ms,
                "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
                "prompt_per_second": prompt_n / prompt_ms * 1000 if prompt_ms else 0.0,
                "predicted_n": predicted,
                "predicted_ms": predicted_ms,
                "predicted_per_token_ms": predicted_ms / predicted if predicted else 0.0,
                "predicted_per_second": (
                    (predicted - 1) / predicted_ms * 1000 if predicted_ms and predicted > 1 else 0.0
                ),
                # speculative decoding, as llama-server reports it
                "draft_n": sum(int(e.get("draft_n", 0)) for e in ends),
                "draft_n_accepted": sum(int(e.get("draft_n_accepted", 0)) for e in ends),
            },
        }
