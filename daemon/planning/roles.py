"""The joint plan: a model per role (chat, autocomplete, embeddings) within one memory budget.

Autocomplete is latency-bound and needs FIM tokens; chat wants the best model that meets its
targets; embeddings come last. The rule, so a person can predict it:

1. Chat's choice with the whole budget is the reference. Small cards: when that model runs
   mostly from RAM (on the CPU, or split with more of its bytes in RAM than on the card) and
   misses the profile's TTFT target, chat takes the best-ranked model of 3B parameters or more
   that runs mostly on the card and meets the TTFT and decode targets, if there is one.
2. If chat's model is also autocomplete's first choice, it serves both roles (slots of one
   worker, no second copy of the weights).
3. Otherwise autocomplete gets the best FIM tier that fits beside chat without costing chat its
   placement. Tiers, best first: dedicated FIM models (autocomplete is their only role: the
   Qwen2.5-Coder base models, 7B > 3B > 1.5B > 0.5B as llama.vscode's tiers by VRAM), then chat
   models with FIM tokens, each by size. A rung counts if it meets autocomplete's TTFT and
   decode targets (the fastest, when none does), is not a quant too lossy for its size, and
   with a GPU runs wholly on it. The biggest tier that fits beside chat wins, where it fits
   a. in what chat's choice leaves: chat keeps its choice; or
   b. within autocomplete's claim, `[roles.autocomplete] memory_share` of the budget (of the
      VRAM; on Apple of the Metal working set; without a GPU of the RAM): chat is re-planned
      in what the FIM model leaves and keeps its place. A chat model wholly on the GPU stays
      wholly on it (a smaller quant or model if need be); one split across GPU and RAM stays
      as much on the card (mostly on it stays mostly on it; partly never becomes CPU-only)
      and gives up no more of the card than the claim: it is not pushed further into RAM for
      a FIM model bigger than the claim. Without a GPU chat keeps its model.
   The claim grows with the budget, so the rule is monotone in memory: more VRAM never gives
   a smaller autocomplete model (swept in tests/test_machine_table.py). With the shipped 0.3:
   0.5B below ~8 GB of VRAM, 1.5B from 8 GB, 7B from ~30 GB (or where it fits in what chat
   leaves).
4. No tier fits: the autocomplete ladder is walked best first, each rung leaving a smaller
   budget for chat, and the pair whose chat choice ranks highest wins (ties: the better rung;
   a rung that leaves chat only the offline starter does not count). Then a chat model with
   FIM tokens serves both; else autocomplete is off, with why.
5. Embeddings take a model of their own from what is left, else the chat model serves them.
6. Autocomplete's model drafts for chat too where it is a smaller model of chat's family, fits
   in what the roles leave and is predicted to pay (drafting.py).

With an upstream serving chat (a team's server ranks first), autocomplete comes first instead:
its best FIM model with the whole machine, and the local chat model, now only the fallback, is
planned in what is left (by rule 4 when nothing fits beside it).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from assistantd.planning import sharing
from assistantd.planning.catalog import CatalogModel
from assistantd.planning.drafting import Speculation, plan_speculation
from assistantd.planning.estimate import prompt_cache_share
from assistantd.planning.hardware import Machine
from assistantd.planning.plan_types import Budget, Candidate, Plan, gib, left_after, without
from assistantd.planning.planner import hardware_of, make_plan, profile_budget
from assistantd.planning.profiles import Profile
from assistantd.planning.speeds import MeasuredSpeeds
from assistantd.vocab import Role

PlanFor = Callable[[Role, Budget], Plan]  # a role's ladder within a budget

ROLES: tuple[Role, ...] = ("chat", "autocomplete", "embeddings")
PAIR_TRIES = 8  # autocomplete rungs tried against chat (the ladder is best first)


@dataclass
class RoleChoice:
    """One role's model, or the role that serves it, or why it is off."""

    role: Role
    chosen: Candidate | None
    plan: Plan | None  # this role's own ladder (kept when another role's worker serves it)
    slots: int
    fim: bool = False
    served_by: Role | None = None  # the role whose worker serves this one; None: off
    reason: str = ""

    @property
    def own_worker(self) -> bool:
        return self.served_by == self.role and self.chosen is not None

    def serve_own(self, rung: Candidate, reason: str) -> None:
        """Chat's planned model could not be had: this role runs its own after all."""
        self.chosen, self.served_by, self.reason = rung, self.role, reason

    def to_json(self) -> dict[str, Any]:
        chosen = self.chosen.to_json() if self.chosen else {"model": None}
        return {
            **chosen,
            "fim": self.fim,
            "served_by": self.served_by,
            "slots": self.slots,
            "why": self.reason,
        }


@dataclass
class RolesPlan:
    budget: Budget
    chat: Plan  # the chat role's plan with the whole budget: `chosen` in the JSON
    roles: dict[Role, RoleChoice]
    notes: list[str] = field(default_factory=list)
    upstream_roles: list[Role] = field(default_factory=list)  # served first by a team server
    speculation: Speculation | None = None  # chat's predicted gains and its draft model
    prompt_cache_bytes: int = 0  # per worker, for evicted prompts: from what the models leave

    @property
    def workers(self) -> list[RoleChoice]:
        """One entry per worker to run (a role served by another role's worker has none)."""
        return [c for c in self.roles.values() if c.own_worker]

    @property
    def draft(self) -> Speculation | None:
        """The plan's draft model for chat, when one is loaded."""
        return self.speculation if self.speculation and self.speculation.use_draft else None

    @property
    def estimated_bytes(self) -> int:
        drafted = self.draft.ram_bytes + self.draft.vram_bytes if self.draft else 0
        return sum(c.chosen.estimated_bytes for c in self.workers if c.chosen) + drafted

    def to_json(self) -> dict[str, Any]:
        chat = self.roles["chat"]
        data = (chat.plan or self.chat).to_json()
        data["chosen"] = chat.chosen.to_json() if chat.chosen else None
        data["roles"] = {role: choice.to_json() for role, choice in self.roles.items()}
        data["estimated_bytes_all_roles"] = self.estimated_bytes
        data["upstream_roles"] = self.upstream_roles
        data["speculation"] = self.speculation.to_json() if self.speculation else None
        data["prompt_cache_bytes"] = self.prompt_cache_bytes
        data["notes"] = [*data["notes"], *self.notes]
        return data


def make_role_plans(
    catalog: list[CatalogModel],
    profile: Profile,
    machine: Machine,
    speeds: MeasuredSpeeds | None = None,
    *,
    n_slots: int,
    upstream_roles: Collection[Role] = (),
) -> RolesPlan:
    """A model per role, jointly within one budget (module docstring: the rule).
    `upstream_roles`: roles an upstream serves first, so their local model is the fallback."""
    budget = profile_budget(profile, machine)
    fim = {m.id for m in catalog if m.fim}
    starters = {m.id for m in catalog if m.starter}

    def plan_for(role: Role, within: Budget) -> Plan:
        return make_plan(
            catalog,
            profile.for_role(role),
            machine,
            speeds,
            n_slots=profile.role_slots(role, n_slots),
            role=role,
            budget=within,
        )

    chat_alone = plan_for("chat", budget)
    chat = sharing.chat_pick(chat_alone, starters)
    why = "the best chat model that fits" if chat else "no model fits the budget"
    roles: dict[Role, RoleChoice] = {
        "chat": RoleChoice(
            "chat",
            chat,
            chat_alone,
            n_slots,
            fim=bool(chat and chat.model in fim),
            served_by="chat" if chat else None,
            reason=(chat and sharing.small_card_reason(chat, chat_alone)) or why,
        )
    }
    remote_first = "chat" in upstream_roles and profile.role_enabled("autocomplete")
    first = _autocomplete_first(profile, roles["chat"], plan_for, budget) if remote_first else None
    dedicated = {m.id for m in catalog if m.fim and "chat" not in m.roles}
    roles["autocomplete"] = first or _autocomplete(
        profile, roles["chat"], plan_for, budget, starters, dedicated
    )
    chat_now = roles["chat"].chosen  # autocomplete's choice may have moved chat's
    roles["chat"].fim = bool(chat_now and chat_now.model in fim)
    used = [c.chosen for c in roles.values() if c.own_worker and c.chosen]
    roles["embeddings"] = _embeddings(profile, roles["chat"].chosen, plan_for, budget, used)
    result = RolesPlan(budget, chat_alone, roles, upstream_roles=sorted(upstream_roles))
    ac, hw = roles["autocomplete"], hardware_of(machine, budget)
    left = left_after(budget, [c.chosen for c in result.workers if c.chosen])
    pair = (roles["chat"].chosen, ac.chosen if ac.own_worker else None)
    result.speculation = plan_speculation(profile.speculative, pair, catalog, left, hw, n_slots)
    drafted = result.draft.ram_bytes if result.draft else 0
    result.prompt_cache_bytes = prompt_cache_share(left.ram_bytes - drafted, len(result.workers))
    for choice in roles.values():
        if choice.served_by != choice.role:
            result.notes.append(f"{choice.role}: {choice.reason}")
    return result


def _autocomplete(
    profile: Profile,
    chat_choice: RoleChoice,
    plan_for: PlanFor,
    budget: Budget,
    starters: set[str],
    dedicated: set[str],
) -> RoleChoice:
    slots = profile.role_slots("autocomplete", 1)
    chat = chat_choice.chosen
    if not profile.role_enabled("autocomplete"):
        return RoleChoice("autocomplete", None, None, slots, reason="off in the profile")
    if chat is None:
        return RoleChoice("autocomplete", None, None, slots, reason="no chat model fits either")
    alone: Plan = plan_for("autocomplete", budget)
    if alone.ladder and alone.ladder[0].key == chat.key:
        return _shared(
            chat_choice,
            alone,
            slots,
            f"{chat.label} is also the best autocomplete model that fits: one worker serves both",
        )
    tiered = _tiered(profile, chat_choice, plan_for, budget, starters, dedicated)
    if tiered is not None:
        rung, why = tiered
        return _own(profile, rung, alone, slots, why)
    paired = _paired(chat_choice, plan_for, budget, starters, alone)
    if paired is not None:
        rung, why = paired
        return _own(profile, rung, alone, slots, why)
    if chat_choice.fim:
        return _shared(
            chat_choice,
            alone,
            slots,
            f"no FIM model fits beside {chat.label}, which has FIM tokens: one worker serves both",
        )
    return RoleChoice(
        "autocomplete",
        None,
        alone,
        slots,
        reason=(
            f"off: no FIM model fits beside {chat.label} in {gib(budget.ram_bytes)} RAM, and "
            f"{chat.label} has no FIM tokens"
            if alone.ladder
            else "off: no model with FIM tokens fits the budget"
        ),
    )


def _own(profile: Profile, rung: Candidate, alone: Plan, slots: int, why: str) -> RoleChoice:
    target = profile.for_role("autocomplete").targets.ttft_p95_ms
    if not rung.meets_ttft:
        why += f"; predicted TTFT {rung.predicted_ttft_ms:g} ms > target {target:g} ms"
    return RoleChoice(
        "autocomplete", rung, alone, slots, fim=True, served_by="autocomplete", reason=why
    )


def _tiered(
    profile: Profile,
    chat_choice: RoleChoice,
    plan_for: PlanFor,
    budget: Budget,
    starters: set[str],
    dedicated: set[str],
) -> tuple[Candidate, str] | None:
    """Rule 3: the best FIM tier beside chat, in what chat leaves or within autocomplete's
    claim; chat re-planned (keeping its place) in the second case."""
    chat = chat_choice.chosen
    assert chat is not None
    share = profile.roles.autocomplete.memory_share
    beside = plan_for("autocomplete", without(budget, chat))
    left = {c.key: c for c in sharing.fim_rungs(beside, budget)}
    claimed = sharing.fim_rungs(plan_for("autocomplete", sharing.claim(budget, share)), budget)
    options = {**{c.key: c for c in claimed}, **left}
    place = sharing.on_card(chat, budget)
    for rung in sorted(options.values(), key=lambda c: sharing.tier(c, dedicated)):
        if rung.key in left:
            return rung, f"the best FIM tier that fits beside chat's {chat.label}"
        rest = plan_for("chat", without(budget, rung))
        pick = sharing.chat_pick(
            rest,
            starters,
            at_least=place,
            allow_starter=chat.model in starters,
            model=chat.model if _cpu_only(budget) else None,
        )
        if pick is None:
            continue  # chat would lose its place on the card: a smaller tier
        if _moved(pick, chat):
            chat_choice.chosen, chat_choice.plan = pick, rest
            chat_choice.reason = (
                f"the best chat model that keeps its place beside autocomplete's "
                f"{rung.label} ({gib(rung.estimated_bytes)}, within autocomplete's "
                f"{share:.0%} of the budget)"
            )
        return rung, f"the best FIM tier within autocomplete's {share:.0%} of the budget"
    return None


def _cpu_only(budget: Budget) -> bool:
    return not budget.unified and budget.vram_bytes <= 0


def _moved(now: Candidate, before: Candidate) -> bool:
    """Chat's re-planned rung differs from its choice: another model or quant, or the same one
    placed otherwise (fewer layers or experts on the card)."""
    return (now.key, now.n_gpu_layers, now.n_cpu_moe) != (
        before.key,
        before.n_gpu_layers,
        before.n_cpu_moe,
    )


def _paired(
    chat_choice: RoleChoice,
    plan_for: PlanFor,
    budget: Budget,
    starters: set[str],
    alone: Plan,
) -> tuple[Candidate, str] | None:
    """Rule 4: each autocomplete rung, best first, with chat re-planned in what it leaves; the
    pair whose chat ranks highest (ties: the better rung)."""
    chat = chat_choice.chosen
    assert chat is not None
    best: tuple[tuple[int, int], Candidate, Plan, Candidate] | None = None
    chat_rank = {
        c.key: i for i, c in enumerate(chat_choice.plan.ladder if chat_choice.plan else [])
    }
    for index, rung in enumerate(alone.ladder[:PAIR_TRIES]):
        rest: Plan = plan_for("chat", without(budget, rung))
        pick = sharing.chat_pick(rest, starters)
        if pick is None or (pick.model in starters and chat.model not in starters):
            continue
        key = (chat_rank.get(pick.key, len(chat_rank)), index)
        if best is None or key < best[0]:
            best = (key, rung, rest, pick)
        if key[0] == 0:
            break  # chat keeps its own choice: the best autocomplete rung that allows it
    if best is None:
        return None
    _, rung, rest, picked = best
    if _moved(picked, chat):
        chat_choice.chosen, chat_choice.plan = picked, rest
        chat_choice.reason = (
            f"the best chat model that fits beside autocomplete's {rung.label} "
            f"({gib(rung.estimated_bytes)})"
        )
    return rung, f"the best FIM model that fits beside chat's {picked.label}"


def _autocomplete_first(
    profile: Profile, chat_choice: RoleChoice, plan_for: PlanFor, budget: Budget
) -> RoleChoice | None:
    """Chat is served upstream first: autocomplete takes its best FIM model with the whole
    machine and the local chat fallback is planned in what is left. None when no chat model
    fits beside it (the usual rule decides then)."""
    alone = plan_for("autocomplete", budget)
    rung = alone.chosen
    if rung is None:
        return None
    rest = plan_for("chat", without(budget, rung))
    if rest.chosen is None:
        return None
    chat_choice.chosen, chat_choice.plan = rest.chosen, rest
    chat_choice.reason = (
        f"the local fallback for the upstream chat server, in what autocomplete's "
        f"{rung.label} leaves ({gib(rung.estimated_bytes)})"
    )
    why = "the best FIM model for the whole machine: an upstream serves chat first"
    slots = profile.role_slots("autocomplete", 1)
    return RoleChoice(
        "autocomplete", rung, alone, slots, fim=True, served_by="autocomplete", reason=why
    )


def _shared(chat_choice: RoleChoice, alone: Plan, slots: int, reason: str) -> RoleChoice:
    """Autocomplete on chat's worker; `alone` kept for when chat's model cannot be had."""
    return RoleChoice(
        "autocomplete", chat_choice.chosen, alone, slots, fim=True, served_by="chat", reason=reason
    )


def _embeddings(
    profile: Profile,
    chat: Candidate | None,
    plan_for: PlanFor,
    budget: Budget,
    used: list[Candidate],
) -> RoleChoice:
    slots = profile.role_slots("embeddings", 1)
    own: Plan | None = None
    if not profile.role_enabled("embeddings"):
        why = "off in the profile"
    else:
        left = left_after(budget, used)
        own = plan_for("embeddings", left)
        if own.chosen is not None:
            return RoleChoice(
                "embeddings",
                own.chosen,
                own,
                slots,
                served_by="embeddings",
                reason="the best embedding model that fits beside the others",
            )
        why = (
            f"no embedding model fits the {gib(left.ram_bytes)} RAM the other roles leave"
            if own.candidates
            else "the catalog lists no embedding model the profile allows"
        )
    return RoleChoice(
        "embeddings",
        chat,
        own,
        slots,
        served_by="chat" if chat else None,
        reason=f"{why}: the chat model answers /v1/embeddings",
    )
