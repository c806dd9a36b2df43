"""The planner picks what an expert would (late 2026): a table of described machines, each with
the chat model(s) and quant class an expert would run there and the source of that expectation.
Planned with the shipped balanced profile and catalog, as `assistantd plan` does."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from assistantd.planning.catalog import load_catalog
from assistantd.planning.estimate import BITS_PER_WEIGHT, GiB
from assistantd.planning.hardware import GPU, Machine
from assistantd.planning.planner import Plan, allowed_models, make_plan, plan
from assistantd.planning.profiles import Models, active_profile
from assistantd.settings import load_settings

PROFILE = active_profile(load_settings([]), "balanced")
CATALOG = load_catalog()
FOUR_BIT = {"Q4_K_M", "Q4_K_S", "IQ4_XS", "IQ4_NL", "Q4_0", "MXFP4"}
FIVE_PLUS = {"Q5_K_M", "Q5_K_S", "Q6_K", "Q8_0"}
FOUR_PLUS = FOUR_BIT | FIVE_PLUS
SIX_PLUS = {"Q6_K", "Q8_0"}
# research = tests/data/research/machines.md (issue #12), rows as numbered there; it cites the
# llama.vscode README's per-VRAM table, the gpt-oss guide (llama.cpp discussion #15396) and the
# published runs in speeds.md. Where it offers two picks, both are accepted. "35B-A3B" is
# accepted wherever the research names it for a like machine: it scores above Qwen3-Coder-Next
# and gpt-oss-120b on SWE-bench Verified (73.4 vs 70.6 / 62.4) and is the faster of the three.


def cpu(ram: int, bandwidth: float, cores: int = 8) -> Machine:
    """A CPU-only box with a quarter of its RAM taken by the OS, the editor and a browser."""
    return Machine(
        ram_bytes=ram * GiB, ram_available_bytes=int(ram * GiB * 0.75), cpu_cores=cores,
        cpu_flags=["avx2"], memory_bandwidth_gbs=bandwidth,
    )  # fmt: skip


def mac(chip: str, ram: int) -> Machine:
    return Machine(
        ram_bytes=ram * GiB, ram_available_bytes=int(ram * GiB * 0.75), cpu_cores=8,
        gpu_offload=True, unified_memory=True, gpus=[GPU("apple", chip, ram * GiB)],
    )  # fmt: skip


def nvidia(card: str, vram: int, ram: int = 32, n: int = 1, offload: bool = True) -> Machine:
    return Machine(
        ram_bytes=ram * GiB, ram_available_bytes=int(ram * GiB * 0.75), cpu_cores=8,
        cpu_flags=["avx2"], memory_bandwidth_gbs=60, gpu_offload=offload,
        gpus=[GPU("nvidia", f"NVIDIA GeForce {card}", vram * GiB) for _ in range(n)],
    )  # fmt: skip


@dataclass(frozen=True)
class Expect:
    label: str
    machine: Machine
    models: frozenset[str]
    quants: frozenset[str]
    source: str
    experts_in_ram: bool | None = None  # None: either
    placement: str | None = None


def expect(
    label: str, machine: Machine, models: set[str], quants: set[str], source: str, **kw: object
) -> Expect:
    return Expect(label, machine, frozenset(models), frozenset(quants), source, **kw)  # type: ignore[arg-type]


A3B, DENSE27, NEXT = "qwen3.6-35b-a3b", "qwen3.6-27b", "qwen3-coder-next"
TABLE = [
    expect("8 GB CPU laptop, 4 cores DDR4", cpu(8, 40, 4),
           {"qwen3.5-2b", "qwen2.5-coder-1.5b-instruct"}, SIX_PLUS,
           "research row 1 (Qwen3.5-2B or Qwen2.5-Coder-1.5B Q8_0; llama.vscode CPU-only: Q8_0); "
           "issue #12: ≤3B at Q8_0/Q6_K", placement="cpu"),
    expect("16 GB CPU desktop, DDR5", cpu(16, 70), {"qwen3.5-4b"}, FOUR_PLUS,
           "research row 2: Qwen3.5-4B Q4_K_M; gpt-oss-20b too tight in 16 GB", placement="cpu"),
    expect("32 GB CPU desktop", cpu(32, 70), {"gpt-oss-20b", A3B}, FOUR_PLUS,
           "research row 3: MoE with ~3B active (gpt-oss-20b ~20 tok/s all-CPU, speeds #11)",
           placement="cpu"),
    expect("64 GB CPU workstation, 16 cores", cpu(64, 70, 16), {NEXT, A3B}, FOUR_PLUS,
           "research row 4: Qwen3-Coder-Next Q4 or Qwen3.6-35B-A3B Q5_K_M", placement="cpu"),
    expect("MacBook Air M1 8 GB", mac("Apple M1", 8), {"qwen3.5-4b"}, FOUR_PLUS,
           "research row 5: Qwen3.5-4B Q4_K_M within the ~5.3 GB Metal working set"),
    expect("MacBook Pro M2 Pro 16 GB", mac("Apple M2 Pro", 16), {"qwen3.5-9b"}, FOUR_PLUS,
           "research row 6: Qwen3.5-9B Q4_K_M; gpt-oss-20b does not fit with an IDE open"),
    expect("MacBook Pro M2 Pro 32 GB", mac("Apple M2 Pro", 32), {A3B, "gpt-oss-20b"}, FOUR_PLUS,
           "research row 7: Qwen3.6-35B-A3B Q4_K_M (~21 GB < 24 GB working set) or gpt-oss-20b"),
    expect("MacBook Pro M3 Max 64 GB", mac("Apple M3 Max", 64), {DENSE27, A3B}, FIVE_PLUS,
           "research row 8: Qwen3.6-27B Q6_K or Qwen3.6-35B-A3B Q8_0 (400 GB/s)"),
    expect("Mac Studio M3 Max 128 GB", mac("Apple M3 Max", 128),
           {"gpt-oss-120b", NEXT, A3B, DENSE27}, FIVE_PLUS | {"MXFP4"},
           "research row 9: gpt-oss-120b or Qwen3-Coder-Next Q6_K (3-5B active, 40-60 tok/s)"),
    expect("RTX 3060 12 GB + 32 GB RAM", nvidia("RTX 3060", 12), {"gpt-oss-20b", A3B}, FOUR_PLUS,
           "research row 10: gpt-oss-20b --n-cpu-moe 2 (64 tok/s, speeds #10) or 35B-A3B -ncmoe",
           experts_in_ram=True),
    expect("RTX 4060 8 GB + 32 GB RAM", nvidia("RTX 4060", 8), {A3B, "qwen3.5-9b"}, FOUR_PLUS,
           "research row 11: 35B-A3B with experts in RAM (3070 Ti 8 GB: 40.9 tok/s) or 9B on GPU"),
    expect("RTX 4070 12 GB + 32 GB RAM", nvidia("RTX 4070", 12), {"gpt-oss-20b", "qwen3.5-9b", A3B},
           FOUR_PLUS, "research row 12: gpt-oss-20b -ncmoe 2 or Qwen3.5-9B Q8_0; row 10 for A3B"),
    expect("RTX 4090 24 GB + 64 GB RAM", nvidia("RTX 4090", 24, 64), {DENSE27, A3B}, FOUR_PLUS,
           "research row 13: Qwen3.6-27B Q4 for quality, Qwen3.6-35B-A3B Q4_K_M for speed"),
    expect("RTX 5090 32 GB + 64 GB RAM", nvidia("RTX 5090", 32, 64),
           {DENSE27, "devstral-small-2-24b-instruct-2512", A3B}, FIVE_PLUS,
           "research row 14: Qwen3.6-27B Q6_K or Devstral Small 2 Q6_K; row 13 for A3B",
           placement="gpu"),
    expect("2x RTX 3090 (48 GB) + 64 GB RAM", nvidia("RTX 3090", 24, 64, n=2), {NEXT, DENSE27, A3B},
           FOUR_PLUS, "research row 15: Qwen3-Coder-Next Q4_K_M split or Qwen3.6-27B Q8_0"),
    expect("H100 80 GB + 256 GB RAM", nvidia("H100 80GB HBM3", 80, 256),
           {NEXT, "gpt-oss-120b", A3B, DENSE27}, FIVE_PLUS | {"MXFP4"},
           "research row 16: Qwen3-Coder-Next Q6_K or gpt-oss-120b MXFP4", placement="gpu"),
    expect("RTX 4090 with a CPU-only llama-cpp-python, 32 GB RAM",
           nvidia("RTX 4090", 24, 32, offload=False), {"gpt-oss-20b", A3B}, FOUR_PLUS,
           "research row 17: plan as a CPU machine of its RAM (row 3), tell the user to reinstall",
           placement="cpu"),
]  # fmt: skip


def planned(machine: Machine) -> Plan:
    return make_plan(CATALOG, PROFILE, machine)


@pytest.mark.parametrize("row", TABLE, ids=[row.label for row in TABLE])
def test_the_planner_picks_what_an_expert_would(row: Expect) -> None:
    result = planned(row.machine)
    chosen = result.chosen
    assert chosen is not None
    top = [(c.model, c.quant, c.placement) for c in result.ladder[:3]]
    assert chosen.model in row.models, (row.source, top)
    assert chosen.quant in row.quants, (row.source, top)
    if row.experts_in_ram is not None:
        assert chosen.experts_in_ram == row.experts_in_ram, (row.source, chosen.reason)
    if row.placement:
        assert chosen.placement == row.placement, (row.source, chosen.reason)


def test_the_table_is_broad_and_every_row_has_a_source() -> None:
    assert len(TABLE) >= 15 and all(row.source for row in TABLE)
    assert all(row.models < {m.id for m in CATALOG} for row in TABLE)  # no row accepts all
    chosen = {planned(row.machine).chosen.model for row in TABLE}  # type: ignore[union-attr]
    assert len(chosen) >= 4  # different machines get different models


def test_a_cpu_only_build_says_how_to_use_the_card() -> None:
    result = planned(nvidia("RTX 4090", 24, 32, offload=False))
    assert any("rebuild it with CUDA" in note for note in result.to_json()["notes"])


def test_small_models_run_at_six_bits_and_never_below_four() -> None:
    for row in TABLE:
        ladder = planned(row.machine).ladder
        for c in ladder:
            bits = BITS_PER_WEIGHT[c.quant]
            small = c.params_b <= 3.5 and c.model != "smollm2-135m-instruct"
            if (small and bits < 6.5) or (c.params_b < 8 and bits < 4):
                assert c.lossy and "loses too much" in c.reason, c
        fast = [c.lossy for c in ladder if c.meets_target and c.model != "smollm2-135m-instruct"]
        assert fast == sorted(fast) and not ladder[0].lossy  # lossy ones rank last in the tier


def test_quant_loss_grows_as_models_shrink() -> None:
    from assistantd.planning.quant_quality import retained

    for quant in ("Q4_K_M", "Q5_K_M", "Q3_K_M"):
        assert retained(quant, 1_000_000_000) < retained(quant, 8_000_000_000)
        assert retained(quant, 8_000_000_000) < retained(quant, 30_000_000_000)
    assert retained("Q8_0", 1_000_000_000) > 0.99


def test_non_commercial_models_are_left_out_unless_the_profile_names_them() -> None:
    ids = {m.id for m in allowed_models(CATALOG, PROFILE.models)}
    assert "qwen2.5-coder-3b-instruct" not in ids and "codestral-22b-v0.1" not in ids
    named = {m.id for m in allowed_models(CATALOG, Models(families=("qwen2.5-coder",)))}
    assert "qwen2.5-coder-3b-instruct" in named  # the old id keeps working when asked for
    for row in TABLE:
        for c in planned(row.machine).candidates:
            assert c.licence not in ("Qwen-Research", "MNPL-0.1"), c


def test_autocomplete_is_its_own_ranking_of_fim_models() -> None:
    machine = nvidia("RTX 4090", 24, 64)
    result = plan(
        allowed_models(CATALOG, PROFILE.models), machine,
        make_plan(CATALOG, PROFILE, machine).budget, n_ctx=4096, role="autocomplete",
    )  # fmt: skip
    assert result.chosen is not None
    fim = {m.id for m in CATALOG if m.fim}
    assert {c.model for c in result.candidates} <= fim | {"smollm2-135m-instruct"}
    assert result.chosen.model in {"qwen2.5-coder-7b-base", "qwen3-coder-30b-a3b-instruct"}


def test_plan_json_names_size_licence_and_both_speeds() -> None:
    data = planned(nvidia("RTX 4090", 24, 64)).to_json()
    for c in [data["chosen"], *data["candidates"]]:
        assert {"params_b", "active_params_b", "licence", "predicted_tok_s"} <= set(c)
        assert {"predicted_ttft_ms", "predicted_prompt_tok_s", "experts_in_ram"} <= set(c)
    chosen = data["chosen"]
    assert chosen["params_b"] >= chosen["active_params_b"] > 0 and chosen["licence"]
    assert 0 < chosen["predicted_ttft_ms"] < PROFILE.targets.ttft_p95_ms


def test_measured_decode_speed_replaces_the_prediction_in_ranking_and_ttft() -> None:
    machine = nvidia("RTX 4090", 24, 64)
    first = planned(machine).chosen
    assert first is not None
    key = (first.model, first.quant, first.placement)
    slow = make_plan(CATALOG, PROFILE, machine, speeds=_Fixed({key: 2.0})).candidates
    again = next(c for c in slow if (c.model, c.quant, c.placement) == key)
    assert again.speed_measured and again.predicted_tok_s == 2.0 and not again.meets_target
    assert again.predicted_ttft_ms > first.predicted_ttft_ms
    assert slow[0].key != first.key  # a measured-slow rung no longer leads


class _Fixed:
    def __init__(self, speeds: dict[tuple[str, str, str], float]) -> None:
        self.speeds = speeds

    def get(self) -> dict[tuple[str, str, str], float]:
        return self.speeds
