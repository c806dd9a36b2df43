"""Exact before download: the short-listed rungs' GGUF headers are read over HTTP range
requests from a hub-compatible server and replace the catalog's estimates; offline, the
catalog's numbers stay, marked as estimates."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from assistantd.fetch import exact
from assistantd.planning.architecture import from_header
from assistantd.planning.catalog import load_catalog
from assistantd.planning.estimate import GiB
from assistantd.planning.gguf_header import read_local
from assistantd.planning.hardware import Machine
from assistantd.planning.planner import compute_budget, plan
from tests.support.daemons import free_port
from tests.support.hub import HubServer
from tests.support.ladder import hub_repos, write_catalog

MACHINE = Machine(ram_bytes=16 * GiB, cpu_cores=2, memory_bandwidth_gbs=20.0)


def _catalog_with_a_wrong_arch(tmp_path: Path, models: dict[str, Path]) -> dict:
    """The test ladder's catalog, with SmolLM2's layer count made wrong on purpose."""
    entries = {m.id: m for m in load_catalog(write_catalog(tmp_path / "c.toml", models))}
    smol = entries["smollm2-135m-instruct"]
    entries[smol.id] = dataclasses.replace(
        smol, arch=dataclasses.replace(smol.arch, n_layer=99), arch_estimated=True
    )
    return entries


def _ladder(entries: dict) -> list:
    budget = compute_budget(MACHINE, ram_reserve=0, vram_reserve=0)
    return plan(list(entries.values()), MACHINE, budget, n_ctx=2048).ladder


def test_headers_replace_the_catalog_numbers_and_are_cached(
    hub: HubServer, models: dict[str, Path], tmp_path: Path
) -> None:
    for repo, files in hub_repos(models).items():
        hub.add(repo, files)
    entries = _catalog_with_a_wrong_arch(tmp_path, models)
    cache = tmp_path / "hf"
    refined, notes = exact.refine(_ladder(entries), entries, cache, endpoint=hub.url)
    truth = from_header(read_local(models["smollm2"]))
    assert refined["smollm2-135m-instruct"].arch == truth
    assert refined["smollm2-135m-instruct"].arch_estimated is False
    assert any("planned from its GGUF header" in n for n in notes)
    hub.close()  # the hub goes away: the cached headers still answer
    again, _ = exact.refine(_ladder(entries), entries, cache, endpoint=hub.url)
    assert again["smollm2-135m-instruct"].arch == truth


def test_offline_keeps_the_catalog_numbers(models: dict[str, Path], tmp_path: Path) -> None:
    entries = _catalog_with_a_wrong_arch(tmp_path, models)
    closed = f"http://127.0.0.1:{free_port()}"
    refined, notes = exact.refine(_ladder(entries), entries, tmp_path / "hf", endpoint=closed)
    assert refined == {}
    assert notes == ["hub unreachable: the plan uses the catalog's numbers (estimates)"]
