"""A team's server as the first rung of a role: requests go there while it answers and keeps
the role's targets; when it fails or gets slow they go to the local rung (kept running as the
fallback), and after the cooldown, once health checks pass and a measured probe keeps the
targets with the usual headroom, back up. Every shift says why, in the role's shift list.

The rung leases like a local worker (`lease()` → client, spec, release), so the proxy path is
one for both.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

from assistantd.api.admission import Admission
from assistantd.api.upstream_client import UpstreamClient
from assistantd.control import policy
from assistantd.control.monitor import Monitor
from assistantd.control.policy import ShiftEvent
from assistantd.errors import UpstreamUnavailable
from assistantd.planning.profiles import Profile

log = logging.getLogger("assistantd.upstream")

HEALTH_EVERY_S = 2.0
FAILURES_TO_SHIFT = 1  # a failure before the first byte already sends the next requests local
PROBE_TOKENS = 16


@dataclass(frozen=True)
class UpstreamSpec:
    """What a lease on the upstream carries, like a WorkerSpec does."""

    model_id: str  # the label its requests are measured under: model@host


class UpstreamLease:
    def __init__(self, client: UpstreamClient, spec: UpstreamSpec) -> None:
        self.client = client
        self.spec = spec

    def release(self) -> None:
        return None


@dataclass
class UpstreamState:
    url: str
    model: str | None = None
    models: list[str] = field(default_factory=list)
    healthy: bool = False
    in_use: bool = False
    last_error: str | None = None
    last_check: float | None = None
    probe: dict[str, float] | None = None  # last measured probe: ttft_ms, decode_tok_s
    about: dict[str, Any] = field(default_factory=dict)  # its kind, its roles' models or file


# Words in a model id that say which role it is for (an assistantd lists assistantd-<role>).
ROLE_WORDS: dict[str, tuple[str, ...]] = {
    "chat": ("chat", "instruct"),
    "autocomplete": ("autocomplete", "fim", "coder"),
    "embeddings": ("embed",),
}


def pick_model(models: list[str], role: str, wanted: str | None) -> str | None:
    """The model asked for when listed; else the first whose id names the role; else the first."""
    if wanted and wanted in models:
        return wanted
    for word in ROLE_WORDS.get(role, ()):
        for model in models:
            if word in model.lower():
                return model
    return models[0] if models else None


class UpstreamRung:
    """One upstream serving one role, ahead of the role's local worker (and of any upstream
    listed after it)."""

    def __init__(
        self,
        url: str,
        api_key: str | None,
        *,
        role: str,
        profile: Profile,
        monitor: Monitor,
        slots: int,
        queue_size: int,
        queue_timeout_s: float,
        model: str | None = None,
    ) -> None:
        self.role = role
        self.profile = profile
        self.monitor = monitor
        self._key = api_key
        self.state = UpstreamState(url=url.rstrip("/"), model=model)
        self._wanted = model
        self.client = UpstreamClient(url, api_key, model or "")
        self.admission = Admission(slots, queue_size, queue_timeout_s)
        self.events: list[ShiftEvent] = []
        self._since = time.monotonic()  # measurements count from the last shift
        self._last_shift = 0.0
        self._task: asyncio.Task[None] | None = None

    @property
    def label(self) -> str:
        return f"{self.state.model or '?'}@{urlsplit(self.state.url).netloc}"

    @property
    def in_use(self) -> bool:
        return self.state.in_use

    async def lease(self, timeout_s: float) -> UpstreamLease:
        return UpstreamLease(self.client, UpstreamSpec(self.label))

    # -- health and shifting -----------------------------------------------------------------

    async def start(self) -> None:
        """First contact: its models; it serves the role at once if it answers."""
        await self.check()
        if self.state.healthy:
            self.state.about = await self.client.about()
            self._shift(True, f"upstream {self.state.url} answers: serving {self.role} there")
        self._task = asyncio.create_task(self._watch(), name=f"upstream-{self.role}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.client.aclose()

    async def check(self) -> bool:
        try:
            models = await self.client.models()
        except UpstreamUnavailable as exc:
            self.state.healthy, self.state.last_error = False, exc.message
            return False
        finally:
            self.state.last_check = time.time()
        self.state.models = models
        self.state.model = pick_model(models, self.role, self._wanted)
        self.client.model = self.state.model or ""
        self.state.healthy = bool(models)
        return self.state.healthy

    def failed(self, why: str) -> None:
        """A request failed before its first byte: the next ones go local."""
        self.state.last_error = why
        if self.state.in_use:
            self._shift(False, f"upstream {self.state.url} failed: {why}")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(HEALTH_EVERY_S)
            try:
                await self._step()
            except Exception:  # the watch must never take the daemon down
                log.exception("upstream check failed")

    async def _step(self) -> None:
        healthy = await self.check()
        if self.state.in_use:
            if not healthy:
                self._shift(False, f"upstream {self.state.url} is unreachable: "
                            f"{self.state.last_error}")  # fmt: skip
                return
            missed = self._misses()
            if missed:
                self._shift(False, f"upstream {self.label} misses the targets: {missed}")
            return
        cooldown = self.profile.shift.cooldown_s
        if healthy and time.monotonic() - self._last_shift >= cooldown:
            ok, measured = await self._probe()
            if ok:
                self._shift(
                    True,
                    f"upstream {self.label} answers health checks and keeps the targets "
                    f"with {self.profile.shift.hysteresis:.0%} headroom ({measured})",
                )

    def _misses(self) -> str:
        shift = self.profile.shift
        window = self.monitor.window(
            shift.window_s,
            model=self.label,
            since=self._since,
            reference_tokens=self.profile.targets.reference_prompt_tokens,
        )
        return "; ".join(policy.misses(self.profile, window))

    async def _probe(self) -> tuple[bool, str]:
        """A short measured answer: its time to first token and decode speed against the
        targets, with the hysteresis margin a shift up needs. Embeddings: one vector back."""
        if self.role == "embeddings":
            started = time.perf_counter()
            try:
                await self.client.embed(["def probe(): pass"])
            except UpstreamUnavailable as exc:
                self.state.last_error = exc.message
                return False, ""
            took_ms = (time.perf_counter() - started) * 1000
            self.state.probe = {"ttft_ms": round(took_ms, 1)}
            return True, f"probe: a vector in {took_ms:.0f} ms"
        params = {"prompt": "1, 2, 3, 4,", "max_tokens": PROBE_TOKENS, "temperature": 0}
        try:
            stream = await self.client.open_generation(uuid.uuid4().hex, "completion", params)
            end: dict[str, Any] = {}
            try:
                async for event in stream.events():
                    if event["type"] == "end":
                        end = event
            finally:
                await stream.finish()
        except Exception as exc:
            self.state.last_error = str(exc)
            return False, ""
        timings = end.get("timings", {})
        ttft = float(timings.get("prompt_ms", 0.0))
        tok_s = float(timings.get("predicted_per_second", 0.0))
        self.state.probe = {"ttft_ms": round(ttft, 1), "decode_tok_s": round(tok_s, 1)}
        targets, margin = self.profile.targets, 1 + self.profile.shift.hysteresis
        ok = tok_s >= targets.decode_tok_s * margin and ttft * margin <= targets.ttft_p95_ms
        return ok, f"probe: first token {ttft:.0f} ms, {tok_s:.1f} tok/s"

    def _shift(self, up: bool, reason: str) -> None:
        if self.state.in_use == up:
            return
        self.state.in_use = up
        self._since = self._last_shift = time.monotonic()
        local = "the local model"
        event = ShiftEvent(
            "up" if up else "down",
            reason,
            local if up else self.label,
            self.label if up else local,
            outcome="done",
            switch_s=0.0,
        )
        self.events.append(event)
        del self.events[:-20]
        log.info("%s: shift %s: %s", self.role, event.direction, reason)

    def to_json(self) -> dict[str, Any]:
        """What /status shows: never the key."""
        window = self.monitor.window(
            self.profile.shift.window_s,
            model=self.label,
            reference_tokens=self.profile.targets.reference_prompt_tokens,
        )
        return {
            **asdict(self.state),
            "role": self.role,
            "serving": self.role if self.state.in_use else None,
            "label": self.label,
            "latency": policy.latency_json(self.profile, window),
            "shifts": [asdict(e) for e in reversed(self.events)],
        }
