"""`assistantctl doctor`: the three views (what the machine could build, what the installed
build lists, the cards the drivers see) turned into problems with one fix each. An NVIDIA card
cannot exist here: the cards and the CUDA decision below are stand-ins; the real run on this
machine (no GPU, a CPU build with RPC) is the last test."""

from __future__ import annotations

from assistantd.backend import Decision, Problem
from assistantd.cli.doctor import diagnose
from assistantd.devices.registry import DeviceList, LlamaDevice
from assistantd.planning.hardware import GPU
from tests.support.daemons import run_ctl

GiB = 1024**3
CARD = GPU("nvidia", "NVIDIA GeForce RTX 4070", 12 * GiB, 11 * GiB, driver="560.35.03")
CPU_BUILD = DeviceList(backends=["RPC", "CPU"])
CUDA = Decision("cuda", "nvidia-smi lists a GPU; nvcc found", ["-DGGML_CUDA=on", "-DGGML_RPC=on"])


def test_a_cpu_build_on_an_nvidia_machine_is_a_problem_with_the_rebuild_command() -> None:
    report = diagnose(CUDA, CPU_BUILD, [CARD], [])
    assert report.unused_gpu
    assert ("this machine can use cuda, but the installed build is cpu",
            "scripts/setup.sh --backend cuda") in report.problems  # fmt: skip
    assert "card: nvidia NVIDIA GeForce RTX 4070" in report.text()


def test_a_card_that_cannot_be_built_for_names_what_to_install() -> None:
    cpu = Decision(
        "cpu",
        "NVIDIA driver found, but no CUDA toolkit",
        ["-DGGML_RPC=on"],
        problems=[Problem("no CUDA compiler (nvcc)", "sudo apt install nvidia-cuda-toolkit")],
    )
    report = diagnose(cpu, CPU_BUILD, [CARD], [])
    assert report.unused_gpu
    assert (
        "the NVIDIA GeForce RTX 4070 is not used by this build",
        "sudo apt install nvidia-cuda-toolkit",
    ) in report.problems


def test_a_cuda_build_that_lists_the_card_has_no_problem() -> None:
    listed = DeviceList(
        devices=[LlamaDevice("CUDA0", CARD.name, "gpu", "CUDA", 10 * GiB, 12 * GiB)],
        backends=["CUDA", "RPC", "CPU"],
    )
    report = diagnose(CUDA, listed, [CARD], [])
    assert not report.unused_gpu and report.problems == []
    assert "llama.cpp device: CUDA0" in report.text()


def test_a_build_without_rpc_and_a_silent_rpc_server_each_name_their_fix() -> None:
    cpu = Decision("cpu", "no GPU", ["-DGGML_RPC=on"])
    report = diagnose(cpu, DeviceList(backends=["CPU"]), [], ["10.0.0.5:50052"])
    assert not report.unused_gpu
    fixes = dict(report.problems)
    assert any("no RPC backend" in what for what in fixes)
    assert fixes["the RPC device 10.0.0.5:50052 did not answer"] == (
        "on that machine: assistantctl device serve --port 50052"
    )


def test_doctor_on_this_machine() -> None:
    done = run_ctl("doctor")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "backend built: cpu (ggml backends: RPC, CPU)" in done.stdout
    assert "no problems found" in done.stdout
