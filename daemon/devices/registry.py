"""The devices this llama-cpp-python build can use, read from ggml's own registry in a
short-lived subprocess: one list for CUDA, ROCm, Vulkan, Metal and remote (RPC) devices alike.

The subprocess is the seam that keeps the daemon alive: a GPU driver that crashes while it is
asked, or an RPC server that vanishes between the reachability check and ggml's connect (ggml
aborts the process), costs one probe, which then reports what it could not read.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

PROBE_TIMEOUT_S = 30.0
CONNECT_TIMEOUT_S = 2.0

# ggml registry names → the backend names users know.
BACKEND_NAMES = {"CUDA": "cuda", "ROCm": "hip", "HIP": "hip", "Vulkan": "vulkan", "Metal": "metal"}


@dataclass(frozen=True)
class LlamaDevice:
    """One device llama.cpp can place tensors on."""

    name: str  # ggml's CUDA0, Vulkan0, Metal; RPC[127.0.0.1:50052] for a remote one
    description: str
    kind: str  # gpu | igpu (the CPU is not listed: RAM has its own budget)
    backend: str  # CUDA, ROCm, Vulkan, Metal, RPC
    free_bytes: int
    total_bytes: int
    endpoint: str | None = None  # host:port of an RPC server
    rtt_ms: float | None = None  # round trip to an RPC server (TCP connect), the slow link

    @property
    def remote(self) -> bool:
        return self.endpoint is not None


@dataclass
class DeviceList:
    """What the registry listed, the backends compiled in, and what could not be read."""

    devices: list[LlamaDevice] = field(default_factory=list)
    backends: list[str] = field(default_factory=list)  # CPU, RPC, CUDA …
    notes: list[str] = field(default_factory=list)
    read: bool = True  # False: the build could not be asked at all
    amx_kernels: bool = False  # llama.cpp's AMX kernels compiled in (they crash: ggml.py)

    @property
    def gpu_backend(self) -> str:
        """The GPU backend this build was made for (cpu when it has none)."""
        for name in self.backends:
            if name in BACKEND_NAMES:
                return BACKEND_NAMES[name]
        return "cpu"

    @property
    def rpc(self) -> bool:
        return "RPC" in self.backends

    def to_json(self) -> dict[str, Any]:
        return {
            "backend": self.gpu_backend,
            "backends": self.backends,
            "rpc": self.rpc,
            "devices": [asdict(d) for d in self.devices],
            "notes": self.notes,
            "amx_kernels": self.amx_kernels,
        }


AMX_NOTE = (
    "this llama-cpp-python build has llama.cpp's AMX kernels, which crash on the first prompt "
    "in this llama.cpp (ggml-org/llama.cpp#26954): workers load without them and without weight "
    "repacking; scripts/setup.sh builds one without them"
)


def reachable(endpoint: str, timeout_s: float = CONNECT_TIMEOUT_S) -> tuple[bool, float, str]:
    """Whether a TCP connection to host:port opens, how long it took (ms), and why not."""
    host, _, port = endpoint.rpartition(":")
    if not host or not port.isdigit():
        return False, 0.0, f"'{endpoint}' is not HOST:PORT"
    start = time.perf_counter()
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as exc:
        return False, 0.0, f"cannot connect to {endpoint}: {exc.strerror or exc}"
    return True, (time.perf_counter() - start) * 1000, ""


def read_devices(rpc: list[str] | None = None, timeout_s: float = PROBE_TIMEOUT_S) -> DeviceList:
    """The registry's GPU-like devices, local and on the given RPC servers (those that answer;
    a server that does not is a note, never a failure)."""
    notes: list[str] = []
    endpoints: dict[str, float] = {}
    for wanted in rpc or []:
        ok, rtt_ms, why = reachable(wanted)
        if ok:
            endpoints[wanted] = rtt_ms
        else:
            notes.append(
                f"RPC device {wanted} left out: {why} (is `assistantctl device serve` "
                "running there?)"
            )
    args = [sys.executable, "-m", "assistantd.devices.registry", "--json"]
    for name in endpoints:
        args += ["--rpc", name]
    try:
        done = subprocess.run(
            args, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired:
        notes.append(
            f"reading llama.cpp's devices took over {timeout_s:.0f} s (a driver or an RPC server "
            "that does not answer); planning without GPUs"
        )
        return DeviceList(notes=notes, read=False)
    if done.returncode != 0:
        tail = " | ".join(done.stderr.strip().splitlines()[-3:])
        notes.append(
            f"reading llama.cpp's devices failed (exit {done.returncode}: {tail or 'no output'}); "
            "planning without GPUs"
        )
        return DeviceList(notes=notes, read=False)
    data = json.loads(done.stdout)
    found = []
    for raw in data["devices"]:
        endpoint = raw["description"] if raw["backend"] == "RPC" else None
        rtt = endpoints.get(endpoint) if endpoint is not None else None
        found.append(LlamaDevice(**raw, endpoint=endpoint, rtt_ms=rtt))
    if data["amx_kernels"]:
        notes.append(AMX_NOTE)
    return DeviceList(
        devices=found, backends=data["backends"], notes=notes, amx_kernels=data["amx_kernels"]
    )


def _probe(rpc: list[str]) -> dict[str, Any]:
    """Runs in the subprocess: register the RPC servers, then list the registry."""
    from assistantd.devices import ggml

    for endpoint in rpc:
        ggml.add_rpc_server(endpoint)
    listed = [
        {
            "name": d.name,
            "description": d.description,
            "kind": d.kind,
            "backend": d.backend,
            "free_bytes": d.free_bytes,
            "total_bytes": d.total_bytes,
        }
        for d in ggml.devices()
        if d.kind in ("gpu", "igpu")
    ]
    # Each RPC server adds a registry of its own, RPC[host:port]: the backend is "RPC".
    compiled = [b for b in ggml.backends() if not b.startswith("RPC[")]
    return {"devices": listed, "backends": compiled, "amx_kernels": ggml.has_amx_kernels()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="List llama.cpp's devices as JSON.")
    parser.add_argument("--rpc", action="append", default=[], help="HOST:PORT of an RPC server")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    print(json.dumps(_probe(args.rpc)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
