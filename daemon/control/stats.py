"""What the daemon has served: counters and the most recent requests, for /status."""

from __future__ import annotations

import collections
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from assistantd.vocab import Outcome


@dataclass
class RequestRecord:
    endpoint: str
    outcome: Outcome
    queue_ms: float
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_ms: float | None = None  # as the client saw it, queue included
    service_ttft_ms: float | None = None  # from the worker being asked, queue excluded
    prompt_tok_s: float | None = None
    decode_tok_s: float | None = None
    model: str = ""
    key: str | None = None  # the API key's name (never the key)
    draft_tokens: int = 0  # speculative decoding: tokens guessed, and those the model kept
    draft_accepted: int = 0
    handed_over: bool = False  # a stream whose chunks the worker wrote to the client itself
    at: float = field(default_factory=time.time)


@dataclass
class KeyCounts:
    requests: int = 0
    refused: int = 0  # 429 or 503: not admitted
    failed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Stats:
    def __init__(self, keep: int = 50) -> None:
        self.started_at = time.time()
        self.served = 0
        self.cancelled = 0
        self.failed = 0
        self.rejected = 0
        self.invalid = 0  # the client's request was wrong (4xx): not a server failure
        self.recent: collections.deque[RequestRecord] = collections.deque(maxlen=keep)
        self.by_key: dict[str, KeyCounts] = {}
        self.drafted = self.draft_accepted = 0
        # Decode tok/s of answers that had drafts and of those that had none: [sum, count].
        self._speed: dict[bool, list[float]] = {True: [0.0, 0], False: [0.0, 0]}

    def record(self, rec: RequestRecord) -> None:
        if rec.key is not None:
            counts = self.by_key.setdefault(rec.key, KeyCounts())
            counts.requests += 1
            counts.refused += rec.outcome == "rejected"
            counts.failed += rec.outcome == "error"
            counts.prompt_tokens += rec.prompt_tokens
            counts.completion_tokens += rec.completion_tokens
        self.drafted += rec.draft_tokens
        self.draft_accepted += rec.draft_accepted
        if rec.outcome == "ok" and rec.decode_tok_s and rec.completion_tokens > 1:
            speed = self._speed[rec.draft_tokens > 0]
            speed[0] += rec.decode_tok_s
            speed[1] += 1
        if rec.outcome == "ok":
            self.served += 1
        elif rec.outcome == "cancelled":
            self.cancelled += 1
        elif rec.outcome == "invalid":
            self.invalid += 1
        elif rec.outcome == "rejected":
            self.rejected += 1
        else:
            self.failed += 1
        self.recent.append(rec)

    def _gain(self) -> dict[str, float | None]:
        """Mean decode tok/s of answers with drafts and without (different answers, so a rough
        measure of what drafting pays here), and their ratio."""
        means = {k: (s / n if n else None) for k, (s, n) in self._speed.items()}
        drafted, plain = means[True], means[False]
        return {
            "decode_tok_s_with_drafts": round(drafted, 1) if drafted else None,
            "decode_tok_s_without": round(plain, 1) if plain else None,
            "measured_gain": round(drafted / plain, 2) if drafted and plain else None,
        }

    def snapshot(self) -> dict[str, Any]:
        return {
            "uptime_s": round(time.time() - self.started_at, 1),
            "requests_served": self.served,
            "requests_cancelled": self.cancelled,
            "requests_failed": self.failed,
            "requests_rejected": self.rejected,
            "requests_invalid": self.invalid,
            "speculation": {
                "draft_tokens": self.drafted,
                "accepted_tokens": self.draft_accepted,
                "acceptance": round(self.draft_accepted / self.drafted, 3)
                if self.drafted
                else None,
                **self._gain(),
            },
            "recent": [asdict(r) for r in list(self.recent)[-10:]],
            "keys": [
                {"name": name, **asdict(c)}
                for name, c in sorted(self.by_key.items(), key=lambda kv: -kv[1].requests)[:10]
            ],
        }
