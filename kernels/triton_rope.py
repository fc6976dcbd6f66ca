"""Triton rotary position embedding of q and k in one launch, forward and backward (imported lazily).

Half-split layout (as model.py and HF checkpoints store q/k): for head dimension d, each pair
(x_i, x_{i+d/2}), i < d/2, is rotated by the angle a = p theta_i of its token's position p:
    y_i       = x_i cos a - x_{i+d/2} sin a
    y_{i+d/2} = x_{i+d/2} cos a + x_i sin a
The rotation is orthogonal, so the backward is the rotation by -a (sin -> -sin) of the upstream gradient.
One program per (batch, position): it loads cos/sin once and rotates every head of q and of k.
Tensors may have any strides (q, k are transposed views [B, H, T, d] of [B, T, H, d] projections);
outputs keep the input's layout. Arithmetic in float32, rounded once to the input dtype.
"""
import torch
import triton
import triton.language as tl


@triton.jit
def _rotate_heads(x_ptr, out_ptr, b, t, n_heads, half, c, s, sxb, sxh, sxt, sob, soh, sot,
                  BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr):
    """Rotate all heads of x[b, :, t, :] by the angles with cosines c and sines s ([BLOCK_D] each)."""
    heads = tl.arange(0, BLOCK_H)[:, None]
    dims = tl.arange(0, BLOCK_D)[None, :]
    mask = (heads < n_heads) & (dims < half)
    src = x_ptr + b * sxb + t * sxt + heads * sxh + dims
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + half, mask=mask, other=0.0).to(tl.float32)
    dst = out_ptr + b * sob + t * sot + heads * soh + dims
    tl.store(dst, (x1 * c - x2 * s).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + half, (x2 * c + x1 * s).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rope_kernel(q_ptr, k_ptr, q_out_ptr, k_out_ptr, cos_ptr, sin_ptr, T, n_q_heads, n_k_heads, half,
                 sqb, sqh, sqt, skb, skh, skt, sqob, sqoh, sqot, skob, skoh, skot, scb, sct,
                 SIGN: tl.constexpr, BLOCK_HQ: tl.constexpr, BLOCK_HK: tl.constexpr, BLOCK_D: tl.constexpr):
    """q_out[b, :, t], k_out[b, :, t] = rotation of q[b, :, t], k[b, :, t] by SIGN * angle[b, t]."""
    pid = tl.program_id(0).to(tl.int64)
    b = pid // T
    t = pid % T
    dims = tl.arange(0, BLOCK_D)
    c = tl.load(cos_ptr + b * scb + t * sct + dims, mask=dims < half, other=0.0).to(tl.float32)[None, :]
    s = SIGN * tl.load(sin_ptr + b * scb + t * sct + dims, mask=dims < half, other=0.0).to(tl.float32)[None, :]
    _rotate_heads(q_ptr, q_out_ptr, b, t, n_q_heads, half, c, s, sqb, sqh, sqt, sqob, sqoh, sqot, BLOCK_HQ, BLOCK_D)
    _rotate_heads(k_ptr, k_out_ptr, b, t, n_k_heads, half, c, s, skb, skh, skt, skob, skoh, skot, BLOCK_HK, BLOCK_D)


def _last_dim_dense(t):
    return t if t.stride(-1) == 1 else t.contiguous()


def rotate(q, k, cos, sin, sign):
    """Rotated copies of q [B, Hq, T, d], k [B, Hk, T, d] (same layout as the inputs) by sign * angle;
    cos, sin [B or 1, 1, T, d/2]."""
    q, k = _last_dim_dense(q), _last_dim_dense(k)
    B, n_q, T, d = q.shape
    n_k, half = k.shape[1], d // 2
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)  # empty_like keeps a dense layout's strides
    if q.numel() == 0:
        return q_out, k_out
    scb = cos.stride(0) if cos.shape[0] > 1 else 0
    block_d = triton.next_power_of_2(max(half, 1))
    block_hq, block_hk = triton.next_power_of_2(n_q), triton.next_power_of_2(n_k)
    warps = 4 if block_hq * block_d >= 2048 else 2 if block_hq * block_d >= 512 else 1
    _rope_kernel[(B * T,)](q, k, q_out, k_out, cos, sin, T, n_q, n_k, half,
                           q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
                           q_out.stride(0), q_out.stride(1), q_out.stride(2),
                           k_out.stride(0), k_out.stride(1), k_out.stride(2), scb, cos.stride(2),
                           SIGN=sign, BLOCK_HQ=block_hq, BLOCK_HK=block_hk, BLOCK_D=block_d, num_warps=warps)
    return q_out, k_out


def supported(q, k, cos, sin):
    """The launch's assumptions: 4-d q and k sharing B, T, d (even); cos and sin alike, [B or 1, 1, T, d/2],
    contiguous over d, and no gradient wanted for them."""
    if q.dim() != 4 or k.dim() != 4 or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:] or q.shape[3] % 2:
        return False
    B, _, T, d = q.shape
    return (cos.shape == sin.shape and cos.dim() == 4 and cos.shape[0] in (1, B) and cos.shape[1:] == (1, T, d // 2)
            and cos.stride() == sin.stride() and cos.stride(-1) == 1 and not cos.requires_grad
            and not sin.requires_grad)


class Rope(torch.autograd.Function):
    """(q, k) rotated by the position angles; backward rotates the gradients back."""

    @staticmethod
    def forward(ctx, q, k, cos, sin):
        ctx.save_for_backward(cos, sin)
        ctx.shapes = (q.shape, k.shape, q.dtype, k.dtype)
        return rotate(q, k, cos, sin, 1.0)

    @staticmethod
    def backward(ctx, dq, dk):
        cos, sin = ctx.saved_tensors
        q_shape, k_shape, q_dtype, k_dtype = ctx.shapes
        dq = dq if dq is not None else torch.zeros(q_shape, dtype=q_dtype, device=cos.device)
        dk = dk if dk is not None else torch.zeros(k_shape, dtype=k_dtype, device=cos.device)
        dq, dk = rotate(dq, dk, cos, sin, -1.0)
        return dq, dk, None, None
