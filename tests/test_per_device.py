"""Layers and bytes per device by llama.cpp's rules, and what a worker is told from them.
(The bytes themselves are checked against llama.cpp's own figures in test_rpc.py.)"""

from __future__ import annotations

from pathlib import Path

from assistantd.planning.architecture import from_header
from assistantd.planning.gguf_header import read_local
from assistantd.planning.hardware import GPU, Machine
from assistantd.planning.per_device import CPU, layer_devices, split_bytes
from assistantd.planning.worker_devices import worker_devices

GiB = 1024**3


def test_n_gpu_layers_counts_the_output_layer_and_takes_the_last_layers() -> None:
    assert layer_devices(4, -1, [1.0]) == [0, 0, 0, 0, 0]
    assert layer_devices(4, 2, [1.0]) == [-1, -1, -1, 0, 0]  # layer 3 and the output
    assert layer_devices(4, 0, [1.0]) == [-1] * 5
    assert layer_devices(4, 3, []) == [-1] * 5  # no device: everything on the CPU


def test_two_devices_share_the_layers_in_order_of_their_split() -> None:
    assert layer_devices(5, -1, [1.0, 1.0]) == [0, 0, 0, 1, 1, 1]
    assert layer_devices(5, -1, [2.0, 1.0]) == [0, 0, 0, 0, 1, 1]


def test_the_cpu_keeps_the_embedding_and_the_device_a_copy_of_a_tied_output(
    models: dict[str, Path],
) -> None:
    header = read_local(models["smollm2"])
    arch = from_header(header)
    cpu, device = split_bytes(
        arch, header.tensor_bytes, 2048, n_gpu_layers=-1, devices=[("GPU", 1.0)]
    )
    assert cpu.device == CPU and cpu.weights_bytes == arch.embd_bytes and cpu.kv_bytes == 0
    assert device.layers == arch.n_layer + 1
    # Tied: the output layer is a copy of the embedding (float sums: within a byte).
    assert abs(device.weights_bytes - header.tensor_bytes) <= 1


def rpc_machine() -> Machine:
    gpu = GPU("rpc", "RPC", 8 * GiB, device="RPC[10.0.0.5:50052]", endpoint="10.0.0.5:50052")
    return Machine(ram_bytes=16 * GiB, cpu_cores=4, gpu_offload=True, gpus=[gpu])


def test_a_worker_is_given_exactly_the_devices_with_layers_and_their_servers() -> None:
    placed = [
        {"device": CPU, "layers": 0},
        {"device": "RPC[10.0.0.5:50052]", "layers": 31},
    ]
    where = worker_devices(placed, rpc_machine())
    assert where.devices == ("RPC[10.0.0.5:50052]",)
    assert where.split == (31.0,) and where.rpc == ("10.0.0.5:50052",)


def test_no_layers_on_a_device_means_none_given_and_no_plan_means_llama_cpp_chooses() -> None:
    on_cpu = [{"device": CPU, "layers": 31}, {"device": "RPC[10.0.0.5:50052]", "layers": 0}]
    assert worker_devices(on_cpu, rpc_machine()).devices == ()
    # Unified memory (Apple) or a CPU placement plans no bytes per device.
    assert worker_devices([], rpc_machine()).devices is None
