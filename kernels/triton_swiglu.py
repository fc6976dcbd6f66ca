"""Triton SwiGLU, y = silu(a) * b, forward and backward (imported lazily by kernels/__init__.py).

Elementwise over the flattened tensors, in float32 registers, one rounding to the output dtype:
    sigma = 1 / (1 + exp(-a)),   silu(a) = a sigma,   y = silu(a) b
    da = dy b sigma (1 + a (1 - sigma)),   db = dy silu(a)
The forward reads a and b once and writes y; the backward reads dy, a, b once and writes da, db
(eager PyTorch also keeps silu(a) for the backward; here it is recomputed in registers).
"""
import torch
import triton
import triton.language as tl

BLOCK = 1024  # elements per program


@triton.jit
def _swiglu_fwd_kernel(a_ptr, b_ptr, y_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    silu = a / (1.0 + tl.exp(-a))
    tl.store(y_ptr + offs, (silu * b).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd_kernel(dy_ptr, a_ptr, b_ptr, da_ptr, db_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    a = tl.load(a_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(b_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sigma = 1.0 / (1.0 + tl.exp(-a))
    tl.store(da_ptr + offs, (dy * b * sigma * (1.0 + a * (1.0 - sigma))).to(da_ptr.dtype.element_ty), mask=mask)
    tl.store(db_ptr + offs, (dy * a * sigma).to(db_ptr.dtype.element_ty), mask=mask)


def _launch(kernel, n, block, *tensors):
    if n:
        kernel[(triton.cdiv(n, block),)](*tensors, n, BLOCK=block, num_warps=4)


class SwiGLU(torch.autograd.Function):
    """y = silu(gate) * up for gate, up of one shape (any dtypes; y in their promoted dtype)."""

    @staticmethod
    def forward(ctx, gate, up, block=None):
        gate, up = gate.contiguous(), up.contiguous()
        y = torch.empty(gate.shape, dtype=torch.promote_types(gate.dtype, up.dtype), device=gate.device)
        ctx.block = block or BLOCK
        _launch(_swiglu_fwd_kernel, gate.numel(), ctx.block, gate, up, y)
        ctx.save_for_backward(gate, up)
        return y

    @staticmethod
    def backward(ctx, dy):
        gate, up = ctx.saved_tensors
        dgate, dup = torch.empty_like(gate), torch.empty_like(up)
        _launch(_swiglu_bwd_kernel, gate.numel(), ctx.block, dy.contiguous(), gate, up, dgate, dup)
        return dgate, dup, None
