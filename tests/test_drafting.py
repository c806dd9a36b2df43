"""Speculative decoding in the plan (planning/drafting.py): the gain predicted per rung, and
autocomplete's model drafting for chat where it is a smaller model of chat's family, fits in
what the roles leave and is predicted to pay; then through a real daemon that planned it.

Described machines stand in for GPUs (none exists here) with the shipped catalog; the CPU
cases and the daemon use the real test models: SmolLM2 requantized to Q8_0 for chat, its
Q4_1 file with FIM tokens for autocomplete (one vocabulary)."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistantd.planning.catalog import DEFAULT_CATALOG, load_catalog
from assistantd.planning.estimate import GiB
from assistantd.planning.hardware import Machine
from assistantd.planning.predict import DENSE, best_gain, edit_gain, routing_of, step_gain
from assistantd.planning.profiles import parse
from assistantd.planning.roles import RolesPlan, make_role_plans
from tests.support.daemons import Daemon, run_ctl
from tests.support.roles import CHAT_REPO, SMOL_FIM_REPO, catalog_entry
from tests.test_roles import MACHINE, wait_roles_serving
from tests.test_roles import PROFILE as ROLES_PROFILE
from tests.test_speculation import EDIT, answer

QWEN_CODER = '[models]\nfamilies = ["qwen2.5-coder"]\n'


def _card(name: str, vram_gib: int, ram_gib: int = 128) -> Machine:
    gpu = {"vendor": "nvidia", "name": name, "vram_bytes": vram_gib * GiB}
    return Machine.from_json(
        {"ram_bytes": ram_gib * GiB, "cpu_cores": 16, "gpu_offload": True, "gpus": [gpu]}
    )


def _shipped(machine: Machine, profile: str = QWEN_CODER) -> RolesPlan:
    return make_role_plans(
        load_catalog(DEFAULT_CATALOG), parse(profile, Path("p.toml"), "p"), machine, n_slots=3
    )


def test_the_gain_model_counts_kept_guesses_against_the_longer_step() -> None:
    # Every guess kept, a verify batch that costs no more than one token, a free draft: each
    # step yields 1 + d tokens.
    assert step_gain(1.0, 4, 0.01, 0.0, 0.0) == pytest.approx(5.0)
    # Nothing kept: every guess is a loss.
    assert step_gain(0.0, 1, 0.01, 0.004, 0.0) < 1.0
    # This machine's SmolLM2 (100 tok/s decode, 250 tok/s prompts): n-gram guesses on an edit
    # measured 1.33x (scripts/bench_speculation.py); a draft model as big as the model costs
    # about a step per guess, and measured 0.46x.
    assert 1.1 < edit_gain(100, 250) < 1.5
    assert best_gain(0.9, 0.01, 0.004, 0.009)[0] < 1.0


def test_an_moe_verify_batch_pays_for_the_experts_its_guesses_route_to() -> None:
    """On a bandwidth-bound card a dense model's verify batch costs about one step, so an edit's
    guesses pay ~3x; each guessed token of Qwen3-Coder-30B-A3B (8 of 128 experts) reads experts
    the first did not, most of what a step reads, so they pay far less; on a CPU none at all."""
    models = {m.id: m for m in load_catalog(DEFAULT_CATALOG)}
    moe = routing_of(models["qwen3-coder-30b-a3b-instruct"].arch)
    assert routing_of(models["qwen2.5-coder-7b-instruct"].arch) == DENSE
    assert moe.used == 8 / 128 and 0.4 < moe.share < 0.7  # the routed experts' share
    read = 16 * (1 - (15 / 16) ** 5)  # experts 5 tokens read, over what one token reads
    assert moe.extra_s(0.01, 4) == pytest.approx(0.01 * moe.share * (read - 1))
    assert edit_gain(60, 3000) > 2.5  # dense, on a GPU
    assert 1.0 < edit_gain(60, 3000, moe) < 1.5
    assert edit_gain(15, 60, moe) <= 1.0 < edit_gain(15, 60)  # on a CPU


def test_a_big_card_loads_autocompletes_model_as_chats_draft_and_counts_its_memory() -> None:
    plan = _shipped(_card("NVIDIA A100 80GB", 80))
    chat, auto = plan.roles["chat"].chosen, plan.roles["autocomplete"].chosen
    spec = plan.speculation
    assert chat and auto and spec and spec.use_draft, spec
    assert spec.draft_model == auto.model and auto.params_b < chat.params_b
    assert spec.draft_gain >= 1.1 and 1 <= spec.draft_tokens <= 8
    assert "drafts for chat" in spec.why
    workers = sum(c.chosen.estimated_bytes for c in plan.workers if c.chosen)
    assert spec.vram_bytes > auto.file_bytes  # its weights, and its KV for chat's 3 slots
    assert plan.estimated_bytes == workers + spec.ram_bytes + spec.vram_bytes
    assert plan.estimated_bytes <= plan.budget.ram_bytes + plan.budget.vram_bytes
    assert plan.to_json()["speculation"]["use_draft"] is True
    assert plan.to_json()["prompt_cache_bytes"] == 512 << 20  # plenty of RAM is left
    # The same pair where chat takes the card: no room for a draft, and the plan says so.
    full = _shipped(_card("NVIDIA GeForce RTX 4090", 24, ram_gib=64))
    assert full.speculation and not full.speculation.use_draft
    assert "needs" in full.speculation.why
    assert full.estimated_bytes == sum(c.chosen.estimated_bytes for c in full.workers if c.chosen)


def test_off_and_ngram_load_no_draft_and_recurrent_models_are_never_speculated_on() -> None:
    for mode in ("off", "ngram"):
        plan = _shipped(_card("NVIDIA A100 80GB", 80), f'speculative = "{mode}"\n' + QWEN_CODER)
        assert plan.speculation and not plan.speculation.use_draft
        assert f"speculative = {mode}" in plan.speculation.why
    # The shipped profile's pick on a 24 GB card is a hybrid (Gated DeltaNet) model.
    hybrid = _shipped(_card("NVIDIA GeForce RTX 4090", 24, ram_gib=64), "")
    chat = hybrid.roles["chat"].chosen
    assert chat and hybrid.speculation and "recurrent" in hybrid.speculation.why
    assert chat.edit_gain == 1.0 and not hybrid.speculation.use_draft


def _pair_catalog(path: Path, chat: Path, draft: Path) -> Path:
    path.write_text(
        catalog_entry("smollm2-135m-instruct", "smollm2", CHAT_REPO, "Q8_0", chat, 10.0, False,
                      ["chat"])
        + catalog_entry("smollm2-fim", "smollm2", SMOL_FIM_REPO, "Q4_1", draft, 20.0, True,
                        ["autocomplete"])
    )  # fmt: skip
    return path


def _profile(mode: str) -> str:
    """The roles tests' profile (4 GiB, targets every rung meets) with `speculative` set."""
    return f'speculative = "{mode}"\n' + ROLES_PROFILE.format(budget='"4GiB"', ac_ttft=100000)


def test_on_this_cpu_a_draft_is_predicted_a_loss_unless_the_profile_asks_for_it(
    quant_ladder: dict[str, Path], fim_model: Path, tmp_path: Path
) -> None:
    catalog = load_catalog(_pair_catalog(tmp_path / "c.toml", quant_ladder["Q8_0"], fim_model))
    plans = {
        mode: make_role_plans(
            catalog, parse(_profile(mode), Path("p.toml"), "p"), MACHINE, n_slots=2
        )
        for mode in ("auto", "draft")
    }
    auto, forced = plans["auto"].speculation, plans["draft"].speculation
    assert auto and forced and auto.draft_model == "smollm2-fim"
    assert auto.draft_gain < 1.0 and not auto.use_draft and "would not pay" in auto.why
    assert forced.use_draft and "speculative = draft" in forced.why


def test_a_daemon_loads_the_planned_draft_into_chats_worker(
    start_daemon, hub, quant_ladder: dict[str, Path], fim_model: Path, tmp_path: Path
) -> None:
    hub.add(CHAT_REPO, {"SmolLM2-Q8_0.gguf": quant_ladder["Q8_0"]})
    hub.add(SMOL_FIM_REPO, {"SmolLM2-fim-Q4_1.gguf": fim_model})
    profile = tmp_path / "mine.toml"
    profile.write_text(_profile("draft"))
    catalog = _pair_catalog(tmp_path / "catalog.toml", quant_ladder["Q8_0"], fim_model)
    daemon: Daemon = start_daemon(
        None,
        HF_ENDPOINT=hub.url,
        HF_HUB_CACHE=str(tmp_path / "hf"),
        ASSISTANT_CATALOG=str(catalog),
        ASSISTANT_PROFILE=str(profile),
        ASSISTANT_SLOTS="2",
        ASSISTANT_THREADS="1",
    )
    roles = wait_roles_serving(daemon)["roles"]
    assert roles["autocomplete"]["served_by"] == "autocomplete"
    before = run_ctl("--url", daemon.url, "status").stdout  # the plan's word, before any guess
    assert "nothing drafted yet; autocomplete's smollm2-fim Q4_1 drafts for chat" in before
    answer(daemon, EDIT)
    status = daemon.status()
    spec = status["speculation"]
    assert spec["draft_model"] == "SmolLM2-fim-Q4_1.gguf" and spec["mode"] == "draft"
    assert spec["draft_tokens"] > 0 and "drafts for chat" in spec["plan"]
    planned = status["provision"]["plan"]["speculation"]
    assert planned["use_draft"] and planned["draft_model"] == "smollm2-fim"
    assert planned["ram_bytes"] > 0  # counted in the plan (on this CPU: RAM)
    shown = run_ctl("--url", daemon.url, "status").stdout
    assert "the draft model SmolLM2-fim-Q4_1.gguf" in shown, shown
