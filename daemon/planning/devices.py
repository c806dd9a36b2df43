"""How fast each device reads memory and multiplies: the two numbers speed predictions need.

A GPU's memory bandwidth comes from NVML when the card is NVIDIA (bus width × max memory clock
× 2, DDR), else from the machine file (`memory_bandwidth_gbs` per GPU), else from the table
below by name. Compute (dense FP16 tensor TFLOPS) comes from the table, or from NVML's SM count
and clock. Figures are vendor spec sheets, collected in tests/data/research/speeds.md for issue #12:
nvidia.com product pages and the Ampere/Ada/Blackwell whitepapers, the A100/H100/H200/L4
datasheets, amd.com, apple.com (M-series memory bandwidth), FP16 figures for GeForce taken with
FP32 accumulate (what llama.cpp's cuBLAS/MMA paths get).
"""

from __future__ import annotations

import platform

# name fragment (lower case) → (memory bandwidth GB/s, dense FP16 tensor TFLOPS). Longest
# matching fragment wins, so "rtx 4090 d" style variants fall back to their base card.
GPU_SPECS: dict[str, tuple[float, float]] = {
    "gtx 1650": (192, 6),
    "rtx 2060": (336, 52),
    "rtx 2070": (448, 60),
    "rtx 2080 ti": (616, 108),
    "rtx 3050": (224, 36),
    "rtx 3060 ti": (448, 65),
    "rtx 3060": (360, 51),
    "rtx 3070 ti": (608, 87),
    "rtx 3070": (448, 81),
    "rtx 3080 ti": (912, 136),
    "rtx 3080": (760, 119),
    "rtx 3090 ti": (1008, 160),
    "rtx 3090": (936, 71),
    "rtx 4060 ti": (288, 88),
    "rtx 4060": (272, 60),
    "rtx 4070 ti super": (672, 177),
    "rtx 4070 ti": (504, 160),
    "rtx 4070 super": (504, 142),
    "rtx 4070": (504, 117),
    "rtx 4080 super": (736, 209),
    "rtx 4080": (717, 195),
    "rtx 4090": (1008, 165),
    "rtx 5060 ti": (448, 95),
    "rtx 5060": (448, 77),
    "rtx 5070 ti": (896, 176),
    "rtx 5070": (672, 124),
    "rtx 5080": (960, 225),
    "rtx 5090": (1792, 209),
    "rtx a4000": (448, 77),
    "rtx a6000": (768, 155),
    "rtx 6000 ada": (960, 364),
    "l4": (300, 121),
    "l40s": (864, 362),
    "a10": (600, 125),
    "a100 80gb": (2039, 312),
    "a100": (1555, 312),
    "h100 pcie": (2000, 756),
    "h100": (3350, 989),
    "h200": (4800, 989),
    "b200": (8000, 2250),
    # AMD (ROCm / Vulkan)
    "rx 6800 xt": (512, 41),
    "rx 6900 xt": (512, 46),
    "rx 7600": (288, 43),
    "rx 7800 xt": (624, 74),
    "rx 7900 xt": (800, 103),
    "rx 7900 xtx": (960, 123),
    "rx 9070 xt": (640, 195),
    "mi300x": (5300, 1307),
    # Apple GPUs (unified memory: this is also the RAM bandwidth). No tensor-core FP16 gain.
    "apple m1 ultra": (800, 21),
    "apple m1 max": (400, 10.4),
    "apple m1 pro": (200, 5.2),
    "apple m1": (68, 2.6),
    "apple m2 ultra": (800, 27),
    "apple m2 max": (400, 13.6),
    "apple m2 pro": (200, 6.8),
    "apple m2": (100, 3.6),
    "apple m3 ultra": (819, 32),
    "apple m3 max": (400, 16),
    "apple m3 pro": (150, 7),
    "apple m3": (100, 4),
    "apple m4 max": (546, 17),
    "apple m4 pro": (273, 9),
    "apple m4": (120, 4.6),
}

# A CPU's sustained GFLOPS per physical core in llama.cpp's quantized matmuls (prompt
# processing). AVX2 calibrated on this project's 2-core test machine (SmolLM2 / Gemma 3 prompt
# speeds, tests/test_expert_speed.py); AVX-512 and Apple's AMX-less NEON cores by ratio.
CPU_GFLOPS_PER_CORE = {"avx512f": 45.0, "avx2": 33.0, "neon": 30.0, "asimd": 30.0}
CPU_GFLOPS_FALLBACK = 15.0

# Described machines without a RAM bandwidth: a dual-channel DDR4-3200 desktop is 51 GB/s and
# DDR5-6000 is 96; laptops sit between. Apple's come from the chip's table row above.
DEFAULT_RAM_BANDWIDTH_GBS = {"x86_64": 60.0, "arm64": 60.0, "aarch64": 40.0}
# An RPC device's kind is not in the protocol: a CPU-like guess (a desktop's RAM, its cores).
DEFAULT_GPU = {
    "nvidia": (300.0, 40.0),
    "amd": (400.0, 40.0),
    "apple": (100.0, 4.0),
    "rpc": (60.0, 0.5),
}


def lookup(name: str) -> tuple[float, float] | None:
    """(GB/s, TFLOPS) for a device name, matching the longest known fragment."""
    lowered = name.lower().replace("geforce ", "").replace("nvidia ", "")
    lowered = " ".join(lowered.replace("-", " ").split())
    if lowered.startswith("m") and lowered[1:2].isdigit():
        lowered = "apple " + lowered  # "M2 Pro" as some machine files write it
    best: tuple[int, tuple[float, float]] | None = None
    for fragment, spec in GPU_SPECS.items():
        if _contains(lowered, fragment) and (best is None or len(fragment) > best[0]):
            best = (len(fragment), spec)
    return best[1] if best else None


def _contains(text: str, fragment: str) -> bool:
    """Whole-word match, so "rtx 4060" does not match "rtx 4060 ti" wrongly and "a10" does not
    match "a100"."""
    start = text.find(fragment)
    while start >= 0:
        end = start + len(fragment)
        before_ok = start == 0 or not text[start - 1].isalnum()
        after_ok = end == len(text) or not text[end].isalnum()
        if before_ok and after_ok:
            return True
        start = text.find(fragment, start + 1)
    return False


def nvml_bandwidth_gbs(bus_width_bits: int, max_memory_clock_mhz: int) -> float:
    """Peak bandwidth from what NVML reports: NVML's memory clock is the DDR command clock, so
    ×2 transfers; GDDR6X/GDDR7 report an already-doubled clock and get the same formula, which
    matches the spec sheet (RTX 4090: 384 bit × 10501 MHz × 2 / 8 = 1008 GB/s)."""
    return round(bus_width_bits / 8 * max_memory_clock_mhz * 2 / 1000, 1)


def nvml_tflops(sm_count: int, max_sm_clock_mhz: int, capability: str | None) -> float:
    """Dense FP16 tensor TFLOPS (FP32 accumulate) from SMs × clock × FLOPs per SM per clock:
    512 on GeForce Turing/Ampere/Ada/Blackwell (RTX 4090: 128 × 2520 MHz × 512 = 165), 1024 on
    V100 (7.0), 2048 on A100 (8.0), 4096 on Hopper (9.0)."""
    per_sm = {"8.0": 2048, "9.0": 4096, "7.0": 1024}.get(capability or "", 512)
    return round(sm_count * max_sm_clock_mhz * 1e6 * per_sm / 1e12, 1)


def apple_working_set(ram_bytes: int) -> int:
    """What Metal lets one process keep resident by default (recommendedMaxWorkingSetSize):
    about 75% of RAM on machines with 32 GB or more, about 2/3 below."""
    share = 0.75 if ram_bytes >= 32 * 1024**3 else 0.67
    return int(ram_bytes * share)


def default_ram_bandwidth(cpu_model: str = "") -> float:
    spec = lookup(cpu_model) if cpu_model else None
    if spec:
        return spec[0]
    return DEFAULT_RAM_BANDWIDTH_GBS.get(platform.machine(), 50.0)


def cpu_gflops(cores: int, flags: list[str]) -> float:
    per_core = next(
        (g for flag, g in CPU_GFLOPS_PER_CORE.items() if flag in flags), CPU_GFLOPS_FALLBACK
    )
    if not flags:
        per_core = CPU_GFLOPS_PER_CORE["avx2"]  # a described machine: assume a modern core
    return per_core * max(cores, 1)
