"""Triton RMSNorm with the residual add fused in, forward and backward (imported lazily by kernels/__init__.py).

Forward, one program per row of D features (one read of x and r, one write of x' and y):
    x' = x + r                               (rounded to x' dtype, as the eager add; skipped without r)
    rstd = 1 / sqrt(mean(x'^2) + eps)        (float32, kept [N] for the backward)
    n = x' rstd  (rounded to x' dtype),  y = n g
Backward, programs striding over rows; with dy the upstream gradient of y and dx'_out that of x':
    dn = dy g,   n^ = x' rstd
    dx' = rstd (dn - n^ mean(dn n^)) + dx'_out,    dx = dr = dx'
    dg = sum_rows dy n                       (float32 partial sums per program, added by torch)
"""
import torch
import triton
import triton.language as tl

MAX_FEATURES = 65536  # one row lives in one block of registers


@triton.jit
def _rmsnorm_fwd_kernel(x_ptr, r_ptr, xnew_ptr, w_ptr, y_ptr, rstd_ptr, n_cols, eps,
                        stride_x, stride_r, stride_xnew, stride_y,
                        HAS_RESIDUAL: tl.constexpr, BLOCK: tl.constexpr):
    """y = (x + r) rstd g for one row; also stores x + r and rstd."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    if HAS_RESIDUAL:
        r = tl.load(r_ptr + row * stride_r + cols, mask=mask, other=0.0).to(tl.float32)
        x_rounded = (x + r).to(xnew_ptr.dtype.element_ty)
        tl.store(xnew_ptr + row * stride_xnew + cols, x_rounded, mask=mask)
        x = x_rounded.to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(rstd_ptr + row, rstd)
    n = (x * rstd).to(xnew_ptr.dtype.element_ty).to(tl.float32)  # eager rounds the normed x to x's dtype
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + row * stride_y + cols, (n * w).to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rmsnorm_bwd_kernel(dy_ptr, x_ptr, w_ptr, rstd_ptr, dxout_ptr, dx_ptr, dw_part_ptr, n_rows, n_cols,
                        stride_dy, stride_x, stride_dxout, stride_dx,
                        HAS_DXOUT: tl.constexpr, NEED_DW: tl.constexpr, BLOCK: tl.constexpr):
    """dx' for rows pid, pid + P, pid + 2P, ...; this program's partial dg into dw_part[pid]."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    for row in range(pid, n_rows, tl.num_programs(0)):
        row64 = tl.cast(row, tl.int64)
        dy = tl.load(dy_ptr + row64 * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(x_ptr + row64 * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(rstd_ptr + row64)
        n_hat = x * rstd
        if NEED_DW:
            dw += dy * n_hat.to(x_ptr.dtype.element_ty).to(tl.float32)
        dn = dy * w
        dx = rstd * (dn - n_hat * (tl.sum(dn * n_hat, axis=0) / n_cols))
        if HAS_DXOUT:
            dx += tl.load(dxout_ptr + row64 * stride_dxout + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(dx_ptr + row64 * stride_dx + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
    if NEED_DW:
        tl.store(dw_part_ptr + pid * n_cols + cols, dw, mask=mask)


def _block(n_cols):
    return triton.next_power_of_2(max(n_cols, 16))


def _warps(block):
    return 16 if block >= 16384 else 8 if block >= 4096 else 4 if block >= 1024 else 2


def _n_programs(x, n_rows):
    """Backward programs: a few per SM on CUDA (each keeps one float32 dg row), 4 elsewhere."""
    per_device = torch.cuda.get_device_properties(x.device).multi_processor_count * 4 if x.is_cuda else 4
    return max(1, min(n_rows, per_device))


def _rows(t):
    return t if t.stride(-1) == 1 else t.contiguous()


class RMSNorm(torch.autograd.Function):
    """(y, x') = rmsnorm(x + r) on rows [N, D]; r may be None (then x' = x and only y is returned)."""

    @staticmethod
    def forward(ctx, x, weight, eps, residual):
        x = _rows(x)
        n_rows, n_cols = x.shape
        has_residual = residual is not None
        if has_residual:
            residual = _rows(residual)
            x_new = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, residual.dtype), device=x.device)
        else:
            x_new = x
        y = torch.empty(x.shape, dtype=torch.promote_types(x_new.dtype, weight.dtype), device=x.device)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        if n_rows:
            blk = _block(n_cols)
            r = residual if has_residual else x
            _rmsnorm_fwd_kernel[(n_rows,)](x, r, x_new, weight, y, rstd, n_cols, eps,
                                           x.stride(0), r.stride(0), x_new.stride(0), y.stride(0),
                                           HAS_RESIDUAL=has_residual, BLOCK=blk, num_warps=_warps(blk))
        ctx.save_for_backward(x_new, weight, rstd)
        ctx.has_residual = has_residual
        ctx.dtypes = (x.dtype, residual.dtype if has_residual else None)
        return (y, x_new) if has_residual else y

    @staticmethod
    def backward(ctx, dy, dx_out=None):
        x_new, weight, rstd = ctx.saved_tensors
        n_rows, n_cols = x_new.shape
        need_dw = ctx.needs_input_grad[1]
        dx = torch.empty(x_new.shape, dtype=x_new.dtype, device=x_new.device)
        dy = _rows(dy) if dy is not None else torch.zeros_like(x_new, dtype=torch.promote_types(x_new.dtype,
                                                                                                weight.dtype))
        has_dxout = dx_out is not None
        dx_out = _rows(dx_out) if has_dxout else dx
        programs = _n_programs(x_new, n_rows)
        dw_part = (torch.empty(programs, n_cols, dtype=torch.float32, device=x_new.device) if need_dw
                   else rstd)  # any pointer: not written when dg is not needed
        if n_rows:
            blk = _block(n_cols)
            _rmsnorm_bwd_kernel[(programs,)](dy, x_new, weight, rstd, dx_out, dx, dw_part, n_rows, n_cols,
                                             dy.stride(0), x_new.stride(0), dx_out.stride(0), dx.stride(0),
                                             HAS_DXOUT=has_dxout, NEED_DW=need_dw, BLOCK=blk, num_warps=_warps(blk))
        dw = None
        if need_dw:
            dw = (dw_part.sum(0) if n_rows else torch.zeros(n_cols, device=x_new.device)).to(weight.dtype)
        x_dtype, r_dtype = ctx.dtypes
        if not ctx.has_residual:
            return dx.to(x_dtype), dw, None, None
        return dx.to(x_dtype), dw, None, dx.to(r_dtype)
