"""Per-token log-probabilities in plain PyTorch: the path used off CUDA (and where triton is missing).

Same math as the Triton path, chunked over tokens with float32 accumulation, as custom autograd
Functions that never keep a full float32 copy of the logits:

    lse_t    = log sum_v exp(z_tv)
    log p_t  = z_t[y_t] - lse_t                       (0 where y_t == ignore_index)
    dL/dz_t  = g_t * (onehot(y_t) - softmax(z_t))     (g_t = upstream gradient of log p_t)

and for z_t = h_t W^T:  dL/dh_t = dL/dz_t @ W,  dL/dW = sum_t dL/dz_t^T h_t.
"""
import torch

# Float32 working set of one chunk of logits (bytes); the chunk's row count follows from it.
MEMORY_BUDGET = 128 * 2**20


def rows_per_chunk(n_cols, bytes_per_element=4, budget=None):
    """How many rows of n_cols elements fit in the memory budget (at least 1)."""
    budget = MEMORY_BUDGET if budget is None else budget
    return max(1, int(budget // (n_cols * bytes_per_element)))


def _spans(n, chunk):
    return [(s, min(n, s + chunk)) for s in range(0, n, chunk)]


def _grad_of_logits(z, lse, labels, g):
    """g_t * (onehot(y_t) - exp(z_t - lse_t)) in float32; labels are valid indices (ignored rows have g=0)."""
    grad = (z.float() - lse[:, None]).exp_().mul_(-g[:, None])
    grad.scatter_add_(1, labels[:, None], g[:, None])
    return grad


class LogProbs(torch.autograd.Function):
    """log p_t from logits [N, V]; saves only the logits (the input) and lse [N]."""

    @staticmethod
    def forward(ctx, logits, labels, ignore_index, inplace_backward, chunk_size):
        n, v = logits.shape
        valid = labels != ignore_index
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        chunk = chunk_size or rows_per_chunk(v)
        lse = torch.empty(n, dtype=torch.float32, device=logits.device)
        for s, e in _spans(n, chunk):
            lse[s:e] = torch.logsumexp(logits[s:e].float(), dim=-1)
        target = logits.gather(1, safe[:, None]).squeeze(1).float()
        out = torch.where(valid, target - lse, torch.zeros_like(lse))
        ctx.save_for_backward(logits, safe, valid, lse)
        ctx.inplace_backward, ctx.chunk = inplace_backward, chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        logits, safe, valid, lse = ctx.saved_tensors
        g = torch.where(valid, grad_out.float(), torch.zeros_like(lse))
        grad = logits if ctx.inplace_backward else torch.empty_like(logits)
        for s, e in _spans(logits.shape[0], ctx.chunk):
            grad[s:e] = _grad_of_logits(logits[s:e], lse[s:e], safe[s:e], g[s:e])
        return grad, None, None, None, None


class LinearLogProbs(torch.autograd.Function):
    """log p_t with z_t = h_t W^T, h [N, D], W [V, D], never building more than one chunk of logits.

    Three cases, chosen by which inputs need a gradient:
    - W needs a gradient: backward recomputes each chunk's logits (unless all of them fit in one chunk,
      then that chunk is kept from the forward), then dh = dz @ W and dW += dz^T h (float32).
    - only h needs one (frozen W, e.g. LoRA): dL/dh_t = g_t * a_t with a_t = (onehot(y_t) - p_t) @ W
      does not depend on g, so the forward computes a [N, D] and the backward is one multiply.
    - neither: forward only.
    """

    @staticmethod
    def forward(ctx, hidden, weight, labels, ignore_index, need_dh, need_dw, chunk_size):
        n, v = hidden.shape[0], weight.shape[0]
        valid = labels != ignore_index
        safe = torch.where(valid, labels, torch.zeros_like(labels))
        chunk = chunk_size or rows_per_chunk(v)
        spans = _spans(n, chunk)
        out = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        lse = torch.zeros(n, dtype=torch.float32, device=hidden.device)
        a = torch.empty_like(hidden) if (need_dh and not need_dw) else None
        kept = None
        for s, e in spans:
            z = (hidden[s:e] @ weight.t()).float()
            lse[s:e] = torch.logsumexp(z, dim=-1)
            out[s:e] = z.gather(1, safe[s:e, None]).squeeze(1) - lse[s:e]
            if a is not None:  # a_t = (onehot(y_t) - p_t) @ W, zero on ignored rows
                direction = _grad_of_logits(z, lse[s:e], safe[s:e], valid[s:e].float())
                a[s:e] = direction.to(weight.dtype) @ weight
            elif need_dw and len(spans) == 1:
                kept = z
        out = torch.where(valid, out, torch.zeros_like(out))
        ctx.need_dh, ctx.need_dw, ctx.chunk = need_dh, need_dw, chunk
        ctx.save_for_backward(hidden, weight, safe, valid, lse, a, kept)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, safe, valid, lse, a, kept = ctx.saved_tensors
        g = torch.where(valid, grad_out.float(), torch.zeros_like(lse))
        if a is not None:
            return (g[:, None] * a).to(hidden.dtype), None, None, None, None, None, None
        dh = torch.empty_like(hidden) if ctx.need_dh else None
        dw = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if ctx.need_dw else None
        for s, e in _spans(hidden.shape[0], ctx.chunk):
            z = kept if kept is not None else hidden[s:e] @ weight.t()
            dz = _grad_of_logits(z, lse[s:e], safe[s:e], g[s:e]).to(weight.dtype)
            if dh is not None:
                dh[s:e] = dz @ weight
            if dw is not None:
                dw += (dz.t() @ hidden[s:e]).float()
        dw = dw.to(weight.dtype) if dw is not None else None
        return dh, dw, None, None, None, None, None
