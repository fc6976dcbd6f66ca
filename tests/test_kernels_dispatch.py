"""kernels/dispatch.py: which path the kernels take on a CUDA device, without needing one.

The decision is a plain function of (device type, choice, interpreter flag), so it is tested for "cuda" on a
CPU machine; the public use_triton_block() is tested on stand-ins that report a CUDA device. The CUDA default
must be the path VERIFIED records, and a Triton default must carry the date and card of the run that verified it.
"""
import types

import pytest
import torch

import crpo
import kernels
from kernels import dispatch


@pytest.fixture(autouse=True)
def fresh_choice(monkeypatch):
    monkeypatch.delenv(dispatch.ENV, raising=False)
    monkeypatch.setattr(dispatch, "_choice", None)


def on_cuda(*shape):
    """Stands in for a CUDA tensor where only the device is read (use_triton_block reads nothing else)."""
    return types.SimpleNamespace(device=torch.device("cuda"), shape=shape)


def test_cuda_default_is_the_verified_path():
    block = dispatch.VERIFIED["block"]
    assert dispatch.chosen_block_path() == block["path"]
    assert dispatch.block_path("cuda") == block["path"]
    for family in dispatch.VERIFIED.values():  # a Triton default needs the GPU run behind it
        assert family["path"] in dispatch.PATHS
        if family["path"] == "triton":
            assert family["date"] and family["card"] and family["software"] and family["evidence"]
    if not block["date"]:  # nothing verified the block kernels yet: the PyTorch formulas
        assert block["path"] == "torch" and "not yet verified" in block["evidence"]
    assert dispatch.logprobs_path("cuda") == dispatch.VERIFIED["logprobs"]["path"] == "triton"


def test_cuda_decision_with_the_flag_off_and_on(monkeypatch):
    default = dispatch.VERIFIED["block"]["path"]
    assert dispatch.block_path("cuda", None) == default  # no flag, no environment: the verified path
    assert dispatch.block_path("cuda", "triton") == "triton"
    assert dispatch.block_path("cuda", "torch") == "torch"
    dispatch.set_block_path("triton")  # crpo.py --kernels triton
    assert dispatch.block_path("cuda") == "triton"
    dispatch.set_block_path(None)  # flag not given: back to the default
    assert dispatch.block_path("cuda") == default
    monkeypatch.setenv(dispatch.ENV, "triton")  # the benchmarks' switch
    assert dispatch.block_path("cuda") == "triton"
    dispatch.set_block_path("torch")  # the flag wins over the environment
    assert dispatch.block_path("cuda") == "torch"
    with dispatch.block_path_override("triton"):
        assert dispatch.block_path("cuda") == "triton"
    assert dispatch.block_path("cuda") == "torch"
    dispatch.set_block_path(None)
    monkeypatch.setenv(dispatch.ENV, "auto")
    assert dispatch.block_path("cuda") == default
    monkeypatch.setenv(dispatch.ENV, "cuda")
    with pytest.raises(ValueError, match="KERNELS_BLOCK_PATH.*triton, torch"):
        dispatch.block_path("cuda")
    with pytest.raises(ValueError, match="triton, torch"):
        dispatch.set_block_path("fast")


def test_off_cuda_the_block_ops_take_triton_only_in_the_interpreter():
    assert dispatch.block_path("cpu", "triton") == "torch"
    assert dispatch.block_path("cpu", "triton", interpret=True) == "triton"
    assert dispatch.block_path("cpu", "torch", interpret=True) == "torch"
    assert dispatch.block_path("mixed", "triton", interpret=True) == "torch"
    assert dispatch.block_path("mps", "triton") == "torch"
    assert dispatch.logprobs_path("cpu") == "torch" and dispatch.logprobs_path("cpu", interpret=True) == "triton"


def test_use_triton_block_on_cuda_tensors_follows_the_choice(monkeypatch):
    if kernels.block_kernels() is None:
        pytest.skip("triton is not importable: the block ops never take the Triton path here")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x, w = on_cuda(4, 8), on_cuda(8)
    assert kernels.use_triton_block(x, w) == (dispatch.VERIFIED["block"]["path"] == "triton")
    with kernels.triton_block_path():
        assert kernels.use_triton_block(x, w)
        assert not kernels.use_triton_block(x, torch.ones(8))  # a CPU tensor among them: PyTorch path
        with kernels.torch_block_path():
            assert not kernels.use_triton_block(x, w)
    dispatch.set_block_path("triton")
    assert kernels.use_triton_block(x, w)
    dispatch.set_block_path("torch")
    assert not kernels.use_triton_block(x, w)


def test_crpo_kernels_flag_sets_the_choice_and_logs_it_on_cuda():
    assert crpo.parse_args(["--data", "x.jsonl"]).kernels is None
    args = crpo.parse_args(["--data", "x.jsonl", "--kernels", "triton"])
    lines = []
    kernels.select_block_path(args.kernels, "cuda", lines.append)
    assert dispatch.block_path("cuda") == "triton"
    unverified = dispatch.VERIFIED["block"]["date"] is None
    assert len(lines) == 1 and "block ops triton" in lines[0] and ("not yet verified" in lines[0]) == unverified
    kernels.select_block_path(None, "cuda", lines.append)
    assert dispatch.block_path("cuda") == dispatch.VERIFIED["block"]["path"]
    assert f"block ops {dispatch.VERIFIED['block']['path']} (the default" in lines[1]
    lp = dispatch.VERIFIED["logprobs"]
    assert f"log-probs triton (verified {lp['date']} on {lp['card']})" in lines[1]
    kernels.select_block_path("torch", "cpu", lines.append)  # nothing to say on the CPU
    assert len(lines) == 2 and dispatch.chosen_block_path() == "torch"
    with pytest.raises(SystemExit):
        crpo.parse_args(["--data", "x.jsonl", "--kernels", "cuda"])
