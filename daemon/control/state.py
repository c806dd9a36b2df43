"""The daemon's run-time state: what is served now, and what has happened.

Owned by the lifecycle (`assistantd.lifecycle`), handed to the HTTP layer and the controller;
the HTTP layer never owns it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from assistantd.api.fairness import KeyShare
from assistantd.api.keys import KeyRing
from assistantd.api.keys import load as load_keys
from assistantd.control.cores import CoreShare
from assistantd.control.monitor import Monitor
from assistantd.control.served import Served
from assistantd.control.stats import RequestRecord, Stats
from assistantd.control.upstream import UpstreamRung
from assistantd.errors import ModelNotFound, WorkerUnavailable
from assistantd.fetch.provision import ProvisionStatus
from assistantd.planning.hardware import Machine
from assistantd.settings import Settings
from assistantd.vocab import ROLE_IDS, Role

if TYPE_CHECKING:
    from assistantd.control.controller import Controller


def keys_of(settings: Settings) -> KeyRing:
    single = settings.api_key.get_secret_value() if settings.api_key else None
    return load_keys(single, settings.api_keys_file)


@dataclass
class DaemonState:
    """What the front door needs from the rest of the daemon. Until the models are chosen and
    fetched (no --model), no role is served and `provision` says what is happening."""

    settings: Settings
    provision: ProvisionStatus = field(default_factory=ProvisionStatus)
    # role → the worker serving it; two roles may share one worker (one model, its slots).
    served: dict[Role, Served] = field(default_factory=dict)
    # Why a role has no worker of its own (off, or served by another role's model).
    role_notes: dict[Role, str] = field(default_factory=dict)
    stats: Stats = field(default_factory=Stats)
    monitor: Monitor = field(default_factory=Monitor)
    controls: dict[Role, Controller] = field(default_factory=dict)  # one per worker's role
    # "A request finished": stats, monitor and the policy's controllers subscribe here.
    on_finished: list[Callable[[RequestRecord], None]] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))
    machine: Machine | None = None  # as probed at start: backend and devices for /status
    # role → the team servers serving it, first first (its local worker is the last rung)
    upstreams: dict[Role, list[UpstreamRung]] = field(default_factory=dict)

    def keep_autocomplete_slots(self) -> None:
        """A chat worker that also serves autocomplete keeps one of its slots for it."""
        serving = self.served.get("autocomplete") or self.served.get("chat")
        for served in self.workers:
            shared = served is serving and served.role != "autocomplete"
            served.admission.reserve = 1 if shared and served.admission.capacity >= 2 else 0

    def upstream_rungs(self) -> list[UpstreamRung]:
        return [rung for rungs in self.upstreams.values() for rung in rungs]

    def __post_init__(self) -> None:
        self.cores = CoreShare(lambda: self.workers, enabled=self.settings.share_cores)
        self.keys = keys_of(self.settings)
        self.share = KeyShare(self.settings.key_max_requests)
        self.on_finished.extend([self.stats.record, self.monitor.observe, self._wake_policy])

    def record(self, rec: RequestRecord) -> None:
        """One finished request, told to every subscriber."""
        for hook in self.on_finished:
            hook(rec)

    def _wake_policy(self, rec: RequestRecord) -> None:
        for control in self.controls.values():
            control.wake()

    @property
    def workers(self) -> list[Served]:
        """Each running worker once, the chat role's first."""
        seen: dict[int, Served] = {}
        for served in self.served.values():
            seen.setdefault(id(served), served)
        return list(seen.values())

    @property
    def state(self) -> str:
        """The chat role's worker state (what /health answers); before that, provisioning."""
        chat = self.served.get("chat")
        return chat.supervisor.state if chat else self.provision.state

    def _unavailable(self) -> WorkerUnavailable:
        progress = self.provision.download
        detail = (
            f" ({100 * progress.done_bytes / progress.total_bytes:.0f}%)"
            if progress and progress.total_bytes
            else ""
        )
        return WorkerUnavailable(
            f"no model is loaded yet: assistantd is {self.provision.state}{detail}; "
            "`assistantctl status` shows progress",
            retry_after_s=10,
        )

    def for_role(self, role: Role) -> Served:
        """The worker serving `role`; autocomplete that is off falls back to chat's model."""
        served = self.served.get(role) or self.served.get("chat")
        if served is None:
            raise self._unavailable()
        return served

    def route(self, requested: str | None, role: Role = "chat") -> Served:
        """The worker a request goes to: a role id → that role's worker now; a model id any
        worker served in this run → that worker (an editor configured before a shift keeps
        working); no model → the role the endpoint implies."""
        if not self.served:
            raise self._unavailable()
        if not requested:
            return self.for_role(role)
        if requested in ROLE_IDS:
            return self.for_role(ROLE_IDS[requested])
        for served in self.workers:
            if requested in served.served_ids:
                return served
        if self.settings.any_model_name:
            return self.for_role(role)
        raise ModelNotFound(requested, ", ".join(self.listed_ids()))

    def listed_ids(self) -> list[str]:
        """What /v1/models lists: each served model, then the role ids that resolve now."""
        if not self.served:
            return []
        return [served.model_id for served in self.workers] + list(ROLE_IDS)
