"""Profiles: what the user wants from the daemon (speed or quality, latency targets, memory,
which models, how eagerly to shift), as a TOML file that can be edited while it runs.

A name resolves to the user's copy in the config directory first, then the shipped one in
profiles/. Errors carry the file and line so a bad edit can be found and fixed; the caller
keeps the previous profile running.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError

from assistantd.errors import ProfileError
from assistantd.resources import profiles_dir
from assistantd.settings import Settings

SHIPPED_DIR = profiles_dir()
DEFAULT_PROFILE = "balanced"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Targets(_Section):
    ttft_p95_ms: float = Field(
        2000, gt=0, description="p95 time to first token for a prompt of the reference size."
    )
    reference_prompt_tokens: int = Field(
        1000, ge=1, description="Prompt size the TTFT target is stated for."
    )
    decode_tok_s: float = Field(10, ge=0, description="Slowest acceptable median decode speed.")


class Memory(_Section):
    """RAM budget = min(RAM free now, (1 - ram_reserve_share) x total RAM) - ram_reserve: what
    the OS, an IDE and a browser hold is counted once, as measured or as the share of the
    machine they take, whichever is more (they may not be running yet when the plan is made),
    and ram_reserve stays free on top. 16 GB: at least 6 GB left to them; 64 GB: 18 GB."""

    ram_reserve: ByteSize = Field(
        ByteSize(2 * 1024**3), description="RAM always left free beyond what other programs hold."
    )
    ram_reserve_share: float = Field(
        0.25,
        ge=0,
        lt=1,
        description="Share of total RAM the OS, an IDE and a browser are taken to hold, even "
        "when less is in use when the plan is made.",
    )
    vram_reserve: ByteSize = Field(ByteSize(512 * 1024**2), description="VRAM left free per GPU.")
    ram_budget: ByteSize | None = Field(None, description="Use exactly this much RAM.")
    vram_budget: ByteSize | None = Field(None, description="Use exactly this much VRAM.")


class Models(_Section):
    families: tuple[str, ...] = Field((), description="Catalog families allowed (empty: all).")
    max_params_b: float | None = Field(
        None, gt=0, description="Largest model allowed, in billions of parameters."
    )


class Shift(_Section):
    window_s: float = Field(60, gt=0, description="Targets are judged over this many seconds.")
    min_requests: int = Field(5, ge=1, description="Requests a window needs before judging.")
    hysteresis: float = Field(
        0.2, ge=0, lt=1, description="Headroom a bigger rung must be predicted to keep."
    )
    cooldown_s: float = Field(120, ge=0, description="Least time between two shifts.")
    memory_check_s: float = Field(5, gt=0, description="How often free memory is checked.")


class Start(_Section):
    """A first run without the planned models on disk: serve what arrives quickly, grow into
    the plan in the background (read at start; editing it later changes nothing until then)."""

    progressive: bool = Field(
        True,
        description="Serve each role's best rung that arrives quickly, then download the planned "
        "ones in the background and shift up to each; false: wait for the planned models.",
    )
    quick_s: float = Field(
        60, gt=0, description="Quickly: what the download rate measured at start brings in this."
    )
    quick_bytes: ByteSize | None = Field(
        None, description="Quickly, as a fixed size instead of the measured rate (e.g. '2GiB')."
    )


class AutocompleteTargets(Targets):
    """Autocomplete runs on every typing pause: judged on TTFT for a short FIM prompt."""

    ttft_p95_ms: float = Field(
        1000, gt=0, description="p95 time to first token for a FIM prompt of the reference size."
    )
    reference_prompt_tokens: int = Field(
        256, ge=1, description="New (uncached) FIM prompt tokens the TTFT target is stated for."
    )
    decode_tok_s: float = Field(15, ge=0, description="Slowest acceptable median decode speed.")


class RoleSection(_Section):
    """What one role may use and must reach; unset keys take the profile's top-level value."""

    enabled: bool = Field(True, description="Serve this role (false: off, with the reason shown).")
    prefer: Literal["speed", "balanced", "quality"] | None = None
    n_ctx: int | None = Field(None, ge=256, le=1_048_576)
    slots: int | None = Field(None, ge=1, le=16, description="Slots of this role's worker.")
    models: Models | None = None


class AutocompleteRole(RoleSection):
    prefer: Literal["speed", "balanced", "quality"] | None = "speed"
    n_ctx: int | None = Field(4096, ge=256, le=1_048_576)
    slots: int | None = Field(2, ge=1, le=16)
    targets: AutocompleteTargets = AutocompleteTargets()
    memory_share: float = Field(
        0.3,
        ge=0,
        le=1,
        description="Autocomplete's claim: the share of the budget (VRAM; on Apple the Metal "
        "working set; without a GPU, RAM) a FIM model may take from chat's choice.",
    )


class EmbeddingsRole(RoleSection):
    n_ctx: int | None = Field(2048, ge=256, le=1_048_576)
    slots: int | None = Field(1, ge=1, le=16)


class Roles(_Section):
    """Chat takes the profile's top level; autocomplete and embeddings have their own sections."""

    autocomplete: AutocompleteRole = AutocompleteRole()
    embeddings: EmbeddingsRole = EmbeddingsRole()


class Profile(_Section):
    """One profile file. Unknown keys are errors, so a typo never silently does nothing."""

    prefer: Literal["speed", "balanced", "quality"] = "balanced"
    n_ctx: int = Field(8192, ge=256, le=1_048_576)
    speculative: Literal["auto", "off", "ngram", "draft"] = Field(
        "auto",
        description="Speculative decoding: auto guesses where it pays on this device (and loads "
        "autocomplete's model as chat's draft where it is of chat's family and predicted to "
        "pay); ngram only the request's own text; draft a draft model at every step; off.",
    )
    targets: Targets = Targets()
    memory: Memory = Memory()
    models: Models = Models()
    shift: Shift = Shift()
    start: Start = Start()
    roles: Roles = Roles()

    # Where it came from, for /status; not a TOML key.
    name: str = Field("", exclude=True)
    path: Path | None = Field(None, exclude=True)

    def for_role(self, role: str) -> Profile:
        """This profile as one role sees it: the role's own section over the top level, so the
        planner and the policy read one shape for every role."""
        if role == "chat":
            return self
        section: RoleSection = getattr(self.roles, role)
        update: dict[str, Any] = {
            "prefer": section.prefer or self.prefer,
            "n_ctx": section.n_ctx or self.n_ctx,
            "models": section.models or self.models,
        }
        if isinstance(section, AutocompleteRole):
            update["targets"] = section.targets
        return self.model_copy(update=update)

    def role_enabled(self, role: str) -> bool:
        return role == "chat" or bool(getattr(self.roles, role).enabled)

    def role_slots(self, role: str, default: int) -> int:
        return default if role == "chat" else (getattr(self.roles, role).slots or default)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            **self.model_dump(mode="json"),
        }


def with_overrides(profile: Profile, settings: Settings) -> Profile:
    """The profile with settings the user gave explicitly (flags, environment) laid over it;
    an unset setting is None and leaves the profile's value."""

    def given(*names: str) -> dict[str, Any]:
        return {n: v for n in names if (v := getattr(settings, n)) is not None}

    top = given("prefer", "n_ctx", "speculative")
    memory = given("ram_reserve", "vram_reserve", "ram_budget", "vram_budget")
    targets = {"decode_tok_s": v} if (v := settings.min_tok_s) is not None else {}
    return profile.model_copy(
        update={
            **top,
            "memory": profile.memory.model_copy(update=memory),
            "targets": profile.targets.model_copy(update=targets),
        }
    )


def active_profile(settings: Settings, name_or_path: str | None = None) -> Profile:
    """The profile the settings name (or the one given), with explicit settings over it."""
    profile = load(name_or_path or settings.profile, settings.config_dir)
    return with_overrides(profile, settings)


def user_dir(config_dir: Path) -> Path:
    return config_dir / "profiles"


def resolve(name_or_path: str, config_dir: Path) -> Path:
    """A .toml path as given; a name → the user's copy if there is one, else the shipped one."""
    if name_or_path.endswith(".toml"):
        return Path(name_or_path).expanduser().resolve()
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name_or_path):
        raise ProfileError(
            f"'{name_or_path}' is not a profile name (letters, digits, - and _) "
            "nor a path ending in .toml"
        )
    for folder in (user_dir(config_dir), SHIPPED_DIR):
        candidate = folder / f"{name_or_path}.toml"
        if candidate.is_file():
            return candidate
    shipped = sorted(p.stem for p in SHIPPED_DIR.glob("*.toml") if p.stem != "catalog")
    raise ProfileError(
        f"no profile named '{name_or_path}' in {user_dir(config_dir)} or {SHIPPED_DIR}; "
        f"shipped profiles: {', '.join(shipped)}"
    )


def load(name_or_path: str, config_dir: Path) -> Profile:
    path = resolve(name_or_path, config_dir)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror}", path=path) from None
    return parse(text, path, name=path.stem)


def parse(text: str, path: Path, name: str) -> Profile:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = _decode_error_line(exc, text)
        message = f"not valid TOML: {_strip_position(exc)}"
        raise ProfileError(message, path=path, line=line) from None
    if "name" in data or "path" in data:
        key = "name" if "name" in data else "path"
        raise ProfileError(f"unknown key '{key}'", path=path, line=_line_of(text, (key,))) from None
    try:
        return Profile.model_validate({**data, "name": name, "path": path})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(str(p) for p in err["loc"])
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        dotted = ".".join(loc)
        more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ProfileError(
            f"{dotted}: {message}{more}", path=path, line=_line_of(text, loc)
        ) from None


def _decode_error_line(exc: tomllib.TOMLDecodeError, text: str) -> int | None:
    lineno = getattr(exc, "lineno", None)  # Python ≥ 3.14
    if isinstance(lineno, int):
        return lineno
    found = re.search(r"at line (\d+)", str(exc))
    if found:
        return int(found.group(1))
    return max(len(text.splitlines()), 1) if "end of document" in str(exc) else None


def _strip_position(exc: tomllib.TOMLDecodeError) -> str:
    return re.sub(r"\s*\(at line \d+, column \d+\)", "", str(exc))


def _line_of(text: str, loc: tuple[str, ...]) -> int | None:
    """Line of `key` inside `[section]` (or at top level) for an error's location."""
    if not loc:
        return None
    section, key = (".".join(loc[:-1]), loc[-1]) if len(loc) > 1 else ("", loc[0])
    current = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        header = re.fullmatch(r"\[\s*([A-Za-z0-9_.-]+)\s*\]\s*(#.*)?", line)
        if header:
            current = header.group(1)
            if not section and current == key:
                return number
            continue
        found = re.match(r"([A-Za-z0-9_-]+)\s*=", line)
        if found and found.group(1) == key and current == section:
            return number
        if found and not section and current == "" and found.group(1) == key:
            return number
    return None
