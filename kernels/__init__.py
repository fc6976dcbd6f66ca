"""Per-token log-probabilities, log p(y_t) = z_t[y_t] - logsumexp_v z_tv, without full float32 logits.

Two entry points, both differentiable, both returning float32 log-probs shaped like `labels`
(0 and a zero gradient where labels == ignore_index):

- `logprobs(logits, labels)`: from logits [..., V].
- `linear_logprobs(hidden, weight, labels)`: from hidden states [..., D] and the output layer's
  weight [V, D] (z = h W^T); the N x V logits never exist at once.

Dispatch: the Triton kernels (kernels/triton_logprobs.py) when the tensors are on CUDA, or when the
environment variable TRITON_INTERPRET=1 is set (then they run on CPU tensors in Triton's interpreter:
that is how CI tests them); the PyTorch path (kernels/torch_path.py) otherwise, or when triton is not
importable.

Memory: chunk sizes follow `MEMORY_BUDGET` (bytes of one chunk of logits) in kernels/triton_logprobs.py
(512 MiB, in the input dtype) and kernels/torch_path.py (128 MiB of float32); set them to trade memory for
fewer, larger matmuls.
"""
import contextlib
import os

import torch

from . import torch_path

_triton_module = None


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


def use_triton(*tensors):
    """The Triton path runs on CUDA tensors, or on CPU tensors under TRITON_INTERPRET=1."""
    on_cuda = all(t.is_cuda for t in tensors)
    interpret = os.environ.get("TRITON_INTERPRET", "0") == "1" and not any(t.is_cuda for t in tensors)
    return (on_cuda or interpret) and triton_available()


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
            out = _triton_module.LinearLogProbs.apply(h, weight, y, ignore_index, need_dh, need_dw, None, None)
        else:
            out = torch_path.LinearLogProbs.apply(h, weight, y, ignore_index, need_dh, need_dw, None)
    return out.reshape(shape)
