"""assistantctl connect: Continue's config.yaml and llama.vscode settings."""

from __future__ import annotations

import subprocess
from pathlib import Path

from ruamel.yaml import YAML

from tests.support.daemons import Daemon, run_ctl

EXISTING = """\
# my Continue config
name: My setup
version: 1.0.0
schema: v1
models:
  - name: Claude  # keep me
    provider: anthropic
    model: claude-sonnet
    roles: [chat]
  - name: assistantd (old-model)
    provider: openai
    model: old-model
    apiBase: http://127.0.0.1:9999/v1
context:
  - provider: code
"""


def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    return run_ctl(*args)


def test_connect_prints_the_continue_entry_and_llama_vscode_settings(smol: Daemon) -> None:
    result = ctl("--url", smol.url, "connect", "continue")
    assert result.returncode == 0, result.stderr
    config = YAML().load(result.stdout.split("llama.vscode")[0])
    # A whole config.yaml, as Continue's schema wants it, one entry per role by role id.
    assert config["name"] and config["version"] and config["schema"] == "v1"
    chat, embed = config["models"]
    assert chat["provider"] == embed["provider"] == "openai"
    assert chat["model"] == "assistantd-chat" and embed["model"] == "assistantd-embed"
    assert chat["apiBase"] == embed["apiBase"] == smol.v1
    # SmolLM2 (serving every role here) has no FIM tokens: no autocomplete entry.
    assert set(chat["roles"]) == {"chat", "edit", "apply"} and embed["roles"] == ["embed"]
    assert f'"llama-vscode.endpoint": "{smol.url}"' in result.stdout
    assert f"'endpoint_fim': '{smol.url}/infill'" in result.stdout
    assert f"'endpoint_inst': '{smol.url}/v1/chat/completions'" in result.stdout


def test_connect_gives_autocomplete_to_a_fim_model(smol_fim: Daemon) -> None:
    result = ctl("--url", smol_fim.url, "connect", "continue")
    assert result.returncode == 0, result.stderr
    entries = YAML().load(result.stdout.split("llama.vscode")[0])["models"]
    [auto] = [e for e in entries if "autocomplete" in e["roles"]]
    assert auto["model"] == "assistantd-autocomplete" and auto["roles"] == ["autocomplete"]
    assert "no fill-in-the-middle tokens" not in result.stdout


def test_connect_write_merges_keeping_everything_and_backs_up(smol: Daemon, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(EXISTING)
    result = ctl("--url", smol.url, "connect", "continue", "--write", "--config", str(config))
    assert result.returncode == 0, result.stderr
    [backup] = tmp_path.glob("config.yaml.bak-*")
    assert backup.read_text() == EXISTING
    text = config.read_text()
    assert "# my Continue config" in text and "# keep me" in text
    data = YAML().load(text)
    names = [m["name"] for m in data["models"]]
    assert names == ["Claude", "assistantd chat", "assistantd embed"]  # the old entry replaced
    assert data["context"] == [{"provider": "code"}]
    # Running it again replaces our entries instead of adding more.
    ctl("--url", smol.url, "connect", "continue", "--write", "--config", str(config))
    assert len(YAML().load(config.read_text())["models"]) == 3


def test_connect_write_creates_a_config_when_there_is_none(smol: Daemon, tmp_path: Path) -> None:
    config = tmp_path / ".continue" / "config.yaml"
    assert (
        ctl("--url", smol.url, "connect", "continue", "--write", "--config", str(config)).returncode
        == 0
    )
    data = YAML().load(config.read_text())
    assert data["schema"] == "v1" and len(data["models"]) == 2


def test_a_broken_config_is_left_untouched(smol: Daemon, tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("models: [unclosed\n")
    result = ctl("--url", smol.url, "connect", "continue", "--write", "--config", str(config))
    assert result.returncode == 2
    assert "nothing was changed" in result.stderr
    assert config.read_text() == "models: [unclosed\n"
    assert not list(tmp_path.glob("config.yaml.bak-*"))
