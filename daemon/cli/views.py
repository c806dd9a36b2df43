"""What `assistantctl status` and `assistantctl plan` print for people (--json prints the
data itself)."""

from __future__ import annotations

import time
from typing import Any

from assistantd.api.status import ProgressiveStatus, RoleStatus, StatusReport
from assistantd.control.monitor import format_ms
from assistantd.planning.per_device import describe_placement
from assistantd.planning.planner import Plan, gib
from assistantd.planning.roles import RolesPlan


def _guesses(spec: dict[str, Any]) -> str:
    """Where the drafts come from: the request's own text, a draft model, or both."""
    model = spec.get("draft_model")
    if spec.get("mode") == "draft" and model:
        return f"the draft model {model}'s guesses"
    own = "n-gram drafts from each request's own text"
    return f"{own} and the draft model {model}" if model else own


def status_text(status: StatusReport) -> str:
    model, worker, queue, uptime = status.model, status.worker, status.queue, status.uptime_s
    lines = [f"state      {status.state}"]
    if model is not None:
        lines += [
            f"model      {model.id}  ({model.path})",
            f"context    {model.n_ctx} tokens × {model.slots or 1} slots, "
            f"fim {'yes' if model.fim else 'no'}, tools {model.tools or 'no'}, "
            f"chat template {model.chat_template}",
        ]
    else:
        lines.append("model      none yet (see provision below)")
    lines += [
        f"endpoint   {status.endpoint}",
        f"uptime     {int(uptime // 3600)}h {int(uptime % 3600 // 60)}m {int(uptime % 60)}s",
        f"requests   {status.requests_served} served, {status.requests_cancelled} cancelled, "
        f"{status.requests_failed} failed, {status.requests_rejected} rejected, "
        f"{status.requests_invalid} invalid",
        f"queue      {queue.active} running, {queue.waiting} waiting (capacity {queue.capacity})",
    ]
    spec = status.speculation or {}
    if spec.get("draft_tokens"):
        gain = spec.get("measured_gain")
        lines.append(
            f"speculate  {spec['draft_tokens']} tokens drafted, {spec['accepted_tokens']} "
            f"accepted ({spec['acceptance']:.0%}; {_guesses(spec)})"
            + (
                f"; answers with drafts {spec['decode_tok_s_with_drafts']} tok/s, without "
                f"{spec['decode_tok_s_without']} ({gain:.2f}x)"
                if gain
                else ""
            )
        )
    elif spec.get("plan"):  # nothing drafted yet: what the plan decided, and why
        lines.append(f"speculate  {spec.get('mode')}, nothing drafted yet; {spec['plan']}")
    if worker is not None:
        lines.append(f"worker     pid {worker.pid}, {worker.restarts} restarts")
    memory = status.memory
    if memory is not None and memory.worker_rss_bytes is not None:
        budget = memory.ram_budget_bytes
        lines.append(
            f"memory     {memory.worker_rss_bytes / 2**20:.0f} MiB resident"
            + (f" of a {gib(budget)} RAM budget" if budget else "")
        )
    if model is None:
        provision = status.provision
        lines.append(f"provision  {provision.get('state')}")
        lines += [f"note       {note}" for note in provision.get("notes", [])[-5:]]
    if worker is not None and worker.last_error:
        lines.append(f"last error {worker.last_error}")
    if status.progressive is not None:
        lines.extend(progressive_lines(status.progressive))
    if status.control:
        lines.extend(control_lines(status.control))
    for up in status.upstreams:
        serving = f"serving {up['serving']}" if up["serving"] else "standby (local serves)"
        health = "healthy" if up["healthy"] else f"down: {up['last_error']}"
        lines.append(
            f"upstream   {up['url']} ({up['label']}) for {up['role']}: {serving}; {health}"
        )
        about = up.get("about") or {}
        served = ", ".join(f"{r}={m}" for r, m in (about.get("roles") or {}).items() if m)
        lines.append(
            f"{'':11}{about.get('server', 'server not read yet')}"
            + (f" ({served})" if served else "")
            + (f", {about['model_file']}" if about.get("model_file") else "")
            + f"; models: {', '.join(up['models'][:6]) or 'none listed'}"
        )
        lines.append(f"{'':11}{latency_text(up['latency'])}")
        if up["shifts"]:
            lines.append(f"{'':11}last shift {shift_text(up['shifts'][0])}")
    for key in status.keys[:5]:
        lines.append(
            f"key        {key['name']}: {key['requests']} requests ({key['refused']} refused, "
            f"{key['failed']} failed), {key['completion_tokens']} tokens out, "
            f"{key.get('in_flight', 0)} in flight"
        )
    if status.backend or status.devices:
        lines += ["", f"backend    {status.backend or 'unknown'}", *device_lines(status)]
    if status.roles:
        lines += ["", "roles", *role_lines(status.roles)]
    return "\n".join(lines)


def _mib(n: int | None) -> str:
    return "?" if n is None else f"{n / 2**20:.0f}"


def device_lines(status: StatusReport) -> list[str]:
    """Each device with its free memory; a card the build cannot use says so."""
    lines = []
    for d in status.devices:
        where = f" at {d.endpoint}" if d.endpoint else ""
        use = "" if d.usable else "  NOT USABLE by this build (assistantctl doctor)"
        lines.append(
            f"device     {d.device or d.name}{where}: {_mib(d.free_bytes)} of "
            f"{_mib(d.total_bytes)} MiB free{use}"
        )
    return lines


def placement_lines(role: RoleStatus) -> list[str]:
    """Per device: layers, and MiB of weights / KV / compute, planned against allocated."""
    lines = []
    for d in role.devices:
        est, got = d.estimated or {}, d.allocated or {}
        parts = [f"{k} {_mib(est.get(k))}/{_mib(got.get(k))}" for k in ("weights", "kv", "compute")]
        layers = f"{d.layers} layers, " if d.layers is not None else ""
        lines.append(
            f"    on {d.device}: {layers}MiB estimated/allocated: {', '.join(parts)}, "
            f"total {_mib(est.get('total'))}/{_mib(got.get('total'))}"
        )
    return lines


def progressive_lines(progressive: ProgressiveStatus) -> list[str]:
    """What serves now, what downloads (percent, rate, ETA) and what comes next, per role."""
    rate = progressive.rate_bytes_per_s
    how = f"{rate / 2**20:.1f} MiB/s measured" if rate is not None else "set in the profile"
    lines = [f"start      progressive: first what arrives within "
             f"{progressive.quick_bytes / 2**20:.0f} MiB ({how})"]  # fmt: skip
    for role, g in progressive.roles.items():
        if g.next is None:
            lines.append(f"  {role:13}grew into {g.serving}")
            continue
        d = g.download
        if g.state == "downloading" and d and d.get("total_bytes"):
            eta = f"{d['eta_s']:.0f} s" if d.get("eta_s") is not None else "?"
            doing = (f"downloading {g.next}: {d['percent']:.1f}% of {_mib(d['total_bytes'])} MiB, "
                     f"{d['rate_bytes_per_s'] / 2**20:.1f} MiB/s, ETA {eta}")  # fmt: skip
        else:
            doing = f"next {g.next} ({g.state})"
        lines.append(f"  {role:13}serving {g.serving}; {doing}")
        if g.note:
            lines.append(f"  {'':13}{g.note}")
    return lines


def control_lines(control: dict[str, Any]) -> list[str]:
    """Profile, latency against its targets, and the last shifts with their reasons."""
    profile = control["profile"]
    lat = control["latency"]
    lines = [
        f"profile    {profile['name']} ({profile['path']}), prefer {profile['prefer']}; "
        f"mode {control['mode']}",
    ]
    if profile.get("error"):
        lines.append(f"  ERROR    {profile['error']['message']} (previous profile kept)")
    lines.append(f"latency    {latency_text(lat)}")
    if lat["missing"]:
        lines.append(f"  missing  {'; '.join(lat['missing'])}")
    if control.get("note"):
        lines.append(f"note       {control['note']}")
    lines += [f"shift      {shift_text(event)}" for event in control["shifts"][:5]]
    return lines


def latency_text(lat: dict[str, Any]) -> str:
    """A latency window against its targets, for the chat block and every role's."""
    decode = lat["decode_p50_tok_s"]
    return (
        f"last {lat['seconds']:g} s, {lat['requests']} requests: TTFT p50 "
        f"{format_ms(lat['ttft_p50_ms'])} / p95 {format_ms(lat['ttft_p95_ms'])} "
        f"(target p95 {format_ms(lat['target_ttft_p95_ms'])} at {lat['reference_prompt_tokens']} "
        f"prompt tokens); decode p50 {'–' if decode is None else f'{decode:.1f}'} tok/s "
        f"(target ≥ {lat['target_decode_tok_s']:g})"
    )


def shift_text(event: dict[str, Any]) -> str:
    when = time.strftime("%H:%M:%S", time.localtime(event["at"]))
    took = f" in {event['switch_s']:.1f} s" if event.get("switch_s") is not None else ""
    return f"{when} {event['direction']}: {event['reason']} [{event['outcome']}{took}]"


def plan_table(result: Plan) -> str:
    budget = result.budget
    lines = [
        f"budget: {gib(budget.ram_bytes)} RAM, {gib(budget.vram_bytes)} VRAM"
        + (" (unified memory)" if budget.unified else "")
        + f", context {result.n_ctx} tokens",
        *[f"note: {note}" for note in budget.notes],
        "",
        f"{'':2}{'model':32} {'quant':7} {'file':>9} {'RAM':>9} {'VRAM':>9} {'place':11} "
        f"{'tok/s':>6} {'TTFT':>7} {'quality':>7}  fits / reason",
    ]
    for index, c in enumerate(result.candidates):
        mark = "▶ " if index == 0 and c.fits else "  "
        size = ("~" if c.file_bytes_estimated else "") + gib(c.file_bytes).replace(" GiB", "G")
        if c.experts_in_ram:
            place = f"experts({c.n_cpu_moe})"  # the first N layers' experts in RAM
        else:
            place = c.placement + (f"({c.n_gpu_layers})" if c.placement == "partial" else "")
        ttft = f"{c.predicted_ttft_ms / 1000:.1f}s" if c.predicted_ttft_ms else "—"
        lines.append(
            f"{mark}{c.model:32} {c.quant:7} {size:>9} {gib(c.ram_bytes).replace(' GiB', 'G'):>9} "
            f"{gib(c.vram_bytes).replace(' GiB', 'G'):>9} {place:11} {c.predicted_tok_s:>6.1f} "
            f"{ttft:>7} {c.quality:>7.1f}  {'yes' if c.fits else 'no: ' + c.reason}"
        )
    lines.append("\n~ file size estimated from parameters × bits per weight (hub not consulted)")
    return "\n".join(lines)


def role_lines(roles: dict[str, RoleStatus]) -> list[str]:
    """One block per role: its model, memory, latency against its targets, last shift."""
    lines = []
    for role, r in roles.items():
        if r.served_by is None:
            lines.append(f"{role:13}off: {(r.note or 'no model').removeprefix('off: ')}")
            continue
        if r.served_by != role:
            lines.append(f"{role:13}{r.model}, on the {r.served_by} worker: {r.note or ''}")
            continue
        what = " ".join(x for x in (r.quant, r.placement) if x)
        memory = f"{r.worker_rss_bytes / 2**20:.0f} MiB" if r.worker_rss_bytes else "–"
        if r.estimated_bytes:
            memory += f" (planned {r.estimated_bytes / 2**20:.0f} MiB)"
        lines.append(
            f"{role:13}{r.model} {what} [{r.state}], {r.slots} slots × {r.n_ctx} tokens, "
            f"fim {'yes' if r.fim else 'no'}, {memory}"
        )
        lines += placement_lines(r)
        control = r.control or {}
        lat = control.get("latency")
        if lat:
            missing = f"; missing: {'; '.join(lat['missing'])}" if lat["missing"] else ""
            lines.append(f"{'':13}{latency_text(lat)}{missing}")
        shifts = control.get("shifts") or []
        if shifts:
            lines.append(f"{'':13}last shift {shift_text(shifts[0])}")
    return lines


def roles_table(result: RolesPlan) -> str:
    """The choice per role, then the chat role's whole ladder."""
    machine = result.chat.machine
    lines = [f"backend: {machine.backend or 'described machine'}"]
    lines += [
        f"device: {g.device or g.name}"
        + (f" at {g.endpoint}" if g.endpoint else "")
        + f", {gib(g.free_bytes)} free of {gib(g.vram_bytes)}"
        + ("" if g.usable else " (this build cannot use it: assistantctl doctor)")
        for g in machine.gpus
    ]
    lines += [f"note: {n}" for n in machine.device_notes]
    lines.append("roles:")
    for role in result.upstream_roles:
        lines.append(f"  {role:13}an upstream first (assistantctl status names it); local:")
    for role, choice in result.roles.items():
        if choice.chosen is None or choice.served_by is None:
            lines.append(f"  {role:13}— {choice.reason}")
        elif choice.served_by != role:
            lines.append(
                f"  {role:13}{choice.chosen.label}, on the {choice.served_by} worker: "
                f"{choice.reason}"
            )
        else:
            c = choice.chosen
            lines.append(
                f"  {role:13}{c.label} ({c.placement}, {gib(c.estimated_bytes)}, "
                f"{choice.slots} slots, TTFT {c.predicted_ttft_ms / 1000:.1f}s, "
                f"{c.predicted_tok_s:.1f} tok/s): {choice.reason}"
            )
            placed = describe_placement(c.devices)
            if placed:
                lines.append(f"  {'':13}{placed}")
    spec = result.speculation
    if spec is not None:
        lines.append(
            f"  {'speculate':13}{spec.mode}: n-gram guesses on an edit predicted "
            f"{spec.edit_gain:.2f}x; {spec.why}"
        )
    budget = result.budget.ram_bytes + result.budget.vram_bytes
    cache = len(result.workers) * result.prompt_cache_bytes
    lines.append(
        f"  all roles: {gib(result.estimated_bytes)} of {gib(budget)}"
        + (f"; evicted prompts kept in up to {gib(cache)} of what is left" if cache else "")
    )
    chat = result.roles["chat"].plan or result.chat
    return "\n".join(lines) + "\n\nchat ladder:\n" + plan_table(chat)
