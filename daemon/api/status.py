"""`GET /status` as a typed model: the daemon returns it, `assistantctl status` parses it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class _Part(BaseModel):
    # A newer daemon may say more than this assistantctl knows: keep it, don't fail.
    model_config = ConfigDict(extra="allow")


class QueueStatus(_Part):
    active: int
    waiting: int
    capacity: int


class ModelStatus(_Part):
    id: str
    path: str
    n_ctx: int
    fim: bool | None = None
    chat_template: str | None = None
    gpu_offload: bool | None = None
    threads: int
    slots: int | None = None
    tools: str | None = None  # the template's tool-call format, if it takes tools


class WorkerStatus(_Part):
    pid: int | None
    restarts: int
    last_error: str | None


class MemoryStatus(_Part):
    worker_rss_bytes: int | None
    ram_budget_bytes: int | None
    estimated_bytes: int | None


class DeviceUse(_Part):
    """One device under one worker: what the plan estimated and what llama.cpp allocated."""

    device: str
    layers: int | None = None
    estimated: dict[str, int] | None = None  # weights, kv, compute, total (bytes)
    allocated: dict[str, int] | None = None


class DeviceStatus(_Part):
    """A device llama.cpp can place layers on (or a card this build cannot use)."""

    name: str
    device: str | None
    backend: str | None
    free_bytes: int
    total_bytes: int
    usable: bool
    endpoint: str | None = None


class RoleStatus(_Part):
    """One role: the worker serving it (or the role whose worker does), how it does against
    the role's targets, and its last shift."""

    role: str
    served_by: str | None  # the role whose worker serves this one; None: off
    model: str | None
    note: str | None = None
    state: str | None = None
    quant: str | None = None
    placement: str | None = None
    fim: bool | None = None
    slots: int | None = None
    n_ctx: int | None = None
    queue: QueueStatus | None = None
    worker_pid: int | None = None
    worker_rss_bytes: int | None = None
    estimated_bytes: int | None = None
    control: dict[str, Any] | None = None  # mode, latency vs targets, shifts, ladder
    devices: list[DeviceUse] = []  # where its worker's layers and buffers sit, the CPU too
    n_gpu_layers: int | None = None
    n_cpu_moe: int | None = None  # mixture of experts: layers whose experts stay in RAM


class GrowingStatus(_Part):
    """One role on its way from the rung it serves first to the planned one."""

    serving: str
    next: str | None  # None once the planned rung serves
    state: str  # waiting | downloading | shifting | done | failed
    download: dict[str, Any] | None = None  # done/total bytes, percent, rate, eta_s
    note: str | None = None


class ProgressiveStatus(_Part):
    """A progressive start: what "arrives quickly" meant, and each role's way up."""

    quick_bytes: int
    rate_bytes_per_s: int | None  # measured at start; None when the profile fixed the size
    roles: dict[str, GrowingStatus] = {}


class StatusReport(_Part):
    state: str
    endpoint: str
    pid: int
    provision: dict[str, Any]
    queue: QueueStatus
    uptime_s: float
    requests_served: int
    requests_cancelled: int
    requests_failed: int
    requests_rejected: int
    requests_invalid: int = 0
    speculation: dict[str, Any] | None = None  # draft_tokens, accepted_tokens, acceptance
    recent: list[dict[str, Any]]
    control: dict[str, Any] | None = None
    model: ModelStatus | None = None
    worker: WorkerStatus | None = None
    memory: MemoryStatus | None = None
    roles: dict[str, RoleStatus] = {}
    # On a CPU: how often the other workers held their batch for an autocomplete prompt.
    cores: dict[str, Any] | None = None
    memory_all_roles: MemoryStatus | None = None  # every worker against the plan for them
    upstreams: list[dict[str, Any]] = []  # team servers: health, latency, the role they serve
    keys: list[dict[str, Any]] = []  # the busiest API keys by name: requests, tokens, refused
    backend: str | None = None  # the GPU backend of this llama-cpp-python build (or cpu)
    devices: list[DeviceStatus] = []

    @property
    def progressive(self) -> ProgressiveStatus | None:
        found = self.provision.get("progressive")
        return ProgressiveStatus.model_validate(found) if found else None
