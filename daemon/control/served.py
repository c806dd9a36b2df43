"""One worker as the front door sees it: the model it serves, its slots and queue, the roles
it serves. A role either has a worker of its own or is served by another role's worker."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from assistantd.api.admission import Admission
from assistantd.control.supervisor import Supervisor
from assistantd.errors import InvalidRequest
from assistantd.planning.speeds import MeasuredSpeeds
from assistantd.vocab import Role


@dataclass
class Served:
    """A running (or starting) worker and what belongs to it alone."""

    role: Role  # the role that owns this worker (its controller shifts it)
    supervisor: Supervisor
    admission: Admission
    model_id: str
    speeds: MeasuredSpeeds | None = None
    speed_key: tuple[str, str, str] | None = None  # set when the model came from the catalog
    served_ids: set[str] = field(default_factory=set)  # every id this worker served in this run
    # The plan's bytes per device for what this worker loads now (the CPU first), shown in
    # /status beside what llama.cpp reports it allocated.
    estimate: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.served_ids.add(self.model_id)

    @property
    def slots(self) -> int:
        return self.supervisor.spec.n_slots

    @property
    def n_ctx(self) -> int:
        return int(self.supervisor.worker_info.get("n_ctx", self.supervisor.spec.n_ctx))

    @property
    def on_cpu(self) -> bool:
        """Decodes on the CPU cores: a CPU-only build, or no layer offloaded."""
        offload = bool(self.supervisor.worker_info.get("gpu_offload"))
        return not offload or self.supervisor.spec.n_gpu_layers == 0

    @property
    def fim(self) -> bool:
        return bool(self.supervisor.worker_info.get("fim"))

    def now_serving(self, model_id: str, speed_key: tuple[str, str, str] | None) -> None:
        """After a shift: the new id answers, and the old ones keep resolving here."""
        self.model_id = model_id
        self.speed_key = speed_key
        self.served_ids.add(model_id)

    def observe_speed(self, tok_s: float, tokens: int) -> None:
        """Measured decode speed replaces the planner's prediction next time it plans."""
        if self.speeds is not None and self.speed_key is not None:
            self.speeds.observe(self.speed_key, tok_s, tokens)

    def check_n(self, n: int, param: str = "n") -> None:
        """Alternatives each take a slot: no more than the worker has."""
        if n > self.slots:
            raise InvalidRequest(
                f"{param}={n} is more than the {self.slots} slots of the worker serving "
                f"{self.model_id}; ask for fewer alternatives or raise ASSISTANT_SLOTS",
                param=param,
            )

    def check_limit(self, max_tokens: int | None, param: str = "max_tokens") -> int | None:
        """A limit beyond the context means "until the context end", as llama-server reads
        it: clients send fixed defaults (Continue 4096) whatever model they talk to."""
        if max_tokens is not None and max_tokens >= self.n_ctx:
            return None
        return max_tokens
