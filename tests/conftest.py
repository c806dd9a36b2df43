"""Shared fixtures: real models, a real daemon on an unused port, isolated directories."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import fetch_models  # noqa: E402
from hubserver import HubServer  # noqa: E402,F401

# Special tokens of SmolLM2's vocabulary that the FIM test model declares as its FIM tokens.
FIM_PRE, FIM_SUF, FIM_MID = "<issue_start>", "<issue_comment>", "<issue_closed>"


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
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            "--force",
            "--special-token",
            "fim_pre",
            FIM_PRE,
            "--special-token",
            "fim_suf",
            FIM_SUF,
            "--special-token",
            "fim_mid",
            FIM_MID,
            str(models["smollm2"]),
            str(out),
        ],
        check=True,
        capture_output=True,
    )
    return out


def run_ctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """assistantctl as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "daemon.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
    )


def write_tiny_gguf(path: Path, architecture: str = "llama") -> Path:
    """A sound one-tensor GGUF written with the gguf package."""
    import gguf
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_tensor("weight", np.ones((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Daemon:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    @property
    def v1(self) -> str:
        return self.url + "/v1"

    def status(self) -> dict:
        return httpx.get(self.url + "/status", timeout=10).json()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_healthy(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"assistantd exited {self.proc.returncode}:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"assistantd not healthy after {timeout_s} s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


DaemonFactory = Callable[..., Daemon]


def launch(model: Path | None, log_path: Path, extra_env: dict[str, str] | None = None) -> Daemon:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")},
        "ASSISTANT_THREADS": "2",
        "ASSISTANT_N_CTX": "2048",
        **(extra_env or {}),
    }
    log = log_path.open("wb")
    model_args = ["--model", str(model)] if model is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "daemon", *model_args, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    return Daemon(proc=proc, url=f"http://127.0.0.1:{port}", log_path=log_path)


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


@pytest.fixture(scope="module")
def smol(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon serving SmolLM2, shared by the tests of a module that leave it healthy."""
    daemon = launch(models["smollm2"], tmp_path_factory.mktemp("smol") / "daemon.log")
    daemon.wait_healthy()
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def smol_fim(fim_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    daemon = launch(fim_model, tmp_path_factory.mktemp("fim") / "daemon.log")
    daemon.wait_healthy()
    yield daemon
    daemon.stop()


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
    from hubserver import HubServer

    server = HubServer()
    yield server
    server.close()
