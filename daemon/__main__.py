"""`assistantd`: run the daemon in the foreground."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import uvicorn

from daemon.admission import Admission
from daemon.api import DaemonState, create_app
from daemon.controller import Controller
from daemon.errors import (
    AssistantError,
    ConfigError,
    DownloadStopped,
    ModelFileError,
    WorkerStartFailed,
)
from daemon.gguf_header import read_local
from daemon.monitor import Monitor
from daemon.naming import model_id_for, validate_model_id
from daemon.profiles import Profile, active_profile
from daemon.provision import provision
from daemon.security import check_bind
from daemon.settings import Settings, load_settings
from daemon.speeds import SPEEDS_FILE, MeasuredSpeeds
from daemon.supervisor import Supervisor
from daemon.worker import WorkerSpec

log = logging.getLogger("assistantd")

# Exit codes: a service manager should not restart-loop on a startup failure.
EXIT_STARTUP_FAILED = 2


def check_model_file(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist: check the path given to --model")
    read_local(path)  # sanity-checks the header before llama.cpp ever opens the file
    return path.resolve()


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is already in use (is assistantd already running? "
                    f"try `assistantctl status`); choose another with --port"
                ) from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


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


def attach_model(
    state: DaemonState, path: Path, model_id: str, n_ctx: int, n_gpu_layers: int, runtime: Path
) -> None:
    """Give the daemon its model: a supervisor that will run a worker for it."""
    settings = state.settings
    spec = WorkerSpec(
        model_path=path,
        model_id=model_id,
        n_ctx=n_ctx,
        threads=settings.threads,
        n_gpu_layers=n_gpu_layers,
        socket_path=runtime / "worker.sock",
    )
    state.supervisor = Supervisor(
        spec,
        start_timeout_s=settings.worker_start_timeout_s,
        backoff_s=settings.restart_backoff_s,
        max_restarts=settings.max_restarts,
        restart_window_s=settings.restart_window_s,
    )
    state.model_id = model_id


async def serve(settings: Settings, profile: Profile) -> int:
    with tempfile.TemporaryDirectory(prefix="assistantd-") as tmp:
        runtime = Path(tmp)
        speeds = MeasuredSpeeds(settings.state_dir / SPEEDS_FILE)
        state = DaemonState(
            settings=settings,
            admission=Admission(settings.queue_size, settings.queue_timeout_s),
            speeds=speeds,
            monitor=Monitor(profile.targets.reference_prompt_tokens),
        )
        if settings.model is not None:
            path = check_model_file(settings.model)
            model_id = (
                validate_model_id(settings.model_id) if settings.model_id else model_id_for(path)
            )
            attach_model(state, path, model_id, profile.n_ctx, settings.n_gpu_layers, runtime)
            state.control = Controller(state, profile, runtime=runtime)
        app = create_app(state)
        config = uvicorn.Config(
            app,
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            access_log=settings.log_level == "debug",
            timeout_graceful_shutdown=30,
        )
        server = _Server(config)
        exit_code = 0

        async def start_serving() -> None:
            """Provision a model if none was given, then run it; a first failure is fatal."""
            nonlocal exit_code
            try:
                if state.supervisor is None:
                    chosen, result = await asyncio.to_thread(
                        provision, settings, profile, state.provision, speeds
                    )
                    log.info("chose %s: %s", chosen.model_id, chosen.why)
                    check_model_file(chosen.path)
                    model_id = (
                        validate_model_id(settings.model_id)
                        if settings.model_id
                        else chosen.model_id
                    )
                    state.speed_key = chosen.speed_key
                    attach_model(
                        state, chosen.path, model_id, chosen.n_ctx, chosen.n_gpu_layers, runtime
                    )
                    state.control = Controller(
                        state,
                        profile,
                        runtime=runtime,
                        machine=result.machine,
                        plan=result,
                        current=chosen.candidate,
                    )
                assert state.supervisor is not None and state.control is not None
                state.supervisor.start()
                if await state.supervisor.wait_settled() == "failed":
                    raise WorkerStartFailed(state.supervisor.last_error or "the worker failed")
                state.monitor.set_model(state.model_id)
                state.control.start()
                log.info("serving %s at %s/v1", state.model_id, settings.base_url)
            except DownloadStopped as exc:
                log.info("%s", exc.message)  # shutting down: not a failure
            except AssistantError as exc:
                log.error("assistantd cannot serve: %s", exc.message)
                state.provision.set("error")
                state.provision.notes.append(exc.message)
                exit_code = EXIT_STARTUP_FAILED
                server.should_exit = True

        @contextlib.asynccontextmanager
        async def lifespan(_app: object) -> AsyncIterator[None]:
            task = asyncio.create_task(start_serving())
            yield
            state.provision.stopping.set()  # a download in its thread stops at the next block
            task.cancel()
            if state.control is not None:
                await state.control.stop()
            if state.supervisor is not None:
                await state.supervisor.stop()

        app.router.lifespan_context = lifespan
        await server.serve()
        return exit_code


def main(argv: list[str] | None = None) -> None:
    try:
        settings = load_settings(argv)
        logging.basicConfig(
            level=settings.log_level.upper(),
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )
        logging.getLogger("httpx").setLevel(logging.WARNING)
        if settings.model is not None:
            check_model_file(settings.model)
        check_bind(settings.host, settings.api_key.get_secret_value() if settings.api_key else None)
        check_port_free(settings.host, settings.port)
        profile = active_profile(settings)
    except AssistantError as exc:
        print(f"assistantd: {exc.message}", file=sys.stderr)
        sys.exit(EXIT_STARTUP_FAILED)
    log.info("profile %s (%s)", profile.name, profile.path)
    sys.exit(asyncio.run(serve(settings, profile)))


if __name__ == "__main__":
    main()
