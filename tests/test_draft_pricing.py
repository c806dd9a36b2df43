"""`auto` speculation drafts only where it pays on the device at hand.

Pure logic: the batch timings are given as numbers shaped like the ones measured here
(SmolLM2 on 2 cores: 2 tokens 1.7×, 4 tokens 2.5×, 13 tokens 6.6× one token) and like a
GPU's (a batch of 13 costs about what one token does); the engine feeds the same table from
its own llama_decode timings. The daemon-level tests are in test_speculation.py."""

from __future__ import annotations

from assistantd.worker.batch_cost import BatchCosts
from assistantd.worker.speculation import NgramDrafter

CPU = {1: 10.0, 2: 17.0, 3: 21.0, 4: 25.0, 5: 31.0, 9: 48.0, 13: 66.0}  # ms
GPU = {n: 10.0 + 0.1 * (n - 1) for n in range(1, 14)}


def costs(table: dict[int, float]) -> BatchCosts:
    c = BatchCosts()
    for n, ms in table.items():
        c.record(n, ms / 1000, prompt=False)
    return c


def walk(drafter: NgramDrafter, text: list[int], pricing: BatchCosts) -> list[int]:
    """Feed `text` as the engine does: before each step a draft of what follows, then the
    drafted tokens the text confirms and the one after them; returns the drafted lengths."""
    drafted = []
    i = 0
    while i < len(text):
        draft = drafter.draft(12, pricing, 0)
        drafted.append(len(draft))
        kept = 0
        while kept < len(draft) and i + kept < len(text) and draft[kept] == text[i + kept]:
            kept += 1
        if draft:
            drafter.record(len(draft), kept)
        for t in text[i : i + kept + 1]:
            drafter.push(t)
        i += kept + 1
    return drafted


# A prompt of groups of four tokens; the answer repeats each group's first three and then goes
# elsewhere, so each guess (the group's fourth token on) is wrong.
SHAPE = [1000 + t for t in range(160)]
COPY = list(range(500, 560))  # a passage the answer will repeat word for word
NEW = [t for i in range(10) for t in (1000 + 4 * i, 1001 + 4 * i, 1002 + 4 * i, 200 + i)]


def test_guesses_that_are_mostly_wrong_are_not_drafted_on_a_cpu_but_are_checked() -> None:
    drafter = NgramDrafter.over(SHAPE + COPY)
    drafted = walk(drafter, NEW, costs(CPU))
    assert sum(drafted) == 0
    assert drafter.rates.fresh.rate < 0.3  # the guesses were checked against the tokens


def test_a_repeated_passage_is_drafted_once_a_guess_was_kept_whole() -> None:
    drafter = NgramDrafter.over(SHAPE + COPY)
    drafted = walk(drafter, NEW + COPY, costs(CPU))
    assert sum(drafted[: len(NEW)]) == 0
    assert sum(drafted) >= len(COPY) // 2  # the copy, once under way, goes in long drafts
    assert drafter.accepted >= 0.7 * drafter.drafted  # the last draft runs past the copy


def test_a_copy_is_drafted_on_the_step_after_one_checked_token_is_kept() -> None:
    """Three tokens of the copy make its n-gram; the guess's first token is checked against
    the fourth (not the whole guess), so the fifth step drafts."""
    drafter = NgramDrafter.over(SHAPE + COPY)
    drafted = walk(drafter, NEW + COPY, costs(CPU))[len(NEW) :]
    assert drafted[:4] == [0, 0, 0, 0]
    assert drafted[4] >= 2


def test_on_a_gpu_even_half_kept_guesses_pay() -> None:
    cpu, gpu = costs(CPU), costs(GPU)
    assert cpu.best_draft(0, 0.5, 12) == 0
    assert gpu.best_draft(0, 0.5, 12) >= 1
    assert cpu.best_draft(0, 0.97, 12) >= 8  # nearly always kept: long drafts pay on a CPU too
    n, gain = cpu.gain(0, 0.97, 12)
    assert gain > 1.5


def test_other_slots_tokens_make_a_draft_cheaper_to_add() -> None:
    """Beside three other slots a draft of 2 adds 2 tokens to 3, not to 1."""
    table = costs({1: 10.0, 2: 17.0, 3: 25.0, 4: 28.0, 5: 31.0, 6: 34.0})
    assert table.best_draft(0, 0.8, 2) == 0  # alone: 3 tokens cost 2.5x one
    assert table.best_draft(3, 0.8, 2) == 2  # beside 3: 6 tokens cost 1.2x four


def test_lengths_not_timed_are_read_between_timed_ones_and_prompt_batches() -> None:
    c = costs({1: 10.0, 5: 30.0})
    assert abs(c.seconds(3) - 0.020) < 1e-9
    assert c.seconds(9) is None  # nothing longer timed: no guess at its cost
    c.record(17, 0.050, prompt=True)
    assert abs(c.seconds(9) - (0.030 + 0.020 * 4 / 12)) < 1e-9
    c.record(5, 0.040, prompt=False)  # a moving average: the newest timing moves it a fifth
    assert abs(c.seconds(5) - 0.032) < 1e-9


def test_ngram_mode_drafts_at_every_match_as_long_as_pays() -> None:
    """Mostly wrong guesses go in one token at a time on a CPU; a copy in long drafts."""
    drafter = NgramDrafter.over(SHAPE + COPY, priced=False)
    drafted = walk(drafter, NEW + COPY, costs(CPU))
    assert set(drafted[: len(NEW)]) == {0, 1}
    assert max(drafted[len(NEW) :]) >= 8


def test_a_guess_ends_where_the_text_it_copies_forked() -> None:
    """Where the same three tokens were followed by other tokens the last two times (a renamed
    word in an edit, each name in a repeated block), the guess stops before the fork; once
    the last two agree again, it runs through."""
    drafter = NgramDrafter.over([10, 11, 12, 13, 14, 15, 16, 0, 10, 11, 12, 13, 99, 15, 16, 0])
    for t in (10, 11, 12):
        drafter.push(t)
    assert drafter.draft(12, costs(GPU), 0) == [13]  # (11, 12, 13) went on with 14, then 99
    for t in (13, 14, 15, 16, 0, 10, 11, 12):
        drafter.push(t)
    assert drafter.draft(12, costs(GPU), 0) == [13]  # 14 after 99: the last two still differ
    for t in (13, 14, 15, 16, 0, 10, 11, 12):
        drafter.push(t)
    assert drafter.draft(12, costs(GPU), 0)[:4] == [13, 14, 15, 16]
