"""Settings: defaults < config file < ASSISTANT_* env < flags, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from assistantd.errors import ConfigError
from assistantd.planning.naming import model_id_for, validate_model_id
from assistantd.settings import DEFAULT_PORT, build_parser, load_settings


def test_defaults_bind_loopback_on_a_port_no_peer_uses() -> None:
    settings = load_settings([])
    assert settings.host == "127.0.0.1"
    assert settings.port == DEFAULT_PORT
    assert DEFAULT_PORT not in (11434, 1234, 8080)


def test_flags_beat_env_beat_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "assistantd.toml"
    config.write_text("port = 9001\nn_ctx = 1024\nqueue_size = 3\n")
    monkeypatch.setenv("ASSISTANT_N_CTX", "2048")
    monkeypatch.setenv("ASSISTANT_QUEUE_SIZE", "5")
    settings = load_settings(["--config", str(config), "--queue-size", "7"])
    assert settings.port == 9001  # file
    assert settings.n_ctx == 2048  # env over file
    assert settings.queue_size == 7  # flag over env


def test_config_file_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "c.toml"
    config.write_text("port = 9002\n")
    monkeypatch.setenv("ASSISTANT_CONFIG", str(config))
    assert load_settings([]).port == 9002


@pytest.mark.parametrize(
    ("argv", "content", "mentions"),
    [
        (["--port", "0"], None, "port"),
        (["--n-ctx", "lots"], None, "n_ctx"),
        (["--log-level", "loud"], None, "log_level"),
        ([], "prot = 1\n", "unknown setting(s) prot"),
        ([], "port = [\n", "not valid TOML"),
    ],
)
def test_invalid_settings_say_which_and_why(
    tmp_path: Path, argv: list[str], content: str | None, mentions: str
) -> None:
    if content is not None:
        config = tmp_path / "bad.toml"
        config.write_text(content)
        argv = [*argv, "--config", str(config)]
    with pytest.raises(ConfigError) as caught:
        load_settings(argv)
    assert mentions in caught.value.message


def test_missing_config_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(["--config", str(tmp_path / "nope.toml")])


def test_help_lists_every_setting_with_its_description() -> None:
    text = build_parser().format_help()
    for flag in ("--host", "--port", "--model", "--threads", "--n-ctx", "--queue-size", "--config"):
        assert flag in text
    assert "Generation requests that may wait" in text


@pytest.mark.parametrize(
    ("file_name", "expected"),
    [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2-135m-instruct-q4_1"),
        ("gpt-oss-20b-Q4_K_M.gguf", "local-gpt-oss-20b-q4_k_m"),
        ("OLMo-2-7B.gguf", "local-olmo-2-7b"),
        ("qwen2.5-coder-7b-instruct-q4_k_m.gguf", "qwen2-5-coder-7b-instruct-q4_k_m"),
    ],
)
def test_model_ids_from_file_names_never_look_chat_only_to_continue(
    file_name: str, expected: str
) -> None:
    assert model_id_for(Path(file_name)) == expected


@pytest.mark.parametrize("bad", ["gpt-4", "o1", "../etc/passwd", "Big Model", ""])
def test_model_id_overrides_are_validated(bad: str) -> None:
    with pytest.raises(ConfigError):
        validate_model_id(bad)


def test_rpc_servers_from_a_flag_the_environment_or_the_config_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert load_settings(["--rpc", "127.0.0.1:50052,gpu-box:50053"]).rpc == [
        "127.0.0.1:50052",
        "gpu-box:50053",
    ]
    monkeypatch.setenv("ASSISTANT_RPC", "10.0.0.5:50052")
    assert load_settings([]).rpc == ["10.0.0.5:50052"]
    monkeypatch.delenv("ASSISTANT_RPC")
    config = tmp_path / "c.toml"
    config.write_text('rpc = ["[::1]:50052"]\n')
    assert load_settings(["--config", str(config)]).rpc == ["[::1]:50052"]
    with pytest.raises(ConfigError, match="'gpu-box' is not HOST:PORT"):
        load_settings(["--rpc", "gpu-box"])


def test_upstreams_from_flags_the_environment_and_config_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        '[[upstreams]]\nurl = "https://box:8377/v1"\napi_key_env = "BOX_KEY"\n'
        'model = "qwen3-coder"\n'
    )
    monkeypatch.setenv("BOX_KEY", "from-the-environment")
    monkeypatch.setenv("ASSISTANT_UPSTREAMS", "http://other:8080/v1")
    settings = load_settings(["--config", str(config), "--upstream", "http://first:8377/v1"])
    assert [e.url for e in settings.upstream_entries()] == [
        "http://first:8377/v1",
        "http://other:8080/v1",
    ]
    monkeypatch.delenv("ASSISTANT_UPSTREAMS")
    [entry] = load_settings(["--config", str(config)]).upstream_entries()
    assert (entry.model, entry.key(None)) == ("qwen3-coder", "from-the-environment")
    config.write_text('[[upstreams]]\nurl = "https://box:8377/v1"\nroles = ["embeddings"]\n')
    assert load_settings(["--config", str(config)]).upstream_roles() == {"embeddings"}
    config.write_text('[[upstreams]]\nurl = "https://box:8377/v1"\nroles = ["images"]\n')
    with pytest.raises(ConfigError, match="roles"):
        load_settings(["--config", str(config)])
    with pytest.raises(ConfigError, match="ending in /v1"):
        load_settings(["--upstream", "http://box:8377"])
