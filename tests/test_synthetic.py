"""Synthetic GGUF models (random weights, any shape) load and generate in llama.cpp, and their
files hold the tensors asked for: speed and memory tests rely on both."""

from __future__ import annotations

from pathlib import Path

import gguf
import llama_cpp
import numpy as np
import pytest

from scripts import fetch_models
from tests.support.synthetic import (
    TINY_DENSE,
    TINY_MOE,
    quantize,
    tensor_plan,
    write_model,
    write_tiny_dense,
    write_tiny_moe,
)

N_VOCAB = 49152  # SmolLM2's tokenizer, which the synthetic models copy


@pytest.fixture(scope="module")
def tokenizer() -> Path:
    """SmolLM2 alone (not the whole test ladder): its tokenizer is all that's needed."""
    return fetch_models.fetch(fetch_models.MODELS["smollm2"])


def _generate(path: Path) -> tuple[str, np.ndarray]:
    """Greedy text for a prompt, and the logits after it (random weights: nonsense, but finite)."""
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=256, verbose=False)
    try:
        out = llm.create_completion("hello", max_tokens=8, temperature=0.0)
        llm.reset()
        llm.eval(llm.tokenize(b"hello"))
        logits = np.array(llm.scores[llm.n_tokens - 1])
    finally:
        llm.close()
    return out["choices"][0]["text"], logits  # type: ignore[index]


def _tensor_bytes(reader: gguf.GGUFReader) -> dict[str, tuple[list[int], int]]:
    """name → (GGUF shape, fastest-varying dimension first; bytes in the file)."""
    return {t.name: ([int(d) for d in t.shape], int(t.n_bytes)) for t in reader.tensors}


def test_tiny_moe_generates(tmp_path: Path, tokenizer: Path) -> None:
    """An MoE with random weights decodes without NaNs: its speed can be measured."""
    text, logits = _generate(write_tiny_moe(tmp_path / "moe.gguf", tokenizer_from=tokenizer))
    assert isinstance(text, str)
    assert logits.shape == (N_VOCAB,)
    assert np.isfinite(logits).all()


def test_tiny_dense_generates(tmp_path: Path, tokenizer: Path) -> None:
    """A dense model with random weights decodes without NaNs."""
    text, logits = _generate(write_tiny_dense(tmp_path / "dense.gguf", tokenizer_from=tokenizer))
    assert isinstance(text, str)
    assert np.isfinite(logits).all()


def test_tiny_moe_file_holds_the_shapes_asked_for(tmp_path: Path, tokenizer: Path) -> None:
    """Expert tensors are [n_embd, n_ff, n_expert] and hold most bytes, as in a real MoE."""
    path = write_tiny_moe(tmp_path / "moe.gguf", tokenizer_from=tokenizer)
    reader = gguf.GGUFReader(path)
    tensors = _tensor_bytes(reader)
    e, ff, n = TINY_MOE["n_embd"], TINY_MOE["n_ff"], TINY_MOE["n_expert"]
    for i in range(TINY_MOE["n_layer"]):
        assert tensors[f"blk.{i}.ffn_gate_exps.weight"] == ([e, ff, n], e * ff * n * 2)
        assert tensors[f"blk.{i}.ffn_up_exps.weight"] == ([e, ff, n], e * ff * n * 2)
        assert tensors[f"blk.{i}.ffn_down_exps.weight"] == ([ff, e, n], e * ff * n * 2)
        assert tensors[f"blk.{i}.ffn_gate_inp.weight"] == ([e, n], e * n * 4)
        assert f"blk.{i}.ffn_up.weight" not in tensors
    assert tensors["token_embd.weight"] == ([e, N_VOCAB], e * N_VOCAB * 2)
    expert = sum(b for name, (_, b) in tensors.items() if "_exps." in name)
    total = sum(b for _, b in tensors.values())
    assert expert > total / 2
    assert path.stat().st_size >= total

    fields = reader.fields
    assert fields["llama.expert_count"].contents() == n
    assert fields["llama.expert_used_count"].contents() == TINY_MOE["n_expert_used"]
    assert len(fields["tokenizer.ggml.tokens"].data) == N_VOCAB


def test_tiny_dense_file_holds_the_shapes_asked_for(tmp_path: Path, tokenizer: Path) -> None:
    """Every tensor is the plan's shape and size: no more, no fewer."""
    path = write_tiny_dense(tmp_path / "dense.gguf", tokenizer_from=tokenizer)
    tensors = _tensor_bytes(gguf.GGUFReader(path))
    plan = tensor_plan(n_vocab=N_VOCAB, **TINY_DENSE)
    assert set(tensors) == {name for name, _, _ in plan}
    for name, shape, qtype in plan:
        block, size = gguf.GGML_QUANT_SIZES[qtype]
        assert tensors[name] == (list(shape), int(np.prod(shape)) // block * size), name
    e, ff = TINY_DENSE["n_embd"], TINY_DENSE["n_ff"]
    assert tensors["blk.0.ffn_down.weight"][0] == [ff, e]
    assert "output.weight" not in tensors  # tied, as in SmolLM2


def test_bigger_vocab_and_q8_0(tmp_path: Path, tokenizer: Path) -> None:
    """A vocab bigger than the tokenizer's is padded, so output size can be that of a big model;
    q8_0 weights are written directly, and both load."""
    path = write_model(
        tmp_path / "q8.gguf", n_layer=2, n_embd=128, n_head=2, n_head_kv=1, n_ff=256,
        n_vocab=N_VOCAB + 1000, tokenizer_from=tokenizer, dtype="q8_0",
    )  # fmt: skip
    tensors = _tensor_bytes(gguf.GGUFReader(path))
    assert tensors["output.weight"] == ([128, N_VOCAB + 1000], 128 * (N_VOCAB + 1000) // 32 * 34)
    _, logits = _generate(path)
    assert logits.shape == (N_VOCAB + 1000,)
    assert np.isfinite(logits).all()


def test_quantized_copy_loads(tmp_path: Path, tokenizer: Path) -> None:
    """llama.cpp's quantizer takes the synthetic MoE to Q4_K_M, experts and all."""
    src = write_tiny_moe(tmp_path / "moe.gguf", tokenizer_from=tokenizer)
    dst = quantize(src, tmp_path / "moe-q4_k_m.gguf", "Q4_K_M")
    assert dst.stat().st_size < src.stat().st_size / 2
    exps = gguf.GGUFReader(dst).tensors
    kinds = {t.tensor_type.name for t in exps if "_exps." in t.name}
    assert kinds <= {"Q4_K", "Q6_K"}
    _, logits = _generate(dst)
    assert np.isfinite(logits).all()
