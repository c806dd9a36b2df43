#!/usr/bin/env python3
"""Editor-mix benchmark (issue 10), printed as markdown tables; timing targets live here.

An editor sends Continue-style autocomplete requests (a raw FIM prompt of ~1,000 tokens to
/v1/completions, streamed, the prefix growing as the user types, one request per pause) while
the same person may have a chat answer streaming. Measured for assistantd, started as the
README says, and for llama-server built from the llama.cpp that llama-cpp-python vendors
(`--llama-server PATH`; the column is skipped with a message when none is given):

1. autocomplete time to first token, p50/p95: alone, and while a chat answer streams
   (targets: while-chat p95 ≤ 1.5 × own idle p95, and ≤ 1.25 × llama-server's);
   chat tok/s while autocomplete runs;
2. single-stream decode tok/s vs llama-cpp-python in-process (target ≥ 0.97) and llama-server;
3. aggregate decode tok/s with 4 concurrent streams over one stream (target ≥ 0.9 × the same
   ratio for llama-server);
4. serving CPU per streamed token in the single stream: every thread's CPU but the decode
   threads' (assistantd's daemon and the worker's other threads; llama-server's HTTP threads).

    .venv/bin/python -m scripts.bench_editor [--llama-server PATH] [--model smollm2] [--n 30]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

from scripts import fetch_models
from scripts.bench import THREADS, _free_port, _wait_ready, in_process

ROOT = Path(__file__).resolve().parent.parent
N_CTX = 4096  # per slot
SLOTS = 4
CODE = "".join(f"def helper_{i}(x):\n    return x * {i} + {i % 7}\n\n" for i in range(60))
STOPS = ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>", "<|fim_suffix|>", "```"]


def _p(values: list[float], q: int) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


class Server:
    def __init__(
        self, name: str, cmd: list[str], url: str, extra_env: dict[str, str] | None = None
    ) -> None:
        self.name, self.url = name, url
        env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
        env |= extra_env or {}
        self.proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_ready(url, self.proc, path="/health")  # both answer 200 only once loaded

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def assistantd(model: Path, extra_env: dict[str, str] | None = None) -> Server:
    port = _free_port()
    cmd = [str(Path(sys.executable).with_name("assistantd")), "--model", str(model),
           "--port", str(port), "--threads", str(THREADS), "--n-ctx", str(N_CTX),
           "--slots", str(SLOTS), "--log-level", "warning"]  # fmt: skip
    return Server("assistantd", cmd, f"http://127.0.0.1:{port}", extra_env)


def llama_server(binary: Path, model: Path) -> Server:
    port = _free_port()
    cmd = [str(binary), "-m", str(model), "--port", str(port), "-t", str(THREADS),
           "-tb", str(THREADS), "-c", str(N_CTX * SLOTS), "-np", str(SLOTS)]  # fmt: skip
    return Server("llama-server", cmd, f"http://127.0.0.1:{port}")


def _stream(
    url: str, path: str, body: dict, headers: dict[str, str] | None = None
) -> Iterator[tuple[float, str]]:
    with httpx.stream(
        "POST", url + path, json={**body, "stream": True}, headers=headers, timeout=600
    ) as resp:
        resp.raise_for_status()
        for line in resp.iter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                c = choices[0]
                text = c.get("text") or (c.get("delta") or {}).get("content") or ""
                if text:
                    yield time.perf_counter(), text


def autocomplete_ttft(
    url: str, n: int, typed: Iterator[str], headers: dict[str, str] | None = None
) -> list[float]:
    """n requests as Continue sends them, one per typing pause, each a longer prefix."""
    out = []
    for _ in range(n):
        prefix = CODE + next(typed)
        prompt = f"<|fim_prefix|>{prefix}<|fim_suffix|>\n\nprint(helper_1(2))\n<|fim_middle|>"
        body = {"prompt": prompt, "max_tokens": 24, "temperature": 0.01, "stop": STOPS}
        start = time.perf_counter()
        for at, _ in _stream(url, "/v1/completions", body, headers):
            out.append((at - start) * 1000)
            break
        time.sleep(0.3)  # the next pause
    return out


def _typing() -> Iterator[str]:
    text = ""
    for i in range(10_000):
        text += "abcdefghij"[i % 10]
        yield "def typed(" + text


class ChatLoad:
    """Chat answers streaming back to back on a thread, counting tokens and time."""

    def __init__(self, url: str, model: str | None = None) -> None:
        self.url, self.model, self.tokens, self.seconds = url, model, 0, 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        body = {"messages": [{"role": "user", "content": "Write a long story about a lighthouse."}],
                "max_tokens": 400, "temperature": 0.7}  # fmt: skip
        if self.model:
            body["model"] = self.model
        while not self.stop.is_set():
            first = last = None
            count = 0
            for at, _ in _stream(self.url, "/v1/chat/completions", body):
                first, last, count = first or at, at, count + 1
                if self.stop.is_set():
                    break
            if first and last and count > 1:
                self.tokens += count - 1
                self.seconds += last - first

    def __enter__(self) -> ChatLoad:
        self.thread.start()
        time.sleep(1.0)  # the answer is streaming
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(120)

    @property
    def tok_s(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def thread_cpu(server: Server) -> dict[tuple[int, int], float]:
    """CPU seconds of every thread of the server and its children (assistantd's worker)."""
    out = {}
    root = psutil.Process(server.proc.pid)
    for proc in [root, *root.children(recursive=True)]:
        try:
            for t in proc.threads():
                out[(proc.pid, t.id)] = t.user_time + t.system_time
        except psutil.NoSuchProcess:
            continue
    return out


def serving_cpu(before: dict[tuple[int, int], float], after: dict[tuple[int, int], float]) -> float:
    """CPU seconds outside the THREADS busiest threads (the decode threads): what serving a
    stream costs, taken from those threads' cores when there are no others. The kernel counts
    it in 10 ms ticks, so it is summed over every round before dividing by tokens."""
    spent = sorted((after[k] - before.get(k, 0.0) for k in after), reverse=True)
    return sum(spent[THREADS:])


def decode_rate(url: str, streams: int, tokens: int = 128) -> tuple[float, int]:
    """Aggregate decode tok/s of `streams` completions at once (count after the first token),
    and how many tokens were streamed."""
    results: list[tuple[float, float, int]] = []

    def one(i: int) -> None:
        body = {"prompt": f"# {i}\nCount from 1 to 1000: 1, 2, 3,", "max_tokens": tokens,
                "temperature": 0}  # fmt: skip
        times = [at for at, _ in _stream(url, "/v1/completions", body)]
        results.append((times[0], times[-1], len(times)))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    start = max(r[0] for r in results)
    end = max(r[1] for r in results)
    begin = min(r[0] for r in results)
    n = sum(r[2] for r in results)
    return (sum(r[2] - 1 for r in results) / (end - begin) if end > start else 0.0), n


ROUNDS = 3
# Single streams per server per round: this machine's speed swings ±10% from one minute to the
# next, so a median of three swung 0.90-1.07x between back-to-back runs; twelve paired ones,
# taken alternately, compare like with like.
ONE_PER_ROUND = 4


def measure(servers: list[Server], n: int) -> dict[str, dict[str, Any]]:
    """Every server is up at once and they take turns, scenario by scenario, in ROUNDS rounds
    (n autocomplete requests per scenario in all), so a slow minute on this shared machine
    falls on every column alike."""
    typed = {s.name: _typing() for s in servers}
    got: dict[str, dict[str, list[float]]] = {s.name: {} for s in servers}

    def add(server: Server, key: str, values: list[float]) -> None:
        got[server.name].setdefault(key, []).extend(values)

    for server in servers:
        autocomplete_ttft(server.url, 3, typed[server.name])  # warm-up
    per_round = max(1, n // ROUNDS)
    for _ in range(ROUNDS):
        for server in servers:
            add(server, "alone", autocomplete_ttft(server.url, per_round, typed[server.name]))
        for server in servers:
            with ChatLoad(server.url) as chat:
                add(server, "busy", autocomplete_ttft(server.url, per_round, typed[server.name]))
            add(server, "chat", [chat.tok_s])
        for _ in range(ONE_PER_ROUND):  # one stream alternating: paired samples
            for server in servers:
                cpu = thread_cpu(server)
                rate, n_tokens = decode_rate(server.url, 1)
                add(server, "one", [rate])
                add(server, "serving_s", [serving_cpu(cpu, thread_cpu(server))])
                add(server, "streamed", [float(n_tokens)])
        for server in servers:
            add(server, "four", [decode_rate(server.url, 4)[0]])
    rows = {}
    for name, r in got.items():
        rows[name] = {
            "alone_p50": _p(r["alone"], 50), "alone_p95": _p(r["alone"], 95),
            "busy_p50": _p(r["busy"], 50), "busy_p95": _p(r["busy"], 95),
            "chat_tok_s": statistics.median(r["chat"]), "one": statistics.median(r["one"]),
            "one_samples": r["one"],
            "four": statistics.median(r["four"]),
            "front": sum(r["serving_s"]) / sum(r["streamed"]) * 1e6,
        }  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--llama-server", type=Path, help="llama-server binary to compare")
    parser.add_argument("--model", default="smollm2", choices=sorted(fetch_models.MODELS))
    parser.add_argument("--n", type=int, default=30, help="autocomplete requests per scenario")
    args = parser.parse_args()
    model = fetch_models.fetch_all()[args.model]
    reference = statistics.median(in_process(model)()[1] for _ in range(3))
    starts = [lambda: assistantd(model)]
    if args.llama_server:
        starts.append(lambda: llama_server(args.llama_server, model))
    else:
        print("(llama-server column skipped: give --llama-server PATH)")
    servers: list[Server] = []
    try:
        for start in starts:
            servers.append(start())
        rows = measure(servers, args.n)
    finally:
        for server in servers:
            server.stop()
    print(f"\n## Editor mix on {args.model}, {THREADS} threads, {SLOTS} slots\n")
    print(
        "| server | autocomplete TTFT p50 / p95 alone (ms) | … while chat streams | "
        "chat tok/s meanwhile | 1-stream decode tok/s | 4-stream aggregate | 4 / 1 | "
        "serving CPU µs/token |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['alone_p50']:.0f} / {r['alone_p95']:.0f} | {r['busy_p50']:.0f} / "
              f"{r['busy_p95']:.0f} | {r['chat_tok_s']:.1f} | {r['one']:.1f} | {r['four']:.1f} | "
              f"{r['four'] / r['one']:.2f} | {r['front']:.0f} |")  # fmt: skip
    print(f"| llama-cpp-python in-process | | | | {reference:.1f} | | | |")
    ours = rows["assistantd"]
    print("\n| target | value | met |\n|---|---:|---|")
    ratio = ours["busy_p95"] / ours["alone_p95"]
    print(f"| autocomplete p95 while chat ≤ 1.5 × idle p95 | {ratio:.2f} | {ratio <= 1.5} |")
    decode = ours["one"] / reference
    print(f"| single-stream decode ≥ 0.97 × in-process | {decode:.2f} | {decode >= 0.97} |")
    if "llama-server" in rows:
        peer = rows["llama-server"]
        vs = ours["busy_p95"] / peer["busy_p95"]
        print(f"| autocomplete p95, chat on, ≤ 1.25 × llama-server | {vs:.2f} | {vs <= 1.25} |")
        scale = (ours["four"] / ours["one"]) / (peer["four"] / peer["one"])
        print(f"| 4-stream scaling ≥ 0.9 × llama-server's | {scale:.2f} | {scale >= 0.9} |")
        pairs = zip(ours["one_samples"], peer["one_samples"], strict=True)
        one = statistics.median(a / b for a, b in pairs)
        print(f"| single-stream decode ≥ 1.0 × llama-server (paired) | {one:.2f} | {one >= 1.0} |")
        chat = ours["chat_tok_s"] / peer["chat_tok_s"]
        print(f"| chat during autocomplete ≥ 0.9 × llama-server's | {chat:.2f} | {chat >= 0.9} |")
        p95 = ours["busy_p95"] / peer["busy_p95"]
        print(f"| autocomplete p95, chat on, ≤ 1.1 × llama-server | {p95:.2f} | {p95 <= 1.1} |")


if __name__ == "__main__":
    main()
