"""Install assistantd as a user service: a systemd user unit on Linux, a launchd agent on macOS.

Every action is a list of files to write or remove and commands to run, so `--dry-run` can
print exactly what would happen and tests can check it without a service manager.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

from assistantd.errors import ConfigError
from assistantd.resources import templates_dir

TEMPLATES = templates_dir()
UNIT = "assistantd.service"
LABEL = "com.assistantd"


@dataclass
class Actions:
    writes: dict[Path, str] = field(default_factory=dict)
    removes: list[Path] = field(default_factory=list)
    commands: list[list[str]] = field(default_factory=list)

    def describe(self) -> str:
        lines = []
        for path, content in self.writes.items():
            lines += [f"# would write {path}:", content.rstrip(), ""]
        lines += [f"# would remove {path}" for path in self.removes]
        lines += [f"$ {shlex.join(cmd)}" for cmd in self.commands]
        return "\n".join(lines)

    def apply(self) -> None:
        for path, content in self.writes.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content)
        for path in self.removes:
            path.unlink(missing_ok=True)
        for cmd in self.commands:
            try:
                subprocess.run(cmd, check=True)
            except FileNotFoundError:
                raise ConfigError(f"{cmd[0]} is not available on this machine") from None
            except subprocess.CalledProcessError as exc:
                raise ConfigError(
                    f"`{shlex.join(cmd)}` failed with status {exc.returncode}"
                ) from None


def _exec_args(extra: list[str]) -> list[str]:
    return [str(Path(sys.executable).with_name("assistantd")), *extra]


class Systemd:
    def __init__(self, home: Path) -> None:
        self.unit_path = home / ".config" / "systemd" / "user" / UNIT

    def unit(self, extra: list[str], env: dict[str, str]) -> str:
        env_lines = "".join(f"Environment={shlex.quote(f'{k}={v}')}\n" for k, v in env.items())
        return (
            (TEMPLATES / UNIT)
            .read_text()
            .replace("@EXEC@", shlex.join(_exec_args(extra)))
            .replace("@ENV@", env_lines)
        )

    def actions(self, verb: str, extra: list[str], env: dict[str, str]) -> Actions:
        ctl = ["systemctl", "--user"]
        if verb == "install":
            return Actions(
                writes={self.unit_path: self.unit(extra, env)},
                commands=[[*ctl, "daemon-reload"], [*ctl, "enable", "--now", UNIT]],
            )
        if verb == "uninstall":
            return Actions(
                removes=[self.unit_path],
                commands=[[*ctl, "disable", "--now", UNIT], [*ctl, "daemon-reload"]],
            )
        if verb in ("start", "stop", "status"):
            return Actions(commands=[[*ctl, verb, UNIT]])
        if verb == "logs":
            return Actions(commands=[["journalctl", "--user", "-u", UNIT, "-f", "-n", "100"]])
        raise ValueError(verb)


class Launchd:
    def __init__(self, home: Path, uid: int) -> None:
        self.plist_path = home / "Library" / "LaunchAgents" / f"{LABEL}.plist"
        self.log_path = home / "Library" / "Logs" / "assistantd.log"
        self.domain = f"gui/{uid}"

    def plist(self, extra: list[str], env: dict[str, str]) -> str:
        args = "\n".join(f"    <string>{escape(a)}</string>" for a in _exec_args(extra))
        text = (
            (TEMPLATES / f"{LABEL}.plist")
            .read_text()
            .replace("@ARGS@", args)
            .replace("@LOG@", escape(str(self.log_path)))
        )
        if env:
            pairs = "".join(
                f"    <key>{escape(k)}</key>\n    <string>{escape(v)}</string>\n"
                for k, v in env.items()
            )
            text = text.replace(
                "  <key>RunAtLoad</key>",
                f"  <key>EnvironmentVariables</key>\n  <dict>\n{pairs}  </dict>\n"
                "  <key>RunAtLoad</key>",
            )
        return text

    def actions(self, verb: str, extra: list[str], env: dict[str, str]) -> Actions:
        target = f"{self.domain}/{LABEL}"
        if verb == "install":
            return Actions(
                writes={self.plist_path: self.plist(extra, env)},
                commands=[["launchctl", "bootstrap", self.domain, str(self.plist_path)]],
            )
        if verb == "uninstall":
            return Actions(removes=[self.plist_path], commands=[["launchctl", "bootout", target]])
        if verb == "start":
            return Actions(commands=[["launchctl", "kickstart", "-k", target]])
        if verb == "stop":
            return Actions(commands=[["launchctl", "kill", "SIGTERM", target]])
        if verb == "status":
            return Actions(commands=[["launchctl", "print", target]])
        if verb == "logs":
            return Actions(commands=[["tail", "-n", "100", "-f", str(self.log_path)]])
        raise ValueError(verb)


def manager(platform: str, home: Path, uid: int) -> Systemd | Launchd:
    if platform == "darwin":
        return Launchd(home, uid)
    if platform.startswith("linux"):
        return Systemd(home)
    raise ConfigError(f"no user service manager support for {platform}; run assistantd directly")
