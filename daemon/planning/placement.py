"""Where a model's tensors can go on one machine, with the memory each option takes and where
each decoded token's bytes are read from.

Options, fastest first: all on the GPU; an MoE's routed experts in RAM with everything else
(attention, shared experts, embeddings, KV) on the GPU, as llama.cpp's `--n-cpu-moe` keeps as
many layers' experts on the GPU as fit; the first layers on the GPU and the rest on the CPU;
all on the CPU. Unified memory (Apple) has one pool, limited by Metal's working set.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from assistantd.planning.architecture import ModelArch
from assistantd.planning.estimate import bytes_per_token, expert_bytes, footprint, host_bytes
from assistantd.planning.per_device import CPU, DeviceBytes, device_share, split_bytes
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
    devices: tuple[DeviceBytes, ...] = ()  # bytes per device, the CPU first


def device_shares(budget: Budget) -> list[tuple[str, float]]:
    """The devices a plan may use and their shares of the layers: each its budget, as
    llama.cpp's default split gives each its free memory."""
    if budget.devices:
        return [(d.name, float(d.bytes)) for d in budget.devices if d.bytes > 0]
    return [("GPU", float(budget.vram_bytes))]


def over_budget(found: list[DeviceBytes] | tuple[DeviceBytes, ...], budget: Budget) -> bool:
    """Whether any device gets more than its own budget (or all more than the sum)."""
    limits = {d.name: d.bytes for d in budget.devices}
    if sum(d.total_bytes for d in found if d.device != CPU) > budget.vram_bytes:
        return True
    return any(d.total_bytes > limits[d.device] for d in found if d.device in limits)


def options(
    arch: ModelArch, file_bytes: int, n_ctx: int, budget: Budget, n_seq: int = 1
) -> list[Option]:
    """Every placement worth trying, GPU-heaviest first (the caller keeps the first that fits
    unless a later one is predicted faster)."""
    read = bytes_per_token(arch, file_bytes)
    cpu = footprint(arch, file_bytes, n_ctx, n_seq=n_seq)
    on_cpu = split_bytes(arch, file_bytes, n_ctx, n_seq=n_seq, n_gpu_layers=0, devices=[])
    cpu_only = Option(
        "cpu",
        0,
        cpu.total_bytes,
        0,
        Split(cpu_bytes=read, cpu_layers=arch.n_layer),
        devices=tuple(on_cpu),
    )
    if budget.unified:
        # One pool: RAM holds everything, and what the GPU touches must stay within Metal's
        # working set. Running on the CPU instead would only be slower in the same memory.
        wired = cpu.weights_bytes + cpu.kv_bytes + cpu.compute_bytes
        split = Split(gpu_bytes=read, gpu_layers=arch.n_layer, on_gpu=True)
        return [Option("gpu", -1, cpu.total_bytes, wired, split)]
    if budget.vram_bytes <= 0:
        return [cpu_only]
    shares = device_shares(budget)
    host = host_bytes(arch, n_ctx * n_seq)

    def placed(n_gpu_layers: int, n_cpu_moe: int = 0) -> tuple[DeviceBytes, ...]:
        return tuple(
            split_bytes(
                arch,
                file_bytes,
                n_ctx,
                n_seq=n_seq,
                n_gpu_layers=n_gpu_layers,
                devices=shares,
                n_cpu_moe=n_cpu_moe,
            )
        )

    def option(
        kind: Placement, ngl: int, found: tuple[DeviceBytes, ...], split: Split, n_cpu_moe: int = 0
    ) -> Option:
        return Option(
            kind,
            ngl,
            found[0].total_bytes + host,
            device_share(list(found)),
            split,
            experts_in_ram=n_cpu_moe > 0,
            n_cpu_moe=n_cpu_moe,
            devices=found,
        )

    full = placed(-1)
    found = [option("gpu", -1, full, Split(gpu_bytes=read, gpu_layers=arch.n_layer, on_gpu=True))]
    experts = _experts_in_ram(arch, file_bytes, read, budget, placed)
    if experts:
        found.append(option("partial", -1, experts[0], experts[1], experts[2]))
    layers = _most_layers(arch.n_layer, lambda ngl: not over_budget(placed(ngl), budget))
    if layers > 0:
        share = (layers - 1) / arch.n_layer  # n_gpu_layers counts the output layer
        split = Split(
            gpu_bytes=read * share,
            cpu_bytes=read * (1 - share),
            gpu_layers=layers - 1,
            cpu_layers=arch.n_layer - layers + 1,
            ram_resident_bytes=file_bytes * (1 - share),
            on_gpu=True,
        )
        found.append(option("partial", layers, placed(layers), split))
    found.append(cpu_only)
    return found


def _most_layers(n_layer: int, fits: Callable[[int], bool]) -> int:
    """The largest n_gpu_layers below a full offload that fits (0: none); fits is monotone."""
    low, high = 0, n_layer
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low


def _experts_in_ram(
    arch: ModelArch,
    file_bytes: int,
    read: float,
    budget: Budget,
    placed: Callable[[int, int], tuple[DeviceBytes, ...]],
) -> tuple[tuple[DeviceBytes, ...], Split, int] | None:
    """Dense part, KV and compute buffer on the GPU; as many layers' experts as still fit there
    too; the other layers' experts in RAM, read at RAM speed for the experts a token uses."""
    experts = expert_bytes(arch, file_bytes)
    if not experts:
        return None
    if not over_budget(placed(-1, 0), budget):
        return None  # everything fits: plain "gpu" is the option
    if over_budget(placed(-1, arch.n_layer), budget):
        return None  # not even the dense part fits
    # The fewest layers whose experts must stay in RAM: the most that fit on the device.
    kept = _most_layers(
        arch.n_layer, lambda k: not over_budget(placed(-1, arch.n_layer - k), budget)
    )
    n_cpu_moe = arch.n_layer - kept
    per_layer = experts / arch.n_layer
    active_share = (arch.n_expert_used / arch.n_expert) if arch.n_expert else 0.1
    in_ram = per_layer * n_cpu_moe
    read_dense = read - experts * active_share
    split = Split(
        gpu_bytes=read_dense + per_layer * kept * active_share,
        cpu_bytes=in_ram * active_share,
        gpu_layers=arch.n_layer,
        cpu_layers=n_cpu_moe,
        ram_resident_bytes=in_ram,
        on_gpu=True,
    )
    return placed(-1, n_cpu_moe), split, n_cpu_moe
