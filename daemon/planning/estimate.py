"""Memory and speed of one candidate, per device, from architecture numbers alone.

Memory = weights + KV cache + compute buffers + a fixed runtime overhead.
Speed ≈ efficiency × memory bandwidth / bytes read per token.
"""

from __future__ import annotations

from dataclasses import dataclass

from assistantd.planning.architecture import ModelArch
from assistantd.worker.protocol import PROMPT_CACHE_MAX

MiB = 1024 * 1024
GiB = 1024 * MiB

# Average bits per weight of llama.cpp quant types (llama-quantize's own listing, whole files).
BITS_PER_WEIGHT = {
    "F16": 16.0,
    "BF16": 16.0,
    "Q8_0": 8.5,
    "Q6_K": 6.56,
    "Q5_K_M": 5.69,
    "Q5_K_S": 5.54,
    "Q5_0": 5.5,
    "Q5_1": 6.0,
    "Q4_K_M": 4.89,
    "Q4_K_S": 4.58,
    "Q4_0": 4.55,
    "Q4_1": 5.0,
    "IQ4_XS": 4.46,
    "IQ4_NL": 4.5,
    "Q3_K_L": 4.27,
    "Q3_K_M": 3.91,
    "Q3_K_S": 3.5,
    "IQ3_M": 3.66,
    "IQ3_XXS": 3.06,
    "Q2_K": 3.35,
    "IQ2_M": 2.7,
    "IQ2_XS": 2.31,
    # gpt-oss ships MXFP4 experts (4.25 bits) with the rest at 8 bits: 12.1 GB for 20.9B params.
    "MXFP4": 4.63,
}

# What the worker process needs beyond tensors: Python, llama.cpp's code, the worker's own
# modules (measured: RSS of a worker right after start, less its model's tensors).
RUNTIME_OVERHEAD = 60 * MiB
HOST_BYTES_PER_CELL = 1536
N_BATCH = 512  # llama-cpp-python's default n_batch (= n_ubatch)
KV_BYTES_PER_ELEMENT = 2  # f16 cache


def file_bytes_estimate(arch: ModelArch, quant: str) -> int:
    """Bits per weight for the body; the token-embedding matrix at Q8_0 at least, as llama.cpp
    quantizes it (it doubles as the output layer when tied, and dominates small models)."""
    try:
        bits = BITS_PER_WEIGHT[quant.upper()]
    except KeyError:
        raise ValueError(f"unknown quant type {quant!r}") from None
    embedding = min(arch.n_vocab * arch.n_embd, arch.n_params)
    body = arch.n_params - embedding
    return int((body * bits + embedding * max(bits, BITS_PER_WEIGHT["Q8_0"])) / 8)


def kv_cache_bytes(arch: ModelArch, n_ctx: int, swa_full: bool = True) -> int:
    """K and V for every layer; sliding-window layers hold only the window unless the runtime
    keeps a full-size SWA cache (llama-cpp-python does by default)."""
    per_token_layer = arch.n_head_kv * (arch.head_dim_k + arch.head_dim_v) * KV_BYTES_PER_ELEMENT
    swa_ctx = n_ctx if swa_full or not arch.sliding_window else min(n_ctx, arch.sliding_window)
    full_layers = arch.kv_layers - arch.swa_layers
    return per_token_layer * (full_layers * n_ctx + arch.swa_layers * swa_ctx)


def compute_buffer_bytes(arch: ModelArch, n_ctx: int, *, on_gpu: bool) -> int:
    """ggml's scratch for one n_ubatch batch. On the CPU, as the worker's context runs it:
    flash attention (llama.cpp's "auto" turns it on), so no n_ctx-wide score matrix, only the
    f16 KQ masks (one per attention kind: full and sliding-window) and the activations; the
    reserved logits rows are never touched (only the last tokens' rows are computed), so they
    cost no resident memory (measured: scripts/bench_roles.py). On a GPU everything reserved is
    allocated: the larger of the logits rows and the score matrix of attention without flash
    attention, kept as the margin until it is measured on a card."""
    n_ubatch = min(N_BATCH, n_ctx)
    activations = 3 * n_ubatch * arch.n_embd * 4
    if not on_gpu:
        return (2 if arch.swa_layers else 1) * n_ubatch * n_ctx * 2 + activations
    logits = arch.n_vocab * n_ubatch * 4
    scores = (arch.n_head + 1) * n_ubatch * n_ctx * 4
    return max(logits, scores) + activations


def host_bytes(arch: ModelArch, n_ctx: int) -> int:
    """Resident memory outside the tensors: the runtime, llama.cpp's vocabulary tables
    (~240 B a token) and per-context bookkeeping (~1.5 KiB a KV cell). Calibrated against the
    workers' peak RSS with every slot filled (scripts/bench_roles.py: SmolLM2 3 × 4096 cells,
    Gemma 3 270M 2 × 4096) and checked on one filled slot at 2k and 8k (scripts/bench.py)."""
    return RUNTIME_OVERHEAD + arch.n_vocab * 240 + n_ctx * HOST_BYTES_PER_CELL


@dataclass(frozen=True)
class Footprint:
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    host_bytes: int  # always in RAM

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.host_bytes


def footprint(
    arch: ModelArch, weights_bytes: int, n_ctx: int, *, on_gpu: bool = False, n_seq: int = 1
) -> Footprint:
    """Memory of one worker serving `n_seq` slots of `n_ctx` each: its context holds
    n_seq × n_ctx cells of one unified KV cache, and attention spans the cells in use."""
    cells = n_ctx * n_seq
    return Footprint(
        weights_bytes=weights_bytes,
        kv_bytes=kv_cache_bytes(arch, cells),
        compute_bytes=compute_buffer_bytes(arch, cells, on_gpu=on_gpu),
        host_bytes=host_bytes(arch, cells),
    )


def bytes_per_token(arch: ModelArch, weights_bytes: int) -> float:
    """Weights read per decoded token: all of a dense model, the active share of an MoE."""
    return weights_bytes * arch.active_params / arch.n_params


def routed_expert_params(arch: ModelArch) -> float:
    """Parameters in the routed experts, from total and active parameters:
    E = (total − active) / (1 − used/experts); 0 for a dense model."""
    if not arch.is_moe:
        return 0.0
    used_share = arch.n_expert_used / arch.n_expert if arch.n_expert else 0.0
    return (arch.n_params - arch.active_params) / (1 - used_share)


def expert_bytes(arch: ModelArch, weights_bytes: int) -> int:
    """Bytes of the routed-expert tensors (what `--n-cpu-moe` leaves in RAM)."""
    if not arch.is_moe:
        return 0
    return int(weights_bytes * min(routed_expert_params(arch) / arch.n_params, 1.0))


def prompt_cache_share(ram_left: int, workers: int) -> int:
    """Each worker's RAM for evicted prompts: an even share of what the models leave, up to
    PROMPT_CACHE_MAX, so the cache never takes memory a model was planned into."""
    return max(min(PROMPT_CACHE_MAX, ram_left // max(workers, 1)), 0) >> 20 << 20
