"""Experts in RAM: the overrides llama.cpp's --n-cpu-moe would set, handed to a real load.
The placement itself, experts in RAM beside a device, runs on an RPC device in test_rpc.py."""

from __future__ import annotations

import re
from pathlib import Path

import llama_cpp.llama_cpp as low
from llama_cpp import Llama

from assistantd.worker.model_params import Placement, patterns, placed


def test_patterns_name_the_expert_tensors_of_the_first_layers() -> None:
    found = patterns(2)
    assert len(found) == 2
    assert re.fullmatch(found[1], "blk.1.ffn_down_exps.weight".removesuffix(".weight"))
    assert not any(re.fullmatch(p, "blk.2.ffn_up_exps") for p in found)
    assert not any(re.fullmatch(p, "blk.0.ffn_up") for p in found)  # dense FFN stays put


def test_a_model_loads_with_the_overrides_and_they_are_undone(models: dict[str, Path]) -> None:
    original = low.llama_model_default_params
    with placed(Placement(n_cpu_moe=3)):
        assert low.llama_model_default_params().tensor_buft_overrides  # set while loading
        llm = Llama(str(models["smollm2"]), n_ctx=64, verbose=False)
    assert low.llama_model_default_params is original
    assert not low.llama_model_default_params().tensor_buft_overrides
    assert llm.tokenize(b"hello")
