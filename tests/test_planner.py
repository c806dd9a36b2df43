"""Hardware probe, budget and planner on described machines (no card is needed for these)."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest

from assistantd.devices.registry import DeviceList, LlamaDevice
from assistantd.errors import ConfigError
from assistantd.planning.architecture import from_header
from assistantd.planning.catalog import CatalogModel, load_catalog
from assistantd.planning.estimate import GiB, file_bytes_estimate
from assistantd.planning.gguf_header import read_local
from assistantd.planning.hardware import GPU, Machine, probe, probe_amd
from assistantd.planning.planner import compute_budget, plan
from tests.support.daemons import ROOT


def fake_nvml(cards: list[tuple[str, int, int]], fail_init: bool = False) -> types.ModuleType:
    """A stand-in for pynvml: no NVIDIA card exists on these machines, so NVML is simulated."""
    nvml = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init() -> None:
        if fail_init:
            raise NVMLError("NVML Shared Library Not Found")

    nvml.NVMLError = NVMLError  # type: ignore[attr-defined]
    nvml.nvmlInit = init  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlSystemGetDriverVersion = lambda: b"560.35.03"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: len(cards)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda h: cards[h][0]  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        total=cards[h][1], free=cards[h][2], used=cards[h][1] - cards[h][2]
    )
    nvml.nvmlDeviceGetCudaComputeCapability = lambda h: (8, 9)  # type: ignore[attr-defined]
    return nvml


def test_probe_reads_nvidia_cards_through_nvml() -> None:
    machine = probe(
        nvml=fake_nvml([("NVIDIA GeForce RTX 4070", 12 * GiB, 11 * GiB)]),
        sysfs=Path("/nonexistent"),
        offload=True,
    )
    assert machine.ram_bytes > 0 and machine.cpu_cores >= 1
    [gpu] = machine.gpus
    assert (gpu.vendor, gpu.name, gpu.vram_bytes, gpu.vram_free_bytes) == (
        "nvidia",
        "NVIDIA GeForce RTX 4070",
        12 * GiB,
        11 * GiB,
    )
    assert (gpu.driver, gpu.compute_capability) == ("560.35.03", "8.9")


def test_nvml_without_a_driver_means_no_nvidia_gpu() -> None:
    machine = probe(nvml=fake_nvml([], fail_init=True), sysfs=Path("/nonexistent"), offload=False)
    assert machine.gpus == []


def test_a_card_the_build_cannot_use_does_not_count_and_says_how_to_fix_it() -> None:
    """NVML sees the card (a stand-in: no NVIDIA card here); llama.cpp's registry, as a CPU
    build with RPC lists it, has no device for it."""
    machine = probe(
        nvml=fake_nvml([("NVIDIA GeForce RTX 4070", 12 * GiB, 11 * GiB)]),
        sysfs=Path("/nonexistent"),
        listed=DeviceList(backends=["RPC", "CPU"]),
    )
    assert not machine.gpu_offload and not machine.gpus[0].usable
    budget = compute_budget(machine, ram_reserve=0, vram_reserve=0)
    assert budget.vram_bytes == 0
    assert any(
        "CPU-only; rebuild it with CUDA (`scripts/setup.sh`, see `assistantctl doctor`) to use "
        "the NVIDIA GeForce RTX 4070" in n
        for n in budget.notes
    )


def test_a_cuda_device_gets_its_memory_from_llama_cpp_and_its_speed_from_nvml() -> None:
    """The registry's free memory is the budget; NVML (a stand-in) adds the bandwidth."""
    listed = DeviceList(
        devices=[
            LlamaDevice("CUDA0", "NVIDIA GeForce RTX 4070", "gpu", "CUDA", 10 * GiB, 12 * GiB)
        ],
        backends=["CUDA", "RPC", "CPU"],
    )
    machine = probe(
        nvml=fake_nvml([("NVIDIA GeForce RTX 4070", 12 * GiB, 11 * GiB)]),
        sysfs=Path("/nonexistent"),
        listed=listed,
    )
    [gpu] = machine.gpus
    assert (gpu.device, gpu.backend, gpu.free_bytes, gpu.usable) == (
        "CUDA0",
        "cuda",
        10 * GiB,
        True,
    )
    assert machine.backend == "cuda" and machine.gpu_offload
    budget = compute_budget(machine, ram_reserve=0, vram_reserve=GiB)
    assert [(d.name, d.bytes) for d in budget.devices] == [("CUDA0", 9 * GiB)]


def test_amd_cards_from_sysfs(tmp_path: Path) -> None:
    device = tmp_path / "class/drm/card0/device"
    device.mkdir(parents=True)
    (device / "mem_info_vram_total").write_text(str(16 * GiB))
    (device / "mem_info_vram_used").write_text(str(2 * GiB))
    (device / "product_name").write_text("Radeon RX 7800 XT\n")
    [gpu] = probe_amd(tmp_path)
    assert (gpu.vendor, gpu.name, gpu.free_bytes) == ("amd", "Radeon RX 7800 XT", 14 * GiB)


def test_this_machine_is_probed_for_real() -> None:
    machine = probe()
    assert machine.ram_bytes > machine.available_bytes > 0
    assert machine.memory_bandwidth_gbs and machine.memory_bandwidth_gbs > 0.5
    assert Machine.from_json(json.loads(json.dumps(machine.to_json()))) == machine


def described(ram_gib: float, vram_gib: float = 0, offload: bool = True) -> Machine:
    gpus = [GPU("nvidia", "RTX 4060", int(vram_gib * GiB))] if vram_gib else []
    return Machine(
        ram_bytes=int(ram_gib * GiB),
        cpu_cores=8,
        gpu_offload=offload,
        gpus=gpus,
        memory_bandwidth_gbs=50.0,
    )


def test_budget_is_available_memory_minus_reserves_or_the_override() -> None:
    machine = described(16, 8)
    budget = compute_budget(machine, ram_reserve=4 * GiB, vram_reserve=GiB // 2)
    assert (budget.ram_bytes, budget.vram_bytes) == (12 * GiB, int(7.5 * GiB))
    forced = compute_budget(
        machine, ram_reserve=4 * GiB, vram_reserve=0, ram_override=6 * GiB, vram_override=2 * GiB
    )
    assert (forced.ram_bytes, forced.vram_bytes) == (6 * GiB, 2 * GiB)


def test_bigger_budgets_get_bigger_models_and_every_rejection_has_a_reason() -> None:
    catalog = load_catalog()
    chosen = []
    for ram in (2, 6, 24, 64):
        machine = described(ram, offload=False)
        result = plan(
            catalog,
            machine,
            compute_budget(machine, ram_reserve=GiB, vram_reserve=0),
            n_ctx=4096,
            prefer="quality",
        )
        assert result.chosen is not None
        chosen.append(result.chosen.ram_bytes)
        for c in result.candidates:
            assert c.fits == (c.ram_bytes <= result.budget.ram_bytes), c
            if not c.fits:
                assert "needs" in c.reason and "budget" in c.reason
    assert chosen == sorted(chosen) and chosen[0] < chosen[-1]


def test_full_gpu_beats_partial_beats_cpu_for_the_same_model() -> None:
    catalog = [m for m in load_catalog() if m.id == "qwen2.5-coder-7b-instruct"]
    placements = {}
    for vram in (12, 3, 0):
        machine = described(32, vram)
        result = plan(
            catalog, machine, compute_budget(machine, ram_reserve=0, vram_reserve=0), n_ctx=4096
        )
        q4 = next(c for c in result.candidates if c.quant == "Q4_K_M")
        placements[vram] = (q4.placement, q4.n_gpu_layers, q4.predicted_tok_s)
    assert placements[12][0] == "gpu"
    assert placements[3][0] == "partial" and 0 < placements[3][1] < 28
    assert placements[0][0] == "cpu"
    assert placements[12][2] > placements[3][2] > placements[0][2]


def test_candidates_below_the_speed_target_rank_after_those_that_reach_it() -> None:
    machine = described(64, offload=False)
    result = plan(
        load_catalog(),
        machine,
        compute_budget(machine, ram_reserve=0, vram_reserve=0),
        n_ctx=4096,
        min_tok_s=15,
    )
    meets = [c.meets_target for c in result.ladder]
    assert True in meets and False in meets
    assert meets == sorted(meets, reverse=True)  # every fast one before every slow one
    slow = [c for c in result.ladder if not c.meets_target]
    assert all(c.predicted_tok_s < 15 and "< target 15.0 tok/s" in c.reason for c in slow)
    assert all(c.predicted_tok_s >= 15 for c in result.ladder if c.meets_target)


def test_mixture_of_experts_needs_memory_for_all_but_reads_only_active() -> None:
    [moe] = [m for m in load_catalog() if m.id == "qwen3.6-35b-a3b"]
    machine = described(64, offload=False)
    result = plan(
        [moe], machine, compute_budget(machine, ram_reserve=0, vram_reserve=0), n_ctx=4096
    )
    q4 = next(c for c in result.candidates if c.quant == "Q4_K_M")
    dense_speed = 50e9 * 0.65 / q4.file_bytes
    assert q4.ram_bytes > q4.file_bytes
    assert q4.predicted_tok_s > 5 * dense_speed


def test_estimates_are_close_to_real_files(models: dict[str, Path]) -> None:
    arch = from_header(read_local(models["gemma270m"]))
    estimate = file_bytes_estimate(arch, "Q4_K_M")
    actual = models["gemma270m"].stat().st_size
    assert abs(estimate - actual) / actual < 0.10


def test_catalog_numbers_match_a_real_header(models: dict[str, Path]) -> None:
    [starter] = [m for m in load_catalog() if m.starter]
    real = from_header(read_local(models["smollm2"]))
    # Tensor sizes come only from a file's own table.
    assert starter.arch == dataclasses.replace(real, embd_bytes=0, output_bytes=0)


def test_plan_cli_for_a_described_machine(tmp_path: Path) -> None:
    machine_file = tmp_path / "laptop.json"
    machine_file.write_text(
        json.dumps(
            {
                "ram_bytes": 16 * GiB,
                "cpu_cores": 8,
                "gpu_offload": True,
                "unified_memory": False,
                "gpus": [{"vendor": "nvidia", "name": "RTX 4060", "vram_bytes": 8 * GiB}],
            }
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "assistantd.cli.main",
            "plan",
            "--json",
            "--machine",
            str(machine_file),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert {"machine", "budget", "chosen", "candidates"} <= set(data)
    chosen = data["chosen"]
    assert {
        "model",
        "quant",
        "file_bytes",
        "estimated_bytes",
        "placement",
        "n_gpu_layers",
        "n_ctx",
    } <= set(chosen)
    # On the GPU: wholly, mostly (most layers on the card beside autocomplete's FIM model, with
    # 16 GB of RAM leaving 6 GB to the OS, an IDE and a browser), or an MoE's experts in RAM.
    on_card = chosen["vram_bytes"] >= chosen["ram_bytes"]
    assert chosen["placement"] == "gpu" or on_card or chosen["experts_in_ram"]
    new_keys = {"params_b", "active_params_b", "licence", "predicted_tok_s"}
    assert new_keys | {"predicted_ttft_ms", "predicted_prompt_tok_s"} <= set(chosen)
    assert all({"fits", "reason", "predicted_ttft_ms"} <= set(c) for c in data["candidates"])

    text = subprocess.run(
        [sys.executable, "-m", "assistantd.cli.main", "plan", "--machine", str(machine_file)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    ).stdout
    assert chosen["model"] in text and "needs" in text


def test_probe_cli_prints_this_machine_in_the_machine_file_shape() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "assistantd.cli.main", "probe", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    machine = Machine.from_json(json.loads(result.stdout))
    assert machine.ram_bytes > 0


def test_a_bad_machine_file_is_explained(tmp_path: Path) -> None:
    bad = tmp_path / "m.json"
    bad.write_text('{"ram": 5}')
    with pytest.raises(ConfigError, match="ram_bytes"):
        Machine.load(bad)


def test_catalog_entries_are_validated(tmp_path: Path) -> None:
    bad = tmp_path / "catalog.toml"
    bad.write_text('[[model]]\nid = "x"\nquants = ["Q9_Z"]\n')
    with pytest.raises(ConfigError):
        load_catalog(bad)
    assert isinstance(load_catalog()[0], CatalogModel)
