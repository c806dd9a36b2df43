"""Fair share between API keys: each key may have a bounded number of requests running and
queued (more get 429 with Retry-After, and nobody else notices), and a worker's queue takes
from the keys in turn (api/admission.py), so one person's agent loop cannot starve another's
autocomplete."""

from __future__ import annotations

import collections
from collections.abc import Iterator
from contextlib import contextmanager

from assistantd.errors import TooManyRequests


class KeyShare:
    """Requests in flight (running or queued) per key, daemon-wide, and what each key had."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.refused: collections.Counter[str] = collections.Counter()

    def enter(self, key: str | None) -> None:
        if key is None:
            return
        if self.in_flight[key] >= self.limit:
            self.refused[key] += 1
            raise TooManyRequests(
                f"the key '{key}' already has {self.in_flight[key]} requests running or queued "
                f"(ASSISTANT_KEY_MAX_REQUESTS={self.limit}); wait for one to finish",
                retry_after_s=1,
            )
        self.in_flight[key] += 1

    def leave(self, key: str | None) -> None:
        if key is not None and self.in_flight[key] > 0:
            self.in_flight[key] -= 1

    @contextmanager
    def held(self, key: str | None) -> Iterator[None]:
        self.enter(key)
        try:
            yield
        finally:
            self.leave(key)
