"""Mixture-of-experts tensors kept in RAM while the rest goes to the GPU, as llama.cpp's
`--n-cpu-moe N` does: the expert FFN tensors of the first N layers get the CPU buffer type.

llama-cpp-python's `Llama` has no argument for `tensor_buft_overrides`, though its model
params carry the field; so the params it builds are given the overrides while it loads.
"""

from __future__ import annotations

import contextlib
import ctypes
import threading
from collections.abc import Iterator

import llama_cpp.llama_cpp as low
from llama_cpp._ggml import libggml

_LOADING = threading.Lock()


class _Override(ctypes.Structure):
    """struct llama_model_tensor_buft_override { const char * pattern; buft };"""

    _fields_ = [("pattern", ctypes.c_char_p), ("buft", ctypes.c_void_p)]


def _cpu_buffer_type() -> int:
    fn = libggml.ggml_backend_cpu_buffer_type
    fn.restype = ctypes.c_void_p
    fn.argtypes = []
    return int(fn())


def patterns(n_cpu_moe: int) -> list[str]:
    """The tensor-name patterns llama.cpp's --n-cpu-moe uses for the first n layers."""
    return [rf"blk\.{i}\.ffn_(up|down|gate)_(ch|)exps" for i in range(n_cpu_moe)]


@contextlib.contextmanager
def experts_in_ram(n_cpu_moe: int) -> Iterator[None]:
    """While a model loads in this block, its first `n_cpu_moe` layers' experts stay in RAM."""
    if n_cpu_moe <= 0:
        yield
        return
    names = [p.encode() for p in patterns(n_cpu_moe)]
    table = (_Override * (len(names) + 1))()  # NULL-terminated
    cpu = _cpu_buffer_type()
    for i, name in enumerate(names):
        table[i].pattern, table[i].buft = name, cpu
    original = low.llama_model_default_params

    def with_overrides() -> low.llama_model_params:
        params = original()
        params.tensor_buft_overrides = ctypes.cast(table, ctypes.c_void_p)
        return params

    with _LOADING:
        low.llama_model_default_params = with_overrides
        try:
            yield
        finally:
            low.llama_model_default_params = original
