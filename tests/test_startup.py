"""Starting the daemon: clear messages and a distinct exit code for what a person got wrong."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.daemons import ROOT, free_port, write_tiny_gguf

EXIT_STARTUP_FAILED = 2


def run_daemon(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "assistantd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def test_missing_model_file(tmp_path: Path) -> None:
    result = run_daemon("--model", str(tmp_path / "missing.gguf"))
    assert result.returncode == EXIT_STARTUP_FAILED
    assert "does not exist" in result.stderr


def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"<html>rate limited</html>")
    result = run_daemon("--model", str(fake))
    assert result.returncode == EXIT_STARTUP_FAILED
    assert "not a GGUF file" in result.stderr


def test_a_sound_gguf_llama_cpp_cannot_load_reports_the_workers_reason(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "unknown-arch.gguf", "no-such-architecture")
    result = run_daemon("--model", str(path), "--port", str(free_port()))
    assert result.returncode == EXIT_STARTUP_FAILED
    assert "while loading" in result.stderr
    assert "could not load" in result.stderr


def test_truncated_gguf_is_refused_before_loading(tmp_path: Path, models: dict[str, Path]) -> None:
    broken = tmp_path / "truncated.gguf"
    with models["smollm2"].open("rb") as src:
        broken.write_bytes(src.read(1 << 20))
    result = run_daemon("--model", str(broken), "--port", str(free_port()))
    assert result.returncode == EXIT_STARTUP_FAILED
    assert "runs past the end of the file" in result.stderr


def test_port_in_use_is_explained(models: dict[str, Path]) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_daemon("--model", str(models["smollm2"]), "--port", str(port))
    assert result.returncode == EXIT_STARTUP_FAILED
    assert "already in use" in result.stderr and "--port" in result.stderr


def test_sigterm_lets_a_running_stream_finish(start_daemon, models) -> None:
    import signal
    import threading

    daemon = start_daemon(models["smollm2"])
    lines: list[str] = []
    first = threading.Event()

    def stream() -> None:
        body = {"prompt": "Once upon a time", "max_tokens": 60, "stream": True, "stop": ["zzz"]}
        with httpx.stream("POST", daemon.v1 + "/completions", json=body, timeout=60) as resp:
            for line in resp.iter_lines():
                lines.append(line)
                first.set()

    thread = threading.Thread(target=stream)
    thread.start()
    assert first.wait(60)
    daemon.proc.send_signal(signal.SIGTERM)
    thread.join(60)
    assert lines[-1] == "data: [DONE]" or lines[-2] == "data: [DONE]"
    assert daemon.proc.wait(60) == 0
