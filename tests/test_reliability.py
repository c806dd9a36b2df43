"""Faults a long-running daemon meets: its own kill -9, crash loops, floods of requests."""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import psutil


def test_kill_9_of_the_daemon_leaves_no_orphan_worker(start_daemon, models) -> None:
    daemon = start_daemon(models["smollm2"])
    worker_pid = daemon.status()["worker"]["pid"]
    assert psutil.pid_exists(worker_pid)
    os.kill(daemon.proc.pid, signal.SIGKILL)
    daemon.proc.wait()
    deadline = time.monotonic() + 10
    while psutil.pid_exists(worker_pid) and psutil.Process(worker_pid).status() != "zombie":
        assert time.monotonic() < deadline, "worker outlived its daemon"
        time.sleep(0.05)


def test_a_crash_loop_backs_off_gives_up_and_says_so(start_daemon, models) -> None:
    daemon = start_daemon(
        models["smollm2"], ASSISTANT_MAX_RESTARTS="1", ASSISTANT_RESTART_BACKOFF_S="0.2"
    )
    for _ in range(2):
        status = daemon.status()
        os.kill(status["worker"]["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 60
        while daemon.status()["worker"]["pid"] in (status["worker"]["pid"], None):
            if daemon.status()["state"] == "failed":
                break
            assert time.monotonic() < deadline
            time.sleep(0.05)
    deadline = time.monotonic() + 30
    while daemon.status()["state"] != "failed":
        assert time.monotonic() < deadline, daemon.status()
        time.sleep(0.05)
    status = daemon.status()
    assert "exited with status -9" in status["worker"]["last_error"]
    answer = httpx.post(daemon.v1 + "/completions", json={"prompt": "x", "max_tokens": 2})
    assert answer.status_code == 503
    assert "gave up" in answer.json()["error"]["message"]
    assert httpx.get(daemon.url + "/health").status_code == 503


def test_capacity_plus_ten_requests_get_answers_not_resets(start_daemon, models) -> None:
    capacity = 2
    daemon = start_daemon(models["smollm2"], ASSISTANT_QUEUE_SIZE=str(capacity))
    body = {"prompt": "Once upon a time", "max_tokens": 48, "stop": ["never"]}
    results: list[int | str] = []
    lock = threading.Lock()

    def send() -> None:
        try:
            code: int | str = httpx.post(
                daemon.v1 + "/completions", json=body, timeout=120
            ).status_code
        except httpx.HTTPError as exc:
            code = type(exc).__name__
        with lock:
            results.append(code)

    threads = [threading.Thread(target=send) for _ in range(capacity + 1 + 10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert all(isinstance(r, int) for r in results), results
    assert results.count(200) >= capacity + 1
    assert results.count(503) >= 1
    assert set(results) <= {200, 503}
