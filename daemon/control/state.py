"""The daemon's run-time state: what is served now, and what has happened.

Owned by the lifecycle (`assistantd.lifecycle`), handed to the HTTP layer and the controller;
the HTTP layer never owns it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from assistantd.api.admission import Admission
from assistantd.control.monitor import Monitor
from assistantd.control.stats import RequestRecord, Stats
from assistantd.control.supervisor import Supervisor
from assistantd.errors import InvalidRequest, ModelNotFound, WorkerUnavailable
from assistantd.fetch.provision import ProvisionStatus
from assistantd.planning.speeds import MeasuredSpeeds
from assistantd.settings import Settings

if TYPE_CHECKING:
    from assistantd.control.controller import Controller


@dataclass
class DaemonState:
    """What the front door needs from the rest of the daemon. Until a model is chosen and
    fetched (no --model), there is no supervisor and `provision` says what is happening."""

    settings: Settings
    admission: Admission
    provision: ProvisionStatus = field(default_factory=ProvisionStatus)
    supervisor: Supervisor | None = None
    model_id: str = ""
    speeds: MeasuredSpeeds | None = None
    speed_key: tuple[str, str, str] | None = None  # set when the model came from the catalog
    stats: Stats = field(default_factory=Stats)
    monitor: Monitor = field(default_factory=Monitor)
    control: Controller | None = None
    # "A request finished": stats, monitor and the policy's controller subscribe here.
    on_finished: list[Callable[[RequestRecord], None]] = field(default_factory=list)
    served_ids: set[str] = field(default_factory=set)  # every id served in this run
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.on_finished.extend([self.stats.record, self.monitor.observe, self._wake_policy])

    def record(self, rec: RequestRecord) -> None:
        """One finished request, told to every subscriber."""
        for hook in self.on_finished:
            hook(rec)

    def _wake_policy(self, rec: RequestRecord) -> None:
        if self.control is not None:
            self.control.wake()

    @property
    def state(self) -> str:
        return self.supervisor.state if self.supervisor else self.provision.state

    @property
    def n_ctx(self) -> int:
        if self.supervisor is None:
            return self.settings.n_ctx or 0  # no model yet: nothing to check against
        return int(self.supervisor.worker_info.get("n_ctx", self.supervisor.spec.n_ctx))

    def require_supervisor(self) -> Supervisor:
        if self.supervisor is None:
            progress = self.provision.download
            detail = (
                f" ({100 * progress.done_bytes / progress.total_bytes:.0f}%)"
                if progress and progress.total_bytes
                else ""
            )
            raise WorkerUnavailable(
                f"no model is loaded yet: assistantd is {self.provision.state}{detail}; "
                "`assistantctl status` shows progress",
                retry_after_s=10,
            )
        return self.supervisor

    def observe_speed(self, tok_s: float, tokens: int) -> None:
        """Measured decode speed replaces the planner's prediction next time it plans."""
        if self.speeds is not None and self.speed_key is not None:
            self.speeds.observe(self.speed_key, tok_s, tokens)

    def check_model(self, requested: str | None) -> None:
        """Any id this daemon has served in this run is accepted (an editor configured before
        a shift keeps working) and answered by the model serving now."""
        self.require_supervisor()
        self.served_ids.add(self.model_id)
        if requested and requested not in self.served_ids:
            raise ModelNotFound(requested, self.model_id)

    def check_n(self, n: int, param: str = "n") -> None:
        """Alternatives each take a slot: no more than the worker has."""
        if n > self.settings.slots:
            raise InvalidRequest(
                f"{param}={n} is more than this daemon's {self.settings.slots} slots; ask for "
                "fewer alternatives or raise ASSISTANT_SLOTS",
                param=param,
            )

    def check_limit(self, max_tokens: int | None, param: str = "max_tokens") -> int | None:
        """A limit beyond the context means "until the context end", as llama-server reads
        it: clients send fixed defaults (Continue 4096) whatever model they talk to."""
        if max_tokens is not None and max_tokens >= self.n_ctx:
            return None
        return max_tokens
