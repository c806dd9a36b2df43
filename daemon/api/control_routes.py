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
from assistantd.api.status import (
    DeviceStatus,
    DeviceUse,
    MemoryStatus,
    ModelStatus,
    QueueStatus,
    RoleStatus,
    StatusReport,
    WorkerStatus,
)
from assistantd.api.streaming import read_body
from assistantd.control.controller import Controller
from assistantd.control.state import DaemonState
from assistantd.errors import ShiftRefused
from assistantd.planning.hardware import Machine
from assistantd.planning.roles import ROLES
from assistantd.vocab import Role
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


def _role_status(state: DaemonState, role: Role) -> RoleStatus:
    served = state.served.get(role)
    note = state.role_notes.get(role)
    if served is None:
        return RoleStatus(role=role, served_by=None, model=None, note=note)
    sup, control = served.supervisor, state.controls.get(served.role)
    worker = sup.worker
    pid = worker.pid if worker and not worker.exited else None
    current = control.current if control else None
    planned = (state.provision.plan or {}).get("roles", {}).get(served.role, {})
    return RoleStatus(
        role=role,
        served_by=served.role,
        model=served.model_id,
        note=note,
        state=sup.state,
        quant=current.quant if current else None,
        placement=current.placement if current else None,
        fim=sup.worker_info.get("fim"),
        slots=served.slots,
        n_ctx=served.n_ctx,
        queue=QueueStatus(
            active=served.admission.active,
            waiting=served.admission.waiting,
            capacity=state.settings.queue_size,
        ),
        worker_pid=pid,
        worker_rss_bytes=resident_bytes(pid),
        estimated_bytes=current.estimated_bytes if current else planned.get("estimated_bytes"),
        control=control.to_json() if control and served.role == role else None,
        devices=device_use(served.estimate, sup.worker_info.get("allocated") or {}),
        n_gpu_layers=sup.worker_info.get("n_gpu_layers"),
        n_cpu_moe=sup.worker_info.get("n_cpu_moe"),
    )


def device_use(
    estimate: list[dict[str, Any]], allocated: dict[str, dict[str, int]]
) -> list[DeviceUse]:
    """The plan's bytes per device beside llama.cpp's own figures, by device name."""
    kinds = ("weights", "kv", "compute")
    names = [d["device"] for d in estimate] + [
        n for n in allocated if n not in {d["device"] for d in estimate}
    ]
    by_name = {d["device"]: d for d in estimate}
    found = []
    for name in names:
        planned = by_name.get(name)
        found.append(
            DeviceUse(
                device=name,
                layers=planned["layers"] if planned else None,
                estimated={k: int(planned[f"{k}_bytes"]) for k in (*kinds, "total")}
                if planned
                else None,
                allocated=allocated.get(name),
            )
        )
    return found


def machine_devices(machine: Machine | None) -> list[DeviceStatus]:
    return [
        DeviceStatus(
            name=g.name,
            device=g.device,
            backend=g.backend,
            free_bytes=g.free_bytes,
            total_bytes=g.vram_bytes,
            usable=g.usable,
            endpoint=g.endpoint,
        )
        for g in (machine.gpus if machine else [])
    ]


@router.get("/status", response_model=StatusReport, response_model_exclude_none=False)
async def status(state: State) -> StatusReport:
    settings = state.settings
    chat = state.served.get("chat")
    chat_control = state.controls.get("chat")
    report = StatusReport(
        state=state.state,
        endpoint=f"{settings.base_url}/v1",
        pid=os.getpid(),
        provision=state.provision.to_json(),
        queue=QueueStatus(
            active=chat.admission.active if chat else 0,
            waiting=chat.admission.waiting if chat else 0,
            capacity=settings.queue_size,
        ),
        control=chat_control.to_json() if chat_control is not None else None,
        roles={role: _role_status(state, role) for role in ROLES},
        cores={"share": state.cores.enabled, "holds": state.cores.holds},
        backend=state.machine.backend or None if state.machine else None,
        devices=machine_devices(state.machine),
        **state.stats.snapshot(),
    )
    report.upstreams = [rung.to_json() for rung in state.upstream_rungs()]
    if report.speculation is not None and chat is not None:  # n-gram, and a draft model?
        spec = chat.supervisor.spec
        report.speculation["mode"] = spec.speculative
        report.speculation["draft_model"] = spec.draft_model and spec.draft_model.name
        planned = (state.provision.plan or {}).get("speculation") or {}
        report.speculation["plan"] = planned.get("why")
    for key in report.keys:
        key["in_flight"] = state.share.in_flight[key["name"]]
    if chat is None:
        return report
    sup = chat.supervisor
    worker = sup.worker
    info = sup.worker_info
    pid = worker.pid if worker and not worker.exited else None
    plan = state.provision.plan or {}
    report.model = ModelStatus(
        id=chat.model_id,
        path=str(sup.spec.model_path),
        n_ctx=chat.n_ctx,
        fim=info.get("fim"),
        chat_template=info.get("chat_template"),
        gpu_offload=info.get("gpu_offload"),
        threads=sup.spec.threads,
        slots=info.get("n_slots"),
        tools=info.get("tools"),
    )
    report.worker = WorkerStatus(pid=pid, restarts=sup.restarts, last_error=sup.last_error)
    # The chat worker's resident memory against the RAM budget the plan used (if planned).
    budget = (plan.get("budget") or {}).get("ram_bytes")
    report.memory = MemoryStatus(
        worker_rss_bytes=resident_bytes(pid),
        ram_budget_bytes=budget,
        estimated_bytes=(plan.get("roles", {}).get("chat") or plan.get("chosen") or {}).get(
            "estimated_bytes"
        ),
    )
    workers = [r for r in report.roles.values() if r.served_by == r.role]
    rss = [r.worker_rss_bytes for r in workers]
    report.memory_all_roles = MemoryStatus(
        worker_rss_bytes=sum(x for x in rss if x) if all(rss) else None,
        ram_budget_bytes=budget,
        estimated_bytes=plan.get("estimated_bytes_all_roles"),
    )
    return report


@router.get("/metrics")
async def metrics(state: State) -> Response:
    return Response(state.monitor.prometheus(), media_type=PROMETHEUS_TEXT)


def _control(state: DaemonState, role: Role = "chat") -> Controller:
    if not state.controls:
        raise ShiftRefused(f"assistantd is still {state.state}; try again once it serves")
    control = state.controls.get(role)
    if control is None:
        served = state.served.get(role)
        why = state.role_notes.get(role, "")
        owner = f"the {served.role} role's worker serves it" if served else "it is off"
        raise ShiftRefused(
            f"{role} has no worker of its own ({owner}{': ' + why if why else ''}); "
            "pin that role instead, or give this one its own model in the profile"
        )
    return control


@router.post("/control/use", openapi_extra=openapi.body(UseRequest))
async def use(request: Request, state: State) -> dict[str, Any]:
    body = await read_body(request, UseRequest, 4096)
    control = _control(state, body.role)
    event = await control.use(None if body.auto else body.model)
    return {"event": asdict(event) if event else None, "control": control.to_json()}


@router.post("/control/profile", openapi_extra=openapi.body(ProfileRequest))
async def switch_profile(request: Request, state: State) -> dict[str, Any]:
    body = await read_body(request, ProfileRequest, 4096)
    control = _control(state)
    await control.switch_profile(body.name)  # applies to every role
    return {"control": control.to_json()}
