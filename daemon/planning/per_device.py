"""Which layers, and how many bytes of weights, KV cache and compute buffer, sit on each device
when llama.cpp loads a model with a given n_gpu_layers, split and experts override.

llama.cpp's rules (src/llama-model.cpp, load_tensors): the input embedding always stays on the
CPU; with n_gpu_layers = k the output layer and the last k−1 repeating layers go to the devices,
shared out in order by the split; a layer's KV cache lives with its layer; the device holding the
output layer also holds the logits rows of its compute buffer; a tied output matrix is copied to
that device. Checked against what llama.cpp logs it allocated on an RPC device (tests/test_rpc.py).
"""

from __future__ import annotations

import bisect
from dataclasses import asdict, dataclass
from typing import Any

from assistantd.planning.architecture import ModelArch
from assistantd.planning.estimate import (
    N_BATCH,
    compute_buffer_bytes,
    expert_bytes,
    kv_cache_bytes,
)

# The worker's Llama object keeps a small context of its own beside the slot engine's
# (worker/engine.py): its KV cache and compute buffer sit on the same devices.
AUX_CTX = 64
CPU = "CPU"


@dataclass(frozen=True)
class DeviceBytes:
    device: str
    layers: int  # repeating layers (and the output layer) placed here
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes

    def to_json(self) -> dict[str, int | str]:
        return {**asdict(self), "total_bytes": self.total_bytes}


def layer_devices(n_layer: int, n_gpu_layers: int, shares: list[float]) -> list[int]:
    """Device index of layers 0…n_layer (n_layer is the output layer); -1 is the CPU."""
    if not shares:
        return [-1] * (n_layer + 1)
    n_all = n_layer + 1
    ngl = n_all if n_gpu_layers < 0 else min(n_gpu_layers, n_all)
    start = max(n_all - ngl, 0)
    total = sum(shares) or 1.0
    bounds, running = [], 0.0
    for share in shares:
        running += share
        bounds.append(running / total)
    placed = []
    for il in range(n_all):
        if il < start:
            placed.append(-1)
        else:
            index = bisect.bisect_right(bounds, (il - start) / ngl)
            placed.append(min(index, len(shares) - 1))
    return placed


def embedding_bytes(arch: ModelArch, file_bytes: int) -> int:
    """The input embedding's bytes: from the file's tensor table, else its share of the file."""
    if arch.embd_bytes:
        return arch.embd_bytes
    share = min(arch.n_vocab * arch.n_embd / max(arch.n_params, 1), 0.9)
    return int(file_bytes * share)


def split_bytes(
    arch: ModelArch,
    file_bytes: int,
    n_ctx: int,
    *,
    n_seq: int = 1,
    n_gpu_layers: int,
    devices: list[tuple[str, float]],
    n_cpu_moe: int = 0,
) -> list[DeviceBytes]:
    """Bytes per device, the CPU first, for a worker of `n_seq` slots of `n_ctx` each."""
    names = [CPU] + [name for name, _ in devices]
    placed = layer_devices(arch.n_layer, n_gpu_layers, [share for _, share in devices])
    embd = embedding_bytes(arch, file_bytes)
    output = arch.output_bytes or embd  # tied: the output layer's device gets a copy
    repeating = max(file_bytes - embd - arch.output_bytes, 0) / arch.n_layer
    experts_per_layer = (arch.expert_tensor_bytes or expert_bytes(arch, file_bytes)) / arch.n_layer
    cells = n_ctx * n_seq
    kv_per_layer = (kv_cache_bytes(arch, cells) + kv_cache_bytes(arch, AUX_CTX)) / arch.n_layer
    weights = [0.0] * len(names)
    kv = [0.0] * len(names)
    layers = [0] * len(names)
    weights[0] += embd
    for il, where in enumerate(placed):
        slot = where + 1
        layers[slot] += 1
        if il == arch.n_layer:
            weights[slot] += output if (slot or arch.output_bytes) else 0
            continue
        kv[slot] += kv_per_layer
        if slot and il < n_cpu_moe and experts_per_layer:
            weights[slot] += repeating - experts_per_layer
            weights[0] += experts_per_layer
        else:
            weights[slot] += repeating
    compute = [0] * len(names)
    compute[0] = compute_buffer_bytes(arch, cells, on_gpu=False)
    output_slot = placed[-1] + 1
    for slot in range(1, len(names)):
        if layers[slot]:
            compute[slot] = _device_compute(arch, cells, holds_output=slot == output_slot)
    return [
        DeviceBytes(names[i], layers[i], int(weights[i]), int(kv[i]), compute[i])
        for i in range(len(names))
    ]


def _device_compute(arch: ModelArch, cells: int, *, holds_output: bool) -> int:
    """Flash attention (llama.cpp's "auto" turns it on where the device supports it): no
    n_ctx-wide score matrix; the logits rows of a full batch on the device with the output
    layer; both the slot engine's context and the worker's small one."""
    total = 0
    for n_ubatch in (min(N_BATCH, cells), AUX_CTX):
        activations = 3 * n_ubatch * arch.n_embd * 4
        logits = arch.n_vocab * n_ubatch * 4 if holds_output else 0
        total += logits + activations
    return total


def device_share(found: list[DeviceBytes]) -> int:
    """Bytes on all devices but the CPU."""
    return sum(d.total_bytes for d in found if d.device != CPU)


def describe_placement(placed: list[dict[str, Any]]) -> str:
    """'31 layers, 0.59 GiB on RPC[127.0.0.1:50052]; 0.05 GiB on CPU' (empty: nothing placed)."""
    parts = [
        f"{d['layers']} layers, {d['total_bytes'] / 2**30:.2f} GiB on {d['device']}"
        for d in placed
        if d["device"] != CPU and d["layers"]
    ]
    return "; ".join(parts)
