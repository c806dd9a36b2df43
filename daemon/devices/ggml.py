"""ggml's device registry and its RPC backend, through ctypes on the libraries llama-cpp-python
ships (`llama_cpp/lib`).

llama-cpp-python binds llama.h but not ggml-backend.h, so the few registry calls the daemon
needs are declared here. Only a worker or a short-lived probe process calls into this module:
a driver that crashes, or an RPC server that is gone (ggml aborts the process when a connection
fails), then takes that process down, never the daemon.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import sys
from dataclasses import dataclass
from pathlib import Path

# enum ggml_backend_dev_type
DEVICE_KINDS = ("cpu", "gpu", "igpu", "accel", "meta")


@dataclass(frozen=True)
class RawDevice:
    """One entry of ggml's device registry, as ggml describes it."""

    name: str  # CPU, CUDA0, Vulkan0, Metal, RPC0[127.0.0.1:50052]
    description: str
    kind: str  # cpu | gpu | igpu | accel
    backend: str  # the registry that owns it: CPU, CUDA, ROCm, Vulkan, Metal, RPC, BLAS
    free_bytes: int
    total_bytes: int


def _lib_dir() -> Path:
    import llama_cpp

    return Path(llama_cpp.__file__).parent / "lib"


def _load(stem: str) -> ctypes.CDLL | None:
    suffix = ".dylib" if sys.platform == "darwin" else ".dll" if sys.platform == "win32" else ".so"
    for name in (f"lib{stem}{suffix}", f"lib{stem}.so", f"{stem}.dll"):
        path = _lib_dir() / name
        if path.exists():
            return ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL)
    return None


@functools.cache
def libggml() -> ctypes.CDLL:
    """libggml with the registry calls declared (loaded by llama_cpp first, so the same copy)."""
    import llama_cpp  # noqa: F401  (loads libllama and with it libggml)
    from llama_cpp._ggml import libggml as lib

    p, size_p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t)
    signatures = {
        "ggml_backend_dev_count": ([], ctypes.c_size_t),
        "ggml_backend_dev_get": ([ctypes.c_size_t], p),
        "ggml_backend_dev_name": ([p], ctypes.c_char_p),
        "ggml_backend_dev_description": ([p], ctypes.c_char_p),
        "ggml_backend_dev_type": ([p], ctypes.c_int),
        "ggml_backend_dev_memory": ([p, size_p, size_p], None),
        "ggml_backend_dev_backend_reg": ([p], p),
        "ggml_backend_dev_by_type": ([ctypes.c_int], p),
        "ggml_backend_reg_name": ([p], ctypes.c_char_p),
        "ggml_backend_reg_count": ([], ctypes.c_size_t),
        "ggml_backend_reg_get": ([ctypes.c_size_t], p),
        "ggml_backend_register": ([p], None),
    }
    for name, (args, result) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    return lib


@functools.cache
def librpc() -> ctypes.CDLL | None:
    """libggml-rpc, or None when this build has no RPC backend (built without GGML_RPC)."""
    libggml()
    lib = _load("ggml-rpc")
    if lib is None:
        return None
    p = ctypes.c_void_p
    lib.ggml_backend_rpc_add_server.argtypes = [ctypes.c_char_p]
    lib.ggml_backend_rpc_add_server.restype = p
    lib.ggml_backend_rpc_start_server.argtypes = [
        ctypes.c_char_p,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
        ctypes.POINTER(p),
    ]
    lib.ggml_backend_rpc_start_server.restype = None
    return lib


def has_rpc() -> bool:
    return librpc() is not None


@functools.cache
def has_amx_kernels() -> bool:
    """Whether this build has llama.cpp's AMX kernels compiled in: in the llama.cpp of
    llama-cpp-python 0.3.36 they crash on the first prompt batch (backend_probes.NO_AMX)."""
    libggml()
    cpu = _load("ggml-cpu")
    probe = getattr(cpu, "ggml_cpu_has_amx_int8", None) if cpu is not None else None
    return bool(probe is not None and probe())


def backends() -> list[str]:
    """The backends compiled into this build (CPU, RPC, CUDA, …)."""
    lib = libggml()
    return [
        (lib.ggml_backend_reg_name(lib.ggml_backend_reg_get(i)) or b"").decode()
        for i in range(lib.ggml_backend_reg_count())
    ]


_registered: dict[str, int] = {}


def add_rpc_server(endpoint: str) -> None:
    """Register an RPC server's devices in this process (once). ggml connects right away and
    aborts the process if the server cannot be reached: callers check reachability first."""
    if endpoint in _registered:
        return
    rpc = librpc()
    if rpc is None:
        raise RuntimeError(
            "this llama-cpp-python build has no RPC backend; rebuild it with scripts/setup.sh"
        )
    reg = rpc.ggml_backend_rpc_add_server(endpoint.encode())
    if not reg:
        raise RuntimeError(f"ggml could not add the RPC server {endpoint}")
    libggml().ggml_backend_register(reg)
    _registered[endpoint] = reg


def _device(lib: ctypes.CDLL, handle: int) -> RawDevice:
    free, total = ctypes.c_size_t(0), ctypes.c_size_t(0)
    lib.ggml_backend_dev_memory(handle, ctypes.byref(free), ctypes.byref(total))
    kind = lib.ggml_backend_dev_type(handle)
    reg = lib.ggml_backend_dev_backend_reg(handle)
    return RawDevice(
        name=(lib.ggml_backend_dev_name(handle) or b"").decode(),
        description=(lib.ggml_backend_dev_description(handle) or b"").decode(),
        kind=DEVICE_KINDS[kind] if 0 <= kind < len(DEVICE_KINDS) else "gpu",
        backend=(lib.ggml_backend_reg_name(reg) or b"").decode() if reg else "",
        free_bytes=free.value,
        total_bytes=total.value,
    )


def _listed() -> list[tuple[RawDevice, int]]:
    """Every device with its handle, named so that the name means the same in every process.

    ggml numbers RPC devices in the order servers were registered in this process (RPC0,
    RPC1, …), so a worker that registers only its own servers would see other numbers than the
    probe did. An RPC device is named by its server instead: RPC[host:port], and
    RPC[host:port]/N for a server's devices after its first."""
    lib = libggml()
    found, per_server = [], dict[str, int]()
    for i in range(lib.ggml_backend_dev_count()):
        handle = lib.ggml_backend_dev_get(i)
        device = _device(lib, handle)
        if device.backend == "RPC":
            index = per_server.get(device.description, 0)
            per_server[device.description] = index + 1
            name = f"RPC[{device.description}]" + (f"/{index}" if index else "")
            device = dataclasses.replace(device, name=name)
        found.append((device, handle))
    return found


def devices() -> list[RawDevice]:
    """Every device in the registry, with its memory as the backend reports it now."""
    return [device for device, _ in _listed()]


def handles(names: list[str]) -> list[int]:
    """Registry handles of the named devices, in the given order; KeyError names a missing one."""
    by_name = {device.name: handle for device, handle in _listed()}
    missing = [n for n in names if n not in by_name]
    if missing:
        raise KeyError(", ".join(missing))
    return [by_name[n] for n in names]


def start_rpc_server(endpoint: str, threads: int, device_names: list[str] | None = None) -> None:
    """Serve this process's devices (the named ones, else the GPUs, else the CPU) to llama.cpp
    RPC clients at `endpoint`. Blocks for good: run it in a process of its own."""
    rpc = librpc()
    if rpc is None:
        raise RuntimeError(
            "this llama-cpp-python build has no RPC backend; rebuild it with scripts/setup.sh"
        )
    lib = libggml()
    if device_names:
        chosen = handles(device_names)
    else:
        found = [lib.ggml_backend_dev_get(i) for i in range(lib.ggml_backend_dev_count())]
        gpus = [h for h in found if lib.ggml_backend_dev_type(h) in (1, 2)]
        chosen = gpus or [lib.ggml_backend_dev_by_type(0)]
    array = (ctypes.c_void_p * len(chosen))(*chosen)
    rpc.ggml_backend_rpc_start_server(endpoint.encode(), None, threads, len(chosen), array)
