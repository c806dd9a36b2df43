"""Decode speeds measured on this machine, which replace the planner's predictions.

Keyed by (catalog model id, quant, placement); a moving average so one slow request does not
rewrite history. Stored as JSON in the state directory, written atomically.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

from assistantd.files import atomic_write_text

Key = tuple[str, str, str]
SPEEDS_FILE = "measured_speeds.json"  # in the state directory
MIN_TOKENS = 16  # shorter answers time the warm-up more than the decode
WEIGHT = 0.2  # of each new observation in the moving average


class MeasuredSpeeds:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._speeds: dict[Key, float] = {}
        try:
            raw = json.loads(path.read_text())
            self._speeds = {tuple(k.split("|")): float(v) for k, v in raw.items()}
        except (OSError, ValueError, AttributeError):
            pass

    def get(self) -> dict[Key, float]:
        with self._lock:
            return dict(self._speeds)

    def observe(self, key: Key, tok_s: float, tokens: int) -> None:
        if tokens < MIN_TOKENS or tok_s <= 0:
            return
        with self._lock:
            old = self._speeds.get(key)
            self._speeds[key] = tok_s if old is None else (1 - WEIGHT) * old + WEIGHT * tok_s
            data = {"|".join(k): round(v, 2) for k, v in self._speeds.items()}
        atomic_write_text(self.path, json.dumps(data, indent=1))
