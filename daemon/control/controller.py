"""Runs the policy for one role against the live daemon: applies the profile (and its edits,
watched with watchfiles) and shifts the role's worker along the role's own ladder, judged on
the role's own window and targets. Memory pressure across roles is `pressure.py`'s.

Every shift is an event with its reason, shown in /status. A bad profile edit never stops the
daemon: the previous profile stays in force and the error (file:line) is shown until fixed.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchfiles import awatch

from assistantd.control import policy
from assistantd.control.policy import ShiftEvent
from assistantd.errors import ProfileError, ShiftRefused, WorkerStartFailed
from assistantd.fetch.provision import Chosen, fetch_rung
from assistantd.planning import profiles
from assistantd.planning.catalog import CatalogModel, load_catalog
from assistantd.planning.hardware import Machine, refresh_free
from assistantd.planning.plan_types import without
from assistantd.planning.planner import Candidate, Plan, gib, make_plan, profile_budget
from assistantd.planning.profiles import Profile
from assistantd.planning.worker_devices import worker_devices
from assistantd.vocab import Role, ShiftDirection
from assistantd.worker.memory import resident_bytes

if TYPE_CHECKING:
    from assistantd.control.served import Served
    from assistantd.control.state import DaemonState

log = logging.getLogger("assistantd.controller")


class Controller:
    """Owns one role's worker: the profile in force and, when assistantd chose the model
    itself, the role's ladder."""

    def __init__(
        self,
        state: DaemonState,
        role: Role,
        profile: Profile,
        *,
        machine: Machine | None = None,
        plan: Plan | None = None,
        current: Candidate | None = None,
    ) -> None:
        self.state = state
        self.role = role
        self.settings = state.settings
        self.profile = profile
        self.profile_ref = self.settings.profile
        self.profile_error: dict[str, Any] | None = None
        self.machine = machine
        self.plan = plan
        self.current = current
        self.pinned = False
        self.upcoming: Candidate | None = None  # downloading to shift up to (control/growth.py)
        self.note: str | None = None
        self.events: collections.deque[ShiftEvent] = collections.deque(maxlen=20)
        self.last_shift = time.monotonic()
        self._wake = asyncio.Event()
        self._shift_lock = asyncio.Lock()
        self._tasks: list[asyncio.Task[None]] = []
        self._watch_task: asyncio.Task[None] | None = None
        self._catalog: dict[str, CatalogModel] = {}
        if plan is not None:
            self._catalog = {m.id: m for m in load_catalog(self.settings.catalog)}

    @property
    def shifting_allowed(self) -> bool:
        """False when the user named a model file: that pins it for the daemon's life."""
        return self.plan is not None and self.current is not None

    @property
    def served(self) -> Served:
        return self.state.served[self.role]

    @property
    def view(self) -> Profile:
        """The profile as this role reads it (its targets, models, prefer, context)."""
        return self.profile.for_role(self.role)

    def start(self, *, watch_profile: bool = True) -> None:
        """Policy for this role; the profile watcher runs once (the chat role's)."""
        if watch_profile:
            self._watch_task = asyncio.create_task(self._watch_profile(), name="profile-watch")
        if self.shifting_allowed:
            self._tasks.append(asyncio.create_task(self._policy_loop(), name=f"policy-{self.role}"))

    async def stop(self) -> None:
        tasks = [*self._tasks, *([self._watch_task] if self._watch_task else [])]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def wake(self) -> None:
        """A request finished: there is something new to judge."""
        self._wake.set()

    # -- profile ---------------------------------------------------------------------------

    async def _watch_profile(self) -> None:
        """Re-read the profile when its file (or a user copy that would override it) changes.
        inotify/FSEvents underneath: no polling while idle."""
        while True:
            path = self.profile.path
            folders = {path.parent} if path else set()
            if not self.profile_ref.endswith(".toml"):
                user = profiles.user_dir(self.settings.config_dir)
                with contextlib.suppress(OSError):
                    user.mkdir(parents=True, exist_ok=True)
                    folders.add(user)
            names = {f"{self.profile_ref}.toml", path.name if path else ""}
            ref = self.profile_ref
            async for changes in awatch(*folders, debounce=400, step=100, recursive=False):
                if any(Path(p).name in names for _, p in changes):
                    for control in self.state.controls.values():
                        await control.reload()  # each role applies its own section
                if self.profile_ref != ref:
                    break  # switched profile: watch the new file

    async def reload(self) -> bool:
        """Re-read the active profile; on error keep the old one and say where the error is."""
        try:
            profile = profiles.active_profile(self.settings, self.profile_ref)
        except ProfileError as exc:
            self.profile_error = {
                "message": exc.message,
                "path": exc.path,
                "line": exc.line,
                "at": time.time(),
            }
            log.error("profile not applied, still using the previous one: %s", exc.message)
            return False
        log.info("profile %s (%s) applied", profile.name, profile.path)
        await self.apply(profile)
        return True

    async def switch_profile(self, ref: str) -> Profile:
        """`assistantctl profile NAME`: raises ProfileError (nothing changes) if it is bad."""
        profile = profiles.active_profile(self.settings, ref)
        for control in self.state.controls.values():
            control.profile_ref = ref
            await control.apply(profile)
        return profile

    async def apply(self, profile: Profile) -> None:
        self.profile = profile
        self.profile_error = None
        if self.role == "chat":
            self.state.monitor.reference_prompt_tokens = profile.targets.reference_prompt_tokens
        if not self.shifting_allowed:
            return
        assert self.current is not None
        fresh = await asyncio.to_thread(self._replan)
        same = next((c for c in fresh.ladder if c.key == self.current.key), None)
        if same is None:
            target = self._nearest_below(fresh, self.current)
            if target is None:
                self.note = f"the new profile leaves no model that fits; kept {self.current.label}"
                return
            rejected = next((c for c in fresh.candidates if c.key == self.current.key), None)
            why = rejected.reason if rejected else "not allowed by the profile"
            self.pinned = False
            await self.shift_to(
                target,
                "profile",
                f"profile {profile.name}: {self.current.label} {why}: "
                f"{self.current.label} → {target.label}",
            )
        elif (same.n_ctx, same.n_gpu_layers) != (self.current.n_ctx, self.current.n_gpu_layers):
            await self.shift_to(
                same,
                "profile",
                f"profile {profile.name}: context {self.current.n_ctx} → {same.n_ctx}, "
                f"GPU layers {self.current.n_gpu_layers} → {same.n_gpu_layers}",
            )
        else:
            self.current = same
        self.wake()

    # -- planning --------------------------------------------------------------------------

    def worker_rss(self) -> int:
        sup = self.served.supervisor
        pid = sup.worker.pid if sup.worker and not sup.worker.exited else None
        return resident_bytes(pid) or 0

    def _replan(self) -> Plan:
        """This role's ladder in the budget all roles share, less the other roles' rungs as
        the joint plan counts them: free memory plus what every worker holds (a swap frees
        its own), or the profile's fixed budget."""
        assert self.machine is not None and self.current is not None
        controls = [c for c in self.state.controls.values() if c.current is not None]
        budget = profile_budget(
            self.view,
            refresh_free(self.machine),
            ram_bonus=sum(c.worker_rss() for c in controls),
            vram_bonus=sum(c.current.vram_bytes for c in controls if c.current),
        )
        for other in controls:
            if other is not self and other.current is not None:
                budget = without(budget, other.current)
        fresh = make_plan(
            list(self._catalog.values()),
            self.view,
            self.machine,
            self.served.speeds,
            n_slots=self.served.slots,
            role=self.role,
            budget=budget,
        )
        self.plan = fresh
        return fresh

    @staticmethod
    def _nearest_below(fresh: Plan, current: Candidate) -> Candidate | None:
        """The best-ranked fitting rung no bigger than `current`, else the best that fits."""
        smaller = [c for c in fresh.ladder if c.file_bytes <= current.file_bytes]
        return smaller[0] if smaller else (fresh.ladder[0] if fresh.ladder else None)

    # -- the policy ------------------------------------------------------------------------

    async def _policy_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self.pinned or self._shift_lock.locked():
                continue
            try:
                await self._evaluate()
            except Exception:  # the policy must never take the daemon down
                log.exception("policy evaluation failed")

    async def _evaluate(self) -> None:
        assert self.plan is not None and self.current is not None
        view = self.view
        window = self.state.monitor.window(
            view.shift.window_s,
            model=self.served.model_id,
            since=self.last_shift,
            reference_tokens=view.targets.reference_prompt_tokens,
        )
        decision = policy.decide(
            view,
            self.plan.ladder,
            self.current,
            window,
            since_last_shift_s=time.monotonic() - self.last_shift,
        )
        if decision is None:
            return
        if decision.target is None:
            if self.note != decision.reason:
                self.note = decision.reason
                log.warning("%s", decision.reason)
            return
        if decision.direction == "up":
            if self.upcoming is not None:
                return  # its download shifts up when it is verified; no second download
            fresh = await asyncio.to_thread(self._replan)  # must fit memory now
            if decision.target.key not in {c.key for c in fresh.ladder}:
                return
        await self.shift_to(decision.target, decision.direction, decision.reason)

    async def relieve(self, why: str) -> bool:
        """Memory is short: move this role to what fits now (fewer GPU layers or a smaller
        rung). False when it already fits or nothing smaller does."""
        if self.current is None or not self.shifting_allowed or self._shift_lock.locked():
            return False
        fresh = await asyncio.to_thread(self._replan)
        same = next((c for c in fresh.ladder if c.key == self.current.key), None)
        if same is not None and same.n_gpu_layers == self.current.n_gpu_layers:
            return False
        target = same or self._nearest_below(fresh, self.current)
        if target is None:
            self.note = "memory is short and no smaller model fits"
            return False
        budget = fresh.budget
        self.pinned = False
        await self.shift_to(
            target,
            "memory",
            f"memory ({why}): free RAM budget now {gib(budget.ram_bytes)}, VRAM "
            f"{gib(budget.vram_bytes)}; {self.current.label} ({self.current.placement}) → "
            f"{target.label} ({target.placement})",
        )
        return True

    # -- shifting --------------------------------------------------------------------------

    async def shift_to(
        self, target: Candidate, direction: ShiftDirection, reason: str, got: Chosen | None = None
    ) -> ShiftEvent:
        """Serve `target` (its files `got`, if fetched) instead; nothing admitted fails."""
        assert self.current is not None
        async with self._shift_lock:
            started = time.monotonic()
            event = ShiftEvent(direction, reason, self.current.label, target.label)
            self.events.append(event)
            log.info("shift %s: %s", direction, reason)
            model = self._catalog[target.model]
            chosen = got or await asyncio.to_thread(fetch_rung, target, model, self.state.provision)
            if chosen is None:
                event.outcome = "failed: the model could not be fetched (see provision notes)"
                return event
            served = self.served
            sup = served.supervisor
            spec = dataclasses.replace(
                sup.spec,
                model_path=chosen.path,
                model_id=chosen.model_id,
                n_ctx=target.n_ctx,
                n_gpu_layers=target.n_gpu_layers,
                n_cpu_moe=target.n_cpu_moe,
                # The plan's draft was paired with the planned rung; the user's stays.
                draft_model=self.state.settings.draft_model if self.role == "chat" else None,
                **worker_devices(target.devices, self.machine or self.state.machine).fields(),
            )
            try:
                await sup.swap(spec, overlap=self._both_fit(target))
            except WorkerStartFailed as exc:
                event.outcome = f"failed: {exc.message}"
                log.error("shift failed: %s", exc.message)
                self.last_shift = time.monotonic()
                return event
            served.now_serving(chosen.model_id, chosen.speed_key)
            served.estimate = target.devices
            self.state.monitor.set_model(self.role, chosen.model_id)
            self.state.monitor.shifts.labels(direction).inc()
            self.current = target
            self.note = None
            self.last_shift = time.monotonic()
            event.switch_s = round(self.last_shift - started, 3)
            event.outcome = "done"
            return event

    def _both_fit(self, target: Candidate) -> bool:
        """Can the new worker start before the old one stops? (overlap, else drain first)"""
        assert self.current is not None and self.plan is not None
        budget = self.plan.budget
        ram = self.current.ram_bytes + target.ram_bytes <= budget.ram_bytes
        vram = self.current.vram_bytes + target.vram_bytes <= max(budget.vram_bytes, 0)
        return ram and vram

    # -- manual control ----------------------------------------------------------------------

    async def use(self, ref: str | None) -> ShiftEvent | None:
        """`assistantctl use MODEL[:QUANT]` pins a rung; None (`--auto`) hands control back."""
        if not self.shifting_allowed:
            raise ShiftRefused(
                "assistantd was started with --model FILE, which fixes the model; restart it "
                "without --model to let it choose, shift and take `assistantctl use`"
            )
        assert self.plan is not None and self.current is not None
        if ref is None:
            self.pinned = False
            self.note = None
            self.wake()
            return None
        model, _, quant = ref.partition(":")
        fresh = await asyncio.to_thread(self._replan)
        matches = [c for c in fresh.candidates if c.model == model]
        if not matches:
            known = sorted({c.model for c in fresh.candidates})
            raise ShiftRefused(
                f"no model '{model}' in the catalog; choose one of {', '.join(known)}"
            )
        if quant:
            matches = [c for c in matches if c.quant == quant.upper()]
            if not matches:
                quants = sorted({c.quant for c in fresh.candidates if c.model == model})
                raise ShiftRefused(f"{model} has no quant {quant}; it comes in {', '.join(quants)}")
        fitting = [c for c in fresh.ladder if c in matches]
        if not fitting:
            raise ShiftRefused(f"{matches[0].label} does not fit now: {matches[0].reason}")
        target = fitting[0]
        self.pinned = True
        if target.key == self.current.key and target.n_ctx == self.current.n_ctx:
            return None
        return await self.shift_to(target, "pin", f"pinned by `assistantctl use {ref}`")

    def to_json(self) -> dict[str, Any]:
        profile = self.view
        targets = profile.targets
        window = self.state.monitor.window(
            profile.shift.window_s,
            model=self.served.model_id,
            reference_tokens=targets.reference_prompt_tokens,
        )
        return {
            "role": self.role,
            "mode": (
                "pinned"
                if self.pinned
                else ("auto" if self.shifting_allowed else "fixed (--model FILE)")
            ),
            "current": self.current.label if self.current else self.served.model_id,
            "placement": self.current.placement if self.current else None,
            "note": self.note,
            "profile": {**self.profile.summary(), "error": self.profile_error},
            "latency": policy.latency_json(profile, window),
            "shifts": [asdict(e) for e in reversed(self.events)],
            "ladder": [c.label for c in self.plan.ladder] if self.plan else [],
        }
