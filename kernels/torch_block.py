"""The transformer block's elementwise work in plain PyTorch: the path used off CUDA (and under torch.compile).

These are, op for op, the eager formulas model.py has always used, so the CPU numbers do not change
by a bit; autograd differentiates them. The Triton kernels (kernels/triton_*.py) compute the same
equations in one pass each, in float32 registers:

    RMSNorm:  x' = x + r (when a residual r is given),  y = x' / sqrt(mean(x'^2) + eps) * g
    RoPE:     (x_i, x_{i+d/2}) -> (x_i cos - x_{i+d/2} sin,  x_{i+d/2} cos + x_i sin),  angle p * theta_i
    SwiGLU:   y = silu(a) * b,  silu(a) = a * sigmoid(a)
    LoRA add: y = base + s * lora
"""
import torch
import torch.nn.functional as F


def rms_norm(x, weight, eps, residual=None):
    """y = x' / sqrt(mean(x'^2) + eps) * g with x' = x + residual (x' = x without one), normalised in float32.

    Returns y, or (y, x') when a residual is given (x' is the block's new residual stream)."""
    if residual is not None:
        x = x + residual
    x32 = x.float()
    y = (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight
    return y if residual is None else (y, x)


def rotate_half_split(x, cos, sin):
    """(x_i, x_{i+d/2}) rotated by the angle whose cosine and sine are given (half-split layout)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def rope(q, k, cos, sin):
    """Rotary embedding of q [B, Hq, T, d] and k [B, Hk, T, d]; cos, sin [B, 1, T, d/2] (p * theta_i)."""
    return rotate_half_split(q, cos, sin), rotate_half_split(k, cos, sin)


def swiglu(gate, up):
    """y = silu(gate) * up."""
    return F.silu(gate) * up


def lora_add(base_out, lora_out, scale):
    """y = base_out + scale * lora_out."""
    return base_out + lora_out * scale
