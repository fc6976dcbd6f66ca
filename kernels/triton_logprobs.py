"""Triton kernels for per-token log-probabilities (imported lazily by kernels/__init__.py).

Forward, one program per row, one read of the row (online logsumexp over vocabulary blocks):
    m_k = max(m_{k-1}, max_{v in block k} z_v),  s_k = s_{k-1} exp(m_{k-1} - m_k) + sum_{v in block k} exp(z_v - m_k)
    lse = m + log s,   log p = z[y] - lse          (only lse [N] is kept for the backward)
Backward, one program per (row, block of columns), one read and one write:
    dz_v = g * ([v == y] - exp(z_v - lse))          (may overwrite z itself: in place)
Ignored rows (y == ignore_index) read nothing and give 0 and a zero gradient.

linear_logprobs (z = h W^T) runs these kernels on chunks of logits made by torch.mm (cuBLAS): the
forward goes over chunks of tokens (all V columns, needed for lse); the backward, which already knows
lse, goes over chunks of the vocabulary, so each dW block is written once (no float32 V x D
accumulator) and only dh [N, D] accumulates, in float32. Within KEEP_BUDGET the forward keeps the
logits of its first K tokens, and the backward turns them into dz in place instead of recomputing them.
"""
import torch
import triton
import triton.language as tl

# Bytes of one chunk of logits (in the input dtype); chunk sizes follow from it.
MEMORY_BUDGET = 512 * 2**20
FWD_BLOCK = 8192  # vocabulary block of the forward's online logsumexp (upper bound)
BWD_BLOCK = 4096  # columns per backward program (upper bound)
BWD_MAX_TOKENS = 16384  # tokens per backward chunk; more tokens than this accumulate dW in float32
# Bytes of forward logits linear_logprobs may keep for its backward (0: recompute them all). The kept rows
# are not recomputed (one matmul fewer for them) and cost K x V elements until the backward.
KEEP_BUDGET = 0


@triton.jit
def _logsumexp_fwd_kernel(z_ptr, stride_z, labels_ptr, lse_ptr, out_ptr, n_cols, ignore_index,
                          BLOCK: tl.constexpr, WRITE_DIRECTION: tl.constexpr):
    """lse and log p of one row; with WRITE_DIRECTION also overwrite the row with onehot(y) - softmax(z)."""
    row = tl.program_id(0).to(tl.int64)
    row_ptr = z_ptr + row * stride_z
    label = tl.load(labels_ptr + row)
    valid = label != ignore_index
    n_read = tl.where(valid, n_cols, 0)  # an ignored row reads nothing
    offs = tl.arange(0, BLOCK)
    m = tl.full([], float("-inf"), tl.float32)
    s = tl.full([], 0.0, tl.float32)
    for start in range(0, n_read, BLOCK):
        cols = start + offs
        x = tl.load(row_ptr + cols, mask=cols < n_read, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, axis=0))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # all -inf so far: keep exp() finite
        s = s * tl.exp(m - m_safe) + tl.sum(tl.exp(x - m_safe), axis=0)
        m = m_new
    lse = tl.where(valid, m + tl.log(tl.where(valid, s, 1.0)), 0.0)
    safe_label = tl.minimum(tl.maximum(tl.where(valid, label, 0), 0), n_cols - 1)  # never read out of the row
    target = tl.load(row_ptr + safe_label).to(tl.float32)
    tl.store(lse_ptr + row, lse)
    tl.store(out_ptr + row, tl.where(valid, target - lse, 0.0))
    if WRITE_DIRECTION:
        for start in range(0, n_cols, BLOCK):
            cols = start + offs
            x = tl.load(row_ptr + cols, mask=cols < n_read, other=float("-inf")).to(tl.float32)
            d = tl.where(cols == label, 1.0, 0.0) - tl.exp(x - lse)
            tl.store(row_ptr + cols, tl.where(valid, d, 0.0).to(z_ptr.dtype.element_ty), mask=cols < n_cols)


@triton.jit
def _logprobs_bwd_kernel(z_ptr, stride_z, grad_ptr, stride_grad, labels_ptr, lse_ptr, g_ptr, n_cols,
                         col_offset, ignore_index, BLOCK: tl.constexpr):
    """grad[row, cols] = g * ([cols + col_offset == y] - exp(z - lse)); grad may be z itself."""
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    label = tl.load(labels_ptr + row)
    valid = label != ignore_index
    g = tl.where(valid, tl.load(g_ptr + row), 0.0)
    lse = tl.load(lse_ptr + row)
    n_read = tl.where(valid, n_cols, 0)  # an ignored row reads nothing and writes zeros
    x = tl.load(z_ptr + row * stride_z + cols, mask=cols < n_read, other=float("-inf")).to(tl.float32)
    d = g * (tl.where(cols + col_offset == label, 1.0, 0.0) - tl.exp(x - lse))
    tl.store(grad_ptr + row * stride_grad + cols, d.to(grad_ptr.dtype.element_ty), mask=cols < n_cols)


def _fwd_block(n_cols, block=None):
    return block or min(FWD_BLOCK, triton.next_power_of_2(max(n_cols, 16)))


def _bwd_block(n_cols, block=None):
    return block or min(BWD_BLOCK, triton.next_power_of_2(max(n_cols, 16)))


def _warps(block):
    return 16 if block >= 8192 else 8 if block >= 2048 else 4


def logsumexp_forward(z, labels, ignore_index, lse, out, write_direction=False, block=None):
    """Launch the forward kernel on z [n, V] (row stride free, unit column stride); fills lse, out [n]."""
    n, v = z.shape
    if n == 0:
        return
    blk = _fwd_block(v, block)
    _logsumexp_fwd_kernel[(n,)](z, z.stride(0), labels, lse, out, v, ignore_index,
                                BLOCK=blk, WRITE_DIRECTION=write_direction, num_warps=_warps(blk))


def logprobs_backward(z, grad, labels, lse, g, ignore_index, col_offset=0, block=None):
    """Launch the backward kernel: grad [n, V] (may be z) = g (onehot(y - col_offset) - exp(z - lse))."""
    n, v = z.shape
    if n == 0 or v == 0:
        return
    blk = _bwd_block(v, block)
    _logprobs_bwd_kernel[(n, triton.cdiv(v, blk))](z, z.stride(0), grad, grad.stride(0), labels, lse, g, v,
                                                    col_offset, ignore_index, BLOCK=blk, num_warps=_warps(blk))


def _rows_contiguous(t):
    return t if t.stride(-1) == 1 else t.contiguous()


class LogProbs(torch.autograd.Function):
    """log p_t from logits [N, V]; saves the logits (the input) and lse [N] only."""

    @staticmethod
    def forward(ctx, logits, labels, ignore_index, inplace_backward, block=None):
        z = _rows_contiguous(logits)
        y = labels.contiguous()
        lse = torch.empty(z.shape[0], dtype=torch.float32, device=z.device)
        out = torch.empty_like(lse)
        logsumexp_forward(z, y, ignore_index, lse, out, block=block)
        ctx.save_for_backward(z, y, lse)
        ctx.ignore_index, ctx.inplace_backward, ctx.block = ignore_index, inplace_backward, block
        return out

    @staticmethod
    def backward(ctx, grad_out):
        z, y, lse = ctx.saved_tensors
        grad = z if ctx.inplace_backward else torch.empty_like(z)
        g = grad_out.float().contiguous()
        logprobs_backward(z, grad, y, lse, g, ctx.ignore_index, block=ctx.block)
        return grad, None, None, None, None


def _spans(n, chunk):
    return [(s, min(n, s + chunk)) for s in range(0, n, chunk)]


def chunk_sizes(n, v, element_size, budget=None):
    """(tokens per forward chunk [x V], tokens per backward chunk, vocabulary columns per backward chunk)."""
    budget = MEMORY_BUDGET if budget is None else budget
    fwd_rows = max(1, budget // (v * element_size))
    fwd_rows = fwd_rows // 128 * 128 if fwd_rows >= 256 else fwd_rows  # matmul-friendly row counts
    bwd_rows = min(n, BWD_MAX_TOKENS) if n > 0 else 1
    bwd_cols = min(v, max(256, budget // (bwd_rows * element_size) // 256 * 256))
    return fwd_rows, bwd_rows, bwd_cols


class LinearLogProbs(torch.autograd.Function):
    """log p_t with z_t = h_t W^T, h [N, D], W [V, D]: one chunk of logits at a time.

    - W needs a gradient: the backward recomputes z in blocks (tokens x vocabulary columns), forms
      dz in place, writes dW[block] = dz^T h and accumulates dh += dz W[block] in float32.
      When all logits fit in one chunk the forward's are kept and nothing is recomputed. Otherwise the
      logits of the first K = keep_budget / (V x element size) tokens are kept (they are overwritten by
      their gradient in the first backward; a second backward recomputes them); their dW part and the
      recomputed rows' part then add in dW's dtype.
    - only h needs one (frozen W): dL/dh_t = g_t a_t with a_t = (onehot(y_t) - p_t) @ W is formed in
      the forward (the kernel overwrites the chunk with onehot - p), so the backward does no matmul.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index, need_dh, need_dw, budget=None, block=None,
                keep_budget=None):
        h, w, y = _rows_contiguous(hidden), _rows_contiguous(weight), labels.contiguous()
        n, v = h.shape[0], w.shape[0]
        fwd_rows, bwd_rows, bwd_cols = chunk_sizes(n, v, h.element_size(), budget)
        lse = torch.empty(n, dtype=torch.float32, device=h.device)
        out = torch.empty_like(lse)
        direction_mode = need_dh and not need_dw
        a = torch.empty_like(h) if direction_mode else None
        keep = need_dw and 0 < n <= fwd_rows and bwd_rows == n and bwd_cols == v
        keep_budget = KEEP_BUDGET if keep_budget is None else keep_budget
        n_kept = min(n, keep_budget // (v * h.element_size())) if need_dw and not keep else 0
        kept_rows = torch.empty(n_kept, v, dtype=h.dtype, device=h.device) if n_kept else None
        spans = [(s, e, True) for s, e in _spans(n_kept, fwd_rows)]
        spans += [(s + n_kept, e + n_kept, False) for s, e in _spans(n - n_kept, fwd_rows)]
        buf = torch.empty(min(n - n_kept, fwd_rows) * v, dtype=h.dtype, device=h.device)
        for s, e, in_kept in spans:
            z_out = kept_rows[s:e] if in_kept else buf[: (e - s) * v].view(e - s, v)
            z = torch.mm(h[s:e], w.t(), out=z_out)
            logsumexp_forward(z, y[s:e], ignore_index, lse[s:e], out[s:e], write_direction=direction_mode,
                              block=block)
            if direction_mode:
                torch.mm(z, w, out=a[s:e])
        kept = buf.view(n, v) if keep else None
        ctx.save_for_backward(h, w, y, lse, a, kept)
        ctx.kept_rows = kept_rows  # not saved: the backward overwrites it, then drops it
        ctx.ignore_index, ctx.need_dh, ctx.need_dw, ctx.block = ignore_index, need_dh, need_dw, block
        ctx.bwd_rows, ctx.bwd_cols = bwd_rows, bwd_cols
        return out

    @staticmethod
    def backward(ctx, grad_out):
        h, w, y, lse, a, kept = ctx.saved_tensors
        g = grad_out.float().contiguous()
        if a is not None:  # frozen weight: dh_t = g_t a_t (a is 0 on ignored rows)
            return (g[:, None] * a).to(h.dtype), None, None, None, None, None, None, None, None
        kept_rows, ctx.kept_rows = ctx.kept_rows, None  # a second backward recomputes these rows too
        n_kept = 0 if kept_rows is None else kept_rows.shape[0]
        n, v = h.shape[0], w.shape[0]
        token_spans = [(s + n_kept, e + n_kept) for s, e in _spans(n - n_kept, ctx.bwd_rows)]
        vocab_spans = _spans(v, ctx.bwd_cols)
        row_groups = len(token_spans) + (n_kept > 0)  # groups of rows whose dW parts add up
        dh = torch.zeros(h.shape, dtype=torch.float32, device=h.device) if ctx.need_dh else None
        dh_part = torch.empty(min(n, ctx.bwd_rows), h.shape[1], dtype=h.dtype, device=h.device) \
            if ctx.need_dh and h.dtype != torch.float32 else None
        dw = None
        if ctx.need_dw:  # more than two groups add up into dW in float32; one or two in W's dtype
            dw = torch.empty_like(w) if row_groups <= 2 else torch.zeros(w.shape, dtype=torch.float32,
                                                                         device=w.device)
        if n_kept:  # the kept logits become their gradient in place; dh of these rows in one matmul
            logprobs_backward(kept_rows, kept_rows, y, lse, g, ctx.ignore_index, block=ctx.block)
            if dh is not None:
                dh[:n_kept] = torch.mm(kept_rows, w)
        buf = None if kept is not None else torch.empty(min(n, ctx.bwd_rows) * min(v, ctx.bwd_cols),
                                                        dtype=h.dtype, device=h.device)
        for vs, ve in vocab_spans:
            written = False  # whether dw[vs:ve] holds a first part (W's-dtype accumulation)

            def add_dw(z, h_rows):
                nonlocal written
                if dw.dtype == z.dtype:
                    (dw[vs:ve].addmm_(z.t(), h_rows) if written or row_groups > 2 else
                     torch.mm(z.t(), h_rows, out=dw[vs:ve]))
                else:
                    dw[vs:ve] += torch.mm(z.t(), h_rows).float()
                written = True

            if n_kept and dw is not None:
                add_dw(kept_rows[:, vs:ve], h[:n_kept])
            for ts, te in token_spans:
                h_i = h[ts:te]
                if kept is not None:  # the forward's logits; not overwritten, so a second backward still works
                    z = torch.empty_like(kept)
                    logprobs_backward(kept, z, y, lse, g, ctx.ignore_index, block=ctx.block)
                else:  # recompute this block, then overwrite it with its gradient
                    z = torch.mm(h_i, w[vs:ve].t(), out=buf[: (te - ts) * (ve - vs)].view(te - ts, ve - vs))
                    logprobs_backward(z, z, y[ts:te], lse[ts:te], g[ts:te], ctx.ignore_index, col_offset=vs,
                                      block=ctx.block)
                if dh is not None:
                    if dh_part is None:
                        dh[ts:te].addmm_(z, w[vs:ve])
                    else:
                        dh[ts:te] += torch.mm(z, w[vs:ve], out=dh_part[: te - ts])
                if dw is not None:
                    add_dw(z, h_i)
        dh = dh.to(h.dtype) if dh is not None else None
        dw = dw.to(w.dtype) if dw is not None else None
        return dh, dw, None, None, None, None, None, None, None
