"""Where a worker's model goes: exactly the devices the plan gave it, in the plan's split, and
(for a mixture of experts) which layers' experts stay in RAM, as llama.cpp's `--n-cpu-moe N`
does: the expert FFN tensors of those layers get the CPU buffer type.

llama-cpp-python's `Llama` takes neither `devices` nor `tensor_buft_overrides`, though the
model params it builds carry both; so the params it builds are completed while it loads. An
empty device list is a real choice: llama.cpp then places nothing off the CPU, whatever
n_gpu_layers says (without it, llama.cpp would pick every GPU it can see).

A build with llama.cpp's AMX kernels (one not made by scripts/setup.sh on a recent Xeon) loads
without extra buffer types: the AMX buffer is the only way into those kernels, which crash on
the first prompt in this llama.cpp. Weight repacking goes with it; setup.sh's build keeps it.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import llama_cpp.llama_cpp as low

from assistantd.devices import ggml
from assistantd.devices.registry import AMX_NOTE

_LOADING = threading.Lock()
log = logging.getLogger(__name__)


class _Override(ctypes.Structure):
    """struct llama_model_tensor_buft_override { const char * pattern; buft };"""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


@dataclass(frozen=True)
class Placement:
    """The devices a worker may use and how its layers are shared among them."""

    devices: tuple[str, ...] | None = None  # None: llama.cpp's own choice (described runs)
    split: tuple[float, ...] = field(default=())  # share of the offloaded layers per device
    n_cpu_moe: int = 0
    rpc: tuple[str, ...] = ()  # servers to register before the devices are looked up


def _cpu_buffer_type() -> int:
    fn = ggml.libggml().ggml_backend_cpu_buffer_type
    fn.restype = ctypes.c_void_p
    fn.argtypes = []
    return int(fn())


def patterns(n_cpu_moe: int) -> list[str]:
    """The tensor-name patterns llama.cpp's --n-cpu-moe uses for the first n layers."""
    return [rf"blk\.{i}\.ffn_(up|down|gate)_(ch|)exps" for i in range(n_cpu_moe)]


@contextlib.contextmanager
def placed(placement: Placement) -> Iterator[None]:
    """While a model loads in this block, it goes where `placement` says."""
    keep: list[object] = []  # ctypes arrays must outlive the load
    edits: list[tuple[str, object]] = []
    if placement.n_cpu_moe > 0:
        names = [p.encode() for p in patterns(placement.n_cpu_moe)]
        table = (_Override * (len(names) + 1))()  # NULL-terminated
        cpu = _cpu_buffer_type()
        for i, name in enumerate(names):
            table[i].pattern, table[i].buft = name, cpu
        keep += [table, names]
        edits.append(("tensor_buft_overrides", ctypes.cast(table, ctypes.c_void_p)))
    if placement.devices is not None:
        for endpoint in placement.rpc:
            ggml.add_rpc_server(endpoint)
        found = ggml.handles(list(placement.devices))
        array = (ctypes.c_void_p * (len(found) + 1))(*found, None)  # NULL-terminated
        keep.append(array)
        edits.append(("devices", ctypes.cast(array, ctypes.c_void_p)))
        if placement.split and len(placement.split) == len(found) and len(found) > 1:
            shares = (ctypes.c_float * len(found))(*placement.split)
            keep.append(shares)
            edits.append(("tensor_split", ctypes.cast(shares, ctypes.POINTER(ctypes.c_float))))
    if ggml.has_amx_kernels():
        log.warning(AMX_NOTE)
        edits.append(("use_extra_bufts", False))
    if not edits:
        yield
        return
    original = low.llama_model_default_params

    def completed() -> low.llama_model_params:
        params = original()
        for name, value in edits:
            setattr(params, name, value)
        return params

    with _LOADING:
        low.llama_model_default_params = completed
        try:
            yield
        finally:
            low.llama_model_default_params = original
