"""Model ids: derived and validated in one place that every path goes through."""

from __future__ import annotations

import re
from pathlib import Path

from assistantd.errors import ConfigError

_ID = re.compile(r"^[a-z0-9][a-z0-9._:-]{0,127}$")


def model_id_for(path: Path) -> str:
    """A client-facing id from a file name, e.g. SmolLM2-135M-Instruct.Q4_1.gguf →
    smollm2-135m-instruct-q4_1. Continue treats ids starting with 'gpt' or 'o' as chat-only,
    so those get a 'local-' prefix."""
    stem = path.name.removesuffix(".gguf").lower()
    slug = re.sub(r"[^a-z0-9_:-]+", "-", stem).strip("-") or "model"
    if slug.startswith(("gpt", "o")):
        slug = "local-" + slug
    return validate_model_id(slug[:128])


def validate_model_id(model_id: str) -> str:
    if not _ID.match(model_id):
        raise ConfigError(
            f"model id {model_id!r} is not allowed: use lowercase letters, digits, '.', '_', ':' "
            "or '-', at most 128 characters, starting with a letter or digit"
        )
    if model_id.startswith(("gpt", "o")):
        raise ConfigError(
            f"model id {model_id!r} starts with 'gpt' or 'o', which makes Continue treat it as "
            "chat-only (no autocomplete); choose another id"
        )
    return model_id
