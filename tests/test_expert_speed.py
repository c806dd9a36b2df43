"""Predicted speeds against published llama.cpp runs, NVML-derived bandwidth, machine files that
give bandwidth per GPU, and an MoE with its experts in RAM (issue #12). No timing happens here:
references are published numbers, or numbers measured once on this project's test machine."""

from __future__ import annotations

import types
from pathlib import Path

import pytest

from assistantd.planning import devices
from assistantd.planning.architecture import ModelArch, from_header
from assistantd.planning.catalog import CatalogModel, load_catalog
from assistantd.planning.estimate import GiB, expert_bytes
from assistantd.planning.gguf_header import read_local
from assistantd.planning.hardware import GPU, Machine, probe
from assistantd.planning.planner import Candidate, compute_budget, hardware_of, plan

DATA = Path(__file__).parent / "data"
CATALOG = {m.id: m for m in load_catalog()}

# Architectures of the published runs' models (config.json of each; the catalog's where listed).
ARCH = {
    "tinyllama-1.1b": ModelArch("llama", 1_100_048_384, 22, 2048, 32, 4, 64, 64, 2048, 32000),
    "llama-3.1-8b": ModelArch("llama", 8_030_261_248, 32, 4096, 32, 8, 128, 128, 131072, 128256),
    "qwen3-8b": ModelArch("qwen3", 8_190_735_360, 36, 4096, 32, 8, 128, 128, 40960, 151936),
    "llama-7b": ModelArch("llama", 6_738_415_616, 32, 4096, 32, 32, 128, 128, 2048, 32000),
    "qwen3-30b-a3b": ModelArch(
        "qwen3moe", 30_532_122_624, 48, 2048, 32, 4, 128, 128, 40960, 151936,
        n_active_params=3_300_000_000, n_expert=128, n_expert_used=8,
    ),
    "qwen2.5-coder-7b": CATALOG["qwen2.5-coder-7b-instruct"].arch,
    "qwen3.5-9b": CATALOG["qwen3.5-9b"].arch,
    "qwen3.5-4b": CATALOG["qwen3.5-4b"].arch,
    "gpt-oss-20b": CATALOG["gpt-oss-20b"].arch,
    "gpt-oss-120b": CATALOG["gpt-oss-120b"].arch,
}  # fmt: skip


def nvidia(name: str, vram_gib: int, ram_gib: int = 64, ram_gbs: float = 90) -> Machine:
    return Machine(
        ram_bytes=ram_gib * GiB, cpu_cores=8, cpu_flags=["avx2"], gpu_offload=True,
        gpus=[GPU("nvidia", name, vram_gib * GiB)], memory_bandwidth_gbs=ram_gbs,
    )  # fmt: skip


def mac(name: str, ram_gib: int) -> Machine:
    return Machine(
        ram_bytes=ram_gib * GiB, cpu_cores=10, gpu_offload=True, unified_memory=True,
        gpus=[GPU("apple", name, ram_gib * GiB)],
    )  # fmt: skip


def cpu_box(ram_gbs: float, cores: int) -> Machine:
    return Machine(
        ram_bytes=64 * GiB, cpu_cores=cores, cpu_flags=["avx2"], memory_bandwidth_gbs=ram_gbs
    )


def predicted(
    machine: Machine, model: str, quant: str, size: int | None, n_ctx: int = 4096
) -> Candidate:
    entry = CatalogModel(
        id=model, family=model, repo="x", quants=(quant,), arch=ARCH[model], quality=50.0,
        quality_source="test",
    )  # fmt: skip
    budget = compute_budget(machine, ram_reserve=0, vram_reserve=0)
    sizes = {(model, quant): size} if size else None
    [candidate] = plan([entry], machine, budget, n_ctx=n_ctx, file_sizes=sizes).candidates
    assert candidate.fits, candidate.reason
    return candidate


# (label, machine, model, quant, file bytes (None: estimated), published decode tok/s, source).
# Numbers from tests/data/research/speeds.md (issue #12 research), rows as numbered there.
PUBLISHED = [
    ("RTX 4090, TinyLlama Q4_K_M", nvidia("NVIDIA GeForce RTX 4090", 24), "tinyllama-1.1b",
     "Q4_K_M", 667_815_488, 762,
     "#2 llama-bench tg128 (Vulkan) github.com/geerlingguy/ai-benchmarks/issues/43"),
    ("Mac mini M4 16 GB, Llama-3.1-8B Q4_K_M", mac("Apple M4", 16), "llama-3.1-8b", "Q4_K_M",
     4_920_734_272, 20.9, "#5 github.com/brand-o/normiebench/issues/3"),
    ("M1 Max 64 GB, Llama-3.1-8B Q4_K_M", mac("Apple M1 Max", 64), "llama-3.1-8b", "Q4_K_M",
     4_920_734_272, 46.2, "#6 github.com/brand-o/normiebench/issues/40"),
    ("M4 Max, Qwen3.5-9B Q4_0", mac("Apple M4 Max", 64), "qwen3.5-9b", "Q4_0", None, 53.8,
     "#7 llama-bench -n 128, git.kokoham.com/sleepy/llama.cpp BENCHMARKS.md"),
    ("M4 Max, Qwen3.5-4B Q4_0", mac("Apple M4 Max", 64), "qwen3.5-4b", "Q4_0", None, 80.0,
     "#7 same table"),
    ("RTX 3090 Ti, Qwen3-30B-A3B Q4_K_M", nvidia("NVIDIA GeForce RTX 3090 Ti", 24),
     "qwen3-30b-a3b", "Q4_K_M", 18_556_686_560, 166.9,
     "#17 smeltcore.com/recipes/qwen3-30b-a3b-rtx-3090-ti"),
    ("RTX 5090, Qwen3-8B Q4_K_M", nvidia("NVIDIA GeForce RTX 5090", 32), "qwen3-8b", "Q4_K_M",
     5_027_783_488, 221.7, "#19 github.com/CambrianTech/continuum/pull/1627"),
    ("RTX 5060 Ti, Qwen2.5-Coder-7B Q8_0", nvidia("NVIDIA GeForce RTX 5060 Ti", 16),
     "qwen2.5-coder-7b", "Q8_0", 8_098_525_888, 49.6,
     "#20 inventivehq.com/blog/gguf-quantization-quality-benchmark"),
    ("RTX 5060 Ti, Qwen2.5-Coder-7B Q2_K", nvidia("NVIDIA GeForce RTX 5060 Ti", 16),
     "qwen2.5-coder-7b", "Q2_K", 3_015_940_800, 91.2, "#20 same post"),
    ("i9-13900K DDR5-6400 (102 GB/s), 8 threads, LLaMA-7B Q4_0", cpu_box(102, 8), "llama-7b",
     "Q4_0", 3_825_065_984, 18.3, "#22 github.com/ggml-org/llama.cpp/issues/34"),
    ("RTX 3060 12 GB, gpt-oss-20b at 16K context (experts partly in RAM)",
     nvidia("NVIDIA GeForce RTX 3060", 12, 32, 51), "gpt-oss-20b", "MXFP4", 12_109_566_560, 64,
     "#10 smeltcore.com gpt-oss-20b-on-rtx-3060 (--n-cpu-moe 2, 16K ctx)"),
    ("8 GB GPU + DDR5, gpt-oss-120b experts in RAM",
     nvidia("NVIDIA GeForce RTX 3060 Ti", 8, 96, 96), "gpt-oss-120b", "MXFP4", 63_387_346_464, 22,
     "#14 gokawiil.com/article/74814 (18-25.6)"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("label", "machine", "model", "quant", "size", "tok_s", "source"), PUBLISHED
)
def test_decode_speed_within_25_percent_of_published_runs(
    label: str,
    machine: Machine,
    model: str,
    quant: str,
    size: int | None,
    tok_s: float,
    source: str,
) -> None:
    n_ctx = 16384 if model == "gpt-oss-20b" else 4096
    candidate = predicted(machine, model, quant, size, n_ctx)
    assert abs(candidate.predicted_tok_s / tok_s - 1) <= 0.25, (label, candidate.predicted_tok_s)


def test_at_least_eight_published_points_cover_cards_macs_and_cpus() -> None:
    assert len(PUBLISHED) >= 8
    kinds = {
        ("gpu" if m.gpus else "cpu") + ("-apple" if m.unified_memory else "")
        for _, m, *_ in PUBLISHED
    }
    assert kinds == {"gpu", "gpu-apple", "cpu"}


# The project's test models on its own 2-core CI machine (AMD EPYC, no GPU, otherwise idle).
# Decode as the benchmark measures it, assistantd's single stream (2 threads, greedy, 128
# tokens; `.venv/bin/python -m scripts.bench_editor --model {smollm2,gemma270m}`, 2026-11-23):
#   SmolLM2-135M-Instruct Q4_1 105.7 tok/s (llama-cpp-python in-process 108.7),
#   gemma-3-270m Q4_K_M 62.9 tok/s (in-process 59.0).
# Prompt evaluation, 500 tokens through llm.eval, best of 3 (n_ctx 2048, 2 threads):
#   .venv/bin/python tests/data/measure_local_speed.py <smollm2.gguf> <gemma.gguf>
#   SmolLM2 264 tok/s, Gemma 431 tok/s (its bare eval-loop decode: 133.7 and 66.6 tok/s).
# and its RAM as the probe reports it: measure_bandwidth() 17.7-18.0 GB/s copy throughput,
# machine.memory_bandwidth_gbs 27.5-28.0 (copy / COPY_SHARE_OF_PEAK).
THIS_MACHINE = Machine(
    ram_bytes=8 * GiB, cpu_cores=2, cpu_flags=["avx2", "fma"], memory_bandwidth_gbs=27.7
)
MEASURED = {"smollm2": (105.7, 264.0), "gemma270m": (62.9, 431.0)}


@pytest.mark.parametrize("name", sorted(MEASURED))
def test_test_models_on_this_machine_within_15_percent(name: str, models: dict[str, Path]) -> None:
    path = models[name]
    arch = from_header(read_local(path))
    quant = "Q4_1" if name == "smollm2" else "Q4_K_M"
    entry = CatalogModel(
        id=name, family=name, repo="x", quants=(quant,), arch=arch, quality=1.0,
        quality_source="test",
    )  # fmt: skip
    budget = compute_budget(THIS_MACHINE, ram_reserve=0, vram_reserve=0)
    [c] = plan(
        [entry], THIS_MACHINE, budget, n_ctx=2048, file_sizes={(name, quant): path.stat().st_size},
        reference_prompt_tokens=500,
    ).candidates  # fmt: skip
    decode, prompt = MEASURED[name]
    assert abs(c.predicted_tok_s / decode - 1) <= 0.15, c.predicted_tok_s
    # Prompt speed is compute-bound and kernel-dependent (Q4_1 plain, Q4_K_M repacked).
    assert abs(c.predicted_prompt_tok_s / prompt - 1) <= 0.15, c.predicted_prompt_tok_s
    assert c.predicted_ttft_ms == pytest.approx(
        (500 / c.predicted_prompt_tok_s + 1 / c.predicted_tok_s) * 1000, rel=0.02
    )


def fake_nvml_with_clocks() -> types.ModuleType:
    """An RTX 4090 as NVML describes it: 384-bit bus, 10501 MHz max memory clock, 16384 CUDA
    cores at 2520 MHz max SM clock."""
    nvml = types.ModuleType("pynvml")
    nvml.NVML_CLOCK_SM = 1  # type: ignore[attr-defined]
    nvml.NVML_CLOCK_MEM = 2  # type: ignore[attr-defined]
    nvml.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nvml.nvmlSystemGetDriverVersion = lambda: "560.35.03"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetName = lambda h: "NVIDIA GeForce RTX 4090"  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(  # type: ignore[attr-defined]
        total=24 * GiB, free=23 * GiB, used=GiB
    )
    nvml.nvmlDeviceGetCudaComputeCapability = lambda h: (8, 9)  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMemoryBusWidth = lambda h: 384  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetMaxClockInfo = lambda h, kind: {1: 2520, 2: 10501}[kind]  # type: ignore[attr-defined]
    nvml.nvmlDeviceGetNumGpuCores = lambda h: 16384  # type: ignore[attr-defined]
    return nvml


def test_nvml_bus_width_and_memory_clock_give_the_spec_bandwidth() -> None:
    machine = probe(nvml=fake_nvml_with_clocks(), sysfs=Path("/nonexistent"), offload=True)
    [gpu] = machine.gpus
    assert gpu.memory_bandwidth_gbs == pytest.approx(1008, rel=0.01)  # spec sheet: 1008 GB/s
    assert gpu.fp16_tflops == pytest.approx(165, rel=0.01)  # Ada whitepaper: 165.2 (FP32 acc)
    assert (
        hardware_of(machine, compute_budget(machine, ram_reserve=0, vram_reserve=0)).gpu_gbs
        == gpu.memory_bandwidth_gbs
    )


def test_machine_file_gives_bandwidth_per_gpu_and_the_slowest_card_sets_the_pace() -> None:
    machine = Machine.load(DATA / "workstation_2gpu.json")
    assert [g.memory_bandwidth_gbs for g in machine.gpus] == [936.2, 700.0]
    hw = hardware_of(machine, compute_budget(machine, ram_reserve=0, vram_reserve=0))
    assert (hw.gpu_gbs, hw.ram_gbs) == (700.0, 83.2)
    assert hw.gpu_tflops == devices.DEFAULT_GPU["nvidia"][1]  # the unknown card: a default


def test_names_resolve_to_the_spec_table_and_described_machines_get_defaults() -> None:
    assert devices.lookup("NVIDIA GeForce RTX 4060 Ti") == devices.GPU_SPECS["rtx 4060 ti"]
    assert devices.lookup("NVIDIA GeForce RTX 4060 Laptop GPU") == devices.GPU_SPECS["rtx 4060"]
    assert devices.lookup("NVIDIA A100-SXM4-80GB") is not None
    assert devices.lookup("Apple M3 Max") == (400, 16)
    assert devices.lookup("M2 Pro") == (200, 6.8)
    machine = Machine(ram_bytes=16 * GiB, cpu_cores=8)  # no bandwidth given
    assert hardware_of(machine, compute_budget(machine, ram_reserve=0, vram_reserve=0)).ram_gbs > 20


def test_metal_working_set_limits_what_a_mac_can_load() -> None:
    assert devices.apple_working_set(64 * GiB) == 48 * GiB  # 75% at 32 GB and above
    assert devices.apple_working_set(16 * GiB) == int(16 * GiB * 0.67)
    machine = mac("Apple M2 Pro", 16)
    budget = compute_budget(machine, ram_reserve=GiB, vram_reserve=0)
    result = plan([CATALOG["gpt-oss-20b"]], machine, budget, n_ctx=8192)
    [c] = result.candidates
    assert not c.fits and "Metal working set" in c.reason  # 12 GB of weights > 10.7 GB


@pytest.mark.parametrize(
    ("card", "vram"),
    [
        ("NVIDIA GeForce RTX 4060", 8),
        ("NVIDIA GeForce RTX 3060", 12),
        ("NVIDIA GeForce RTX 4080", 16),
    ],
)
@pytest.mark.parametrize("model", ["qwen3.6-35b-a3b", "gpt-oss-20b"])
def test_moe_too_big_for_the_card_keeps_its_experts_in_ram(
    card: str, vram: int, model: str
) -> None:
    machine = nvidia(card, vram, ram_gib=64, ram_gbs=60)
    budget = compute_budget(machine, ram_reserve=0, vram_reserve=GiB // 2)
    quant = "Q4_K_M" if model.startswith("qwen") else "MXFP4"
    result = plan([CATALOG[model]], machine, budget, n_ctx=8192)
    c = next(c for c in result.candidates if c.quant == quant)
    if c.placement == "gpu":  # gpt-oss-20b (12.1 GB) does fit a 16 GB card whole
        assert vram >= 16 and model == "gpt-oss-20b"
        return
    assert c.fits and c.placement == "partial" and c.experts_in_ram, c.reason
    assert "experts of" in c.reason and "in RAM" in c.reason
    assert c.n_gpu_layers == -1 and 0 < c.n_cpu_moe <= CATALOG[model].arch.n_layer
    # The split: attention, shared weights and KV fill the card; the experts' bulk is in RAM.
    assert c.vram_bytes <= budget.vram_bytes and c.vram_bytes > 0.5 * budget.vram_bytes
    arch = CATALOG[model].arch
    in_ram = expert_bytes(arch, c.file_bytes) * c.n_cpu_moe / arch.n_layer
    assert c.ram_bytes >= in_ram > 0
    assert c.ram_bytes + c.vram_bytes >= c.file_bytes
    # Faster than layers split between GPU and CPU, slower than a card that holds it all.
    big = nvidia("NVIDIA GeForce RTX 5090", 32, ram_gib=64, ram_gbs=60)
    whole = plan(
        [CATALOG[model]], big, compute_budget(big, ram_reserve=0, vram_reserve=0), n_ctx=8192
    )
    full = next(x for x in whole.candidates if x.quant == quant)
    assert full.placement == "gpu" and full.predicted_tok_s > c.predicted_tok_s > 10
