"""How chat and autocomplete share one machine (roles.py states the rule these serve): how much
of the card a chat model holds, chat's choice on a small card, autocomplete's claim on the
budget, and the order of the FIM tiers."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import replace

from assistantd.planning.plan_types import Budget, Candidate, DeviceBudget, Plan

# The smallest chat model worth moving onto a small card for: the 3-4B class that guides for
# 4 GB cards name (Qwen3/Gemma 3 4B, Phi-4-mini at Q4, fully on the GPU).
CARD_CHAT_MIN_PARAMS_B = 3.0

WHOLLY, MOSTLY, SOME, NONE = 3, 2, 1, 0  # how much of a model the card holds


def discrete(budget: Budget) -> bool:
    """A card with its own memory is in the budget (not Apple's one pool, not CPU-only)."""
    return not budget.unified and budget.vram_bytes > 0


def on_card(c: Candidate, budget: Budget) -> int:
    """WHOLLY on the GPU, MOSTLY (more bytes in VRAM than in RAM), SOME, or NONE. Without a
    discrete card every candidate is NONE, so the comparisons below change nothing."""
    if not discrete(budget) or c.vram_bytes <= 0:
        return NONE
    if c.placement == "gpu":
        return WHOLLY
    return MOSTLY if c.vram_bytes >= c.ram_bytes else SOME


def chat_pick(
    plan: Plan,
    starters: Collection[str],
    *,
    at_least: int = NONE,
    allow_starter: bool = True,
    model: str | None = None,
) -> Candidate | None:
    """Chat's choice from its ladder (roles.py rule 1): the best rung the card holds at least
    `at_least` of (of `model` only, when given), unless that runs mostly from RAM and misses
    the TTFT target while a model of 3B or more runs mostly on the card and meets it."""
    ladder = [
        c
        for c in plan.ladder
        if on_card(c, plan.budget) >= at_least
        and (allow_starter or c.model not in starters)
        and (model is None or c.model == model)
    ]
    if not ladder:
        return None
    top = ladder[0]
    if on_card(top, plan.budget) >= MOSTLY or top.meets_ttft or not discrete(plan.budget):
        return top
    card = (
        c
        for c in ladder
        if on_card(c, plan.budget) >= MOSTLY
        and c.meets_ttft
        and c.meets_target
        and not c.lossy
        and c.model not in starters
        and c.params_b >= CARD_CHAT_MIN_PARAMS_B
    )
    return next(card, top)


def small_card_reason(chosen: Candidate, plan: Plan) -> str | None:
    """Why chat is not its ladder's first rung (rule 1's small-card case), or None."""
    top = plan.chosen
    if top is None or top.key == chosen.key:
        return None
    return (
        f"the best model that runs on the card and meets the TTFT target: {top.label} runs "
        f"mostly from RAM, predicted TTFT {top.predicted_ttft_ms / 1000:.1f} s"
    )


def claim(budget: Budget, share: float) -> Budget:
    """Autocomplete's claim: `share` of the VRAM (each card's share of it), of the Metal working
    set and RAM on Apple, of the RAM without a GPU."""
    if budget.unified:
        return replace(
            budget,
            ram_bytes=int(budget.ram_bytes * share),
            gpu_working_set_bytes=int(budget.gpu_working_set_bytes * share),
        )
    if budget.vram_bytes > 0:
        devices = tuple(DeviceBudget(d.name, int(d.bytes * share)) for d in budget.devices)
        return replace(budget, vram_bytes=int(budget.vram_bytes * share), devices=devices)
    return replace(budget, ram_bytes=int(budget.ram_bytes * share))


def fim_rungs(plan: Plan, whole: Budget) -> list[Candidate]:
    """The rungs of an autocomplete ladder that may serve: wholly on the GPU when the machine's
    budget (`whole`) has one, at a quant not too lossy for its size; those meeting the TTFT and
    decode targets, else the fastest."""
    rungs = [
        c for c in plan.ladder if not c.lossy and (not discrete(whole) or c.placement == "gpu")
    ]
    meeting = [c for c in rungs if c.meets_ttft and c.meets_target]
    if meeting:
        return meeting
    return sorted(rungs, key=lambda c: c.predicted_ttft_ms)[:1]


def tier(c: Candidate, dedicated: Collection[str]) -> tuple[bool, float]:
    """Sort key, best tier first: a dedicated FIM model, then the bigger model."""
    return (c.model not in dedicated, -c.params_b)


def fim_size(c: Candidate | None, dedicated: Collection[str]) -> tuple[int, int, float]:
    """How big an autocomplete choice is, for comparing machines (bigger tuple: bigger tier)."""
    if c is None:
        return (0, 0, 0.0)
    return (1, int(c.model in dedicated), c.params_b)
