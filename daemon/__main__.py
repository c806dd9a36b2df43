"""`assistantd`: run the daemon in the foreground."""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import psutil

from assistantd.api.security import check_bind, check_tls
from assistantd.control.state import keys_of
from assistantd.errors import AssistantError, ConfigError
from assistantd.lifecycle import EXIT_STARTUP_FAILED, Lifecycle, check_model_file
from assistantd.planning.profiles import Profile, active_profile
from assistantd.settings import Settings, load_settings

log = logging.getLogger("assistantd")


def check_port_free(host: str, port: int, flag: str = "--port") -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(
                    f"port {port} on {host} is already in use by {_listener(port)} (is "
                    f"assistantd already running? try `assistantctl status`); stop it or "
                    f"choose another with {flag}"
                ) from None
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _listener(port: int) -> str:
    """The process listening on `port`, where the OS lets us see it (Ollama, usually)."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            listening = conn.status == psutil.CONN_LISTEN and conn.laddr
            if listening and conn.laddr.port == port and conn.pid:
                return f"{psutil.Process(conn.pid).name()} (pid {conn.pid})"
    except (psutil.Error, OSError):
        pass
    return "another program"


async def serve(settings: Settings, profile: Profile) -> int:
    with tempfile.TemporaryDirectory(prefix="assistantd-") as tmp:
        return await Lifecycle(settings, profile, runtime=Path(tmp)).run()


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
        if settings.draft_model is not None:
            check_model_file(settings.draft_model)
        required = keys_of(settings).required  # a broken keys file stops here
        for host, _ in settings.listen_addresses():
            check_bind(host, required)
        check_tls(settings)
        check_port_free(settings.host, settings.port)
        for host, port in settings.listen_addresses()[1:]:
            check_port_free(host, port, "--ollama-listen")
        profile = active_profile(settings)
    except AssistantError as exc:
        print(f"assistantd: {exc.message}", file=sys.stderr)
        sys.exit(EXIT_STARTUP_FAILED)
    log.info("profile %s (%s)", profile.name, profile.path)
    with asyncio.Runner(loop_factory=_event_loop_factory()) as runner:
        sys.exit(runner.run(serve(settings, profile)))


def _event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it installs (not on Windows): every streamed token wakes the daemon's
    loop once, and uvloop's wake-up and socket writes cost less of a decode thread's core."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


if __name__ == "__main__":
    main()
