"""N-gram speculation: a slot's own prompt and answer propose the tokens that come next.

An editor's edit or apply repeats much of its prompt; where the last few tokens occurred
before, the tokens that followed them then are a cheap guess at what follows now. The slot
engine puts the guess into the same batch as every other slot's token, samples each position
with the slot's own sampler and keeps the guess up to the first token the sampler did not
choose, so the answer is the one the sampler gives without speculation (greedy stays greedy;
sampling keeps the model's distribution). A wrong guess costs the batch room it took; a
slot whose guesses keep failing pauses guessing, longer each time (text that repeats its
shape but not its tokens, such as counting, pays for a few failed drafts, not for many).
"""

from __future__ import annotations

from dataclasses import dataclass, field

NGRAM = 3  # tokens that must match before a continuation is proposed
MIN_DRAFT, MAX_DRAFT = 2, 12
PAUSE_AFTER = 4  # drafted tokens with no more than PAUSE_RATE of them kept: pause drafting
PAUSE_RATE = 0.25
FIRST_PAUSE = 32  # tokens without drafts; doubles each time drafts fail again
MODES = ("off", "ngram", "auto")


@dataclass
class NgramDrafter:
    """The tokens so far, indexed by the n-gram before each position (the latest wins)."""

    tokens: list[int] = field(default_factory=list)
    pausing: bool = True  # auto: pause after failing drafts; ngram: draft at every match
    k: int = MIN_DRAFT  # the next draft's length: doubles on full acceptance, shrinks on a miss
    drafted: int = 0
    accepted: int = 0
    _index: dict[tuple[int, ...], int] = field(default_factory=dict)
    _window: list[int] = field(default_factory=lambda: [0, 0])  # drafted, kept since a pause
    _paused_until: int = 0  # no drafts before the text is this long
    _pause: int = FIRST_PAUSE

    @classmethod
    def over(cls, tokens: list[int], pausing: bool = True) -> NgramDrafter:
        drafter = cls(pausing=pausing)
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
        if len(self.tokens) < max(NGRAM, self._paused_until) or room < MIN_DRAFT:
            return []
        at = self._index.get(tuple(self.tokens[-NGRAM:]))
        if at is None:
            return []
        return self.tokens[at : at + min(self.k, room)]

    def record(self, drafted: int, accepted: int) -> None:
        """One verified draft: adapt the next one's length; pause after failing drafts."""
        self.drafted += drafted
        self.accepted += accepted
        self.k = min(MAX_DRAFT, self.k * 2) if accepted == drafted else max(MIN_DRAFT, accepted + 1)
        window = self._window
        window[0] += drafted
        window[1] += accepted
        if window[0] >= PAUSE_AFTER and self.pausing:
            if window[1] <= PAUSE_RATE * window[0]:
                self._paused_until = len(self.tokens) + self._pause
                self._pause *= 2
                self.k = MIN_DRAFT
            else:
                self._pause = FIRST_PAUSE
            window[:] = [0, 0]
