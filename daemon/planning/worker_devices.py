"""From a plan's bytes per device to what a worker is told: the llama.cpp devices it may use,
each one's share of the offloaded layers, and the RPC servers they live on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from assistantd.planning.hardware import Machine
from assistantd.planning.per_device import CPU


@dataclass(frozen=True)
class WorkerDevices:
    devices: tuple[str, ...] | None  # None: llama.cpp's own choice (no device names known)
    split: tuple[float, ...] = ()
    rpc: tuple[str, ...] = ()

    def fields(self) -> dict[str, Any]:
        """As WorkerSpec's fields of the same names."""
        return {"devices": self.devices, "split": self.split, "rpc": self.rpc}


def worker_devices(placed: Sequence[Mapping[str, Any]], machine: Machine | None) -> WorkerDevices:
    """Exactly the devices the plan put layers on; none (the CPU) when it put none there."""
    known = {g.device: g for g in (machine.gpus if machine else []) if g.device and g.usable}
    if not placed:
        # No bytes per device were planned (unified memory: the one Metal device holds it
        # all; a CPU placement: n_gpu_layers 0): llama.cpp's own choice is the plan's.
        return WorkerDevices(None)
    if not known:
        return WorkerDevices(())  # a build that lists no device: the CPU
    used = [d for d in placed if d["device"] != CPU and d["layers"] > 0 and d["device"] in known]
    names = tuple(d["device"] for d in used)
    rpc = tuple(dict.fromkeys(e for n in names if (e := known[n].endpoint)))
    return WorkerDevices(names, tuple(float(d["layers"]) for d in used), rpc)
