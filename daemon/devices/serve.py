"""`assistantctl device serve`: this machine's devices for other llama.cpp processes, over
llama.cpp's RPC protocol.

llama.cpp's RPC server answers one client at a time: a second client (another role's worker,
or a device probe) would wait until the first disconnects. So the listening socket is ours, and
every client gets a llama.cpp RPC server process of its own on a private loopback port, with
its bytes copied both ways. A client's server ends with its connection (or with this process:
the kernel kills it when its parent dies).

The protocol has no authentication: anyone who reaches the port can run code on the device and
read what it holds. Hence loopback unless the user says otherwise.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from assistantd.errors import ConfigError

DEFAULT_PORT = 50052  # llama.cpp's rpc-server default
CHILD_START_TIMEOUT_S = 30.0
BUFFER = 1 << 20


def check_host(host: str, allow_network: bool) -> None:
    if _is_loopback(host) or allow_network:
        return
    raise ConfigError(
        f"refusing to serve devices on {host}: llama.cpp's RPC protocol has no authentication, "
        "so anyone who reaches the port can use the device and read what it holds. Serve on "
        "127.0.0.1 and reach it through an SSH tunnel (ssh -L 50052:127.0.0.1:50052 HOST), or "
        "pass --allow-network on a private network you trust"
    )


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DeviceServer:
    """The listening socket; one llama.cpp RPC server process per client connection."""

    def __init__(
        self, host: str, port: int, threads: int, devices: list[str] | None = None
    ) -> None:
        self.host, self.port, self.threads = host, port, threads
        self.devices = devices or []
        self._listener: socket.socket | None = None
        self._children: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()

    def bind(self) -> None:
        family = socket.AF_INET6 if ":" in self.host.strip("[]") else socket.AF_INET
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host.strip("[]"), self.port))
        except OSError as exc:
            listener.close()
            raise ConfigError(
                f"cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; pick another "
                "--port (or stop what uses it)"
            ) from None
        listener.listen(16)
        self.port = int(listener.getsockname()[1])
        self._listener = listener

    def serve_forever(self, on_client: Callable[[str], None] | None = None) -> None:
        assert self._listener is not None
        try:
            while True:
                client, address = self._listener.accept()
                if on_client:
                    on_client(f"{address[0]}:{address[1]}")
                threading.Thread(target=self._serve, args=(client,), daemon=True).start()
        finally:
            self.close()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            children = list(self._children)
        for child in children:
            with contextlib.suppress(OSError):
                child.kill()

    def _serve(self, client: socket.socket) -> None:
        child, upstream = None, None
        try:
            child, upstream = self._start_child()
            _splice(client, upstream)
        except OSError as exc:
            print(f"device serve: a client could not be served: {exc}", file=sys.stderr)
        finally:
            client.close()
            if upstream is not None:
                upstream.close()
            if child is not None:
                child.kill()
                child.wait()
                with self._lock:
                    self._children.discard(child)

    def _start_child(self) -> tuple[subprocess.Popen[bytes], socket.socket]:
        port = _free_port()
        args = [
            sys.executable,
            "-m",
            "assistantd.devices.serve",
            f"127.0.0.1:{port}",
            str(self.threads),
            *self.devices,
        ]
        child = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=None
        )
        with self._lock:
            self._children.add(child)
        deadline = time.monotonic() + CHILD_START_TIMEOUT_S
        while True:
            # ggml's server treats a connection that closes before its HELLO as a client that
            # left, so the first successful connect is the one used.
            try:
                upstream = socket.create_connection(("127.0.0.1", port), timeout=1.0)
                upstream.settimeout(None)
                return child, upstream
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    child.kill()
                    raise OSError(
                        f"llama.cpp's RPC server did not start (exit {child.poll()})"
                    ) from None
                time.sleep(0.02)


def _splice(a: socket.socket, b: socket.socket) -> None:
    """Copy bytes both ways until either side closes. Small messages go out at once (the
    protocol is request/response: Nagle's delay would add to every token)."""
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def pump(src: socket.socket, dst: socket.socket) -> None:
        buffer = bytearray(BUFFER)
        view = memoryview(buffer)
        try:
            while True:
                n = src.recv_into(buffer)
                if n == 0:
                    break
                dst.sendall(view[:n])
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    back = threading.Thread(target=pump, args=(b, a), daemon=True)
    back.start()
    pump(a, b)
    back.join()


def _die_with_parent() -> None:
    """Linux: the kernel kills this process when the device server that started it dies."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _child(argv: list[str]) -> int:
    """One llama.cpp RPC server for one client: endpoint, threads, device names."""
    _die_with_parent()
    from assistantd.devices import ggml

    endpoint, threads, *names = argv
    ggml.start_rpc_server(endpoint, int(threads), names or None)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
