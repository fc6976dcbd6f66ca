"""kernels/: per-token log-probs and their gradients against float64 references written here.

The PyTorch path is tested directly. The Triton path runs in Triton's interpreter on CPU tensors:
triton picks the interpreter when a kernel is *defined* (at @triton.jit, from TRITON_INTERPRET), so the
fixture below loads a private copy of kernels/triton_logprobs.py with TRITON_INTERPRET=1 set, leaving
the rest of the test session (and the `kernels` package) untouched.
"""
import os

import pytest
import torch

import kernels
from fakes import run_triton_tests_in_interpreter, tiny_model
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


def random_labels(n, v, ignored, gen):
    """Labels in [0, v), with none, every third, or all rows set to IGNORE."""
    y = torch.randint(0, v, (n,), generator=gen)
    if ignored == "some":
        y[torch.arange(n) % 3 == 1] = IGNORE
    elif ignored == "all":
        y[:] = IGNORE
    return y


def make_case(n, v, ignored, dtype, seed, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    z = (torch.randn(n, v, generator=gen) * scale).to(dtype)
    y = random_labels(n, v, ignored, gen)
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
    y = random_labels(n, v, ignored, gen)
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


# ---------------------------------------------------------------- Triton path, in the interpreter

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"


@pytest.fixture(scope="module")
def tri():
    """kernels/triton_logprobs.py with its kernels running in Triton's interpreter (this process was
    started with TRITON_INTERPRET=1; otherwise test_triton_tests_in_interpreter_subprocess runs these)."""
    pytest.importorskip("triton", reason="triton is not importable: the Triton path cannot be tested")
    if not INTERPRETED:
        pytest.skip("needs TRITON_INTERPRET=1 at start-up: run by test_triton_tests_in_interpreter_subprocess")
    from kernels import triton_logprobs
    return triton_logprobs


def test_triton_tests_in_interpreter_subprocess():
    """Triton reads TRITON_INTERPRET when a kernel is defined (@triton.jit, triton's own library included, at
    import), so the Triton tests of this file run in a fresh process started with TRITON_INTERPRET=1."""
    pytest.importorskip("triton", reason="triton is not importable: the Triton path cannot be tested")
    if INTERPRETED:
        pytest.skip("this process already runs the Triton tests in the interpreter")
    run_triton_tests_in_interpreter(__file__, "triton and not subprocess or dispatches")


@pytest.mark.parametrize("n,v", SHAPES)
@pytest.mark.parametrize("ignored", IGNORED)
def test_triton_logprobs(tri, n, v, ignored):
    # vocabulary blocks of 64 (forward) / 64 (backward): V = 129, 300, 1000 end in a partial block
    check_logprobs(lambda z, y, inplace: tri.LogProbs.apply(z, y, IGNORE, inplace, 64), n, v, ignored, torch.float32)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_triton_logprobs_half(tri, dtype):
    check_logprobs(lambda z, y, inplace: tri.LogProbs.apply(z, y, IGNORE, inplace, 128), 7, 1000, "some", dtype)


def test_triton_logprobs_inplace_backward_and_minus_inf(tri):
    z, y, g = make_case(6, 200, "some", torch.float32, seed=2)
    z[:, 150:] = float("-inf")  # masked vocabulary entries: probability 0, gradient 0, no NaN
    y = torch.where(y >= 150, y - 150, y)
    z_in = z.clone().requires_grad_(True)
    logits = z_in * 1.0
    out = tri.LogProbs.apply(logits, y, IGNORE, True, 64)
    torch.testing.assert_close(out.double(), ref_logprobs(z, y), atol=2e-5, rtol=0)
    out.backward(g)
    ref = ref_grad_logits(z, y, g)
    torch.testing.assert_close(z_in.grad.double(), ref, atol=2e-5, rtol=0)
    torch.testing.assert_close(logits.detach().double(), ref, atol=2e-5, rtol=0)


@pytest.mark.parametrize("n,d,v", [(1, 16, 300), (10, 24, 1000)])
@pytest.mark.parametrize("needs", GRAD_NEEDS)
def test_triton_linear_logprobs(tri, n, d, v, needs):
    # budget of 3 rows of logits: several forward chunks; backward in vocabulary chunks of 256 columns
    budget = 3 * v * 4
    fn = lambda h, w, y: tri.LinearLogProbs.apply(h, w, y, IGNORE, needs[0], needs[1], budget, 64)
    check_linear(fn, n, d, v, "some" if n > 1 else "none", torch.float32, needs)


@pytest.mark.parametrize("needs", GRAD_NEEDS)
def test_triton_linear_logprobs_all_ignored_and_bf16(tri, needs):
    fn = lambda h, w, y: tri.LinearLogProbs.apply(h, w, y, IGNORE, needs[0], needs[1], 3 * 129 * 4, 64)
    check_linear(fn, 5, 8, 129, "all", torch.float32, needs)
    fn = lambda h, w, y: tri.LinearLogProbs.apply(h, w, y, IGNORE, needs[0], needs[1], 4 * 500 * 2, 128)
    check_linear(fn, 11, 32, 500, "some", torch.bfloat16, needs)


def test_triton_linear_logprobs_several_token_chunks_in_backward(tri, monkeypatch):
    # more tokens than one backward chunk: dW blocks add up over token chunks (float32 accumulator)
    monkeypatch.setattr(tri, "BWD_MAX_TOKENS", 4)
    fn = lambda h, w, y: tri.LinearLogProbs.apply(h, w, y, IGNORE, True, True, 4 * 300 * 4, 64)
    check_linear(fn, 10, 16, 300, "some", torch.float32, (True, True))
    fn = lambda h, w, y: tri.LinearLogProbs.apply(h, w, y, IGNORE, True, True, 4 * 300 * 2, 64)
    check_linear(fn, 10, 16, 300, "some", torch.bfloat16, (True, True))


def test_triton_linear_logprobs_kept_logits_and_second_backward(tri):
    # everything fits one chunk: the forward's logits are kept; retain_graph + a second backward still right
    h, w, y, g = make_linear_case(10, 16, 300, "some", torch.float32, seed=7)
    h_in, w_in = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = tri.LinearLogProbs.apply(h_in, w_in, y, IGNORE, True, True, None, 64)
    out.backward(g, retain_graph=True)
    out.backward(g)
    _, ref_dh, ref_dw = ref_linear(h, w, y, g)
    torch.testing.assert_close(h_in.grad.double(), 2 * ref_dh, atol=4e-5, rtol=0)
    torch.testing.assert_close(w_in.grad.double(), 2 * ref_dw, atol=4e-5, rtol=0)


@pytest.mark.parametrize("keep_rows,max_tokens", [(3, None), (10, None), (4, 3)])
def test_triton_linear_logprobs_keeps_logits_within_budget(tri, monkeypatch, keep_rows, max_tokens):
    # the first keep_rows tokens' logits are kept (3 of 10; all 10 but vocabulary chunks of 256 < V; 4 kept
    # plus backward token chunks of 3: dW of 4 row groups adds in float32); others are recomputed
    if max_tokens:
        monkeypatch.setattr(tri, "BWD_MAX_TOKENS", max_tokens)
    v = 300
    for dtype, needs in ((torch.float32, (True, True)), (torch.float32, (False, True)), (torch.bfloat16, (True, True))):
        size = torch.tensor([], dtype=dtype).element_size()
        fn = lambda h, w, y: tri.LinearLogProbs.apply(h, w, y, IGNORE, needs[0], needs[1], 4 * v * size, 64,
                                                      keep_rows * v * size)
        check_linear(fn, 10, 16, v, "some", dtype, needs)


def test_triton_linear_logprobs_kept_rows_second_backward_recomputes(tri):
    h, w, y, g = make_linear_case(10, 16, 300, "some", torch.float32, seed=8)
    h_in, w_in = h.clone().requires_grad_(True), w.clone().requires_grad_(True)
    out = tri.LinearLogProbs.apply(h_in, w_in, y, IGNORE, True, True, 4 * 300 * 4, 64, 3 * 300 * 4)
    out.backward(g, retain_graph=True)
    out.backward(g)  # the kept logits were overwritten by the first backward: recomputed now
    _, ref_dh, ref_dw = ref_linear(h, w, y, g)
    torch.testing.assert_close(h_in.grad.double(), 2 * ref_dh, atol=4e-5, rtol=0)
    torch.testing.assert_close(w_in.grad.double(), 2 * ref_dw, atol=4e-5, rtol=0)


def test_triton_chunk_sizes_follow_budget(tri):
    # SPEC shape, bf16, 512 MiB: forward chunks of 2048 tokens; backward: all 8192 tokens x 32768 columns
    assert tri.chunk_sizes(8192, 128256, 2, 512 * 2**20) == (2048, 8192, 32768)
    fwd, rows, cols = tri.chunk_sizes(100, 1000, 4, 8000)
    assert (fwd, rows, cols) == (2, 100, 256)


DISPATCH_SCRIPT = r"""
import torch, kernels
from kernels import torch_path
torch.manual_seed(0)
z = torch.randn(2, 5, 333) * 3; y = torch.randint(0, 333, (2, 5)); y[0, 1] = -100
assert kernels.use_triton(z, y), "TRITON_INTERPRET=1 on CPU tensors must dispatch to Triton"
zi = z.clone().requires_grad_(True)
out = kernels.logprobs(zi, y); out.sum().backward()
ref = torch_path.LogProbs.apply(z.reshape(-1, 333), y.reshape(-1), -100, False, None).reshape(2, 5)
assert (out - ref).abs().max() < 2e-5, (out, ref)
h = torch.randn(2, 5, 16, requires_grad=True); w = torch.randn(333, 16) * 0.5
out = kernels.linear_logprobs(h, w, y); out.sum().backward()
ref = torch_path.LinearLogProbs.apply(h.detach().reshape(-1, 16), w, y.reshape(-1), -100, False, False, None)
assert (out.reshape(-1) - ref).abs().max() < 2e-5
assert type(kernels._triton_module._logsumexp_fwd_kernel).__name__ == "InterpretedFunction"
"""


def test_public_api_dispatches_to_triton_under_interpreter(tri):
    exec(compile(DISPATCH_SCRIPT, "DISPATCH_SCRIPT", "exec"), {})


# ---------------------------------------------------------------- real kernels (only where CUDA is)

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_kernels_against_float64(dtype):
    n, d, v = 300, 256, 50_001  # several forward blocks, a partial last block
    z, y, g = make_case(n, v, "some", dtype, seed=11)
    z_in = z.cuda().requires_grad_(True)
    out = kernels.logprobs(z_in, y.cuda())
    out.backward(g.cuda())
    torch.testing.assert_close(out.cpu().double(), ref_logprobs(z, y), atol=2e-5 if dtype == torch.float32 else 1e-4,
                               rtol=0)
    torch.testing.assert_close(z_in.grad.cpu().double(), ref_grad_logits(z, y, g), atol=TOL[dtype][1], rtol=0)
    h, w, y, g = make_linear_case(n, d, v, "some", dtype, seed=12)
    ref_out, ref_dh, ref_dw = ref_linear(h, w, y, g)
    for needs in GRAD_NEEDS:
        h_in, w_in = h.cuda().requires_grad_(needs[0]), w.cuda().requires_grad_(needs[1])
        out = kernels.linear_logprobs(h_in, w_in, y.cuda())
        out.backward(g.cuda())
        tol = 1e-3 if dtype == torch.float32 else 5e-2  # TF32 may be on for fp32 matmuls
        torch.testing.assert_close(out.cpu().double(), ref_out, atol=tol, rtol=0)
        if needs[0]:
            torch.testing.assert_close(h_in.grad.cpu().double(), ref_dh, atol=tol, rtol=tol)
        if needs[1]:
            torch.testing.assert_close(w_in.grad.cpu().double(), ref_dw, atol=tol, rtol=tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_linear_logprobs_kept_logits(dtype, monkeypatch):
    # chunks of 64 tokens, the first 100 tokens' logits kept (a partial chunk), backward vocabulary chunks < V
    n, d, v = 300, 256, 50_001
    tri = pytest.importorskip("kernels.triton_logprobs")
    size = torch.tensor([], dtype=dtype).element_size()
    monkeypatch.setattr(tri, "MEMORY_BUDGET", 64 * v * size)
    monkeypatch.setattr(tri, "KEEP_BUDGET", 100 * v * size)
    h, w, y, g = make_linear_case(n, d, v, "some", dtype, seed=13)
    ref_out, ref_dh, ref_dw = ref_linear(h, w, y, g)
    h_in, w_in = h.cuda().requires_grad_(True), w.cuda().requires_grad_(True)
    out = kernels.linear_logprobs(h_in, w_in, y.cuda())
    out.backward(g.cuda())
    tol = 1e-3 if dtype == torch.float32 else 5e-2
    torch.testing.assert_close(out.cpu().double(), ref_out, atol=tol, rtol=0)
    torch.testing.assert_close(h_in.grad.cpu().double(), ref_dh, atol=tol, rtol=tol)
    torch.testing.assert_close(w_in.grad.cpu().double(), ref_dw, atol=tol, rtol=tol)


# ---------------------------------------------------------------- training numbers with and without the kernels

def sequence_logps_plain(m, ids, mask, resp):
    """sum over response tokens of log_softmax(full logits) in float64: no kernels involved."""
    logits = m(ids, mask)[:, :-1].double()
    token = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (token * resp[:, 1:]).sum(-1)


def check_sequence_logps_with_and_without_kernels(lora):
    model = pytest.importorskip("model")
    m = tiny_model(0, init_std=None, vocab_size=301, dim=32, head_dim=8, hidden_dim=64, max_seq_len=64,
                   tie_embeddings=True)
    if lora:  # frozen output layer: the kernels' dh-in-the-forward path
        params = model.add_lora(m, rank=4, alpha=8)
        for p in params:
            torch.nn.init.normal_(p, std=0.2)
    else:  # tied embeddings, everything trained: dh and dW (dW reaches the embedding too)
        params = list(m.parameters())
    ids = torch.randint(0, 301, (3, 12))
    mask = torch.ones_like(ids)
    mask[2, 9:] = 0  # right padding
    resp = torch.zeros_like(ids)
    resp[0, 4:] = 1
    resp[1, 7:] = 1
    resp[2, 5:9] = 1
    g = torch.randn(3)
    ours, n_tokens = model.sequence_logps(m, ids, mask, resp)
    assert n_tokens.tolist() == [8, 5, 4]
    grads = torch.autograd.grad(ours, params, g)
    ref = sequence_logps_plain(m, ids, mask, resp)
    ref_grads = torch.autograd.grad(ref, params, g.double())
    torch.testing.assert_close(ours.double(), ref, atol=2e-5, rtol=0)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a.double(), b.double(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("lora", [True, False])
def test_sequence_logps_same_with_and_without_kernels_torch_path(lora, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    check_sequence_logps_with_and_without_kernels(lora)


@pytest.mark.parametrize("lora", [True, False])
def test_sequence_logps_same_with_and_without_kernels_triton(tri, lora):
    check_sequence_logps_with_and_without_kernels(lora)
