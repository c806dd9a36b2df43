"""Control and observability: `/health`, `/status`, `/metrics`, `/control/*`. None of these
waits for the generation queue."""

from __future__ import annotations

import os
from dataclasses import asdict
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from assistantd.api import openapi
from assistantd.api.deps import State
from assistantd.api.schemas import ProfileRequest, UseRequest
from assistantd.api.status import MemoryStatus, ModelStatus, QueueStatus, StatusReport, WorkerStatus
from assistantd.api.streaming import read_body
from assistantd.control.controller import Controller
from assistantd.control.state import DaemonState
from assistantd.errors import ShiftRefused
from assistantd.worker.memory import resident_bytes

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"

router = APIRouter()


@router.get("/health")
async def health(state: State) -> JSONResponse:
    current = state.state
    if current == "serving":
        return JSONResponse({"status": "ok"})
    body = {
        "status": current,
        "error": {"code": 503, "message": f"model is {current}", "type": "unavailable_error"},
    }
    return JSONResponse(body, status_code=503)


@router.get("/status", response_model=StatusReport, response_model_exclude_none=False)
async def status(state: State) -> StatusReport:
    settings = state.settings
    report = StatusReport(
        state=state.state,
        endpoint=f"{settings.base_url}/v1",
        pid=os.getpid(),
        provision=state.provision.to_json(),
        queue=QueueStatus(
            active=state.admission.active,
            waiting=state.admission.waiting,
            capacity=settings.queue_size,
        ),
        control=state.control.to_json() if state.control is not None else None,
        **state.stats.snapshot(),
    )
    sup = state.supervisor
    if sup is None:
        return report
    worker = sup.worker
    info = sup.worker_info
    pid = worker.pid if worker and not worker.exited else None
    plan = state.provision.plan or {}
    report.model = ModelStatus(
        id=state.model_id,
        path=str(sup.spec.model_path),
        n_ctx=state.n_ctx,
        fim=info.get("fim"),
        chat_template=info.get("chat_template"),
        gpu_offload=info.get("gpu_offload"),
        threads=sup.spec.threads,
        slots=info.get("n_slots"),
        tools=info.get("tools"),
    )
    report.worker = WorkerStatus(pid=pid, restarts=sup.restarts, last_error=sup.last_error)
    # The worker's resident memory against the RAM budget the plan used (if planned).
    report.memory = MemoryStatus(
        worker_rss_bytes=resident_bytes(pid),
        ram_budget_bytes=(plan.get("budget") or {}).get("ram_bytes"),
        estimated_bytes=(plan.get("chosen") or {}).get("estimated_bytes"),
    )
    return report


@router.get("/metrics")
async def metrics(state: State) -> Response:
    return Response(state.monitor.prometheus(), media_type=PROMETHEUS_TEXT)


def _control(state: DaemonState) -> Controller:
    if state.control is None:
        raise ShiftRefused(f"assistantd is still {state.state}; try again once it serves")
    return state.control


@router.post("/control/use", openapi_extra=openapi.body(UseRequest))
async def use(request: Request, state: State) -> dict[str, Any]:
    body = await read_body(request, UseRequest, 4096)
    control = _control(state)
    event = await control.use(None if body.auto else body.model)
    return {"event": asdict(event) if event else None, "control": control.to_json()}


@router.post("/control/profile", openapi_extra=openapi.body(ProfileRequest))
async def switch_profile(request: Request, state: State) -> dict[str, Any]:
    body = await read_body(request, ProfileRequest, 4096)
    control = _control(state)
    await control.switch_profile(body.name)
    return {"control": control.to_json()}
