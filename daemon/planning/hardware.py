"""What this machine has: memory, CPU, GPUs, and whether llama-cpp-python can use the GPUs.

Probes are injectable (an NVML module, a sysfs root, the offload check), so the planner can be
tested on described machines, and a machine can be written to and read from JSON.
"""

from __future__ import annotations

import dataclasses
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import psutil

from assistantd.devices.registry import BACKEND_NAMES, DeviceList, LlamaDevice, read_devices
from assistantd.errors import ConfigError
from assistantd.planning import devices

SIMD_FLAGS = (
    "avx",
    "avx2",
    "avx512f",
    "avx512_bf16",
    "avx_vnni",
    "fma",
    "f16c",
    "neon",
    "asimd",
    "sve",
    "dotprod",
    "i8mm",
)


@dataclass
class GPU:
    vendor: str  # nvidia | amd | apple
    name: str
    vram_bytes: int
    vram_free_bytes: int | None = None
    driver: str | None = None
    compute_capability: str | None = None
    memory_bandwidth_gbs: float | None = None  # NVML, the machine file, or None: by name
    fp16_tflops: float | None = None  # dense tensor FP16; None: by name
    # As llama.cpp lists it: its device name (CUDA0, Vulkan0, RPC[host:port]), the backend
    # (cuda, hip, vulkan, metal, rpc), and for a remote device its server and round trip.
    device: str | None = None
    backend: str | None = None
    endpoint: str | None = None
    rtt_ms: float | None = None
    usable: bool = True  # False: seen by the driver, but this build cannot use it
    source: str = "machine file"  # llama.cpp | nvml | sysfs | machine file

    @property
    def free_bytes(self) -> int:
        return self.vram_bytes if self.vram_free_bytes is None else self.vram_free_bytes


@dataclass
class Machine:
    ram_bytes: int
    cpu_cores: int
    ram_available_bytes: int | None = None
    cpu_model: str = ""
    cpu_flags: list[str] = field(default_factory=list)
    gpu_offload: bool = False
    unified_memory: bool = False
    gpus: list[GPU] = field(default_factory=list)
    memory_bandwidth_gbs: float | None = None
    backend: str = ""  # the GPU backend this llama-cpp-python build has: cuda, hip, … or cpu
    backends: list[str] = field(default_factory=list)  # compiled in, as ggml names them
    device_notes: list[str] = field(default_factory=list)  # devices that could not be read

    @property
    def available_bytes(self) -> int:
        return self.ram_bytes if self.ram_available_bytes is None else self.ram_available_bytes

    def offload_note(self) -> str | None:
        """Why GPUs present are not used, with the fix."""
        unused = [g for g in self.gpus if not g.usable]
        if unused and self.gpu_offload:
            names = ", ".join(g.name for g in unused)
            return (
                f"this llama-cpp-python build ({self.backend or 'cpu'}) cannot use the {names}; "
                "`assistantctl doctor` says how to rebuild it"
            )
        if self.gpus and not self.gpu_offload:
            names = ", ".join(g.name for g in self.gpus)
            backend = (
                "Metal"
                if self.unified_memory
                else "CUDA"
                if self.gpus[0].vendor == "nvidia"
                else "ROCm/Vulkan"
            )
            return (
                f"this llama-cpp-python build is CPU-only; rebuild it with {backend} "
                f"(`scripts/setup.sh`, see `assistantctl doctor`) to use the {names}"
            )
        return None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "machine file") -> Machine:
        try:
            gpus = [GPU(**g) for g in data.get("gpus", [])]
            fields = {k: v for k, v in data.items() if k != "gpus"}
            machine = cls(**fields, gpus=gpus)
        except TypeError as exc:
            raise ConfigError(
                f"{source}: {exc}; expected keys like ram_bytes, cpu_cores, "
                "gpu_offload, unified_memory, gpus[{vendor, name, vram_bytes}]"
            ) from None
        if machine.ram_bytes <= 0 or machine.cpu_cores <= 0:
            raise ConfigError(f"{source}: ram_bytes and cpu_cores must be positive")
        return machine

    @classmethod
    def load(cls, path: Path) -> Machine:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"machine file {path} does not exist") from None
        except ValueError as exc:
            raise ConfigError(f"machine file {path} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"machine file {path} must hold a JSON object")
        return cls.from_json(data, str(path))


def _cpu_info() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return model, []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "Model", "cpu model") and value.strip():
            model = value.strip()
        elif key in ("flags", "Features"):
            flags.update(value.split())
    return model, [f for f in SIMD_FLAGS if f in flags]


def probe_nvidia(nvml: ModuleType | None) -> list[GPU]:
    """NVIDIA cards through NVML; none when the library or a driver is missing."""
    if nvml is None:
        try:
            import pynvml
        except ImportError:
            return []
        nvml = pynvml
    try:
        nvml.nvmlInit()
    except Exception:
        return []  # no driver: no usable NVIDIA card
    try:
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        gpus = []
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            try:
                major, minor = nvml.nvmlDeviceGetCudaComputeCapability(handle)
                capability: str | None = f"{major}.{minor}"
            except Exception:
                capability = None
            bandwidth, tflops = _nvml_speed(nvml, handle, capability)
            gpus.append(
                GPU(
                    "nvidia",
                    _text(nvml.nvmlDeviceGetName(handle)),
                    int(memory.total),
                    int(memory.free),
                    driver,
                    capability,
                    bandwidth,
                    tflops,
                    source="nvml",
                )
            )
        return gpus
    finally:
        nvml.nvmlShutdown()


def _nvml_speed(
    nvml: ModuleType, handle: object, capability: str | None
) -> tuple[float | None, float | None]:
    """Peak memory bandwidth (bus width × max memory clock × 2) and FP16 TFLOPS (SMs × max SM
    clock); None where this NVML or card does not say."""
    clock_mem = getattr(nvml, "NVML_CLOCK_MEM", 2)
    clock_sm = getattr(nvml, "NVML_CLOCK_SM", 1)
    bandwidth = tflops = None
    try:
        bus = int(nvml.nvmlDeviceGetMemoryBusWidth(handle))
        mem_clock = int(nvml.nvmlDeviceGetMaxClockInfo(handle, clock_mem))
        if bus > 0 and mem_clock > 0:
            bandwidth = devices.nvml_bandwidth_gbs(bus, mem_clock)
    except Exception:
        pass
    try:
        cores = int(nvml.nvmlDeviceGetNumGpuCores(handle))
        sm_clock = int(nvml.nvmlDeviceGetMaxClockInfo(handle, clock_sm))
        per_sm = 64 if capability in ("8.0", "7.0", "9.0") else 128  # CUDA cores per SM
        if cores > 0 and sm_clock > 0:
            tflops = devices.nvml_tflops(cores // per_sm, sm_clock, capability)
    except Exception:
        pass
    return bandwidth, tflops


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def probe_amd(sysfs: Path) -> list[GPU]:
    gpus = []
    for card in sorted(sysfs.glob("class/drm/card[0-9]*/device")):
        total, used = card / "mem_info_vram_total", card / "mem_info_vram_used"
        if not total.exists():
            continue
        try:
            total_b = int(total.read_text())
            used_b = int(used.read_text()) if used.exists() else 0
            name = (
                (card / "product_name").read_text().strip()
                if (card / "product_name").exists()
                else f"AMD GPU ({card.parent.name})"
            )
        except (OSError, ValueError):
            continue
        gpus.append(GPU("amd", name, total_b, total_b - used_b, source="sysfs"))
    return gpus


def merge_devices(hardware: list[GPU], listed: DeviceList) -> list[GPU]:
    """llama.cpp's devices, with bandwidth and compute from the driver's view of the same card
    (matched by name, in order); cards the driver sees but this build cannot use stay, marked
    unusable, so the plan can say what to fix."""
    left = list(hardware)
    merged = []
    for device in listed.devices:
        match = next((g for g in left if _same_card(g.name, device.description)), None)
        if match is not None:
            left.remove(match)
        remote = device.backend == "RPC"
        merged.append(
            GPU(
                vendor=match.vendor if match else _vendor_of(device),
                name=match.name if match else (device.description if not remote else "RPC"),
                vram_bytes=device.total_bytes,
                vram_free_bytes=device.free_bytes,
                driver=match.driver if match else None,
                compute_capability=match.compute_capability if match else None,
                memory_bandwidth_gbs=match.memory_bandwidth_gbs if match else None,
                fp16_tflops=match.fp16_tflops if match else None,
                device=device.name,
                backend=BACKEND_NAMES.get(device.backend, device.backend.lower()),
                endpoint=device.endpoint,
                rtt_ms=round(device.rtt_ms, 2) if device.rtt_ms is not None else None,
                source="llama.cpp",
            )
        )
    merged += [dataclasses.replace(g, usable=False) for g in left if g.vendor != "apple"]
    return merged


def _same_card(name: str, description: str) -> bool:
    a, b = name.lower().replace("nvidia ", ""), description.lower().replace("nvidia ", "")
    return bool(a) and (a in b or b in a)


def _vendor_of(device: LlamaDevice) -> str:
    if device.backend == "RPC":
        return "rpc"
    text = f"{device.backend} {device.description}".lower()
    for vendor, words in {
        "nvidia": ("cuda", "nvidia", "geforce"),
        "amd": ("rocm", "hip", "radeon", "amd"),
        "apple": ("metal", "apple"),
        "intel": ("intel",),
    }.items():
        if any(w in text for w in words):
            return vendor
    return "other"


# A STREAM-style copy reaches about 65% of a desktop's DDR4/DDR5 spec bandwidth; the machine's
# memory_bandwidth_gbs is peak-like (what a machine file or the spec table gives), so the probe
# scales its copy throughput up by this share, and the speed model takes 65% of it back.
COPY_SHARE_OF_PEAK = 0.65


def measure_bandwidth(
    size_bytes: int = 64 * 1024 * 1024, repeats: int = 3, threads: int | None = None
) -> float:
    """Copy throughput of RAM (GB/s, read + write) with one thread per core, as llama.cpp
    reads weights: each thread copies its own `size_bytes` (well past any cache), all at once;
    best of a few rounds. Well under a second."""
    import threading
    import time

    import numpy as np

    n = threads or psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    pairs = [(np.ones(size_bytes // 8), np.empty(size_bytes // 8)) for _ in range(n)]
    for src, dst in pairs:
        np.copyto(dst, src)  # fault the pages in before timing
    best = float("inf")
    for _ in range(repeats):
        barrier = threading.Barrier(n + 1)

        def copy(src: Any, dst: Any, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            np.copyto(dst, src)  # numpy releases the GIL for large copies

        workers = [threading.Thread(target=copy, args=pair) for pair in pairs]
        for w in workers:
            w.start()
        barrier.wait()
        start = time.perf_counter()
        for w in workers:
            w.join()
        best = min(best, time.perf_counter() - start)
    return round(2 * size_bytes * n / best / 1e9, 1)


def probe(
    nvml: ModuleType | None = None,
    sysfs: Path = Path("/sys"),
    offload: bool | None = None,
    rpc: list[str] | None = None,
    listed: DeviceList | None = None,
    bandwidth: bool = True,
) -> Machine:
    """This machine: devices from llama.cpp's registry (`listed`, else a subprocess), speeds
    from the drivers; `offload` skips llama.cpp (tests); `bandwidth=False` skips RAM's."""
    memory = psutil.virtual_memory()
    cpu_model, flags = _cpu_info()
    apple = platform.system() == "Darwin" and platform.machine() == "arm64"
    hardware = probe_nvidia(nvml) + probe_amd(sysfs)
    if offload is None and listed is None:
        listed = read_devices(rpc)
    if listed is not None:
        gpus = merge_devices(hardware, listed)
        gpu_offload = any(g.usable for g in gpus)
    else:
        gpus, gpu_offload = hardware, bool(offload)
    if apple:
        # One pool: Metal's device is the chip itself, its memory the machine's RAM.
        name = cpu_model or "Apple Silicon"
        spec = devices.lookup(name)
        metal = next((g for g in gpus if g.backend == "metal"), None)
        gpus = [g for g in gpus if g is not metal]
        gpus.append(
            GPU(
                "apple",
                name,
                memory.total,
                memory.available,
                memory_bandwidth_gbs=spec[0] if spec else None,
                fp16_tflops=spec[1] if spec else None,
                device=metal.device if metal else None,
                backend="metal" if metal else None,
                source="llama.cpp" if metal else "machine file",
            )
        )
        gpu_offload = gpu_offload or metal is not None
    return Machine(
        ram_bytes=memory.total,
        ram_available_bytes=memory.available,
        cpu_cores=psutil.cpu_count(logical=False) or psutil.cpu_count() or 1,
        cpu_model=cpu_model,
        cpu_flags=flags,
        gpu_offload=gpu_offload,
        unified_memory=apple,
        gpus=gpus,
        memory_bandwidth_gbs=(
            round(measure_bandwidth() / COPY_SHARE_OF_PEAK, 1) if bandwidth else None
        ),
        backend=listed.gpu_backend if listed is not None else "",
        backends=listed.backends if listed is not None else [],
        device_notes=listed.notes if listed is not None else [],
    )


def refresh_free(machine: Machine, sysfs: Path = Path("/sys")) -> Machine:
    """The same machine with free RAM and VRAM measured now; cheap enough to call every few
    seconds (no bandwidth measurement)."""
    memory = psutil.virtual_memory()
    gpus = machine.gpus
    if gpus and not machine.unified_memory:
        gpus = _refreshed(machine.gpus, probe_nvidia(None) + probe_amd(sysfs))
    elif machine.unified_memory:
        gpus = [dataclasses.replace(g, vram_free_bytes=memory.available) for g in gpus]
    return dataclasses.replace(machine, ram_available_bytes=memory.available, gpus=gpus)


def _refreshed(known: list[GPU], now: list[GPU]) -> list[GPU]:
    """Free memory from the drivers for the cards they report (cheap, no llama.cpp); devices
    only llama.cpp knows (RPC, Vulkan) keep what the last probe read."""
    left = list(now)
    result = []
    for gpu in known:
        match = next((g for g in left if g.vendor == gpu.vendor and g.name == gpu.name), None)
        if match is None:
            result.append(gpu)
            continue
        left.remove(match)
        result.append(dataclasses.replace(gpu, vram_free_bytes=match.vram_free_bytes))
    return result
