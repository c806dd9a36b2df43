"""The daemon's handle on one worker process: start / wait_ready / stop / pid / exited.

The supervisor never calls subprocess itself; it goes through this class, which also keeps the
tail of the worker's stderr so a failed load can say why.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistantd.errors import WorkerStartFailed
from assistantd.worker.client import WorkerClient
from assistantd.worker.protocol import PROMPT_CACHE_MAX

YIELDING_SPINCOUNT = "10000"  # libgomp's default is 300000


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker loads and how."""

    model_path: Path
    model_id: str
    n_ctx: int
    threads: int
    n_slots: int
    n_gpu_layers: int
    socket_path: Path
    n_cpu_moe: int = 0  # mixture of experts: the first N layers' experts stay in RAM
    nice: int = 0  # lower OS priority: a worker that gives the cores to a latency-bound one
    # llama.cpp devices the layers may go to (None: llama.cpp's own choice; empty: the CPU),
    # each one's share of the offloaded layers, and the RPC servers those devices live on.
    devices: tuple[str, ...] | None = None
    split: tuple[float, ...] = ()
    rpc: tuple[str, ...] = ()
    speculative: str = "off"  # Settings.speculative: auto | off | ngram | draft
    draft_model: Path | None = None  # a smaller model of the same family that guesses
    prompt_cache_bytes: int = PROMPT_CACHE_MAX  # RAM for evicted prompts: what the plan leaves
    seed: int | None = None  # sampling defaults for requests that set none
    temperature: float | None = None


class WorkerProcess:
    """One child process serving one model on a Unix socket."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self._proc: asyncio.subprocess.Process | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=40)
        self._stderr_task: asyncio.Task[None] | None = None
        self.client = WorkerClient(spec.socket_path)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    @property
    def exit_code(self) -> int | None:
        return self._proc.returncode if self._proc else None

    @property
    def exited(self) -> bool:
        return self._proc is not None and self._proc.returncode is not None

    def stderr_tail(self, lines: int = 10) -> str:
        return "\n".join(list(self._stderr_tail)[-lines:])

    async def start(self) -> None:
        self.spec.socket_path.unlink(missing_ok=True)
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "assistantd.worker.server",
            "--model",
            str(self.spec.model_path),
            "--model-id",
            self.spec.model_id,
            "--socket",
            str(self.spec.socket_path),
            "--n-ctx",
            str(self.spec.n_ctx),
            "--threads",
            str(self.spec.threads),
            "--n-gpu-layers",
            str(self.spec.n_gpu_layers),
            "--slots",
            str(self.spec.n_slots),
            "--n-cpu-moe",
            str(self.spec.n_cpu_moe),
            "--parent-pid",
            str(os.getpid()),
            "--nice",
            str(self.spec.nice),
            "--speculative",
            self.spec.speculative,
            *(["--draft-model", str(self.spec.draft_model)] if self.spec.draft_model else []),
            "--prompt-cache-mib",
            str(self.spec.prompt_cache_bytes >> 20),
            *(["--seed", str(self.spec.seed)] if self.spec.seed is not None else []),
            *(["--temp", str(self.spec.temperature)] if self.spec.temperature is not None else []),
            *self._placement_args(),
            env=self._environment(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._stderr_task = asyncio.create_task(self._read_stderr())

    def _placement_args(self) -> list[str]:
        spec = self.spec
        if spec.devices is None:
            return []
        return [
            f"--devices={','.join(spec.devices)}",
            f"--split={','.join(f'{s:.4f}' for s in spec.split)}",
            f"--rpc={','.join(spec.rpc)}",
        ]

    def _environment(self) -> dict[str, str]:
        """A worker that yields the cores (nice) also stops spinning soon after each step:
        llama.cpp's OpenMP threads otherwise spin ~10 ms for the next one, on the cores the
        latency-bound worker just asked for."""
        env = dict(os.environ)
        if self.spec.nice:
            env.setdefault("GOMP_SPINCOUNT", YIELDING_SPINCOUNT)
        return env

    async def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        async for raw in self._proc.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            if line:
                self._stderr_tail.append(line)

    async def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Poll until the worker answers /info; fail fast with its stderr if it exits."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.exited:
                await self._drain_stderr()
                raise WorkerStartFailed(
                    f"the model worker exited with status {self.exit_code} while loading "
                    f"{self.spec.model_path}:\n{self.stderr_tail() or '(no output)'}"
                )
            if self.spec.socket_path.exists():
                try:
                    return await self.client.info()
                except OSError:
                    pass
            if time.monotonic() > deadline:
                await self.stop()
                raise WorkerStartFailed(
                    f"the model worker did not become ready within {timeout_s:.0f} s; raise "
                    f"ASSISTANT_WORKER_START_TIMEOUT_S if the model is large.\n{self.stderr_tail()}"
                )
            await asyncio.sleep(0.05)

    async def wait_exit(self) -> int:
        assert self._proc is not None
        code = await self._proc.wait()
        await self._drain_stderr()
        return code

    async def _drain_stderr(self) -> None:
        if self._stderr_task is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)

    async def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after the grace period."""
        await self.client.aclose()
        if self._proc is None or self._proc.returncode is not None:
            return
        self._proc.terminate()
        try:
            await asyncio.wait_for(self._proc.wait(), grace_s)
        except TimeoutError:
            self._proc.kill()
            await self._proc.wait()
        self.spec.socket_path.unlink(missing_ok=True)
