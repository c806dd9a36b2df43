"""A bounded GGUF header reader: architecture numbers without the weights.

Reads from a local file or over HTTP range requests (header bytes only), and rejects crafted
files — bad magic, huge counts, oversized strings, tensors past the end of the file — before
llama.cpp ever opens them (its loader has had repeated overflows from such headers).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import httpx
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

from assistantd.errors import GGUFError

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_HEADER_BYTES = 64 * 1024 * 1024
MAX_TENSORS = 100_000
MAX_KV = 100_000
MAX_STRING = 16 * 1024 * 1024
MAX_ARRAY = 16 * 1024 * 1024
MAX_DIMS = 4
MAX_ELEMENTS = 1 << 48
KEEP_ARRAY = 256  # longer arrays keep only their type and length

# GGUF value types → struct formats (8 = string, 9 = array handled apart).
_SCALARS = {
    0: "B",
    1: "b",
    2: "H",
    3: "h",
    4: "I",
    5: "i",
    6: "f",
    7: "?",
    10: "Q",
    11: "q",
    12: "d",
}
_STRING, _ARRAY = 8, 9


class ByteSource(Protocol):
    size: int
    name: str

    def read(self, offset: int, length: int) -> bytes: ...


class FileSource:
    def __init__(self, path: Path) -> None:
        self.name = str(path)
        self._path = path
        self.size = path.stat().st_size

    def read(self, offset: int, length: int) -> bytes:
        with self._path.open("rb") as handle:
            handle.seek(offset)
            return handle.read(length)


class HttpRangeSource:
    """Header bytes of a remote file, fetched with Range requests as the parser needs them."""

    def __init__(self, url: str, client: httpx.Client, size: int) -> None:
        self.name = url
        self._url = url
        self._client = client
        self.size = size

    def read(self, offset: int, length: int) -> bytes:
        end = min(offset + length, self.size) - 1
        response = self._client.get(self._url, headers={"Range": f"bytes={offset}-{end}"})
        response.raise_for_status()
        return response.content[:length]


@dataclass(frozen=True)
class ArrayInfo:
    """A long metadata array (e.g. the vocabulary): its element type and length only."""

    type: int
    count: int


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]
    type: int
    offset: int  # from the start of the data section
    nbytes: int


@dataclass
class GGUFHeader:
    source: str
    version: int
    file_size: int
    metadata: dict[str, Any]
    tensors: list[TensorInfo]
    data_offset: int
    header_bytes: int = field(default=0)

    @property
    def tensor_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors)


class _Reader:
    """Sequential reads over a ByteSource, fetching ahead in growing chunks."""

    def __init__(self, source: ByteSource, first_chunk: int = 1 << 20) -> None:
        self.source = source
        self.pos = 0
        self._buf = b""
        self._chunk = first_chunk

    def _need(self, n: int) -> None:
        end = self.pos + n
        if end > MAX_HEADER_BYTES:
            raise GGUFError(f"{self.source.name}: header is larger than {MAX_HEADER_BYTES} bytes")
        if end > self.source.size:
            raise GGUFError(f"{self.source.name}: header runs past the end of the file")
        while len(self._buf) < end:
            want = max(self._chunk, end - len(self._buf))
            more = self.source.read(len(self._buf), want)
            if not more:
                raise GGUFError(f"{self.source.name}: file ended inside the header")
            self._buf += more
            self._chunk = min(self._chunk * 2, 16 << 20)

    def take(self, n: int) -> bytes:
        self._need(n)
        data = self._buf[self.pos : self.pos + n]
        self.pos += n
        return data

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize("<" + fmt)
        return struct.unpack("<" + fmt, self.take(size))[0]

    def string(self) -> str:
        length = self.scalar("Q")
        if length > MAX_STRING:
            raise GGUFError(f"{self.source.name}: string of {length} bytes exceeds {MAX_STRING}")
        return self.take(length).decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype = self.scalar("I")
            count = self.scalar("Q")
            if count > MAX_ARRAY:
                raise GGUFError(f"{self.source.name}: array of {count} items exceeds {MAX_ARRAY}")
            if etype == _ARRAY:
                raise GGUFError(f"{self.source.name}: nested arrays are not allowed")
            if etype in _SCALARS and count > KEEP_ARRAY:
                self.take(count * struct.calcsize("<" + _SCALARS[etype]))  # skip, bounded
                return ArrayInfo(etype, count)
            items = [self.value(etype) for _ in range(count)]
            return items if count <= KEEP_ARRAY else ArrayInfo(etype, count)
        raise GGUFError(f"{self.source.name}: unknown metadata value type {vtype}")


def _tensor_nbytes(name: str, shape: tuple[int, ...], ttype: int, where: str) -> int:
    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
    except (ValueError, KeyError):
        raise GGUFError(f"{where}: tensor {name!r} has unknown type {ttype}") from None
    elements = 1
    for dim in shape:
        if dim < 1:
            raise GGUFError(f"{where}: tensor {name!r} has a zero dimension")
        elements *= dim
        if elements > MAX_ELEMENTS:
            raise GGUFError(f"{where}: tensor {name!r} is impossibly large")
    if shape[0] % block:
        raise GGUFError(f"{where}: tensor {name!r} row is not a whole number of blocks")
    return elements // block * type_size


def parse(source: ByteSource) -> GGUFHeader:
    """Parse and sanity-check a GGUF header; raises GGUFError naming what is wrong."""
    where = source.name
    r = _Reader(source)
    if source.size < 24 or r.take(4) != MAGIC:
        raise GGUFError(f"{where} is not a GGUF file (it does not start with 'GGUF')")
    version = r.scalar("I")
    if version not in SUPPORTED_VERSIONS:
        raise GGUFError(f"{where}: GGUF version {version} is not supported (2 or 3)")
    n_tensors, n_kv = r.scalar("Q"), r.scalar("Q")
    if n_tensors > MAX_TENSORS or n_kv > MAX_KV:
        raise GGUFError(f"{where}: implausible counts ({n_tensors} tensors, {n_kv} keys)")

    metadata: dict[str, Any] = {}
    for _ in range(n_kv):
        key = r.string()
        metadata[key] = r.value(r.scalar("I"))

    tensors: list[TensorInfo] = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.scalar("I")
        if not 1 <= n_dims <= MAX_DIMS:
            raise GGUFError(f"{where}: tensor {name!r} has {n_dims} dimensions")
        shape = tuple(r.scalar("Q") for _ in range(n_dims))
        ttype, offset = r.scalar("I"), r.scalar("Q")
        nbytes = _tensor_nbytes(name, shape, ttype, where)
        tensors.append(TensorInfo(name, shape, ttype, offset, nbytes))

    alignment = metadata.get("general.alignment", 32)
    if not isinstance(alignment, int) or alignment < 1 or alignment & (alignment - 1):
        raise GGUFError(f"{where}: alignment {alignment!r} is not a power of two")
    data_offset = -(-r.pos // alignment) * alignment
    data_size = source.size - data_offset
    for t in tensors:
        if t.offset % alignment:
            raise GGUFError(f"{where}: tensor {t.name!r} offset is not aligned")
        if t.offset + t.nbytes > data_size:
            raise GGUFError(
                f"{where}: tensor {t.name!r} lies past the end of the file "
                "(truncated download or crafted file)"
            )
    return GGUFHeader(where, version, source.size, metadata, tensors, data_offset, r.pos)


def read_local(path: Path) -> GGUFHeader:
    try:
        return parse(FileSource(path))
    except OSError as exc:
        raise GGUFError(f"cannot read {path}: {exc.strerror}") from None


def read_remote(url: str, client: httpx.Client) -> GGUFHeader:
    """Header of a remote GGUF via HTTP range requests; the weights are never fetched."""
    head = client.head(url, follow_redirects=True)
    head.raise_for_status()
    size = int(head.headers.get("x-linked-size") or head.headers["content-length"])
    return parse(HttpRangeSource(str(head.url), client, size))
