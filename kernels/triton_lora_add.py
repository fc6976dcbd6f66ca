"""Triton LoRA scale-and-add, y = base + s * lora, forward and backward (imported lazily by kernels/__init__.py).

Forward: one pass over the flattened tensors, y = base + s lora in float32, rounded once (eager PyTorch
makes two passes: s * lora, then the add). Backward: d base = dy, d lora = s dy (one multiply, written
by the same kind of kernel).
"""
import torch
import triton
import triton.language as tl

BLOCK = 1024  # elements per program


@triton.jit
def _scale_add_kernel(base_ptr, lora_ptr, y_ptr, scale, n, HAS_BASE: tl.constexpr, BLOCK: tl.constexpr):
    """y = base + scale * lora (HAS_BASE) or y = scale * lora."""
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    y = scale * tl.load(lora_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_BASE:
        y += tl.load(base_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + offs, y.to(y_ptr.dtype.element_ty), mask=mask)


def scale_add(base, lora, scale, out_dtype, block=None):
    """base + scale * lora (base may be None) as a new contiguous tensor of out_dtype."""
    block = block or BLOCK
    y = torch.empty(lora.shape, dtype=out_dtype, device=lora.device)
    n = lora.numel()
    if n:
        _scale_add_kernel[(triton.cdiv(n, block),)](base if base is not None else lora, lora, y, float(scale), n,
                                                    HAS_BASE=base is not None, BLOCK=block, num_warps=4)
    return y


class LoRAAdd(torch.autograd.Function):
    """y = base_out + scale * lora_out (same shapes; y in their promoted dtype)."""

    @staticmethod
    def forward(ctx, base_out, lora_out, scale, block=None):
        ctx.scale, ctx.block, ctx.dtypes = scale, block, (base_out.dtype, lora_out.dtype)
        return scale_add(base_out.contiguous(), lora_out.contiguous(), scale,
                         torch.promote_types(base_out.dtype, lora_out.dtype), block)

    @staticmethod
    def backward(ctx, dy):
        base_dtype, lora_dtype = ctx.dtypes
        d_base = dy.to(base_dtype) if ctx.needs_input_grad[0] else None
        d_lora = scale_add(None, dy.contiguous(), ctx.scale, lora_dtype, ctx.block) if ctx.needs_input_grad[1] else None
        return d_base, d_lora, None, None
