"""Shared fixtures: real models, a real daemon on an unused port, isolated directories."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import fetch_models
from tests.support.daemons import FIM_MID, FIM_PRE, FIM_SUF, Daemon, DaemonFactory, launch
from tests.support.hub import HubServer
from tests.support.roles import gemma_fim, write_fim_copy
from tests.support.templates import QWEN25_TEMPLATE


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reads or writes the real user's config, cache or state."""
    for var in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
        monkeypatch.setenv(var, str(tmp_path / var.lower()))
    for var in list(os.environ):
        if var.startswith("ASSISTANT_") and var != "ASSISTANT_TEST_MODELS":
            monkeypatch.delenv(var)


@pytest.fixture(scope="session")
def models() -> dict[str, Path]:
    return fetch_models.fetch_all()


@pytest.fixture(scope="session")
def fim_model(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 with FIM token ids written into its GGUF metadata by the gguf package."""
    out = tmp_path_factory.mktemp("fim") / "smollm2-fim.gguf"
    return write_fim_copy(models["smollm2"], out, (FIM_PRE, FIM_SUF, FIM_MID))


@pytest.fixture(scope="session")
def gemma_fim_model(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Gemma 3 270M base with FIM token ids: a second real model for the autocomplete role."""
    return gemma_fim(models["gemma270m"], tmp_path_factory.mktemp("gemma-fim"))


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[DaemonFactory]:
    """Start a daemon of one's own (for tests that kill or overload it)."""
    started: list[Daemon] = []

    def start(model: Path | None, **env: str) -> Daemon:
        daemon = launch(model, tmp_path / f"daemon{len(started)}.log", env)
        started.append(daemon)
        daemon.wait_healthy()
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture(scope="session")
def tool_model(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2 carrying Qwen2.5's tool-calling chat template, written by the gguf package."""
    folder = tmp_path_factory.mktemp("tools")
    template = folder / "qwen25.jinja"
    template.write_text(QWEN25_TEMPLATE)
    out = folder / "smollm2-tools.gguf"
    subprocess.run(
        [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", "--force",
         "--chat-template-file", str(template), str(models["smollm2"]), str(out)],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return out


def _serving(model: Path, folder: Path) -> Iterator[Daemon]:
    """A daemon on `model` for as long as the fixture that yields from this lives."""
    daemon = launch(model, folder / "assistantd.log")
    daemon.wait_healthy()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def smol_tools(tool_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    yield from _serving(tool_model, tmp_path_factory.mktemp("tools"))


@pytest.fixture(scope="module")
def smol(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon serving SmolLM2, shared by the tests of a module that leave it healthy."""
    yield from _serving(models["smollm2"], tmp_path_factory.mktemp("smol"))


@pytest.fixture(scope="module")
def smol_fim(fim_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    yield from _serving(fim_model, tmp_path_factory.mktemp("fim"))


@pytest.fixture(scope="session")
def quant_ladder(
    models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Real further quants of SmolLM2 made with llama.cpp's own quantizer."""
    import llama_cpp

    out_dir = tmp_path_factory.mktemp("ladder")
    ftypes = {
        "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
        "Q2_K": llama_cpp.LLAMA_FTYPE_MOSTLY_Q2_K,
    }
    ladder = {}
    for quant, ftype in ftypes.items():
        target = out_dir / f"smollm2-135m-instruct-{quant.lower()}.gguf"
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.allow_requantize = True
        params.nthread = 2
        rc = llama_cpp.llama_model_quantize(
            str(models["smollm2"]).encode(), str(target).encode(), params
        )
        assert rc == 0, f"quantizing to {quant} failed"
        ladder[quant] = target
    return ladder


@pytest.fixture
def hub() -> Iterator[HubServer]:
    server = HubServer()
    yield server
    server.close()
