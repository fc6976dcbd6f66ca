"""kernels/: per-token log-probs and their gradients against float64 references written here.

The PyTorch path is tested directly. The Triton path runs in Triton's interpreter on CPU tensors:
triton picks the interpreter when a kernel is *defined* (at @triton.jit, from TRITON_INTERPRET), so the
fixture below loads a private copy of kernels/triton_logprobs.py with TRITON_INTERPRET=1 set, leaving
the rest of the test session (and the `kernels` package) untouched.
"""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

import kernels
from kernels import torch_path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IGNORE = -100


# ---------------------------------------------------------------- float64 references (independent math)

def ref_logprobs(z, labels, ignore_index=IGNORE):
    """log p_t = z_t[y_t] - log sum_v exp(z_tv) in float64, by hand (max-shifted); 0 on ignored rows."""
    z = z.double()
    m = z.max(dim=-1, keepdim=True).values
    lse = (m + (z - m).exp().sum(-1, keepdim=True).log()).squeeze(-1)
    valid = labels != ignore_index
    safe = torch.where(valid, labels, torch.zeros_like(labels))
    target = z.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    return torch.where(valid, target - lse, torch.zeros_like(lse))


def ref_grad_logits(z, labels, g, ignore_index=IGNORE):
    """dL/dz_t = g_t (onehot(y_t) - softmax(z_t)) in float64; 0 on ignored rows."""
    z = z.double()
    p = (z - z.max(-1, keepdim=True).values).exp()
    p = p / p.sum(-1, keepdim=True)
    valid = labels != ignore_index
    onehot = torch.zeros_like(p)
    onehot[valid, labels[valid]] = 1.0
    return (g.double() * valid)[:, None] * (onehot - p)


def make_case(n, v, ignored, dtype, seed, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, v, generator=gen) * scale).to(dtype)
    y = torch.randint(0, v, (n,), generator=gen)
    if ignored == "some":
        y[torch.arange(n) % 3 == 1] = IGNORE
    elif ignored == "all":
        y[:] = IGNORE
    g = torch.randn(n, generator=gen)
    return z, y, g


# Shapes: V never a multiple of the block sizes used (64 / 128 in the Triton tests), N = 1 included.
SHAPES = [(1, 300), (7, 1000), (16, 129)]
IGNORED = ["none", "some", "all"]
TOL = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (2e-5, 1e-2), torch.float16: (2e-5, 2e-3)}


def check_logprobs(fn, n, v, ignored, dtype, seed=0, inplace=False):
    z, y, g = make_case(n, v, ignored, dtype, seed)
    z_in = z.clone().requires_grad_(True)
    out = fn(z_in, y, inplace)
    assert out.dtype == torch.float32 and out.shape == (n,)
    val_tol, grad_tol = TOL[dtype]
    # the reference sees the same (rounded) input values, so values match to fp32 accuracy
    torch.testing.assert_close(out.double(), ref_logprobs(z, y), atol=val_tol, rtol=0)
    out.backward(g)
    assert z_in.grad.dtype == dtype
    ref = ref_grad_logits(z, y, g)
    torch.testing.assert_close(z_in.grad.double(), ref, atol=grad_tol, rtol=0)
    if ignored == "all":
        assert torch.all(out == 0) and torch.all(z_in.grad == 0)


def ref_linear(h, w, y, g):
    """Values and (dh, dW) in float64 through torch autograd on the float64 copies."""
    h64 = h.double().requires_grad_(True)
    w64 = w.double().requires_grad_(True)
    out = ref_logprobs(h64 @ w64.t(), y)
    out.backward(g.double())
    return out.detach(), h64.grad, w64.grad


def make_linear_case(n, d, v, ignored, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    h = torch.randn(n, d, generator=gen).to(dtype)
    w = (torch.randn(v, d, generator=gen) * (2.0 / d**0.5)).to(dtype)
    y = torch.randint(0, v, (n,), generator=gen)
    if ignored == "some":
        y[torch.arange(n) % 3 == 1] = IGNORE
    elif ignored == "all":
        y[:] = IGNORE
    g = torch.randn(n, generator=gen)
    return h, w, y, g


LINEAR_TOL = {torch.float32: (2e-5, 2e-5), torch.bfloat16: (5e-2, 3e-2)}
GRAD_NEEDS = [(True, True), (True, False), (False, True)]  # (hidden, weight) requires_grad


def check_linear(fn, n, d, v, ignored, dtype, needs, seed=0):
    h, w, y, g = make_linear_case(n, d, v, ignored, dtype, seed)
    h_in = h.clone().requires_grad_(needs[0])
    w_in = w.clone().requires_grad_(needs[1])
    out = fn(h_in, w_in, y)
    assert out.dtype == torch.float32 and out.shape == (n,)
    ref_out, ref_dh, ref_dw = ref_linear(h, w, y, g)
    val_tol, grad_tol = LINEAR_TOL[dtype]
    torch.testing.assert_close(out.double(), ref_out, atol=val_tol, rtol=0)
    out.backward(g)
    if needs[0]:
        assert h_in.grad.dtype == dtype
        torch.testing.assert_close(h_in.grad.double(), ref_dh, atol=grad_tol, rtol=grad_tol)
    else:
        assert h_in.grad is None
    if needs[1]:
        assert w_in.grad.dtype == dtype
        torch.testing.assert_close(w_in.grad.double(), ref_dw, atol=grad_tol, rtol=grad_tol)
    else:
        assert w_in.grad is None
    if ignored == "all":
        assert torch.all(out == 0)


# ---------------------------------------------------------------- PyTorch path

@pytest.mark.parametrize("n,v", SHAPES)
@pytest.mark.parametrize("ignored", IGNORED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_torch_logprobs(n, v, ignored, dtype):
    # chunks of 3 rows: several chunks, the last one partial
    check_logprobs(lambda z, y, inplace: torch_path.LogProbs.apply(z, y, IGNORE, inplace, 3), n, v, ignored, dtype)


def test_torch_logprobs_inplace_backward_writes_into_logits():
    z, y, g = make_case(6, 50, "some", torch.float32, seed=1)
    z_in = z.clone().requires_grad_(True)
    logits = z_in * 1.0  # a non-leaf whose buffer the backward may reuse
    out = torch_path.LogProbs.apply(logits, y, IGNORE, True, 4)
    out.backward(g)
    ref = ref_grad_logits(z, y, g)
    torch.testing.assert_close(z_in.grad.double(), ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(logits.detach().double(), ref, atol=2e-5, rtol=0)  # the buffer now holds the gradient


@pytest.mark.parametrize("n,d,v", [(1, 16, 300), (10, 24, 1000), (9, 8, 129)])
@pytest.mark.parametrize("ignored", IGNORED)
@pytest.mark.parametrize("needs", GRAD_NEEDS)
def test_torch_linear_logprobs(n, d, v, ignored, needs):
    fn = lambda h, w, y: torch_path.LinearLogProbs.apply(h, w, y, IGNORE, needs[0], needs[1], 4)
    check_linear(fn, n, d, v, ignored, torch.float32, needs)


@pytest.mark.parametrize("needs", GRAD_NEEDS)
def test_torch_linear_logprobs_bf16(needs):
    fn = lambda h, w, y: torch_path.LinearLogProbs.apply(h, w, y, IGNORE, needs[0], needs[1], 4)
    check_linear(fn, 11, 32, 500, "some", torch.bfloat16, needs)


def test_torch_linear_logprobs_single_chunk_keeps_logits():
    # chunk larger than N: the forward's logits are kept instead of recomputed; same numbers
    fn = lambda h, w, y: torch_path.LinearLogProbs.apply(h, w, y, IGNORE, True, True, 1000)
    check_linear(fn, 10, 16, 300, "some", torch.float32, (True, True))


def test_chunk_size_follows_memory_budget():
    assert torch_path.rows_per_chunk(1000, 4, budget=4000 * 10) == 10
    assert torch_path.rows_per_chunk(10**9, 4, budget=10) == 1


# ---------------------------------------------------------------- public API (dispatch)

def test_public_api_shapes_and_values_on_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    z, y, g = make_case(12, 77, "some", torch.float32, seed=3)
    z3, y3 = z.reshape(3, 4, 77), y.reshape(3, 4)
    assert not kernels.use_triton(z3, y3)
    out = kernels.logprobs(z3, y3)
    assert out.shape == (3, 4)
    torch.testing.assert_close(out.reshape(-1).double(), ref_logprobs(z, y), atol=2e-5, rtol=0)
    h, w, y, g = make_linear_case(12, 16, 77, "some", torch.float32, seed=4)
    h_in = h.reshape(2, 6, 16).requires_grad_(True)
    out = kernels.linear_logprobs(h_in, w, y.reshape(2, 6))
    assert out.shape == (2, 6)
    ref_out, ref_dh, _ = ref_linear(h, w, y, g)
    torch.testing.assert_close(out.reshape(-1).double(), ref_out, atol=2e-5, rtol=0)
    out.reshape(-1).backward(g)
    torch.testing.assert_close(h_in.grad.reshape(12, 16).double(), ref_dh, atol=2e-5, rtol=0)


def test_public_api_no_grad_and_empty():
    z, y, _ = make_case(5, 40, "none", torch.float32, seed=5)
    with torch.no_grad():
        out = kernels.linear_logprobs(torch.eye(5, 40), z, y[:5] % 5)
    torch.testing.assert_close(out.double(), ref_logprobs(torch.eye(5, 40) @ z.t(), y[:5] % 5), atol=2e-5, rtol=0)
    empty = kernels.logprobs(torch.zeros(0, 40), torch.zeros(0, dtype=torch.long))
    assert empty.shape == (0,)
