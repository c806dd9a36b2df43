"""All daemon settings in one typed class: defaults < config file < ASSISTANT_* env < flags."""

from __future__ import annotations

import argparse
import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal

import psutil
from pydantic import (
    BaseModel,
    ByteSize,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from assistantd.errors import ConfigError
from assistantd.planning.catalog import DEFAULT_CATALOG
from assistantd.vocab import Role

# Neither Ollama (11434), LM Studio (1234) nor llama-server (8080).
DEFAULT_PORT = 8377

_config_file_values: ContextVar[dict[str, Any] | None] = ContextVar(
    "config_file_values", default=None
)


class _ConfigFileSource(PydanticBaseSettingsSource):
    """Values read from the TOML file named by --config / ASSISTANT_CONFIG."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_config_file_values.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_config_file_values.get() or {})


class UpstreamEntry(BaseModel):
    """One upstream as the config file's [[upstreams]] table gives it."""

    model_config = ConfigDict(extra="forbid")

    url: str
    api_key_env: str | None = None  # the variable holding its key (default ASSISTANT_UPSTREAM_KEY)
    # Chat by default. Embeddings only when asked: vectors from the upstream's model and from
    # the local fallback do not mix in one index. Autocomplete only when asked: its latency
    # budget is tight for a network hop.
    roles: list[Role] = ["chat"]
    model: str | None = None

    @field_validator("url")
    @classmethod
    def _v1(cls, url: str) -> str:
        if not url.startswith(("http://", "https://")) or not url.rstrip("/").endswith("/v1"):
            raise ValueError(f"'{url}' is not an http(s) base URL ending in /v1")
        return url.rstrip("/")

    def key(self, fallback: SecretStr | None) -> str | None:
        """From the named variable, else ASSISTANT_UPSTREAM_KEY: never from a file."""
        if self.api_key_env:
            return os.environ.get(self.api_key_env) or None
        return fallback.get_secret_value() if fallback else None


class Settings(BaseSettings):
    """How the daemon runs. Every field is also an ASSISTANT_<NAME> variable and a --flag."""

    model_config = SettingsConfigDict(env_prefix="ASSISTANT_", extra="forbid")

    host: str = Field("127.0.0.1", description="Address to listen on (loopback by default).")
    port: int = Field(
        DEFAULT_PORT, ge=1, le=65535, description="Port of the OpenAI-compatible API."
    )
    model: Path | None = Field(None, description="Path of a local .gguf file to serve.")
    model_id: str | None = Field(
        None, description="Model id clients use (default: derived from the file name)."
    )
    autocomplete_model: Path | None = Field(
        None,
        description="With --model: a local .gguf with FIM tokens for the autocomplete role, "
        "served by its own worker (default: the --model file serves autocomplete too).",
    )
    embeddings_model: Path | None = Field(
        None,
        description="With --model: a local .gguf for the embeddings role, served by its own "
        "worker (default: the --model file answers embeddings).",
    )
    threads: int = Field(
        default_factory=lambda: psutil.cpu_count(logical=False) or 1,
        ge=1,
        le=512,
        description="CPU threads for decoding (default: physical cores).",
    )
    n_ctx: int | None = Field(
        None, ge=256, le=1_048_576, description="Override the profile's context length (tokens)."
    )
    n_gpu_layers: int = Field(
        -1, ge=-1, description="Layers to offload to the GPU (-1 = all; ignored by CPU builds)."
    )
    any_model_name: bool = Field(
        False,
        description="Serve a request naming a model that is not served here (a script's "
        "gpt-3.5-turbo) by the endpoint's role, as llama-server does, instead of a 404.",
    )
    slots_endpoint: bool = Field(
        True, description="Answer llama-server's GET /slots (off: 501, as llama-server --no-slots)."
    )
    seed: int | None = Field(
        None, description="Sampling seed for requests that send none (llama-server's --seed)."
    )
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="Temperature for requests that send none (--temp)."
    )
    speculative: Literal["auto", "off", "ngram", "draft"] | None = Field(
        None,
        description="Speculative decoding (unset: the profile's `speculative`, auto in the shipped "
        "ones): n-gram drafts from a request's own prompt and answer (what edits repeat), and a "
        "draft model's guesses, verified in the slot's batch; auto drafts where the measured "
        "acceptance pays for what a longer batch costs on this device, ngram at every n-gram "
        "match, draft the draft model at every step.",
    )
    draft_model: Path | None = Field(
        None,
        description="A local .gguf of a smaller model from the same family (same tokenizer) "
        "that guesses tokens for the chat model to verify (llama-server's -md).",
    )
    share_cores: bool = Field(
        True,
        description="On a CPU, other workers pause while an autocomplete prompt is evaluated, "
        "so autocomplete answers fast while chat streams.",
    )
    slots: int = Field(
        3,
        ge=1,
        le=64,
        description="Requests a worker decodes at once: chat + autocomplete + one spare by "
        "default; each slot holds its own n_ctx of KV cache.",
    )
    queue_size: int = Field(
        16, ge=0, le=10_000, description="Generation requests that may wait; more get 503."
    )
    queue_timeout_s: float = Field(
        300.0, gt=0, description="Longest a request waits for its turn or for the model to load."
    )
    hand_over_streams: bool = Field(
        True,
        description="A streamed OpenAI answer's tokens are written to the client by the model "
        "worker itself, not relayed through the daemon (less CPU per token; false relays).",
    )
    max_body_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Largest request body accepted (bytes)."
    )
    worker_start_timeout_s: float = Field(
        180.0, gt=0, description="Longest a worker may take to load its model."
    )
    restart_backoff_s: float = Field(
        0.5, ge=0, description="First delay before restarting a crashed worker (doubles)."
    )
    max_restarts: int = Field(
        5, ge=0, description="Crashes tolerated within restart_window_s before giving up."
    )
    restart_window_s: float = Field(300.0, gt=0, description="Window for counting crashes.")
    log_level: str = Field("info", description="Log level: debug, info, warning or error.")
    catalog: Path = Field(
        DEFAULT_CATALOG, description="Model catalog (TOML) the planner chooses from."
    )
    profile: str = Field(
        "balanced",
        description="Profile name (speed, balanced, quality, or your own) or path of a .toml.",
    )
    prefer: Literal["speed", "balanced", "quality"] | None = Field(
        None, description="Override the profile: what the planner favours."
    )
    min_tok_s: float | None = Field(
        None, ge=0, description="Override the profile's decode target (tok/s)."
    )
    ram_reserve: ByteSize | None = Field(
        None, description="Override the profile: RAM left for other programs, e.g. 2GiB."
    )
    vram_reserve: ByteSize | None = Field(
        None, description="Override the profile: VRAM left free on each GPU, e.g. 512MiB."
    )
    ram_budget: ByteSize | None = Field(
        None, description="Use exactly this much RAM for the model (overrides the measurement)."
    )
    vram_budget: ByteSize | None = Field(
        None, description="Use exactly this much VRAM for the model (overrides the measurement)."
    )
    ollama_listen: str | None = Field(
        None,
        description="Also serve on this HOST:PORT (e.g. 127.0.0.1:11434, Ollama's own) for "
        "tools that assume Ollama's address; the same API, models and keys.",
    )
    rpc: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="llama.cpp RPC servers whose devices the plan may use, HOST:PORT "
        "(comma-separated; start one with `assistantctl device serve`).",
    )
    upstream: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="OpenAI-compatible base URL(s) ending in /v1 (a team's assistantd, "
        "llama-server, vLLM, Ollama) that serve chat first while they answer and keep the "
        "targets; the local model is the fallback (comma-separated).",
    )
    upstreams: Annotated[list[UpstreamEntry], NoDecode] = Field(
        default_factory=list,
        description="More upstreams: URLs (comma-separated, ASSISTANT_UPSTREAMS) or, in the "
        "config file, [[upstreams]] tables with url, api_key_env, roles, model.",
    )
    upstream_key: SecretStr | None = Field(
        None, description="Bearer key for the upstream (ASSISTANT_UPSTREAM_KEY); never shown."
    )
    upstream_model: str | None = Field(
        None, description="The upstream's model to use (default: the first it lists)."
    )
    config: Path | None = Field(None, description="TOML file with any of these settings.")
    api_key: SecretStr | None = Field(
        None, description="Require this bearer token (any token is accepted when unset)."
    )
    api_keys_file: Path | None = Field(
        None,
        description="A team's API keys, one NAME:KEY (or KEY) per line, re-read when it "
        "changes; the name shows in logs, /status and /metrics, never the key.",
    )
    key_max_requests: int = Field(
        8,
        ge=1,
        le=10_000,
        description="Requests one API key may have running and queued at once; more get 429.",
    )
    ssl_certfile: Path | None = Field(None, description="TLS certificate (PEM) to serve HTTPS.")
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM) to serve HTTPS.")
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra Host header names accepted on loopback (comma-separated).",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description=(
            "Browser origins allowed to call the API, besides vscode-webview://; "
            "`localhost` allows every loopback page and `*` every page."
        ),
    )
    config_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "assistantd"
        ),
        description="Where your own profiles live (profiles/NAME.toml overrides a shipped one).",
    )
    state_dir: Path = Field(
        default_factory=lambda: (
            Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
            / "assistantd"
        ),
        description="Where measured speeds and other state are kept.",
    )

    @field_validator("allowed_hosts", "allowed_origins", "rpc", "upstream", mode="before")
    @classmethod
    def _comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("upstreams", mode="before")
    @classmethod
    def _entries(cls, value: object) -> object:
        if isinstance(value, str):
            return [{"url": u.strip()} for u in value.split(",") if u.strip()]
        return value

    def upstream_entries(self) -> list[UpstreamEntry]:
        """--upstream URLs first, then the [[upstreams]] tables."""
        given = [UpstreamEntry(url=u, model=self.upstream_model) for u in self.upstream]
        return given + list(self.upstreams)

    def upstream_roles(self) -> set[Role]:
        """Roles an upstream serves first: their local models are planned as fallbacks."""
        return {role for entry in self.upstream_entries() for role in entry.roles}

    @field_validator("upstream")
    @classmethod
    def _urls(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")) or not url.rstrip("/").endswith("/v1"):
                raise ValueError(f"'{url}' is not an http(s) base URL ending in /v1")
        return [u.rstrip("/") for u in value]

    @field_validator("ollama_listen")
    @classmethod
    def _listen(cls, value: str | None) -> str | None:
        if value is not None:
            host, _, port = value.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"'{value}' is not HOST:PORT (e.g. 127.0.0.1:11434)")
        return value

    def listen_addresses(self) -> list[tuple[str, int]]:
        """Where the API is served: --host/--port, then --ollama-listen."""
        found = [(self.host, self.port)]
        if self.ollama_listen:
            host, _, port = self.ollama_listen.rpartition(":")
            found.append((host.strip("[]"), int(port)))
        return found

    @field_validator("rpc")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        for endpoint in value:
            host, _, port = endpoint.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"'{endpoint}' is not HOST:PORT (e.g. 127.0.0.1:50052)")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        value = value.lower()
        if value not in {"debug", "info", "warning", "error"}:
            raise ValueError("must be one of debug, info, warning, error")
        return value

    @model_validator(mode="after")
    def _draft_needs_a_model(self) -> Settings:
        # Without --model the plan may find one (autocomplete's model, of chat's family).
        if self.speculative == "draft" and self.draft_model is None and self.model is not None:
            raise ValueError(
                "speculative = draft needs a draft model: set --draft-model (ASSISTANT_DRAFT_MODEL)"
                " to a smaller .gguf of the same family, or choose auto, ngram or off"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _ConfigFileSource(settings_cls)

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_certfile else "http"
        return f"{scheme}://{host}:{self.port}"


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def build_parser(prog: str = "assistantd") -> argparse.ArgumentParser:
    """One --flag per settings field, with the field's description as help."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a local GGUF model to editors over an OpenAI-compatible API.",
        epilog="Every flag is also an environment variable: ASSISTANT_<FLAG_NAME>.",
    )
    for name, field in Settings.model_fields.items():
        default = "" if field.default_factory else f" [default: {field.default}]"
        parser.add_argument(
            _flag(name), dest=name, default=argparse.SUPPRESS, help=f"{field.description}{default}"
        )
    return parser


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(
            f"config file {path} does not exist: create it or drop --config"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(
            f"config file {path} has unknown setting(s) {', '.join(unknown)}; "
            f"known: {', '.join(Settings.model_fields)}"
        )
    return data


def load_settings(argv: list[str] | None = None) -> Settings:
    """Parse flags, read the config file they or the environment name, and validate it all."""
    flags = vars(build_parser().parse_args(argv))
    config_path = flags.get("config") or os.environ.get("ASSISTANT_CONFIG")
    file_values = _read_config_file(Path(config_path)) if config_path else {}
    token = _config_file_values.set(file_values)
    try:
        return Settings(**flags)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'settings'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    finally:
        _config_file_values.reset(token)
