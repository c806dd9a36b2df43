"""Rank every (model, quant, placement, n_ctx) that fits the budget; say why the rest do not.

The ranked list is the ladder shifting moves along: candidates predicted to reach the decode
target first, best score first, then those that fit but are predicted slower. Every rejected
candidate carries a reason a person can read ("needs 9.8 GiB RAM, budget 7.1 GiB").
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from assistantd.fetch import hub
from assistantd.fetch.download import hf_cache_dir
from assistantd.planning.catalog import CatalogModel
from assistantd.planning.estimate import (
    GiB,
    bytes_per_token,
    compute_buffer_bytes,
    file_bytes_estimate,
    footprint,
    kv_cache_bytes,
)
from assistantd.planning.hardware import Machine
from assistantd.planning.profiles import Models, Profile
from assistantd.planning.speeds import MeasuredSpeeds
from assistantd.vocab import Placement

# Quality points lost to quantization (HumanEval-scale), a rule of thumb from published
# perplexity/accuracy deltas of llama.cpp k-quants; Q8_0 is treated as lossless.
QUANT_PENALTY = {
    "F16": 0.0,
    "BF16": 0.0,
    "Q8_0": 0.0,
    "Q6_K": 0.3,
    "Q5_K_M": 0.8,
    "Q5_K_S": 1.0,
    "Q5_0": 1.2,
    "Q5_1": 1.0,
    "Q4_K_M": 1.8,
    "Q4_K_S": 2.4,
    "Q4_0": 3.0,
    "Q4_1": 2.6,
    "IQ4_XS": 2.2,
    "IQ4_NL": 2.4,
    "Q3_K_L": 4.0,
    "Q3_K_M": 5.0,
    "Q3_K_S": 7.0,
    "IQ3_M": 5.0,
    "IQ3_XXS": 8.0,
    "Q2_K": 12.0,
    "IQ2_M": 14.0,
    "IQ2_XS": 18.0,
}
# How much speed counts against quality, by preference.
SPEED_WEIGHT = {"quality": 0.5, "balanced": 3.0, "speed": 10.0}
EFFICIENCY = 0.6  # share of peak bandwidth a decode step achieves
DEFAULT_RAM_BANDWIDTH_GBS = 20.0
DEFAULT_GPU_BANDWIDTH_GBS = 300.0


@dataclass(frozen=True)
class Budget:
    ram_bytes: int
    vram_bytes: int  # summed over usable GPUs; 0 when the build cannot offload
    unified: bool = False
    notes: tuple[str, ...] = ()


def compute_budget(
    machine: Machine,
    *,
    ram_reserve: int,
    vram_reserve: int,
    ram_override: int | None = None,
    vram_override: int | None = None,
) -> Budget:
    """Measured free memory minus what the rest of the machine needs, or the user's override."""
    notes = []
    ram = (
        ram_override if ram_override is not None else max(machine.available_bytes - ram_reserve, 0)
    )
    if ram_override is not None:
        notes.append(f"RAM budget set by override to {gib(ram)}")
    vram = 0
    if machine.gpu_offload and not machine.unified_memory:
        free = sum(max(g.free_bytes - vram_reserve, 0) for g in machine.gpus if g.vendor != "apple")
        vram = vram_override if vram_override is not None else free
    note = machine.offload_note()
    if note:
        notes.append(note)
    return Budget(
        ram, vram, unified=machine.unified_memory and machine.gpu_offload, notes=tuple(notes)
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


def _speed(bytes_gpu: float, bytes_cpu: float, cpu_bw: float, gpu_bw: float) -> float:
    seconds = bytes_gpu / (gpu_bw * 1e9 * EFFICIENCY) + bytes_cpu / (cpu_bw * 1e9 * EFFICIENCY)
    return 1.0 / seconds if seconds > 0 else math.inf


def _placements(
    model: CatalogModel,
    file_bytes: int,
    n_ctx: int,
    budget: Budget,
    cpu_bw: float,
    gpu_bw: float,
    n_seq: int = 1,
) -> list[tuple[Placement, int, int, int, float]]:
    """(placement, n_gpu_layers, ram, vram, tok/s) options, best placement first."""
    arch = model.arch
    read = bytes_per_token(arch, file_bytes)
    cpu = footprint(arch, file_bytes, n_ctx, n_seq=n_seq)
    cpu_only: tuple[Placement, int, int, int, float] = (
        "cpu",
        0,
        cpu.total_bytes,
        0,
        _speed(0, read, cpu_bw, gpu_bw),
    )
    if budget.unified:
        return [("gpu", -1, cpu.total_bytes, 0, _speed(read, 0, cpu_bw, gpu_bw))]
    if budget.vram_bytes <= 0:
        return [cpu_only]
    gpu = footprint(arch, file_bytes, n_ctx, on_gpu=True, n_seq=n_seq)
    options: list[tuple[Placement, int, int, int, float]] = []
    full_vram = gpu.weights_bytes + gpu.kv_bytes + gpu.compute_bytes
    options.append(("gpu", -1, gpu.host_bytes, full_vram, _speed(read, 0, cpu_bw, gpu_bw)))
    per_layer = (file_bytes + kv_cache_bytes(arch, n_ctx * n_seq)) / arch.n_layer
    gpu_compute = compute_buffer_bytes(arch, n_ctx * n_seq, on_gpu=True)
    layers = int((budget.vram_bytes - gpu_compute) // per_layer) if per_layer else 0
    layers = min(layers, arch.n_layer - 1)
    if layers > 0:
        share = layers / arch.n_layer
        vram = int(layers * per_layer + gpu_compute)
        ram = int(
            cpu.host_bytes + (1 - share) * (cpu.weights_bytes + cpu.kv_bytes) + cpu.compute_bytes
        )
        options.append(
            ("partial", layers, ram, vram, _speed(read * share, read * (1 - share), cpu_bw, gpu_bw))
        )
    options.append(cpu_only)
    return options


def plan(
    catalog: list[CatalogModel],
    machine: Machine,
    budget: Budget,
    *,
    n_ctx: int,
    prefer: str = "balanced",
    min_tok_s: float = 0.0,
    file_sizes: dict[tuple[str, str], int] | None = None,
    measured_tok_s: dict[tuple[str, str, str], float] | None = None,
    n_slots: int = 1,
) -> Plan:
    """Every candidate with its fit and reason; fitting ones ranked best first. Memory counts
    the KV cache of every slot the worker will serve."""
    file_sizes = file_sizes or {}
    measured_tok_s = measured_tok_s or {}
    cpu_bw = machine.memory_bandwidth_gbs or DEFAULT_RAM_BANDWIDTH_GBS
    gpu_bw = DEFAULT_GPU_BANDWIDTH_GBS
    weight = SPEED_WEIGHT[prefer]
    candidates: list[Candidate] = []
    for model in catalog:
        ctx = min(n_ctx, model.arch.n_ctx_train)
        for quant in model.quants:
            known = file_sizes.get((model.id, quant))
            file_bytes = known if known is not None else file_bytes_estimate(model.arch, quant)
            options = _placements(model, file_bytes, ctx, budget, cpu_bw, gpu_bw, n_slots)
            chosen_option = None
            reasons = []
            for placement, layers, ram, vram, tok_s in options:  # fastest placement first
                measured = measured_tok_s.get((model.id, quant, placement))
                tok_s = measured if measured is not None else tok_s
                problems = []
                if ram > budget.ram_bytes:
                    problems.append(f"needs {gib(ram)} RAM, budget {gib(budget.ram_bytes)}")
                if vram > budget.vram_bytes:
                    problems.append(f"needs {gib(vram)} VRAM, budget {gib(budget.vram_bytes)}")
                if not problems:
                    chosen_option = (placement, layers, ram, vram, tok_s, measured is not None)
                    break
                reasons.append(f"{placement}: {'; '.join(problems)}")
            quality = model.quality - QUANT_PENALTY.get(quant, 5.0)
            meets = False
            if chosen_option is None:
                placement, layers, ram, vram, tok_s = options[-1]
                was_measured, fits, score = False, False, 0.0
                reason = reasons[-1].split(": ", 1)[1] if len(options) == 1 else " | ".join(reasons)
            else:
                placement, layers, ram, vram, tok_s, was_measured = chosen_option
                fits = True
                meets = tok_s >= min_tok_s
                score = round(quality + weight * math.log2(max(tok_s, 0.1)), 2)
                reason = f"fits ({placement}, {gib(ram)} RAM" + (
                    f", {gib(vram)} VRAM)" if vram else ")"
                )
                if not meets:
                    reason += f"; predicted {tok_s:.1f} tok/s < target {min_tok_s:.1f} tok/s"
            candidates.append(
                Candidate(
                    model=model.id,
                    quant=quant,
                    placement=placement,
                    n_gpu_layers=layers,
                    n_ctx=ctx,
                    file_bytes=file_bytes,
                    file_bytes_estimated=known is None,
                    ram_bytes=ram,
                    vram_bytes=vram,
                    predicted_tok_s=round(tok_s, 1),
                    speed_measured=was_measured,
                    quality=quality,
                    score=score,
                    fits=fits,
                    meets_target=meets,
                    reason=reason,
                    repo=model.repo,
                )
            )
    # Below the speed target still serves, but only when nothing faster fits.
    fitting = sorted(
        (c for c in candidates if c.fits), key=lambda c: (not c.meets_target, -c.score)
    )
    rejected = [c for c in candidates if not c.fits]
    return Plan(machine, budget, fitting + rejected, n_ctx)


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
    n_slots: int = 1,
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
        n_slots=n_slots,
    )
