"""Fused kernels: per-token log-probabilities, and the transformer block's elementwise work.

Log-probabilities, log p(y_t) = z_t[y_t] - logsumexp_v z_tv, without full float32 logits. Two entry
points, both differentiable, both returning float32 log-probs shaped like `labels` (0 and a zero
gradient where labels == ignore_index):

- `logprobs(logits, labels)`: from logits [..., V].
- `linear_logprobs(hidden, weight, labels)`: from hidden states [..., D] and the output layer's
  weight [V, D] (z = h W^T); the N x V logits never exist at once.

The block's elementwise ops, each differentiable, each one Triton kernel forward and one backward:

- `rms_norm(x, weight, eps, residual=None)`: y = x' / sqrt(mean(x'^2) + eps) * g, x' = x + residual;
  returns y, or (y, x') with a residual (x' is the new residual stream).
- `rope(q, k, cos, sin)`: q [B, Hq, T, d], k [B, Hk, T, d] rotated pairwise (x_i, x_{i+d/2}) by p theta_i.
- `swiglu(gate, up)`: silu(gate) * up.
- `lora_add(base_out, lora_out, scale)`: base_out + scale * lora_out.
On CUDA they run kernels/torch_block.py, the eager formulas model.py always used (bit for bit), until a GPU
run verifies the Triton kernels: those are opt-in (crpo.py --kernels triton, or KERNELS_BLOCK_PATH=triton
for a whole process). The choice, and the evidence behind each default, sit in kernels/dispatch.py. Off
CUDA (bar Triton's interpreter, below), inside torch.compile and within `torch_block_path()` the block ops
always run torch_block.py.

Checkpointing: `checkpoint_context_fn(policy, budget_bytes)` (kernels/checkpoint_policy.py) keeps the
matmul outputs of a checkpointed block within a budget and recomputes only the elementwise work.

Dispatch (kernels/dispatch.py decides): the Triton log-prob kernels (kernels/triton_logprobs.py) when the
tensors are on CUDA, or when the environment variable TRITON_INTERPRET=1 is set (then they run on CPU
tensors in Triton's interpreter: that is how CI tests them); the Triton block kernels (triton_rmsnorm.py,
triton_rope.py, triton_swiglu.py, triton_lora_add.py) in the same places when chosen; the PyTorch path
(kernels/torch_path.py, torch_block.py) otherwise, or when triton is not importable.

Memory: chunk sizes follow `MEMORY_BUDGET` (bytes of one chunk of logits) in kernels/triton_logprobs.py
(512 MiB, in the input dtype) and kernels/torch_path.py (128 MiB of float32); set them to trade memory for
fewer, larger matmuls.
"""
import contextlib
import os

import torch

from . import dispatch, torch_block, torch_path
from .checkpoint_policy import POLICIES as CHECKPOINT_POLICIES, checkpoint_context_fn  # noqa: F401 (public)
from .dispatch import (PATHS, VERIFIED, block_path_override, chosen_block_path,  # noqa: F401 (public)
                       select_block_path, set_block_path)

_triton_module = None
_block_modules = None


def triton_available():
    """True when triton imports (the kernels module is imported lazily, at first use)."""
    global _triton_module
    if _triton_module is None:
        try:
            from . import triton_logprobs
            _triton_module = triton_logprobs
        except Exception:  # triton missing or broken: the PyTorch path serves
            _triton_module = False
    return _triton_module is not False


def _device_type(tensors):
    """The tensors' common device type ("cuda", "cpu", ...), or "mixed"."""
    types = {t.device.type for t in tensors}
    return types.pop() if len(types) == 1 else "mixed"


def _interpret():
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def use_triton(*tensors):
    """The log-prob kernels take the Triton path on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1."""
    return dispatch.logprobs_path(_device_type(tensors), _interpret()) == "triton" and triton_available()


def logprobs(logits, labels, ignore_index=-100, *, inplace_backward=False):
    """log p_t = z_t[y_t] - logsumexp_v z_tv for logits [..., V] and labels [...] -> float32 [...].

    Backward: dL/dz_t = g_t * (onehot(y_t) - softmax(z_t)), with g_t the upstream gradient.
    inplace_backward=True writes that gradient into the logits' own buffer (no second N x V tensor);
    only allow it when nothing else needs the logits after the forward.
    """
    shape = labels.shape
    z, y = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    if use_triton(z, y):
        out = _triton_module.LogProbs.apply(z, y, ignore_index, inplace_backward, None)
    else:
        out = torch_path.LogProbs.apply(z, y, ignore_index, inplace_backward, None)
    return out.reshape(shape)


def linear_logprobs(hidden, weight, labels, ignore_index=-100):
    """log p_t with z_t = h_t W^T, for hidden [..., D], weight [V, D], labels [...] -> float32 [...].

    The forward builds the logits one chunk of tokens at a time (chunk size from a memory budget) and
    keeps only the per-token logsumexp. The backward recomputes the logits block by block, turns each
    block into dz = g (onehot(y) - exp(z - lse)) in place, and forms dh = dz @ W and dW = dz^T h
    (Triton path: blocks of vocabulary columns, so each block of dW is written once and only dh
    accumulates, in float32; PyTorch path: chunks of tokens, dW accumulated in float32).
    A weight without grad (frozen, e.g. LoRA) skips dW, and then dh_t = g_t (onehot(y_t) - p_t) @ W is
    formed in the forward: no recompute at all. A hidden without grad skips dh.
    """
    shape = labels.shape
    h, y = hidden.reshape(-1, hidden.shape[-1]), labels.reshape(-1)
    if h.dtype != weight.dtype:  # one matmul dtype: the weight's (autograd carries dh back through the cast)
        h = h.to(weight.dtype)
    grad_on = torch.is_grad_enabled()
    need_dh, need_dw = grad_on and h.requires_grad, grad_on and weight.requires_grad
    no_autocast = (torch.autocast(h.device.type, enabled=False) if h.device.type in ("cuda", "cpu")
                   else contextlib.nullcontext())
    with no_autocast:  # the chunk buffers have the inputs' dtype
        if use_triton(h, weight, y):
            out = _triton_module.LinearLogProbs.apply(h, weight, y, ignore_index, need_dh, need_dw,
                                                      None, None, None)
        else:
            out = torch_path.LinearLogProbs.apply(h, weight, y, ignore_index, need_dh, need_dw, None)
    return out.reshape(shape)


# ---------------------------------------------------------------- the block's elementwise ops

def block_kernels():
    """The Triton block kernels {name: module}, or None when triton does not import (imported at first use)."""
    global _block_modules
    if _block_modules is None:
        try:
            from . import triton_lora_add, triton_rmsnorm, triton_rope, triton_swiglu
            _block_modules = {"rms_norm": triton_rmsnorm, "rope": triton_rope, "swiglu": triton_swiglu,
                              "lora_add": triton_lora_add}
        except Exception:  # triton missing or broken: the PyTorch path serves
            _block_modules = False
    return _block_modules or None


def use_triton_block(*tensors):
    """The block ops take the Triton path where dispatch.block_path() says so (CUDA, or the interpreter, and
    the Triton kernels chosen), except inside torch.compile (which fuses the PyTorch path itself)."""
    if torch.compiler.is_compiling():  # compile never traces the rest
        return False
    return (dispatch.block_path(_device_type(tensors), interpret=_interpret()) == "triton"
            and block_kernels() is not None)


def torch_block_path():
    """Within this context the block ops run the PyTorch path even on CUDA (baselines, torch.compile rows)."""
    return block_path_override("torch")


def triton_block_path():
    """Within this context the block ops run the Triton kernels where they can (CUDA, the interpreter)."""
    return block_path_override("triton")


def rms_norm(x, weight, eps, residual=None):
    """y = x' / sqrt(mean(x'^2) + eps) * g over the last dim, x' = x + residual (x' = x without one).

    Returns y, or (y, x') when a residual is given. Triton: one pass forward (x' and y written together),
    one backward (dx' = rstd (dn - n^ mean(dn n^)) + upstream dx', dn = dy g, n^ = x' rstd)."""
    tensors = (x, weight) if residual is None else (x, weight, residual)
    tri = block_kernels() if use_triton_block(*tensors) else None
    if (tri is None or x.shape[-1] > tri["rms_norm"].MAX_FEATURES or weight.shape != x.shape[-1:]
            or (residual is not None and residual.shape != x.shape)):
        return torch_block.rms_norm(x, weight, eps, residual)
    rows = x.reshape(-1, x.shape[-1])
    res_rows = residual.reshape(-1, x.shape[-1]) if residual is not None else None
    out = tri["rms_norm"].RMSNorm.apply(rows, weight, eps, res_rows)
    if residual is None:
        return out.view(x.shape)
    return out[0].view(x.shape), out[1].view(x.shape)


def rope(q, k, cos, sin):
    """(q, k) with each pair (x_i, x_{i+d/2}) rotated by angle p theta_i: y_i = x_i cos - x_{i+d/2} sin,
    y_{i+d/2} = x_{i+d/2} cos + x_i sin. q [B, Hq, T, d], k [B, Hk, T, d], cos/sin [B or 1, 1, T, d/2]."""
    tri = block_kernels() if use_triton_block(q, k, cos, sin) else None
    if tri is None or not tri["rope"].supported(q, k, cos, sin):
        return torch_block.rope(q, k, cos, sin)
    return tri["rope"].Rope.apply(q, k, cos, sin)


def swiglu(gate, up):
    """silu(gate) * up, silu(a) = a sigmoid(a); backward da = dy up s (1 + a (1 - s)), dup = dy silu(a)."""
    tri = block_kernels() if use_triton_block(gate, up) else None
    if tri is None or gate.shape != up.shape:
        return torch_block.swiglu(gate, up)
    return tri["swiglu"].SwiGLU.apply(gate, up)


def lora_add(base_out, lora_out, scale):
    """base_out + scale * lora_out; backward d base = dy, d lora = scale dy."""
    tri = block_kernels() if use_triton_block(base_out, lora_out) else None
    if tri is None or base_out.shape != lora_out.shape:
        return torch_block.lora_add(base_out, lora_out, scale)
    return tri["lora_add"].LoRAAdd.apply(base_out, lora_out, scale)
