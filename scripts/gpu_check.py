#!/usr/bin/env python3
"""The measurements of scripts/gpu_check.sh, on a GPU machine with a CUDA build of
llama-cpp-python (or here, on the CPU, with --cpu-smoke and a tiny model).

1. Free memory as NVML and as llama.cpp see it, per device.
2. A model of a realistic shape with random weights (tests/support/synthetic.py: speed and
   memory depend on shapes and types, never on values), quantized to Q4_K_M by llama.cpp.
3. assistantd started on it as a user would (`python -m assistantd --model FILE`), with
   ASSISTANT_N_CTX and ASSISTANT_SLOTS: the estimate per device and kind against what llama.cpp
   allocated (GET /status), decode and prompt tok/s against the planner's prediction for the
   same placement, and four streams at once. Full offload, then partial offload
   (ASSISTANT_VRAM_BUDGET at half of what full offload took, so fewer layers fit).
4. llama-server of the same CUDA build (-ngl 999 -c N*SLOTS -np SLOTS -kvu): the same requests,
   side by side with assistantd.

Everything goes to gpu_check.json in --out ($OUT, else build/gpu-check-out), after each step,
so a run stopped by its deadline still leaves what it measured.

    python scripts/gpu_check.py --cpu-smoke                 # here: tiny model, CPU, 15-30 s
    python scripts/gpu_check.py --deadline EPOCH --llama-server PATH   # there, from the .sh

Helpers the shell scripts call: --write-tokenizer DST (prepare: SmolLM2's tokenizer alone, a
GGUF with no tensors), --write-source SHAPE (the unquantized model, in the background while the
build runs), --quantize SRC DST (in a child process, so that this one never holds a CUDA context
that would change the free memory the daemon sees).
"""

from __future__ import annotations

import argparse
import contextlib
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: tests.support and scripts import from the root
    sys.path.insert(0, str(ROOT))

CARRIED = ROOT / "build" / "gpu-check"
QUANT = "Q4_K_M"
MiB = 1024 * 1024

# Shapes of real models (Meta's Llama 3.x): random weights in these shapes load, allocate and
# run as the real ones do. Q4_K_M sizes: 8b ≈ 4.6 GiB, 3b ≈ 1.9 GiB, 1b ≈ 0.8 GiB.
SHAPES: dict[str, dict[str, Any]] = {
    "8b": dict(n_layer=32, n_embd=4096, n_head=32, n_head_kv=8, n_ff=14336, n_vocab=128256),
    "3b": dict(
        n_layer=28, n_embd=3072, n_head=24, n_head_kv=8, n_ff=8192, n_vocab=128256,
        tie_embeddings=True,
    ),
    "1b": dict(
        n_layer=16, n_embd=2048, n_head=32, n_head_kv=8, n_ff=8192, n_vocab=128256,
        tie_embeddings=True,
    ),
    # The CPU smoke test: SmolLM2's own vocabulary, 4 layers (about 15 MB at Q4_K_M).
    "tiny": dict(n_layer=4, n_embd=256, n_head=4, n_head_kv=2, n_ff=1024, tie_embeddings=True),
}  # fmt: skip
N_CTX_TRAIN = 131072  # as Llama 3.1: the context asked for is never cut to the training one
# Seconds from a written source model to the end of all measurements, by shape, on one H200
# with 16 cores (estimated, not yet measured there; quantizing is most of the difference):
# --shape auto takes the biggest that fits before the deadline.
NEEDS_S = {"8b": 240, "3b": 180, "1b": 140}

DECODE_PROMPT = "Count from 1 to 1000, separated by commas: 1, 2, 3, 4,"


# --- small helpers ---------------------------------------------------------------------------


def log(text: str = "") -> None:
    print(text, flush=True)


def heading(text: str) -> None:
    log(f"\n=== {text} ===")


def gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / MiB:.0f}"


def pct(measured: float | None, expected: float | None) -> str:
    if measured is None or not expected:
        return "-"
    return f"{(measured - expected) / expected * 100:+.1f}%"


def num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))
    log(line)
    log("  ".join("-" * w for w in widths))
    for row in rows:
        log("  ".join(str(c).rjust(w) for c, w in zip(row, widths, strict=True)))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set, for code that reads its settings from there."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, old in saved.items():
            if old is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = old


class Report:
    """The JSON that comes back, rewritten after every step."""

    def __init__(self, out_dir: Path) -> None:
        out_dir.mkdir(parents=True, exist_ok=True)
        self.path = out_dir / "gpu_check.json"
        self.data: dict[str, Any] = {"started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "notes": []}

    def set(self, key: str, value: Any) -> None:
        self.data[key] = value
        self.save()

    def note(self, text: str) -> None:
        log(f"NOTE: {text}")
        self.data["notes"].append(text)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=str))
        tmp.replace(self.path)


# --- model files -----------------------------------------------------------------------------


def write_tokenizer(dst: Path, src: Path | None = None) -> Path:
    """A GGUF holding only the tokenizer.* keys of `src` (default: SmolLM2's) and no tensors: a
    few MB that synthetic.write_model reads its tokenizer from, instead of a 96 MB model."""
    import gguf

    from tests.support.synthetic import default_tokenizer, read_tokenizer

    tok = read_tokenizer(src or default_tokenizer())
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    writer = gguf.GGUFWriter(str(tmp), "llama")
    for key, (value, vtype, sub) in tok.items():
        writer.add_key_value(key, value, vtype, sub_type=sub)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    writer.close()
    tmp.replace(dst)
    back = read_tokenizer(dst)
    if len(back["tokenizer.ggml.tokens"][0]) != len(tok["tokenizer.ggml.tokens"][0]):
        raise RuntimeError(f"{dst}: the tokenizer did not read back whole")
    log(f"{dst}: {len(tok)} tokenizer keys, {dst.stat().st_size / MiB:.1f} MiB")
    return dst


def default_tokenizer_file() -> Path | None:
    carried = CARRIED / "tokenizer.gguf"
    return carried if carried.is_file() else None  # None: synthetic's default (SmolLM2's)


def source_path(work: Path, shape: str) -> Path:
    return work / f"synthetic-{shape}.q8_0.gguf"


def model_path(work: Path, shape: str) -> Path:
    return work / f"synthetic-{shape}.{QUANT}.gguf"


def write_source(work: Path, shape: str, tokenizer: Path | None) -> Path:
    """The unquantized model (Q8_0: half the bytes of F16 to write, and llama.cpp requantizes
    it to Q4_K_M with the same type per tensor it gives an F16 source)."""
    from tests.support.synthetic import write_model

    dst = source_path(work, shape)
    if dst.is_file():
        return dst
    work.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".part")
    started = time.perf_counter()
    write_model(
        tmp, **SHAPES[shape], n_ctx_train=N_CTX_TRAIN, tokenizer_from=tokenizer, dtype="q8_0"
    )
    tmp.replace(dst)
    took = time.perf_counter() - started
    log(f"wrote {dst} ({gib(dst.stat().st_size)}) in {took:.1f} s")
    return dst


def quantize_in_child(src: Path, dst: Path) -> float:
    """llama.cpp's quantizer in a child process (all cores); returns its seconds."""
    tmp = dst.with_name(dst.name + ".part")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--quantize", str(src), str(tmp)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise RuntimeError(f"quantizing {src} failed (exit {done.returncode}):\n{tail}")
    tmp.replace(dst)
    return time.perf_counter() - started


def choose_shape(work: Path, deadline: float) -> str:
    """The biggest shape whose quantizing and measuring fit before the deadline; a shape whose
    Q4_K_M file is already there (an earlier, interrupted run) costs its measuring only."""
    left = deadline - time.time()
    for shape in ("8b", "3b", "1b"):
        need = NEEDS_S[shape] - (90 if model_path(work, shape).is_file() else 0)
        if left >= need:
            return shape
    return "1b"


def make_model(work: Path, shape: str, tokenizer: Path | None, report: Report) -> Path:
    heading(f"model: {shape} {SHAPES[shape]}")
    dst = model_path(work, shape)
    info: dict[str, Any] = {"shape": shape, **SHAPES[shape], "quant": QUANT, "path": str(dst)}
    if dst.is_file():
        log(f"{dst} is there already (an earlier run)")
    else:
        started = time.perf_counter()
        src = write_source(work, shape, tokenizer)
        info["source_s"] = round(time.perf_counter() - started, 1)
        info["source_bytes"] = src.stat().st_size
        info["quantize_s"] = round(quantize_in_child(src, dst), 1)
        log(f"quantized to {QUANT} in {info['quantize_s']} s")
    info["bytes"] = dst.stat().st_size
    log(f"{dst}: {gib(info['bytes'])}")
    report.set("model", info)
    return dst


# --- what the machine has --------------------------------------------------------------------


def nvml_devices() -> list[dict[str, Any]]:
    try:
        import pynvml
    except ImportError:
        return []
    try:
        pynvml.nvmlInit()
    except Exception:
        return []
    try:
        found = []
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            name = pynvml.nvmlDeviceGetName(handle)
            found.append(
                {
                    "index": i,
                    "name": name.decode() if isinstance(name, bytes) else name,
                    "total_bytes": int(memory.total),
                    "free_bytes": int(memory.free),
                    "used_bytes": int(memory.used),
                }
            )
        return found
    finally:
        pynvml.nvmlShutdown()


def machine_view(report: Report) -> None:
    """NVML's devices (and assistantd's reading of their speed) beside llama.cpp's."""
    from assistantd.devices.registry import read_devices
    from assistantd.planning.hardware import probe_nvidia

    heading("devices: NVML and llama.cpp")
    nvml = nvml_devices()
    speeds = [asdict(g) for g in probe_nvidia(None)]
    for device, speed in zip(nvml, speeds, strict=False):
        device.update(
            driver=speed["driver"],
            compute_capability=speed["compute_capability"],
            memory_bandwidth_gbs=speed["memory_bandwidth_gbs"],
            fp16_tflops=speed["fp16_tflops"],
        )
    if nvml:
        table(
            ["NVML", "name", "total MiB", "free MiB", "used MiB", "cc", "GB/s", "TFLOPS"],
            [
                [
                    str(d["index"]), d["name"], mib(d["total_bytes"]), mib(d["free_bytes"]),
                    mib(d["used_bytes"]), str(d.get("compute_capability")),
                    num(d.get("memory_bandwidth_gbs"), 0), num(d.get("fp16_tflops"), 0),
                ]
                for d in nvml
            ],
        )  # fmt: skip
    else:
        log("NVML: no NVIDIA driver or no pynvml here")
    listed = read_devices()
    llama = listed.to_json()
    log(f"llama.cpp: backend {llama['backend']}, compiled in: {', '.join(listed.backends)}")
    for note in listed.notes:
        report.note(f"llama.cpp devices: {note}")
    if listed.devices:
        table(
            ["llama.cpp", "description", "total MiB", "free MiB", "NVML free MiB", "diff MiB"],
            [
                [
                    d.name, d.description, mib(d.total_bytes), mib(d.free_bytes),
                    mib(nv["free_bytes"]) if nv else "-",
                    f"{(d.free_bytes - nv['free_bytes']) / MiB:+.0f}" if nv else "-",
                ]
                for d, nv in zip(
                    listed.devices, [*nvml, *[None] * len(listed.devices)], strict=False
                )
            ],
        )  # fmt: skip
    else:
        log("llama.cpp lists no GPU device (a CPU build, or no driver)")
    report.set("devices", {"nvml": nvml, "llama_cpp": llama})


# --- the planner's view ----------------------------------------------------------------------


@dataclass
class Planned:
    """Where the planner puts the model with these settings, and what it predicts there."""

    arch: Any
    split: Any
    hardware: Any
    n_gpu_layers: int
    placement: str
    devices: list[dict[str, Any]]
    budget: dict[str, Any]
    # All on the CPU the plan lists no device: estimate.footprint's figures, which it uses.
    cpu_estimate: dict[str, int] | None = None

    def predict(self, prompt_tokens: int) -> dict[str, float]:
        from assistantd.planning.predict import predict

        got = predict(self.arch, self.split, self.hardware, prompt_tokens, QUANT)
        return {
            "decode_tok_s": got.decode_tok_s,
            "prompt_tok_s": got.prompt_tok_s,
            "ttft_ms": got.ttft_ms,
        }


def plan_for(model: Path, env: dict[str, str]) -> Planned:
    """The placement the daemon will choose with `env` (its own settings, profile, budget and
    place_file), computed here with the daemon's own functions, before it starts."""
    from assistantd.planning.architecture import from_header
    from assistantd.planning.estimate import footprint
    from assistantd.planning.gguf_header import read_local
    from assistantd.planning.given import place_file
    from assistantd.planning.hardware import probe
    from assistantd.planning.planner import hardware_of, profile_budget
    from assistantd.planning.profiles import active_profile
    from assistantd.settings import load_settings

    with environment(env):
        settings = load_settings([])
        profile = active_profile(settings)
    machine = probe()
    budget = profile_budget(profile, machine)
    slots = profile.role_slots("chat", settings.slots)
    option = place_file(model, budget, n_ctx=profile.n_ctx, n_slots=slots)
    if option is None:  # (a place_file that may return None: no plan for this architecture)
        raise RuntimeError(f"the planner cannot place {model}: its header lacks a plan's numbers")
    header = read_local(model)
    arch = from_header(header)
    cpu_estimate = None
    if not option.devices:
        ctx = min(profile.n_ctx, arch.n_ctx_train)
        cpu = footprint(arch, header.tensor_bytes, ctx, n_seq=slots)
        cpu_estimate = {
            "weights": cpu.weights_bytes,
            "kv": cpu.kv_bytes,
            "compute": cpu.compute_bytes,
            "total": cpu.weights_bytes + cpu.kv_bytes + cpu.compute_bytes,
        }
    return Planned(
        arch=arch,
        split=option.split,
        hardware=hardware_of(machine, budget),
        n_gpu_layers=option.n_gpu_layers,
        placement=option.placement,
        devices=[d.to_json() for d in option.devices],
        budget=asdict(budget),
        cpu_estimate=cpu_estimate,
    )


# --- servers and requests --------------------------------------------------------------------


class Server:
    """A server process on a free loopback port, its output in a log file."""

    def __init__(self, label: str, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.label = label
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = log_path.open("wb")
        cmd = [c.replace("{port}", str(self.port)) for c in cmd]
        log(f"starting {label}: {' '.join(cmd)}")
        self.proc = subprocess.Popen(cmd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout_s: float) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.label} exited {self.proc.returncode}:\n{self.tail()}")
            try:
                # httpx.get: a fresh connection each time (see Server.stream).
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return time.monotonic() - started
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.label} not healthy after {timeout_s:.0f} s:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


@dataclass
class Sample:
    tokens: int  # completion tokens
    prompt_tokens: int
    ttft_s: float  # request sent to first token
    decode_tok_s: float | None  # (tokens - 1) / (last token - first token)
    wall_s: float
    server_timings: dict[str, Any] | None = None  # llama-server's own figures


def stream(url: str, prompt: str, max_tokens: int) -> Sample:
    """One streamed /v1/completions, timed from the client. Each request opens a connection of
    its own: llama-server of this build exits when httpx reuses a connection after reading a
    stream to its end. ignore_eos is llama-server's (assistantd ignores fields it does not
    know): random weights can pick an end-of-text token like any other."""
    body = {
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    first = last = None
    chunks = 0
    usage: dict[str, Any] = {}
    timings: dict[str, Any] | None = None
    with httpx.Client(timeout=600) as client:
        started = time.perf_counter()
        with client.stream("POST", url + "/v1/completions", json=body) as response:
            if response.status_code != 200:
                response.read()
                raise RuntimeError(f"{url}: HTTP {response.status_code}: {response.text[:500]}")
            for line in response.iter_lines():
                if not line.startswith("data: ") or line.strip() == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                now = time.perf_counter()
                if data.get("choices"):
                    chunks += 1
                    first = first or now
                    last = now
                usage = data.get("usage") or usage
                timings = data.get("timings") or timings
        ended = time.perf_counter()
    if first is None or last is None:
        raise RuntimeError(f"{url}: the stream carried no tokens")
    tokens = int(usage.get("completion_tokens") or chunks)
    return Sample(
        tokens=tokens,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        ttft_s=first - started,
        decode_tok_s=(tokens - 1) / (last - first) if last > first and tokens > 1 else None,
        wall_s=ended - started,
        server_timings=timings,
    )


def long_prompt(run: int, target_tokens: int) -> str:
    """Code of about target_tokens tokens (≈ 20 a line), its first line unique to the run so no
    server answers it from a prompt cache."""
    lines = [f"# file {run}: generated functions, run {run} of the prompt measurement"]
    for i in range(max(1, target_tokens // 20)):
        lines.append(f"def function_{run}_{i}(x):\n    return x * {i} + {i * i % 97}")
    return "\n".join(lines) + "\n"


def decode_prompt(run: int) -> str:
    return f"# run {run}\n{DECODE_PROMPT}"


@dataclass
class Sizes:
    decode_tokens: int
    prompt_tokens: int
    runs: int


def measure(url: str, sizes: Sizes, label: str) -> dict[str, Any]:
    """Decode (one stream), prompt (time to first token of a long prompt, max_tokens 1) and
    four streams at once; medians of `runs` after a warm-up of each."""
    runs = iter(range(1, 1_000_000))
    stream(url, decode_prompt(0), 16)  # warm-up: first kernels, cuBLAS, graphs
    stream(url, long_prompt(0, sizes.prompt_tokens), 1)
    decode = [
        stream(url, decode_prompt(next(runs)), sizes.decode_tokens) for _ in range(sizes.runs)
    ]
    prompt = [
        stream(url, long_prompt(next(runs), sizes.prompt_tokens), 1) for _ in range(sizes.runs)
    ]
    rates = [s.decode_tok_s for s in decode if s.decode_tok_s]
    decode_tok_s = statistics.median(rates) if rates else None
    ttft = statistics.median(s.ttft_s for s in prompt)
    n_prompt = prompt[0].prompt_tokens
    # The first token's own decode step is in the time to first token: take it out (unless
    # the two disagree so much that one of them is off, on a busy machine).
    step = 1 / decode_tok_s if decode_tok_s else 0.0
    prompt_s = ttft - step if step < ttft / 2 else ttft
    result: dict[str, Any] = {
        "decode_tok_s": decode_tok_s,
        "decode_tokens": [s.tokens for s in decode],
        "prompt_tokens": n_prompt,
        "ttft_ms": ttft * 1000,
        "prompt_tok_s": n_prompt / prompt_s if n_prompt else None,
        "streams4": four_streams(url, sizes, next(runs)),
    }
    server_decode = server_figures(decode, "predicted_per_second")
    server_prompt = server_figures(prompt, "prompt_per_second")
    if server_decode and server_prompt:
        result["server_reported"] = {
            "decode_tok_s": statistics.median(server_decode),
            "prompt_tok_s": statistics.median(server_prompt),
        }
    short = [s.tokens for s in decode if s.tokens < sizes.decode_tokens]
    if short:
        result["note"] = (
            f"{label}: {len(short)} of {len(decode)} decode runs ended early ({short} tokens): "
            "random weights chose an end-of-text token"
        )
    return result


def server_figures(samples: list[Sample], key: str) -> list[float]:
    """One of llama-server's own timings (it sends them with its last chunk) of each sample."""
    values = [(s.server_timings or {}).get(key) for s in samples]
    return [float(v) for v in values if v]


def four_streams(url: str, sizes: Sizes, run: int) -> dict[str, Any]:
    """Four requests at once, each on its own connection: aggregate tok/s = all completion
    tokens over the wall time from the first request sent to the last token received."""
    samples: list[Sample | None] = [None] * 4
    errors: list[str] = []
    barrier = threading.Barrier(4)

    def one(i: int) -> None:
        barrier.wait()
        try:
            samples[i] = stream(url, decode_prompt(run * 10 + i), sizes.decode_tokens)
        except Exception as exc:  # reported below, with the others' figures
            errors.append(f"stream {i}: {exc}")

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    done = [s for s in samples if s is not None]
    if errors or not done:
        return {"error": "; ".join(errors) or "no stream finished"}
    total = sum(s.tokens for s in done)
    rates = [s.decode_tok_s for s in done if s.decode_tok_s]
    return {
        "aggregate_tok_s": total / wall,
        "per_stream_decode_tok_s": statistics.mean(rates) if rates else None,
        "tokens": [s.tokens for s in done],
        "wall_s": wall,
    }


# --- assistantd ------------------------------------------------------------------------------


def daemon_env(
    base: dict[str, str], n_ctx: int, slots: int, extra: dict[str, str]
) -> dict[str, str]:
    return {
        **base,
        "ASSISTANT_N_CTX": str(n_ctx),
        "ASSISTANT_SLOTS": str(slots),
        "ASSISTANT_LOG_LEVEL": "info",
        **extra,
    }


def estimate_table(devices: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Estimated against allocated bytes, per device and kind, from /status."""
    rows = []
    for d in devices:
        est, got = d.get("estimated") or {}, d.get("allocated") or {}
        for kind in ("weights", "kv", "compute", "total"):
            e, a = est.get(kind), got.get(kind)
            rows.append(
                {
                    "device": d["device"],
                    "layers": d.get("layers"),
                    "kind": kind,
                    "estimated": e,
                    "allocated": a,
                    "diff_pct": (a - e) / e * 100 if e and a is not None else None,
                }
            )
    return rows


def print_estimates(rows: list[dict[str, Any]]) -> None:
    table(
        ["device", "layers", "kind", "estimated MiB", "allocated MiB", "diff"],
        [
            [
                r["device"], "-" if r["layers"] is None else str(r["layers"]), r["kind"],
                mib(r["estimated"]),
                mib(r["allocated"]), pct(r["allocated"], r["estimated"]),
            ]
            for r in rows
        ],
    )  # fmt: skip


def run_assistantd(
    label: str,
    model: Path,
    env: dict[str, str],
    sizes: Sizes,
    work: Path,
    report: Report,
) -> dict[str, Any]:
    """Plan in-process, start the daemon as a user would, compare, measure."""
    heading(f"assistantd, {label}")
    settings_env = {k: v for k, v in env.items() if k.startswith("ASSISTANT_")}
    log("settings: " + " ".join(f"{k}={v}" for k, v in sorted(settings_env.items())))
    planned = plan_for(model, settings_env)
    log(
        f"planner: {planned.placement}, n_gpu_layers {planned.n_gpu_layers}; "
        f"hardware {asdict(planned.hardware)}"
    )
    result: dict[str, Any] = {
        "env": settings_env,
        "planned": {
            "placement": planned.placement,
            "n_gpu_layers": planned.n_gpu_layers,
            "devices": planned.devices,
            "hardware": asdict(planned.hardware),
            "split": asdict(planned.split),
            "budget": planned.budget,
        },
    }
    server = Server(
        f"assistantd ({label})",
        [sys.executable, "-m", "assistantd", "--model", str(model), "--port", "{port}"],
        env,
        work / f"assistantd-{label}.log",
    )
    try:
        result["start_s"] = round(server.wait_healthy(600), 1)
        status = httpx.get(server.url + "/status", timeout=30).json()
        chat = status["roles"]["chat"]
        result["status"] = {
            "n_gpu_layers": chat.get("n_gpu_layers"),
            "devices": chat.get("devices"),
            "machine_devices": status.get("devices"),
            "model": status.get("model"),
        }
        devices = chat.get("devices") or []
        if planned.cpu_estimate:  # /status shows none for a CPU-only placement
            for d in devices:
                if d["device"] == "CPU" and not d.get("estimated"):
                    d["estimated"] = planned.cpu_estimate
                    log("(all on the CPU: the estimate is estimate.footprint's, computed here)")
        rows = estimate_table(devices)
        result["estimate_vs_allocated"] = rows
        log(f"up in {result['start_s']} s; /status n_gpu_layers {chat.get('n_gpu_layers')}")
        if chat.get("n_gpu_layers") not in (None, planned.n_gpu_layers):
            report.note(
                f"{label}: the daemon placed n_gpu_layers {chat.get('n_gpu_layers')}, the plan "
                f"computed here {planned.n_gpu_layers} (free memory moved between the two?)"
            )
        print_estimates(rows)
        report.set(f"assistantd_{label}", result)
        got = measure(server.url, sizes, f"assistantd {label}")
        result["measured"] = got
        if "note" in got:
            report.note(got.pop("note"))
        result["predicted"] = planned.predict(got["prompt_tokens"] or sizes.prompt_tokens)
        print_speeds(label, got, result["predicted"])
    finally:
        server.stop()
        report.set(f"assistantd_{label}", result)
    return result


def print_speeds(label: str, got: dict[str, Any], predicted: dict[str, float]) -> None:
    rows = [
        ["decode tok/s", num(got["decode_tok_s"]), num(predicted["decode_tok_s"])],
        ["prompt tok/s", num(got["prompt_tok_s"]), num(predicted["prompt_tok_s"])],
        ["ttft ms", num(got["ttft_ms"]), num(predicted["ttft_ms"])],
    ]
    for row, key in zip(rows, ("decode_tok_s", "prompt_tok_s", "ttft_ms"), strict=True):
        row.append(pct(got[key], predicted[key]))
    log(f"{label}: {got['prompt_tokens']}-token prompt, decode runs {got['decode_tokens']} tokens")
    table(["", "measured", "predicted", "measured vs predicted"], rows)
    s4 = got["streams4"]
    if "error" in s4:
        log(f"four streams: {s4['error']}")
    else:
        log(
            f"four streams: {num(s4['aggregate_tok_s'])} tok/s aggregate, "
            f"{num(s4['per_stream_decode_tok_s'])} tok/s per stream"
        )


def vram_total(result: dict[str, Any]) -> int | None:
    """What full offload took on the GPUs: allocated where llama.cpp said, else estimated."""
    total = 0
    for d in (result.get("status") or {}).get("devices") or []:
        if d["device"] == "CPU":
            continue
        figures = d.get("allocated") or d.get("estimated") or {}
        total += int(figures.get("total") or 0)
    return total or None


def wait_vram_released(baseline: list[dict[str, Any]], timeout_s: float = 20) -> None:
    """After a server stops, until the GPUs have their memory back (its worker may take a
    moment to exit)."""
    if not baseline:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        now = nvml_devices()
        if all(
            n["free_bytes"] >= b["free_bytes"] - 256 * MiB
            for n, b in zip(now, baseline, strict=False)
        ):
            return
        time.sleep(0.5)
    log("NOTE: GPU memory not back to where it was before the last server")


# --- llama-server ----------------------------------------------------------------------------


def run_llama_server(
    binary: Path, model: Path, n_ctx: int, slots: int, sizes: Sizes, work: Path, report: Report
) -> dict[str, Any]:
    heading("llama-server")
    args = ["-m", str(model), "-ngl", "999", "-c", str(n_ctx * slots), "-np", str(slots)]
    args += ["-kvu", "-fit", "off", "--host", "127.0.0.1", "--port", "{port}"]
    result: dict[str, Any] = {"binary": str(binary), "args": args}
    server = Server(
        "llama-server", [str(binary), *args], dict(os.environ), work / "llama-server.log"
    )
    try:
        result["start_s"] = round(server.wait_healthy(300), 1)
        log(f"up in {result['start_s']} s")
        got = measure(server.url, sizes, "llama-server")
        if "note" in got:
            report.note(got.pop("note"))
        result["measured"] = got
    finally:
        server.stop()
        report.set("llama_server", result)
    return result


def print_comparison(ours: dict[str, Any], theirs: dict[str, Any]) -> dict[str, Any]:
    heading("assistantd against llama-server (same model, same build, full offload)")
    a, b = ours["measured"], theirs["measured"]
    pairs = {
        "decode tok/s, one stream": (a["decode_tok_s"], b["decode_tok_s"]),
        "prompt tok/s": (a["prompt_tok_s"], b["prompt_tok_s"]),
        "ttft ms": (a["ttft_ms"], b["ttft_ms"]),
        "four streams, aggregate tok/s": (
            a["streams4"].get("aggregate_tok_s"),
            b["streams4"].get("aggregate_tok_s"),
        ),
        "four streams, tok/s per stream": (
            a["streams4"].get("per_stream_decode_tok_s"),
            b["streams4"].get("per_stream_decode_tok_s"),
        ),
    }
    table(
        ["", "assistantd", "llama-server", "assistantd / llama-server"],
        [
            [name, num(x), num(y), f"{x / y:.2f}" if x and y else "-"]
            for name, (x, y) in pairs.items()
        ],
    )
    if "server_reported" in b:
        log(f"llama-server's own timings: {b['server_reported']}")
    return {name: {"assistantd": x, "llama_server": y} for name, (x, y) in pairs.items()}


def find_llama_server(work: Path) -> Path | None:
    for base in (work / "build", ROOT / "build"):
        if base.is_dir():
            for path in base.rglob("llama-server"):
                if path.is_file() and os.access(path, os.X_OK):
                    return path
    return None


# --- the whole check -------------------------------------------------------------------------


def main_check(args: argparse.Namespace) -> int:
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    out = args.out or Path(os.environ.get("OUT") or ROOT / "build" / "gpu-check-out")
    report = Report(out)
    deadline = args.deadline or time.time() + 3600
    report.set("mode", "cpu-smoke" if args.cpu_smoke else "gpu")
    if args.phases and args.phases.is_file():  # gpu_check.sh's phases before this one
        lines = args.phases.read_text().splitlines()
        report.set("phases", [json.loads(line) for line in lines if line.strip()])
    # The daemon's own state and config, apart from anything of the user's.
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")}
    for var in ("XDG_CONFIG_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME", "XDG_DATA_HOME"):
        clean[var] = str(work / var.lower())
    os.environ.clear()
    os.environ.update(clean)
    if args.cpu_smoke:
        os.environ["ASSISTANT_THREADS"] = os.environ.get("ASSISTANT_THREADS", "2")
    base_env = dict(os.environ)
    sizes = Sizes(args.decode_tokens, args.prompt_tokens, args.runs)
    report.set("settings", {"n_ctx": args.n_ctx, "slots": args.slots, **asdict(sizes)})

    def left() -> float:
        return deadline - time.time()

    machine_view(report)
    baseline = nvml_devices()
    shape = args.shape
    if shape == "auto":
        shape = choose_shape(work, deadline)
        log(f"\nshape: {shape} ({left():.0f} s left before the deadline)")
    model = make_model(work, shape, args.tokenizer, report)

    def attempt(what: str, step: Callable[[], dict[str, Any]]) -> dict[str, Any] | None:
        """One step; a failure is noted (with the server's log tail) and the next goes on."""
        try:
            return step()
        except Exception as exc:
            report.note(f"{what} failed: {type(exc).__name__}: {exc}")
            return None

    full_env = daemon_env(base_env, args.n_ctx, args.slots, {})
    full = attempt(
        "assistantd, full offload",
        lambda: run_assistantd("full", model, full_env, sizes, work, report),
    )
    wait_vram_released(baseline)

    total = vram_total(full or {})
    if not total or not baseline:
        report.note("no GPU memory used by full offload: partial offload runs as the CPU does")
        budget = 64 * MiB
    else:
        budget = total // 2
    partial: dict[str, Any] | None = None
    if left() < 60:
        report.note(f"deadline: partial offload skipped ({left():.0f} s left)")
    else:
        partial_env = daemon_env(
            base_env, args.n_ctx, args.slots, {"ASSISTANT_VRAM_BUDGET": str(budget)}
        )
        partial_sizes = Sizes(min(sizes.decode_tokens, 128), sizes.prompt_tokens, sizes.runs)
        partial = attempt(
            "assistantd, partial offload",
            lambda: run_assistantd("partial", model, partial_env, partial_sizes, work, report),
        )
        wait_vram_released(baseline)

    server_bin = args.llama_server or find_llama_server(work)
    comparison = None
    if server_bin is None or not server_bin.is_file():
        report.note(f"llama-server: no binary ({server_bin or 'none found'}); comparison skipped")
    elif left() < 45:
        report.note(f"deadline: llama-server skipped ({left():.0f} s left)")
    else:
        theirs = attempt(
            "llama-server",
            lambda: run_llama_server(
                server_bin, model, args.n_ctx, args.slots, sizes, work, report
            ),
        )
        if full and "measured" in full and theirs and "measured" in theirs:
            comparison = print_comparison(full, theirs)
            report.set("comparison", comparison)

    if "llama_cpp" in sys.modules:
        report.note("this process loaded llama_cpp: its CUDA context counted against free memory")
    summary(full, partial, comparison, report)
    return 0 if full and "measured" in full else 1


def summary(
    full: dict[str, Any] | None,
    partial: dict[str, Any] | None,
    comparison: dict[str, Any] | None,
    report: Report,
) -> None:
    heading("summary")
    rows = []
    for label, result in (("full", full), ("partial", partial)):
        if not result or "measured" not in result:
            continue
        got, want = result["measured"], result["predicted"]
        layers = {
            d["device"]: d.get("layers") or 0
            for d in (result.get("status") or {}).get("devices") or []
        }
        rows.append(
            [
                label, " ".join(f"{k}:{v}" for k, v in layers.items()),
                num(got["decode_tok_s"]), num(want["decode_tok_s"]),
                pct(got["decode_tok_s"], want["decode_tok_s"]),
                num(got["prompt_tok_s"]), num(want["prompt_tok_s"]),
                pct(got["prompt_tok_s"], want["prompt_tok_s"]),
            ]
        )  # fmt: skip
    table(["offload", "layers", "decode", "predicted", "diff", "prompt", "predicted", "diff"], rows)
    for label, result in (("full", full), ("partial", partial)):
        if result and result.get("estimate_vs_allocated"):
            log(f"\nestimate against allocation, {label} offload:")
            print_estimates(result["estimate_vs_allocated"])
    if comparison:
        log("")
        table(
            ["", "assistantd", "llama-server"],
            [[k, num(v["assistantd"]), num(v["llama_server"])] for k, v in comparison.items()],
        )
    report.set("finished", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    log(f"\nwritten: {report.path}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny model, CPU, small sizes")
    parser.add_argument("--write-tokenizer", type=Path, metavar="DST")
    parser.add_argument("--write-source", choices=sorted(SHAPES), metavar="SHAPE")
    parser.add_argument("--quantize", nargs=2, type=Path, metavar=("SRC", "DST"))
    parser.add_argument("--shape", choices=["auto", *SHAPES], default=None)
    parser.add_argument("--work", type=Path, default=Path("/tmp/gpu-check"))
    parser.add_argument("--out", type=Path, default=None, help="default: $OUT")
    parser.add_argument("--deadline", type=float, default=None, help="epoch seconds")
    parser.add_argument("--llama-server", type=Path, default=None)
    parser.add_argument("--tokenizer", type=Path, default=default_tokenizer_file())
    parser.add_argument("--n-ctx", type=int, default=None, help="per slot (8192; smoke 2048)")
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--decode-tokens", type=int, default=None, help="256; smoke 32")
    parser.add_argument("--prompt-tokens", type=int, default=None, help="2000; smoke 300")
    parser.add_argument("--runs", type=int, default=None, help="3; smoke 1")
    parser.add_argument("--phases", type=Path, default=None, help="gpu_check.sh's phase log")
    args = parser.parse_args(argv)

    if args.write_tokenizer:
        write_tokenizer(args.write_tokenizer)
        return 0
    if args.write_source:
        write_source(args.work, args.write_source, args.tokenizer)
        return 0
    if args.quantize:
        from tests.support.synthetic import quantize

        quantize(args.quantize[0], args.quantize[1], QUANT)
        return 0
    smoke = args.cpu_smoke
    if smoke and args.work == Path("/tmp/gpu-check"):
        args.work = Path("/tmp/gpu-check-smoke")
    args.shape = args.shape or ("tiny" if smoke else "auto")
    args.n_ctx = args.n_ctx or (2048 if smoke else 8192)
    args.decode_tokens = args.decode_tokens or (32 if smoke else 256)
    args.prompt_tokens = args.prompt_tokens or (300 if smoke else 2000)
    args.runs = args.runs or (1 if smoke else 3)
    return main_check(args)


if __name__ == "__main__":
    sys.exit(main())
