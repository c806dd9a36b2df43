"""`assistantctl doctor`: every GPU this machine has, whether this llama-cpp-python build can
use it, what was found to build with, and for each problem the one command that fixes it.

Three views meet here: what the drivers and tools on PATH say (assistantd.backend, the same
detection setup.sh uses), what the installed build's own device registry lists, and the cards
NVML and sysfs see. A card seen but not listed is a GPU left unused: exit status 1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from assistantd import backend as detection
from assistantd.devices.registry import AMX_NOTE, DeviceList, read_devices
from assistantd.planning.hardware import GPU, probe_amd, probe_nvidia
from assistantd.planning.planner import gib


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    problems: list[tuple[str, str]] = field(default_factory=list)  # (what, the fix)
    unused_gpu: bool = False

    def text(self) -> str:
        out = list(self.lines)
        if self.problems:
            out.append("")
            out += [f"problem: {what}\n  fix: {fix}" for what, fix in self.problems]
        else:
            out.append("\nno problems found")
        return "\n".join(out)


def diagnose(
    decision: detection.Decision, listed: DeviceList, cards: list[GPU], rpc: list[str]
) -> Report:
    report = Report()
    built = listed.gpu_backend if listed.read else "unknown"
    report.lines.append(
        f"backend built: {built} (ggml backends: {', '.join(listed.backends) or 'none read'})"
    )
    report.lines.append(f"backend this machine can build: {decision.backend} ({decision.why})")
    for tool, path in sorted(decision.tools.items()):
        report.lines.append(f"found {tool}: {path}")
    for gpu in decision.gpus:
        report.lines.append(f"driver sees: {gpu}")
    for card in cards:
        report.lines.append(f"card: {card.vendor} {card.name}, {gib(card.vram_bytes)}")
    for device in listed.devices:
        where = f" at {device.endpoint}" if device.endpoint else ""
        report.lines.append(
            f"llama.cpp device: {device.name}{where} ({device.description}), "
            f"{gib(device.free_bytes)} free of {gib(device.total_bytes)}"
        )
    if not listed.devices:
        report.lines.append("llama.cpp device: none besides the CPU")
    report.lines += [f"note: {n}" for n in listed.notes if n != AMX_NOTE]  # a problem below
    if not listed.read:
        report.problems.append(
            (
                "the installed llama-cpp-python could not list its devices",
                "scripts/setup.sh (reinstalls the build for this machine)",
            )
        )
    if listed.read and not listed.rpc:
        report.problems.append(
            (
                "this build has no RPC backend (no remote devices, `assistantctl device serve` "
                "unavailable)",
                "scripts/setup.sh (every build it makes has GGML_RPC on)",
            )
        )
    if listed.amx_kernels:
        report.problems.append(
            (
                "this build has llama.cpp's AMX kernels, which crash on the first prompt in this "
                "llama.cpp (workers load without them, and without weight repacking)",
                "scripts/setup.sh (builds without them)",
            )
        )
    gpu_backends = {"cuda", "hip", "vulkan", "metal"}
    if decision.backend in gpu_backends and built != decision.backend:
        report.unused_gpu = True
        report.problems.append(
            (
                f"this machine can use {decision.backend}, but the installed build is {built}",
                f"scripts/setup.sh --backend {decision.backend}",
            )
        )
    local = [d for d in listed.devices if not d.remote]
    if (cards or decision.gpus) and not local and not report.unused_gpu:
        report.unused_gpu = True
        names = ", ".join([c.name for c in cards] or decision.gpus)
        fix = next((p.fix for p in decision.problems if p.fix), "scripts/setup.sh")
        report.problems.append((f"the {names} is not used by this build", fix))
    for problem in decision.problems:
        if problem.fix and (problem.text, problem.fix) not in report.problems:
            report.problems.append((problem.text, problem.fix))
    missing = [r for r in rpc if not any(d.endpoint == r for d in listed.devices)]
    for endpoint in missing:
        report.problems.append(
            (
                f"the RPC device {endpoint} did not answer",
                f"on that machine: assistantctl device serve --port {endpoint.rpartition(':')[2]}",
            )
        )
    return report


def run(rpc: list[str]) -> Report:
    cards = probe_nvidia(None) + probe_amd(Path("/sys"))
    return diagnose(detection.detect(), read_devices(rpc), cards, rpc)
