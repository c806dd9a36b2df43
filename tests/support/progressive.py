"""Two roles that each grow from a small rung into a bigger one, for the progressive-start
tests: SmolLM2 135M → Gemma 3 270M for chat, their FIM copies for autocomplete; a catalog, a
hub layout, a profile, and a client that streams through the shifts as an editor would."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import openai

from tests.support.ladder import GEMMA_REPO, SMOL_REPO
from tests.support.roles import GEMMA_FIM_REPO, SMOL_FIM_REPO, catalog_entry

CHAT_SMALL, CHAT_BIG = "smollm2-135m-instruct-q4_1", "gemma-3-270m-q4_k_m"
FIM_SMALL, FIM_BIG = "smollm2-fim-q4_1", "gemma-3-270m-fim-q4_k_m"

PROFILE = """
prefer = "quality"
n_ctx = 2048
[targets]
ttft_p95_ms = 100000
decode_tok_s = 1
[memory]
ram_reserve = "0MiB"
ram_budget = "4GiB"
[shift]
window_s = 60
min_requests = 3
cooldown_s = 0
memory_check_s = 1
[start]
{start}
[roles.autocomplete]
prefer = "quality"
n_ctx = 1024
[roles.autocomplete.targets]
ttft_p95_ms = 100000
reference_prompt_tokens = 64
decode_tok_s = 1
[roles.embeddings]
enabled = false
"""


def hub_repos(models: dict[str, Path], gemma_fim: Path, smol_fim: Path) -> dict[str, dict]:
    return {
        GEMMA_REPO: {"gemma-3-270m-Q4_K_M.gguf": models["gemma270m"]},
        SMOL_REPO: {"SmolLM2-135M-Instruct-Q4_1.gguf": models["smollm2"]},
        GEMMA_FIM_REPO: {"gemma-3-270m-fim-Q4_K_M.gguf": gemma_fim},
        SMOL_FIM_REPO: {"SmolLM2-fim-Q4_1.gguf": smol_fim},
    }


def write_catalog(path: Path, models: dict[str, Path], gemma_fim: Path, smol_fim: Path) -> Path:
    """Gemma over SmolLM2 for chat; their FIM copies, in the same order, for autocomplete."""
    path.write_text("".join([
        catalog_entry("gemma-3-270m", "gemma3", GEMMA_REPO, "Q4_K_M", models["gemma270m"],
                      30.0, False, ["chat"]),
        catalog_entry("smollm2-135m-instruct", "smollm2", SMOL_REPO, "Q4_1", models["smollm2"],
                      10.0, False, ["chat"]),
        catalog_entry("gemma-3-270m-fim", "gemma3", GEMMA_FIM_REPO, "Q4_K_M", gemma_fim, 40.0,
                      True, ["autocomplete"]),
        catalog_entry("smollm2-fim", "smollm2", SMOL_FIM_REPO, "Q4_1", smol_fim, 20.0, True,
                      ["autocomplete"]),
    ]))  # fmt: skip
    return path


class RoleStreamer(threading.Thread):
    """Streams completions to a role id back to back (FIM ones for autocomplete), recording
    the models that answered and every failure (an exception, or no finish reason)."""

    def __init__(self, base_url: str, role_id: str, *, fim: bool = False) -> None:
        super().__init__(daemon=True)
        self.base_url, self.role_id, self.fim = base_url, role_id, fim
        self.models: list[str] = []
        self.failures: list[str] = []
        self._stopping = threading.Event()

    def run(self) -> None:
        api = openai.OpenAI(base_url=self.base_url, api_key="x", max_retries=0, timeout=120)
        fim = {"suffix": "\n"} if self.fim else {}
        while not self._stopping.is_set():
            try:
                stream = api.completions.create(
                    model=self.role_id,
                    prompt="def add(a, b):\n    return " if self.fim else "1, 2, 3, 4, 5,",
                    **fim,
                    max_tokens=16,
                    temperature=0,
                    stream=True,
                )
                finish, model = None, None
                for chunk in stream:
                    model = model or chunk.model
                    finish = chunk.choices[0].finish_reason if chunk.choices else finish
                if finish not in ("length", "stop"):
                    self.failures.append(f"stream ended without a finish reason ({finish})")
                self.models.append(str(model))
            except Exception as exc:  # every failure counts; none is expected
                self.failures.append(repr(exc))
                time.sleep(0.2)

    def served_since(self, model: str) -> int:
        return len(self.models) - self.models.index(model) if model in self.models else 0

    def stop(self) -> None:
        self._stopping.set()
        self.join(120)
