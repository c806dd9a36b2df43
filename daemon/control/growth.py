"""Progressive start, second half: while each role serves the rung that arrived quickly
(fetch/quick.py), download its planned rung in the background and, once verified, shift up to
it on the controller's lossless path. A failed download leaves the quick rung serving with a
note and is retried later; its bytes stay in the partial file, so it resumes (after a restart
too) instead of starting over.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from assistantd.fetch.provision import Chosen, ProvisionStatus, fetch_rung
from assistantd.fetch.quick import Growing, Progressive

if TYPE_CHECKING:
    from assistantd.control.controller import Controller
    from assistantd.control.state import DaemonState

log = logging.getLogger("assistantd.growth")

RETRY_S = (30.0, 120.0, 600.0)  # waits before the retries of failed downloads; then the last
POLL_S = 0.5  # how often /status's copy of the download's progress is refreshed


def start(state: DaemonState, progressive: Progressive) -> asyncio.Task[None]:
    """Mark each role's planned rung as on its way (the policy leaves shifting up to it to this
    task, so no second download of it starts), then fetch them in the background."""
    for role, growing in progressive.roles.items():
        control = state.controls.get(role)
        if control is not None:
            control.upcoming = growing.planned
    return asyncio.create_task(_grow(state, progressive), name="progressive")


async def _grow(state: DaemonState, progressive: Progressive) -> None:
    """One download at a time (they share the link), chat first; each shift as soon as its
    file is verified. Failed ones are tried again after a wait that grows."""
    pending: list[Growing] = []
    for growing in progressive.roles.values():
        control = state.controls.get(growing.role)
        if control is None or not control.shifting_allowed:
            growing.state = "failed"
            growing.note = "its own worker did not start, so there is nothing to shift up"
        else:
            pending.append(growing)
    retries = iter(RETRY_S)
    shifts: list[asyncio.Task[None]] = []  # the next download need not wait for a shift
    while pending:
        for growing in list(pending):
            got = await _fetch(state, growing)
            if got is not None:
                pending.remove(growing)
                shift = _shift(state.controls[growing.role], growing, got)
                shifts.append(asyncio.create_task(shift, name=f"grow-{growing.role}"))
        if pending:
            wait = next(retries, RETRY_S[-1])
            for growing in pending:
                growing.note = f"{growing.note}; trying again in {wait:.0f} s"
            await asyncio.sleep(wait)
    await asyncio.gather(*shifts)


async def _fetch(state: DaemonState, growing: Growing) -> Chosen | None:
    """The planned rung's files, verified; None (with the reason noted) if they cannot be had
    now. Stopping the daemon stops the download at its next block."""
    growing.state = "downloading"
    growing.note = None
    fetching = ProvisionStatus(stopping=state.provision.stopping)
    log.info("%s: downloading %s in the background", growing.role, growing.planned.label)
    task = asyncio.ensure_future(
        asyncio.to_thread(fetch_rung, growing.planned, growing.model, fetching)
    )
    while not task.done():
        growing.download = fetching.download
        await asyncio.wait({task}, timeout=POLL_S)
    growing.download = fetching.download
    got = task.result()  # DownloadStopped (shutdown) ends the task
    if got is None:
        why = fetching.notes[-1] if fetching.notes else "the download failed"
        growing.state = "failed"
        growing.note = f"{why}; {growing.quick.label} keeps serving"
        state.provision.notes.append(f"{growing.role}: {growing.note}")
        log.warning("%s: %s", growing.role, growing.note)
    return got


async def _shift(control: Controller, growing: Growing, got: Chosen) -> None:
    """Up to the planned rung on the lossless path, unless the user pinned the role meanwhile
    or a profile edit left it out of the role's ladder."""
    control.upcoming = None
    current = control.current
    assert current is not None and control.plan is not None  # shifting_allowed
    ladder = {c.key for c in control.plan.ladder}
    if current.key == growing.planned.key:
        growing.state = "done"  # `assistantctl use` got there first
        return
    if control.pinned or growing.planned.key not in ladder:
        growing.state = "waiting"
        growing.note = f"{growing.planned.label} is downloaded but not served: " + (
            "the role is pinned (`assistantctl use --auto` hands it back to the policy)"
            if control.pinned
            else "the profile in force no longer allows it or it no longer fits"
        )
        return
    growing.state = "shifting"
    reason = f"planned model downloaded: {current.label} → {growing.planned.label}"
    event = await control.shift_to(growing.planned, "up", reason, got)
    if event.outcome == "done":
        growing.state = "done"
        log.info("%s: now serving the planned %s", growing.role, growing.planned.label)
    else:
        growing.state = "failed"
        growing.note = f"shift up {event.outcome}; {current.label} keeps serving"
