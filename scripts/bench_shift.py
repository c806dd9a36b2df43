#!/usr/bin/env python3
"""Shifting benchmark (issue 4), printed as markdown tables. Timing targets live here.

Starts assistantd as a user would (no --model: it plans over a two-rung catalog of real
models — Gemma 3 270M and SmolLM2 135M — served by a local hub-compatible server), then:

1. idle: CPU used by the daemon and its worker over --idle-s seconds with no requests
   (target < 1% of one core, profile watching and memory checks included);
2. shifts: `POST /control/use` back and forth --shifts times while a client streams
   completions without pause; for each shift, the time from the request to shift to the
   first token the client got from the new model (target < 3 s), and every failed request
   (target 0).

    .venv/bin/python -m scripts.bench_shift [--shifts 100] [--idle-s 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from assistantd.planning.architecture import from_header
from assistantd.planning.estimate import footprint
from assistantd.planning.gguf_header import read_local
from scripts import fetch_models
from tests.support.hub import HubServer
from tests.support.ladder import (
    GEMMA_ID,
    SMOL_ID,
    StreamingClient,
    hub_repos,
    profile_text,
    write_catalog,
)

ROOT = Path(__file__).resolve().parent.parent

PINS = {GEMMA_ID: "gemma-3-270m:Q4_K_M", SMOL_ID: "smollm2-135m-instruct:Q4_1"}


def cpu_seconds(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        times = psutil.Process(pid).cpu_times()
        total += times.user + times.system
    return total


def drain_budget(models: dict[str, Path]) -> int:
    """A RAM budget either model fits alone but not both at once: swaps must drain first."""
    need = [
        footprint(
            from_header(read_local(models[m])), models[m].stat().st_size, 2048, n_seq=3
        ).total_bytes
        for m in ("gemma270m", "smollm2")
    ]
    return max(need) + min(need) // 2


def start(
    tmp: Path, hub: HubServer, models: dict[str, Path], ram_budget: int | None
) -> tuple[subprocess.Popen, str]:
    profile = tmp / "bench.toml"
    profile.write_text(profile_text(decode_tok_s=1, ram_budget=ram_budget))
    port = 18000 + os.getpid() % 1000
    env = {
        **os.environ,
        "HF_ENDPOINT": hub.url,
        "HF_HUB_CACHE": str(tmp / "hf"),
        "ASSISTANT_CATALOG": str(write_catalog(tmp / "catalog.toml", models)),
        "ASSISTANT_PROFILE": str(profile),
        "ASSISTANT_STATE_DIR": str(tmp / "state"),
        "ASSISTANT_THREADS": "2",
        "ASSISTANT_PORT": str(port),
    }
    log = (tmp / "assistantd.log").open("wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "assistantd")], env=env, stdout=log, stderr=log
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    raise SystemExit(f"assistantd did not start:\n{(tmp / 'assistantd.log').read_text()}")


def idle_table(url: str, proc: subprocess.Popen, seconds: float) -> None:
    time.sleep(3)  # let start-up settle
    worker = httpx.get(url + "/status").json()["worker"]["pid"]
    pids = [proc.pid, worker]
    before, t0 = cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)
    used, wall = cpu_seconds(pids) - before, time.monotonic() - t0
    print("\n| idle | seconds | CPU seconds (daemon + worker) | share of one core | target |")
    print("|---|---:|---:|---:|---|")
    print(f"| no requests | {wall:.0f} | {used:.3f} | {100 * used / wall:.2f}% | < 1% |")


def shift_table(url: str, shifts: int, mode: str) -> None:
    client = StreamingClient(url + "/v1", max_tokens=8)
    client.start()
    while client.done < 3:
        time.sleep(0.1)
    control = httpx.Client(base_url=url, timeout=120)
    current = control.get("/status").json()["model"]["id"]
    to_first_token: list[float] = []
    switch: list[float] = []
    for _ in range(shifts):
        target = SMOL_ID if current == GEMMA_ID else GEMMA_ID
        asked = time.monotonic()
        reply = control.post("/control/use", json={"model": PINS[target]})
        reply.raise_for_status()
        event = reply.json()["event"]
        if event is None or event["outcome"] != "done":
            raise SystemExit(f"shift failed: {event}")
        switch.append(event["switch_s"])
        while not any(at > asked and model == target for at, model in client.firsts[-5:]):
            time.sleep(0.005)
        first = next(at for at, model in client.firsts if at > asked and model == target)
        to_first_token.append(first - asked)
        current = target
    client.stop()
    failed = control.get("/status").json()["requests_failed"]
    print(
        "\n| swap | shifts | requests streamed | failed (client) | failed (daemon) | "
        "shift → first token p50 | p95 | max | target | worker swap p50 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    q = (
        statistics.quantiles(to_first_token, n=20, method="inclusive")
        if len(to_first_token) > 1
        else to_first_token
    )
    print(
        f"| {mode} | {shifts} | {client.done} | {len(client.failures)} | {failed} | "
        f"{statistics.median(to_first_token):.2f} s | {q[-1]:.2f} s | "
        f"{max(to_first_token):.2f} s | < 3 s | {statistics.median(switch):.2f} s |"
    )
    for failure in client.failures[:5]:
        print(f"failure: {failure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shifts", type=int, default=100)
    parser.add_argument("--idle-s", type=float, default=30)
    args = parser.parse_args()
    models = fetch_models.fetch_all()
    hub = HubServer()
    for repo, files in hub_repos(models).items():
        hub.add(repo, files)
    try:
        for mode, budget in (("overlap", None), ("drain", drain_budget(models))):
            with tempfile.TemporaryDirectory() as folder:
                proc, url = start(Path(folder), hub, models, budget)
                try:
                    if mode == "overlap":
                        print(f"assistantd on {url}, {os.cpu_count()} cores")
                        idle_table(url, proc, args.idle_s)
                    shift_table(url, args.shifts, mode)
                finally:
                    proc.terminate()
                    proc.wait(60)
    finally:
        hub.close()


if __name__ == "__main__":
    main()
