"""A real llama.cpp device for tests and benchmarks: `assistantctl device serve` on an unused
loopback port, started as a user runs it."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.support.daemons import ROOT, free_port


class RpcDevice:
    """`assistantctl device serve` as a user runs it, on an unused loopback port."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"127.0.0.1:{self.port}"
        self.name = f"RPC[{self.endpoint}]"
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "assistantd.cli.main", "device", "serve"]
            + ["--port", str(self.port), "--threads", "2"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if "serving" in log.read_text():
                return
            assert self.proc.poll() is None, log.read_text()
            time.sleep(0.05)
        raise AssertionError(f"device serve did not start: {log.read_text()}")

    def kill(self) -> None:
        """As a machine that goes away: no goodbye (its per-client servers die with it)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
