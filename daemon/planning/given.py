"""Where a file the user gave (`--model FILE`) goes: the same placements the planner weighs
for catalog models, from the file's own header, in the same budget. So a model bigger than the
device budget is split between device and RAM instead of failing to load, and /status can
show the estimate per device beside what llama.cpp allocated."""

from __future__ import annotations

from pathlib import Path

from assistantd.planning.architecture import from_header
from assistantd.planning.gguf_header import read_local
from assistantd.planning.placement import Option, options
from assistantd.planning.plan_types import Budget
from assistantd.planning.planner import option_problems


def place_file(path: Path, budget: Budget, *, n_ctx: int, n_slots: int) -> Option | None:
    """The GPU-heaviest placement of `path` that fits `budget`, else the CPU; None when the
    header lacks the numbers a plan needs (an architecture this planner does not know): the
    worker then tries it as given, and llama.cpp says what it makes of it."""
    header = read_local(path)
    try:
        arch = from_header(header)
    except (TypeError, ValueError, KeyError, ZeroDivisionError):
        return None
    ctx = min(n_ctx, arch.n_ctx_train)
    choices = options(arch, header.tensor_bytes, ctx, budget, n_slots)
    for option in choices:
        if not option_problems(option, budget):
            return option
    return choices[-1]
