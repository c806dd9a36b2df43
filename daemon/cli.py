"""`assistantctl`: a thin client of the daemon's HTTP status API."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

import httpx

from daemon.settings import DEFAULT_PORT

EXIT_NOT_RUNNING = 3


def _default_url() -> str:
    host = os.environ.get("ASSISTANT_HOST", "127.0.0.1")
    port = os.environ.get("ASSISTANT_PORT", str(DEFAULT_PORT))
    return f"http://{host}:{port}"


def _fetch_status(url: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/status", timeout=5.0)
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def _human(status: dict[str, Any]) -> str:
    model = status["model"]
    worker = status["worker"]
    queue = status["queue"]
    uptime = status["uptime_s"]
    lines = [
        f"state      {status['state']}",
        f"model      {model['id']}  ({model['path']})",
        f"context    {model['n_ctx']} tokens, fim {'yes' if model['fim'] else 'no'}, "
        f"chat template {model['chat_template']}",
        f"endpoint   {status['endpoint']}",
        f"uptime     {int(uptime // 3600)}h {int(uptime % 3600 // 60)}m {int(uptime % 60)}s",
        f"requests   {status['requests_served']} served, {status['requests_cancelled']} cancelled, "
        f"{status['requests_failed']} failed, {status['requests_rejected']} rejected",
        f"queue      {queue['active']} running, {queue['waiting']} waiting (capacity {queue['capacity']})",
        f"worker     pid {worker['pid']}, {worker['restarts']} restarts",
    ]
    if worker["last_error"]:
        lines.append(f"last error {worker['last_error']}")
    return "\n".join(lines)


def cmd_status(args: argparse.Namespace) -> int:
    try:
        status = _fetch_status(args.url)
    except httpx.TransportError:
        print(
            f"assistantd is not running at {args.url}: start it with "
            "`assistantd --model PATH/TO/MODEL.gguf`",
            file=sys.stderr,
        )
        return EXIT_NOT_RUNNING
    except httpx.HTTPStatusError as exc:
        print(f"{args.url} answered {exc.response.status_code}: is it assistantd?", file=sys.stderr)
        return 1
    print(json.dumps(status, indent=2) if args.json else _human(status))
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
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
