"""N-gram speculation: a slot's own prompt and answer propose the tokens that come next.

An editor's edit or apply repeats much of its prompt; where the last few tokens occurred
before, the tokens that followed them then are a cheap guess at what follows now. The slot
engine puts the guess into the same batch as every other slot's token, samples each position
with the slot's own sampler and keeps the guess up to the first token the sampler did not
choose, so the answer is the one the sampler gives without speculation (greedy stays greedy;
sampling keeps the model's distribution). A wrong guess costs the batch room it took; a
slot whose guesses keep failing stops guessing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

NGRAM = 3  # tokens that must match before a continuation is proposed
MIN_DRAFT, MAX_DRAFT = 2, 12
GIVE_UP_AFTER = 24  # drafted tokens with no more than GIVE_UP_RATE of them accepted
GIVE_UP_RATE = 0.2
MODES = ("off", "ngram", "auto")


@dataclass
class NgramDrafter:
    """The tokens so far, indexed by the n-gram before each position (the latest wins)."""

    tokens: list[int] = field(default_factory=list)
    k: int = 4  # the next draft's length: grows on full acceptance, shrinks on a miss
    drafted: int = 0
    accepted: int = 0
    _index: dict[tuple[int, ...], int] = field(default_factory=dict)
    _recent: list[tuple[int, int]] = field(default_factory=list)  # (drafted, accepted) per try

    @classmethod
    def over(cls, tokens: list[int]) -> NgramDrafter:
        drafter = cls()
        for t in tokens:
            drafter.push(t)
        return drafter

    def push(self, token: int) -> None:
        toks = self.tokens
        toks.append(token)
        i = len(toks) - 1
        if i >= NGRAM:
            self._index[tuple(toks[i - NGRAM : i])] = i

    def draft(self, room: int) -> list[int]:
        """What followed the last n tokens the last time they occurred (at most `room`)."""
        if self.gave_up or room < MIN_DRAFT or len(self.tokens) < NGRAM:
            return []
        at = self._index.get(tuple(self.tokens[-NGRAM:]))
        if at is None:
            return []
        return self.tokens[at : at + min(self.k, room)]

    def record(self, drafted: int, accepted: int) -> None:
        """One verified draft: adapt the next one's length and remember how it went."""
        self.drafted += drafted
        self.accepted += accepted
        self.k = min(MAX_DRAFT, self.k * 2) if accepted == drafted else max(MIN_DRAFT, accepted + 1)
        self._recent.append((drafted, accepted))
        while sum(d for d, _ in self._recent) > GIVE_UP_AFTER and len(self._recent) > 1:
            self._recent.pop(0)

    @property
    def gave_up(self) -> bool:
        drafted = sum(d for d, _ in self._recent)
        kept = sum(a for _, a in self._recent)
        return drafted >= GIVE_UP_AFTER and kept <= GIVE_UP_RATE * drafted
