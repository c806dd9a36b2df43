"""Closed vocabularies shared across the daemon, as `Literal` types (uvicorn's style): a typo
is a type error, and every place that switches on one of these reads the same list."""

from __future__ import annotations

from typing import Literal

Placement = Literal["gpu", "partial", "cpu"]
"""Where a model's layers run: all on the GPU, some (n_gpu_layers), or none."""

WorkerState = Literal["loading", "serving", "restarting", "shifting", "failed", "stopping"]
"""What the supervisor's worker is doing; `/health` is ok only when serving."""

ProvisionState = Literal["probing", "planning", "offline", "downloading", "error", "given"]
"""Where getting a model stands; "given" when --model named the file (nothing to fetch)."""

GrowState = Literal["waiting", "downloading", "shifting", "done", "failed"]
"""Progressive start, per role: the planned rung queued, downloading, being shifted to, served
now, or failed (the quick rung keeps serving; it is retried, and resumes on the next start)."""

ShiftDirection = Literal["down", "up", "pin", "profile", "memory"]
"""Why the model changed: slower/faster rung, a user's pin, a profile edit, memory pressure."""

Outcome = Literal["ok", "cancelled", "error", "invalid", "rejected"]
"""How a request ended: served, the client left, the server failed, the client's request was
wrong (a 4xx, not a server failure), or it was not admitted (503, retry later)."""

GenerationKind = Literal["chat", "completion", "infill"]
"""Which prompt a worker builds: a chat template, a raw/FIM completion, or llama.cpp infill."""

# A job the editor does; each has a model (its own worker, or another role's).
Role = Literal["chat", "autocomplete", "embeddings"]

# Stable ids an editor is configured with once; they follow the role through shifts.
ROLE_IDS: dict[str, Role] = {
    "assistantd-chat": "chat",
    "assistantd-autocomplete": "autocomplete",
    "assistantd-embed": "embeddings",
}
