"""A regular (not editable) install works anywhere: the wheel carries the profiles, the
catalog and the service templates, and the commands run from outside the checkout."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest

from tests.support.daemons import ROOT, free_port


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding only the built wheel. Its dependencies (llama-cpp-python
    takes minutes to build) are borrowed from the test environment by a .pth line, which
    puts that site-packages on the path without running its .pth files, so the editable
    install of this checkout stays invisible."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    (wheel,) = out.glob("assistantd-*.whl")
    env_dir = out / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    own_site = subprocess.run(
        [python, "-c", "import site; print(site.getsitepackages()[0])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(own_site) / "borrowed-deps.pth").write_text(site.getsitepackages()[0] + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps"]
        + [str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return env_dir


def _run(env_dir: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSISTANT_", "PYTHON"))}
    return subprocess.run(
        [str(env_dir / "bin" / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


MACHINE = {"ram_bytes": 16 * 2**30, "cpu_cores": 8, "gpu_offload": False, "gpus": []}


def test_the_wheel_imports_from_its_own_install(wheel_venv: Path, tmp_path: Path) -> None:
    where = _run(wheel_venv, "python", "-c", "import assistantd; print(assistantd.__file__)",
                 cwd=tmp_path)  # fmt: skip
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(wheel_venv)), where.stdout


def test_plan_from_outside_the_checkout(wheel_venv: Path, tmp_path: Path) -> None:
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps(MACHINE))
    plain = _run(wheel_venv, "assistantctl", "plan", "--json", "--machine", str(machine),
                 cwd=tmp_path)  # fmt: skip
    assert plain.returncode == 0, plain.stderr
    chosen = json.loads(plain.stdout)["chosen"]
    assert chosen["model"]
    speed = _run(wheel_venv, "assistantctl", "plan", "--machine", str(machine), "--profile",
                 "speed", cwd=tmp_path)  # fmt: skip
    assert speed.returncode == 0, speed.stderr
    assert "budget:" in speed.stdout


def test_plan_for_a_profile_file(wheel_venv: Path, tmp_path: Path) -> None:
    machine = tmp_path / "machine.json"
    machine.write_text(json.dumps(MACHINE))
    profile = tmp_path / "tiny.toml"
    profile.write_text('n_ctx = 2048\n[models]\nfamilies = ["qwen2.5-coder"]\nmax_params_b = 2\n')
    result = _run(wheel_venv, "assistantctl", "plan", "--json", "--machine", str(machine),
                  "--profile", str(profile), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["n_ctx"] == 2048
    assert all(c["model"].startswith("qwen2.5-coder-") or "smollm2" in c["model"]
               for c in plan["candidates"])  # fmt: skip
    unknown = _run(wheel_venv, "assistantctl", "plan", "--machine", str(machine), "--profile",
                   "nonesuch", cwd=tmp_path)  # fmt: skip
    assert unknown.returncode == 2
    assert "balanced" in unknown.stderr  # the message lists the shipped profiles


def test_service_install_dry_run(wheel_venv: Path, tmp_path: Path) -> None:
    result = _run(wheel_venv, "assistantctl", "service", "install", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(wheel_venv / "bin") in result.stdout  # the unit runs the installed assistantd


def test_assistantd_serves_a_model_file(
    wheel_venv: Path, tmp_path: Path, models: dict[str, Path]
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSISTANT_", "PYTHON"))}
    proc = subprocess.Popen(
        [str(wheel_venv / "bin" / "assistantd"), "--model", str(models["smollm2"])]
        + ["--port", str(port), "--n-ctx", "512"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            subprocess.run(["sleep", "0.1"])
        models_list = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=5).json()
        assert models_list["data"][0]["id"] == "smollm2-135m-instruct-q4_1"
    finally:
        proc.terminate()
        proc.wait(30)
