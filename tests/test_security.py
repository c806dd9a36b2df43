"""Security defaults: loopback only without a key, Host and Origin allowlists, API keys."""

from __future__ import annotations

import subprocess
import sys

import httpx
import openai
import pytest

from tests.support.daemons import ROOT, Daemon


def test_a_non_loopback_bind_without_a_key_is_refused(models) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "assistantd",
            "--model",
            str(models["smollm2"]),
            "--host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2
    assert "without an API key" in result.stderr and "ASSISTANT_API_KEY" in result.stderr


@pytest.mark.parametrize("host", ["evil.example.com", "attacker.test:8377", "192.168.1.5"])
def test_foreign_host_headers_are_refused_against_dns_rebinding(smol: Daemon, host: str) -> None:
    response = httpx.get(smol.v1 + "/models", headers={"Host": host})
    assert response.status_code == 403
    assert "DNS rebinding" in response.json()["error"]["message"]


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8377", "[::1]:8377"])
def test_loopback_host_headers_pass(smol: Daemon, host: str) -> None:
    assert httpx.get(smol.v1 + "/models", headers={"Host": host}).status_code == 200


def test_web_pages_get_no_wildcard_cors_but_editor_webviews_do(smol: Daemon) -> None:
    evil = httpx.post(
        smol.v1 + "/completions",
        headers={"Origin": "https://evil.example.com"},
        json={"prompt": "x", "max_tokens": 1},
    )
    assert evil.status_code == 403
    assert "access-control-allow-origin" not in evil.headers
    webview = "vscode-webview://1abc2def"
    ok = httpx.get(smol.v1 + "/models", headers={"Origin": webview})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == webview
    preflight = httpx.options(
        smol.v1 + "/chat/completions",
        headers={"Origin": webview, "Access-Control-Request-Method": "POST"},
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == webview


def test_an_api_key_is_required_when_set(start_daemon, models) -> None:
    daemon = start_daemon(models["smollm2"], ASSISTANT_API_KEY="s3cret-key")
    assert httpx.get(daemon.url + "/health").status_code == 200  # probes need no key
    assert httpx.get(daemon.v1 + "/models").status_code == 401
    wrong = httpx.get(daemon.v1 + "/models", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
    assert wrong.json()["error"]["type"] == "authentication_error"  # as llama-server and OpenAI
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=daemon.v1, api_key="nope", max_retries=0).models.list()
    models_ = openai.OpenAI(base_url=daemon.v1, api_key="s3cret-key").models.list()
    assert models_.data


def test_a_chat_template_that_tries_to_run_code_is_stopped(start_daemon, models, tmp_path) -> None:
    """Templates render in jinja2's sandbox (CVE-2024-34359 was an unsandboxed render)."""
    evil = tmp_path / "evil-template.gguf"
    template = (
        "{% for m in messages %}{{ m.content }}{% endfor %}"
        "{{ ''.__class__.__mro__[1].__subclasses__() }}"
        "{{ cycler.__init__.__globals__.os.popen('touch " + str(tmp_path / "pwned") + "').read() }}"
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "gguf.scripts.gguf_new_metadata",
            "--force",
            "--chat-template",
            template,
            str(models["smollm2"]),
            str(evil),
        ],
        check=True,
        capture_output=True,
    )
    daemon = start_daemon(evil)
    response = httpx.post(
        daemon.v1 + "/chat/completions",
        timeout=60,
        json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
    )
    assert response.status_code == 400
    assert "unsafe" in response.json()["error"]["message"]
    assert not (tmp_path / "pwned").exists()
    assert httpx.get(daemon.url + "/health").json() == {"status": "ok"}
