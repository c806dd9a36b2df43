"""The joint plan picks what an expert would, per role, on the described machines of
tests/machines.toml (each row with its source), and autocomplete's model never shrinks as a
machine gets more VRAM (roles.py's rule 3). Planned with the shipped balanced profile and
catalog, as `assistantd plan` does."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest

from assistantd.planning.catalog import load_catalog
from assistantd.planning.estimate import GiB
from assistantd.planning.hardware import GPU, Machine
from assistantd.planning.profiles import Profile, active_profile
from assistantd.planning.roles import RolesPlan, make_role_plans
from assistantd.planning.sharing import MOSTLY, WHOLLY, fim_size, on_card
from assistantd.settings import load_settings

TABLE = tomllib.loads((Path(__file__).parent / "machines.toml").read_text())
ROWS: list[dict[str, Any]] = TABLE["machine"]
SETTINGS = load_settings([])
PROFILE = active_profile(SETTINGS, "balanced")
CATALOG = load_catalog()
DEDICATED = {m.id for m in CATALOG if m.fim and "chat" not in m.roles}


def machine_of(row: dict[str, Any]) -> Machine:
    ram = int(row["ram_gib"] * GiB)
    available = int(row["ram_available_gib"] * GiB) if "ram_available_gib" in row else None
    if "apple" in row:
        chip = GPU("apple", row["apple"], ram)
        return Machine(ram_bytes=ram, ram_available_bytes=available, cpu_cores=10,
                       cpu_flags=["neon"], gpu_offload=True, unified_memory=True,
                       gpus=[chip])  # fmt: skip
    gpus = [
        GPU(g["vendor"], g["name"], int(g["vram_gib"] * GiB), memory_bandwidth_gbs=g.get(
            "bandwidth_gbs"), fp16_tflops=g.get("tflops"), backend=g.get("backend"))
        for g in row.get("gpus", [])
    ]  # fmt: skip
    return Machine(ram_bytes=ram, ram_available_bytes=available, cpu_cores=8, cpu_flags=["avx2"],
                   memory_bandwidth_gbs=row.get("bandwidth_gbs", 60), gpu_offload=bool(gpus),
                   gpus=gpus)  # fmt: skip


def planned(machine: Machine, profile: Profile = PROFILE) -> RolesPlan:
    return make_role_plans(CATALOG, profile, machine, n_slots=SETTINGS.slots)


@pytest.mark.parametrize("row", ROWS, ids=[row["name"] for row in ROWS])
def test_the_planner_matches_the_table(row: dict[str, Any]) -> None:
    result = planned(machine_of(row))
    chat, auto = result.roles["chat"], result.roles["autocomplete"]
    assert chat.chosen is not None and auto.chosen is not None, (row["source"], result.notes)
    assert chat.chosen.model in row["chat"], (row["source"], chat.chosen.label, chat.reason)
    assert auto.chosen.model in row["autocomplete"], (row["source"], auto.chosen.label, auto.reason)
    place = on_card(chat.chosen, result.budget)
    want = row.get("chat_on_gpu")
    if want == "wholly":
        assert place == WHOLLY, (row["source"], chat.chosen.reason)
    elif want == "mostly":
        assert place >= MOSTLY, (row["source"], chat.chosen.reason)
    elif want == "experts":
        assert chat.chosen.experts_in_ram, (row["source"], chat.chosen.reason)
    elif want == "none":
        assert chat.chosen.vram_bytes == 0
    if "ram_left_gib" in row:
        assert row["ram_gib"] * GiB - result.budget.ram_bytes >= row["ram_left_gib"] * GiB
    # Everything planned fits the budget, every role at once.
    assert result.estimated_bytes <= result.budget.ram_bytes + result.budget.vram_bytes


def test_the_table_is_broad_and_every_row_has_a_source() -> None:
    assert len(ROWS) >= 20
    cited = set(TABLE["sources"])
    for row in ROWS:
        assert row["source"] and any(name in row["source"] for name in cited), row["name"]
        assert set(row["chat"]) | set(row["autocomplete"]) <= {m.id for m in CATALOG}

    def vram(row: dict[str, Any]) -> list[int]:
        return [g["vram_gib"] for g in row.get("gpus", [])]

    kinds = {
        "12 GB": any(vram(r) == [12] for r in ROWS),
        "16 GB": any(vram(r) == [16] for r in ROWS),
        "24 GB": any(vram(r) == [24] for r in ROWS),
        "two cards": any(len(vram(r)) == 2 for r in ROWS),
        "4 GB": any(vram(r) == [4] for r in ROWS),
        "Apple M": any(r.get("apple", "").startswith("Apple M") for r in ROWS),
        "AMD": any(g["vendor"] == "amd" for r in ROWS for g in r.get("gpus", [])),
        "Intel": any(g["vendor"] == "intel" for r in ROWS for g in r.get("gpus", [])),
    }
    assert all(kinds.values()), kinds


def test_near_identical_12gb_cards_get_the_same_tiers() -> None:
    """The miss this table was made for: one 12 GB card got a 7B FIM model, the next the
    0.5B. Bandwidth and compute within a card's range do not move the choice."""
    choices = set()
    for bandwidth, tflops in ((340, 45), (360, 51), (380, 56), (504, 117), (672, 124)):
        gpu = GPU("nvidia", "NVIDIA GeForce RTX 3060", 12 * GiB, memory_bandwidth_gbs=bandwidth,
                  fp16_tflops=tflops)  # fmt: skip
        machine = Machine(ram_bytes=32 * GiB, cpu_cores=8, cpu_flags=["avx2"],
                          memory_bandwidth_gbs=60, gpu_offload=True, gpus=[gpu])  # fmt: skip
        result = planned(machine)
        auto = result.roles["autocomplete"].chosen
        choices.add(auto.model if auto else None)
    assert choices == {"qwen2.5-coder-1.5b-base"}


def _with_profile(name: str) -> Profile:
    return active_profile(SETTINGS, name)


@pytest.mark.parametrize("profile_name", ["balanced", "quality", "speed"])
@pytest.mark.parametrize("card", ["NVIDIA GeForce RTX 3060", "NVIDIA GeForce RTX 4090"])
def test_autocomplete_never_shrinks_as_vram_grows(profile_name: str, card: str) -> None:
    """One card model, its VRAM swept from 4 to 48 GB: autocomplete's model (compared by tier:
    off < a chat model with FIM tokens < a dedicated FIM model, then by size) never shrinks."""
    profile = _with_profile(profile_name)
    seen: list[tuple[int, str]] = []
    previous = fim_size(None, DEDICATED)
    for vram in range(4, 49, 2):
        gpu = GPU("nvidia", card, vram * GiB)
        machine = Machine(ram_bytes=64 * GiB, cpu_cores=8, cpu_flags=["avx2"],
                          memory_bandwidth_gbs=60, gpu_offload=True, gpus=[gpu])  # fmt: skip
        auto = planned(machine, profile).roles["autocomplete"].chosen
        seen.append((vram, auto.label if auto else "off"))
        size = fim_size(auto, DEDICATED)
        assert size >= previous, seen
        previous = size
    assert previous > fim_size(None, DEDICATED)  # on 48 GB it is not off


def test_two_cards_never_give_a_smaller_autocomplete_model_than_one() -> None:
    sizes = []
    for n in (1, 2, 3):
        gpus = [GPU("nvidia", "NVIDIA GeForce RTX 3090", 24 * GiB) for _ in range(n)]
        machine = Machine(ram_bytes=128 * GiB, cpu_cores=16, cpu_flags=["avx2"],
                          memory_bandwidth_gbs=80, gpu_offload=True, gpus=gpus)  # fmt: skip
        sizes.append(fim_size(planned(machine).roles["autocomplete"].chosen, DEDICATED))
    assert sizes == sorted(sizes)


def test_more_unified_memory_never_gives_a_smaller_autocomplete_model() -> None:
    sizes = []
    for ram in (8, 16, 24, 32, 48, 64, 96, 128):
        chip = GPU("apple", "Apple M3 Max", ram * GiB)
        machine = Machine(ram_bytes=ram * GiB, cpu_cores=12, gpu_offload=True,
                          unified_memory=True, gpus=[chip])  # fmt: skip
        sizes.append(fim_size(planned(machine).roles["autocomplete"].chosen, DEDICATED))
    assert sizes == sorted(sizes)


def test_a_chat_model_wholly_on_the_gpu_stays_there_beside_autocomplete() -> None:
    """Rule 3: where chat alone runs wholly on the card, the joint plan keeps it wholly there;
    where it is split, autocomplete takes no more of the card than its claim."""
    share = PROFILE.roles.autocomplete.memory_share
    for vram in range(8, 49, 4):
        gpu = GPU("nvidia", "NVIDIA GeForce RTX 4090", vram * GiB)
        machine = Machine(ram_bytes=64 * GiB, cpu_cores=8, cpu_flags=["avx2"],
                          memory_bandwidth_gbs=60, gpu_offload=True, gpus=[gpu])  # fmt: skip
        result = planned(machine)
        alone, chat = result.chat.chosen, result.roles["chat"].chosen
        auto = result.roles["autocomplete"].chosen
        assert alone is not None and chat is not None and auto is not None
        assert on_card(chat, result.budget) >= on_card(alone, result.budget), vram
        if chat.key != alone.key or chat.n_cpu_moe != alone.n_cpu_moe:
            assert auto.vram_bytes <= share * result.budget.vram_bytes, vram


def test_the_ram_reserve_scales_with_the_machine() -> None:
    """The profile states it: what the OS, an IDE and a browser hold is a share of RAM, counted
    even before they run; on 16 GB that is more than the fixed 2 GB of old."""
    memory = PROFILE.memory
    assert memory.ram_reserve_share > 0
    left = {}
    for ram in (8, 16, 32, 64):
        result = planned(Machine(ram_bytes=ram * GiB, cpu_cores=8))
        left[ram] = ram * GiB - result.budget.ram_bytes
    assert left[16] > 2 * GiB + memory.ram_reserve
    assert list(left.values()) == sorted(left.values())  # bigger machines leave more
    busy = planned(Machine(ram_bytes=16 * GiB, ram_available_bytes=9 * GiB, cpu_cores=8))
    assert busy.budget.ram_bytes == 9 * GiB - memory.ram_reserve  # measured, counted once
