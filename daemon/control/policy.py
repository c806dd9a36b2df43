"""When to move along the ladder: pure decisions from targets, a window of measurements and the
ladder, so they can be reasoned about (and tested) without a running model.

- Down: the window holds enough requests and its median decode speed is under the target or
  its p95 TTFT over it → the best-ranked rung with a smaller file.
- Up: after the cooldown, the best-ranked bigger rung whose predicted speed (measured on this
  machine if it ever ran, else scaled from the current rung by file size) keeps the targets
  with `hysteresis` to spare. The margin is what stops flapping: a rung just left for missing a
  target is predicted to miss it again.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Literal

from assistantd.control.monitor import Window, format_ms
from assistantd.planning.planner import Candidate
from assistantd.planning.profiles import Profile
from assistantd.vocab import ShiftDirection


@dataclass
class ShiftEvent:
    """A shift as /status shows it: what, why, and how it went."""

    direction: ShiftDirection
    reason: str
    from_model: str
    to_model: str
    outcome: str = "shifting"  # shifting | done | failed: …
    switch_s: float | None = None  # decision → new model serving
    at: float = field(default_factory=time.time)


@dataclass(frozen=True)
class Decision:
    target: Candidate | None  # None: the targets are missed but there is nowhere to go
    direction: Literal["down", "up"]
    reason: str


def latency_json(profile: Profile, window: Window) -> dict[str, Any]:
    """A latency window beside the targets it is judged against, as /status shows it."""
    targets = profile.targets
    return {
        **window.to_json(),
        "target_ttft_p95_ms": targets.ttft_p95_ms,
        "reference_prompt_tokens": targets.reference_prompt_tokens,
        "target_decode_tok_s": targets.decode_tok_s,
        "missing": misses(profile, window),
    }


def misses(profile: Profile, window: Window) -> list[str]:
    """Which targets the window misses, in words; empty if met or too few requests to say."""
    targets, need = profile.targets, profile.shift.min_requests
    found = []
    if (
        window.decode_samples >= need
        and window.decode_p50_tok_s is not None
        and window.decode_p50_tok_s < targets.decode_tok_s
    ):
        found.append(
            f"median decode {window.decode_p50_tok_s:.1f} tok/s < {targets.decode_tok_s:g} tok/s"
        )
    if (
        window.ttft_samples >= need
        and window.ttft_p95_ms is not None
        and window.ttft_p95_ms > targets.ttft_p95_ms
    ):
        found.append(f"p95 TTFT {format_ms(window.ttft_p95_ms)} > {format_ms(targets.ttft_p95_ms)}")
    if found:
        found[-1] += f" over {window.seconds:g} s"
    return found


def decide(
    profile: Profile,
    ladder: list[Candidate],
    current: Candidate,
    window: Window,
    *,
    since_last_shift_s: float,
) -> Decision | None:
    """A shift to make now, or None."""
    if since_last_shift_s < profile.shift.cooldown_s:
        return None
    missed = misses(profile, window)
    if missed:
        smaller = [c for c in ladder if c.file_bytes < current.file_bytes]
        target = smaller[0] if smaller else None
        why = "; ".join(missed)
        if target is None:
            return Decision(None, "down", f"{why}, but {current.label} is the smallest rung")
        return Decision(target, "down", f"{why}: {current.label} → {target.label}")
    return _up(profile, ladder, current, window)


def _up(
    profile: Profile, ladder: list[Candidate], current: Candidate, window: Window
) -> Decision | None:
    need = profile.shift.min_requests
    if window.decode_samples < need or window.decode_p50_tok_s is None:
        return None  # no evidence of headroom yet
    rank = {c.key: i for i, c in enumerate(ladder)}
    here = rank.get(current.key, len(ladder))
    margin = 1 + profile.shift.hysteresis
    targets = profile.targets
    for candidate in ladder[:here]:
        if candidate.file_bytes <= current.file_bytes:
            continue
        ratio = candidate.file_bytes / current.file_bytes
        decode = (
            candidate.predicted_tok_s
            if candidate.speed_measured
            else window.decode_p50_tok_s / ratio
        )
        if decode < targets.decode_tok_s * margin:
            continue
        ttft = window.ttft_p95_ms * ratio if window.ttft_p95_ms is not None else None
        if ttft is not None and ttft * margin > targets.ttft_p95_ms:
            continue
        return Decision(
            candidate,
            "up",
            f"headroom: median decode {window.decode_p50_tok_s:.1f} tok/s, "
            f"{candidate.label} predicted {decode:.1f} tok/s ≥ {targets.decode_tok_s:g} tok/s "
            f"+{profile.shift.hysteresis:.0%}: {current.label} → {candidate.label}",
        )
    return None
