"""kernels/: the block's fused ops (RMSNorm + residual, RoPE, SwiGLU, LoRA add) and the checkpoint policy.

Values and gradients against float64 references written here (float64 formulas, differentiated by
autograd in float64, plus hand-computed cases), in float32, through the PyTorch path and through the
Triton kernels in Triton's interpreter on CPU (a subprocess started with TRITON_INTERPRET=1, as in
tests/test_kernels.py: triton reads it when a kernel is defined). Model-level: the PyTorch path is
bit for bit the eager code model.py had before the kernels; the Triton path matches it to float32
accuracy; checkpointing with "save-matmuls" gives the gradients of no checkpointing and recomputes
fewer matmuls. Shapes are odd on purpose: D = 37, head_dim 10 (5 pairs), 1037 elements.
"""
import math
import os

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import kernels
from fakes import run_triton_tests_in_interpreter, tiny_model
import model as modeling
from kernels import checkpoint_policy, torch_block

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") == "1"
EPS = 1e-5


def close(actual, ref, tol):
    """|actual - ref| <= tol * (|ref| + max|ref|): float32 steps relative to the magnitude compared."""
    scale = max(1.0, ref.abs().max().item())
    torch.testing.assert_close(actual.double(), ref, atol=tol * scale, rtol=tol)


def grads64(fn, inputs, upstream):
    """Values of fn on float64 copies of inputs, and the gradients of sum(out * upstream) by autograd."""
    xs = [t.detach().double().requires_grad_(True) for t in inputs]
    outs = fn(*xs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum((o * g.double()).sum() for o, g in zip(outs, upstream))
    return [o.detach() for o in outs], torch.autograd.grad(loss, xs)


def run_and_grad(fn, inputs, upstream):
    xs = [t.detach().clone().requires_grad_(True) for t in inputs]
    outs = fn(*xs)
    outs = outs if isinstance(outs, tuple) else (outs,)
    loss = sum((o * g).sum() for o, g in zip(outs, upstream))
    return [o.detach() for o in outs], torch.autograd.grad(loss, xs)


# ---------------------------------------------------------------- float64 references

def ref_rms_norm(x, w, r=None):
    """x' = x + r; y = x' / sqrt(mean(x'^2) + eps) * w (float64)."""
    xn = x if r is None else x + r
    y = xn / torch.sqrt((xn * xn).mean(-1, keepdim=True) + EPS) * w
    return y if r is None else (y, xn)


def ref_rope(x, cos, sin):
    """Pair i < d/2 is (x_i, x_{i+d/2}); it becomes (x_i c - x_{i+d/2} s, x_{i+d/2} c + x_i s) (float64)."""
    half = x.shape[-1] // 2
    out = torch.empty_like(x)
    for i in range(half):
        c, s = cos[..., i], sin[..., i]
        out[..., i] = x[..., i] * c - x[..., i + half] * s
        out[..., i + half] = x[..., i + half] * c + x[..., i] * s
    return out


def ref_swiglu(a, b):
    return a / (1.0 + torch.exp(-a)) * b


def rope_case(seed, B=2, n_q=3, n_k=1, T=7, d=10, transposed=True, cos_batch=None):
    """q [B, Hq, T, d], k [B, Hk, T, d] (transposed views of [B, T, H, d], as model.Attention makes them);
    cos/sin of random angles [B or 1, 1, T, d/2]."""
    gen = torch.Generator().manual_seed(seed)
    if transposed:
        q = torch.randn(B, T, n_q, d, generator=gen).transpose(1, 2)
        k = torch.randn(B, T, n_k, d, generator=gen).transpose(1, 2)
    else:
        q, k = torch.randn(B, n_q, T, d, generator=gen), torch.randn(B, n_k, T, d, generator=gen)
    angles = torch.rand(cos_batch or B, 1, T, d // 2, generator=gen) * 20.0
    return q, k, angles.cos(), angles.sin(), torch.randn(q.shape, generator=gen), torch.randn(k.shape, generator=gen)


# ---------------------------------------------------------------- checks, for any implementation

def check_rms_norm(fn, shape, with_residual, seed=0, tol=2e-6):
    gen = torch.Generator().manual_seed(seed)
    x, r = torch.randn(shape, generator=gen) * 3.0, torch.randn(shape, generator=gen)
    w = 1.0 + 0.5 * torch.randn(shape[-1], generator=gen)
    gy, gx = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    if with_residual:
        outs, grads = run_and_grad(lambda x, w, r: fn(x, w, EPS, r), (x, w, r), (gy, gx))
        ref_outs, ref_grads = grads64(ref_rms_norm, (x, w, r), (gy, gx))
    else:
        outs, grads = run_and_grad(lambda x, w: fn(x, w, EPS), (x, w), (gy,))
        ref_outs, ref_grads = grads64(ref_rms_norm, (x, w), (gy,))
    for o, ref in zip(outs, ref_outs):
        assert o.dtype == torch.float32 and o.shape == shape
        close(o, ref, tol)
    for g, ref in zip(grads, ref_grads):
        close(g, ref, 10 * tol)  # sums over D and over rows (dg)


def check_rms_norm_by_hand(fn):
    # x = (3, 4): mean(x^2) = 12.5, y = x / sqrt(12.5) * g; with residual r = (1, -1): x' = (4, 3), same rms
    x, r, g = torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, -1.0]]), torch.tensor([1.0, 2.0])
    rms = math.sqrt(12.5 + EPS)
    torch.testing.assert_close(fn(x, g, EPS), torch.tensor([[3 / rms, 8 / rms]]))
    y, x_new = fn(x, g, EPS, r)
    torch.testing.assert_close(x_new, torch.tensor([[4.0, 3.0]]))
    torch.testing.assert_close(y, torch.tensor([[4 / rms, 6 / rms]]))


def check_rope(fn, seed=0, tol=2e-6, **shape):
    q, k, cos, sin, gq, gk = rope_case(seed, **shape)
    outs, grads = run_and_grad(lambda q, k: fn(q, k, cos, sin), (q, k), (gq, gk))
    ref_outs, ref_grads = grads64(lambda q, k: (ref_rope(q, cos.double(), sin.double()),
                                                ref_rope(k, cos.double(), sin.double())), (q, k), (gq, gk))
    for o, x, ref in zip(outs, (q, k), ref_outs):
        assert o.shape == x.shape and o.dtype == x.dtype
        close(o, ref, tol)
    for g, ref in zip(grads, ref_grads):
        close(g, ref, tol)


def check_rope_by_hand(fn):
    # d = 2: one pair (x_0, x_1) = (1, 0) rotated by 90 degrees is (0, 1); by 180 degrees (-1, 0)
    q = torch.tensor([1.0, 0.0]).repeat(1, 1, 2, 1)  # [B=1, H=1, T=2, d=2]
    angles = torch.tensor([math.pi / 2, math.pi]).view(1, 1, 2, 1)
    q_out, k_out = fn(q, q.clone(), angles.cos(), angles.sin())
    torch.testing.assert_close(q_out, torch.tensor([[[[0.0, 1.0], [-1.0, 0.0]]]]), atol=1e-6, rtol=0)
    torch.testing.assert_close(k_out, q_out)


def check_elementwise(fn, ref_fn, n=1037, seed=0, tol=2e-6, shape=None):
    gen = torch.Generator().manual_seed(seed)
    shape = shape or (3, n)
    a, b, g = (torch.randn(shape, generator=gen) * 4.0 for _ in range(3))
    outs, grads = run_and_grad(fn, (a, b), (g,))
    ref_outs, ref_grads = grads64(ref_fn, (a, b), (g,))
    assert outs[0].shape == shape and outs[0].dtype == torch.float32
    close(outs[0], ref_outs[0], tol)
    for got, ref in zip(grads, ref_grads):
        close(got, ref, tol)


RMS_SHAPES = [(1, 1, 7), (3, 5, 37), (2, 130)]


# ---------------------------------------------------------------- PyTorch path

@pytest.mark.parametrize("shape", RMS_SHAPES)
@pytest.mark.parametrize("with_residual", [False, True])
def test_torch_rms_norm(shape, with_residual):
    check_rms_norm(torch_block.rms_norm, shape, with_residual)


def test_torch_rms_norm_by_hand():
    check_rms_norm_by_hand(torch_block.rms_norm)


@pytest.mark.parametrize("shape", [dict(), dict(transposed=False, cos_batch=1), dict(n_q=4, n_k=4, T=1, d=2)])
def test_torch_rope(shape):
    check_rope(torch_block.rope, **shape)


def test_torch_rope_by_hand():
    check_rope_by_hand(torch_block.rope)


def test_torch_swiglu_and_lora_add():
    check_elementwise(torch_block.swiglu, ref_swiglu)
    check_elementwise(lambda a, b: torch_block.lora_add(a, b, 0.37), lambda a, b: a + 0.37 * b)


def test_public_api_takes_the_torch_path_on_cpu(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    x = torch.randn(4, 9)
    assert not kernels.use_triton_block(x)
    assert torch.equal(kernels.rms_norm(x, torch.ones(9), EPS), torch_block.rms_norm(x, torch.ones(9), EPS))
    check_rope(kernels.rope)
    check_elementwise(kernels.swiglu, ref_swiglu, shape=(2, 5, 7))


# ---------------------------------------------------------------- the model: PyTorch path = the old eager code

def old_rms(norm, x):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + norm.eps)).to(x.dtype) * norm.weight


def old_linear(m, x):
    if isinstance(m, modeling.LoRALinear):
        y = m.base(x)
        return y + m.lora_B(m.lora_A(m.dropout(x))) * m.scale
    return m(x)


def old_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def old_block(b, x, cos, sin, mask):
    """model.Block.forward as it was before the kernels (copied formulas, no kernels call)."""
    a, c = b.self_attn, b.self_attn.c
    B, T, _ = x.shape
    h = old_rms(b.input_layernorm, x)
    q = old_linear(a.q_proj, h).view(B, T, c.n_heads, c.head_dim).transpose(1, 2)
    k = old_linear(a.k_proj, h).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
    v = old_linear(a.v_proj, h).view(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
    q, k = old_rope(q, cos, sin), old_rope(k, cos, sin)
    y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None,
                                       enable_gqa=c.n_kv_heads != c.n_heads)
    x = x + old_linear(a.o_proj, y.transpose(1, 2).reshape(B, T, -1))
    h = old_rms(b.post_attention_layernorm, x)
    m = b.mlp
    return x + old_linear(m.down_proj, F.silu(old_linear(m.gate_proj, h)) * old_linear(m.up_proj, h))


def tiny_lora_model(seed=0, dim=48, hidden_dim=112, dtype=torch.float32):
    m = tiny_model(seed, init_std=0.2, norm_std=0.2, dtype=dtype, vocab_size=97, dim=dim, n_heads=6, head_dim=8,
                   hidden_dim=hidden_dim, max_seq_len=64)
    params = modeling.add_lora(m, rank=4, alpha=8)
    with torch.no_grad():
        for p in params:
            p.normal_(0.0, 0.2)
    return m.train(), params


def block_inputs(m, seed=1, B=2, T=9):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(B, T, m.config.dim, generator=gen)
    angles = torch.arange(T).float()[None, None, :, None] * m.inv_freq
    return x, angles.cos().expand(B, 1, T, -1), angles.sin().expand(B, 1, T, -1)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_block_torch_path_is_the_old_eager_code_bit_for_bit(dtype, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    m, params = tiny_lora_model(dtype=dtype)
    block = m.layers[0]
    x, cos, sin = block_inputs(m)
    x = x.to(dtype).requires_grad_(True)
    g = torch.randn(x.shape).to(dtype)
    for mask in (None, torch.ones(2, 1, 9, 9, dtype=torch.bool).tril()):
        new = block(x, cos, sin, mask)
        new_grads = torch.autograd.grad(new, [x] + params[:4], g)
        old = old_block(block, x, cos, sin, mask)
        old_grads = torch.autograd.grad(old, [x] + params[:4], g)
        assert torch.equal(new, old)
        assert all(torch.equal(a, b) for a, b in zip(new_grads, old_grads))


# ---------------------------------------------------------------- checkpointing: save-matmuls

class CountMatmuls(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.n += func in checkpoint_policy.MATMULS
        return func(*args, **(kwargs or {}))


def hidden_grads(m, params, ids, mask, g):
    with CountMatmuls() as counter:
        out = m.hidden(ids, mask)
    with CountMatmuls() as back:
        grads = torch.autograd.grad(out, params, g)
    return out, grads, counter.n, back.n


def test_checkpoint_policies_give_the_gradients_of_no_checkpointing(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(checkpoint_policy, "MIN_CONTRACTION", 48)  # tiny dims: keep the D -> * matmuls
    m, params = tiny_lora_model()
    params = params + [m.layers[1].input_layernorm.weight.requires_grad_(True)]
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding: an attention mask, the math SDPA path
    g = torch.randn(2, 9, 48)
    ref, ref_grads, fwd_mm, plain_bwd_mm = hidden_grads(m, params, ids, mask, g)
    m.gradient_checkpointing = True
    results = {}
    for policy, budget in (("full", None), ("save-matmuls", None), ("save-matmuls", 0), ("save-matmuls", 10_000)):
        m.checkpoint_policy, m.checkpoint_budget = policy, budget
        out, grads, _, bwd_mm = hidden_grads(m, params, ids, mask, g)
        assert torch.equal(out, ref)
        for a, b in zip(grads, ref_grads):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
        results[policy, budget] = bwd_mm - plain_bwd_mm  # matmuls rerun by the recompute
    # full: the forward again (torch's early stop may skip a layer's trailing ops whose outputs nothing saved)
    assert fwd_mm - 2 <= results["full", None] <= fwd_mm
    assert results["save-matmuls", 0] == results["full", None]  # no budget: nothing kept
    # unlimited: per layer the 7 base matmuls (K = 48 or 112) and the 7 LoRA A's (K = 48 or 112) are kept,
    # the 7 LoRA B's (K = rank 4) recomputed
    assert results["full", None] - results["save-matmuls", None] == 2 * 14
    assert results["save-matmuls", None] < results["save-matmuls", 10_000] < fwd_mm


def test_checkpoint_policy_names():
    assert kernels.checkpoint_context_fn("full") is torch.utils.checkpoint.noop_context_fn
    with pytest.raises(ValueError, match="save-matmuls"):
        kernels.checkpoint_context_fn("everything")


# ---------------------------------------------------------------- Triton path, in the interpreter

@pytest.fixture(scope="module")
def tri():
    """The Triton block kernels running in Triton's interpreter (this process started with TRITON_INTERPRET=1;
    otherwise test_triton_block_tests_in_interpreter_subprocess runs these)."""
    pytest.importorskip("triton", reason="triton is not importable: the Triton path cannot be tested")
    if not INTERPRETED:
        pytest.skip("needs TRITON_INTERPRET=1 at start-up: run by test_triton_block_tests_in_interpreter_subprocess")
    modules = kernels.block_kernels()
    assert modules is not None
    assert type(modules["rms_norm"]._rmsnorm_fwd_kernel).__name__ == "InterpretedFunction"
    with kernels.triton_block_path():  # opt-in (kernels/dispatch.py): the interpreter runs what CUDA would then
        yield modules


def test_triton_block_tests_in_interpreter_subprocess():
    pytest.importorskip("triton", reason="triton is not importable: the Triton path cannot be tested")
    if INTERPRETED:
        pytest.skip("this process already runs the Triton tests in the interpreter")
    run_triton_tests_in_interpreter(__file__, "triton and not subprocess")


@pytest.mark.parametrize("shape", RMS_SHAPES)
@pytest.mark.parametrize("with_residual", [False, True])
def test_triton_rms_norm(tri, shape, with_residual):
    x = torch.randn(shape)
    assert kernels.use_triton_block(x)  # the public function below dispatches to the kernel
    check_rms_norm(kernels.rms_norm, shape, with_residual)


def test_triton_rms_norm_by_hand_and_mixed_dtypes(tri):
    check_rms_norm_by_hand(kernels.rms_norm)
    # as under autocast: a float32 residual stream plus a bf16 block output, float32 gains
    gen = torch.Generator().manual_seed(5)
    x, r = torch.randn(3, 4, 37, generator=gen), torch.randn(3, 4, 37, generator=gen).bfloat16()
    w = torch.randn(37, generator=gen)
    gy, gx = torch.randn(3, 4, 37, generator=gen), torch.randn(3, 4, 37, generator=gen)
    outs, grads = run_and_grad(lambda x, w, r: kernels.rms_norm(x, w, EPS, r), (x, w, r), (gy, gx))
    ref_outs, ref_grads = run_and_grad(lambda x, w, r: torch_block.rms_norm(x, w, EPS, r), (x, w, r), (gy, gx))
    for a, b in zip(outs + list(grads), ref_outs + list(ref_grads)):
        assert a.dtype == b.dtype and a.shape == b.shape
        close(a, b.double(), 2e-5 if a.dtype == torch.float32 else 1e-2)


def test_triton_rms_norm_frozen_gain(tri):
    x, w = torch.randn(5, 37, requires_grad=True), torch.randn(37)  # no dg wanted (LoRA: norms frozen)
    y = kernels.rms_norm(x, w, EPS)
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    _, (ref_dx, _) = grads64(ref_rms_norm, (x, w), (torch.ones_like(y),))
    close(dx, ref_dx, 2e-5)


@pytest.mark.parametrize("shape", [dict(), dict(transposed=False, cos_batch=1), dict(n_q=4, n_k=4, T=1, d=2),
                                   dict(B=1, n_q=5, n_k=5, T=3, d=14)])
def test_triton_rope(tri, shape):
    q, k, cos, sin, _, _ = rope_case(0, **shape)
    assert tri["rope"].supported(q, k, cos, sin)
    check_rope(kernels.rope, **shape)


def test_triton_rope_by_hand(tri):
    check_rope_by_hand(kernels.rope)


def test_triton_swiglu_and_lora_add(tri):
    check_elementwise(kernels.swiglu, ref_swiglu)  # 3111 elements: 4 programs of 1024, the last partial
    check_elementwise(kernels.swiglu, ref_swiglu, shape=(1,))
    check_elementwise(lambda a, b: kernels.lora_add(a, b, 0.37), lambda a, b: a + 0.37 * b)
    check_elementwise(lambda a, b: kernels.lora_add(a, b, -2.0), lambda a, b: a - 2.0 * b, shape=(2, 5, 7))


def test_triton_torch_block_path_context_and_switch(tri, monkeypatch):
    a, b = torch.randn(3, 7), torch.randn(3, 7)
    with kernels.torch_block_path():
        assert not kernels.use_triton_block(a, b)
        assert torch.equal(kernels.swiglu(a, b), torch_block.swiglu(a, b))
    assert kernels.use_triton_block(a, b)
    with kernels.block_path_override("torch"):
        assert not kernels.use_triton_block(a, b)
    assert kernels.use_triton_block(a, b)


def test_triton_model_matches_torch_path(tri):
    """A LoRA model's hidden states and gradients, fused kernels vs the PyTorch path, with checkpointing."""
    m, params = tiny_lora_model()
    params = params + [m.layers[0].post_attention_layernorm.weight.requires_grad_(True)]
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[0, :2] = 0
    g = torch.randn(2, 9, 48)
    m.gradient_checkpointing = True
    for policy in ("full", "save-matmuls"):
        m.checkpoint_policy = policy
        out = m.hidden(ids, mask)
        grads = torch.autograd.grad(out, params, g)
        with kernels.torch_block_path():
            ref = m.hidden(ids, mask)
            ref_grads = torch.autograd.grad(ref, params, g)
        close(out, ref.double(), 2e-5)
        for a, b in zip(grads, ref_grads):
            close(a, b.double(), 1e-4)


# ---------------------------------------------------------------- real kernels (only where CUDA is)

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_block_kernels_against_float64(dtype):
    with kernels.triton_block_path():  # opt-in until a GPU run verifies them (kernels/dispatch.py)
        check_cuda_block_kernels_against_float64(dtype)


def check_cuda_block_kernels_against_float64(dtype):
    assert kernels.use_triton_block(torch.ones(1, device="cuda"))
    tol, grad_tol = (2e-6, 4e-5) if dtype == torch.float32 else (1e-2, 2e-2)  # bf16: one or two roundings
    gen = torch.Generator().manual_seed(0)
    shape = (3, 129, 4096)
    x, r, w = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen), torch.randn(4096, generator=gen)
    gy, gx = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    x, r, w = x.to(dtype), r.to(dtype), w.to(dtype)
    outs, grads = run_and_grad(lambda x, w, r: kernels.rms_norm(x, w, EPS, r), [t.cuda() for t in (x, w, r)],
                               (gy.cuda().to(dtype), gx.cuda().to(dtype)))
    ref_outs, ref_grads = grads64(ref_rms_norm, (x, w, r), (gy.to(dtype), gx.to(dtype)))
    for a, b in zip(outs, ref_outs):
        close(a.cpu(), b, tol)
    for a, b in zip(grads, ref_grads):
        close(a.cpu(), b, grad_tol)
    q, k, cos, sin, gq, gk = rope_case(1, B=2, n_q=32, n_k=8, T=300, d=128)
    q, k, gq, gk = q.to(dtype), k.to(dtype), gq.to(dtype), gk.to(dtype)
    outs, grads = run_and_grad(lambda q, k: kernels.rope(q, k, cos.cuda(), sin.cuda()), (q.cuda(), k.cuda()),
                               (gq.cuda(), gk.cuda()))
    ref_outs, ref_grads = grads64(lambda q, k: (ref_rope(q, cos.double(), sin.double()),
                                                ref_rope(k, cos.double(), sin.double())), (q, k), (gq, gk))
    for a, b in zip(outs + list(grads), ref_outs + list(ref_grads)):
        close(a.cpu(), b, tol)
    a, b, g = (torch.randn(3, 1000, 1037, generator=gen).to(dtype) * 4 for _ in range(3))
    lora_add = lambda a, b: kernels.lora_add(a, b, 0.37)  # noqa: E731
    for fn, ref in ((kernels.swiglu, ref_swiglu), (lora_add, lambda a, b: a + 0.37 * b)):
        outs, grads = run_and_grad(fn, (a.cuda(), b.cuda()), (g.cuda(),))
        ref_outs, ref_grads = grads64(ref, (a, b), (g,))
        for x_, y_ in zip(outs + list(grads), ref_outs + list(ref_grads)):
            close(x_.cpu(), y_, tol)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "autocast"])
def test_cuda_model_fused_matches_torch_path(dtype):
    """Hidden states and LoRA gradients of a small model: fused kernels vs the PyTorch path, on CUDA, in float32,
    bf16 weights, and float32 weights under bf16 autocast (crpo.py's CUDA default: mixed-dtype residual adds)."""
    m, params = tiny_lora_model(dim=256, hidden_dim=688)
    m = m.cuda().to(torch.bfloat16 if dtype == "bfloat16" else torch.float32)
    m.inv_freq = m.inv_freq.float()
    ids = torch.randint(0, 97, (4, 33), device="cuda")
    g = torch.randn(4, 33, 256, device="cuda")
    m.gradient_checkpointing = True
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=dtype == "autocast")
    for policy in ("full", "save-matmuls"):
        m.checkpoint_policy = policy
        with autocast, kernels.triton_block_path():
            out = m.hidden(ids)
            grads = torch.autograd.grad(out, params, g.to(out.dtype))
            with kernels.torch_block_path():
                ref = m.hidden(ids)
                ref_grads = torch.autograd.grad(ref, params, g.to(ref.dtype))
        assert out.dtype == ref.dtype
        tol = 1e-3 if dtype == "float32" else 5e-2  # TF32 matmuls; bf16 roundings differ
        close(out.float().cpu(), ref.double().cpu(), tol)
        for a, b in zip(grads, ref_grads):
            close(a.float().cpu(), b.double().cpu(), tol)
