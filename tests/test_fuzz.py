"""Generated hostile requests against a running daemon: never a 5xx, and it keeps serving."""

from __future__ import annotations

import json

import httpx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.daemons import Daemon

ENDPOINTS = ["/v1/chat/completions", "/v1/completions", "/infill", "/v1/embeddings"]
KEYS = [
    "model",
    "messages",
    "prompt",
    "suffix",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "top_k",
    "stop",
    "seed",
    "n",
    "echo",
    "input",
    "encoding_format",
    "input_prefix",
    "input_suffix",
    "input_extra",
    "role",
    "content",
    "logprobs",
    "tools",
]

scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=40)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
messages = st.lists(
    st.fixed_dictionaries(
        {"role": st.sampled_from(["user", "system", "assistant", "x", 3]), "content": json_values}
    ),
    max_size=3,
)
# Lengths are always bounded so a body that happens to be valid answers in a few tokens.
token_limits = st.one_of(st.integers(-3, 4), json_values)
bodies = st.fixed_dictionaries(
    {"max_tokens": token_limits, "n_predict": token_limits},
    optional={
        "messages": messages | json_values,
        **{k: json_values for k in KEYS if k != "messages"},
    },
)


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    body=bodies,
    raw=st.one_of(st.none(), st.binary(max_size=64)),
)
def test_generated_requests_never_get_a_5xx(
    smol: Daemon, endpoint: str, body: dict, raw: bytes | None
) -> None:
    if body.get("max_tokens") is None:
        body["max_tokens"] = 2
    try:
        content = raw if raw is not None else json.dumps(body, allow_nan=True).encode()
    except (ValueError, OverflowError):
        content = b"{}"
    response = httpx.post(
        smol.url + endpoint,
        content=content,
        timeout=60,
        headers={"content-type": "application/json"},
    )
    assert response.status_code < 500, (endpoint, body, response.text)
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and error["type"]


def test_still_serving_after_the_fuzzing(smol: Daemon) -> None:
    assert httpx.get(smol.url + "/health").json() == {"status": "ok"}
    reply = httpx.post(smol.v1 + "/completions", json={"prompt": "1, 2,", "max_tokens": 2})
    assert reply.status_code == 200
