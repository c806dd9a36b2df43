"""Rank every (model, quant, placement, n_ctx) that fits the budget; say why the rest do not.

The ranked list is the ladder shifting moves along: candidates predicted to reach the decode
target first, best score first, then those that fit but are predicted slower. Every rejected
candidate carries a reason a person can read ("needs 9.8 GiB RAM, budget 7.1 GiB").

Score = quality at this quant (size-aware loss, quant_quality.py) + weight × log2(decode tok/s)
− weight × log2(TTFT / target) when the reference prompt's predicted TTFT misses its target.
Candidates that reach the decode target rank first; within each of the two, quants too lossy for
the model's size (quant_quality.too_lossy) rank after the rest; among them a missed TTFT target
costs score rather than a whole tier, because on CPUs and small Macs no useful model prefills
1000 tokens in 2 s and experts accept that (a hard tier would hand them a 0.5B model). The starter
model ranks last within its tier (it is the offline last resort), after even a lossy quant.
"""

from __future__ import annotations

import math
from dataclasses import replace

from assistantd.fetch import hub
from assistantd.fetch.download import hf_cache_dir
from assistantd.planning import devices
from assistantd.planning import predict as predict_module
from assistantd.planning.catalog import CatalogModel
from assistantd.planning.estimate import GiB, file_bytes_estimate
from assistantd.planning.hardware import Machine
from assistantd.planning.placement import Option, options, over_budget
from assistantd.planning.plan_types import Budget, Candidate, Plan, compute_budget, gib
from assistantd.planning.predict import Hardware, edit_gain, predict, routing_of, ttft_ms
from assistantd.planning.profiles import Models, Profile
from assistantd.planning.quant_quality import quant_quality, too_lossy
from assistantd.planning.speeds import MeasuredSpeeds

__all__ = ["Budget", "Candidate", "Plan", "compute_budget", "gib", "GiB", "hardware_of", "plan"]

# How much speed counts against quality, by preference.
SPEED_WEIGHT = {"quality": 0.5, "balanced": 3.0, "speed": 10.0}
GPU_KIND = {"nvidia": "cuda", "amd": "rocm", "apple": "metal", "rpc": "rpc"}
BACKEND_KIND = {"cuda": "cuda", "hip": "rocm", "metal": "metal", "vulkan": "vulkan", "rpc": "rpc"}
REFERENCE_PROMPT_TOKENS = 1000  # when the caller names no TTFT reference prompt


def hardware_of(machine: Machine, budget: Budget) -> Hardware:
    """Bandwidth and compute of the devices this budget uses: measured or given where known,
    else the spec table by name, else a default by platform."""
    ram_gbs = machine.memory_bandwidth_gbs or devices.default_ram_bandwidth(machine.cpu_model)
    cpu = devices.cpu_gflops(machine.cpu_cores, machine.cpu_flags)
    usable = [
        g
        for g in machine.gpus
        if machine.gpu_offload and g.usable and (g.vendor == "apple") == machine.unified_memory
    ]
    if not usable:
        return Hardware(ram_gbs=ram_gbs, cpu_gflops=cpu)
    speeds = []
    for gpu in usable:
        spec = devices.lookup(gpu.name) or devices.DEFAULT_GPU.get(gpu.vendor, (300.0, 40.0))
        speeds.append((gpu.memory_bandwidth_gbs or spec[0], gpu.fp16_tflops or spec[1]))
    # Layers split across cards run one card after the other: the slowest card sets the pace.
    bandwidth = min(s[0] for s in speeds)
    tflops = min(s[1] for s in speeds)
    if machine.unified_memory:
        ram_gbs = machine.memory_bandwidth_gbs or bandwidth
    first = usable[0]
    kind = BACKEND_KIND.get(first.backend or "", "") or GPU_KIND.get(first.vendor, "cuda")
    rtt_s = max((g.rtt_ms or 0.0) for g in usable) / 1000
    return Hardware(
        ram_gbs=ram_gbs,
        cpu_gflops=cpu,
        gpu_gbs=bandwidth,
        gpu_tflops=tflops,
        gpu_kind=kind,
        link_s=predict_module.RPC_ROUND_TRIPS * rtt_s,
    )


def option_problems(option: Option, budget: Budget) -> list[str]:
    """Why `option` does not fit `budget` (empty: it fits)."""
    problems = []
    if option.ram_bytes > budget.ram_bytes:
        problems.append(f"needs {gib(option.ram_bytes)} RAM, budget {gib(budget.ram_bytes)}")
    if budget.unified and option.vram_bytes > budget.gpu_working_set_bytes:
        limit = gib(budget.gpu_working_set_bytes)
        problems.append(f"needs {gib(option.vram_bytes)} GPU memory, Metal working set {limit}")
    elif not budget.unified and option.vram_bytes > budget.vram_bytes:
        problems.append(f"needs {gib(option.vram_bytes)} VRAM, budget {gib(budget.vram_bytes)}")
    elif not budget.unified and option.devices and over_budget(option.devices, budget):
        worst = max(option.devices[1:], key=lambda d: d.total_bytes)
        problems.append(f"needs {gib(worst.total_bytes)} on {worst.device}, over its share")
    return problems


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
    ttft_target_ms: float | None = None,
    reference_prompt_tokens: int = REFERENCE_PROMPT_TOKENS,
    role: str | None = None,
) -> Plan:
    """Every candidate with its fit and reason; fitting ones ranked best first. Memory counts
    the KV cache of every slot the worker will serve. `role` keeps only models for it."""
    file_sizes = file_sizes or {}
    measured_tok_s = measured_tok_s or {}
    hw = hardware_of(machine, budget)
    weight = SPEED_WEIGHT[prefer]
    candidates: list[Candidate] = []
    for model in catalog:
        if role and not _serves(model, role):
            continue
        arch = model.arch
        ctx = min(n_ctx, arch.n_ctx_train)
        for quant in model.quants:
            known = file_sizes.get((model.id, quant))
            file_bytes = known if known is not None else file_bytes_estimate(arch, quant)
            choices = options(arch, file_bytes, ctx, budget, n_slots)
            fitting = [o for o in choices if not option_problems(o, budget)]
            predictions = {
                id(o): predict(arch, o.split, hw, reference_prompt_tokens, quant) for o in choices
            }
            # The GPU-heaviest option that fits, unless another fitting one is faster. A remote
            # (RPC) device was named by the user, and what it is the protocol does not say: it
            # is used where it fits, and its measured speed decides from then on.
            if hw.gpu_kind == "rpc":
                chosen = fitting[0] if fitting else None
            else:
                chosen = max(fitting, key=lambda o: predictions[id(o)].decode_tok_s, default=None)
            option = chosen or choices[-1]
            guess = predictions[id(option)]
            measured = measured_tok_s.get((model.id, quant, option.placement))
            tok_s = measured if measured is not None else guess.decode_tok_s
            ttft = ttft_ms(guess.prompt_tok_s, tok_s, reference_prompt_tokens)
            quality = quant_quality(model.quality, quant, arch.n_params)
            lossy = too_lossy(quant, arch.n_params, model.quants)
            meets = meets_ttft = False
            score = 0.0
            if chosen is None:
                reasons = [
                    f"{o.placement}: {'; '.join(option_problems(o, budget))}" for o in choices
                ]
                reason = reasons[-1].split(": ", 1)[1] if len(reasons) == 1 else " | ".join(reasons)
            else:
                meets = round(tok_s, 1) >= min_tok_s  # as shown, so 14.96 is not "15.0 < 15"
                meets_ttft = ttft_target_ms is None or ttft <= ttft_target_ms
                score = quality + weight * math.log2(max(tok_s, 0.1))
                if ttft_target_ms and not meets_ttft:
                    score -= weight * math.log2(ttft / ttft_target_ms)
                score = round(score, 2)
                reason = _fit_reason(option, tok_s, min_tok_s, ttft, ttft_target_ms, meets)
                if lossy:
                    reason += f"; ranked last: {lossy}"
            candidates.append(
                Candidate(
                    model=model.id,
                    quant=quant,
                    placement=option.placement,
                    n_gpu_layers=option.n_gpu_layers,
                    n_ctx=ctx,
                    file_bytes=file_bytes,
                    file_bytes_estimated=known is None,
                    ram_bytes=option.ram_bytes,
                    vram_bytes=0 if budget.unified else option.vram_bytes,
                    predicted_tok_s=round(tok_s, 1),
                    speed_measured=measured is not None and chosen is not None,
                    quality=quality,
                    score=score,
                    fits=chosen is not None,
                    meets_target=meets,
                    reason=reason,
                    repo=model.repo,
                    experts_in_ram=option.experts_in_ram,
                    n_cpu_moe=option.n_cpu_moe,
                    params_b=round(arch.n_params / 1e9, 2),
                    active_params_b=round(arch.active_params / 1e9, 2),
                    licence=model.licence,
                    predicted_prompt_tok_s=round(guess.prompt_tok_s, 1),
                    predicted_ttft_ms=round(ttft),
                    meets_ttft=meets_ttft,
                    # A recurrent state cannot drop a rejected guess: never speculated on.
                    edit_gain=1.0
                    if arch.n_full_attn_layers
                    else edit_gain(tok_s, guess.prompt_tok_s, routing_of(arch)),
                    lossy=lossy is not None,
                    devices=[d.to_json() for d in option.devices],
                )
            )
    starters = {m.id for m in catalog if m.starter}
    # Below the speed target still serves, but only when nothing faster fits.
    fitting_c = sorted(
        (c for c in candidates if c.fits),
        key=lambda c: (
            role == "autocomplete" and not c.meets_ttft,  # latency-bound: the target first
            not c.meets_target,
            c.model in starters and len(starters) < len(catalog),
            c.lossy,  # a small model below its bits: only when nothing else as fast fits
            -c.score,
        ),
    )
    rejected = [c for c in candidates if not c.fits]
    return Plan(machine, budget, fitting_c + rejected, n_ctx)


def _serves(model: CatalogModel, role: str) -> bool:
    """Autocomplete needs FIM tokens; the starter (no FIM, no embeddings) is chat's last resort."""
    if role == "autocomplete":
        return model.fim and role in model.roles
    return role in model.roles or (model.starter and role == "chat")


def _fit_reason(
    option: Option, tok_s: float, min_tok_s: float, ttft: float, target: float | None, meets: bool
) -> str:
    where = f"{option.placement}, {gib(option.ram_bytes)} RAM" + (
        f", {gib(option.vram_bytes)} VRAM" if option.vram_bytes else ""
    )
    if option.experts_in_ram:
        where += f"; experts of {option.n_cpu_moe} layers in RAM, the rest on the GPU"
    reason = f"fits ({where})"
    if not meets:
        reason += f"; predicted {tok_s:.1f} tok/s < target {min_tok_s:.1f} tok/s"
    if target and ttft > target:
        reason += f"; predicted TTFT {ttft / 1000:.1f} s > target {target / 1000:.1f} s"
    return reason


def allowed_models(catalog: list[CatalogModel], rules: Models) -> list[CatalogModel]:
    """The catalog as the profile limits it; the starter is always allowed (the last resort)."""
    keep = []
    for model in catalog:
        if not model.starter:
            if rules.families and model.family not in rules.families:
                continue
            if not model.licence_ok_by_default and model.family not in rules.families:
                continue  # non-commercial / non-production: only when the profile names it
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
    role: str = "chat",
    budget: Budget | None = None,
) -> Plan:
    """The ranked ladder for this machine and profile (as `role` sees it: Profile.for_role).
    The bonuses add back memory the running worker holds (a swap would free it), so
    re-planning at run time is fair to it. `budget` replaces the measured one (what the
    other roles leave)."""
    allowed = allowed_models(catalog, profile.models)
    if budget is None:
        budget = profile_budget(profile, machine, ram_bonus=ram_bonus, vram_bonus=vram_bonus)
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
        ttft_target_ms=profile.targets.ttft_p95_ms,
        reference_prompt_tokens=profile.targets.reference_prompt_tokens,
        role=role,
    )


def profile_budget(
    profile: Profile, machine: Machine, *, ram_bonus: int = 0, vram_bonus: int = 0
) -> Budget:
    """The measured budget under the profile's reserves (or its fixed budget)."""
    memory = profile.memory
    budget = compute_budget(
        machine,
        ram_reserve=memory.ram_reserve,
        ram_reserve_share=memory.ram_reserve_share,
        vram_reserve=memory.vram_reserve,
        ram_override=memory.ram_budget,
        vram_override=memory.vram_budget,
    )
    if ram_bonus and memory.ram_budget is None:
        budget = replace(budget, ram_bytes=budget.ram_bytes + ram_bonus)
    if vram_bonus and memory.vram_budget is None and budget.vram_bytes:
        total = budget.vram_bytes
        devices = tuple(
            replace(d, bytes=d.bytes + int(vram_bonus * d.bytes / total)) for d in budget.devices
        )
        budget = replace(budget, vram_bytes=total + vram_bonus, devices=devices)
    return budget
