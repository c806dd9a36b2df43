"""The daemon's life in named phases: startup (choose, fetch and load a model) → serve →
shutdown (stop downloads, drain, stop workers), as uvicorn's Server.serve does it.

The lifecycle owns the run-time state and hands it to the HTTP layer and the controller.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import uvicorn

from assistantd.api.admission import Admission
from assistantd.api.app import create_app
from assistantd.api.hand_over import ConnectionCapture
from assistantd.control import device_loss, growth
from assistantd.control.controller import Controller
from assistantd.control.monitor import Monitor
from assistantd.control.pressure import MemoryWatch
from assistantd.control.served import Served
from assistantd.control.state import DaemonState
from assistantd.control.supervisor import Supervisor
from assistantd.control.upstream import UpstreamRung
from assistantd.errors import AssistantError, DownloadStopped, ModelFileError, WorkerStartFailed
from assistantd.fetch.provision import Chosen, provision
from assistantd.planning.estimate import prompt_cache_share
from assistantd.planning.gguf_header import read_local
from assistantd.planning.given import place_file
from assistantd.planning.hardware import probe
from assistantd.planning.naming import model_id_for, validate_model_id
from assistantd.planning.per_device import describe_placement
from assistantd.planning.plan_types import Budget, left_by
from assistantd.planning.planner import profile_budget
from assistantd.planning.profiles import Profile
from assistantd.planning.roles import RolesPlan
from assistantd.planning.speeds import SPEEDS_FILE, MeasuredSpeeds
from assistantd.planning.worker_devices import worker_devices
from assistantd.settings import Settings
from assistantd.vocab import Role
from assistantd.worker.process import WorkerSpec
from assistantd.worker.protocol import PROMPT_CACHE_MAX

log = logging.getLogger("assistantd")

# Exit codes: a service manager should not restart-loop on a startup failure.
EXIT_STARTUP_FAILED = 2
NICE_BESIDE = 5  # OS priority step of the workers beside autocomplete


def check_model_file(path: Path) -> Path:
    path = path.expanduser()
    if not path.is_file():
        raise ModelFileError(f"model file {path} does not exist: check the path given to --model")
    read_local(path)  # sanity-checks the header before llama.cpp ever opens the file
    return path.resolve()


def _planned_draft(result: RolesPlan, chosen: dict[Role, Chosen]) -> Path | None:
    """Autocomplete's file, where the plan has its model draft for chat and both roles got the
    planned models (a quick rung of a progressive start may be of another family)."""
    draft, chat, auto = result.draft, chosen.get("chat"), chosen.get("autocomplete")
    if draft is None or chat is None or auto is None or auto.candidate is None:
        return None
    if chat.candidate != result.roles["chat"].chosen:
        return None
    return auto.path if auto.candidate.key == (draft.draft_model, draft.draft_quant) else None


def _listening(host: str, port: int) -> socket.socket:
    """A bound socket for uvicorn: the API's port, and Ollama's when asked to stand in."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    return sock


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
            settings=settings, monitor=Monitor(profile.targets.reference_prompt_tokens)
        )
        self.pressure = MemoryWatch(self.state)
        self._pressure_task: asyncio.Task[None] | None = None
        self._growth_task: asyncio.Task[None] | None = None
        self._server: _Server | None = None

    async def run(self) -> int:
        if self.settings.model is not None:
            self._attach_given_models()
        app = create_app(self.state)
        app.router.lifespan_context = self._lifespan
        config = uvicorn.Config(
            ConnectionCapture(app),  # what api/hand_over.py hands to the worker
            host=self.settings.host,
            port=self.settings.port,
            # h11 writes header names as given, as llama-server does and its test suite checks
            # ("Access-Control-Allow-Origin"); uvicorn's httptools writer lowercases them.
            http="h11",
            log_level=self.settings.log_level,
            access_log=self.settings.log_level == "debug",
            timeout_graceful_shutdown=30,
            ssl_certfile=self.settings.ssl_certfile,
            ssl_keyfile=self.settings.ssl_keyfile,
        )
        self._server = _Server(config)
        await self._server.serve(
            sockets=[_listening(h, p) for h, p in self.settings.listen_addresses()]
        )
        return self.exit_code

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: object) -> AsyncIterator[None]:
        task = asyncio.create_task(self.startup())
        yield
        await self.shutdown(task)

    # -- phases ----------------------------------------------------------------------------

    async def startup(self) -> None:
        """Provision the roles' models if none was given, then run them; chat failing to
        start is fatal, another role failing falls back to chat's model with the reason."""
        state = self.state
        try:
            if not state.served:
                await self._provision()
            for served in state.workers:
                served.supervisor.start()
            for served in state.workers:
                if await served.supervisor.wait_settled() == "failed":
                    error = served.supervisor.last_error or "the worker failed"
                    if served.role == "chat":
                        raise WorkerStartFailed(error)
                    await self._drop_role(served.role, f"its worker failed to start: {error}")
            for role, served in state.served.items():
                state.monitor.set_model(role, served.model_id)
            state.keep_autocomplete_slots()
            for index, control in enumerate(state.controls.values()):
                control.start(watch_profile=index == 0)
            if state.provision.progressive is not None:  # quick rungs serve; planned ones next
                self._growth_task = growth.start(state, state.provision.progressive)
            await self._start_upstreams()
            if any(c.shifting_allowed for c in state.controls.values()):
                self._pressure_task = asyncio.create_task(self.pressure.run(), name="memory")
            for role, served in state.served.items():
                log.info("%s: serving %s at %s/v1", role, served.model_id, self.settings.base_url)
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
        for task in (self._pressure_task, self._growth_task):
            if task is not None:
                task.cancel()
        for control in state.controls.values():
            await control.stop()
        for rung in state.upstream_rungs():
            await rung.stop()
        for served in state.workers:
            await served.supervisor.stop()

    # -- helpers ---------------------------------------------------------------------------

    async def _start_upstreams(self) -> None:
        """Each role's upstreams, in the order configured, rank first while they answer; the
        role's local worker stays warm as the last rung."""
        settings, state = self.settings, self.state
        for entry in settings.upstream_entries():
            for role in entry.roles:
                if role not in state.served:
                    log.warning("%s: upstream %s ignored: the role is off here", role, entry.url)
                    continue
                rung = UpstreamRung(
                    entry.url,
                    entry.key(settings.upstream_key),
                    role=role,
                    profile=self.profile.for_role(role),
                    monitor=state.monitor,
                    slots=max(settings.slots, 4),
                    queue_size=settings.queue_size,
                    queue_timeout_s=settings.queue_timeout_s,
                    model=entry.model,
                )
                state.upstreams.setdefault(role, []).append(rung)
        await asyncio.gather(*(rung.start() for rung in state.upstream_rungs()))
        for rung in state.upstream_rungs():
            if not rung.in_use:
                log.warning("%s: upstream %s: %s; serving locally", rung.role, rung.state.url,
                            rung.state.last_error)  # fmt: skip

    async def _drop_role(self, role: Role, why: str) -> None:
        """A role whose own worker cannot run: chat's model serves it, and /status says why."""
        served = self.state.served.pop(role)
        self.state.controls.pop(role, None)
        await served.supervisor.stop()
        self.state.served[role] = self.state.served["chat"]
        self.state.role_notes[role] = f"served by the chat model: {why}"
        log.error("%s: %s", role, self.state.role_notes[role])

    def _attach_given_models(self) -> None:
        """--model serves chat (and every role it can); --autocomplete-model and
        --embeddings-model give those roles workers of their own."""
        settings, profile = self.settings, self.profile
        path = check_model_file(settings.model)  # type: ignore[arg-type]
        model_id = validate_model_id(settings.model_id) if settings.model_id else model_id_for(path)
        machine = probe(rpc=settings.rpc, bandwidth=False)
        self.state.machine = machine
        for note in [*machine.device_notes, *filter(None, [machine.offload_note()])]:
            log.warning("%s", note)
            self.state.provision.notes.append(note)
        budget = profile_budget(profile, machine)
        self._attach_given("chat", path, model_id, profile.n_ctx, budget)
        given: dict[Role, Path | None] = {
            "autocomplete": settings.autocomplete_model,
            "embeddings": settings.embeddings_model,
        }
        for role, file in given.items():
            if file is None:
                self._share(
                    role,
                    f"no model of its own given (--{role}-model): the --model file serves it",
                )
                continue
            role_path = check_model_file(file)
            view = profile.for_role(role)
            # Each role's worker in what the ones before it leave.
            budget = self._attach_given(
                role, role_path, model_id_for(role_path), view.n_ctx, budget
            )
        self.state.provision.state = "given"
        for served in self.state.workers:
            self.state.controls[served.role] = Controller(self.state, served.role, profile)

    def _attach_given(
        self, role: Role, path: Path, model_id: str, n_ctx: int, budget: Budget
    ) -> Budget:
        """A given file placed as the planner would (or on --n-gpu-layers, when set), on the
        devices of this machine; returns the budget it leaves."""
        slots = self.profile.role_slots(role, self.settings.slots)
        option = place_file(path, budget, n_ctx=n_ctx, n_slots=slots)
        n_gpu_layers = option.n_gpu_layers if option else self.settings.n_gpu_layers
        if self.settings.n_gpu_layers != -1:
            n_gpu_layers = self.settings.n_gpu_layers  # the user's own split
        placed = [d.to_json() for d in option.devices] if option else []
        n_cpu_moe = option.n_cpu_moe if option else 0
        left = left_by(budget, option) if option else budget
        cache = prompt_cache_share(left.ram_bytes, 1)  # evicted prompts: in what is left
        served = self._attach(
            role, path, model_id, n_ctx, n_gpu_layers, n_cpu_moe, placed=placed, prompt_cache=cache
        )
        where = describe_placement(placed) or ("on the CPU" if placed else "placed by llama.cpp")
        log.info("%s: %s", role, where)
        served.estimate = placed
        return left

    def _share(self, role: Role, why: str) -> None:
        self.state.served[role] = self.state.served["chat"]
        self.state.role_notes[role] = why

    async def _provision(self) -> None:
        settings, state = self.settings, self.state
        chosen, result = await asyncio.to_thread(
            provision, settings, self.profile, state.provision, self.speeds
        )
        machine = result.chat.machine
        state.machine = machine
        draft = _planned_draft(result, chosen)
        for role, got in chosen.items():
            log.info("%s: chose %s: %s", role, got.model_id, got.why)
            check_model_file(got.path)
            model_id = got.model_id
            if role == "chat" and settings.model_id:
                model_id = validate_model_id(settings.model_id)
            n_cpu_moe = got.candidate.n_cpu_moe if got.candidate else 0
            placed = got.candidate.devices if got.candidate else []
            served = self._attach(
                role,
                got.path,
                model_id,
                got.n_ctx,
                got.n_gpu_layers,
                n_cpu_moe,
                placed=placed,
                draft=draft if role == "chat" else None,
                prompt_cache=result.prompt_cache_bytes,
            )
            served.estimate = placed
            served.speed_key = got.speed_key
            choice = result.roles[role]
            state.controls[role] = Controller(
                state, role, self.profile, machine=machine, plan=choice.plan, current=got.candidate
            )
        for role, choice in result.roles.items():
            if role in state.served:
                continue
            if choice.served_by in state.served:
                self._share(role, choice.reason)
            else:
                state.role_notes[role] = choice.reason  # off: /status says why

    def _beside_autocomplete(self, role: Role) -> bool:
        """A worker that shares the CPU with an autocomplete worker of its own."""
        settings = self.settings
        if role == "autocomplete" or not settings.share_cores:
            return False
        if settings.model is not None:
            return settings.autocomplete_model is not None
        plan = self.state.provision.plan or {}
        return (plan.get("roles", {}).get("autocomplete") or {}).get("served_by") == "autocomplete"

    def _attach(
        self,
        role: Role,
        path: Path,
        model_id: str,
        n_ctx: int,
        n_gpu_layers: int,
        n_cpu_moe: int = 0,
        *,
        placed: list[dict[str, Any]] | None = None,
        draft: Path | None = None,
        prompt_cache: int = PROMPT_CACHE_MAX,
    ) -> Served:
        """Give a role its own worker: a supervisor that will run it, its slots and queue.
        Chat's draft model: the user's (--draft-model), else the plan's (`draft`)."""
        settings = self.settings
        where = worker_devices(placed or [], self.state.machine)
        slots = self.profile.role_slots(role, settings.slots)
        spec = WorkerSpec(
            model_path=path,
            model_id=model_id,
            n_ctx=n_ctx,
            threads=settings.threads,
            n_slots=slots,
            n_gpu_layers=n_gpu_layers,
            socket_path=self.runtime / f"{role}.sock",
            n_cpu_moe=n_cpu_moe,
            # On shared cores the latency-bound role wins the scheduler too; alone, a lower
            # priority costs nothing.
            nice=NICE_BESIDE if self._beside_autocomplete(role) else 0,
            speculative=self.profile.speculative,
            draft_model=(settings.draft_model or draft) if role == "chat" else None,
            prompt_cache_bytes=prompt_cache,
            seed=settings.seed,
            temperature=settings.temperature,
            **where.fields(),
        )
        supervisor = Supervisor(
            spec,
            start_timeout_s=settings.worker_start_timeout_s,
            backoff_s=settings.restart_backoff_s,
            max_restarts=settings.max_restarts,
            restart_window_s=settings.restart_window_s,
        )
        admission = Admission(slots, settings.queue_size, settings.queue_timeout_s)
        served = Served(role, supervisor, admission, model_id, speeds=self.speeds)

        def replanned(spec: WorkerSpec, why: str) -> None:
            served.estimate = device_loss.estimate(spec)
            self.state.provision.notes.append(f"{role}: {why}")
            control = self.state.controls.get(role)
            if control is not None:
                control.note = why

        supervisor.respec = device_loss.DeviceCheck(self.state.machine, replanned)
        self.state.served[role] = served
        return served
