"""The bounded GGUF reader: real headers read right, crafted ones refused before llama.cpp."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import gguf
import pytest

from assistantd.errors import GGUFError
from assistantd.planning.architecture import from_header
from assistantd.planning.gguf_header import read_local
from tests.support.daemons import ROOT, write_tiny_gguf


def test_real_headers_match_the_gguf_package(models: dict[str, Path]) -> None:
    for path in models.values():
        ours = read_local(path)
        theirs = gguf.GGUFReader(path)
        assert [t.name for t in ours.tensors] == [t.name for t in theirs.tensors]
        assert ours.tensor_bytes == sum(int(t.n_bytes) for t in theirs.tensors)
        assert ours.data_offset + ours.tensor_bytes == path.stat().st_size


def test_architecture_numbers_from_the_header(models: dict[str, Path]) -> None:
    smol = from_header(read_local(models["smollm2"]))
    assert (smol.arch, smol.n_layer, smol.n_head, smol.n_head_kv, smol.head_dim_k) == (
        "llama",
        30,
        9,
        3,
        64,
    )
    assert 134e6 < smol.n_params < 136e6
    gemma = from_header(read_local(models["gemma270m"]))
    assert (gemma.n_layer, gemma.n_head_kv, gemma.head_dim_k, gemma.sliding_window) == (
        18,
        1,
        256,
        512,
    )
    assert gemma.swa_layers == 15  # five of every six gemma3 layers slide


def _header(version: int = 3, n_tensors: int = 0, n_kv: int = 0) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", version, n_tensors, n_kv)


CRAFTED = {
    "bad magic": lambda p: p.write_bytes(b"GGML" + bytes(60)),
    "unknown version": lambda p: p.write_bytes(_header(version=99) + bytes(40)),
    "huge tensor count": lambda p: p.write_bytes(_header(n_tensors=1 << 40) + bytes(40)),
    "huge key count": lambda p: p.write_bytes(_header(n_kv=1 << 40) + bytes(40)),
    "huge string": lambda p: p.write_bytes(
        _header(n_kv=1) + struct.pack("<Q", 1 << 40) + bytes(40)
    ),
    "huge array": lambda p: p.write_bytes(
        _header(n_kv=1)
        + struct.pack("<Q", 1)
        + b"k"
        + struct.pack("<IIQ", 9, 4, 1 << 40)
        + bytes(40)
    ),
    "header past end": lambda p: p.write_bytes(_header(n_kv=1) + struct.pack("<Q", 100) + b"short"),
}


@pytest.mark.parametrize("case", CRAFTED, ids=list(CRAFTED))
def test_crafted_headers_are_rejected(tmp_path: Path, case: str) -> None:
    path = tmp_path / "crafted.gguf"
    CRAFTED[case](path)
    with pytest.raises(GGUFError):
        read_local(path)


def test_tensor_offset_past_the_end_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "offset.gguf"
    write_tiny_gguf(path)
    assert read_local(path).tensors[0].offset == 0
    data = bytearray(path.read_bytes())
    # The tensor info ends with its u64 offset just before the aligned data section.
    name_at = data.index(b"weight")
    offset_at = name_at + len("weight") + 4 + 2 * 8 + 4
    data[offset_at : offset_at + 8] = struct.pack("<Q", 1 << 20)
    path.write_bytes(bytes(data))
    with pytest.raises(GGUFError, match="past the end"):
        read_local(path)


def test_truncated_real_model_is_rejected(tmp_path: Path, models: dict[str, Path]) -> None:
    path = tmp_path / "truncated.gguf"
    with models["smollm2"].open("rb") as src:
        path.write_bytes(src.read(4 << 20))
    with pytest.raises(GGUFError, match="past the end"):
        read_local(path)


def test_daemon_refuses_a_crafted_file_before_loading_it(tmp_path: Path) -> None:
    path = tmp_path / "crafted.gguf"
    CRAFTED["huge tensor count"](path)
    result = subprocess.run(
        [sys.executable, "-m", "assistantd", "--model", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "implausible counts" in result.stderr
