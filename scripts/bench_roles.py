#!/usr/bin/env python3
"""Roles benchmark (issue 13), printed as markdown tables; its targets live here.

assistantd with no --model plans chat and autocomplete over a catalog of two real models served
by a hub-compatible server on 127.0.0.1: SmolLM2-135M-Instruct for chat and Gemma 3 270M with
FIM tokens (written by the gguf package) for autocomplete, each on its own worker. Measured as
an editor sees it (Continue-style raw FIM prompts to `assistantd-autocomplete`, chat answers
streaming from `assistantd-chat`):

1. autocomplete TTFT p50/p95 alone and while a chat answer streams, with the cores given to
   autocomplete during its prefill (the default) and without (ASSISTANT_SHARE_CORES=false);
   target: while-chat p95 ≤ 1.5 × idle p95; chat tok/s meanwhile is reported;
2. the plan's predicted memory for all roles against the measured resident memory of all
   workers (target: within ±10%).

    .venv/bin/python -m scripts.bench_roles [--n 30]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from scripts import fetch_models
from scripts.bench import THREADS, _free_port, _wait_ready
from scripts.bench_editor import CODE, STOPS, ChatLoad, _p, _stream, _typing
from tests.support.hub import HubServer
from tests.support.roles import CHAT_REPO, GEMMA_FIM_REPO, gemma_fim, write_catalog

ROOT = Path(__file__).resolve().parent.parent


PROFILE = """
prefer = "quality"
n_ctx = 4096
[targets]
ttft_p95_ms = 100000
decode_tok_s = 1
[memory]
ram_reserve = "0MiB"
ram_budget = "4GiB"
[roles.autocomplete]
n_ctx = 4096
slots = 2
[roles.autocomplete.targets]
ttft_p95_ms = 100000
decode_tok_s = 1
"""


class Daemon:
    def __init__(self, folder: Path, hub: HubServer, cat: Path, share: bool) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        profile = folder / "bench.toml"
        profile.write_text(PROFILE)
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
        env.update(
            HF_ENDPOINT=hub.url, HF_HUB_CACHE=str(folder / "hf"), ASSISTANT_CATALOG=str(cat),
            ASSISTANT_PROFILE=str(profile), ASSISTANT_SLOTS="3",
            ASSISTANT_SHARE_CORES="true" if share else "false",
            XDG_STATE_HOME=str(folder / "state"), XDG_CONFIG_HOME=str(folder / "config"),
        )  # fmt: skip
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("assistantd")), "--port", str(self.port),
             "--threads", str(THREADS), "--log-level", "warning"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        _wait_ready(self.url, self.proc, path="/health")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            roles = self.status()["roles"]
            if all(r["state"] == "serving" for r in roles.values() if r["served_by"] == r["role"]):
                break
            time.sleep(0.3)

    def status(self) -> dict:
        return httpx.get(self.url + "/status", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def autocomplete(url: str, n: int, typed) -> list[float]:  # type: ignore[no-untyped-def]
    out = []
    for _ in range(n):
        prefix = CODE + next(typed)
        prompt = f"<|fim_prefix|>{prefix}<|fim_suffix|>\n\nprint(helper_1(2))\n<|fim_middle|>"
        body = {"model": "assistantd-autocomplete", "prompt": prompt, "max_tokens": 24,
                "temperature": 0.01, "stop": STOPS}  # fmt: skip
        start = time.perf_counter()
        for at, _ in _stream(url, "/v1/completions", body):
            out.append((at - start) * 1000)
            break
        time.sleep(0.3)
    return out


def fill_every_slot(url: str, role: dict) -> None:
    """Every slot of a role's worker evaluates a prompt of nearly its whole context at once:
    the peak a plan must budget for (all KV cells in use, attention over all of them)."""
    model = f"assistantd-{role['role']}"
    with httpx.Client(base_url=url, timeout=900) as http:
        probe = http.post("/v1/completions", json={"model": model, "prompt": "x = 1\n" * 100,
                                                   "max_tokens": 1}).json()  # fmt: skip
        per_rep = probe["usage"]["prompt_tokens"] / 100
        reps = int((role["n_ctx"] - 64) / per_rep)

        def one(i: int) -> None:
            body = {"model": model, "prompt": f"# {i}\n" + "x = 1\n" * reps, "max_tokens": 4}
            http.post("/v1/completions", json=body).raise_for_status()

        threads = [threading.Thread(target=one, args=(i,)) for i in range(role["slots"])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


def measure(daemon: Daemon, n: int, fill: bool) -> dict[str, float]:
    typed = _typing()
    autocomplete(daemon.url, 3, typed)  # warm-up
    alone = autocomplete(daemon.url, n, typed)
    with ChatLoad(daemon.url, "assistantd-chat") as chat:
        busy = autocomplete(daemon.url, n, typed)
    with ChatLoad(daemon.url, "assistantd-chat") as solo:
        time.sleep(8)
    status = daemon.status()
    memory = status["memory_all_roles"]
    workers = [r for r in status["roles"].values() if r["served_by"] == r["role"]]
    for role in workers if fill else []:
        fill_every_slot(daemon.url, role)
    peak = sum(peak_rss(r["worker_pid"]) for r in workers)
    planned = {r["role"]: r["estimated_bytes"] for r in workers}
    measured = {r["role"]: peak_rss(r["worker_pid"]) for r in workers}
    return {
        "peak": peak, "planned_by_role": planned, "peak_by_role": measured,  # type: ignore[dict-item]
        "alone_p50": _p(alone, 50), "alone_p95": _p(alone, 95), "busy_p50": _p(busy, 50),
        "busy_p95": _p(busy, 95), "chat_tok_s": chat.tok_s, "solo_tok_s": solo.tok_s,
        "rss": memory["worker_rss_bytes"], "estimated": memory["estimated_bytes"],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=30, help="autocomplete requests per scenario")
    args = parser.parse_args()
    models = fetch_models.fetch_all()
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        fim = gemma_fim(models["gemma270m"], folder)
        cat = write_catalog(folder / "catalog.toml", models["smollm2"], fim, chat_fim=False)
        hub = HubServer()
        hub.add(CHAT_REPO, {"SmolLM2-Q4_1.gguf": models["smollm2"]})
        hub.add(GEMMA_FIM_REPO, {"gemma-fim-Q4_K_M.gguf": fim})
        try:
            for share in (True, False):
                run = folder / ("share" if share else "plain")
                run.mkdir()
                daemon = Daemon(run, hub, cat, share)
                try:
                    name = "cores to autocomplete" if share else "no arbitration"
                    rows[name] = measure(daemon, args.n, fill=share)
                finally:
                    daemon.stop()
        finally:
            hub.close()
    print(
        f"\n## Roles: chat SmolLM2-135M, autocomplete Gemma-3-270M (FIM), {THREADS} threads each\n"
    )
    print("| CPU sharing | autocomplete TTFT p50 / p95 alone (ms) | … while chat streams | "
          "ratio p95 | chat tok/s during autocomplete | chat tok/s alone |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['alone_p50']:.0f} / {r['alone_p95']:.0f} | {r['busy_p50']:.0f} / "
              f"{r['busy_p95']:.0f} | {r['busy_p95'] / r['alone_p95']:.2f} | "
              f"{r['chat_tok_s']:.1f} | {r['solo_tok_s']:.1f} |")  # fmt: skip
    ours = rows["cores to autocomplete"]
    print("\n| role | planned MiB | peak resident MiB (every slot filled) | error |")
    print("|---|---:|---:|---:|")
    for role, planned in ours["planned_by_role"].items():  # type: ignore[attr-defined]
        peak = ours["peak_by_role"][role]  # type: ignore[index]
        print(f"| {role} | {planned / 2**20:.0f} | {peak / 2**20:.0f} | "
              f"{planned / peak - 1:+.1%} |")  # fmt: skip
    ratio = ours["busy_p95"] / ours["alone_p95"]
    error = ours["estimated"] / ours["peak"] - 1
    print("\n| target | value | met |\n|---|---:|---|")
    print(f"| autocomplete p95 while chat ≤ 1.5 × idle p95 | {ratio:.2f} | {ratio <= 1.5} |")
    print(f"| planned memory, all roles, vs peak resident memory of all workers (±10%) | "
          f"{ours['estimated'] / 2**20:.0f} / {ours['peak'] / 2**20:.0f} MiB = {error:+.1%} | "
          f"{abs(error) <= 0.10} |")  # fmt: skip
    print(f"(resident after the latency runs, before filling: {ours['rss'] / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
