"""llama.cpp's AMX kernels crash on the first prompt in the llama.cpp llama-cpp-python 0.3.36
vendors (ggml-org/llama.cpp#26954): setup builds without them where the compiler would compile
them (test_backend.py), and a build that has them anyway, one pip made without setup.sh on a
recent Xeon, loads models without extra buffer types, the only way into those kernels.

setup.sh's build here has no AMX kernels, and a test cannot rebuild llama-cpp-python: a build
that has them is a stand-in below (ggml.has_amx_kernels answering True). What the stand-in
replaces is checked against llama.cpp's own report of this build."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import llama_cpp.llama_cpp as low
import pytest
from llama_cpp import Llama

from assistantd.backend import Decision
from assistantd.cli.doctor import diagnose
from assistantd.devices import ggml
from assistantd.devices.registry import AMX_NOTE, DeviceList
from assistantd.worker import model_params
from assistantd.worker.model_params import Placement, placed


def test_the_probe_agrees_with_llamas_system_info() -> None:
    info = llama_cpp.llama_print_system_info().decode()
    assert ggml.has_amx_kernels() == ("AMX_INT8 = 1" in info)


def test_a_build_with_amx_kernels_loads_without_extra_buffer_types(
    models: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(model_params.ggml, "has_amx_kernels", lambda: True)
    original = low.llama_model_default_params
    with placed(Placement()):
        assert low.llama_model_default_params().use_extra_bufts is False
        llm = Llama(str(models["smollm2"]), n_ctx=512, n_threads=2, verbose=False)
    assert low.llama_model_default_params is original
    assert low.llama_model_default_params().use_extra_bufts is True
    assert "scripts/setup.sh builds one without them" in caplog.text
    prompt = "hello world " * 150  # a prompt batch: where the AMX kernels would run
    assert llm(prompt, max_tokens=4, temperature=0)["choices"][0]["text"]


def test_without_amx_kernels_nothing_changes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(model_params.ggml, "has_amx_kernels", lambda: False)
    original = low.llama_model_default_params
    with placed(Placement()):
        assert low.llama_model_default_params is original


def test_doctor_names_the_rebuild() -> None:
    listed = DeviceList(backends=["RPC", "CPU"], notes=[AMX_NOTE], amx_kernels=True)
    report = diagnose(Decision("cpu", "no GPU", ["-DGGML_RPC=on"]), listed, [], [])
    (problem,) = report.problems
    assert "AMX kernels" in problem[0] and problem[1].startswith("scripts/setup.sh")
    assert report.text().count("AMX kernels") == 1  # the note became the problem
