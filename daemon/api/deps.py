"""What a route gets handed: the daemon's run-time state, set on the app by the factory."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from assistantd.control.state import DaemonState


def daemon_state(request: Request) -> DaemonState:
    state: DaemonState = request.app.state.daemon
    return state


State = Annotated[DaemonState, Depends(daemon_state)]
