"""assistantctl against a running daemon and against none."""

from __future__ import annotations

import json
import subprocess

from tests.support.daemons import Daemon, free_port, run_ctl

EXIT_NOT_RUNNING = 3


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return run_ctl(*args)


def test_status_when_not_running_says_how_to_start() -> None:
    result = ctl("--url", f"http://127.0.0.1:{free_port()}", "status")
    assert result.returncode == EXIT_NOT_RUNNING
    assert "assistantd is not running" in result.stderr
    assert "start it with" in result.stderr


def test_status_shows_state_model_endpoint_uptime_and_requests(smol: Daemon) -> None:
    result = ctl("--url", smol.url, "status")
    assert result.returncode == 0, result.stderr
    for expected in (
        "serving",
        "smollm2-135m-instruct-q4_1",
        smol.v1,
        "uptime",
        "served",
        "MiB resident",
    ):
        assert expected in result.stdout


def test_status_json_is_the_same_facts_as_the_http_status(smol: Daemon) -> None:
    result = ctl("--url", smol.url, "status", "--json")
    facts = json.loads(result.stdout)
    assert facts["state"] == "serving"
    assert facts["model"]["id"] == smol.status()["model"]["id"]
    assert facts["endpoint"] == smol.v1
    assert {"uptime_s", "requests_served"} <= set(facts)
