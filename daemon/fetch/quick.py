"""Progressive start, first half: the rung each role serves first when its planned one is not
on disk yet, so a first run answers within about a minute instead of after an 18 GB download.
The second half (download the planned rungs, shift up to each) is control/growth.py.

"Quickly" is a byte bound: the profile's `[start] quick_bytes`, else what the download rate
measured on the planned rung's own first seconds brings in `quick_s`. The roles share it, in
order (chat first), and a file two roles use counts once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistantd.errors import AssistantError, DownloadStopped
from assistantd.fetch import hub
from assistantd.fetch.download import Downloader, Progress, partial_path, repo_dir
from assistantd.planning.catalog import CatalogModel
from assistantd.planning.plan_types import Candidate
from assistantd.planning.profiles import Start
from assistantd.planning.roles import RolesPlan
from assistantd.vocab import GrowState, Role

log = logging.getLogger("assistantd.quick")

PROBE_S = 3.0  # seconds of the planned rung's own download that measure the rate


@dataclass
class Growing:
    """One role on its way from the rung it serves first to the planned one."""

    role: Role
    quick: Candidate
    planned: Candidate
    model: CatalogModel  # the planned rung's catalog entry: what to download
    state: GrowState = "waiting"
    download: Progress | None = None
    note: str | None = None

    def to_json(self) -> dict[str, Any]:
        download: dict[str, Any] | None = None
        if self.download is not None:
            done, total = self.download.done_bytes, self.download.total_bytes
            download = {
                **self.download.to_json(),
                "percent": round(100 * done / total, 1) if total else None,
            }
        done_now = self.state == "done"
        return {
            "serving": (self.planned if done_now else self.quick).label,
            "next": None if done_now else self.planned.label,
            "state": self.state,
            "download": download,
            "note": self.note,
        }


@dataclass
class Progressive:
    """What /status shows of a progressive start: the bound, and each role's way up."""

    quick_bytes: int
    rate_bps: float | None  # measured at start; None when the profile fixed quick_bytes
    roles: dict[Role, Growing] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "quick_bytes": self.quick_bytes,
            "rate_bytes_per_s": round(self.rate_bps) if self.rate_bps is not None else None,
            "roles": {role: growing.to_json() for role, growing in self.roles.items()},
        }


def needed_bytes(candidate: Candidate, model: CatalogModel, cache: Path) -> int:
    """Bytes a rung still needs: 0 when on disk (the starter: in its wheel); what its partial
    files lack when the hub's file list is known; else the plan's size for it."""
    if model.starter:
        return 0
    remote = hub.cached(cache, model.repo, candidate.quant)
    if remote is None:
        return candidate.file_bytes
    root = repo_dir(cache, model.repo)
    left = 0
    for file in remote.files:
        if (root / "blobs" / file.sha256).exists():  # placed only once verified
            continue
        part = partial_path(root, file)
        left += file.size - (part.stat().st_size if part.exists() else 0)
    return max(left, 0)


class _Measured(Exception):
    """Ends the probe from its progress callback; the bytes stay in the partial file."""


def measure_rate(
    candidate: Candidate,
    model: CatalogModel,
    cache: Path,
    stop: threading.Event,
    on_progress: Callable[[Progress], None] | None = None,
) -> float | None:
    """Bytes per second over the first seconds of the planned rung's own download: what
    arrives stays in its resumable partial file, so measuring transfers nothing twice.
    None when the hub does not answer."""
    try:
        remote = hub.cached(cache, model.repo, candidate.quant) or hub.resolve(
            model.repo, candidate.quant, cache_dir=cache
        )
    except AssistantError:
        return None
    deadline = time.monotonic() + PROBE_S

    def probe(progress: Progress) -> None:
        if on_progress is not None:
            on_progress(progress)
        if time.monotonic() >= deadline:
            raise _Measured

    downloader = Downloader(cache=cache, on_progress=probe, stop=stop)
    try:
        downloader.fetch(remote)
    except _Measured:
        pass
    except DownloadStopped:
        raise
    except AssistantError as exc:
        log.warning("download rate not measured: %s", exc.message)
        return None
    return downloader.progress.rate_bps


def choose(
    result: RolesPlan,
    ladders: dict[Role, list[Candidate]],
    catalog: dict[str, CatalogModel],
    start: Start,
    cache: Path,
    *,
    stop: threading.Event,
    on_progress: Callable[[Progress], None] | None = None,
) -> Progressive | None:
    """Each role's first rung where its planned one would not arrive quickly. None when the
    profile turns this off, or every planned rung is on disk or arrives within the bound.
    `ladders`: per role with a worker of its own, the planned rung first, then smaller ones."""
    if not start.progressive:
        return None
    planned = {role: ladder[0] for role, ladder in ladders.items() if ladder}
    waiting = [r for r, c in planned.items() if needed_bytes(c, catalog[c.model], cache) > 0]
    if not waiting:
        return None
    rate: float | None = None
    if start.quick_bytes is not None:
        bound = int(start.quick_bytes)
    else:
        first = planned[waiting[0]]
        rate = measure_rate(first, catalog[first.model], cache, stop, on_progress)
        if rate is None:
            return None  # the hub does not answer: provision's offline path takes over
        bound = int(rate * start.quick_s)
    progressive = Progressive(quick_bytes=bound, rate_bps=rate)
    allowance = bound
    counted: set[tuple[str, str]] = set()  # files reckoned with already (one file, two roles)

    def cost(c: Candidate) -> int:
        model = catalog[c.model]
        return 0 if (model.repo, c.quant) in counted else needed_bytes(c, model, cache)

    for role, ladder in ladders.items():
        if not ladder:
            continue
        costs = [(cost(c), c) for c in _keeping_fim(result, role, ladder, catalog)]
        within = [c for n, c in costs if n <= allowance]
        pick = within[0] if within else min(costs, key=lambda nc: nc[0])[1]
        allowance -= cost(pick)
        counted.add((catalog[pick.model].repo, pick.quant))
        if pick.key != ladder[0].key:
            model = catalog[ladder[0].model]
            progressive.roles[role] = Growing(role, pick, ladder[0], model)
    return progressive if progressive.roles else None


def _keeping_fim(
    result: RolesPlan, role: Role, ladder: list[Candidate], catalog: dict[str, CatalogModel]
) -> list[Candidate]:
    """Autocomplete rides on chat's worker: chat's first rung keeps FIM tokens if one can."""
    if role != "chat" or result.roles["autocomplete"].served_by != "chat":
        return ladder
    return [c for c in ladder if catalog[c.model].fim] or ladder
