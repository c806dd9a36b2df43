"""schemathesis against the daemon's own /openapi.json: generated requests for every
documented operation, bounded in count, and not one 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.support.daemons import Daemon

EXAMPLES = 15  # per operation: enough to reach every body field, a minute in all


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
                # Keep generations short: the point is the parsing, not the decoding.
                for key in ("max_tokens", "max_completion_tokens", "n_predict"):
                    if isinstance(case.body.get(key), int) and case.body[key] > 8:
                        case.body[key] = 8
            response = case.call(base_url=smol.url, timeout=120)
            assert response.status_code < 500, (case.path, case.body, response.text[:500])

        no_5xx()
        checked.append(operation.path)
    assert "/v1/chat/completions" in checked and "/infill" in checked
    assert smol.status()["state"] == "serving"
