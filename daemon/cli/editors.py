"""Wire editors to the daemon: Continue's config.yaml, and llama.vscode / llama.vim settings.

Merging uses ruamel.yaml's round-trip mode so a user's comments and ordering survive; a backup
is written before anything changes.
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq

from assistantd.errors import ConfigError
from assistantd.files import atomic_write_text

ENTRY_NAME = "assistantd"


def continue_entry(
    model_id: str, api_base: str, api_key: str | None, *, fim: bool
) -> dict[str, Any]:
    """One Continue model entry; autocomplete only for a model with fill-in-the-middle tokens
    (Continue sends it raw FIM prompts, which a model without them answers with noise)."""
    roles = ["chat", "edit", "apply"] + (["autocomplete"] if fim else [])
    return {
        "name": f"{ENTRY_NAME} ({model_id})",
        "provider": "openai",
        "model": model_id,
        "apiBase": api_base,
        # The openai SDK insists on a key; any value works unless ASSISTANT_API_KEY is set.
        "apiKey": api_key or "assistantd",
        "roles": roles,
    }


def render_yaml(data: Any) -> str:
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def continue_config(entries: list[dict[str, Any]]) -> str:
    """A whole config.yaml Continue loads as it is (name, version, schema, models)."""
    return render_yaml(
        {"name": "Local config", "version": "1.0.0", "schema": "v1", "models": entries}
    )


def merge_continue(config_path: Path, entry: dict[str, Any]) -> Path | None:
    """Put `entry` into Continue's config.yaml, replacing an earlier assistantd entry and keeping
    everything else. Returns the backup's path (None when the file did not exist)."""
    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    backup = None
    if config_path.exists():
        try:
            data = yaml.load(config_path.read_text()) or CommentedMap()
        except Exception as exc:
            raise ConfigError(
                f"{config_path} is not valid YAML ({exc}); fix it first, nothing was changed"
            ) from None
        if not isinstance(data, dict):
            raise ConfigError(f"{config_path} does not hold a YAML mapping; nothing was changed")
        backup = config_path.with_name(f"{config_path.name}.bak-{time.strftime('%Y%m%d-%H%M%S')}")
        shutil.copy2(config_path, backup)
    else:
        data = CommentedMap([("name", "Local config"), ("version", "1.0.0"), ("schema", "v1")])
        config_path.parent.mkdir(parents=True, exist_ok=True)
    models = data.get("models")
    if models is None:
        models = data["models"] = CommentedSeq()
    elif not isinstance(models, list):
        raise ConfigError(f"{config_path}: 'models' is not a list; nothing was changed")
    kept = [
        m
        for m in models
        if not (isinstance(m, dict) and str(m.get("name", "")).startswith(ENTRY_NAME))
    ]
    models.clear()
    models.extend(kept + [CommentedMap(entry)])
    text = io.StringIO()
    yaml.dump(data, text)
    atomic_write_text(config_path, text.getvalue())
    return backup


def llama_vscode_settings(base_url: str, *, fim: bool) -> str:
    lines = [
        "llama.vscode (settings.json):",
        f'  "llama-vscode.endpoint": "{base_url}"',
        "llama.vim (vimrc): fill-in-the-middle and instruction endpoints",
        f"  let g:llama_config = {{ 'endpoint_fim': '{base_url}/infill', "
        f"'endpoint_inst': '{base_url}/v1/chat/completions' }}",
    ]
    if not fim:
        lines.append(
            "note: the model served now has no fill-in-the-middle tokens, so /infill answers 400;"
            " serve a code model with FIM tokens (e.g. Qwen2.5-Coder base) for completions."
        )
    return "\n".join(lines)
