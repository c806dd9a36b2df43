#!/usr/bin/env python3
"""Benchmarks that print markdown tables. Timing targets live here, not in tests.

Table 1 (issue 2): decode tok/s and time to first token for the same prompt, max_tokens 128,
2 threads, median of N runs after a warm-up, on each test model, for
  (a) llama-cpp-python in-process, (b) `python -m llama_cpp.server`, (c) assistantd;
plus how long GET /v1/models takes while a long generation runs.

    .venv/bin/python -m scripts.bench [--runs 5] [--models smollm2 gemma270m]

(b) needs llama-cpp-python's server extras: pip install sse-starlette starlette-context
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from scripts import fetch_models

ROOT = Path(__file__).resolve().parent.parent

PROMPT = "Count from 1 to 1000, separated by commas: 1, 2, 3, 4,"
MAX_TOKENS = 128
THREADS = 2
SLOTS = 3  # assistantd's default: each slot holds its own KV cache
N_CTX = 2048

Sample = tuple[float, float, int]  # ttft_s, decode_tok_s, tokens


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _prompts() -> Iterator[str]:
    """The same prompt behind a different first line each run, so every run evaluates its
    prompt (as an editor's ever-changing context does) instead of hitting the prompt cache."""
    for n in itertools.count():
        yield f"# run {n}\n{PROMPT}"


def _measure(stream: Callable[[str], Iterator[str]], prompt: str) -> Sample:
    """Time a stream of text pieces: first piece, then the decode rate after it."""
    start = time.perf_counter()
    first = last = None
    count = 0
    for piece in stream(prompt):
        if not piece:
            continue
        now = time.perf_counter()
        first = first or now
        last = now
        count += 1
    assert first is not None and last is not None, "no tokens generated"
    return first - start, (count - 1) / (last - first) if last > first else 0.0, count


def in_process(model: Path) -> Callable[[], Sample]:
    from llama_cpp import Llama

    llm = Llama(str(model), n_ctx=N_CTX, n_threads=THREADS, n_threads_batch=THREADS, verbose=False)

    def pieces(prompt: str) -> Iterator[str]:
        for chunk in llm.create_completion(
            prompt, max_tokens=MAX_TOKENS, temperature=0, stream=True
        ):
            yield chunk["choices"][0]["text"]

    prompts = _prompts()
    return lambda: _measure(pieces, next(prompts))


def over_http(base_url: str) -> Callable[[], Sample]:
    http = httpx.Client(timeout=300)

    def pieces(prompt: str) -> Iterator[str]:
        body = {"prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0, "stream": True}
        with http.stream("POST", base_url + "/v1/completions", json=body) as response:
            response.raise_for_status()
            for line in response.iter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    choices = json.loads(line[6:])["choices"]
                    yield choices[0]["text"] if choices else ""

    prompts = _prompts()
    return lambda: _measure(pieces, next(prompts))


def _wait_ready(
    url: str, proc: subprocess.Popen[bytes], timeout_s: float = 180, path: str = "/v1/models"
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url + path, timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not start")


def start_server(kind: str, model: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    if kind == "llama_cpp.server":
        cmd = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model),
            "--port",
            str(port),
            "--n_ctx",
            str(N_CTX),
            "--n_threads",
            str(THREADS),
            "--n_threads_batch",
            str(THREADS),
        ]
    else:
        cmd = [
            sys.executable,
            "-m",
            "assistantd",
            "--model",
            str(model),
            "--port",
            str(port),
            "--n-ctx",
            str(N_CTX),
            "--threads",
            str(THREADS),
            "--log-level",
            "warning",
        ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    _wait_ready(url, proc)
    return proc, url


def models_latency_during_generation(url: str) -> float:
    """Median ms of GET /v1/models while a 400-token generation streams."""
    started = threading.Event()

    def generate() -> None:
        body = {"prompt": PROMPT, "max_tokens": 400, "temperature": 0, "stream": True}
        try:
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=300) as resp:
                for _ in resp.iter_lines():
                    started.set()
        except httpx.HTTPError as exc:
            print(f"<!-- long generation ended early: {exc} -->", file=sys.stderr)

    thread = threading.Thread(target=generate)
    thread.start()
    started.wait(60)
    times = []
    # One keep-alive client, as an editor has: a new httpx client per call spends ~50 ms
    # building its TLS context, which would hide what the server does.
    with httpx.Client(timeout=300) as http:
        for _ in range(10):
            t0 = time.perf_counter()
            http.get(url + "/v1/models")
            times.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.05)
    thread.join()
    return statistics.median(times)


def run(runner: Callable[[], Sample], runs: int) -> tuple[float, float, int]:
    runner()  # warm-up: loads pages, fills the prompt cache the same way for every mode
    samples = [runner() for _ in range(runs)]
    return (
        statistics.median(s[0] for s in samples) * 1000,
        statistics.median(s[1] for s in samples),
        int(statistics.median(s[2] for s in samples)),
    )


def _peak_rss(pid: int) -> int:
    """The worker's high-water mark of resident memory (VmHWM), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


def memory_table(paths: dict[str, Path]) -> None:
    """Predicted peak memory vs the worker's measured peak RSS, with a prompt that fills the
    context (the worst case a planner must budget for)."""
    from assistantd.planning.architecture import from_header
    from assistantd.planning.estimate import footprint
    from assistantd.planning.gguf_header import read_local

    print("\n| model | n_ctx | predicted MiB | measured peak RSS MiB | error |")
    print("|---|---:|---:|---:|---:|")
    for name, path in paths.items():
        arch = from_header(read_local(path))
        for n_ctx in (2048, 8192):
            predicted = footprint(arch, path.stat().st_size, n_ctx, n_seq=SLOTS).total_bytes
            port = _free_port()
            env = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "assistantd",
                    "--model",
                    str(path),
                    "--port",
                    str(port),
                    "--n-ctx",
                    str(n_ctx),
                    "--threads",
                    str(THREADS),
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            url = f"http://127.0.0.1:{port}"
            try:
                _wait_ready(url, proc)
                with httpx.Client(base_url=url, timeout=600) as http:
                    probe = http.post(
                        "/v1/completions", json={"prompt": "x = 1\n" * 100, "max_tokens": 1}
                    ).json()
                    per_rep = probe["usage"]["prompt_tokens"] / 100
                    reps = int((n_ctx - 64) / per_rep)
                    http.post(
                        "/v1/completions", json={"prompt": "x = 1\n" * reps, "max_tokens": 8}
                    ).raise_for_status()
                    pid = http.get("/status").json()["worker"]["pid"]
                measured = _peak_rss(pid)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            print(
                f"| {name} | {n_ctx} | {predicted / 2**20:.0f} | {measured / 2**20:.0f} | "
                f"{(predicted - measured) / measured:+.1%} |",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=list(fetch_models.MODELS))
    parser.add_argument("--only", choices=["speed", "memory"], help="run one table")
    args = parser.parse_args()
    paths = fetch_models.fetch_all(args.models)
    if args.only != "speed":
        memory_table(paths)
    if args.only == "memory":
        return

    print(
        f"\nprompt '# run N' + {PROMPT!r}, max_tokens {MAX_TOKENS}, {THREADS} threads, "
        f"n_ctx {N_CTX}, "
        f"median of {args.runs} runs after a warm-up\n"
    )
    print(
        "| model | mode | TTFT ms | decode tok/s | tokens | tok/s vs in-process | "
        "TTFT − in-process ms | /v1/models during generation ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name, path in paths.items():
        base_ttft, base_rate, tokens = run(in_process(path), args.runs)
        print(
            f"| {name} | in-process | {base_ttft:.1f} | {base_rate:.1f} | {tokens} "
            "| 1.000 | 0.0 | – |",
            flush=True,
        )
        for kind in ("llama_cpp.server", "assistantd"):
            try:
                proc, url = start_server(kind, path)
            except (RuntimeError, OSError) as exc:
                print(f"| {name} | {kind} | skipped: {exc} | | | | | |")
                continue
            try:
                ttft, rate, tokens = run(over_http(url), args.runs)
                busy_ms = models_latency_during_generation(url)
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(60)
            print(
                f"| {name} | {kind} | {ttft:.1f} | {rate:.1f} | {tokens} "
                f"| {rate / base_rate:.3f} | "
                f"{ttft - base_ttft:+.1f} | {busy_ms:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
