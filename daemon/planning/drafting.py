"""Speculative decoding in the plan: the gains predicted for chat's rung (predict.best_gain), and
whether autocomplete's model, when it is a smaller one of chat's family, also drafts for chat:
loaded in chat's worker, placed as chat is, its memory counted in what the roles leave.

The worker's `auto` still measures acceptance and the cost of each batch length while serving
(worker/batch_cost.py) and drafts only where that pays: the plan decides what to load, not
what to guess.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from assistantd.planning.catalog import CatalogModel
from assistantd.planning.placement import options
from assistantd.planning.plan_types import Budget, Candidate, gib
from assistantd.planning.planner import option_problems
from assistantd.planning.predict import Hardware, best_gain, decode_seconds, routing_of
from assistantd.worker.batch_cost import GAIN_MIN  # below it no draft model is loaded either

# Share of a same-family small coder's guesses the large one keeps on code (published for
# Qwen2.5-Coder 0.5B/1.5B drafting 7B-32B: 0.6-0.8); the worker measures the real one.
DRAFT_ACCEPTANCE = 0.7


@dataclass
class Speculation:
    """What the plan predicts for chat's rung, and the draft model it loads (if any)."""

    mode: str  # the profile's `speculative`: auto | off | ngram | draft
    edit_gain: float  # n-gram guesses on an edit-like request (they cost nothing to make)
    draft_model: str | None = None  # catalog id of a smaller model of chat's family
    draft_quant: str = ""
    draft_gain: float = 0.0
    draft_tokens: int = 0  # guessed tokens per step at the predicted best
    use_draft: bool = False
    ram_bytes: int = 0  # what the draft takes (counted when loaded): weights, KV, buffers
    vram_bytes: int = 0
    devices: list[dict[str, Any]] = field(default_factory=list)
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def plan_speculation(
    mode: str,
    pair: tuple[Candidate | None, Candidate | None],
    catalog: list[CatalogModel],
    left: Budget,
    hw: Hardware,
    n_slots: int,
) -> Speculation | None:
    """Chat's predicted gains; autocomplete's model (the pair: chat's rung, autocomplete's own
    worker's) drafts for chat where it is of chat's family, fits in what the roles leave (`left`)
    placed as chat is, and is predicted to pay (or the profile says `draft`)."""
    chat, autocomplete = pair
    if chat is None or chat.predicted_tok_s <= 0:
        return None
    models = {m.id: m for m in catalog}
    step_s = 1 / chat.predicted_tok_s
    token_s = 1 / chat.predicted_prompt_tok_s if chat.predicted_prompt_tok_s > 0 else step_s
    plan = Speculation(mode=mode, edit_gain=chat.edit_gain)
    target = models.get(chat.model)
    if target is not None and target.arch.n_full_attn_layers:
        plan.why = f"{chat.label} has recurrent layers, which cannot drop a rejected guess"
        return plan
    if mode in ("off", "ngram"):
        plan.why = f"speculative = {mode}: no draft model"
        return plan
    draft = models.get(autocomplete.model) if autocomplete else None
    if autocomplete is None or draft is None or autocomplete.key == chat.key:
        plan.why = "no smaller model of chat's family is planned (autocomplete's would draft)"
        return plan
    if (
        target is None
        or draft.family != target.family
        or autocomplete.file_bytes >= chat.file_bytes  # fewer parameters, or fewer bits
    ):
        plan.why = f"autocomplete's {autocomplete.label} is not a smaller model of chat's family"
        return plan
    plan.draft_model, plan.draft_quant = autocomplete.model, autocomplete.quant
    kind = "cpu" if chat.placement == "cpu" else "gpu" if chat.n_gpu_layers == -1 else None
    if kind is None:
        plan.why = f"{chat.label} is split between the GPU and RAM: a draft is not planned there"
        return plan
    found = [
        o
        for o in options(draft.arch, autocomplete.file_bytes, chat.n_ctx, left, n_slots)
        if o.placement == kind and not o.experts_in_ram
    ]
    if not found:
        plan.why = f"no GPU memory is left for {autocomplete.label} as chat's draft"
        return plan
    option = found[0]
    draft_s = decode_seconds(draft.arch, option.split, hw, autocomplete.quant)
    routing = routing_of(target.arch)
    gain, plan.draft_tokens = best_gain(DRAFT_ACCEPTANCE, step_s, token_s, draft_s, routing)
    plan.draft_gain = round(gain, 2)
    problems = option_problems(option, left)
    if problems:
        plan.why = f"{autocomplete.label} as chat's draft {'; '.join(problems)}"
        return plan
    plan.ram_bytes, plan.vram_bytes = option.ram_bytes, 0 if left.unified else option.vram_bytes
    plan.devices = [d.to_json() for d in option.devices]
    predicted = f"predicted {plan.draft_gain:.2f}x at {DRAFT_ACCEPTANCE:.0%} acceptance"
    if mode == "draft" or plan.draft_gain >= GAIN_MIN:
        plan.use_draft = True
        said = "speculative = draft" if plan.draft_gain < GAIN_MIN else predicted
        room = gib(plan.ram_bytes + plan.vram_bytes)
        plan.why = f"autocomplete's {autocomplete.label} drafts for chat ({said}; {room} more)"
    else:
        plan.why = (
            f"autocomplete's {autocomplete.label} would not pay as chat's draft ({predicted})"
        )
    return plan
