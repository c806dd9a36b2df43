"""A real daemon on an unused port, assistantctl as a user runs it, tiny GGUFs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent.parent

# Special tokens of SmolLM2's vocabulary that the FIM test model declares as its FIM tokens.
FIM_PRE, FIM_SUF, FIM_MID = "<issue_start>", "<issue_comment>", "<issue_closed>"


def run_ctl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """assistantctl as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "assistantd.cli.main", *args],
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

    def status(self, headers: dict[str, str] | None = None) -> dict:
        return httpx.get(self.url + "/status", timeout=10, headers=headers).json()

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


def wait_for(
    daemon: Daemon, check: Callable[[dict[str, Any]], bool], timeout_s: float = 90
) -> dict[str, Any]:
    """Poll /status until `check` holds; the last status (its control and roles) if never."""
    deadline = time.monotonic() + timeout_s
    status = daemon.status()
    while time.monotonic() < deadline:
        status = daemon.status()
        if check(status):
            return status
        time.sleep(0.2)
    shown = {k: status.get(k) for k in ("control", "roles", "upstreams")}
    raise AssertionError(f"condition not reached; last status: {shown}")


def launch(
    model: Path | None,
    log_path: Path,
    extra_env: dict[str, str] | None = None,
    port: int | None = None,
) -> Daemon:
    port = port or free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("ASSISTANT_")},
        "ASSISTANT_THREADS": "2",
        "ASSISTANT_N_CTX": "2048",
        **(extra_env or {}),
    }
    log = log_path.open("wb")
    model_args = ["--model", str(model)] if model is not None else []
    proc = subprocess.Popen(
        [sys.executable, "-m", "assistantd", *model_args, "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    return Daemon(proc=proc, url=f"http://127.0.0.1:{port}", log_path=log_path)
