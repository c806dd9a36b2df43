"""schemathesis against the daemon's own /openapi.json: generated requests for every
documented operation, bounded in count, and not one 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.daemons import Daemon

EXAMPLES = 15  # per operation: enough to reach every body field, a minute in all


def _keep_it_short(path: str, body: dict) -> None:
    """Short generations: the point is the parsing, not the decoding (a chat with no limit
    would run to the context end, and n choices multiply it)."""
    for key in ("max_tokens", "max_completion_tokens", "n_predict"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and (value < 0 or value > 8):
            body[key] = 8
    if path in ("/v1/chat/completions", "/v1/completions"):
        body.setdefault("max_tokens", 8)
    if path == "/infill":
        body.setdefault("n_predict", 8)
    for key in ("n", "n_cmpl"):
        if isinstance(body.get(key), int) and body[key] > 2:
            body[key] = 2


def test_no_generated_request_gets_a_5xx(smol: Daemon) -> None:
    schema = schemathesis.openapi.from_url(smol.url + "/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path.startswith("/control/"):
            continue  # they change what the daemon serves

        @settings(
            max_examples=EXAMPLES,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            derandomize=True,
            database=None,
        )
        @given(case=operation.as_strategy())
        def no_5xx(case: schemathesis.Case) -> None:
            if isinstance(case.body, dict):
                _keep_it_short(case.path, case.body)
            response = case.call(base_url=smol.url, timeout=120)
            assert response.status_code < 500, (case.path, case.body, response.text[:500])

        no_5xx()
        checked.append(operation.path)
    assert "/v1/chat/completions" in checked and "/infill" in checked
    assert smol.status()["state"] == "serving"
