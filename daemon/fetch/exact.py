"""Exact numbers before any download: the short-listed candidates' GGUF headers, read over HTTP
range requests by the bounded parser (the weights are never fetched) and cached, so the plan
uses each file's own architecture and size instead of the catalog's estimates."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import httpx
from huggingface_hub import constants, hf_hub_url

from assistantd.errors import AssistantError, HubUnavailable
from assistantd.fetch import hub
from assistantd.files import atomic_write_text
from assistantd.planning.architecture import ModelArch, from_header
from assistantd.planning.catalog import CatalogModel
from assistantd.planning.gguf_header import read_remote
from assistantd.planning.plan_types import Candidate

SHORT_LIST = 4  # headers read per plan: the best few rungs, not the whole catalog


def _arch_path(cache: Path, sha256: str) -> Path:
    return cache / "assistantd-headers" / f"{sha256}.json"


def _header_arch(remote: hub.RemoteModel, cache: Path, endpoint: str) -> ModelArch:
    first = remote.files[0]
    saved = _arch_path(cache, first.sha256)
    if saved.exists():
        return ModelArch(**json.loads(saved.read_text()))
    url = hf_hub_url(remote.repo, first.name, revision=remote.commit, endpoint=endpoint)
    with httpx.Client(timeout=httpx.Timeout(15.0), follow_redirects=True) as client:
        arch = from_header(read_remote(url, client))
    atomic_write_text(saved, json.dumps(dataclasses.asdict(arch)))
    return arch


def refine(
    ladder: list[Candidate],
    catalog: dict[str, CatalogModel],
    cache: Path,
    *,
    endpoint: str | None = None,
) -> tuple[dict[str, CatalogModel], list[str]]:
    """Catalog entries with their file's own numbers, for the short-listed rungs; and notes.
    Offline, nothing changes: the plan keeps the catalog's numbers, marked as estimates."""
    endpoint = endpoint or constants.ENDPOINT
    refined: dict[str, CatalogModel] = {}
    read: list[str] = []
    for candidate in [c for c in ladder if not catalog[c.model].starter][:SHORT_LIST]:
        model = catalog[candidate.model]
        try:
            remote = hub.cached(cache, model.repo, candidate.quant) or hub.resolve(
                model.repo, candidate.quant, cache_dir=cache, endpoint=endpoint
            )
            if len(remote.files) != 1:
                continue  # a split GGUF: its first header lists only its own tensors
            arch = _header_arch(remote, cache, endpoint)
        except HubUnavailable:
            return refined, ["hub unreachable: the plan uses the catalog's numbers (estimates)"]
        except (AssistantError, httpx.HTTPError, ValueError) as exc:
            message = getattr(exc, "message", str(exc))
            read.append(f"{model.id} {candidate.quant}: header not read ({message})")
            continue
        refined[model.id] = dataclasses.replace(
            refined.get(model.id, model),
            arch=_with_catalog_facts(model.arch, arch),
            arch_estimated=False,
        )
        read.append(f"{model.id} {candidate.quant}: planned from its GGUF header")
    return refined, read


def _with_catalog_facts(catalog_arch: ModelArch, header_arch: ModelArch) -> ModelArch:
    """The header's numbers, plus what a header may not say but the catalog knows (the
    active parameters of an MoE)."""
    if catalog_arch.n_active_params and not header_arch.n_active_params:
        return dataclasses.replace(header_arch, n_active_params=catalog_arch.n_active_params)
    return header_arch
