"""What llama.cpp allocated on each device, read from its own log as the model and contexts
load: model weights, KV cache and compute buffers per buffer (CPU, CUDA0, RPC[host:port] …).

llama.cpp reports these sizes only in its log, so the worker installs a log callback that
keeps these lines (and the last errors, for a load that fails) instead of printing them.
"""

from __future__ import annotations

import collections
import ctypes
import re
import threading
from typing import Any

import llama_cpp

# "load_tensors:   RPC0[127.0.0.1:50052] model buffer size =    92.10 MiB"
# "llama_kv_cache:        CPU KV buffer size =   180.00 MiB"
# "llama_context:       CPU compute buffer size =     2.51 MiB"
_LINE = re.compile(
    r"^\w+:\s+(?P<buffer>\S+)\s+(?P<what>model|KV|RS|compute|output) buffer size =\s+"
    r"(?P<mib>[0-9.]+) MiB"
)
_KIND = {"model": "weights", "KV": "kv", "RS": "kv", "compute": "compute", "output": "compute"}
GGML_LOG_ERROR = 3
GGML_LOG_WARN = 2


def device_of(buffer: str) -> str:
    """The device a buffer lives on: CUDA_Host, CPU_Mapped, CPU_REPACK are host memory; an
    RPC buffer is named RPC<n>[host:port] and its device RPC[host:port]."""
    if buffer.startswith("RPC"):
        start = buffer.find("[")
        return f"RPC{buffer[start:]}" if start >= 0 else buffer
    if buffer.startswith("CPU") or buffer.endswith("_Host"):
        return "CPU"
    return buffer


class Allocations:
    """Bytes per device and kind, as llama.cpp logged them in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes: dict[str, dict[str, int]] = {}
        self.errors: collections.deque[str] = collections.deque(maxlen=20)
        self._partial = ""

    def add_line(self, line: str) -> None:
        match = _LINE.match(line.strip())
        if not match:
            return
        device = device_of(match["buffer"])
        kind = _KIND[match["what"]]
        size = int(float(match["mib"]) * 1024 * 1024)
        with self._lock:
            per = self._bytes.setdefault(device, {"weights": 0, "kv": 0, "compute": 0})
            per[kind] += size

    def feed(self, level: int, text: str) -> None:
        """One log callback's text: lines may arrive in pieces."""
        self._partial += text
        while "\n" in self._partial:
            line, self._partial = self._partial.split("\n", 1)
            self.add_line(line)
            if level in (GGML_LOG_ERROR, GGML_LOG_WARN) and line.strip():
                self.errors.append(line.strip())

    def to_json(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {
                device: {**kinds, "total": sum(kinds.values())}
                for device, kinds in self._bytes.items()
            }


ALLOCATIONS = Allocations()


@llama_cpp.llama_log_callback
def _callback(level: int, text: bytes, _user: ctypes.c_void_p) -> None:
    ALLOCATIONS.feed(level, text.decode("utf-8", "replace"))


def capture() -> Allocations:
    """Route llama.cpp's log here (for the rest of this process's life)."""
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))
    return ALLOCATIONS
