"""A two-rung ladder of real models for tests and benchmarks: Gemma 3 270M (bigger) and
SmolLM2 135M (smaller), as a catalog, a hub layout and a profile the daemon plans over."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import openai

from assistantd.planning.architecture import from_header
from assistantd.planning.gguf_header import read_local

GEMMA_REPO = "test-org/gemma-3-270m-GGUF"
SMOL_REPO = "test-org/SmolLM2-135M-Instruct-GGUF"
GEMMA_ID = "gemma-3-270m-q4_k_m"
SMOL_ID = "smollm2-135m-instruct-q4_1"


def hub_repos(models: dict[str, Path]) -> dict[str, dict[str, Path]]:
    """repo → {file name on the hub: local file}, for a hub-compatible server."""
    return {
        GEMMA_REPO: {"gemma-3-270m-Q4_K_M.gguf": models["gemma270m"]},
        SMOL_REPO: {"SmolLM2-135M-Instruct-Q4_1.gguf": models["smollm2"]},
    }


def arch_line(path: Path) -> str:
    a = from_header(read_local(path))
    return (
        f'{{ arch = "{a.arch}", n_params = {a.n_params}, n_layer = {a.n_layer}, '
        f"n_embd = {a.n_embd}, n_head = {a.n_head}, n_head_kv = {a.n_head_kv}, "
        f"head_dim_k = {a.head_dim_k}, head_dim_v = {a.head_dim_v}, "
        f"n_ctx_train = {a.n_ctx_train}, n_vocab = {a.n_vocab}"
        + (f", sliding_window = {a.sliding_window}" if a.sliding_window else "")
        + (f", swa_layers = {a.swa_layers}" if a.swa_layers else "")
        + " }"
    )


def write_catalog(path: Path, models: dict[str, Path]) -> Path:
    path.write_text(f"""
[[model]]
id = "gemma-3-270m"
family = "gemma3"
repo = "{GEMMA_REPO}"
quants = ["Q4_K_M"]
arch = {arch_line(models["gemma270m"])}
quality = 30.0
quality_source = "test"

[[model]]
id = "smollm2-135m-instruct"
family = "smollm2"
repo = "{SMOL_REPO}"
quants = ["Q4_1"]
arch = {arch_line(models["smollm2"])}
quality = 10.0
quality_source = "test"
""")
    return path


def profile_text(
    decode_tok_s: float,
    *,
    cooldown_s: float = 0,
    ram_budget: int | None = None,
    vram_budget: int | None = None,
) -> str:
    memory = f"ram_budget = {ram_budget}\n" if ram_budget else ""
    memory += f"vram_budget = {vram_budget}\n" if vram_budget else ""
    return f"""# test profile
prefer = "quality"
n_ctx = 2048

[targets]
ttft_p95_ms = 100000
decode_tok_s = {decode_tok_s}

[memory]
ram_reserve = "0MiB"
{memory}
[shift]
window_s = 60
min_requests = 3
hysteresis = 0.2
cooldown_s = {cooldown_s}
memory_check_s = 1
"""


class StreamingClient(threading.Thread):
    """Streams completions back to back with the official openai client, as an editor would,
    recording when each answer's first token came and from which model, and every failure
    (an exception, or a stream that ended without a finish reason)."""

    def __init__(self, base_url: str, max_tokens: int = 24) -> None:
        super().__init__(daemon=True)
        self.base_url = base_url
        self.max_tokens = max_tokens
        self.firsts: list[tuple[float, str]] = []  # (time.monotonic(), model)
        self.failures: list[str] = []
        self.done = 0
        self._stopping = threading.Event()

    @property
    def models(self) -> set[str]:
        return {model for _, model in self.firsts}

    def run(self) -> None:
        api = openai.OpenAI(base_url=self.base_url, api_key="x", max_retries=0, timeout=120)
        while not self._stopping.is_set():
            try:
                stream = api.completions.create(
                    model=GEMMA_ID,  # the id an editor was configured with before any shift
                    prompt="1, 2, 3, 4, 5,",
                    max_tokens=self.max_tokens,
                    temperature=0,
                    stream=True,
                )
                finish = None
                for index, chunk in enumerate(stream):
                    if index == 0:
                        self.firsts.append((time.monotonic(), chunk.model))
                    finish = chunk.choices[0].finish_reason if chunk.choices else finish
                if finish not in ("length", "stop"):
                    self.failures.append(f"stream ended without a finish reason ({finish})")
                self.done += 1
            except Exception as exc:  # every failure counts; none is expected
                self.failures.append(repr(exc))

    def stop(self) -> None:
        self._stopping.set()
        self.join(120)
