"""Decode speed, prompt speed and time to first token of one placement, from bytes and FLOPs.

Decode is memory-bound: each token reads the active weights once, from VRAM and/or RAM, plus a
fixed cost per layer (kernel launches and thread barriers, which is what bounds tiny models).
Prompt processing is compute-bound: ≈ 2 × active parameters FLOPs per token (the input
embedding is a lookup and only the last row's logits are computed) plus attention, over the
device's sustained FLOPS; weights left in RAM under a GPU are streamed over PCIe once per
batch of 512 tokens, as llama.cpp does when it offloads a CPU-resident matmul.

Constants were fitted once (issue #12) against published llama.cpp runs listed in
tests/test_expert_speed.py, and the test models measured on the project's 2-core machine:
- EFFICIENCY: share of peak bandwidth a decode step reaches. 0.65 on CUDA/ROCm/Metal fits
  RTX 5090/4090/5060 Ti and M1 Max/M4 runs (published range 53-75%). For RAM, the probe's
  number is a copy throughput (read + write), which already sits below peak, and a described
  machine gives the spec: 0.65 of it is what all cores reading achieve (DDR5 desktop runs).
- LAYER_COST_S: per layer per decoded token. CPU 0.11 ms from SmolLM2-135M (30 layers, 118
  tok/s) and Gemma-3-270M (18 layers, 66 tok/s) on 2 threads; CUDA 15 µs (TinyLlama 762 tok/s on
  an RTX 4090); Metal 30 µs; an MoE layer adds routing and expert gathers (45 µs, from
  Qwen3-30B-A3B at 167 tok/s on an RTX 3090 Ti).
- COMPUTE_EFFICIENCY: share of the spec FP16 TFLOPS prompt processing reaches with quantized
  weights: 0.3 on NVIDIA/AMD tensor cores, 0.7 on Apple GPUs (no tensor-core peak to miss).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from assistantd.planning.architecture import ModelArch
from assistantd.planning.estimate import routed_expert_params

# "vulkan" as ROCm; "rpc" is a remote device whose kind the protocol does not say: a CPU's
# figures (the cautious guess), plus the network round trips of every token (Hardware.link_s).
EFFICIENCY = {"cpu": 0.65, "cuda": 0.65, "rocm": 0.55, "metal": 0.75, "vulkan": 0.55, "rpc": 0.65}
# CUDA's Q8_0 and legacy-quant kernels stream closer to peak than the K-quants' (RTX 5060 Ti:
# Qwen2.5-Coder-7B Q8_0 at 90% of 448 GB/s, Q2_K at 61%).
QUANT_EFFICIENCY = {"Q8_0": 1.35, "Q4_0": 1.15, "Q4_1": 1.15, "Q5_0": 1.15, "Q5_1": 1.15}
LAYER_COST_S = {
    "cpu": 110e-6,
    "cuda": 15e-6,
    "rocm": 25e-6,
    "metal": 60e-6,
    "vulkan": 25e-6,
    "rpc": 110e-6,
}
MOE_LAYER_COST_S = {
    "cpu": 60e-6,
    "cuda": 45e-6,
    "rocm": 60e-6,
    "metal": 45e-6,
    "vulkan": 60e-6,
    "rpc": 60e-6,
}
# A Gated DeltaNet layer (Qwen3.5/3.6, Qwen3-Next) runs more, smaller kernels than attention:
# Qwen3.5-4B/9B Q4_0 at 80/53.8 tok/s on an M4 Max.
RECURRENT_LAYER_COST_S = {
    "cpu": 100e-6,
    "cuda": 20e-6,
    "rocm": 30e-6,
    "metal": 150e-6,
    "vulkan": 30e-6,
    "rpc": 100e-6,
}
COMPUTE_EFFICIENCY = {"cuda": 0.3, "rocm": 0.3, "metal": 0.7, "vulkan": 0.2, "rpc": 0.5}
# Round trips per decoded token to an RPC server: the graph, its inputs, the logits back.
RPC_ROUND_TRIPS = 3
PCIE_GBS = 25.0  # PCIe 4.0 x16 in practice
# ggml's CPU backend repacks these types into interleaved blocks for its AVX2/NEON matmul
# kernels (the "extra" CPU buffer types), which evaluate prompts much faster than the plain
# dot-product path the other types take. Both factors fitted on this machine's two test models
# (Q4_1 SmolLM2 ≈ 250–264 tok/s, Q4_K_M Gemma 270M ≈ 417–431 tok/s; tests/test_expert_speed.py).
CPU_REPACKED = frozenset({"Q4_0", "Q4_K_M", "Q4_K_S", "IQ4_NL"})
CPU_PROMPT_FACTOR = {"repacked": 1.38, "plain": 0.86}
N_UBATCH = 512


@dataclass(frozen=True)
class Hardware:
    """What the speed of one placement depends on."""

    ram_gbs: float
    cpu_gflops: float
    gpu_gbs: float = 0.0
    gpu_tflops: float = 0.0
    gpu_kind: str = "cuda"  # cuda | rocm | metal | vulkan | rpc
    link_s: float = 0.0  # network time per decoded token (remote devices)


@dataclass(frozen=True)
class Split:
    """Where one token's work happens. Bytes are weights read per decoded token."""

    gpu_bytes: float = 0.0
    cpu_bytes: float = 0.0
    gpu_layers: int = 0  # layers whose attention runs on the GPU
    cpu_layers: int = 0  # layers with any matmul on the CPU (experts in RAM count too)
    ram_resident_bytes: float = 0.0  # weights left in RAM under a GPU (streamed for prompts)
    on_gpu: bool = False  # prompt matmuls run on the GPU


@dataclass(frozen=True)
class Prediction:
    decode_tok_s: float
    prompt_tok_s: float
    ttft_ms: float


def decode_seconds(arch: ModelArch, split: Split, hw: Hardware, quant: str = "") -> float:
    seconds = hw.link_s if split.on_gpu else 0.0
    if split.gpu_bytes:
        boost = QUANT_EFFICIENCY.get(quant, 1.0) if hw.gpu_kind in ("cuda", "rocm") else 1.0
        efficiency = min(EFFICIENCY[hw.gpu_kind] * boost, 0.92)
        seconds += split.gpu_bytes / (hw.gpu_gbs * 1e9 * efficiency)
    if split.cpu_bytes:
        seconds += split.cpu_bytes / (hw.ram_gbs * 1e9 * EFFICIENCY["cpu"])
    recurrent = (
        (arch.n_layer - arch.n_full_attn_layers) / arch.n_layer if arch.n_full_attn_layers else 0
    )
    for kind, layers in ((hw.gpu_kind, split.gpu_layers), ("cpu", split.cpu_layers)):
        cost = LAYER_COST_S[kind] + (MOE_LAYER_COST_S[kind] if arch.is_moe else 0.0)
        cost += recurrent * RECURRENT_LAYER_COST_S[kind]
        seconds += layers * cost
    return seconds


def prompt_flops_per_token(arch: ModelArch, prompt_tokens: int) -> float:
    """2 × active weights (the input embedding is a lookup; logits only for the last token)
    plus attention over half the prompt on average, on layers that keep a KV cache."""
    embedding = arch.n_vocab * arch.n_embd
    weights = max(arch.active_params - embedding, arch.active_params // 10)
    head = arch.n_head * (arch.head_dim_k + arch.head_dim_v)
    attention = 2 * arch.kv_layers * head * prompt_tokens / 2
    return 2 * weights + attention


def prompt_seconds(
    arch: ModelArch, split: Split, hw: Hardware, prompt_tokens: int, quant: str = ""
) -> float:
    flops = prompt_flops_per_token(arch, prompt_tokens) * prompt_tokens
    if not split.on_gpu:
        kernel = "repacked" if quant.upper() in CPU_REPACKED else "plain"
        return flops / (hw.cpu_gflops * 1e9 * CPU_PROMPT_FACTOR[kernel])
    sustained = hw.gpu_tflops * 1e12 * COMPUTE_EFFICIENCY[hw.gpu_kind]
    batches = math.ceil(prompt_tokens / N_UBATCH)
    streamed = split.ram_resident_bytes * batches / (PCIE_GBS * 1e9)
    return flops / sustained + streamed


def predict(
    arch: ModelArch, split: Split, hw: Hardware, prompt_tokens: int, quant: str = ""
) -> Prediction:
    per_token = decode_seconds(arch, split, hw, quant)
    prompt = prompt_seconds(arch, split, hw, prompt_tokens, quant)
    decode = 1.0 / per_token if per_token > 0 else math.inf
    return Prediction(
        decode_tok_s=decode,
        prompt_tok_s=prompt_tokens / prompt if prompt > 0 else math.inf,
        ttft_ms=(prompt + per_token) * 1000,
    )


def ttft_ms(prompt_tok_s: float, decode_tok_s: float, prompt_tokens: int) -> float:
    """Time to first token from the two speeds (a measured decode speed replaces the model's)."""
    return (prompt_tokens / max(prompt_tok_s, 1e-9) + 1 / max(decode_tok_s, 1e-9)) * 1000


# Speculative decoding. A verify step of 1 + d tokens costs the one-token step plus d tokens of
# prompt compute (flat on a bandwidth-bound GPU, steep on a CPU running a small model); a model
# guess adds d draft decodes; an MoE's verify batch also reads the experts its other tokens
# route to (Routing). At acceptance a per guessed token a step yields (1 - a^(d+1)) / (1 - a)
# tokens. Checked against this machine's measured batch costs (SmolLM2: a batch of 8 at 4.2x
# one token, predicted 4.3x) and published GPU gains (a 0.5B draft for a 7B coder: 1.5-2.9x).
MAX_GUESS = 8  # guessed tokens per step considered (the worker drafts up to 12)
# n-gram guesses on an edit-like request (the answer repeats the code it was given): 190 of
# 253 kept in scripts/bench_speculation.py.
EDIT_ACCEPTANCE = 0.75


@dataclass(frozen=True)
class Routing:
    """A mixture of experts as a verify batch reads it: `share` of a one-token step goes to
    reading the routed experts, and a token uses `used` of each layer's experts. b tokens read
    about 1 - (1 - used)^b of them: a batch of 5 on Qwen3-Coder-30B-A3B (8 of 128) reads 4.4x
    the experts one token does. Routing is taken as independent per token; real routing is
    correlated and reads fewer, so this errs on the side of not speculating."""

    share: float = 0.0
    used: float = 0.0

    def extra_s(self, step_s: float, guess: int) -> float:
        """Seconds the experts of `guess` more tokens add to a one-token step."""
        if not self.share or not self.used:
            return 0.0
        read = (1 - (1 - self.used) ** (guess + 1)) / self.used
        return step_s * self.share * (read - 1)


DENSE = Routing()


def routing_of(arch: ModelArch) -> Routing:
    """A model's Routing (DENSE for a dense one): the routed experts' share of the weights a
    token reads."""
    if not arch.is_moe or not arch.n_expert or not arch.n_expert_used:
        return DENSE
    used = arch.n_expert_used / arch.n_expert
    read = routed_expert_params(arch) * used / max(arch.active_params, 1)
    return Routing(share=min(read, 1.0), used=used)


def step_gain(
    acceptance: float,
    guess: int,
    step_s: float,
    token_s: float,
    draft_s: float,
    routing: Routing = DENSE,
) -> float:
    """Tokens per second with `guess` tokens guessed each step, over one token per step."""
    kept = sum(acceptance**i for i in range(guess + 1))  # the sampled token and kept guesses
    verify_s = step_s + guess * (token_s + draft_s) + routing.extra_s(step_s, guess)
    return kept * step_s / verify_s


def best_gain(
    acceptance: float, step_s: float, token_s: float, draft_s: float, routing: Routing = DENSE
) -> tuple[float, int]:
    """The best gain over guess lengths 1..MAX_GUESS, and its length."""
    guesses = range(1, MAX_GUESS + 1)
    return max((step_gain(acceptance, d, step_s, token_s, draft_s, routing), d) for d in guesses)


def edit_gain(decode_tok_s: float, prompt_tok_s: float, routing: Routing = DENSE) -> float:
    """n-gram speculation's predicted gain on an edit-like request (its guesses cost nothing)."""
    if decode_tok_s <= 0 or prompt_tok_s <= 0:
        return 1.0
    step_s, token_s = 1 / decode_tok_s, 1 / prompt_tok_s
    return round(best_gain(EDIT_ACCEPTANCE, step_s, token_s, 0.0, routing)[0], 2)
