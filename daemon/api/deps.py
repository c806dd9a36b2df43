"""What a route gets handed: the daemon's run-time state, set on the app by the factory."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from assistantd.control.state import DaemonState


async def daemon_state(request: Request) -> DaemonState:
    """Async on purpose: FastAPI runs a plain `def` dependency on a worker thread, a thread
    hop on every request for an attribute read."""
    state: DaemonState = request.app.state.daemon
    return state


State = Annotated[DaemonState, Depends(daemon_state)]
