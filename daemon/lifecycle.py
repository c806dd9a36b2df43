"""The daemon's life in named phases: startup (choose, fetch and load a model) → serve →
shutdown (stop downloads, drain, stop workers), as uvicorn's Server.serve does it.

The lifecycle owns the run-time state and hands it to the HTTP layer and the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn

from assistantd.api.admission import Admission
from assistantd.api.app import create_app
from assistantd.control.controller import Controller
from assistantd.control.monitor import Monitor
from assistantd.control.state import DaemonState
from assistantd.control.supervisor import Supervisor
from assistantd.errors import AssistantError, DownloadStopped, ModelFileError, WorkerStartFailed
from assistantd.fetch.provision import provision
from assistantd.planning.gguf_header import read_local
from assistantd.planning.naming import model_id_for, validate_model_id
from assistantd.planning.profiles import Profile
from assistantd.planning.speeds import SPEEDS_FILE, MeasuredSpeeds
from assistantd.settings import Settings
from assistantd.worker.process import WorkerSpec

log = logging.getLogger("assistantd")

# Exit codes: a service manager should not restart-loop on a startup failure.
EXIT_STARTUP_FAILED = 2


def check_model_file(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist: check the path given to --model")
    read_local(path)  # sanity-checks the header before llama.cpp ever opens the file
    return path.resolve()


class _Server(uvicorn.Server):
    """SIGTERM/SIGINT only set a flag the serve loop acts on (drain, then stop the worker);
    a second SIGINT forces. Unlike uvicorn's default, the signal is not re-raised at exit,
    so a clean drain exits 0."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.handle_exit, sig, None)
        try:
            yield
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)


class Lifecycle:
    """One run of the daemon. `run()` returns the process exit status."""

    def __init__(self, settings: Settings, profile: Profile, runtime: Path) -> None:
        self.settings = settings
        self.profile = profile
        self.runtime = runtime
        self.exit_code = 0
        self.speeds = MeasuredSpeeds(settings.state_dir / SPEEDS_FILE)
        self.state = DaemonState(
            settings=settings,
            admission=Admission(settings.slots, settings.queue_size, settings.queue_timeout_s),
            speeds=self.speeds,
            monitor=Monitor(profile.targets.reference_prompt_tokens),
        )
        self._server: _Server | None = None

    async def run(self) -> int:
        if self.settings.model is not None:
            self._attach_given_model(self.settings.model)
        app = create_app(self.state)
        app.router.lifespan_context = self._lifespan
        config = uvicorn.Config(
            app,
            host=self.settings.host,
            port=self.settings.port,
            log_level=self.settings.log_level,
            access_log=self.settings.log_level == "debug",
            timeout_graceful_shutdown=30,
        )
        self._server = _Server(config)
        await self._server.serve()
        return self.exit_code

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: object) -> AsyncIterator[None]:
        task = asyncio.create_task(self.startup())
        yield
        await self.shutdown(task)

    # -- phases ----------------------------------------------------------------------------

    async def startup(self) -> None:
        """Provision a model if none was given, then run it; a first failure is fatal."""
        state = self.state
        try:
            if state.supervisor is None:
                await self._provision()
            assert state.supervisor is not None and state.control is not None
            state.supervisor.start()
            if await state.supervisor.wait_settled() == "failed":
                raise WorkerStartFailed(state.supervisor.last_error or "the worker failed")
            state.monitor.set_model(state.model_id)
            state.control.start()
            log.info("serving %s at %s/v1", state.model_id, self.settings.base_url)
        except DownloadStopped as exc:
            log.info("%s", exc.message)  # shutting down: not a failure
        except AssistantError as exc:
            log.error("assistantd cannot serve: %s", exc.message)
            state.provision.set("error")
            state.provision.notes.append(exc.message)
            self.exit_code = EXIT_STARTUP_FAILED
            if self._server is not None:
                self._server.should_exit = True

    async def shutdown(self, startup: asyncio.Task[None]) -> None:
        """A download in its thread stops at the next block; workers drain, then stop."""
        state = self.state
        state.provision.stopping.set()
        startup.cancel()
        if state.control is not None:
            await state.control.stop()
        if state.supervisor is not None:
            await state.supervisor.stop()

    # -- helpers ---------------------------------------------------------------------------

    def _attach_given_model(self, model: Path) -> None:
        path = check_model_file(model)
        settings = self.settings
        model_id = validate_model_id(settings.model_id) if settings.model_id else model_id_for(path)
        self._attach(path, model_id, self.profile.n_ctx, settings.n_gpu_layers)
        self.state.provision.state = "given"
        self.state.control = Controller(self.state, self.profile, runtime=self.runtime)

    async def _provision(self) -> None:
        settings, state = self.settings, self.state
        chosen, result = await asyncio.to_thread(
            provision, settings, self.profile, state.provision, self.speeds
        )
        log.info("chose %s: %s", chosen.model_id, chosen.why)
        check_model_file(chosen.path)
        model_id = validate_model_id(settings.model_id) if settings.model_id else chosen.model_id
        state.speed_key = chosen.speed_key
        n_cpu_moe = chosen.candidate.n_cpu_moe if chosen.candidate else 0
        self._attach(chosen.path, model_id, chosen.n_ctx, chosen.n_gpu_layers, n_cpu_moe)
        state.control = Controller(
            state,
            self.profile,
            runtime=self.runtime,
            machine=result.machine,
            plan=result,
            current=chosen.candidate,
        )

    def _attach(
        self, path: Path, model_id: str, n_ctx: int, n_gpu_layers: int, n_cpu_moe: int = 0
    ) -> None:
        """Give the daemon its model: a supervisor that will run a worker for it."""
        settings = self.settings
        spec = WorkerSpec(
            model_path=path,
            model_id=model_id,
            n_ctx=n_ctx,
            threads=settings.threads,
            n_slots=settings.slots,
            n_gpu_layers=n_gpu_layers,
            socket_path=self.runtime / "worker.sock",
            n_cpu_moe=n_cpu_moe,
        )
        self.state.supervisor = Supervisor(
            spec,
            start_timeout_s=settings.worker_start_timeout_s,
            backoff_s=settings.restart_backoff_s,
            max_restarts=settings.max_restarts,
            restart_window_s=settings.restart_window_s,
        )
        self.state.model_id = model_id
