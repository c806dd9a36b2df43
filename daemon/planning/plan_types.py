"""What a plan is made of: the memory budget, one candidate, the ranked plan."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from assistantd.planning.devices import apple_working_set
from assistantd.planning.estimate import GiB
from assistantd.planning.hardware import Machine
from assistantd.vocab import Placement


@dataclass(frozen=True)
class DeviceBudget:
    """One device's share: its name as llama.cpp knows it (CUDA0, RPC[host:port]) or, on a
    described machine, as the machine file gives it."""

    name: str
    bytes: int


@dataclass(frozen=True)
class Budget:
    ram_bytes: int
    vram_bytes: int  # summed over usable GPUs; 0 when the build cannot offload
    unified: bool = False
    notes: tuple[str, ...] = ()
    # Unified memory (Apple): what Metal lets the GPU keep resident, within ram_bytes.
    gpu_working_set_bytes: int = 0
    devices: tuple[DeviceBudget, ...] = ()  # per device; they add up to vram_bytes


def compute_budget(
    machine: Machine,
    *,
    ram_reserve: int,
    vram_reserve: int,
    ram_override: int | None = None,
    vram_override: int | None = None,
    ram_reserve_share: float = 0.0,
) -> Budget:
    """Measured free memory minus what the rest of the machine needs, or the user's override.
    RAM: profiles.Memory says how the reserve scales with the machine."""
    notes = []
    ram = (
        ram_override
        if ram_override is not None
        else ram_left(machine.ram_bytes, machine.available_bytes, ram_reserve, ram_reserve_share)
    )
    if ram_override is not None:
        notes.append(f"RAM budget set by override to {gib(ram)}")
    vram = 0
    shares: list[DeviceBudget] = []
    if machine.gpu_offload and not machine.unified_memory:
        usable = [g for g in machine.gpus if g.vendor != "apple" and g.usable]
        shares = [
            DeviceBudget(g.device or g.name, max(g.free_bytes - vram_reserve, 0)) for g in usable
        ]
        free = sum(d.bytes for d in shares)
        vram = vram_override if vram_override is not None else free
        if vram_override is not None:
            shares = _scaled(shares, vram_override)
    note = machine.offload_note()
    if note:
        notes.append(note)
    unified = machine.unified_memory and machine.gpu_offload
    working_set = 0
    if unified:
        working_set = min(ram, apple_working_set(machine.ram_bytes))
        if vram_override is not None:
            working_set = min(ram, vram_override)
        notes.append(f"Metal working set {gib(working_set)} of {gib(machine.ram_bytes)} RAM")
    return Budget(
        ram,
        vram,
        unified=unified,
        notes=tuple(notes),
        gpu_working_set_bytes=working_set,
        devices=tuple(shares),
    )


def ram_left(total: int, available: int, reserve: int, share: float) -> int:
    """RAM the models may use: what is free now or what the share leaves, whichever is less,
    minus the reserve."""
    return max(min(available, int(total * (1 - share))) - reserve, 0)


def _scaled(shares: list[DeviceBudget], total: int) -> list[DeviceBudget]:
    """A fixed device budget shared out as the devices' free memory is (evenly if none)."""
    free = sum(d.bytes for d in shares)
    if not shares:
        return []
    if free <= 0:
        return [DeviceBudget(d.name, total // len(shares)) for d in shares]
    return [DeviceBudget(d.name, int(total * d.bytes / free)) for d in shares]


def without(budget: Budget, used: Candidate) -> Budget:
    """What `budget` leaves once `used` (another role's rung) has its share."""
    taken = {d["device"]: int(d["total_bytes"]) for d in used.devices}
    return replace(
        budget,
        ram_bytes=max(budget.ram_bytes - used.ram_bytes, 0),
        vram_bytes=max(budget.vram_bytes - used.vram_bytes, 0),
        # On Apple the weights the GPU touches are wired in the one pool: RAM is the measure.
        gpu_working_set_bytes=max(
            budget.gpu_working_set_bytes - (used.ram_bytes if budget.unified else 0), 0
        ),
        devices=tuple(
            DeviceBudget(d.name, max(d.bytes - taken.get(d.name, 0), 0)) for d in budget.devices
        ),
    )


def left_after(budget: Budget, used: list[Candidate]) -> Budget:
    """What `budget` leaves once every one of `used` has its share."""
    for candidate in used:
        budget = without(budget, candidate)
    return budget


def left_by(budget: Budget, option: Any) -> Budget:
    """What `budget` leaves once a worker placed as `option` (a placement.Option) has its
    share: RAM, and each device's bytes."""
    taken = {d.device: d.total_bytes for d in option.devices}
    return replace(
        budget,
        ram_bytes=max(budget.ram_bytes - option.ram_bytes, 0),
        vram_bytes=max(budget.vram_bytes - option.vram_bytes, 0),
        devices=tuple(
            DeviceBudget(d.name, max(d.bytes - taken.get(d.name, 0), 0)) for d in budget.devices
        ),
    )


def gib(n: float) -> str:
    return f"{n / GiB:.1f} GiB"


@dataclass(kw_only=True)
class Candidate:
    model: str
    quant: str
    placement: Placement
    n_gpu_layers: int
    n_ctx: int
    file_bytes: int
    file_bytes_estimated: bool
    ram_bytes: int
    vram_bytes: int
    predicted_tok_s: float
    speed_measured: bool
    quality: float
    score: float = 0.0
    fits: bool = False
    meets_target: bool = False  # predicted (or measured) decode speed reaches the target
    reason: str = ""
    repo: str = ""
    # MoE with routed experts in RAM, the rest on the GPU (llama.cpp --n-cpu-moe; in
    # llama-cpp-python tensor_buft_overrides "ffn_.*_exps=CPU"): placement "partial",
    # n_gpu_layers -1, and n_cpu_moe of the layers keep their experts in RAM.
    experts_in_ram: bool = False
    n_cpu_moe: int = 0
    params_b: float = 0.0  # total parameters, billions
    active_params_b: float = 0.0  # read per token (MoE: the active experts)
    licence: str = ""
    predicted_prompt_tok_s: float = 0.0
    predicted_ttft_ms: float = 0.0  # for the profile's reference prompt
    meets_ttft: bool = False
    edit_gain: float = 1.0  # predicted for n-gram speculation on an edit (predict.edit_gain)
    lossy: bool = False  # below the bits an expert runs a model this small at: ranked last
    # Where it sits: per device (the CPU first) its layers and bytes of weights, KV, compute.
    devices: list[dict[str, Any]] = field(default_factory=list)

    @property
    def estimated_bytes(self) -> int:
        return self.ram_bytes + self.vram_bytes

    @property
    def key(self) -> tuple[str, str]:
        return (self.model, self.quant)

    @property
    def label(self) -> str:
        return f"{self.model} {self.quant}"

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "estimated_bytes": self.estimated_bytes}


@dataclass
class Plan:
    machine: Machine
    budget: Budget
    candidates: list[Candidate]  # fitting first, best first; then the rejected
    n_ctx: int
    notes: list[str] = field(default_factory=list)

    @property
    def ladder(self) -> list[Candidate]:
        return [c for c in self.candidates if c.fits]

    @property
    def chosen(self) -> Candidate | None:
        return self.ladder[0] if self.ladder else None

    def to_json(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "machine": self.machine.to_json(),
            "budget": asdict(self.budget),
            "n_ctx": self.n_ctx,
            "chosen": chosen.to_json() if chosen else None,
            "candidates": [c.to_json() for c in self.candidates],
            "notes": [*self.budget.notes, *self.notes],
        }
