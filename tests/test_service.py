"""Service install, tested through --dry-run and the generated files (no service manager runs
in CI); the unit is checked with systemd-analyze where available."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
from pathlib import Path

import pytest

from assistantd.cli.service import Launchd, Systemd, manager
from tests.support.daemons import run_ctl


def ctl(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "ASSISTANT_PORT": "9001",
        "ASSISTANT_API_KEY": "secret",
    }
    return run_ctl(*args, env=env)


def test_install_dry_run_prints_the_unit_and_commands_and_writes_nothing(tmp_path: Path) -> None:
    result = ctl("service", "install", "--dry-run", "--daemon-args=--prefer speed", home=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    unit_path = tmp_path / ".config/systemd/user/assistantd.service"
    assert f"# would write {unit_path}" in out
    assert "ExecStart=" in out and "assistantd --prefer speed" in out
    assert "Environment=ASSISTANT_PORT=9001" in out
    assert "secret" not in out  # the API key never lands in a unit file
    assert "$ systemctl --user daemon-reload" in out
    assert "$ systemctl --user enable --now assistantd.service" in out
    assert not unit_path.exists()


def test_the_unit_restarts_on_failure_but_not_on_startup_errors(tmp_path: Path) -> None:
    unit = Systemd(tmp_path).unit([], {})
    assert "Restart=on-failure" in unit
    assert "RestartPreventExitStatus=2" in unit
    assert "StartLimitBurst=5" in unit
    assert "KillMode=mixed" in unit and "TimeoutStopSec=45" in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    path = tmp_path / "assistantd.service"
    path.write_text(Systemd(tmp_path).unit(["--port", "9000"], {"ASSISTANT_PREFER": "speed"}))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--user", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "Failed to initialize manager" in result.stderr:
        pytest.skip("systemd-analyze cannot start a user manager in this sandbox")
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "verb,expected",
    [
        ("uninstall", "systemctl --user disable --now assistantd.service"),
        ("start", "systemctl --user start assistantd.service"),
        ("stop", "systemctl --user stop assistantd.service"),
        ("status", "systemctl --user status assistantd.service"),
        ("logs", "journalctl --user -u assistantd.service -f"),
    ],
)
def test_other_actions_dry_run(tmp_path: Path, verb: str, expected: str) -> None:
    result = ctl("service", verb, "--dry-run", home=tmp_path)
    assert expected in result.stdout


def test_launchd_agent_is_a_valid_plist(tmp_path: Path) -> None:
    agent = manager("darwin", tmp_path, 501)
    assert isinstance(agent, Launchd)
    actions = agent.actions("install", ["--port", "9000"], {"ASSISTANT_PREFER": "speed"})
    [(path, content)] = actions.writes.items()
    assert path == tmp_path / "Library/LaunchAgents/com.assistantd.plist"
    plist = plistlib.loads(content.encode())
    assert plist["Label"] == "com.assistantd"
    assert plist["ProgramArguments"][-2:] == ["--port", "9000"]
    assert plist["KeepAlive"] == {"SuccessfulExit": False}
    assert plist["EnvironmentVariables"] == {"ASSISTANT_PREFER": "speed"}
    assert actions.commands == [["launchctl", "bootstrap", "gui/501", str(path)]]
    assert agent.actions("logs", [], {}).commands[0][:2] == ["tail", "-n"]
