"""The architecture numbers that decide memory and speed, from a GGUF header or the catalog."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from assistantd.planning.gguf_header import ArrayInfo, GGUFHeader

# Layers out of every `pattern` that use a sliding window, by architecture (llama.cpp's rules).
_SWA_PATTERN = {"gemma3": (5, 6), "gemma2": (1, 2), "cohere2": (3, 4)}


@dataclass(frozen=True)
class ModelArch:
    arch: str
    n_params: int
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim_k: int
    head_dim_v: int
    n_ctx_train: int
    n_vocab: int
    n_active_params: int | None = None  # mixture of experts: parameters read per token
    sliding_window: int = 0
    swa_layers: int = 0  # how many of n_layer use the sliding window
    # Hybrid models (Qwen3.5/3.6, Qwen3-Next: Gated DeltaNet): only these layers keep a KV
    # cache; the recurrent layers hold a small constant state. 0: every layer has attention.
    n_full_attn_layers: int = 0
    n_expert: int = 0  # mixture of experts: routed experts per layer, and how many a token uses
    n_expert_used: int = 0
    # From a file's own tensor table (0 where only the catalog is known): the input embedding
    # (which llama.cpp keeps on the CPU), the output matrix (0 when tied to the embedding: a
    # device holding the output layer then gets a copy), and the routed experts.
    embd_bytes: int = 0
    output_bytes: int = 0
    expert_tensor_bytes: int = 0

    @property
    def active_params(self) -> int:
        return self.n_active_params or self.n_params

    @property
    def kv_layers(self) -> int:
        """Layers that keep a KV cache."""
        return self.n_full_attn_layers or self.n_layer

    @property
    def is_moe(self) -> bool:
        return self.n_active_params is not None and self.n_active_params < self.n_params


def _per_layer_max(value: Any) -> int:
    if isinstance(value, list):
        return max(int(v) for v in value)
    if isinstance(value, ArrayInfo):
        raise ValueError("per-layer head counts are too long to keep")
    return int(value)


def from_header(header: GGUFHeader) -> ModelArch:
    md = header.metadata
    arch = str(md.get("general.architecture", "unknown"))

    def get(key: str, default: Any = None) -> Any:
        return md.get(f"{arch}.{key}", default)

    n_embd = int(get("embedding_length"))
    n_head = _per_layer_max(get("attention.head_count"))
    n_head_kv = _per_layer_max(get("attention.head_count_kv", n_head))
    n_layer = int(get("block_count"))
    window = int(get("attention.sliding_window", 0) or 0)
    swa_layers = 0
    if window and arch in _SWA_PATTERN:
        swa, pattern = _SWA_PATTERN[arch]
        swa_layers = n_layer // pattern * swa + min(n_layer % pattern, swa)
    elif window:
        swa_layers = n_layer
    tokens = md.get("tokenizer.ggml.tokens")
    n_vocab = tokens.count if isinstance(tokens, ArrayInfo) else len(tokens or [])

    total = 0
    experts = 0
    sizes = {"embd": 0, "output": 0, "experts": 0}
    for t in header.tensors:
        count = 1
        for dim in t.shape:
            count *= dim
        total += count
        if "_exps" in t.name:
            experts += count
            sizes["experts"] += t.nbytes
        elif t.name == "token_embd.weight":
            sizes["embd"] = t.nbytes
        elif t.name == "output.weight":
            sizes["output"] = t.nbytes
    n_expert = int(get("expert_count", 0) or 0)
    n_used = int(get("expert_used_count", 0) or 0)
    interval = int(get("full_attention_interval", 0) or 0)  # qwen35, qwen35moe, qwen3next
    active = total - experts + experts * n_used // n_expert if n_expert else None
    return ModelArch(
        arch=arch,
        n_params=total,
        n_layer=n_layer,
        n_embd=n_embd,
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim_k=int(get("attention.key_length", n_embd // n_head)),
        head_dim_v=int(get("attention.value_length", n_embd // n_head)),
        n_ctx_train=int(get("context_length", 2048)),
        n_vocab=n_vocab or int(get("vocab_size", 0) or 0),
        n_active_params=active,
        sliding_window=window,
        swa_layers=swa_layers,
        n_full_attn_layers=n_layer // interval if interval > 1 else 0,
        n_expert=n_expert,
        n_expert_used=n_used,
        embd_bytes=sizes["embd"],
        output_bytes=sizes["output"],
        expert_tensor_bytes=sizes["experts"],
    )
