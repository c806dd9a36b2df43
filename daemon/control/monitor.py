"""How fast the daemon actually answers: every request's timings, rolling windows over them,
and the same numbers as Prometheus metrics.

What the policy judges:
- TTFT at the profile's reference prompt size: the time from asking the worker to its first
  token (queue excluded: a queue is load, not a slow model), scaled linearly to the reference
  size, from requests whose prompt is at least a quarter of it (short prompts say little).
- Decode speed: the worker's own tok/s for answers of at least MIN_DECODE_TOKENS tokens.
"""

from __future__ import annotations

import collections
import math
import statistics
import time
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from assistantd.control.stats import RequestRecord

MIN_DECODE_TOKENS = 16
HORIZON_S = 3600.0  # samples older than this are dropped


@dataclass(frozen=True)
class Sample:
    at: float  # time.monotonic()
    model: str
    queue_ms: float
    prompt_tokens: int
    service_ttft_ms: float | None
    prompt_tok_s: float | None
    decode_tok_s: float | None
    completion_tokens: int

    def ttft_at(self, reference_tokens: int) -> float | None:
        """This request's TTFT scaled to the reference prompt size, if it says anything."""
        if self.service_ttft_ms is None or self.prompt_tokens * 4 < reference_tokens:
            return None
        return self.service_ttft_ms * reference_tokens / self.prompt_tokens

    @property
    def decode(self) -> float | None:
        if self.decode_tok_s and self.completion_tokens >= MIN_DECODE_TOKENS:
            return self.decode_tok_s
        return None


def format_ms(ms: float | None) -> str:
    """A latency as people read it: 850 ms, 2.40 s; – for none."""
    if ms is None:
        return "–"
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


@dataclass(frozen=True)
class Window:
    """Summary of the samples in one window."""

    seconds: float
    requests: int
    ttft_samples: int
    decode_samples: int
    ttft_p50_ms: float | None
    ttft_p95_ms: float | None
    decode_p50_tok_s: float | None
    decode_p95_tok_s: float | None  # the slow tail: 5% of answers decode slower than this
    queue_p95_ms: float | None

    def to_json(self) -> dict[str, Any]:
        return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in self.__dict__.items()}


class Monitor:
    def __init__(self, reference_prompt_tokens: int = 1000) -> None:
        self.reference_prompt_tokens = reference_prompt_tokens
        self._samples: collections.deque[Sample] = collections.deque()
        self._served: set[tuple[str, str]] = set()
        self.registry = CollectorRegistry()
        self._requests = Counter(
            "assistantd_requests",
            "Generation and embedding requests by outcome.",
            ["endpoint", "outcome"],
            registry=self.registry,
        )
        self._queue = Histogram(
            "assistantd_queue_wait_seconds",
            "Time a request waited for its turn and a ready model.",
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=self.registry,
        )
        self._ttft = Histogram(
            "assistantd_time_to_first_token_seconds",
            "Time from asking the model to its first token (queue excluded).",
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
            registry=self.registry,
        )
        self._decode = Histogram(
            "assistantd_decode_tokens_per_second",
            "Decode speed of each answer.",
            buckets=(1, 2, 5, 10, 15, 20, 30, 50, 75, 100, 150, 250, 500),
            registry=self.registry,
        )
        self._prompt_tokens = Counter(
            "assistantd_prompt_tokens", "Prompt tokens evaluated.", registry=self.registry
        )
        self._completion_tokens = Counter(
            "assistantd_completion_tokens", "Tokens generated.", registry=self.registry
        )
        self._drafted = Counter(
            "assistantd_draft_tokens",
            "Speculative decoding: tokens drafted, and those the model accepted.",
            ["kind"],
            registry=self.registry,
        )
        self._handed_over = Counter(
            "assistantd_streams_handed_over",
            "Streamed answers whose chunks the worker wrote to the client itself.",
            registry=self.registry,
        )
        self.shifts = Counter(
            "assistantd_shifts",
            "Model shifts by direction.",
            ["direction"],
            registry=self.registry,
        )
        # Per API key (its name): what each person's tools asked for and got.
        self._key_requests = Counter(
            "assistantd_key_requests",
            "Requests by API key name and outcome.",
            ["key", "outcome"],
            registry=self.registry,
        )
        self._key_tokens = Counter(
            "assistantd_key_tokens",
            "Prompt and completion tokens by API key name.",
            ["key", "kind"],
            registry=self.registry,
        )
        self._key_ttft = Histogram(
            "assistantd_key_time_to_first_token_seconds",
            "Time to first token as the client saw it (queue included), by API key name.",
            ["key"],
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32),
            registry=self.registry,
        )
        self.model_info = Gauge(
            "assistantd_model_info",
            "The model serving each role (value 1).",
            ["role", "model"],
            registry=self.registry,
        )

    def observe(self, rec: RequestRecord) -> None:
        self._requests.labels(rec.endpoint, rec.outcome).inc()
        if rec.key is not None:
            self._key_requests.labels(rec.key, rec.outcome).inc()
            self._key_tokens.labels(rec.key, "prompt").inc(rec.prompt_tokens)
            self._key_tokens.labels(rec.key, "completion").inc(rec.completion_tokens)
            if rec.ttft_ms is not None:
                self._key_ttft.labels(rec.key).observe(rec.ttft_ms / 1000)
        self._queue.observe(rec.queue_ms / 1000)
        if rec.handed_over:
            self._handed_over.inc()
        if rec.outcome != "ok":
            return
        self._prompt_tokens.inc(rec.prompt_tokens)
        self._completion_tokens.inc(rec.completion_tokens)
        if rec.draft_tokens:
            self._drafted.labels("drafted").inc(rec.draft_tokens)
            self._drafted.labels("accepted").inc(rec.draft_accepted)
        if rec.service_ttft_ms is not None:
            self._ttft.observe(rec.service_ttft_ms / 1000)
        if rec.decode_tok_s:
            self._decode.observe(rec.decode_tok_s)
        now = time.monotonic()
        self._samples.append(
            Sample(
                at=now,
                model=rec.model,
                queue_ms=rec.queue_ms,
                prompt_tokens=rec.prompt_tokens,
                service_ttft_ms=rec.service_ttft_ms,
                prompt_tok_s=rec.prompt_tok_s,
                decode_tok_s=rec.decode_tok_s,
                completion_tokens=rec.completion_tokens,
            )
        )
        while self._samples and now - self._samples[0].at > HORIZON_S:
            self._samples.popleft()

    def window(
        self,
        seconds: float,
        *,
        model: str | None = None,
        since: float = 0.0,
        reference_tokens: int | None = None,
    ) -> Window:
        """Requests of the last `seconds` (of `model`, after monotonic time `since`), TTFT
        scaled to `reference_tokens` (the role's reference prompt)."""
        start = max(time.monotonic() - seconds, since)
        picked = [s for s in self._samples if s.at >= start and (model is None or s.model == model)]
        reference = reference_tokens or self.reference_prompt_tokens
        ttft = [t for s in picked if (t := s.ttft_at(reference)) is not None]
        decode = [d for s in picked if (d := s.decode) is not None]
        queue = [s.queue_ms for s in picked]
        return Window(
            seconds=seconds,
            requests=len(picked),
            ttft_samples=len(ttft),
            decode_samples=len(decode),
            ttft_p50_ms=percentile(ttft, 50),
            ttft_p95_ms=percentile(ttft, 95),
            decode_p50_tok_s=statistics.median(decode) if decode else None,
            decode_p95_tok_s=percentile(decode, 5),
            queue_p95_ms=percentile(queue, 95),
        )

    def set_model(self, role: str, model_id: str) -> None:
        """The model now serving `role` (the old series of that role goes)."""
        for labels in list(self._served):
            if labels[0] == role:
                self.model_info.remove(*labels)
                self._served.discard(labels)
        self.model_info.labels(role, model_id).set(1)
        self._served.add((role, model_id))

    def prometheus(self) -> bytes:
        return generate_latest(self.registry)
