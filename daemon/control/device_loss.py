"""A remote device that went away: before a crashed worker is restarted, its RPC servers are
asked again; the devices of one that does not answer are dropped from the worker's placement
(their layers go to the CPU), the machine stops counting them, and the plan says why. Local
devices are left alone: a driver crash is a restart like any other."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from typing import Any

from assistantd.devices.registry import reachable
from assistantd.planning.architecture import from_header
from assistantd.planning.gguf_header import read_local
from assistantd.planning.hardware import Machine
from assistantd.planning.per_device import split_bytes
from assistantd.worker.process import WorkerSpec

log = logging.getLogger("assistantd.devices")


def endpoint_of(device: str) -> str | None:
    """RPC[host:port] or RPC[host:port]/N → host:port; None for a local device."""
    if not device.startswith("RPC["):
        return None
    return device[4 : device.rfind("]")]


def without(spec: WorkerSpec, lost: set[str]) -> WorkerSpec:
    """`spec` with the devices on `lost` servers taken out; their layers go to the CPU."""
    devices = spec.devices or ()
    kept = [
        (d, s)
        for d, s in zip(devices, spec.split or [1.0] * len(devices), strict=False)
        if endpoint_of(d) not in lost
    ]
    if not kept:
        return dataclasses.replace(spec, devices=(), split=(), rpc=(), n_gpu_layers=0, n_cpu_moe=0)
    total = sum(spec.split) or float(len(devices))
    share = sum(s for _, s in kept) / total
    layers = spec.n_gpu_layers
    if layers != 0:
        layers = max(int(round((layers if layers > 0 else 10_000) * share)), 1)
    return dataclasses.replace(
        spec,
        devices=tuple(d for d, _ in kept),
        split=tuple(s for _, s in kept),
        rpc=tuple(e for e in spec.rpc if e not in lost),
        n_gpu_layers=layers,
    )


def estimate(spec: WorkerSpec) -> list[dict[str, Any]]:
    """The bytes per device of what `spec` loads, from the file's own header."""
    header = read_local(spec.model_path)
    devices = list(
        zip(spec.devices or (), spec.split or [1.0] * len(spec.devices or ()), strict=False)
    )
    return [
        d.to_json()
        for d in split_bytes(
            from_header(header),
            header.tensor_bytes,
            spec.n_ctx,
            n_seq=spec.n_slots,
            n_gpu_layers=spec.n_gpu_layers if devices else 0,
            devices=devices,
            n_cpu_moe=spec.n_cpu_moe,
        )
    ]


class DeviceCheck:
    """The supervisor's hook before a restart (see Supervisor.respec)."""

    def __init__(
        self, machine: Machine | None, on_change: Callable[[WorkerSpec, str], None]
    ) -> None:
        self.machine = machine
        self.on_change = on_change

    async def __call__(self, spec: WorkerSpec) -> WorkerSpec:
        if not spec.rpc:
            return spec
        answers = await asyncio.gather(*(asyncio.to_thread(reachable, e) for e in spec.rpc))
        lost = {e for e, (ok, _, _) in zip(spec.rpc, answers, strict=True) if not ok}
        if not lost:
            return spec
        fresh = without(spec, lost)
        if self.machine is not None:
            self.machine.gpus = [
                dataclasses.replace(g, usable=False) if g.endpoint in lost else g
                for g in self.machine.gpus
            ]
        where = ", ".join(fresh.devices or ()) or "the CPU"
        why = (
            f"RPC device {', '.join(sorted(lost))} went away (it does not answer); re-planned "
            f"{spec.model_id} on what is left: {where}, {fresh.n_gpu_layers} GPU layers"
        )
        log.warning("%s", why)
        self.on_change(fresh, why)
        return fresh
