"""Where a model's tensors can go on one machine, with the memory each option takes and where
each decoded token's bytes are read from.

Options, fastest first: all on the GPU; an MoE's routed experts in RAM with everything else
(attention, shared experts, embeddings, KV) on the GPU, as llama.cpp's `--n-cpu-moe` keeps as
many layers' experts on the GPU as fit; the first layers on the GPU and the rest on the CPU;
all on the CPU. Unified memory (Apple) has one pool, limited by Metal's working set.
"""

from __future__ import annotations

from dataclasses import dataclass

from assistantd.planning.architecture import ModelArch
from assistantd.planning.estimate import (
    bytes_per_token,
    compute_buffer_bytes,
    expert_bytes,
    footprint,
    kv_cache_bytes,
)
from assistantd.planning.plan_types import Budget
from assistantd.planning.predict import Split
from assistantd.vocab import Placement


@dataclass(frozen=True)
class Option:
    placement: Placement
    n_gpu_layers: int
    ram_bytes: int
    vram_bytes: int
    split: Split
    experts_in_ram: bool = False
    n_cpu_moe: int = 0


def options(
    arch: ModelArch, file_bytes: int, n_ctx: int, budget: Budget, n_seq: int = 1
) -> list[Option]:
    """Every placement worth trying, GPU-heaviest first (the caller keeps the first that fits
    unless a later one is predicted faster)."""
    read = bytes_per_token(arch, file_bytes)
    cells = n_ctx * n_seq
    cpu = footprint(arch, file_bytes, n_ctx, n_seq=n_seq)
    cpu_only = Option("cpu", 0, cpu.total_bytes, 0, Split(cpu_bytes=read, cpu_layers=arch.n_layer))
    if budget.unified:
        # One pool: RAM holds everything, and what the GPU touches must stay within Metal's
        # working set. Running on the CPU instead would only be slower in the same memory.
        wired = cpu.weights_bytes + cpu.kv_bytes + cpu.compute_bytes
        split = Split(gpu_bytes=read, gpu_layers=arch.n_layer, on_gpu=True)
        return [Option("gpu", -1, cpu.total_bytes, wired, split)]
    if budget.vram_bytes <= 0:
        return [cpu_only]
    gpu = footprint(arch, file_bytes, n_ctx, on_gpu=True, n_seq=n_seq)
    found = [
        Option(
            "gpu",
            -1,
            gpu.host_bytes,
            gpu.weights_bytes + gpu.kv_bytes + gpu.compute_bytes,
            Split(gpu_bytes=read, gpu_layers=arch.n_layer, on_gpu=True),
        )
    ]
    experts = _experts_in_ram(arch, file_bytes, cells, budget, gpu.host_bytes)
    if experts:
        found.append(experts)
    per_layer = (file_bytes + kv_cache_bytes(arch, cells)) / arch.n_layer
    gpu_compute = compute_buffer_bytes(arch, cells, on_gpu=True)
    layers = int((budget.vram_bytes - gpu_compute) // per_layer) if per_layer else 0
    layers = min(layers, arch.n_layer - 1)
    if layers > 0:
        share = layers / arch.n_layer
        vram = int(layers * per_layer + gpu_compute)
        ram = int(
            cpu.host_bytes + (1 - share) * (cpu.weights_bytes + cpu.kv_bytes) + cpu.compute_bytes
        )
        split = Split(
            gpu_bytes=read * share,
            cpu_bytes=read * (1 - share),
            gpu_layers=layers,
            cpu_layers=arch.n_layer - layers,
            ram_resident_bytes=file_bytes * (1 - share),
            on_gpu=True,
        )
        found.append(Option("partial", layers, ram, vram, split))
    found.append(cpu_only)
    return found


def _experts_in_ram(
    arch: ModelArch, file_bytes: int, cells: int, budget: Budget, host: int
) -> Option | None:
    """Dense part, KV and compute buffer on the GPU; as many layers' experts as still fit there
    too; the other layers' experts in RAM, read at RAM speed for the experts a token uses."""
    experts = expert_bytes(arch, file_bytes)
    if not experts:
        return None
    dense = file_bytes - experts
    fixed = dense + kv_cache_bytes(arch, cells) + compute_buffer_bytes(arch, cells, on_gpu=True)
    if fixed > budget.vram_bytes:
        return None
    per_layer = experts / arch.n_layer
    on_gpu = min(int((budget.vram_bytes - fixed) // per_layer), arch.n_layer)
    if on_gpu >= arch.n_layer:
        return None  # everything fits: plain "gpu" is the option
    n_cpu_moe = arch.n_layer - on_gpu
    in_ram = per_layer * n_cpu_moe
    active_share = (arch.n_expert_used / arch.n_expert) if arch.n_expert else 0.1
    read_dense = bytes_per_token(arch, file_bytes) - experts * active_share
    split = Split(
        gpu_bytes=read_dense + per_layer * on_gpu * active_share,
        cpu_bytes=in_ram * active_share,
        gpu_layers=arch.n_layer,
        cpu_layers=n_cpu_moe,
        ram_resident_bytes=in_ram,
        on_gpu=True,
    )
    vram = int(fixed + per_layer * on_gpu)
    return Option("partial", -1, int(host + in_ram), vram, split, True, n_cpu_moe)
