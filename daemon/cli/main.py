"""`assistantctl`: a thin client of the daemon's HTTP status API."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import httpx
import psutil
from pydantic import ValidationError

from assistantd.api.status import StatusReport
from assistantd.cli import doctor, editors, service, views
from assistantd.devices.serve import DEFAULT_PORT as DEFAULT_RPC_PORT
from assistantd.devices.serve import DeviceServer, check_host
from assistantd.errors import AssistantError
from assistantd.planning.catalog import load_catalog
from assistantd.planning.hardware import Machine, probe
from assistantd.planning.planner import gib
from assistantd.planning.profiles import active_profile
from assistantd.planning.roles import ROLES, RolesPlan, make_role_plans
from assistantd.planning.speeds import SPEEDS_FILE, MeasuredSpeeds
from assistantd.settings import DEFAULT_PORT, load_settings

EXIT_NOT_RUNNING = 3


def _default_url() -> str:
    host = os.environ.get("ASSISTANT_HOST", "127.0.0.1")
    port = os.environ.get("ASSISTANT_PORT", str(DEFAULT_PORT))
    return f"http://{host}:{port}"


class DaemonNotRunning(AssistantError):
    code = "not_running"


def _call(url: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """GET (or POST `body` to) the daemon; one message, and exit status 3, when nobody answers;
    the daemon's own error message when it refuses."""
    key = os.environ.get("ASSISTANT_API_KEY")
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        if body is None:
            response = httpx.get(f"{url}{path}", timeout=5.0, headers=headers)
        else:  # a shift waits for the new model to load
            response = httpx.post(f"{url}{path}", json=body, timeout=600.0, headers=headers)
    except httpx.TransportError:
        raise DaemonNotRunning(
            f"assistantd is not running at {url}: start it with `assistantd` "
            "(or `assistantctl service start`)"
        ) from None
    try:
        data = response.json()
    except ValueError:
        data = None
    if response.status_code != 200:
        message = data.get("error", {}).get("message") if isinstance(data, dict) else None
        raise AssistantError(message or f"{url} answered {response.status_code}: is it assistantd?")
    if not isinstance(data, dict):
        raise AssistantError(f"{url}{path} did not answer JSON: is it assistantd?")
    return data


def _fetch_status(url: str) -> StatusReport:
    raw = _call(url, "/status")
    try:
        return StatusReport.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise AssistantError(
            f"{url}/status answered in a shape this assistantctl does not read ({first['msg']} "
            f"at {where}); is it assistantd, and the same version as assistantctl?"
        ) from None


def cmd_use(args: argparse.Namespace) -> int:
    """`use [ROLE] MODEL[:QUANT]` or `use [ROLE] --auto`; ROLE defaults to chat."""
    words = list(args.words)
    role = words.pop(0) if words and words[0] in ROLES else "chat"
    if len(words) > 1 or (not words) == (not args.auto):
        raise AssistantError(
            f"give [ROLE] MODEL[:QUANT] or [ROLE] --auto (ROLE: {', '.join(ROLES)}; default chat)"
        )
    body: dict[str, Any] = {"role": role}
    body.update({"auto": True} if args.auto else {"model": words[0]})
    result = _call(args.url, "/control/use", body)
    event = result.get("event")
    control = result["control"]
    if args.auto:
        print(f"{role}: automatic shifting is on again; serving {control['current']}")
    elif event and not event["outcome"].startswith("done"):
        raise AssistantError(f"could not switch {role}: {event['outcome']}")
    else:
        print(
            f"{role}: pinned {control['current']} (`assistantctl use {role} --auto` hands "
            "control back)"
        )
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    control = _call(args.url, "/control/profile", {"name": args.name})["control"]
    profile = control["profile"]
    print(
        f"profile {profile['name']} ({profile['path']}) in force; serving {control['current']}. "
        "It lasts until assistantd restarts: set --profile or ASSISTANT_PROFILE to keep it."
    )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    status = _fetch_status(args.url)
    print(status.model_dump_json(indent=2) if args.json else views.status_text(status))
    return 0


def _plan_for(machine_file: Path | None, profile_name: str | None = None) -> RolesPlan:
    """The plan a daemon would make, for this or a described machine and any profile."""
    settings = load_settings([])
    profile = active_profile(settings, profile_name)
    machine = Machine.load(machine_file) if machine_file else probe(rpc=settings.rpc)
    speeds = MeasuredSpeeds(settings.state_dir / SPEEDS_FILE)
    return make_role_plans(
        load_catalog(settings.catalog),
        profile,
        machine,
        speeds,
        n_slots=settings.slots,
        upstream_roles=settings.upstream_roles(),
    )


def cmd_plan(args: argparse.Namespace) -> int:
    result = _plan_for(args.machine, args.profile)
    print(json.dumps(result.to_json(), indent=2) if args.json else views.roles_table(result))
    return 0 if result.roles["chat"].chosen else 1


def cmd_probe(args: argparse.Namespace) -> int:
    machine = probe(rpc=load_settings([]).rpc)
    if args.json:
        print(json.dumps(machine.to_json(), indent=2))
    else:
        print(
            f"RAM {gib(machine.ram_bytes)} ({gib(machine.available_bytes)} available), "
            f"{machine.cpu_cores} cores, {machine.cpu_model} [{' '.join(machine.cpu_flags)}], "
            f"~{machine.memory_bandwidth_gbs} GB/s"
        )
        print(f"llama-cpp-python backend: {machine.backend} ({', '.join(machine.backends)})")
        for gpu in machine.gpus:
            where = f" at {gpu.endpoint}" if gpu.endpoint else ""
            usable = "" if gpu.usable else ", NOT usable by this build"
            print(
                f"device {gpu.device or '-'}{where}: {gpu.vendor} {gpu.name}, "
                f"{gib(gpu.vram_bytes)} ({gib(gpu.free_bytes)} free){usable}"
            )
        for note in [*machine.device_notes, *filter(None, [machine.offload_note()])]:
            print(f"note: {note}")
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    report = doctor.run(load_settings([]).rpc + list(args.rpc))
    print(report.text())
    return 1 if report.unused_gpu else 0


def cmd_device(args: argparse.Namespace) -> int:
    """`device serve`: this machine's devices over llama.cpp's RPC protocol."""
    check_host(args.host, args.allow_network)
    server = DeviceServer(args.host, args.port, args.threads)
    server.bind()
    listed = ggml_devices()
    shown = ", ".join(f"{d.name} ({gib(d.free_bytes)} free)" for d in listed) or "the CPU"
    print(
        f"serving {shown} to llama.cpp RPC clients at {args.host}:{server.port} "
        f"({args.threads} threads); point assistantd at it: "
        f"assistantd --rpc {args.host}:{server.port}",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(lambda peer: print(f"client {peer}", flush=True))
    return 0


def ggml_devices() -> list[Any]:
    """This machine's GPU devices as llama.cpp lists them (the CPU is served when none)."""
    from assistantd.devices import ggml

    return [d for d in ggml.devices() if d.kind in ("gpu", "igpu")]


def cmd_connect(args: argparse.Namespace) -> int:
    status = _fetch_status(args.url)
    if args.editor in editors.OTHER_TOOLS:
        base = status.endpoint.removesuffix("/v1")
        print(editors.tool_settings(args.editor, base, os.environ.get("ASSISTANT_API_KEY")))
        return 0
    if status.model is None:
        print(
            f"assistantd is {status.state} and has no model yet; try again when "
            "`assistantctl status` says serving",
            file=sys.stderr,
        )
        return 1
    autocomplete = status.roles.get("autocomplete")
    fim = bool(autocomplete and autocomplete.served_by and autocomplete.fim)
    entries = editors.continue_entries(
        status.endpoint, os.environ.get("ASSISTANT_API_KEY"), autocomplete=fim
    )
    if args.write:
        backup = editors.merge_continue(args.config, entries)
        print(
            f"wrote the assistantd models to {args.config}"
            + (f" (backup: {backup})" if backup else "")
        )
    else:
        print(f"# Continue: save as {args.config}  (or run with --write to merge into it)")
        print(editors.continue_config(entries))
    print(editors.llama_vscode_settings(status.endpoint.removesuffix("/v1"), fim=fim))
    return 0


def cmd_service(args: argparse.Namespace) -> int:
    env = {
        k: v
        for k, v in os.environ.items()
        if k.startswith("ASSISTANT_") or k in ("HF_ENDPOINT", "HF_HUB_CACHE", "HF_HOME")
    }
    env.pop("ASSISTANT_API_KEY", None)  # never copied into a world-readable unit file
    mgr = service.manager(sys.platform, Path.home(), os.getuid())
    extra = shlex.split(args.daemon_args)
    actions = mgr.actions(args.action, extra, env if args.action == "install" else {})
    return _carry_out(actions, args.dry_run)


def cmd_logs(args: argparse.Namespace) -> int:
    mgr = service.manager(sys.platform, Path.home(), os.getuid())
    return _carry_out(mgr.actions("logs", [], {}), args.dry_run)


def _carry_out(actions: service.Actions, dry_run: bool) -> int:
    if dry_run:
        print(actions.describe())
    else:
        actions.apply()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistantctl", description="Control assistantd.")
    parser.add_argument(
        "--url", default=_default_url(), help="daemon address (default from ASSISTANT_HOST/PORT)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    status = commands.add_parser("status", help="what the daemon is doing")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=cmd_status)
    plan_cmd = commands.add_parser(
        "plan", help="which model and quant fit this (or a described) machine"
    )
    plan_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    plan_cmd.add_argument("--machine", type=Path, help="JSON file describing another machine")
    plan_cmd.add_argument(
        "--profile",
        help="plan for this profile (speed, balanced, quality, a name, or a .toml path)",
    )
    plan_cmd.set_defaults(func=cmd_plan)
    probe_cmd = commands.add_parser("probe", help="what this machine has")
    probe_cmd.add_argument("--json", action="store_true", help="machine-readable output")
    probe_cmd.set_defaults(func=cmd_probe)
    doc = commands.add_parser(
        "doctor", help="GPUs, the llama.cpp backend built, and the command that fixes each problem"
    )
    doc.add_argument("--rpc", action="append", default=[], help="also check this RPC device")
    doc.set_defaults(func=cmd_doctor)
    device = commands.add_parser("device", help="serve this machine's devices to llama.cpp")
    device_cmds = device.add_subparsers(dest="device_command", required=True)
    serve = device_cmds.add_parser(
        "serve", help="run llama.cpp's RPC server for this machine's GPUs (else its CPU)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_RPC_PORT, help="port (default 50052)")
    serve.add_argument(
        "--threads",
        type=int,
        default=psutil.cpu_count(logical=False) or 1,
        help="CPU threads when the CPU is served",
    )
    serve.add_argument(
        "--allow-network",
        action="store_true",
        help="serve on a non-loopback address (the protocol has no authentication)",
    )
    serve.set_defaults(func=cmd_device)
    use = commands.add_parser(
        "use", help="pin a role's model: [ROLE] MODEL[:QUANT], or [ROLE] --auto"
    )
    use.add_argument(
        "words",
        nargs="*",
        metavar="[ROLE] MODEL",
        help="chat (default), autocomplete or "
        "embeddings; then a catalog model id, optionally :QUANT",
    )
    use.add_argument("--auto", action="store_true", help="let assistantd choose and shift again")
    use.set_defaults(func=cmd_use)
    prof = commands.add_parser("profile", help="switch the running daemon to another profile")
    prof.add_argument("name", help="speed, balanced, quality, your own name, or a .toml path")
    prof.set_defaults(func=cmd_profile)
    connect = commands.add_parser("connect", help="point an editor at the daemon")
    connect.add_argument(
        "editor",
        choices=["continue", *editors.OTHER_TOOLS],
        help="the editor or tool to wire up (continue also prints llama.vscode and llama.vim)",
    )
    connect.add_argument(
        "--write", action="store_true", help="merge into Continue's config.yaml (a backup is kept)"
    )
    connect.add_argument(
        "--config",
        type=Path,
        default=Path.home() / ".continue" / "config.yaml",
        help="Continue config file (default ~/.continue/config.yaml)",
    )
    connect.set_defaults(func=cmd_connect)
    svc = commands.add_parser("service", help="install and control assistantd as a user service")
    svc.add_argument("action", choices=["install", "uninstall", "start", "stop", "status", "logs"])
    svc.add_argument("--dry-run", action="store_true", help="print what would be written and run")
    svc.add_argument(
        "--daemon-args",
        default="",
        help='extra assistantd flags for install, e.g. --daemon-args="--port 9000"',
    )
    svc.set_defaults(func=cmd_service)
    logs = commands.add_parser("logs", help="follow the daemon's log (service installs)")
    logs.add_argument("--dry-run", action="store_true", help="print the command instead")
    logs.set_defaults(func=cmd_logs)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        code = args.func(args)
    except DaemonNotRunning as exc:
        print(exc.message, file=sys.stderr)
        code = EXIT_NOT_RUNNING
    except AssistantError as exc:
        print(f"assistantctl: {exc.message}", file=sys.stderr)
        code = 2
    sys.exit(code)


if __name__ == "__main__":
    main()
