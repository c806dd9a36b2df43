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


def continue_entries(
    api_base: str, api_key: str | None, *, autocomplete: bool, embeddings: bool = True
) -> list[dict[str, Any]]:
    """Continue model entries, one per role, by the stable role ids (they follow shifts).
    Autocomplete only when a model with fill-in-the-middle tokens serves it (Continue sends it
    raw FIM prompts, which a model without them answers with noise)."""
    roles: list[tuple[str, str, list[str]]] = [
        ("chat", "assistantd-chat", ["chat", "edit", "apply"])
    ]
    if autocomplete:
        roles.append(("autocomplete", "assistantd-autocomplete", ["autocomplete"]))
    if embeddings:
        roles.append(("embed", "assistantd-embed", ["embed"]))
    return [
        {
            "name": f"{ENTRY_NAME} {name}",
            "provider": "openai",
            "model": model,
            "apiBase": api_base,
            # The openai SDK insists on a key; any value works unless ASSISTANT_API_KEY is set.
            "apiKey": api_key or "assistantd",
            "roles": continue_roles,
        }
        for name, model, continue_roles in roles
    ]


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


def merge_continue(config_path: Path, entries: list[dict[str, Any]]) -> Path | None:
    """Put `entries` into Continue's config.yaml, replacing earlier assistantd entries and
    keeping everything else. Returns the backup's path (None when the file did not exist)."""
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
    models.extend(kept + [CommentedMap(entry) for entry in entries])
    text = io.StringIO()
    yaml.dump(data, text)
    atomic_write_text(config_path, text.getvalue())
    return backup


def llama_vscode_settings(base_url: str, *, fim: bool) -> str:
    """/infill always reaches the autocomplete role; chat goes to the chat role's id."""
    lines = [
        "llama.vscode (settings.json): completions from the autocomplete role, chat from chat",
        f'  "llama-vscode.endpoint": "{base_url}",',
        '  "llama-vscode.ai_model": "assistantd-chat"',
        "llama.vim (vimrc): fill-in-the-middle and instruction endpoints",
        f"  let g:llama_config = {{ 'endpoint_fim': '{base_url}/infill', "
        f"'endpoint_inst': '{base_url}/v1/chat/completions', 'model_inst': 'assistantd-chat' }}",
    ]
    if not fim:
        lines.append(
            "note: the model serving autocomplete has no fill-in-the-middle tokens, so /infill "
            "answers 400; give autocomplete a code model with FIM tokens (e.g. Qwen2.5-Coder base)."
        )
    return "\n".join(lines)


# Tools that speak Ollama's, Anthropic's or OpenAI's Responses API: the settings to paste.
OTHER_TOOLS = ("copilot", "zed", "jetbrains", "open-webui", "claude-code", "codex")


def tool_settings(tool: str, base_url: str, api_key: str | None) -> str:
    """What `tool` needs to use the daemon at `base_url` (no /v1): every API is served on the
    daemon's own port, so Ollama-speaking tools get that URL (or --ollama-listen's)."""
    key = api_key or "assistantd"
    no_key = (
        "note: Ollama clients send no API key; with ASSISTANT_API_KEY set they are refused "
        "(run a loopback daemon without a key for them)"
        if api_key
        else ""
    )
    texts = {
        "copilot": [
            "VS Code Copilot Chat (settings.json), then Manage Models... > Ollama:",
            f'  "github.copilot.chat.byok.ollamaEndpoint": "{base_url}"',
            no_key,
        ],
        "zed": [
            "Zed (settings.json): its Ollama provider lists assistantd's models",
            f'  "language_models": {{ "ollama": {{ "api_url": "{base_url}" }} }}',
            no_key,
        ],
        "jetbrains": [
            "JetBrains AI Assistant: Settings > Tools > AI Assistant > Models > Third-party AI "
            "providers: enable Ollama",
            f"  URL: {base_url}   (Test Connection lists assistantd-chat and the served models)",
            no_key,
        ],
        "open-webui": [
            "Open WebUI: the Ollama API (host networking, so the container reaches loopback)",
            "  docker run -d --network=host -v open-webui:/app/backend/data "
            f"-e OLLAMA_BASE_URL={base_url} ghcr.io/open-webui/open-webui:main",
            f"  or its OpenAI connection: OPENAI_API_BASE_URL={base_url}/v1 OPENAI_API_KEY={key}",
            no_key,
        ],
        "claude-code": [
            "Claude Code (Anthropic's Messages API at /v1/messages):",
            f"  ANTHROPIC_BASE_URL={base_url} ANTHROPIC_AUTH_TOKEN={key} "
            "ANTHROPIC_MODEL=assistantd-chat ANTHROPIC_SMALL_FAST_MODEL=assistantd-chat claude",
        ],
        "codex": [
            "Codex CLI (~/.codex/config.toml; OpenAI's Responses API at /v1/responses):",
            '  model = "assistantd-chat"',
            '  model_provider = "assistantd"',
            "  [model_providers.assistantd]",
            '  name = "assistantd"',
            f'  base_url = "{base_url}/v1"',
            '  wire_api = "responses"',
            *(['  env_key = "ASSISTANT_API_KEY"'] if api_key else []),
        ],
    }
    return "\n".join(line for line in texts[tool] if line)
