"""What one llama_decode costs on this device for a batch of n tokens, measured as it runs,
and so how long a draft pays for itself.

A draft of d tokens beside the m tokens a step decodes anyway (one per generating slot) makes
the batch m + d long; it pays when tokens per second rise: (m + E) / t(m + d) against m / t(m),
where E = r + r² + … + r^d is what a per-token acceptance r keeps. On a GPU t(m + d) ≈ t(m)
and most drafts pay; on a CPU each extra token costs most of a lone one (SmolLM2 on 2 cores:
2 tokens 1.7×, 4 tokens 2.5× one), so only drafts that are nearly always kept pay.

Generation steps, whose every token is read out, are timed per batch length. Prompt batches
(one token read out) cost less per token; they stand in for lengths not yet timed, so a draft
is tried where it might pay and its real cost then decides.
"""

from __future__ import annotations

GAIN_MIN = 1.1  # predicted gain a draft must reach: below it, timing noise could make it a loss
ALPHA = 0.2  # weight of the newest timing in each length's moving average


class BatchCosts:
    def __init__(self) -> None:
        self._generation: dict[int, float] = {}  # batch length → seconds, every token read out
        self._prompt: dict[int, float] = {}  # batch length → seconds, batches holding a prompt

    def record(self, n: int, seconds: float, prompt: bool) -> None:
        table = self._prompt if prompt else self._generation
        old = table.get(n)
        table[n] = seconds if old is None else old + ALPHA * (seconds - old)

    def seconds(self, n: int) -> float | None:
        """A batch of n generation tokens: timed, or interpolated between the nearest timed
        lengths (a prompt batch may stand above the longest generation batch timed)."""
        gen = self._generation
        if n in gen:
            return gen[n]
        below = [k for k in gen if k < n]
        if not below:
            return None
        lo = max(below)
        above = [k for k in gen if k > n] or [k for k in self._prompt if k > n]
        if not above:
            return None
        hi = min(above)
        t_hi = gen.get(hi) or self._prompt[hi]
        t_lo = gen[lo]
        return t_lo + (t_hi - t_lo) * (n - lo) / (hi - lo)

    def gain(
        self, others: int, rate: float, longest: int, per_guess: float = 0.0
    ) -> tuple[int, float]:
        """The draft length (0: none) that most raises tokens per second beside `others`
        generating slots, and its predicted gain (1.0: none); `per_guess` is what making each
        guessed token costs (seconds: a draft model's decode; n-gram guesses are free)."""
        m = others + 1
        base = self.seconds(m)
        best, best_gain = 0, 1.0
        if base is None:
            return best, best_gain
        kept, p = 0.0, 1.0
        for d in range(1, longest + 1):
            p *= rate
            kept += p
            t = self.seconds(m + d)
            if t is None:
                break
            t += d * per_guess
            g = (m + kept) / t * base / m
            if g > best_gain:
                best, best_gain = d, g
        return best, best_gain

    def best_draft(self, others: int, rate: float, longest: int, per_guess: float = 0.0) -> int:
        n, g = self.gain(others, rate, longest, per_guess)
        return n if g >= GAIN_MIN else 0
