"""N-gram speculation: a slot's own prompt and answer propose the tokens that come next.

An editor's edit or apply repeats much of its prompt; where the last few tokens occurred
before, the tokens that followed them then are a cheap guess at what follows now. The slot
engine puts the guess into the same batch as every other slot's token, samples each position
with the slot's own sampler and keeps the guess up to the first token the sampler did not
choose, so the answer is the one the sampler gives without speculation (greedy stays greedy;
sampling keeps the model's distribution).

A guess takes, token by token, what last followed the n-gram before it, and stops at an
n-gram whose last two continuations differ: a fork, as at each renamed word of an edit or each
name in a repeated block, where the next token is a coin toss and a wrong one costs a CPU nearly
what a right one gains (replayed on the edit: 1.29× instead of 1.21× auto, 1.28× instead of
1.16× ngram). Where extra tokens are nearly free (a GPU: batch costs of 1 + 3% per token in the
same replay) the stop costs next to nothing: 2.17× against 2.19× guessing through forks.

A guess is drafted as far as it pays on this device: the guess's measured acceptance against
what a longer batch costs here (`batch_cost.BatchCosts`). On a CPU each extra token costs
nearly half a lone one, so a long guess that breaks early loses more than a short one gains.
``auto`` drafts only where that pays. A guess not worth drafting still has its next token
checked against the one the model gives, at no cost, so acceptance stays measured and drafting
resumes on the next step once the text repeats (checking a whole guess first left a copy
undrafted for up to 12 tokens: 1.12× instead of 1.21× on an edit in
scripts/replay_speculation.py). Acceptance comes in runs (a copied passage is kept whole, then
nothing is), so it is measured apart after a guess that was kept whole and after one that was
not. ``ngram`` drafts at every match, at least one token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

NGRAM = 3  # tokens that must match before a continuation is proposed
BITS = 20  # per token in an n-gram's key: one int, not a tuple the garbage collector must walk
KEY_MASK = (1 << (BITS * NGRAM)) - 1
MIN_DRAFT, MAX_DRAFT = 2, 12
SHADOW = 1  # tokens of an undrafted guess checked: one step decides whether the next drafts
DECAY = 0.9  # weight of earlier drafts in the acceptance rate, per verified draft
PRIOR_TRIALS = 8.0  # a new request starts from its kind's rate with at most this weight
MODES = ("off", "ngram", "auto", "draft")


def _then(key: int, token: int) -> int:
    """The key of the last NGRAM tokens once `token` follows those of `key`."""
    return ((key << BITS) | token) & KEY_MASK


class DraftPricing(Protocol):
    def best_draft(self, others: int, rate: float, longest: int, per_guess: float = 0.0) -> int: ...


@dataclass
class Acceptance:
    """How often a drafted token is kept: each draft keeps tokens until its first miss, so the
    rate of a geometric run is kept / (kept + misses); recent drafts weigh most."""

    kept: float = 1.0
    misses: float = 1.0

    @property
    def rate(self) -> float:
        return self.kept / (self.kept + self.misses)

    def add(self, drafted: int, kept: int) -> None:
        self.kept = self.kept * DECAY + kept
        self.misses = self.misses * DECAY + (kept < drafted)

    def as_prior(self) -> Acceptance:
        """The same rate weighing at most PRIOR_TRIALS drafts: a request soon speaks for itself."""
        scale = min(1.0, PRIOR_TRIALS / (self.kept + self.misses))
        return Acceptance(self.kept * scale, self.misses * scale)


@dataclass
class Rates:
    """Acceptance after a guess kept whole (a copy under way) and after any other."""

    fresh: Acceptance = field(default_factory=Acceptance)
    running: Acceptance = field(default_factory=lambda: Acceptance(3.0, 1.0))
    in_run: bool = False  # the last guess (drafted or checked) was kept whole

    @property
    def rate(self) -> float:
        return (self.running if self.in_run else self.fresh).rate

    def tally(self, guessed: int, kept: int) -> None:
        (self.running if self.in_run else self.fresh).add(guessed, kept)
        self.in_run = kept == guessed

    def as_prior(self) -> Rates:
        return Rates(self.fresh.as_prior(), self.running.as_prior())


@dataclass
class NgramDrafter:
    """The tokens so far, indexed by the n-gram before each position (the latest wins)."""

    tokens: list[int] = field(default_factory=list)
    priced: bool = True  # auto: draft what pays (shadow-check the rest); ngram: every match
    rates: Rates = field(default_factory=Rates)
    drafted: int = 0
    accepted: int = 0
    _index: dict[int, int] = field(default_factory=dict)  # n-gram key → the position after it
    _forks: set[int] = field(default_factory=set)  # keys whose last two continuations differ
    _key: int = 0  # the last NGRAM tokens' key
    _shadow: list[int] = field(default_factory=list)  # a guess not drafted, checked as tokens come
    _shadow_at: int = 0

    @classmethod
    def over(
        cls, tokens: list[int], priced: bool = True, prior: Rates | None = None
    ) -> NgramDrafter:
        drafter = cls(priced=priced, rates=prior or Rates())
        for t in tokens:
            drafter.push(t)
        return drafter

    @classmethod
    def start(cls, mode: str, prompt: list[int], rate: Rates | None) -> NgramDrafter | None:
        """A request's drafter (None when it is not to draft), seeded with its kind's rate."""
        if mode == "off":
            return None
        return cls.over(prompt, mode == "auto", rate.as_prior() if rate else None)

    def push(self, token: int) -> None:
        toks = self.tokens
        toks.append(token)
        i = len(toks) - 1
        if i >= NGRAM:
            key = self._key
            before = self._index.get(key)
            if before is not None:
                if toks[before] == token:
                    self._forks.discard(key)
                else:
                    self._forks.add(key)
            self._index[key] = i
        self._key = _then(self._key, token)
        if self._shadow:
            self._check_shadow(token)

    def draft(self, room: int, pricing: DraftPricing, others: int) -> list[int]:
        """What followed the last n tokens the last time they occurred, as much of it as pays
        beside `others` tokens already in the batch (at most `room`)."""
        if len(self.tokens) < NGRAM or room < 1 or self._shadow:
            return []
        guess = self._guess(min(MAX_DRAFT, room))
        if not guess:
            return []
        n = pricing.best_draft(others, self.rates.rate, len(guess))
        if not self.priced:
            return guess[: max(n, 1)]
        if n == 0:
            self._shadow, self._shadow_at = guess[:SHADOW], 0
        return guess[:n]

    def _guess(self, most: int) -> list[int]:
        """Each next token the latest one to follow the n-gram before it, up to the first
        n-gram whose last two continuations differ (where a copy forks, as at each renamed
        word of an edit or each name in a repeated block)."""
        toks, index, forks = self.tokens, self._index, self._forks
        key, guess = self._key, list[int]()
        while len(guess) < most:
            at = index.get(key)
            if at is None or key in forks:
                break
            token = toks[at]
            guess.append(token)
            key = _then(key, token)
        return guess

    def record(self, drafted: int, accepted: int) -> None:
        """One verified draft: count it in the rate its length was priced with."""
        self.drafted += drafted
        self.accepted += accepted
        self._rates_of_last().tally(drafted, accepted)

    def _check_shadow(self, token: int) -> None:
        shadow, at = self._shadow, self._shadow_at
        if token == shadow[at]:
            at += 1
            if at < len(shadow):
                self._shadow_at = at
                return
        self._shadow = []
        self.rates.tally(len(shadow), at)

    def _rates_of_last(self) -> Rates:
        """The rates the last draft was priced with (a drafter of model guesses has two)."""
        return self.rates
