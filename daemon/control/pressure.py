"""Memory pressure across roles: when another program takes the memory the workers were
planned in, one role gives some back, in a stated order: embeddings first (an editor can
re-index later), then the role with the most headroom against its targets (it loses least).
One role per check; the next check sees the result."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import psutil

from assistantd.control.monitor import Window
from assistantd.planning.hardware import refresh_free
from assistantd.planning.plan_types import ram_left
from assistantd.planning.profiles import Profile

if TYPE_CHECKING:
    from assistantd.control.controller import Controller
    from assistantd.control.state import DaemonState

log = logging.getLogger("assistantd.pressure")


def headroom(profile: Profile, window: Window) -> float:
    """How far the measured window is from the role's targets (1.0: exactly at them; no
    measurements: 1.0). The larger, the less a smaller model would hurt."""
    targets = profile.targets
    ratios = []
    if window.decode_p50_tok_s is not None and targets.decode_tok_s:
        ratios.append(window.decode_p50_tok_s / targets.decode_tok_s)
    if window.ttft_p95_ms:
        ratios.append(targets.ttft_p95_ms / window.ttft_p95_ms)
    return min(ratios) if ratios else 1.0


def order(judged: dict[str, tuple[Profile, Window]]) -> list[str]:
    """The roles in the order they give memory back: embeddings first, then the most
    headroom against their own targets first."""
    return sorted(judged, key=lambda r: (r != "embeddings", -headroom(*judged[r])))


class MemoryWatch:
    def __init__(self, state: DaemonState) -> None:
        self.state = state

    def _controls(self) -> list[Controller]:
        return [c for c in self.state.controls.values() if c.shifting_allowed and c.current]

    def short_by(self) -> int:
        """Bytes the planned rungs need beyond what is free now plus what the workers hold
        (0: they fit). Cheap: no re-plan."""
        controls = self._controls()
        if not controls:
            return 0
        profile = controls[0].profile
        memory = profile.memory
        planned = sum(c.current.ram_bytes for c in controls if c.current)
        if memory.ram_budget is not None:
            ram = int(memory.ram_budget)
        else:
            held = sum(c.worker_rss() for c in controls)
            now = psutil.virtual_memory()
            ram = ram_left(
                now.total, now.available + held, memory.ram_reserve, memory.ram_reserve_share
            )
        short = max(planned - ram, 0)
        machine = controls[0].machine
        uses_gpu = any(c.current and c.current.vram_bytes for c in controls)
        if uses_gpu and memory.vram_budget is None and machine is not None:
            reserve = int(memory.vram_reserve)
            gpus = refresh_free(machine).gpus
            short += sum(max(reserve - g.free_bytes, 0) for g in gpus)
        return short

    async def run(self) -> None:
        while True:
            controls = self._controls()
            interval = controls[0].profile.shift.memory_check_s if controls else 5.0
            await asyncio.sleep(interval)
            try:
                await self.check()
            except Exception:  # the watch must never take the daemon down
                log.exception("memory check failed")

    async def check(self) -> str | None:
        """Relieve pressure by one role; returns the role that shifted, if any."""
        short = self.short_by()
        if not short:
            return None
        controls = self._controls()
        windows: dict[str, Window] = {
            c.role: self.state.monitor.window(
                c.view.shift.window_s,
                model=c.served.model_id,
                reference_tokens=c.view.targets.reference_prompt_tokens,
            )
            for c in controls
        }
        by_role: dict[str, Controller] = {c.role: c for c in controls}
        for role in order({c.role: (c.view, windows[c.role]) for c in controls}):
            control = by_role[role]
            why = (
                f"{short / 2**30:.1f} GiB short; {control.role} gives way first "
                f"(embeddings first, then the role with most headroom: "
                f"{headroom(control.view, windows[control.role]):.2f}× its targets)"
            )
            if await control.relieve(why):
                return control.role
        return None
