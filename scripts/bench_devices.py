"""The plan's bytes per device against what llama.cpp allocated, on a real llama.cpp device.

Starts `assistantctl device serve` on a free loopback port and, for each test model and context
size, `assistantd --rpc … --model …` as a user would, then prints one row per device and kind
from `/status` (estimated MiB, allocated MiB, difference). With --vram-budget the layers are
split between the device and the CPU.

    .venv/bin/python -m scripts.bench_devices [--n-ctx 2048 8192] [--vram-budget 300MiB]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from scripts.fetch_models import MODELS, fetch
from tests.support.daemons import launch
from tests.support.devices import RpcDevice

MiB = 1024 * 1024


def rows(model: str, n_ctx: int, devices: list[dict[str, Any]]) -> list[str]:
    out = []
    for device in devices:
        est, got = device.get("estimated") or {}, device.get("allocated") or {}
        for kind in ("weights", "kv", "compute", "total"):
            e, a = est.get(kind), got.get(kind)
            diff = f"{(e - a) / a * 100:+.1f}%" if e is not None and a else "–"
            out.append(
                f"{model:10} {n_ctx:6} {device['device']:24} {device.get('layers') or 0:6} "
                f"{kind:8} {(e or 0) / MiB:10.1f} {(a or 0) / MiB:10.1f} {diff:>8}"
            )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-ctx", type=int, nargs="+", default=[2048, 8192])
    parser.add_argument("--vram-budget", default=None, help="e.g. 300MiB: a partial offload")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="bench-devices-"))
    device = RpcDevice(folder / "device.log")
    endpoint = device.endpoint
    print(f"device: RPC[{endpoint}] (assistantctl device serve), slots 3\n")
    print(
        f"{'model':10} {'n_ctx':>6} {'device':24} {'layers':>6} {'kind':8} "
        f"{'est. MiB':>10} {'alloc MiB':>10} {'diff':>8}"
    )
    try:
        for name in ("smollm2", "gemma270m"):
            path = fetch(MODELS[name])
            for n_ctx in args.n_ctx:
                env = {"ASSISTANT_RPC": endpoint, "ASSISTANT_N_CTX": str(n_ctx)}
                if args.vram_budget:
                    env["ASSISTANT_VRAM_BUDGET"] = args.vram_budget
                daemon = launch(path, folder / f"{name}-{n_ctx}.log", env)
                try:
                    daemon.wait_healthy()
                    chat = daemon.status()["roles"]["chat"]
                    print("\n".join(rows(name, n_ctx, chat["devices"])))
                finally:
                    daemon.stop()
    finally:
        device.kill()


if __name__ == "__main__":
    main()
