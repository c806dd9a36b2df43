"""Who is asking: the team's API keys, one per line in ASSISTANT_API_KEYS_FILE (`alice:KEY`, or
a bare KEY), re-read when the file changes, so a key is added or revoked without a restart.

Only a key's name ever leaves this module (logs, /status, /metrics); every key is compared in
constant time, all of them on every request, so timing tells nothing about which one was close.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from assistantd.errors import ConfigError

log = logging.getLogger("assistantd.keys")

RECHECK_S = 1.0  # how often the file's mtime is looked at (on a request)
_NAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
SINGLE_KEY_NAME = "default"  # ASSISTANT_API_KEY's name

# The name of the key the current request came with (None: no keys configured).
request_key: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "request_key", default=None
)


@dataclass(frozen=True)
class Key:
    name: str
    secret: bytes


def parse(text: str, source: str) -> list[Key]:
    """`name:KEY` or `KEY` per line; `#` comments and blank lines skipped. A bare key is named
    after a hash of it, so two bare keys never share a name and the name reveals nothing."""
    keys: list[Key] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, secret = line.partition(":")
        if not sep:
            name, secret = "key-" + hashlib.sha256(line.encode()).hexdigest()[:8], line
        name, secret = name.strip(), secret.strip()
        if not _NAME.match(name):
            raise ConfigError(
                f"{source} line {number}: the name '{name}' may hold only letters, digits and "
                "_.@- (up to 64); write NAME:KEY"
            )
        if len(secret) < 8:
            raise ConfigError(f"{source} line {number}: the key for '{name}' is under 8 chars")
        if any(k.name == name for k in keys):
            raise ConfigError(f"{source} line {number}: the name '{name}' is used twice")
        keys.append(Key(name, secret.encode()))
    return keys


class KeyRing:
    """The keys in force: the single ASSISTANT_API_KEY and/or the keys file."""

    def __init__(self, single: str | None, path: Path | None) -> None:
        self._single = [Key(SINGLE_KEY_NAME, single.encode())] if single else []
        self.path = path
        self._from_file: list[Key] = []
        self._stamp: tuple[float, int] | None = None
        self._checked = 0.0
        if path is not None:
            self._from_file = self._read(path)  # a bad file at start is a startup error

    @property
    def required(self) -> bool:
        return bool(self._single) or self.path is not None

    def _read(self, path: Path) -> list[Key]:
        try:
            stat = path.stat()
            text = path.read_text()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the API keys file {path}: {exc.strerror or exc}; create it "
                "(one NAME:KEY per line) or unset ASSISTANT_API_KEYS_FILE"
            ) from None
        self._stamp = (stat.st_mtime, stat.st_size)
        return parse(text, str(path))

    def _refresh(self) -> None:
        """Re-read the file when it changed; a broken edit keeps the keys in force."""
        now = time.monotonic()
        if self.path is None or now - self._checked < RECHECK_S:
            return
        self._checked = now
        try:
            stat = self.path.stat()
        except OSError:
            return
        if (stat.st_mtime, stat.st_size) == self._stamp:
            return
        try:
            self._from_file = self._read(self.path)
            log.info("API keys re-read: %s", ", ".join(k.name for k in self._from_file))
        except ConfigError as exc:
            self._stamp = (stat.st_mtime, stat.st_size)
            log.error("%s; the previous keys stay in force", exc.message)

    def name_of(self, given: str) -> str | None:
        """The name of the key `given` is, or None; every key is compared."""
        self._refresh()
        found = None
        candidate = given.encode()
        for key in [*self._single, *self._from_file]:
            if hmac.compare_digest(candidate, key.secret) and found is None:
                found = key.name
        return found

    @property
    def names(self) -> list[str]:
        return [k.name for k in [*self._single, *self._from_file]]


def load(single: str | None, path: Path | None) -> KeyRing:
    return KeyRing(single, path.expanduser() if path else None)
