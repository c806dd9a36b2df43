"""The model catalog in profiles/catalog.toml: which models exist and what they are."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from assistantd.errors import ConfigError
from assistantd.planning.architecture import ModelArch
from assistantd.planning.estimate import BITS_PER_WEIGHT
from assistantd.resources import profiles_dir

DEFAULT_CATALOG = profiles_dir() / "catalog.toml"


@dataclass(frozen=True)
class CatalogModel:
    id: str
    family: str
    repo: str
    quants: tuple[str, ...]
    arch: ModelArch
    quality: float
    quality_source: str
    fim: bool = False
    starter: bool = False
    licence: str = ""
    # False for licences that forbid production or commercial use (Qwen Research, Mistral's
    # MNPL): profiles leave such a model out unless they name its family.
    licence_ok_by_default: bool = True
    roles: tuple[str, ...] = ("chat",)  # chat | agentic | autocomplete | embeddings
    quality_estimated: bool = False  # no published score on the ranking's harness
    arch_estimated: bool = False  # numbers from model cards, not a GGUF header: estimates
    sources: tuple[str, ...] = ()


def load_catalog(path: Path = DEFAULT_CATALOG) -> list[CatalogModel]:
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"model catalog {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"model catalog {path} is not valid TOML: {exc}") from None
    models = []
    for index, entry in enumerate(data.get("model", [])):
        models.append(_entry(entry, f"{path} model #{index + 1}"))
    if not models:
        raise ConfigError(f"model catalog {path} lists no [[model]] entries")
    return models


def _entry(entry: dict[str, Any], where: str) -> CatalogModel:
    try:
        quants = tuple(q.upper() for q in entry["quants"])
        unknown = [q for q in quants if q not in BITS_PER_WEIGHT]
        if unknown:
            raise ConfigError(f"{where}: unknown quant type(s) {', '.join(unknown)}")
        return CatalogModel(
            id=entry["id"],
            family=entry["family"],
            repo=entry["repo"],
            quants=quants,
            arch=ModelArch(**entry["arch"]),
            quality=float(entry["quality"]),
            quality_source=entry["quality_source"],
            fim=bool(entry.get("fim", False)),
            starter=bool(entry.get("starter", False)),
            licence=str(entry.get("licence", "")),
            licence_ok_by_default=bool(entry.get("licence_ok_by_default", True)),
            roles=tuple(entry.get("roles", ("chat",))),
            quality_estimated=bool(entry.get("quality_estimated", False)),
            arch_estimated=bool(entry.get("arch_estimated", False)),
            sources=tuple(entry.get("sources", ())),
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{where}: missing or wrong field ({exc})") from None
