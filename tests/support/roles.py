"""Two real models for roles, for tests and the roles benchmark: SmolLM2-135M-Instruct for chat
(or its FIM copy), Gemma 3 270M with FIM token ids for autocomplete, and SmolLM2's FIM copy as a
smaller autocomplete rung; as GGUF copies, a catalog and hub repositories."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.ladder import arch_line

CHAT_REPO = "test-org/SmolLM2-135M-Instruct-GGUF"
GEMMA_FIM_REPO = "test-org/gemma-3-270m-fim-GGUF"
SMOL_FIM_REPO = "test-org/SmolLM2-fim-GGUF"


def write_fim_copy(source: Path, out: Path, tokens: tuple[str, str, str]) -> Path:
    """A copy of `source` whose metadata declares FIM token ids (prefix, suffix, middle), as
    the gguf package writes it."""
    names = ("fim_pre", "fim_suf", "fim_mid")
    args = [arg for name, text in zip(names, tokens, strict=True) for arg in
            ("--special-token", name, text)]  # fmt: skip
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force", *args,
         str(source), str(out)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return out


def gemma_fim(gemma: Path, folder: Path) -> Path:
    """Gemma 3 270M base with three unused tokens declared as its FIM tokens."""
    return write_fim_copy(
        gemma, folder / "gemma-3-270m-fim.gguf", ("<unused0>", "<unused1>", "<unused2>")
    )


def catalog_entry(model_id: str, family: str, repo: str, quant: str, file: Path, quality: float,
                  fim: bool, roles: list[str]) -> str:  # fmt: skip
    return f"""
[[model]]
id = "{model_id}"
family = "{family}"
repo = "{repo}"
quants = ["{quant}"]
arch = {arch_line(file)}
quality = {quality}
quality_source = "test"
fim = {str(fim).lower()}
roles = {roles!r}
""".replace("'", '"')


def write_catalog(
    path: Path, chat: Path, gemma_fim: Path, *, chat_fim: bool, smol_fim: Path | None = None
) -> Path:
    """SmolLM2 for chat (declared with FIM tokens or not); Gemma 270M with FIM tokens for
    autocomplete, and SmolLM2's FIM copy as a smaller autocomplete rung if given."""
    entries = [
        catalog_entry("smollm2-135m-instruct", "smollm2", CHAT_REPO, "Q4_1", chat, 10.0, chat_fim,
                      ["chat", "autocomplete"]),
        catalog_entry("gemma-3-270m-fim", "gemma3", GEMMA_FIM_REPO, "Q4_K_M", gemma_fim, 40.0,
                      True, ["autocomplete"]),
    ]  # fmt: skip
    if smol_fim is not None:
        entries.insert(0, catalog_entry("smollm2-fim", "smollm2", SMOL_FIM_REPO, "Q4_1", smol_fim,
                                        20.0, True, ["autocomplete"]))  # fmt: skip
    path.write_text("".join(entries))
    return path
