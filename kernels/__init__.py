"""Per-token log-probabilities: log p(y_t) = z_t[y_t] - logsumexp(z_t).

PLACEHOLDER (PyTorch reference path only): the kernels issue replaces this with Triton kernels on CUDA.
"""
import torch


def logprobs(logits, labels, ignore_index=-100):
    """log p_t = z_t[y_t] - logsumexp_v z_t[v], float32; rows with y_t == ignore_index give 0."""
    valid = labels != ignore_index
    safe = labels.masked_fill(~valid, 0)
    z = logits.float()
    out = z.gather(-1, safe.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(z, dim=-1)
    return out * valid


def linear_logprobs(hidden, weight, labels, ignore_index=-100):
    """log p_t with z_t = h_t W^T, without the fused kernel (materialises the logits)."""
    return logprobs(hidden @ weight.t(), labels, ignore_index)
